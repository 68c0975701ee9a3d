"""Reports: filed by local users, forwarded as `Flag`, received as `Flag`, and handled by admins.

A forwarded report is sent by the instance actor, never by the reporter, so the
remote side learns what was reported but not by whom (as Mastodon does). The
`Flag` carries Mastodon's fields (`object` = [account, statuses…], `content`)
plus two extension keys fedi reads back: `fedi:category` and `fedi:ruleIds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors.local import instance_signer
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.jsonutil import dumps_str
from fedi.moderation.audit import record
from fedi.origin import netloc
from fedi.sanitize import plain_text
from inbox.parse import ParseError, as_list, object_id
from outbox.actions import new_activity, publish

CATEGORIES = ("spam", "legal", "violation", "other")
MAX_COMMENT = 1000
MAX_REMOTE_COMMENT = 5000
MAX_STATUSES = 50
MAX_RULE_IDS = 20
MAX_FLAG_OBJECTS = 100
CATEGORY_KEY = "fedi:category"
RULES_KEY = "fedi:ruleIds"


class ReportError(ValueError):
    """A report that cannot be filed; the message goes back in a 422."""


@dataclass(frozen=True)
class ReportRequest:
    target: Row
    status_ids: tuple[int, ...]
    comment: str
    category: str
    rule_ids: tuple[int, ...]
    forward: bool


def check_request(req: ReportRequest, reporter: Row) -> None:
    """Everything that does not need the database; raises ReportError."""
    if req.target["id"] == reporter["id"]:
        raise ReportError("you cannot report yourself")
    if len(req.comment) > MAX_COMMENT:
        raise ReportError(f"comment is longer than {MAX_COMMENT} characters")
    if req.category not in CATEGORIES:
        raise ReportError("category must be spam, legal, violation or other")
    if len(req.status_ids) > MAX_STATUSES:
        raise ReportError(f"at most {MAX_STATUSES} statuses")
    if len(req.rule_ids) > MAX_RULE_IDS:
        raise ReportError(f"at most {MAX_RULE_IDS} rules")


async def _instance_actor(ctx: Context, tx: Tx) -> Row:
    row = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (ctx.instance_actor_id,))
    assert row is not None
    return row


async def create_report(ctx: Context, reporter: Row, req: ReportRequest, statuses: list[Row]) -> Row:
    """File a report (statuses already checked to be the target's); forward it as a Flag if asked.

    The report row and the Flag's delivery are written in one transaction.
    """
    check_request(req, reporter)
    forward = req.forward and req.target["domain"] is not None
    if forward:
        await instance_signer(ctx)  # the Flag is signed with its key; made outside the transaction
    async with ctx.db.write() as tx:
        report_id = tx.new_id()
        uri = None
        if forward:
            actor = await _instance_actor(ctx, tx)
            row_id, flag = new_activity(
                ctx, tx, "Flag", actor, [req.target["uri"], *(s["uri"] for s in statuses)],
                content=req.comment, **{CATEGORY_KEY: req.category, RULES_KEY: [str(r) for r in req.rule_ids]},
            )
            uri = flag["id"]
            inbox = req.target["shared_inbox_url"] or req.target["inbox_url"]
            await publish(ctx, tx, actor, flag, {inbox} if inbox else set(), row_id=row_id)
        ts = now()
        await tx.execute(
            "INSERT INTO reports (id, account_id, target_account_id, status_ids_json, rule_ids_json, category, comment,"
            " forwarded, uri, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (report_id, reporter["id"], req.target["id"], dumps_str([s["id"] for s in statuses]),
             dumps_str(list(req.rule_ids)), req.category, req.comment, int(forward), uri, ts, ts),
        )
        row = await tx.fetchone("SELECT * FROM reports WHERE id = ?", (report_id,))
    assert row is not None
    return row


def _rule_ids(value: Any) -> list[int]:
    items = value if isinstance(value, list) else []
    return [int(v) for v in items[:MAX_RULE_IDS] if isinstance(v, (str, int)) and str(v).isdigit() and len(str(v)) < 19]


async def receive_flag(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    """An inbound Flag: a report from the sending actor about local accounts/statuses.

    Ignored when the sender's domain has reject_reports, or when nothing local is named.
    """
    from fedi.moderation.enforce import reports_rejected

    if await reports_rejected(ctx, netloc(actor["uri"])):
        return "ignored: reports from this domain are rejected"
    try:
        uris = [u for u in (object_id(o) for o in as_list(activity.get("object"), MAX_FLAG_OBJECTS, "object")) if u]
    except ParseError as exc:
        return f"ignored: {exc}"
    if not uris:
        return "ignored: nothing reported"
    ph = ",".join("?" for _ in uris)
    accounts = {r["uri"]: r for r in await ctx.db.fetchall(
        f"SELECT * FROM accounts WHERE uri IN ({ph}) AND domain IS NULL AND actor_type != 'Application'", uris)}
    statuses = {r["uri"]: r for r in await ctx.db.fetchall(
        f"SELECT id, uri, account_id FROM statuses WHERE uri IN ({ph}) AND local = 1 AND deleted_at IS NULL", uris)}
    target_id = next((accounts[u]["id"] for u in uris if u in accounts), None)
    if target_id is None:
        target_id = next((statuses[u]["account_id"] for u in uris if u in statuses), None)
    if target_id is None:
        return "ignored: no local account reported"
    status_ids = [statuses[u]["id"] for u in uris if u in statuses and statuses[u]["account_id"] == target_id]
    category = activity.get(CATEGORY_KEY)
    category = category if category in CATEGORIES else "other"
    rules = _rule_ids(activity.get(RULES_KEY)) if category == "violation" else []
    ts = now()
    async with ctx.db.write() as tx:
        cur = await tx.execute(
            "INSERT OR IGNORE INTO reports (id, account_id, target_account_id, status_ids_json, rule_ids_json, category,"
            " comment, uri, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tx.new_id(), actor["id"], target_id, dumps_str(status_ids), dumps_str(rules), category,
             plain_text(activity.get("content"), MAX_REMOTE_COMMENT), activity["id"], ts, ts),
        )
    return "processed" if cur.rowcount else "ignored: report already known"


async def resolve_in(tx: Tx, admin_id: int, report: Row, detail: dict[str, Any] | None = None) -> None:
    """Mark a report resolved by `admin_id` inside a caller's transaction (account actions use this)."""
    ts = now()
    await tx.execute(
        "UPDATE reports SET action_taken_at = ?, action_taken_by_account_id = ?, updated_at = ? WHERE id = ?",
        (ts, admin_id, ts, report["id"]),
    )
    await record(tx, admin_id, "resolve", "report", str(report["id"]), detail)


ADMIN_CHANGES = {
    "assign_to_self": "assigned_account_id = :admin",
    "unassign": "assigned_account_id = NULL",
    "reopen": "action_taken_at = NULL, action_taken_by_account_id = NULL",
}


async def change_report(ctx: Context, admin_id: int, report_id: int, change: str) -> Row | None:
    """assign_to_self, unassign, resolve or reopen one report (audited); None if there is no such report."""
    async with ctx.db.write() as tx:
        report = await tx.fetchone("SELECT * FROM reports WHERE id = ?", (report_id,))
        if report is None:
            return None
        if change == "resolve":
            await resolve_in(tx, admin_id, report)
        else:
            await tx.execute(f"UPDATE reports SET {ADMIN_CHANGES[change]}, updated_at = :ts WHERE id = :id",
                             {"admin": admin_id, "ts": now(), "id": report_id})
            await record(tx, admin_id, change, "report", str(report_id))
        row = await tx.fetchone("SELECT * FROM reports WHERE id = ?", (report_id,))
    return row
