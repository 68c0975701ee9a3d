"""Search v2: accounts, statuses and hashtags, and `resolve=true` lookups of remote accounts and posts.

Local search is plain SQL (prefixes for accounts and tags; a bounded substring
scan of recent statuses the viewer may see). Resolving reaches out at most once
per search, only for a signed-in user (as Mastodon: anonymous resolve is 401):
`@user@domain` goes through WebFinger, a URL is fetched by the instance actor
and kept only if the document's own origin vouches for it (an actor through
actors/remote.py, a post the way the inbox stores a fetched note).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from actors.local import instance_signer
from actors.remote import ACTOR_TYPES, ActorError, fetch_actor, get_actor, store_actor
from actors.urls import tag as tag_url
from actors.webfinger import resolve_handle
from fedi.api import entities
from fedi.api.auth import optional
from fedi.api.paging import page_from
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import can_see, parse_id
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.http_client import FetchError
from fedi.origin import is_valid_url, netloc, same_origin
from inbox.handlers import _fetch_remote_note, _store_note
from inbox.parse import NOTE_TYPES, ParseError

TYPES = ("accounts", "statuses", "hashtags")
#: Status search scans at most this many of the newest statuses (no full-text index).
STATUS_WINDOW = 20_000
MAX_OFFSET = 10_000
HANDLE = re.compile(r"^@?([A-Za-z0-9_.-]+)@([A-Za-z0-9.:-]+)$")


def _like(text: str) -> str:
    """`text` as a LIKE prefix with its wildcards escaped (ESCAPE '\\')."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


# --- local search ----------------------------------------------------------------------------------------------------


async def _accounts(ctx: Context, q: str, viewer: Row | None, following: bool, limit: int, offset: int) -> list[Row]:
    """Accounts whose username, display name (or a word of it) or user@domain starts with `q`."""
    where = ["a.suspended_at IS NULL", "a.gone_at IS NULL", "a.id != ?"]
    args: list[Any] = [ctx.instance_actor_id]
    handle = HANDLE.match(q)
    if handle:
        user, domain = handle.groups()
        where.append("a.username LIKE ? ESCAPE '\\'")
        args.append(_like(user))
        if domain.lower() == ctx.domain.lower():
            where.append("a.domain IS NULL")
        else:
            where.append("a.domain LIKE ? ESCAPE '\\'")
            args.append(_like(domain.lower()))
    else:
        name = q.lstrip("@")
        where.append("(a.username LIKE ? ESCAPE '\\' OR a.display_name LIKE ? ESCAPE '\\'"
                     " OR a.display_name LIKE ? ESCAPE '\\')")
        args += [_like(name), _like(name), "% " + _like(name)]
    if following:
        if viewer is None:
            return []
        where.append("EXISTS (SELECT 1 FROM follows f WHERE f.account_id = ? AND f.target_account_id = a.id"
                     " AND f.state = 'accepted')")
        args.append(viewer["id"])
    exact = (handle.group(1) if handle else q.lstrip("@")).lower()
    return await ctx.db.fetchall(
        f"SELECT a.* FROM accounts a WHERE {' AND '.join(where)}"
        " ORDER BY lower(a.username) = ? DESC, a.domain IS NULL DESC, lower(a.username), a.id LIMIT ? OFFSET ?",
        [*args, exact, limit, offset],
    )


def _visible_sql(viewer: Row | None) -> tuple[str, list[Any]]:
    """Statuses the viewer may find: public ones, plus their own, ones they are mentioned in,
    and followers-only/unlisted posts of accounts they follow; never from accounts they block or mute."""
    if viewer is None:
        return "s.visibility = 'public'", []
    v = viewer["id"]
    return (
        "(s.visibility = 'public' OR s.account_id = ?"
        " OR EXISTS (SELECT 1 FROM mentions m WHERE m.status_id = s.id AND m.account_id = ?)"
        " OR (s.visibility IN ('unlisted', 'private') AND EXISTS (SELECT 1 FROM follows f WHERE f.account_id = ?"
        "     AND f.target_account_id = s.account_id AND f.state = 'accepted')))"
        " AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.account_id = ? AND b.target_account_id = s.account_id)"
        " AND NOT EXISTS (SELECT 1 FROM mutes u WHERE u.account_id = ? AND u.target_account_id = s.account_id)",
        [v, v, v, v, v],
    )


async def _statuses(ctx: Context, q: str, viewer: Row | None, params: Params, limit: int, offset: int) -> list[Row]:
    """Recent visible statuses whose text or content warning contains `q`."""
    visible, args = _visible_sql(viewer)
    where = ["s.deleted_at IS NULL", "s.reblog_of_id IS NULL", visible,
             "NOT EXISTS (SELECT 1 FROM accounts x WHERE x.id = s.account_id AND x.suspended_at IS NOT NULL)",
             "s.id >= coalesce((SELECT id FROM statuses ORDER BY id DESC LIMIT 1 OFFSET ?), 0)",
             "(s.content LIKE ? ESCAPE '\\' OR s.summary LIKE ? ESCAPE '\\')"]
    pattern = "%" + _like(q)
    args += [STATUS_WINDOW, pattern, pattern]
    if params.get("account_id") not in (None, ""):
        where.append("s.account_id = ?")
        args.append(parse_id(str(params.get("account_id"))))
    cond, cond_args, order = page_from(params).clause("s.id")
    rows = await ctx.db.fetchall(
        f"SELECT s.* FROM statuses s WHERE {' AND '.join(where)} AND {cond} ORDER BY {order} LIMIT ? OFFSET ?",
        [*args, *cond_args, limit, offset],
    )
    return sorted(rows, key=lambda r: r["id"], reverse=True)


async def _hashtags(ctx: Context, q: str, viewer: Row | None, limit: int, offset: int) -> list[dict[str, Any]]:
    name = q.lstrip("#").lower()
    if not name:
        return []
    rows = await ctx.db.fetchall(
        "SELECT id, name FROM tags WHERE name LIKE ? ESCAPE '\\' ORDER BY name = ? DESC, length(name), name"
        " LIMIT ? OFFSET ?",
        (_like(name), name, limit, offset),
    )
    followed: set[int] = set()
    featured: set[int] = set()
    if viewer is not None and rows:
        ids = [r["id"] for r in rows]
        ph = ",".join("?" for _ in ids)
        followed = {r[0] for r in await ctx.db.fetchall(
            f"SELECT tag_id FROM followed_tags WHERE account_id = ? AND tag_id IN ({ph})", [viewer["id"], *ids])}
        featured = {r[0] for r in await ctx.db.fetchall(
            f"SELECT tag_id FROM featured_tags WHERE account_id = ? AND tag_id IN ({ph})", [viewer["id"], *ids])}
    return [{
        "id": str(r["id"]),
        "name": r["name"],
        "url": tag_url(ctx.base_url, r["name"]),
        "history": [],
        "following": r["id"] in followed if viewer is not None else None,
        "featuring": r["id"] in featured if viewer is not None else None,
    } for r in rows]


# --- resolving (at most one remote lookup per search) --------------------------------------------------------------


async def _resolve_handle(ctx: Context, user: str, domain: str) -> Row | None:
    """A remote account by handle: the stored copy (refreshed when stale), else WebFinger then its actor."""
    known = await ctx.db.fetchone(
        "SELECT uri FROM accounts WHERE lower(username) = lower(?) AND lower(domain) = lower(?)", (user, domain)
    )
    try:
        uri = known["uri"] if known else await resolve_handle(ctx, f"{user}@{domain}")
        return await get_actor(ctx, uri)
    except ActorError:
        return None


async def _known_url(ctx: Context, url: str) -> tuple[Row | None, Row | None]:
    """(account, status) already stored under this id or URL."""
    status = await ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ? OR url = ? LIMIT 1", (url, url))
    if status is not None:
        return None, status
    account = await ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ? OR url = ? LIMIT 1", (url, url))
    return account, None


async def _resolve_url(ctx: Context, url: str) -> tuple[Row | None, Row | None]:
    """Fetch a URL as the instance actor; store what it is if its id's origin vouches for it."""
    try:
        result = await ctx.http.fetch_json(url, signer=await instance_signer(ctx))
    except FetchError:
        return None, None
    doc = result.document
    doc_id = doc.get("id")
    if not is_valid_url(doc_id) or not same_origin(doc_id, result.url):
        return None, None
    try:
        if doc.get("type") in ACTOR_TYPES:
            # A document fetched from its own id is authoritative; otherwise ask the id itself.
            return (await store_actor(ctx, doc) if doc_id == result.url else await fetch_actor(ctx, doc_id)), None
        if doc.get("type") in NOTE_TYPES:
            fetched = await _fetch_remote_note(ctx, doc_id)  # refetched from its id, author checked
            if fetched is None:
                return None, None
            note, author = fetched
            async with ctx.db.write() as tx:
                await _store_note(ctx, tx, note, author)
            return None, await ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (doc_id,))
    except (ActorError, ParseError):
        return None, None
    return None, None


async def lookup_address(ctx: Context, q: str, resolve: bool) -> tuple[Row | None, Row | None] | None:
    """For a handle or URL query: (account, status) found (remotely if `resolve`); None for other queries."""
    handle = HANDLE.match(q)
    if handle:
        user, domain = handle.groups()
        if domain.lower() == ctx.domain.lower() or not resolve:
            return None  # the local prefix search answers it
        return await _resolve_handle(ctx, user, domain), None
    if not is_valid_url(q):
        return None
    account, status = await _known_url(ctx, q)
    if (account or status) or not resolve or netloc(q).lower() == ctx.domain.lower():
        return account, status
    return await _resolve_url(ctx, q)


# --- the endpoint ----------------------------------------------------------------------------------------------------


async def search(request: web.Request) -> web.Response:
    """GET /api/v2/search"""
    auth = await optional(request, "read:search")
    ctx = request.app[CTX]
    params = await read_params(request)
    viewer = auth.account if auth else None
    q = (params.str("q", max_length=1000) or "").strip()
    if not q:
        raise HttpError(400, "Missing parameter: q")
    kind = params.str("type", max_length=20) or None
    if kind is not None and kind not in TYPES:
        raise HttpError(422, "type must be accounts, statuses or hashtags")
    resolve = params.bool("resolve")
    offset = params.int("offset", 0, low=0, high=MAX_OFFSET) or 0
    if viewer is None and resolve:
        raise HttpError(401, "Search queries that resolve remote resources are not supported without authentication")
    if viewer is None and offset:
        raise HttpError(401, "Search queries pagination is not supported without authentication")
    limit = params.int("limit", 20, low=1, high=40) or 20
    body: dict[str, list[Any]] = {"accounts": [], "statuses": [], "hashtags": []}

    found = await lookup_address(ctx, q, resolve)
    if found is not None:
        account, status = found
        if account is not None and kind in (None, "accounts") and account["suspended_at"] is None:
            body["accounts"] = [await entities.account(ctx, account)]
        if status is not None and kind in (None, "statuses") and await can_see(ctx, status, viewer):
            body["statuses"] = await entities.statuses(ctx, [status], viewer)
        if account is not None or status is not None or is_valid_url(q):
            return json_response(body)
    if kind in (None, "accounts"):
        rows = await _accounts(ctx, q, viewer, params.bool("following"), limit, offset)
        body["accounts"] = list((await entities.accounts(ctx, rows)).values())
        order = {r["id"]: i for i, r in enumerate(rows)}
        body["accounts"].sort(key=lambda a: order[int(a["id"])])
    if kind in (None, "statuses"):
        body["statuses"] = await entities.statuses(ctx, await _statuses(ctx, q, viewer, params, limit, offset), viewer)
    if kind in (None, "hashtags"):
        body["hashtags"] = await _hashtags(ctx, q, viewer, limit, offset)
    return json_response(body)


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v2/search", search)
