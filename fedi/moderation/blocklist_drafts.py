"""Turning what the subscribed lists want into drafts and blocks.

`reconcile` computes the changes (`blocklist_merge`), writes each new one as a
pending draft, then applies at once those whose deciding source is in `apply`
mode — at most `blocklist_max_changes` per run; the rest stay drafts for an admin.
Every block change goes through `fedi.moderation.blocks` (the same code path as
the admin API: effects, rules version, audit row in one transaction), with
admin id None for automatic changes and the sources named in the audit detail.

Drafts are kept tidy: a pending draft that is moot (the block already looks like
that, or the lists no longer want it) is deleted, and a dismissed draft is not
proposed again while the lists keep asking for exactly the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedi.clock import iso, now
from fedi.context import Context
from fedi.db import Database, Row
from fedi.jsonutil import dumps_str, loads_strict
from fedi.moderation.audit import record
from fedi.moderation.blocklist_merge import Change, Current, Entry, Source, diff, wanted
from fedi.moderation.blocks import BlockSpec, RuleError, create_block, in_the_way, remove_block, update_block
from fedi.moderation.domains import load_rules

#: settings-table key → (default, lowest, highest)
SETTINGS = {
    "blocklist_consensus_count": (1, 1, 100),
    "blocklist_consensus_percent": (0, 0, 100),
    "blocklist_max_changes": (500, 0, 100_000),
    "blocklist_sync_interval": (3600, 60, 30 * 86400),
}


async def load_settings(db: Database) -> dict[str, int]:
    rows = {r["key"]: r["value"] for r in await db.fetchall(
        f"SELECT key, value FROM settings WHERE key IN ({','.join('?' for _ in SETTINGS)})", list(SETTINGS))}
    return {k: int(rows[k]) if rows.get(k, "").isdigit() else default for k, (default, _, _) in SETTINGS.items()}


def source_of(row: Row) -> Source:
    return Source(row["id"], row["url"], row["priority"], row["max_severity"], row["mode"], row["retractions"])


def sources_detail(sources: tuple[Source, ...]) -> list[dict[str, str]]:
    return [{"id": str(s.id), "url": s.url} for s in sources]


@dataclass
class Outcome:
    applied: list[Change] = field(default_factory=list)
    drafted: list[Change] = field(default_factory=list)
    failed: list[tuple[Change, str]] = field(default_factory=list)


def _values(row: Any) -> tuple[Any, ...]:
    return (row["change"], row["severity"], bool(row["reject_media"]), bool(row["reject_reports"]),
            row["public_comment"] or "")


def _change_values(c: Change) -> tuple[Any, ...]:
    return (c.change, c.severity, c.reject_media, c.reject_reports, c.public_comment)


def _moot(draft: Row, want: Mapping[str, Any], blocks: Mapping[str, Row]) -> bool:
    """A pending draft nobody needs any more."""
    block = blocks.get(draft["domain"])
    if draft["change"] == "remove":
        return block is None or block["source"] != "subscription" or draft["domain"] in want
    if draft["domain"] not in want:
        return True
    return block is not None and (block["severity"], bool(block["reject_media"]), bool(block["reject_reports"]),
                                  block["public_comment"] or "") == _values(draft)[1:]


async def _state(ctx: Context) -> tuple[dict[str, tuple[Entry, tuple[Source, ...]]], dict[str, Row]]:
    """(what the enabled lists want, the blocks in force by domain)."""
    settings = await load_settings(ctx.db)
    rows = await ctx.db.fetchall("SELECT * FROM blocklist_sources WHERE enabled = 1 ORDER BY id")
    entries: dict[int, list[Entry]] = {r["id"]: [] for r in rows}
    for e in await ctx.db.fetchall(
            "SELECT e.* FROM blocklist_entries e JOIN blocklist_sources s ON s.id = e.source_id WHERE s.enabled = 1"):
        entries[e["source_id"]].append(Entry(e["domain"], e["severity"], bool(e["reject_media"]),
                                             bool(e["reject_reports"]), e["public_comment"] or ""))
    excludes = {r[0] for r in await ctx.db.fetchall("SELECT domain FROM blocklist_excludes")}
    want = wanted([source_of(r) for r in rows], entries, excludes,
                  settings["blocklist_consensus_count"], settings["blocklist_consensus_percent"])
    blocks = {r["domain"]: r for r in await ctx.db.fetchall("SELECT * FROM domain_blocks")}
    return want, blocks


async def reconcile(ctx: Context, dropped: Mapping[str, list[Source]]) -> Outcome:
    """Bring subscription blocks towards what the lists want; `dropped`: domains sources stopped listing."""
    want, blocks = await _state(ctx)
    current = {d: Current(r["severity"], bool(r["reject_media"]), bool(r["reject_reports"]), r["public_comment"] or "",
                          r["source"] != "subscription") for d, r in blocks.items()}
    rules = await load_rules(ctx.db, ctx.domain)
    changes = [c for c in diff(want, current, dropped) if c.change != "add" or in_the_way(
        rules, BlockSpec(c.domain, c.severity or "noop", c.reject_media, c.reject_reports)) is None]
    created: list[tuple[int, Change]] = []
    outcome = Outcome()
    async with ctx.db.write() as tx:
        pending = {r["domain"]: r for r in await tx.fetchall("SELECT * FROM blocklist_drafts WHERE state = 'pending'")}
        dismissed = {(r["domain"], *_values(r)) for r in await tx.fetchall(
            "SELECT * FROM blocklist_drafts WHERE state = 'dismissed'")}
        moot = [r["id"] for r in pending.values() if _moot(r, want, blocks)]
        await tx.executemany("DELETE FROM blocklist_drafts WHERE id = ?", [(i,) for i in moot])
        for c in changes:
            old = pending.get(c.domain)
            if (c.domain, *_change_values(c)) in dismissed:
                continue
            if old is not None and old["id"] not in moot:
                if _values(old) == _change_values(c):
                    outcome.drafted.append(c)  # drafted before: an admin decides
                    continue
                await tx.execute("DELETE FROM blocklist_drafts WHERE id = ?", (old["id"],))
            draft_id = tx.new_id()
            await tx.execute(
                "INSERT INTO blocklist_drafts (id, domain, change, severity, reject_media, reject_reports,"
                " public_comment, sources_json, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (draft_id, c.domain, c.change, c.severity, int(c.reject_media), int(c.reject_reports),
                 c.public_comment or None, dumps_str(sources_detail(c.sources)), now()),
            )
            created.append((draft_id, c))
    cap = (await load_settings(ctx.db))["blocklist_max_changes"]
    for draft_id, c in created:
        if not c.direct or len(outcome.applied) >= cap:
            outcome.drafted.append(c)
            continue
        try:
            await apply_draft(ctx, None, draft_id, via="blocklist_sync")
            outcome.applied.append(c)
        except RuleError as exc:
            outcome.failed.append((c, exc.message))  # stays a draft; the admin sees it
    return outcome


async def _apply(ctx: Context, admin_id: int | None, draft: Row, detail: dict[str, Any]) -> None:
    block = await ctx.db.fetchone("SELECT * FROM domain_blocks WHERE domain = ?", (draft["domain"],))
    if block is not None and block["source"] != "subscription":
        raise RuleError(f"{draft['domain']} has a manual block; lists do not change it")
    if draft["change"] == "remove":
        if block is not None:
            await remove_block(ctx, admin_id, block["id"], detail=detail)
        return
    values = {"severity": draft["severity"], "reject_media": bool(draft["reject_media"]),
              "reject_reports": bool(draft["reject_reports"]), "public_comment": draft["public_comment"]}
    if block is None:
        sources = loads_strict(draft["sources_json"])
        note = "from block list " + ", ".join(s["url"] for s in sources[:3])
        await create_block(ctx, admin_id, BlockSpec(draft["domain"], private_comment=note, **values),
                           source="subscription", detail=detail)
    else:
        await update_block(ctx, admin_id, block["id"], values, detail=detail)


async def apply_draft(ctx: Context, admin_id: int | None, draft_id: int, via: str = "blocklist_draft") -> Row | None:
    """Apply one pending draft through the block functions; None if there is no such pending draft.

    Raises RuleError when the block cannot be made (a manual block, or one already covering it).
    """
    draft = await ctx.db.fetchone("SELECT * FROM blocklist_drafts WHERE id = ? AND state = 'pending'", (draft_id,))
    if draft is None:
        return None
    detail = {"via": via, "draft_id": str(draft_id), "sources": loads_strict(draft["sources_json"])}
    await _apply(ctx, admin_id, draft, detail)
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE blocklist_drafts SET state = 'applied' WHERE id = ?", (draft_id,))
        row = await tx.fetchone("SELECT * FROM blocklist_drafts WHERE id = ?", (draft_id,))
    return row


async def dismiss_draft(ctx: Context, admin_id: int | None, draft_id: int) -> Row | None:
    """Decline a pending draft (it is not proposed again while the lists ask the same); audited."""
    async with ctx.db.write() as tx:
        cur = await tx.execute("UPDATE blocklist_drafts SET state = 'dismissed' WHERE id = ? AND state = 'pending'",
                               (draft_id,))
        if not cur.rowcount:
            return None
        row = await tx.fetchone("SELECT * FROM blocklist_drafts WHERE id = ?", (draft_id,))
        assert row is not None
        await record(tx, admin_id, "blocklist_draft.dismiss", "domain_block", row["domain"],
                     {"draft_id": str(draft_id), "change": row["change"], "sources": loads_strict(row["sources_json"])})
    return row


def draft_entity(row: Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "domain": row["domain"], "change": row["change"], "severity": row["severity"],
            "reject_media": bool(row["reject_media"]), "reject_reports": bool(row["reject_reports"]),
            "public_comment": row["public_comment"], "sources": loads_strict(row["sources_json"]),
            "state": row["state"], "created_at": iso(row["created_at"])}
