"""Paged OrderedCollections (followers, following, featured, outbox).

Peers read `totalItems` and walk `first`/`next`; serving pages instead of one
huge list keeps every response small however many followers an account has.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.errors import HttpError

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
PAGE_SIZE = 40
MAX_PAGE = 100_000


def ordered_collection(id: str, total: int, first_url: str | None) -> dict[str, Any]:
    """The collection itself: a count and a link to its first page.

    With `first_url=None` the collection is inlined as empty (`orderedItems: []`).
    """
    doc: dict[str, Any] = {"@context": AS_CONTEXT, "id": id, "type": "OrderedCollection", "totalItems": total}
    if first_url is None:
        doc["orderedItems"] = []
    else:
        doc["first"] = first_url
    return doc


def collection_page(
    id_url: str, part_of: str, items: list[Any], next_url: str | None, prev_url: str | None
) -> dict[str, Any]:
    """One page; `next`/`prev` are left out at the ends."""
    doc: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": id_url,
        "type": "OrderedCollectionPage",
        "partOf": part_of,
        "orderedItems": items,
    }
    if next_url:
        doc["next"] = next_url
    if prev_url:
        doc["prev"] = prev_url
    return doc


def page_number(request: web.Request) -> int | None:
    """`?page=N` (1-based), None when absent; 400 for anything but a sane positive integer."""
    raw = request.query.get("page")
    if raw is None:
        return None
    if not raw.isdigit() or len(raw) > 6 or not 1 <= int(raw) <= MAX_PAGE:
        raise HttpError(400, "page must be a positive integer")
    return int(raw)


def page_url(collection_id: str, page: int) -> str:
    return f"{collection_id}?page={page}"


def offset_page(
    collection_id: str, page: int, items: list[Any], total: int, page_size: int = PAGE_SIZE
) -> dict[str, Any]:
    """A page of an offset-paged collection, with next/prev worked out from `total`."""
    has_next = page * page_size < total
    return collection_page(
        page_url(collection_id, page),
        collection_id,
        items,
        page_url(collection_id, page + 1) if has_next else None,
        page_url(collection_id, page - 1) if page > 1 else None,
    )
