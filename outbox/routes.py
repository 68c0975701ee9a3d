"""Dereferencing what we published: outbox collection, notes, activities.

Every id fedi mints answers: JSON for ActivityPub clients, an HTML page for
browsers, and 410 with a Tombstone once deleted (so peers stop asking).
Followers-only and direct posts are not served to anonymous fetches.
"""

from __future__ import annotations

from aiohttp import web

from actors.collections import PAGE_SIZE, offset_page, ordered_collection, page_number, page_url
from actors.documents import activity_response
from actors.local import get_local_account
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import loads_strict
from fedi.negotiation import wants_html
from fedi.web.render import render
from outbox.serialize import note, tombstone, with_context

VARY = {"Vary": "Accept"}


def _int(value: str) -> int:
    if not value.isdigit() or len(value) > 19:
        raise HttpError(404, "not found")
    return int(value)


async def _author(ctx: Context, username: str) -> Row:
    row = await get_local_account(ctx.db, username)
    if row is None:
        raise HttpError(404, "not found")
    if row["suspended_at"] is not None:
        raise HttpError(410, "gone")
    return row


async def _status(ctx: Context, author: Row, status_id: int) -> Row:
    row = await ctx.db.fetchone(
        "SELECT * FROM statuses WHERE id = ? AND account_id = ? AND local = 1 AND reblog_of_id IS NULL",
        (status_id, author["id"]),
    )
    if row is None or row["visibility"] not in ("public", "unlisted"):
        raise HttpError(404, "not found")
    return row


def _gone(uri: str, deleted_at: float) -> web.Response:
    return activity_response({**tombstone(uri, deleted_at), "@context": "https://www.w3.org/ns/activitystreams"},
                             status=410, headers=VARY)


async def _serve_status(request: web.Request, activity: bool) -> web.StreamResponse:
    ctx = request.app[CTX]
    author = await _author(ctx, request.match_info["username"])
    status = await _status(ctx, author, _int(request.match_info["id"]))
    if status["deleted_at"] is not None:
        if wants_html(request):
            raise HttpError(410, "this post was deleted")
        return _gone(status["uri"], status["deleted_at"])
    if wants_html(request):
        return render("status.html", {
            "instance": ctx.config.instance, "base_url": ctx.base_url, "status": status, "author": author,
            "display_name": author["display_name"] or author["username"],
            "handle": f"@{author['username']}@{ctx.domain}", "title": f"Post by @{author['username']}",
        }, headers=VARY)
    obj = await note(ctx.db, ctx.base_url, status, author)
    if activity:
        obj = {"id": f"{status['uri']}/activity", "type": "Create", "actor": author["uri"],
               "published": obj["published"], "to": obj["to"], "cc": obj["cc"], "object": obj}
    return activity_response(with_context(obj), headers=VARY)


async def status_object(request: web.Request) -> web.StreamResponse:
    """GET /users/{username}/statuses/{id} and /@{username}/{id}."""
    return await _serve_status(request, activity=False)


async def status_activity(request: web.Request) -> web.StreamResponse:
    """GET /users/{username}/statuses/{id}/activity: the Create."""
    return await _serve_status(request, activity=True)


async def activity(request: web.Request) -> web.Response:
    """GET /activities/{id}: public activities as they were sent (the frozen bytes)."""
    ctx = request.app[CTX]
    row = await ctx.db.fetchone(
        "SELECT o.body, o.object_uri, t.deleted_at FROM outbox_activities o"
        " LEFT JOIN tombstones t ON t.uri = o.object_uri WHERE o.id = ? AND o.public = 1",
        (_int(request.match_info["id"]),),
    )
    if row is None:
        raise HttpError(404, "not found")
    if row["deleted_at"] is not None:
        return _gone(ctx.base_url + request.path, row["deleted_at"])
    return activity_response(loads_strict(row["body"]), headers=VARY)


async def outbox_collection(request: web.Request) -> web.Response:
    """GET /users/{username}/outbox: public Creates and Announces, newest first, paged."""
    ctx = request.app[CTX]
    author = await _author(ctx, request.match_info["username"])
    collection_id = author["outbox_url"]
    where = "account_id = ? AND public = 1 AND type IN ('Create', 'Announce') AND object_uri NOT IN (SELECT uri FROM tombstones)"
    total = int(await ctx.db.fetchval(f"SELECT count(*) FROM outbox_activities WHERE {where}", (author["id"],)) or 0)
    page = page_number(request)
    if page is None:
        return activity_response(ordered_collection(collection_id, total, page_url(collection_id, 1)))
    rows = await ctx.db.fetchall(
        f"SELECT body FROM outbox_activities WHERE {where} ORDER BY id DESC LIMIT ? OFFSET ?",
        (author["id"], PAGE_SIZE, (page - 1) * PAGE_SIZE),
    )
    items = []
    for r in rows:
        item = loads_strict(r["body"])
        item.pop("@context", None)
        items.append(item)
    return activity_response(offset_page(collection_id, page, items, total))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/users/{username}/outbox", outbox_collection)
    r.add_get("/users/{username}/statuses/{id}", status_object)
    r.add_get("/users/{username}/statuses/{id}/activity", status_activity)
    r.add_get("/@{username}/{id}", status_object)
    r.add_get("/activities/{id}", activity)
