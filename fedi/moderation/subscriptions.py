"""Block-list subscriptions: the sources an admin follows, their last good copies, and the periodic sync.

A source is a URL serving Mastodon's CSV, JSON as `/api/v1/instance/domain_blocks`
serves it, or plain text (parsed by `csv_io`, the same parser as imports). Each
sync fetches due sources with a conditional GET (ETag / Last-Modified) through the
guarded client. A copy replaces the stored one (`blocklist_entries`) only when it
parses cleanly and lists at least one domain: an unreachable, broken or empty
list changes nothing, keeps its last good copy and records `last_error`. Then
`blocklist_drafts.reconcile` turns what all enabled lists want into drafts and
blocks. `BlocklistSyncer` runs that in the background.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fedi.clock import iso, now
from fedi.background import BackgroundLoop
from fedi.context import Context
from fedi.db import Row
from fedi.http_client import FetchError
from fedi.moderation.audit import record
from fedi.moderation.blocklist_drafts import SETTINGS, Outcome, load_settings, reconcile, source_of
from fedi.moderation.blocklist_merge import Source
from fedi.moderation.csv_io import ListError, parse_list
from fedi.moderation.domains import SEVERITIES, normalize_domain
from fedi.origin import is_valid_url

log = logging.getLogger("fedi.blocklists")

FORMATS = ("auto", "csv", "json", "text")
MODES = ("draft", "apply")
RETRACTIONS = ("remove", "keep")
MAX_SOURCES = 100
MAX_PRIORITY = 1000
ACCEPT = "text/csv, application/json;q=0.9, text/plain;q=0.8, */*;q=0.1"
POLL_SECONDS = 60.0


class SubscriptionError(ValueError):
    """A subscription change that cannot be made; `status` for the API (422 unless said)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SourceSpec:
    url: str
    priority: int = 0
    max_severity: str = "suspend"
    mode: str = "draft"
    retractions: str = "remove"
    format: str = "auto"
    enabled: bool = True


def check_spec(spec: SourceSpec) -> SourceSpec:
    """Refuse anything but an http(s) URL with a host (no credentials, no spaces) and known options."""
    if not isinstance(spec.url, str) or not is_valid_url(spec.url.strip()):
        raise SubscriptionError("url must be an http or https URL with a host name")
    checks = ((spec.max_severity, SEVERITIES, "max_severity"), (spec.mode, MODES, "mode"),
              (spec.retractions, RETRACTIONS, "retractions"), (spec.format, FORMATS, "format"))
    for value, allowed, name in checks:
        if value not in allowed:
            raise SubscriptionError(f"{name} must be one of {', '.join(allowed)}")
    if isinstance(spec.priority, bool) or not isinstance(spec.priority, int) or abs(spec.priority) > MAX_PRIORITY:
        raise SubscriptionError(f"priority must be a whole number between -{MAX_PRIORITY} and {MAX_PRIORITY}")
    return replace(spec, url=spec.url.strip())


def _spec_fields(spec: SourceSpec) -> dict[str, Any]:
    return {"url": spec.url, "priority": spec.priority, "max_severity": spec.max_severity, "mode": spec.mode,
            "retractions": spec.retractions, "format": spec.format, "enabled": int(spec.enabled)}


async def subscribe(ctx: Context, admin_id: int | None, spec: SourceSpec) -> Row:
    spec = check_spec(spec)
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM blocklist_sources WHERE url = ?", (spec.url,)):
            raise SubscriptionError("already subscribed to this URL")
        count = await tx.fetchone("SELECT count(*) AS n FROM blocklist_sources")
        if count is not None and count["n"] >= MAX_SOURCES:
            raise SubscriptionError(f"at most {MAX_SOURCES} subscriptions")
        source_id = tx.new_id()
        values = _spec_fields(spec)
        await tx.execute(
            f"INSERT INTO blocklist_sources (id, {', '.join(values)}, created_at) VALUES (?, {', '.join('?' for _ in values)}, ?)",
            [source_id, *values.values(), now()],
        )
        await record(tx, admin_id, "blocklist.subscribe", "blocklist_source", spec.url, {**values, "id": str(source_id)})
        row = await tx.fetchone("SELECT * FROM blocklist_sources WHERE id = ?", (source_id,))
    assert row is not None
    return row


async def update_source(ctx: Context, admin_id: int | None, source_id: int, changes: dict[str, Any]) -> Row | None:
    """Change priority, max_severity, mode, retractions, format or enabled; None if there is no such source."""
    unknown = set(changes) - {"priority", "max_severity", "mode", "retractions", "format", "enabled"}
    if unknown:
        raise SubscriptionError(f"unknown field {sorted(unknown)[0]}")
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT * FROM blocklist_sources WHERE id = ?", (source_id,))
        if row is None:
            return None
        old = SourceSpec(row["url"], row["priority"], row["max_severity"], row["mode"], row["retractions"],
                         row["format"], bool(row["enabled"]))
        values = _spec_fields(check_spec(replace(old, **changes)))
        diff = {k: v for k, v in values.items() if row[k] != v}
        if diff:
            reset = ", etag = NULL, last_modified = NULL" if "format" in diff else ""  # refetch in full
            await tx.execute(f"UPDATE blocklist_sources SET {', '.join(k + ' = ?' for k in diff)}{reset} WHERE id = ?",
                             [*diff.values(), source_id])
            await record(tx, admin_id, "blocklist.update", "blocklist_source", row["url"], {"id": str(source_id), **diff})
        updated = await tx.fetchone("SELECT * FROM blocklist_sources WHERE id = ?", (source_id,))
    return updated


async def unsubscribe(ctx: Context, admin_id: int | None, source_id: int) -> Outcome | None:
    """Drop a source: its domains count as retracted by it (under its own retractions policy)."""
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT * FROM blocklist_sources WHERE id = ?", (source_id,))
        if row is None:
            return None
        domains = [r[0] for r in await tx.fetchall("SELECT domain FROM blocklist_entries WHERE source_id = ?", (source_id,))]
        await tx.execute("DELETE FROM blocklist_entries WHERE source_id = ?", (source_id,))
        await tx.execute("DELETE FROM blocklist_sources WHERE id = ?", (source_id,))
        await record(tx, admin_id, "blocklist.unsubscribe", "blocklist_source", row["url"],
                     {"id": str(source_id), "entries": len(domains)})
    source = source_of(row)
    return await reconcile(ctx, {d: [source] for d in domains})


def _domain(text: str) -> str:
    try:
        return normalize_domain(text)
    except ValueError as exc:
        raise SubscriptionError(str(exc)) from None


async def add_exclude(ctx: Context, admin_id: int | None, text: str) -> str:
    """Never block this domain (or its subdomains) because a list says so."""
    domain = _domain(text)
    async with ctx.db.write() as tx:
        cur = await tx.execute("INSERT OR IGNORE INTO blocklist_excludes (domain, created_at) VALUES (?, ?)", (domain, now()))
        if cur.rowcount:
            await record(tx, admin_id, "blocklist.exclude", "domain", domain)
    return domain


async def remove_exclude(ctx: Context, admin_id: int | None, text: str) -> bool:
    domain = _domain(text)
    async with ctx.db.write() as tx:
        cur = await tx.execute("DELETE FROM blocklist_excludes WHERE domain = ?", (domain,))
        if cur.rowcount:
            await record(tx, admin_id, "blocklist.include", "domain", domain)
    return bool(cur.rowcount)


def check_setting(key: str, value: Any) -> int:
    """A `blocklist_*` setting's value: a whole number within its bounds."""
    if key not in SETTINGS:
        raise SubscriptionError(f"unknown setting {key} ({', '.join(SETTINGS)})")
    _, low, high = SETTINGS[key]
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not low <= int(text) <= high:
        raise SubscriptionError(f"{key} must be a whole number from {low} to {high}")
    return int(text)


async def set_settings(ctx: Context, admin_id: int | None, values: dict[str, Any]) -> None:
    """Store several `blocklist_*` settings in one transaction (all checked first); audited."""
    checked = {key: check_setting(key, value) for key, value in values.items()}
    async with ctx.db.write() as tx:
        for key, value in checked.items():
            await tx.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, str(value)))
            await record(tx, admin_id, "blocklist.setting", "setting", key, {"value": value})


@dataclass
class Fetched:
    source_id: int
    url: str
    state: str  # updated | not_modified | error
    error: str | None = None
    entries: int = 0
    dropped: list[str] = field(default_factory=list)


def _entries(text: str, fmt: str, content_type: str) -> list[tuple[Any, ...]]:
    """(domain, severity, reject_media, reject_reports, public_comment) rows of a list; ListError if unusable."""
    if content_type.startswith("text/html") or text.lstrip()[:1] == "<":
        raise ListError("the URL served an HTML page, not a block list")
    parsed = parse_list(text, fmt)
    if not parsed.entries:
        raise ListError("the list is empty")
    return [(e.spec.domain, e.spec.severity, int(e.spec.reject_media), int(e.spec.reject_reports),
             e.spec.public_comment) for e in parsed.entries]


async def _failed(ctx: Context, row: Row, at: float, error: str) -> Fetched:
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE blocklist_sources SET last_fetched_at = ?, last_error = ? WHERE id = ?",
                         (at, error[:500], row["id"]))
    log.warning("block list %s: %s", row["url"], error)
    return Fetched(row["id"], row["url"], "error", error[:500])


async def fetch_source(ctx: Context, row: Row, at: float) -> Fetched:
    """Fetch one source; only a clean, non-empty copy replaces the stored one."""
    headers = {"Accept": ACCEPT}
    if row["etag"]:
        headers["If-None-Match"] = row["etag"]
    if row["last_modified"]:
        headers["If-Modified-Since"] = row["last_modified"]
    try:
        status, answer, text = await ctx.http.get_text(row["url"], headers)
    except FetchError as exc:
        return await _failed(ctx, row, at, f"unreachable: {exc}")
    if status == 304 and row["last_ok_at"] is not None:
        async with ctx.db.write() as tx:
            await tx.execute("UPDATE blocklist_sources SET last_fetched_at = ?, last_error = NULL WHERE id = ?",
                             (at, row["id"]))
        return Fetched(row["id"], row["url"], "not_modified")
    if status != 200:
        return await _failed(ctx, row, at, f"HTTP {status}")
    try:
        rows = _entries(text, row["format"], answer.get("content-type", "").lower())
    except ListError as exc:
        return await _failed(ctx, row, at, f"not used: {exc}")
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM blocklist_sources WHERE id = ?", (row["id"],)) is None:
            return Fetched(row["id"], row["url"], "error", "unsubscribed meanwhile")
        old = {r[0] for r in await tx.fetchall("SELECT domain FROM blocklist_entries WHERE source_id = ?", (row["id"],))}
        await tx.execute("DELETE FROM blocklist_entries WHERE source_id = ?", (row["id"],))
        await tx.executemany(
            "INSERT INTO blocklist_entries (source_id, domain, severity, reject_media, reject_reports, public_comment)"
            " VALUES (?, ?, ?, ?, ?, ?)", [(row["id"], *r) for r in rows])
        await tx.execute(
            "UPDATE blocklist_sources SET etag = ?, last_modified = ?, last_fetched_at = ?, last_ok_at = ?,"
            " last_error = NULL WHERE id = ?",
            (answer.get("etag"), answer.get("last-modified"), at, at, row["id"]))
    return Fetched(row["id"], row["url"], "updated", entries=len(rows), dropped=sorted(old - {r[0] for r in rows}))


@dataclass
class SyncResult:
    fetched: list[Fetched]
    outcome: Outcome


async def sync(ctx: Context, at: float | None = None, *, force: bool = False) -> SyncResult:
    """Fetch every due enabled source (all of them with `force`), then reconcile blocks and drafts."""
    at = now() if at is None else at
    interval = (await load_settings(ctx.db))["blocklist_sync_interval"]
    rows = await ctx.db.fetchall(
        "SELECT * FROM blocklist_sources WHERE enabled = 1 AND (? OR last_fetched_at IS NULL OR last_fetched_at <= ?)"
        " ORDER BY id", (int(force), at - interval))
    fetched = [await fetch_source(ctx, row, at) for row in rows]
    if not fetched:
        return SyncResult([], Outcome())
    by_id = {r["id"]: source_of(r) for r in rows}
    dropped: dict[str, list[Source]] = {}
    for f in fetched:
        for domain in f.dropped:
            dropped.setdefault(domain, []).append(by_id[f.source_id])
    return SyncResult(fetched, await reconcile(ctx, dropped))


def source_entity(row: Row, entries: int = 0) -> dict[str, Any]:
    return {"id": str(row["id"]), "url": row["url"], "format": row["format"], "priority": row["priority"],
            "max_severity": row["max_severity"], "mode": row["mode"], "retractions": row["retractions"],
            "enabled": bool(row["enabled"]), "entries_count": entries,
            "last_fetched_at": iso(row["last_fetched_at"]) if row["last_fetched_at"] else None,
            "last_ok_at": iso(row["last_ok_at"]) if row["last_ok_at"] else None,
            "last_error": row["last_error"], "created_at": iso(row["created_at"])}


class BlocklistSyncer(BackgroundLoop):
    """Syncs due block-list subscriptions in the background (every source at its interval)."""

    name = "fedi-blocklist-syncer"
    interval = POLL_SECONDS

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.clock: Callable[[], float] = time.time

    async def run_once(self, now: float | None = None) -> SyncResult:
        """Sync the sources due at `now` (default: the clock)."""
        return await sync(self.ctx, self.clock() if now is None else now)
