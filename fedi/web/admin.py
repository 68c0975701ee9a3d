"""The admin pages under /admin: a dashboard, the audit log, keyword rules and held posts; `setup` registers them all.

Domain rules, subscriptions and reports have their own modules (admin_*_pages.py);
sessions and CSRF live in `fedi.web.session`. Pages only read and render: every
change is made by the moderation function the admin API and the CLI call, with
the signed-in admin's account id, so the audit log records who did it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.context import CTX, Context
from fedi.jsonutil import JsonError, loads_strict
from fedi.moderation.domains import current
from fedi.moderation.keyword_rules import ACTIONS, KINDS, RuleError, check_new_rule, create_rule, delete_rule, settle_held
from fedi.sanitize import plain_text
from fedi.web import admin_domains_pages, admin_reports_pages, admin_subscriptions_pages, session as sessions
from fedi.web.session import Form, Session, admin_get, admin_post, not_found, page, see_other

PAGE_SIZE = 50
HITS_SHOWN = 100
HELD_SHOWN = 100
EXCERPT = 500
DETAIL_CHARS = 400


async def dashboard(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin: what needs attention, with links."""
    ctx = request.app[CTX]
    count = ctx.db.fetchval
    severities = {r[0]: r[1] for r in await ctx.db.fetchall(
        "SELECT severity, count(*) FROM domain_blocks GROUP BY severity")}
    rules = await current(ctx)
    counts = {
        "blocks": sum(severities.values()), "severities": severities,
        "allows": await count("SELECT count(*) FROM domain_allows"),
        "open_reports": await count("SELECT count(*) FROM reports WHERE action_taken_at IS NULL"),
        "unassigned": await count(
            "SELECT count(*) FROM reports WHERE action_taken_at IS NULL AND assigned_account_id IS NULL"),
        "drafts": await count("SELECT count(*) FROM blocklist_drafts WHERE state = 'pending'"),
        "sources": await count("SELECT count(*) FROM blocklist_sources"),
        "broken_sources": await count("SELECT count(*) FROM blocklist_sources WHERE last_error IS NOT NULL"),
        "keyword_rules": await count("SELECT count(*) FROM keyword_rules"),
        "held": await count("SELECT count(*) FROM inbox_activities WHERE state = 'held'"),
    }
    recent = await _audit_rows(ctx, None, None, 5)
    return page(request, session, "admin/dashboard.html", {
        "title": "Administration", "counts": counts, "mode": rules.mode, "authorized_fetch": rules.authorized_fetch,
        "recent": recent})


async def _audit_rows(ctx: Context, max_id: int | None, action: str | None, limit: int) -> list[dict[str, Any]]:
    where: list[str] = ["l.id < ?"]
    args: list[Any] = [max_id if max_id is not None else 2**63 - 1]
    if action:
        where.append("l.action = ?")
        args.append(action)
    rows = await ctx.db.fetchall(
        f"SELECT l.*, a.username FROM audit_log l LEFT JOIN accounts a ON a.id = l.account_id"
        f" WHERE {' AND '.join(where)} ORDER BY l.id DESC LIMIT ?", [*args, limit])
    out = []
    for r in rows:
        detail = r["detail_json"]
        out.append({"row": r, "detail": detail if len(detail) <= DETAIL_CHARS else detail[:DETAIL_CHARS] + "…"})
    return out


async def audit(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/audit (?action=, ?max_id= for older entries): every moderation action, newest first."""
    raw = request.query.get("max_id", "")
    max_id = int(raw) if raw.isdigit() and len(raw) < 19 else None
    action = request.query.get("action", "")[:64] or None
    entries = await _audit_rows(request.app[CTX], max_id, action, PAGE_SIZE + 1)
    older = entries[PAGE_SIZE - 1]["row"]["id"] if len(entries) > PAGE_SIZE else None
    return page(request, session, "admin/audit.html", {
        "title": "Audit log", "entries": entries[:PAGE_SIZE], "older": older, "action": action or "",
        "first_page": max_id is None})


async def _rules_page(request: web.Request, session: Session, *, error: str | None = None,
                      values: Form | None = None, status: int = 200) -> web.Response:
    rows = await request.app[CTX].db.fetchall(
        "SELECT r.*, (SELECT count(*) FROM keyword_rule_hits h WHERE h.rule_id = r.id) AS hits"
        " FROM keyword_rules r ORDER BY r.id")
    return page(request, session, "admin/keyword_rules.html", {
        "title": "Keyword rules", "rules": rows, "kinds": KINDS, "actions": ACTIONS, "error": error,
        "values": values}, status=status)


async def keyword_rules(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/keyword_rules"""
    return await _rules_page(request, session)


async def add_rule(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/keyword_rules (pattern, kind, action, whole_word)"""
    values = {k: form.get(k) if isinstance(form.get(k), str) else None for k in ("pattern", "kind", "action")}
    try:
        rule = check_new_rule((values["pattern"] or "")[:1000], values["kind"], values["action"], "whole_word" in form)
        await create_rule(request.app[CTX], session.account["id"], rule)
    except RuleError as exc:
        return await _rules_page(request, session, error=str(exc), values=form, status=422)
    return see_other("/admin/keyword_rules")


async def remove_rule(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/keyword_rules/{id}/delete (its hits go with it)"""
    if not await delete_rule(request.app[CTX], session.account["id"], int(request.match_info["id"])):
        raise not_found(request, session, "There is no such rule (any more).")
    return see_other("/admin/keyword_rules")


async def rule_hits(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/keyword_rules/{id}: what the rule caught, newest first."""
    ctx = request.app[CTX]
    rule = await ctx.db.fetchone("SELECT * FROM keyword_rules WHERE id = ?", (int(request.match_info["id"]),))
    if rule is None:
        raise not_found(request, session, "There is no such rule (any more).")
    hits = await ctx.db.fetchall("SELECT * FROM keyword_rule_hits WHERE rule_id = ? ORDER BY id DESC LIMIT ?",
                                 (rule["id"], HITS_SHOWN))
    total = await ctx.db.fetchval("SELECT count(*) FROM keyword_rule_hits WHERE rule_id = ?", (rule["id"],))
    return page(request, session, "admin/keyword_rule.html",
                {"title": f"Rule {rule['pattern']}", "rule": rule, "hits": hits, "total": total})


def _held_item(row: Any) -> dict[str, Any]:
    try:
        obj = loads_strict(row["body"]).get("object")
    except (JsonError, AttributeError):
        obj = None
    obj = obj if isinstance(obj, dict) else {}
    return {"row": row, "summary": plain_text(obj.get("summary"), EXCERPT), "content": plain_text(obj.get("content"), EXCERPT)}


async def held(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/held: inbound posts a review rule is holding, newest first."""
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall("SELECT * FROM inbox_activities WHERE state = 'held' ORDER BY id DESC LIMIT ?",
                                 (HELD_SHOWN,))
    total = await ctx.db.fetchval("SELECT count(*) FROM inbox_activities WHERE state = 'held'")
    return page(request, session, "admin/held.html",
                {"title": "Held posts", "items": [_held_item(r) for r in rows], "total": total})


def _settle(release: bool) -> Any:
    async def handler(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
        """POST /admin/held/{id}/release (processed now, rules not asked again) or /drop (ignored for good)."""
        if not await settle_held(request.app[CTX], session.account["id"], int(request.match_info["id"]), release):
            raise not_found(request, session, "No held post has this id (any more).")
        return see_other("/admin/held")

    return handler


def setup(app: web.Application) -> None:
    sessions.setup(app)
    r = app.router
    r.add_get("/admin", admin_get(dashboard))
    r.add_get("/admin/", admin_get(dashboard))
    r.add_get("/admin/audit", admin_get(audit))
    r.add_get("/admin/keyword_rules", admin_get(keyword_rules))
    r.add_post("/admin/keyword_rules", admin_post(add_rule))
    r.add_get(r"/admin/keyword_rules/{id:\d{1,18}}", admin_get(rule_hits))
    r.add_post(r"/admin/keyword_rules/{id:\d{1,18}}/delete", admin_post(remove_rule))
    r.add_get("/admin/held", admin_get(held))
    r.add_post(r"/admin/held/{id:\d{1,18}}/release", admin_post(_settle(True)))
    r.add_post(r"/admin/held/{id:\d{1,18}}/drop", admin_post(_settle(False)))
    admin_domains_pages.setup(app)
    admin_subscriptions_pages.setup(app)
    admin_reports_pages.setup(app)
