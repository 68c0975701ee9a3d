"""What clients do with an existing status: favourite, boost, bookmark, pin, mute its thread and their undos;
who favourited or boosted it; its thread, edit history and source; several statuses at once; the bookmarks and
favourites lists.

Every id goes through `visible_status`, so a status the caller can't see is a
404 whatever the verb (THREATS O5). Federation happens in outbox.actions.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import optional, require
from fedi.api.paging import page_from, paged_json
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.api.visibility import can_see, visible_status
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.threads import thread_root
from outbox import actions, lists
from outbox.actions import ActionError

MAX_PINS = 5
MAX_ANCESTORS = 40
MAX_DESCENDANTS_ANONYMOUS = 60
MAX_DESCENDANTS = 400
MAX_MANY = 20

Handler = Callable[[web.Request], Awaitable[web.Response]]
Verb = Callable[[Context, Row, Row], Awaitable[Row | None]]


def api_error(exc: ActionError) -> HttpError:
    return HttpError(exc.status, "Record not found" if exc.status == 404 else f"Validation failed: {exc}")


async def _proper(ctx: Context, row: Row) -> Row:
    """A boost stands for its original (favouriting a boost favourites the post, as in Mastodon)."""
    if row["reblog_of_id"] is None:
        return row
    original = await ctx.db.fetchone(
        "SELECT * FROM statuses WHERE id = ? AND deleted_at IS NULL", (row["reblog_of_id"],)
    )
    if original is None:
        raise HttpError(404, "Record not found")
    return original


def _verb(scope: str, do: Verb) -> Handler:
    """POST /api/v1/statuses/{id}/<verb>: do it, answer the status (or what `do` returns) as the caller sees it."""
    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, scope)
        ctx = request.app[CTX]
        status = await _proper(ctx, await visible_status(ctx, request.match_info["id"], auth.account))
        try:
            shown = await do(ctx, auth.account, status)
        except ActionError as exc:
            raise api_error(exc) from None
        return json_response(await entities.status(ctx, shown or status, auth.account))
    return handler


async def _favourite(ctx: Context, me: Row, status: Row) -> None:
    await actions.favourite(ctx, me, status["id"])


async def _unfavourite(ctx: Context, me: Row, status: Row) -> None:
    await actions.unfavourite(ctx, me, status["id"])


async def _reblog(ctx: Context, me: Row, status: Row) -> Row:
    """Answers the boost itself, whose `reblog` is the original."""
    return await actions.reblog(ctx, me, status["id"])


async def _unreblog(ctx: Context, me: Row, status: Row) -> None:
    await actions.unreblog(ctx, me, status["id"])


async def _bookmark(ctx: Context, me: Row, status: Row) -> None:
    await lists.bookmark(ctx, me, status["id"])


async def _unbookmark(ctx: Context, me: Row, status: Row) -> None:
    await lists.unbookmark(ctx, me, status["id"])


async def _pin(ctx: Context, me: Row, status: Row) -> None:
    """Own public or unlisted posts only, at most MAX_PINS (Mastodon's 422 messages)."""
    if status["account_id"] != me["id"]:
        raise ActionError("Someone else's post cannot be pinned")
    if status["visibility"] not in ("public", "unlisted"):
        raise ActionError("Only public and unlisted posts can be pinned")
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM status_pins WHERE account_id = ? AND status_id = ?", (me["id"], status["id"])):
            return
        pinned = await tx.fetchone(
            "SELECT count(*) AS n FROM status_pins p JOIN statuses s ON s.id = p.status_id"
            " WHERE p.account_id = ? AND s.deleted_at IS NULL", (me["id"],)
        )
        if pinned is not None and pinned["n"] >= MAX_PINS:
            raise ActionError("You have already pinned the maximum number of posts")
        await tx.execute(
            "INSERT INTO status_pins (id, account_id, status_id, created_at) VALUES (?, ?, ?, ?)",
            (tx.new_id(), me["id"], status["id"], now()),
        )


async def _unpin(ctx: Context, me: Row, status: Row) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM status_pins WHERE account_id = ? AND status_id = ?", (me["id"], status["id"]))


async def _mute(ctx: Context, me: Row, status: Row) -> None:
    """Mute the status's whole thread (its root, `fedi.threads`): no more notifications from it."""
    root = await thread_root(ctx.db, status)
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT OR IGNORE INTO conversation_mutes (account_id, conversation_uri, created_at) VALUES (?, ?, ?)",
            (me["id"], root, now()),
        )


async def _unmute(ctx: Context, me: Row, status: Row) -> None:
    root = await thread_root(ctx.db, status)
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM conversation_mutes WHERE account_id = ? AND conversation_uri = ?", (me["id"], root))


async def _accounts_page(request: web.Request, sql: str, args: list[Any]) -> web.Response:
    """Accounts paged by the id of the row that links them (favourite or boost), 40 by default, 80 at most."""
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=40, maximum=80)
    cond, cond_args, order = page.clause("page_id")
    rows = page.arrange(await ctx.db.fetchall(
        f"SELECT * FROM ({sql}) WHERE {cond} ORDER BY {order} LIMIT ?", [*args, *cond_args, page.limit]
    ))
    rendered = await entities.accounts(ctx, rows)
    return paged_json(request, [rendered[r["id"]] for r in rows], [r["page_id"] for r in rows])


async def _readable(request: web.Request) -> tuple[Context, Row | None, Row]:
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    viewer = auth.account if auth else None
    return ctx, viewer, await visible_status(ctx, request.match_info["id"], viewer)


async def favourited_by(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}/favourited_by"""
    _, _, status = await _readable(request)
    return await _accounts_page(
        request, "SELECT a.*, f.id AS page_id FROM favourites f JOIN accounts a ON a.id = f.account_id"
        " WHERE f.status_id = ? AND a.suspended_at IS NULL", [status["id"]],
    )


async def reblogged_by(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}/reblogged_by"""
    _, _, status = await _readable(request)
    return await _accounts_page(
        request, "SELECT a.*, s.id AS page_id FROM statuses s JOIN accounts a ON a.id = s.account_id"
        " WHERE s.reblog_of_id = ? AND s.deleted_at IS NULL AND a.suspended_at IS NULL", [status["id"]],
    )


async def _ancestors(ctx: Context, status: Row, viewer: Row | None) -> list[Row]:
    """Up the in_reply_to chain, oldest first; hidden ones are skipped, not followed past the bound."""
    found: list[Row] = []
    seen = {status["id"]}
    parent_id = status["in_reply_to_id"]
    while parent_id is not None and parent_id not in seen and len(seen) <= MAX_ANCESTORS:
        seen.add(parent_id)
        row = await ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (parent_id,))
        if row is None:
            break
        if await can_see(ctx, row, viewer):
            found.append(row)
        parent_id = row["in_reply_to_id"]
    return list(reversed(found))


async def _descendants(ctx: Context, status: Row, viewer: Row | None) -> list[Row]:
    """Replies found breadth-first (bounded, each checked for this viewer), answered in thread order."""
    limit = MAX_DESCENDANTS if viewer is not None else MAX_DESCENDANTS_ANONYMOUS
    children: dict[int, list[Row]] = {}
    frontier, found = [status["id"]], 0
    while frontier and found < limit:
        rows = await ctx.db.fetchall(
            f"SELECT * FROM statuses WHERE in_reply_to_id IN ({','.join('?' for _ in frontier)})"
            " AND deleted_at IS NULL ORDER BY id LIMIT ?", [*frontier, limit - found],
        )
        frontier = []
        for row in rows:
            if await can_see(ctx, row, viewer):
                children.setdefault(row["in_reply_to_id"], []).append(row)
                frontier.append(row["id"])
                found += 1
    ordered: list[Row] = []
    stack = list(reversed(children.get(status["id"], [])))
    while stack:
        row = stack.pop()
        ordered.append(row)
        stack.extend(reversed(children.get(row["id"], [])))
    return ordered


async def context(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}/context"""
    ctx, viewer, status = await _readable(request)
    return json_response({
        "ancestors": await entities.statuses(ctx, await _ancestors(ctx, status, viewer), viewer),
        "descendants": await entities.statuses(ctx, await _descendants(ctx, status, viewer), viewer),
    })


async def history(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}/history: earlier versions from status_edits, then the current one."""
    ctx, viewer, status = await _readable(request)
    current = await entities.status(ctx, status, viewer)
    poll = {"options": [{"title": o["title"]} for o in current["poll"]["options"]]} if current["poll"] else None
    edits = await ctx.db.fetchall(
        "SELECT content, summary, sensitive, created_at FROM status_edits WHERE status_id = ? ORDER BY id", (status["id"],)
    )
    versions = [(e["content"], e["summary"], e["sensitive"], e["created_at"]) for e in edits]
    versions.append((status["content"], status["summary"], status["sensitive"], status["edited_at"] or status["published_at"]))
    return json_response([
        {"content": content, "spoiler_text": summary or "", "sensitive": bool(sensitive), "created_at": iso(at),
         "account": current["account"], "poll": poll, "media_attachments": current["media_attachments"], "emojis": []}
        for content, summary, sensitive, at in versions
    ])


async def source(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}/source: what the author typed, for editing."""
    auth = await require(request, "read:statuses", user=False)
    ctx = request.app[CTX]
    status = await visible_status(ctx, request.match_info["id"], auth.account)
    return json_response({"id": str(status["id"]), "text": status["source_text"] or "", "spoiler_text": status["summary"] or ""})


async def many(request: web.Request) -> web.Response:
    """GET /api/v1/statuses?id[]=…: the visible ones, in the order asked; unknown or hidden ids are left out."""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    viewer = auth.account if auth else None
    wanted = (await read_params(request)).list("id")
    if len(wanted) > MAX_MANY:
        raise HttpError(422, f"Validation failed: at most {MAX_MANY} ids")
    ids = list(dict.fromkeys(int(i) for i in wanted if isinstance(i, str) and i.isdigit() and len(i) <= 19))
    rows = await ctx.db.fetchall(f"SELECT * FROM statuses WHERE id IN ({','.join('?' for _ in ids)})", ids) if ids else []
    by_id = {r["id"]: r for r in rows}
    visible = [by_id[i] for i in ids if i in by_id and await can_see(ctx, by_id[i], viewer)]
    return json_response(await entities.statuses(ctx, visible, viewer))


def _own_list(table: str, scope: str) -> Handler:
    """GET /api/v1/bookmarks and /api/v1/favourites: paged by the bookmark/favourite row, newest first."""
    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, scope)
        ctx = request.app[CTX]
        page = page_from(await read_params(request))
        cond, cond_args, order = page.clause("page_id")
        rows = page.arrange(await ctx.db.fetchall(
            f"SELECT * FROM (SELECT s.*, x.id AS page_id FROM {table} x JOIN statuses s ON s.id = x.status_id"
            f" WHERE x.account_id = ? AND s.deleted_at IS NULL) WHERE {cond} ORDER BY {order} LIMIT ?",
            [auth.account["id"], *cond_args, page.limit],
        ))
        return paged_json(request, await entities.statuses(ctx, rows, auth.account), [r["page_id"] for r in rows])
    return handler


def setup(app: web.Application) -> None:
    r = app.router
    one = "/api/v1/statuses/{id:\\d+}"
    for name, scope, do in (
        ("favourite", "write:favourites", _favourite), ("unfavourite", "write:favourites", _unfavourite),
        ("reblog", "write:statuses", _reblog), ("unreblog", "write:statuses", _unreblog),
        ("bookmark", "write:bookmarks", _bookmark), ("unbookmark", "write:bookmarks", _unbookmark),
        ("pin", "write:accounts", _pin), ("unpin", "write:accounts", _unpin),
        ("mute", "write:mutes", _mute), ("unmute", "write:mutes", _unmute),
    ):
        r.add_post(f"{one}/{name}", _verb(scope, do))
    r.add_get(f"{one}/favourited_by", favourited_by)
    r.add_get(f"{one}/reblogged_by", reblogged_by)
    r.add_get(f"{one}/context", context)
    r.add_get(f"{one}/history", history)
    r.add_get(f"{one}/source", source)
    r.add_get("/api/v1/statuses", many)
    r.add_get("/api/v1/bookmarks", _own_list("bookmarks", "read:bookmarks"))
    r.add_get("/api/v1/favourites", _own_list("favourites", "read:favourites"))
