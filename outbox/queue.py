"""The delivery queue as data: enqueueing rows, their allowed states, hosts seen again.

Every delivery is a row in `deliveries` (see `fedi/schema.py`), so a delivery
accepted into the table survives a crash; `outbox.delivery.DeliveryWorker`
leases and sends them. This module holds what both the callers that queue work
and the worker need: the state table, the retry schedule and the host
bookkeeping.
"""

from __future__ import annotations

import email.utils
import random
import time
import weakref
from collections.abc import Iterable
from datetime import timezone
from typing import TYPE_CHECKING

from fedi.db import Database, Tx
from fedi.origin import netloc

if TYPE_CHECKING:
    from fedi.context import Context

#: next_attempt_at of a delivery held for an unavailable host: never due until
#: `host_seen` (or a success to that host) releases it.
HELD = 1e18

#: Allowed moves of `deliveries.state`. Only 'pending' rows are worked on; the
#: others are final (a retry stays 'pending' with a later next_attempt_at).
TRANSITIONS: dict[str, frozenset[str]] = {
    "pending": frozenset({"pending", "delivered", "failed", "expired"}),
    "delivered": frozenset(),
    "failed": frozenset(),
    "expired": frozenset(),
}

MAX_DELAY = 86_400.0  # cap on backoff and on Retry-After
MIN_DELAY = 1.0  # a Retry-After of 0 must not make the worker spin
_IN_CHUNK = 500  # host names per `IN (...)` look-up, well under SQLite's variable limit


class TransitionError(AssertionError):
    """A code path tried a state change the table above does not allow (a bug)."""


def check_transition(old: str, new: str) -> None:
    """Raise TransitionError unless `old -> new` is in TRANSITIONS."""
    if new not in TRANSITIONS.get(old, frozenset()):
        raise TransitionError(f"delivery state {old!r} -> {new!r} is not allowed")


def backoff_delay(attempts: int, first_retry: float, rng: random.Random) -> float:
    """first_retry × 2^(attempts-1) × jitter(0.8–1.2), capped at a day; jitter spreads retry herds."""
    exponent = min(max(attempts - 1, 0), 32)
    return min(first_retry * 2**exponent * rng.uniform(0.8, 1.2), MAX_DELAY)


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date, clamped to [MIN_DELAY, a day]; None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
            if when.tzinfo is None:  # "-0000" or no zone: HTTP dates are GMT
                when = when.replace(tzinfo=timezone.utc)
            delay = when.timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(delay, MIN_DELAY), MAX_DELAY)


async def _unavailable_hosts(tx: Tx, hosts: list[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(hosts), _IN_CHUNK):
        chunk = hosts[i : i + _IN_CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = await tx.fetchall(
            f"SELECT host FROM hosts WHERE unavailable_since IS NOT NULL AND host IN ({marks})", chunk
        )
        found.update(row["host"] for row in rows)
    return found


async def enqueue_deliveries(tx: Tx, activity_id: int, inbox_urls: Iterable[str], now: float) -> int:
    """Queue one delivery of `activity_id` per distinct, valid inbox URL; returns rows added.

    Runs inside the caller's transaction so the activity and its deliveries
    commit together. Re-queueing an (activity, inbox) pair is a no-op. Hosts
    marked unavailable get HELD rows that wait until the host is seen again.
    The caller wakes the worker once the transaction commits:
    `tx.after_commit.append(ctx.wake_delivery)`.
    """
    by_url: dict[str, str] = {}
    for url in inbox_urls:
        host = netloc(url)
        if host and url not in by_url:
            by_url[url] = host
    if not by_url:
        return 0
    held = await _unavailable_hosts(tx, sorted(set(by_url.values())))
    before = await tx.fetchone("SELECT total_changes()")
    await tx.executemany(
        """INSERT OR IGNORE INTO deliveries
               (activity_id, inbox_url, host, state, next_attempt_at, created_at, updated_at)
           VALUES (?, ?, ?, 'pending', ?, ?, ?)""",
        [(activity_id, url, host, HELD if host in held else now, now, now) for url, host in by_url.items()],
    )
    after = await tx.fetchone("SELECT total_changes()")
    assert before is not None and after is not None
    return int(after[0]) - int(before[0])


#: How long `host_seen` trusts its in-memory list of troubled hosts before reading it again.
TROUBLED_RECHECK_SECONDS = 3.0


class _Troubled:
    """Hosts with delivery failures or marked unavailable, as read at `loaded_at` (the caller's clock)."""

    __slots__ = ("hosts", "loaded_at")

    def __init__(self, hosts: set[str], loaded_at: float) -> None:
        self.hosts = hosts
        self.loaded_at = loaded_at


#: One list per database (several instances may share a process: the federation tests).
_troubled: "weakref.WeakKeyDictionary[Database, _Troubled]" = weakref.WeakKeyDictionary()


async def _troubled_hosts(db: "Database", when: float) -> set[str]:
    """The hosts `host_seen` may have to release: read at most once per TROUBLED_RECHECK_SECONDS.

    The delivery worker records failures and successes in `hosts` (possibly from another
    process), so the list is refreshed by one query every few seconds instead of one per
    inbox request. A host that starts failing is noticed at most that much later — its
    release already waits for `delivery_first_retry_seconds`, so nothing is lost.
    """
    cached = _troubled.get(db)
    if cached is not None and 0 <= when - cached.loaded_at < TROUBLED_RECHECK_SECONDS:
        return cached.hosts
    if cached is not None:
        cached.loaded_at = when  # concurrent callers keep using the old list meanwhile
    rows = await db.fetchall("SELECT host FROM hosts WHERE failures > 0 OR unavailable_since IS NOT NULL")
    hosts = {row[0] for row in rows}
    _troubled[db] = _Troubled(hosts, when)
    return hosts


def note_troubled(db: Database, hosts: Iterable[str]) -> None:
    """Failures to `hosts` were just recorded by this process: `host_seen` here knows at once
    (a delivery process's failures reach the server's list at its next read)."""
    cached = _troubled.get(db)
    if cached is not None:
        cached.hosts.update(hosts)


async def host_seen(ctx: "Context", host: str, now: float | None = None) -> bool:
    """A verified request came from `host`: if we had given up on it, try it again now.

    Cheap when the host is fine (a set look-up, see `_troubled_hosts`) because every
    verified inbox request calls it. An unavailable host is cleared and its held
    or backing-off deliveries become due. A host that merely had failures is
    released at most once per `delivery_first_retry_seconds` (measured from its
    first failure), so a busy peer whose inbox is broken cannot turn each of its
    requests into a retry of everything queued for it. Returns True if it released.
    """
    when = time.time() if now is None else now
    troubled = await _troubled_hosts(ctx.db, when)
    if host not in troubled:
        return False
    row = await ctx.db.fetchone(
        "SELECT failures, first_failure_at, unavailable_since FROM hosts WHERE host = ?", (host,)
    )
    if row is None:
        troubled.discard(host)
        return False
    cooled = row["first_failure_at"] is not None and (
        when - row["first_failure_at"] >= ctx.config.federation.delivery_first_retry_seconds
    )
    if row["unavailable_since"] is None and not (row["failures"] and cooled):
        if not row["failures"]:
            troubled.discard(host)
        return False
    async with ctx.db.write() as tx:
        await tx.execute(
            "UPDATE hosts SET failures = 0, first_failure_at = NULL, unavailable_since = NULL WHERE host = ?",
            (host,),
        )
        await tx.execute(  # all at one time, so they go out oldest first (the lease's order within a host)
            """UPDATE deliveries SET next_attempt_at = ?
               WHERE host = ? AND state = 'pending' AND locked_until <= ?""",
            (when, host, when),
        )
        tx.after_commit.append(ctx.wake_delivery)
    troubled.discard(host)
    return True
