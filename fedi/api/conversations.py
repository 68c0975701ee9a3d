"""Direct-message conversations: GET /api/v1/conversations, mark read, remove.

A conversation is the set of direct statuses the user wrote or was mentioned in
that share a thread root (`fedi.threads.thread_root`). One `conversations` row
per (account, root) is brought up to date lazily, when the list is read: direct statuses stored
since the previous pass (by `statuses.created_at`, the time they were stored,
which local and remote posts alike only ever increase) are folded in. That
position is kept in `markers` under the internal timeline name
`conversations`, never shown by the markers API. Because only newer statuses
are folded in, a removed conversation stays away until someone writes in it
again, as in Mastodon.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import require
from fedi.api.owned import own_row
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.respond import json_response
from fedi.api.params import read_params
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.threads import ROOT_COLUMNS, thread_root

MARKER = "conversations"


async def sync(ctx: Context, account_id: int) -> None:
    """Fold direct statuses stored since the last pass into the account's conversation rows."""
    async with ctx.db.write() as tx:
        mark = await tx.fetchone(
            "SELECT last_read_id FROM markers WHERE account_id = ? AND timeline = ?", (account_id, MARKER)
        )
        since = float(mark["last_read_id"]) if mark else 0.0
        rows = await tx.fetchall(
            f"SELECT {ROOT_COLUMNS}, account_id, created_at FROM statuses"
            " WHERE account_id = ? AND visibility = 'direct' AND deleted_at IS NULL AND created_at > ?"
            " UNION SELECT s.id, s.uri, s.in_reply_to_id, s.in_reply_to_uri, s.conversation_uri, s.account_id,"
            " s.created_at FROM mentions m JOIN statuses s ON s.id = m.status_id"
            " WHERE m.account_id = ? AND s.visibility = 'direct' AND s.deleted_at IS NULL AND s.created_at > ?"
            " ORDER BY id",
            (account_id, since, account_id, since),
        )
        if not rows:
            return
        memo: dict[int, str] = {}
        for status in rows:
            root = await thread_root(tx, status, memo)
            unread = int(status["account_id"] != account_id)
            await tx.execute(
                "INSERT INTO conversations (id, account_id, conversation_uri, last_status_id, unread)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_id, conversation_uri) DO UPDATE"
                " SET last_status_id = excluded.last_status_id, unread = excluded.unread"
                " WHERE excluded.last_status_id > conversations.last_status_id",
                (tx.new_id(), account_id, root, status["id"], unread),
            )
        await tx.execute(
            "INSERT INTO markers (account_id, timeline, last_read_id, version, updated_at) VALUES (?, ?, ?, 1, ?)"
            " ON CONFLICT (account_id, timeline) DO UPDATE SET last_read_id = excluded.last_read_id,"
            " version = markers.version + 1, updated_at = excluded.updated_at",
            (account_id, MARKER, repr(max(r["created_at"] for r in rows)), now()),
        )


async def render(ctx: Context, rows: list[Row], viewer: Row) -> list[dict[str, Any]]:
    """Conversation entities: the other participants of the last status, and that status."""
    if not rows:
        return []
    ids = [r["last_status_id"] for r in rows]
    ph = ",".join("?" for _ in ids)
    status_rows = await ctx.db.fetchall(f"SELECT * FROM statuses WHERE id IN ({ph}) AND deleted_at IS NULL", ids)
    statuses = {int(s["id"]): s for s in await entities.statuses(ctx, status_rows, viewer)}
    people: dict[int, list[int]] = {s["id"]: [s["account_id"]] for s in status_rows}
    for m in await ctx.db.fetchall(f"SELECT status_id, account_id FROM mentions WHERE status_id IN ({ph})", ids):
        people.setdefault(m["status_id"], []).append(m["account_id"])
    account_ids = list({a for group in people.values() for a in group if a != viewer["id"]})
    accounts: dict[int, dict[str, Any]] = {}
    if account_ids:
        accounts = await entities.accounts(ctx, await ctx.db.fetchall(
            f"SELECT * FROM accounts WHERE id IN ({','.join('?' for _ in account_ids)})", account_ids))
    return [{
        "id": str(r["id"]),
        "unread": bool(r["unread"]),
        "accounts": [accounts[a] for a in dict.fromkeys(people.get(r["last_status_id"], [])) if a in accounts],
        "last_status": statuses.get(r["last_status_id"]),
    } for r in rows]


async def index(request: web.Request) -> web.Response:
    """GET /api/v1/conversations (paged by each conversation's last status id, as Mastodon does)"""
    auth = await require(request, "read:statuses")
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=20, maximum=40)
    await sync(ctx, auth.account["id"])
    rows = await fetch_page(ctx, page, "SELECT * FROM conversations WHERE account_id = ?", [auth.account["id"]],
                            "last_status_id")
    return paged_json(request, await render(ctx, rows, auth.account), [r["last_status_id"] for r in rows])


async def _own(request: web.Request) -> tuple[Context, Row, Row]:
    """(context, caller's account, the caller's conversation with the path's id); someone else's is not found."""
    auth = await require(request, "write:conversations")
    ctx = request.app[CTX]
    return ctx, auth.account, await own_row(ctx, "conversations", request.match_info["id"], auth.account["id"])


async def mark_read(request: web.Request) -> web.Response:
    """POST /api/v1/conversations/:id/read"""
    ctx, me, row = await _own(request)
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE conversations SET unread = 0 WHERE id = ?", (row["id"],))
    updated = await own_row(ctx, "conversations", request.match_info["id"], me["id"])
    return json_response((await render(ctx, [updated], me))[0])


async def remove(request: web.Request) -> web.Response:
    """DELETE /api/v1/conversations/:id"""
    ctx, _, row = await _own(request)
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM conversations WHERE id = ?", (row["id"],))
    return json_response({})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/conversations", index)
    r.add_get("/api/v1/conversations/", index)  # as Mastodon.py asks (Rails ignores the trailing slash)
    r.add_post("/api/v1/conversations/{id}/read", mark_read)
    r.add_delete("/api/v1/conversations/{id}", remove)
