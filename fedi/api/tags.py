"""Hashtags for a user: look up, follow and unfollow, followed list; featured tags and suggestions.

Tag names follow the same rule as hashtags in posts (`fedi.content.HASHTAG_RE`:
word characters, at most 100, not only digits) and are stored lower-case.
Looking a tag up never creates it; following or featuring one does.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from actors import urls
from fedi.api.auth import authenticate, require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row, Tx
from fedi.errors import HttpError

TAG_NAME = re.compile(r"\w{1,100}")
MAX_FEATURED = 10
SUGGESTION_WINDOW = 1000


def normalise(name: str) -> str:
    """The stored form of a tag name; 404 for anything that cannot be a hashtag."""
    name = name.removeprefix("#")
    if not TAG_NAME.fullmatch(name) or name.isdigit():
        raise HttpError(404, "Record not found")
    return name.lower()


async def tag_entities(ctx: Context, rows: list[Row], viewer: Row | None) -> list[dict[str, Any]]:
    """Tag entities for `tags` rows (id, name), with `following`/`featuring` for the viewer."""
    following: set[int] = set()
    featuring: set[int] = set()
    ids = [r["id"] for r in rows]
    if viewer is not None and ids:
        ph = ",".join("?" for _ in ids)
        following = {r[0] for r in await ctx.db.fetchall(
            f"SELECT tag_id FROM followed_tags WHERE account_id = ? AND tag_id IN ({ph})", [viewer["id"], *ids])}
        featuring = {r[0] for r in await ctx.db.fetchall(
            f"SELECT tag_id FROM featured_tags WHERE account_id = ? AND tag_id IN ({ph})", [viewer["id"], *ids])}
    out = []
    for r in rows:
        entity: dict[str, Any] = {"id": str(r["id"]), "name": r["name"], "url": urls.tag(ctx.base_url, r["name"]),
                                  "history": []}
        if viewer is not None:
            entity["following"] = r["id"] in following
            entity["featuring"] = r["id"] in featuring
        out.append(entity)
    return out


async def _ensure_tag(tx: Tx, name: str) -> int:
    await tx.execute("INSERT OR IGNORE INTO tags (id, name) VALUES (?, ?)", (tx.new_id(), name))
    row = await tx.fetchone("SELECT id FROM tags WHERE name = ?", (name,))
    assert row is not None
    return int(row["id"])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/tags/:name (an unknown but valid name answers with an empty id, as Mastodon does)"""
    auth = await authenticate(request)
    viewer = auth.account if auth else None
    ctx = request.app[CTX]
    name = normalise(request.match_info["name"])
    return json_response(await _lookup(ctx, name, viewer))


async def _lookup(ctx: Context, name: str, viewer: Row | None) -> dict[str, Any]:
    row = await ctx.db.fetchone("SELECT id, name FROM tags WHERE name = ?", (name,))
    if row is not None:
        return (await tag_entities(ctx, [row], viewer))[0]
    entity: dict[str, Any] = {"id": "", "name": name, "url": urls.tag(ctx.base_url, name), "history": []}
    if viewer is not None:
        entity.update(following=False, featuring=False)
    return entity


async def follow(request: web.Request) -> web.Response:
    """POST /api/v1/tags/:name/follow"""
    auth = await require(request, "write:follows")
    ctx = request.app[CTX]
    name = normalise(request.match_info["name"])
    async with ctx.db.write() as tx:
        tag_id = await _ensure_tag(tx, name)
        await tx.execute("INSERT OR IGNORE INTO followed_tags (account_id, tag_id, created_at) VALUES (?, ?, ?)",
                         (auth.account["id"], tag_id, now()))
    row = await ctx.db.fetchrow("SELECT id, name FROM tags WHERE id = ?", (tag_id,))
    return json_response((await tag_entities(ctx, [row], auth.account))[0])


async def unfollow(request: web.Request) -> web.Response:
    """POST /api/v1/tags/:name/unfollow"""
    auth = await require(request, "write:follows")
    ctx = request.app[CTX]
    name = normalise(request.match_info["name"])
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM followed_tags WHERE account_id = ? AND tag_id = (SELECT id FROM tags WHERE name = ?)",
                         (auth.account["id"], name))
    return json_response(await _lookup(ctx, name, auth.account))


async def followed(request: web.Request) -> web.Response:
    """GET /api/v1/followed_tags (paged by tag id)"""
    auth = await require(request, "read:follows")
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=100, maximum=200)
    rows = await fetch_page(
        ctx, page, "SELECT t.id, t.name FROM followed_tags ft JOIN tags t ON t.id = ft.tag_id WHERE ft.account_id = ?",
        [auth.account["id"]], "ft.tag_id")
    return paged_json(request, await tag_entities(ctx, rows, auth.account), [r["id"] for r in rows])


async def _featured_entities(ctx: Context, account: Row, rows: list[Row]) -> list[dict[str, Any]]:
    """FeaturedTag entities: counts over the account's public and unlisted posts with the tag."""
    stats: dict[int, tuple[int, float | None]] = {}
    if rows:
        ids = [r["tag_id"] for r in rows]
        stats = {r[0]: (r[1], r[2]) for r in await ctx.db.fetchall(
            "SELECT st.tag_id, count(*), max(s.published_at) FROM status_tags st JOIN statuses s ON s.id = st.status_id"
            f" WHERE st.tag_id IN ({','.join('?' for _ in ids)}) AND s.account_id = ? AND s.deleted_at IS NULL"
            " AND s.visibility IN ('public', 'unlisted') GROUP BY st.tag_id", [*ids, account["id"]])}
    profile = urls.profile(ctx.base_url, account["username"])
    out = []
    for r in rows:
        count, last = stats.get(r["tag_id"], (0, None))
        out.append({"id": str(r["id"]), "name": r["name"], "url": f"{profile}/tagged/{r['name']}",
                    "statuses_count": count, "last_status_at": iso(last) if last else None})
    return out


FEATURED = ("SELECT ft.id, ft.tag_id, t.name FROM featured_tags ft JOIN tags t ON t.id = ft.tag_id"
            " WHERE ft.account_id = ?")


async def featured(request: web.Request) -> web.Response:
    """GET /api/v1/featured_tags"""
    auth = await require(request, "read:accounts")
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall(FEATURED + " ORDER BY ft.id", (auth.account["id"],))
    return json_response(await _featured_entities(ctx, auth.account, rows))


async def feature(request: web.Request) -> web.Response:
    """POST /api/v1/featured_tags (name)"""
    auth = await require(request, "write:accounts")
    ctx = request.app[CTX]
    params = await read_params(request)
    raw = params.str("name", max_length=200)
    if not raw:
        raise HttpError(422, "Validation failed: Name can't be blank")
    try:
        name = normalise(raw)
    except HttpError:
        raise HttpError(422, "Validation failed: Name is invalid") from None
    async with ctx.db.write() as tx:
        existing = await tx.fetchall(
            "SELECT t.name FROM featured_tags ft JOIN tags t ON t.id = ft.tag_id WHERE ft.account_id = ?",
            (auth.account["id"],))
        if any(r["name"] == name for r in existing):
            raise HttpError(422, "Validation failed: Tag has already been taken")
        if len(existing) >= MAX_FEATURED:
            raise HttpError(422, f"Validation failed: at most {MAX_FEATURED} featured tags")
        tag_id = await _ensure_tag(tx, name)
        featured_id = tx.new_id()
        await tx.execute("INSERT INTO featured_tags (id, account_id, tag_id, created_at) VALUES (?, ?, ?, ?)",
                         (featured_id, auth.account["id"], tag_id, now()))
    row = await ctx.db.fetchrow(FEATURED + " AND ft.id = ?", (auth.account["id"], featured_id))
    return json_response((await _featured_entities(ctx, auth.account, [row]))[0])


async def unfeature(request: web.Request) -> web.Response:
    """DELETE /api/v1/featured_tags/:id"""
    auth = await require(request, "write:accounts")
    async with request.app[CTX].db.write() as tx:
        cur = await tx.execute("DELETE FROM featured_tags WHERE id = ? AND account_id = ?",
                               (parse_id(request.match_info["id"]), auth.account["id"]))
        if cur.rowcount != 1:
            raise HttpError(404, "Record not found")
    return json_response({})


async def suggestions(request: web.Request) -> web.Response:
    """GET /api/v1/featured_tags/suggestions: the user's most used tags lately, not yet featured."""
    auth = await require(request, "read:accounts")
    ctx = request.app[CTX]
    me = auth.account["id"]
    rows = await ctx.db.fetchall(
        "SELECT t.id, t.name FROM status_tags st JOIN tags t ON t.id = st.tag_id"
        " WHERE st.status_id IN (SELECT id FROM statuses WHERE account_id = ? AND deleted_at IS NULL"
        " ORDER BY id DESC LIMIT ?)"
        " AND st.tag_id NOT IN (SELECT tag_id FROM featured_tags WHERE account_id = ?)"
        " GROUP BY t.id ORDER BY count(*) DESC, t.name LIMIT ?",
        (me, SUGGESTION_WINDOW, me, MAX_FEATURED),
    )
    return json_response(await tag_entities(ctx, rows, auth.account))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/tags/{name}", show)
    r.add_post("/api/v1/tags/{name}/follow", follow)
    r.add_post("/api/v1/tags/{name}/unfollow", unfollow)
    r.add_get("/api/v1/followed_tags", followed)
    r.add_get("/api/v1/featured_tags", featured)
    r.add_post("/api/v1/featured_tags", feature)
    r.add_get("/api/v1/featured_tags/suggestions", suggestions)
    r.add_delete("/api/v1/featured_tags/{id}", unfeature)
