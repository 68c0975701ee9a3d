"""Mastodon's admin account API: view an account, act on it, and undo the action.

`POST /api/v1/admin/accounts/:id/action` with type none | sensitive | disable |
silence | suspend sets one column (users.disabled, accounts.sensitized_at /
silenced_at / suspended_at), resolves the linked report, and writes the audit
log, all in one transaction. A suspended local actor answers 410 and its tokens
stop working; enable / unsilence / unsuspend / unsensitive reverse each action.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.accounts import find_account
from fedi.api.auth import require
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.moderation.audit import record
from fedi.moderation.reports import resolve_in

TYPES = ("none", "sensitive", "disable", "silence", "suspend")
MAX_TEXT = 5000
#: type → (table, SQL assignment) for the action and for its reversal.
SET = {
    "sensitive": ("accounts", "sensitized_at = :ts"),
    "disable": ("users", "disabled = 1"),
    "silence": ("accounts", "silenced_at = :ts"),
    "suspend": ("accounts", "suspended_at = :ts"),
}
UNDO = {
    "unsensitive": ("accounts", "sensitized_at = NULL"),
    "enable": ("users", "disabled = 0"),
    "unsilence": ("accounts", "silenced_at = NULL"),
    "unsuspend": ("accounts", "suspended_at = NULL"),
}


class ActionError(ValueError):
    """An account action that cannot be taken; the message goes back in a 422."""


def _invalid(message: str) -> HttpError:
    return HttpError(422, f"Validation failed: {message}")


async def admin_accounts(ctx: Context, rows: list[Row]) -> dict[int, dict[str, Any]]:
    """Admin::Account entities by id (user fields null for remote accounts)."""
    if not rows:
        return {}
    public = await entities.accounts(ctx, rows)
    ids = [r["id"] for r in rows]
    users = {u["account_id"]: u for u in await ctx.db.fetchall(
        f"SELECT * FROM users WHERE account_id IN ({','.join('?' for _ in ids)})", ids)}
    out = {}
    for r in rows:
        user = users.get(r["id"])
        admin = bool(user and user["admin"])
        out[r["id"]] = {
            "id": str(r["id"]),
            "username": r["username"],
            "domain": r["domain"],
            "created_at": iso(r["created_at"]),
            "email": user["email"] if user else None,
            "ip": None,
            "ips": [],
            "locale": user["locale"] if user else None,
            "invite_request": user["reason"] if user else None,
            "role": {"id": "3" if admin else "-99", "name": "Admin" if admin else "", "color": "",
                     "permissions": "1" if admin else "0", "highlighted": admin} if user else None,
            "confirmed": user is not None,
            "approved": bool(user and user["approved"]),
            "disabled": bool(user and user["disabled"]),
            "silenced": r["silenced_at"] is not None,
            "suspended": r["suspended_at"] is not None,
            "sensitized": r["sensitized_at"] is not None,
            "account": public[r["id"]],
            "created_by_application_id": None,
            "invited_by_account_id": None,
        }
    return out


async def admin_account(ctx: Context, row: Row) -> dict[str, Any]:
    return (await admin_accounts(ctx, [row]))[row["id"]]


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/admin/accounts/{id}"""
    await require(request, "admin:read:accounts")
    ctx = request.app[CTX]
    return json_response(await admin_account(ctx, await find_account(ctx, request.match_info["id"])))


async def _report(ctx: Context, raw: str | None, target: Row) -> Row | None:
    if not raw:
        return None
    report = await ctx.db.fetchone(
        "SELECT * FROM reports WHERE id = ?", (int(raw) if raw.isdigit() and len(raw) < 20 else -1,))
    if report is None or report["target_account_id"] != target["id"]:
        raise _invalid("report_id does not name a report about this account")
    return report


async def _apply(ctx: Context, admin: Row, target: Row, kind: str, change: tuple[str, str] | None,
                 detail: dict[str, Any], report: Row | None = None) -> None:
    """One transaction: the column change, the report resolution, the audit row."""
    async with ctx.db.write() as tx:
        if change is not None:
            table, assignment = change
            key = "account_id" if table == "users" else "id"
            await tx.execute(f"UPDATE {table} SET {assignment} WHERE {key} = :id", {"ts": now(), "id": target["id"]})
        if report is not None:
            await resolve_in(tx, admin["id"], report, {"action": kind})
        await record(tx, admin["id"], kind, "account", str(target["id"]), detail)


async def take_action(ctx: Context, admin: Row, target: Row, kind: str, text: str = "",
                      report: Row | None = None) -> None:
    """One account action for the API and the admin pages: checked, then applied, report resolved and audited."""
    if kind not in TYPES:
        raise ActionError("type must be none, sensitive, disable, silence or suspend")
    if target["id"] == admin["id"]:
        raise ActionError("you cannot act on your own account")
    if kind == "disable" and not await _is_local_user(ctx, target):
        raise ActionError("only local accounts can be disabled")
    detail = {"acct": entities.acct(ctx, target), "text": text, "report_id": str(report["id"]) if report else None}
    await _apply(ctx, admin, target, kind, SET.get(kind), detail, report)


async def _target(request: web.Request, scope: str) -> tuple[Context, Row, Row]:
    auth = await require(request, scope)
    ctx = request.app[CTX]
    target = await find_account(ctx, request.match_info["id"])
    if target["id"] == auth.account["id"]:
        raise _invalid("you cannot act on your own account")
    return ctx, auth.account, target


async def _is_local_user(ctx: Context, target: Row) -> bool:
    return await ctx.db.fetchone("SELECT 1 FROM users WHERE account_id = ?", (target["id"],)) is not None


async def action(request: web.Request) -> web.Response:
    """POST /api/v1/admin/accounts/{id}/action (type, report_id, text, send_email_notification)"""
    ctx, admin, target = await _target(request, "admin:write:accounts")
    params = await read_params(request)
    kind = params.str("type", "none", max_length=20) or "none"
    text = params.str("text", "", max_length=MAX_TEXT) or ""
    params.bool("send_email_notification")  # fedi sends no e-mail; the flag is only checked
    report = await _report(ctx, params.str("report_id", max_length=20), target)
    try:
        await take_action(ctx, admin, target, kind, text, report)
    except ActionError as exc:
        raise _invalid(str(exc)) from None
    return json_response({})


def _undo(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        """POST /api/v1/admin/accounts/{id}/<undo>: reverse one action; answers the Admin::Account."""
        ctx, admin, target = await _target(request, "admin:write:accounts")
        if name == "enable" and not await _is_local_user(ctx, target):
            raise _invalid("only local accounts can be enabled")
        await _apply(ctx, admin, target, name, UNDO[name], {"acct": entities.acct(ctx, target)})
        row = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (target["id"],))
        assert row is not None
        return json_response(await admin_account(ctx, row))

    return handler


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/admin/accounts/{id:\\d+}", show)
    r.add_post("/api/v1/admin/accounts/{id:\\d+}/action", action)
    for name in UNDO:
        r.add_post(f"/api/v1/admin/accounts/{{id:\\d+}}/{name}", _undo(name))
