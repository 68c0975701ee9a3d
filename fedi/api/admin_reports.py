"""Mastodon's admin report API: list, show, assign to self, unassign, resolve, reopen.

Every change is audited (`fedi/moderation/reports.change_report`). Reports
from remote instances (inbound `Flag`) appear with the remote instance actor
as `account`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.admin_accounts import admin_accounts
from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import loads_strict
from fedi.moderation.reports import ADMIN_CHANGES, change_report


async def admin_reports(ctx: Context, rows: list[Row], viewer: Row) -> list[dict[str, Any]]:
    """Admin::Report entities for a page of report rows (accounts and statuses fetched in batches)."""
    account_ids = {r[c] for r in rows for c in ("account_id", "target_account_id", "assigned_account_id",
                                                "action_taken_by_account_id") if r[c] is not None}
    accounts = await admin_accounts(ctx, await ctx.db.fetchall(
        f"SELECT * FROM accounts WHERE id IN ({','.join('?' for _ in account_ids)})", list(account_ids)
    )) if account_ids else {}
    status_ids = {i for r in rows for i in loads_strict(r["status_ids_json"])}
    status_rows = await ctx.db.fetchall(
        f"SELECT * FROM statuses WHERE id IN ({','.join('?' for _ in status_ids)})", list(status_ids)
    ) if status_ids else []
    statuses = {int(s["id"]): s for s in await entities.statuses(ctx, status_rows, viewer)}

    rules = entities.rules(ctx)

    def reporter_local(r: Row) -> bool:
        reporter = accounts.get(r["account_id"])
        return reporter is not None and reporter["domain"] is None

    def one(r: Row) -> dict[str, Any]:
        return {
            "id": str(r["id"]),
            "action_taken": r["action_taken_at"] is not None,
            "action_taken_at": iso(r["action_taken_at"]) if r["action_taken_at"] else None,
            "category": r["category"],
            "comment": r["comment"],
            "forwarded": bool(r["forwarded"]),
            "created_at": iso(r["created_at"]),
            "updated_at": iso(r["updated_at"]),
            "account": accounts.get(r["account_id"]),
            "target_account": accounts.get(r["target_account_id"]),
            "assigned_account": accounts.get(r["assigned_account_id"]) if r["assigned_account_id"] else None,
            "action_taken_by_account": accounts.get(r["action_taken_by_account_id"])
            if r["action_taken_by_account_id"] else None,
            "statuses": [statuses[i] for i in loads_strict(r["status_ids_json"]) if i in statuses],
            # A local reporter's rule ids name this server's rules; a remote Flag's name its sender's.
            "rules": [rules[i - 1] for i in loads_strict(r["rule_ids_json"]) if 0 < i <= len(rules)]
            if reporter_local(r) else [],
        }

    return [one(r) for r in rows]


async def index(request: web.Request) -> web.Response:
    """GET /api/v1/admin/reports (resolved, account_id, target_account_id, paging)"""
    auth = await require(request, "admin:read:reports")
    ctx = request.app[CTX]
    params = await read_params(request)
    page = page_from(params, default=100, maximum=200)
    where = ["action_taken_at IS NOT NULL" if params.bool("resolved") else "action_taken_at IS NULL"]
    args: list[Any] = []
    for column in ("account_id", "target_account_id"):
        raw = params.str(column, max_length=20)
        if raw:
            where.append(f"{column} = ?")
            args.append(int(raw) if raw.isdigit() else -1)
    rows = await fetch_page(ctx, page, f"SELECT * FROM reports WHERE {' AND '.join(where)}", args)
    return paged_json(request, await admin_reports(ctx, rows, auth.account), [r["id"] for r in rows])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/admin/reports/{id}"""
    auth = await require(request, "admin:read:reports")
    ctx = request.app[CTX]
    row = await ctx.db.fetchone("SELECT * FROM reports WHERE id = ?", (parse_id(request.match_info["id"]),))
    if row is None:
        raise HttpError(404, "Record not found")
    return json_response((await admin_reports(ctx, [row], auth.account))[0])


def _change(name: str) -> Any:
    async def handler(request: web.Request) -> web.Response:
        """POST /api/v1/admin/reports/{id}/<change>: answers the changed Admin::Report."""
        auth = await require(request, "admin:write:reports")
        ctx = request.app[CTX]
        row = await change_report(ctx, auth.account["id"], parse_id(request.match_info["id"]), name)
        if row is None:
            raise HttpError(404, "Record not found")
        return json_response((await admin_reports(ctx, [row], auth.account))[0])

    return handler


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/admin/reports", index)
    r.add_get("/api/v1/admin/reports/{id}", show)
    for name in (*ADMIN_CHANGES, "resolve"):
        r.add_post(f"/api/v1/admin/reports/{{id}}/{name}", _change(name))
