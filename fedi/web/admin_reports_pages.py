"""Admin pages for reports: the open and resolved lists, one report, and what an admin does about it.

Assign, unassign, resolve and reopen call `fedi.moderation.reports.change_report`;
an account action (none, sensitive, disable, silence, suspend) calls
`fedi.api.admin_accounts.take_action`, as the admin API does, which resolves the
report and writes the audit row in the same transaction. Reports are shown with the same
Admin::Report entities the API answers, so both show the same thing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api.admin_accounts import TYPES, ActionError, take_action
from fedi.api.admin_reports import admin_reports
from fedi.context import CTX
from fedi.db import Row
from fedi.jsonutil import loads_strict
from fedi.moderation.reports import ADMIN_CHANGES, change_report
from fedi.web.session import Form, Session, admin_get, admin_post, not_found, page, see_other

PAGE_SIZE = 50
MAX_TEXT = 5000
CHANGES = (*ADMIN_CHANGES, "resolve")


def _max_id(request: web.Request) -> int | None:
    raw = request.query.get("max_id", "")
    return int(raw) if raw.isdigit() and len(raw) < 19 else None


async def reports(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/reports (?resolved=1, ?max_id= for older ones)"""
    ctx = request.app[CTX]
    resolved = request.query.get("resolved") == "1"
    max_id = _max_id(request)
    rows = await ctx.db.fetchall(
        f"SELECT * FROM reports WHERE action_taken_at IS {'NOT ' if resolved else ''}NULL AND id < ?"
        " ORDER BY id DESC LIMIT ?", (max_id if max_id is not None else 2**63 - 1, PAGE_SIZE + 1))
    items = await admin_reports(ctx, rows[:PAGE_SIZE], session.account)
    older = rows[PAGE_SIZE - 1]["id"] if len(rows) > PAGE_SIZE else None
    return page(request, session, "admin/reports.html", {
        "title": "Resolved reports" if resolved else "Open reports", "reports": items, "resolved": resolved,
        "older": older})


async def _report(request: web.Request, session: Session) -> Row:
    row = await request.app[CTX].db.fetchone("SELECT * FROM reports WHERE id = ?", (int(request.match_info["id"]),))
    if row is None:
        raise not_found(request, session, "There is no such report.")
    return row


async def _report_page(request: web.Request, session: Session, row: Row, *, error: str | None = None,
                       status: int = 200) -> web.Response:
    ctx = request.app[CTX]
    report = (await admin_reports(ctx, [row], session.account))[0]
    return page(request, session, "admin/report.html", {
        "title": f"Report {row['id']}", "report": report, "rule_ids": loads_strict(row["rule_ids_json"]),
        "types": TYPES, "error": error, "own_target": row["target_account_id"] == session.account["id"]},
        status=status)


async def report(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/reports/{id}: reporter, target, statuses, comment, category, and the actions."""
    return await _report_page(request, session, await _report(request, session))


def _change(name: str) -> Any:
    async def handler(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
        """POST /admin/reports/{id}/<assign_to_self | unassign | resolve | reopen>"""
        row = await change_report(request.app[CTX], session.account["id"], int(request.match_info["id"]), name)
        if row is None:
            raise not_found(request, session, "There is no such report.")
        return see_other(f"/admin/reports/{row['id']}")

    return handler


async def account_action(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/reports/{id}/action (type, text): act on the reported account and resolve the report."""
    ctx = request.app[CTX]
    row = await _report(request, session)
    kind, text = form.get("type"), form.get("text")
    text = text if isinstance(text, str) else ""
    target = await ctx.db.fetchrow("SELECT * FROM accounts WHERE id = ?", (row["target_account_id"],))
    try:
        if len(text) > MAX_TEXT:
            raise ActionError(f"the note is longer than {MAX_TEXT} characters")
        await take_action(ctx, session.account, target, kind if isinstance(kind, str) else "", text, row)
    except ActionError as exc:
        return await _report_page(request, session, row, error=str(exc), status=422)
    return see_other(f"/admin/reports/{row['id']}")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/reports", admin_get(reports))
    r.add_get(r"/admin/reports/{id:\d{1,18}}", admin_get(report))
    for name in CHANGES:
        r.add_post(rf"/admin/reports/{{id:\d{{1,18}}}}/{name}", admin_post(_change(name)))
    r.add_post(r"/admin/reports/{id:\d{1,18}}/action", admin_post(account_action))
