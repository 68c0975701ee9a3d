"""fedi's own admin endpoints (Mastodon has none for these), under /api/v1/admin/fedi/:

keyword rules and what they caught, posts held for review (release or drop),
and the audit log. Block-list subscriptions live in `admin_blocklists.py`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso
from fedi.context import CTX
from fedi.db import Row
from fedi.errors import HttpError, refusing
from fedi.jsonutil import JsonError, loads_strict
from fedi.moderation.keyword_rules import RuleError, check_new_rule, create_rule, delete_rule, rule_entity, settle_held
from fedi.sanitize import plain_text

PREFIX = "/api/v1/admin/fedi"
EXCERPT = 500


async def rules(request: web.Request) -> web.Response:
    """GET /api/v1/admin/fedi/keyword_rules: every rule with how many posts it caught."""
    await require(request, "admin:read")
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall(
        "SELECT r.*, (SELECT count(*) FROM keyword_rule_hits h WHERE h.rule_id = r.id) AS hits"
        " FROM keyword_rules r ORDER BY r.id")
    return json_response([rule_entity(r, r["hits"]) for r in rows])


@refusing(RuleError)
async def add_rule(request: web.Request) -> web.Response:
    """POST /api/v1/admin/fedi/keyword_rules (pattern, kind=keyword|hashtag, action=reject|review, whole_word)"""
    auth = await require(request, "admin:write")
    params = await read_params(request)
    rule = check_new_rule(params.str("pattern", max_length=1000), params.str("kind", max_length=20),
                          params.str("action", max_length=20), params.bool("whole_word", True))
    return json_response(rule_entity(await create_rule(request.app[CTX], auth.account["id"], rule)))


async def remove_rule(request: web.Request) -> web.Response:
    """DELETE /api/v1/admin/fedi/keyword_rules/{id}"""
    auth = await require(request, "admin:write")
    if not await delete_rule(request.app[CTX], auth.account["id"], parse_id(request.match_info["id"])):
        raise HttpError(404, "Record not found")
    return json_response({})


async def rule_hits(request: web.Request) -> web.Response:
    """GET /api/v1/admin/fedi/keyword_rules/{id}/hits: what the rule caught, newest first (paged)."""
    await require(request, "admin:read")
    rule_id = parse_id(request.match_info["id"])
    page = page_from(await read_params(request), default=40, maximum=200)
    rows = await fetch_page(request.app[CTX], page, "SELECT * FROM keyword_rule_hits WHERE rule_id = ?", [rule_id])
    body = [{"id": str(r["id"]), "rule_id": str(r["rule_id"]), "activity_id": r["activity_id"],
             "actor_uri": r["actor_uri"], "excerpt": r["excerpt"], "created_at": iso(r["created_at"])} for r in rows]
    return paged_json(request, body, [r["id"] for r in rows])


def _held_entity(row: Row) -> dict[str, Any]:
    try:
        obj = loads_strict(row["body"]).get("object")
    except (JsonError, AttributeError):
        obj = None
    obj = obj if isinstance(obj, dict) else {}
    return {"id": str(row["id"]), "activity_id": row["activity_id"], "actor_uri": row["actor_uri"],
            "type": row["type"], "received_at": iso(row["received_at"]), "reason": row["result"],
            "object_id": obj.get("id") if isinstance(obj.get("id"), str) else None,
            "summary": plain_text(obj.get("summary"), EXCERPT), "content": plain_text(obj.get("content"), EXCERPT)}


async def held(request: web.Request) -> web.Response:
    """GET /api/v1/admin/fedi/held: inbound posts a review rule is holding (paged)."""
    await require(request, "admin:read")
    page = page_from(await read_params(request), default=40, maximum=200)
    rows = await fetch_page(request.app[CTX], page, "SELECT * FROM inbox_activities WHERE state = 'held'")
    return paged_json(request, [_held_entity(r) for r in rows], [r["id"] for r in rows])


def _settle(release: bool) -> Any:
    async def handler(request: web.Request) -> web.Response:
        """POST /api/v1/admin/fedi/held/{id}/release (apply it now) or /drop (ignore it for good)."""
        auth = await require(request, "admin:write")
        if not await settle_held(request.app[CTX], auth.account["id"], parse_id(request.match_info["id"]), release):
            raise HttpError(404, "Record not found")
        return json_response({})

    return handler


async def audit_log(request: web.Request) -> web.Response:
    """GET /api/v1/admin/fedi/audit_log (?action, ?target_type, paging): who did what, newest first."""
    await require(request, "admin:read")
    params = await read_params(request)
    page = page_from(params, default=40, maximum=200)
    where, args = ["1"], []
    for column in ("action", "target_type"):
        value = params.str(column, max_length=64)
        if value:
            where.append(f"{column} = ?")
            args.append(value)
    rows = await fetch_page(request.app[CTX], page, f"SELECT * FROM audit_log WHERE {' AND '.join(where)}", args)
    body = [{"id": str(r["id"]), "account_id": str(r["account_id"]) if r["account_id"] is not None else None,
             "action": r["action"], "target_type": r["target_type"], "target": r["target"],
             "detail": loads_strict(r["detail_json"]), "created_at": iso(r["created_at"])} for r in rows]
    return paged_json(request, body, [r["id"] for r in rows])


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/keyword_rules", rules)
    r.add_post(f"{PREFIX}/keyword_rules", add_rule)
    r.add_delete(f"{PREFIX}/keyword_rules/{{id}}", remove_rule)
    r.add_get(f"{PREFIX}/keyword_rules/{{id}}/hits", rule_hits)
    r.add_get(f"{PREFIX}/held", held)
    r.add_post(f"{PREFIX}/held/{{id}}/release", _settle(True))
    r.add_post(f"{PREFIX}/held/{{id}}/drop", _settle(False))
    r.add_get(f"{PREFIX}/audit_log", audit_log)
