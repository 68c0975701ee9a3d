"""Admin pages for block-list subscriptions and the drafts they propose.

Subscribing, syncing, unsubscribing, applying and dismissing drafts call
`fedi.moderation.subscriptions` and `blocklist_drafts` with the admin's account
id — the functions behind the admin API and `fedi blocklist` — so the audit log
reads the same whichever was used.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.context import CTX
from fedi.jsonutil import dumps_str, loads_strict
from fedi.moderation.blocklist_drafts import apply_draft, dismiss_draft, load_settings
from fedi.moderation.blocks import RuleError
from fedi.moderation.domains import SEVERITIES
from fedi.moderation.subscriptions import (
    FORMATS, MODES, RETRACTIONS, SourceSpec, SubscriptionError, SyncResult, subscribe, sync, unsubscribe,
)
from fedi.web.session import Form, Session, admin_get, admin_post, not_found, page, see_other

VIA = "web"
MAX_DRAFTS = 500


def _field(form: Form, name: str, default: str) -> str:
    value = form.get(name)
    return value.strip()[:2048] if isinstance(value, str) and value.strip() else default


async def _sources_page(request: web.Request, session: Session, *, status: int = 200, **context: Any) -> web.Response:
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall(
        "SELECT s.*, (SELECT count(*) FROM blocklist_entries e WHERE e.source_id = s.id) AS n"
        " FROM blocklist_sources s ORDER BY s.priority DESC, s.id")
    pending = await ctx.db.fetchval("SELECT count(*) FROM blocklist_drafts WHERE state = 'pending'")
    return page(request, session, "admin/subscriptions.html", {
        "title": "Block-list subscriptions", "sources": rows, "pending": pending, "severities": SEVERITIES,
        "modes": MODES, "retractions": RETRACTIONS, "formats": FORMATS, "settings": await load_settings(ctx.db),
        "values": {}, **context}, status=status)


async def sources(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/subscriptions"""
    return await _sources_page(request, session)


async def add_source(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/subscriptions (url, priority, max_severity, mode, retractions, format)"""
    try:
        priority_text = _field(form, "priority", "0")
        if not priority_text.lstrip("-").isdigit() or len(priority_text) > 6:
            raise SubscriptionError("priority must be a whole number")
        spec = SourceSpec(url=_field(form, "url", ""), priority=int(priority_text),
                          max_severity=_field(form, "max_severity", "suspend"), mode=_field(form, "mode", "draft"),
                          retractions=_field(form, "retractions", "remove"), format=_field(form, "format", "auto"))
        await subscribe(request.app[CTX], session.account["id"], spec)
    except SubscriptionError as exc:
        return await _sources_page(request, session, error=str(exc), values=form, status=422)
    return see_other("/admin/subscriptions")


def _sync_report(result: SyncResult) -> dict[str, Any]:
    return {"fetched": result.fetched, "applied": result.outcome.applied, "drafted": result.outcome.drafted,
            "failed": result.outcome.failed}


async def sync_now(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/subscriptions/sync: fetch every enabled list now; the page shows what happened."""
    result = await sync(request.app[CTX], force=True)
    return await _sources_page(request, session, sync=_sync_report(result))


async def remove_source(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/subscriptions/{id}/remove: its domains count as retracted by it."""
    outcome = await unsubscribe(request.app[CTX], session.account["id"], int(request.match_info["id"]))
    if outcome is None:
        raise not_found(request, session, "There is no such subscription (any more).")
    return await _sources_page(request, session, notice=(
        f"Unsubscribed: {len(outcome.applied)} blocks lifted or changed, {len(outcome.drafted)} drafts to review."))


async def _drafts_page(request: web.Request, session: Session, *, status: int = 200, **context: Any) -> web.Response:
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall("SELECT * FROM blocklist_drafts WHERE state = 'pending' ORDER BY id LIMIT ?",
                                 (MAX_DRAFTS,))
    total = await ctx.db.fetchval("SELECT count(*) FROM blocklist_drafts WHERE state = 'pending'")
    domains = [r["domain"] for r in rows]
    blocks = {b["domain"]: b for b in await ctx.db.fetchall(
        "SELECT * FROM domain_blocks WHERE domain IN (SELECT value FROM json_each(?))", (dumps_str(domains),))}
    drafts = [{"row": r, "sources": loads_strict(r["sources_json"]), "block": blocks.get(r["domain"])} for r in rows]
    return page(request, session, "admin/drafts.html",
                {"title": "Block-list drafts", "drafts": drafts, "total": total, **context}, status=status)


async def drafts(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/drafts: what the lists propose, with the sources that propose it."""
    return await _drafts_page(request, session)


async def apply_one(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/drafts/{id}/apply"""
    try:
        row = await apply_draft(request.app[CTX], session.account["id"], int(request.match_info["id"]), via=VIA)
    except RuleError as exc:
        return await _drafts_page(request, session, error=exc.message, status=422)
    if row is None:
        raise not_found(request, session, "There is no such pending draft (any more).")
    return see_other("/admin/drafts")


async def dismiss_one(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/drafts/{id}/dismiss: not proposed again while the lists ask the same."""
    if await dismiss_draft(request.app[CTX], session.account["id"], int(request.match_info["id"])) is None:
        raise not_found(request, session, "There is no such pending draft (any more).")
    return see_other("/admin/drafts")


async def apply_all(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/drafts/apply_all: each pending draft in turn; refusals are listed, the rest applied."""
    ctx = request.app[CTX]
    applied, failed = 0, []
    for r in await ctx.db.fetchall("SELECT id, domain FROM blocklist_drafts WHERE state = 'pending' ORDER BY id"):
        try:
            if await apply_draft(ctx, session.account["id"], r["id"], via=VIA) is not None:
                applied += 1
        except RuleError as exc:
            failed.append(f"{r['domain']}: {exc.message}")
    return await _drafts_page(request, session, notice=f"{applied} drafts applied, {len(failed)} not applied.",
                              failures=failed)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/subscriptions", admin_get(sources))
    r.add_post("/admin/subscriptions", admin_post(add_source))
    r.add_post("/admin/subscriptions/sync", admin_post(sync_now))
    r.add_post(r"/admin/subscriptions/{id:\d{1,18}}/remove", admin_post(remove_source))
    r.add_get("/admin/drafts", admin_get(drafts))
    r.add_post("/admin/drafts/apply_all", admin_post(apply_all))
    r.add_post(r"/admin/drafts/{id:\d{1,18}}/apply", admin_post(apply_one))
    r.add_post(r"/admin/drafts/{id:\d{1,18}}/dismiss", admin_post(dismiss_one))
