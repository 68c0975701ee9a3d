"""POST /api/v1/reports: a user reports an account (and some of its statuses) to the admins.

With `forward=true` and a remote target, the report also goes to the target's
instance as a `Flag` from the instance actor (`fedi/moderation/reports.py`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.accounts import find_account
from fedi.api.auth import require
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import can_see
from fedi.clock import iso
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import loads_strict
from fedi.moderation.reports import MAX_COMMENT, MAX_RULE_IDS, MAX_STATUSES, ReportError, ReportRequest, create_report


def _invalid(message: str) -> HttpError:
    return HttpError(422, f"Validation failed: {message}")


def _ids(params: Params, name: str, limit: int) -> tuple[int, ...]:
    raw = params.list(name)
    if len(raw) > limit:
        raise _invalid(f"at most {limit} {name}")
    if not all(isinstance(v, (str, int)) and not isinstance(v, bool) and str(v).isdigit() and len(str(v)) < 20
               for v in raw):
        raise _invalid(f"{name} must be ids")
    return tuple(dict.fromkeys(int(v) for v in raw))


async def _statuses(ctx: Context, viewer: Row, target: Row, ids: tuple[int, ...]) -> list[Row]:
    """The reported statuses: each must be the target's and visible to the reporter."""
    if not ids:
        return []
    rows = {r["id"]: r for r in await ctx.db.fetchall(
        f"SELECT * FROM statuses WHERE id IN ({','.join('?' for _ in ids)}) AND account_id = ?", [*ids, target["id"]])}
    for status_id in ids:
        row = rows.get(status_id)
        if row is None or not await can_see(ctx, row, viewer):
            raise _invalid(f"status {status_id} is not a status of the reported account")
    return [rows[i] for i in ids]


async def report_entity(ctx: Context, row: Row, target: Row) -> dict[str, Any]:
    """Mastodon's Report entity (what the reporter sees)."""
    status_ids = [str(i) for i in loads_strict(row["status_ids_json"])]
    rule_ids = [str(i) for i in loads_strict(row["rule_ids_json"])]
    return {
        "id": str(row["id"]),
        "action_taken": row["action_taken_at"] is not None,
        "action_taken_at": iso(row["action_taken_at"]) if row["action_taken_at"] else None,
        "category": row["category"],
        "comment": row["comment"],
        "forwarded": bool(row["forwarded"]),
        "created_at": iso(row["created_at"]),
        "status_ids": status_ids or None,
        "rule_ids": rule_ids or None,
        "target_account": await entities.account(ctx, target),
    }


async def create(request: web.Request) -> web.Response:
    """POST /api/v1/reports (account_id, status_ids[], comment, forward, category, rule_ids[])"""
    auth = await require(request, "write:reports")
    ctx = request.app[CTX]
    params = await read_params(request)
    raw_account = params.str("account_id", max_length=20)
    if not raw_account:
        raise _invalid("account_id is required")
    comment = params.str("comment", "", max_length=MAX_COMMENT) or ""
    rule_ids = _ids(params, "rule_ids", MAX_RULE_IDS)
    category = params.str("category", max_length=20) or ("violation" if rule_ids else "other")
    if category == "violation" and not all(1 <= i <= len(ctx.config.instance.rules) for i in rule_ids):
        raise _invalid("rule_ids must name this server's rules (GET /api/v1/instance/rules)")
    target = await find_account(ctx, raw_account)
    statuses = await _statuses(ctx, auth.account, target, _ids(params, "status_ids", MAX_STATUSES))
    req = ReportRequest(target, tuple(s["id"] for s in statuses), comment, category,
                        rule_ids if category == "violation" else (), params.bool("forward"))
    try:
        row = await create_report(ctx, auth.account, req, statuses)
    except ReportError as exc:
        raise _invalid(str(exc)) from None
    return json_response(await report_entity(ctx, row, target))


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/reports", create)
