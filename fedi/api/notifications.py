"""Notifications: list (types, exclude_types, account_id, paging), get, dismiss, clear, unread count.

Rows are written by `fedi.feeds.notify`; this module only reads and removes the
viewer's own. Notifications about deleted statuses, and from accounts the
viewer blocks or mutes (with notifications) or that are suspended, are left
out when reading. Statuses pass through the viewer's filters (context
`notifications`): a `hide` match drops the notification.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.filtering import apply_filters

VISIBLE = (
    "SELECT n.* FROM notifications n JOIN accounts a ON a.id = n.from_account_id"
    " LEFT JOIN statuses s ON s.id = n.status_id"
    " WHERE n.account_id = ? AND a.suspended_at IS NULL"
    " AND (n.status_id IS NULL OR (s.id IS NOT NULL AND s.deleted_at IS NULL))"
    " AND n.from_account_id NOT IN (SELECT target_account_id FROM blocks WHERE account_id = ?)"
    " AND n.from_account_id NOT IN (SELECT target_account_id FROM mutes WHERE account_id = ?"
    " AND notifications = 1 AND (expires_at IS NULL OR expires_at > ?))"
)


def _visible(me: int) -> tuple[str, list[Any]]:
    return VISIBLE, [me, me, me, now()]


def _types(params: Params, name: str) -> list[str]:
    values = params.list(name)
    if not all(isinstance(v, str) and len(v) <= 40 for v in values):
        raise HttpError(422, f"{name} must be a list of notification types")
    return values


def _selection(params: Params, me: int) -> tuple[str, list[Any]]:
    """The viewer's visible notifications narrowed by types[], exclude_types[] and account_id."""
    sql, args = _visible(me)
    types, excluded = _types(params, "types"), _types(params, "exclude_types")
    if types:
        sql += f" AND n.type IN ({','.join('?' for _ in types)})"
        args += types
    if excluded:
        sql += f" AND n.type NOT IN ({','.join('?' for _ in excluded)})"
        args += excluded
    account_id = params.get("account_id")
    if account_id not in (None, ""):
        account = str(account_id)
        sql += " AND n.from_account_id = ?"
        args.append(int(account) if account.isdigit() and len(account) <= 19 else -1)
    return sql, args


async def render(ctx: Context, rows: list[Row], viewer: Row) -> list[dict[str, Any]]:
    """Notification entities for rows, with accounts and statuses rendered in batches."""
    if not rows:
        return []
    from_ids = list({r["from_account_id"] for r in rows})
    account_rows = await ctx.db.fetchall(
        f"SELECT * FROM accounts WHERE id IN ({','.join('?' for _ in from_ids)})", from_ids
    )
    accounts = await entities.accounts(ctx, account_rows)
    status_ids = list({r["status_id"] for r in rows if r["status_id"] is not None})
    statuses: dict[str, dict[str, Any]] = {}
    if status_ids:
        status_rows = await ctx.db.fetchall(
            f"SELECT * FROM statuses WHERE id IN ({','.join('?' for _ in status_ids)})", status_ids
        )
        rendered = await entities.statuses(ctx, status_rows, viewer)
        statuses = {s["id"]: s for s in await apply_filters(ctx, viewer, rendered, "notifications")}
    out = []
    for r in rows:
        status = statuses.get(str(r["status_id"])) if r["status_id"] is not None else None
        if r["status_id"] is not None and status is None:
            continue  # hidden by a filter
        entity = {
            "id": str(r["id"]),
            "type": r["type"],
            "group_key": f"ungrouped-{r['id']}",
            "created_at": iso(r["created_at"]),
            "account": accounts[r["from_account_id"]],
            "status": status,
        }
        if r["type"] == "move":  # Mastodon: `account` moved, `target` is where it went
            entity["target"] = accounts[r["from_account_id"]].get("moved")
        out.append(entity)
    return out


async def index(request: web.Request) -> web.Response:
    """GET /api/v1/notifications"""
    auth = await require(request, "read:notifications")
    ctx = request.app[CTX]
    params = await read_params(request)
    page = page_from(params, default=40, maximum=80)
    sql, args = _selection(params, auth.account["id"])
    rows = await fetch_page(ctx, page, sql, args, "n.id")
    return paged_json(request, await render(ctx, rows, auth.account), [r["id"] for r in rows])


async def _own(ctx: Context, raw_id: str, me: int) -> Row:
    sql, args = _visible(me)
    row = await ctx.db.fetchone(sql + " AND n.id = ?", [*args, parse_id(raw_id)])
    if row is None:
        raise HttpError(404, "Record not found")
    return row


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/notifications/:id"""
    auth = await require(request, "read:notifications")
    ctx = request.app[CTX]
    row = await _own(ctx, request.match_info["id"], auth.account["id"])
    rendered = await render(ctx, [row], auth.account)
    if not rendered:
        raise HttpError(404, "Record not found")
    return json_response(rendered[0])


async def dismiss(request: web.Request) -> web.Response:
    """POST /api/v1/notifications/:id/dismiss"""
    auth = await require(request, "write:notifications")
    ctx = request.app[CTX]
    async with ctx.db.write() as tx:
        cur = await tx.execute("DELETE FROM notifications WHERE id = ? AND account_id = ?",
                               (parse_id(request.match_info["id"]), auth.account["id"]))
        if cur.rowcount != 1:
            raise HttpError(404, "Record not found")
    return json_response({})


async def clear(request: web.Request) -> web.Response:
    """POST /api/v1/notifications/clear"""
    auth = await require(request, "write:notifications")
    async with request.app[CTX].db.write() as tx:
        await tx.execute("DELETE FROM notifications WHERE account_id = ?", (auth.account["id"],))
    return json_response({})


async def unread_count(request: web.Request) -> web.Response:
    """GET /api/v1/notifications/unread_count: notifications newer than the `notifications` marker."""
    auth = await require(request, "read:notifications")
    ctx = request.app[CTX]
    params = await read_params(request)
    limit = params.int("limit", 100, low=1, high=1000)
    sql, args = _selection(params, auth.account["id"])
    marker = await ctx.db.fetchval(
        "SELECT last_read_id FROM markers WHERE account_id = ? AND timeline = 'notifications'", (auth.account["id"],)
    )
    after = int(marker) if marker and marker.isdigit() and len(marker) <= 19 else 0
    count = await ctx.db.fetchval(f"SELECT count(*) FROM ({sql} AND n.id > ? LIMIT ?)", [*args, after, limit])
    return json_response({"count": count})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/notifications", index)
    r.add_post("/api/v1/notifications/clear", clear)
    r.add_get("/api/v1/notifications/unread_count", unread_count)
    r.add_get("/api/v1/notifications/{id:\\d+}", show)
    r.add_post("/api/v1/notifications/{id:\\d+}/dismiss", dismiss)
