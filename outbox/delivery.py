"""The delivery worker: leases due rows of `deliveries`, signs and POSTs them, records outcomes.

The table is the queue, so nothing lives only in memory: a lease
(`locked_until`) that expires after a crash makes the row due again
(at-least-once; receivers dedupe by activity id). Several workers — the
delivery processes `fedi serve` starts (`outbox/delivery_process.py`), or the
server process itself — lease from one SQLite file; a lease is one write
transaction, so two workers never lease the same row.

The per-host limit is applied when leasing, across all workers: a row whose
lease has not run out counts as in flight for its host (`_DUE`), so a host
never has more leased rows than its slots, whichever process holds them. A
black-holed inbox therefore holds its slots and nothing else — also for the
lease time after a crash — and no row waits in memory long enough for its
lease to run out. Outcomes are written in group commits: whatever finished
while the previous commit ran.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import sqlite3
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fedi.context import Context
from fedi.db import Tx
from fedi.http_client import FetchError, PostResult, Signer
from fedi.moderation.domains import WITHDRAWALS, current as domain_rules
from outbox.queue import HELD, backoff_delay, check_transition, note_troubled, retry_after_seconds

log = logging.getLogger("fedi.delivery")

BATCH = 200
POLL_SECONDS = 1.0  # also picks up rows queued by another process (the CLI) and retries coming due
LEASE_FACTOR = 3  # lease = request timeout × this
EXCERPT = 300
RECORD_SECONDS = 0.05  # longest an outcome waits in memory for others to share its transaction
BODY_CACHE = 32  # activities whose frozen body is kept between leases
_RETRY_AFTER = frozenset({429, 503})
_RETRYABLE_4XX = frozenset({401, 408, 429})
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# Due rows, at most `per_host` per host counting the rows of that host whose lease
# is still running (`locked_until > now`: in flight in some worker, or held by a
# crashed one until its lease runs out); within a host the oldest queued (lowest
# id) first, across hosts the longest due first. Leased rows always have
# next_attempt_at <= now (nothing moves a locked row's next attempt later), so
# one pass over the due rows sees both.
_DUE = """
WITH candidates AS (
    SELECT id, host, next_attempt_at, locked_until > :now AS busy
    FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now
), in_flight AS (
    SELECT host, count(*) AS n FROM candidates WHERE busy GROUP BY host
), due AS (
    SELECT id, host, next_attempt_at,
           ROW_NUMBER() OVER (PARTITION BY host ORDER BY id) AS rn
    FROM candidates WHERE NOT busy
)
SELECT due.id FROM due LEFT JOIN in_flight AS b ON b.host = due.host
WHERE due.rn + COALESCE(b.n, 0) <= :per_host
ORDER BY due.next_attempt_at LIMIT :limit
"""
# The same over a window: the `scan` oldest free due rows only, with the leases of
# just their hosts counted (through the host index). Its first `limit` rows are the
# first `limit` of _DUE (whatever lies past the window is due later; a host's rows
# fall due in queue order, which `_record_hosts` keeps: see there), so it is used
# whenever it finds `limit` rows, or the window holds every free due row; only a
# window full of hosts at their limit (a backlog for a slow host) needs _DUE.
_DUE_WINDOW = """
WITH candidates AS (
    SELECT id, host, next_attempt_at FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now AND locked_until <= :now
    ORDER BY next_attempt_at, id LIMIT :scan
), in_flight AS (
    SELECT host, count(*) AS n FROM deliveries
    WHERE host IN (SELECT host FROM candidates) AND state = 'pending' AND locked_until > :now
    GROUP BY host
), due AS (
    SELECT id, host, next_attempt_at,
           ROW_NUMBER() OVER (PARTITION BY host ORDER BY id) AS rn
    FROM candidates
)
SELECT due.id, (SELECT count(*) FROM candidates) AS scanned FROM due LEFT JOIN in_flight AS b ON b.host = due.host
WHERE due.rn + COALESCE(b.n, 0) <= :per_host
ORDER BY due.next_attempt_at, due.id LIMIT :limit
"""
SCAN_FACTOR = 8  # window = this × the rows wanted (at least SCAN_MIN)
SCAN_MIN = 256
_COLUMNS = "id, activity_id, inbox_url, host, attempts, created_at"


@dataclass(frozen=True)
class Leased:
    id: int
    activity_id: int
    inbox_url: str
    host: str
    attempts: int
    created_at: float


@dataclass(frozen=True)
class Payload:
    """What every delivery of one activity shares: read and prepared once, not per delivery."""

    body: bytes
    account_id: int
    type: str


@dataclass(frozen=True)
class Outcome:
    delivery: Leased
    state: str  # the new deliveries.state
    status: int | None
    error: str | None
    next_attempt_at: float
    host_ok: bool | None  # True: host answered 2xx; False: a retryable failure; None: neither
    gone: bool = False  # 410: the inbox's owner no longer exists


def excerpt(text: str | None) -> str | None:
    """What the admin sees of a peer's answer: one line, short."""
    return None if text is None else " ".join(text.split())[:EXCERPT]


class DeliveryWorker:
    """Sends queued deliveries; `start()` runs it in the background, tests call `run_once()`.

    `concurrency` is this worker's share of `delivery_concurrency` (the delivery
    processes split it); the per-host limit is global (see the module docstring).
    """

    def __init__(self, ctx: Context, concurrency: int | None = None) -> None:
        self.ctx = ctx
        self.concurrency = concurrency
        self.clock: Callable[[], float] = time.time
        self.rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._forward: asyncio.Task[None] | None = None
        self._sends: dict[asyncio.Task[Outcome], Leased] = {}  # in flight
        self._queue: deque[tuple[Leased, Callable[[], Coroutine[Any, Any, Outcome]]]] = deque()  # leased, not started
        self._done: list[tuple[asyncio.Task[Outcome], Leased]] = []  # finished, outcome not yet written
        self._signal = asyncio.Event()  # sends finished, or new rows were committed
        self._woken = False  # new rows were committed since the last lease
        self._first_done = 0.0  # monotonic time the oldest unwritten outcome finished
        self._signers: dict[int, Signer] = {}
        self._payloads: OrderedDict[int, Payload] = OrderedDict()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="fedi-delivery")
            self._forward = asyncio.create_task(self._forward_wakeups(), name="fedi-delivery-wakeup")

    async def stop(self) -> None:
        """Stop sending; unfinished and unstarted sends keep their lease and are retried after it expires."""
        for task in (self._task, self._forward):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._task = self._forward = None
        self._queue.clear()
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        self._sends.clear()
        self._done.clear()

    async def _forward_wakeups(self) -> None:
        """`ctx.wake_delivery()` (a commit that queued rows) also ends a wait for a finished send."""
        wakeup = self.ctx.delivery_wakeup
        while True:
            await wakeup.wait()
            wakeup.clear()  # rows committed before the set are seen by the next lease
            self._woken = True
            self._signal.set()

    async def _wait(self, seconds: float) -> None:
        if not self._signal.is_set() and seconds > 0:
            try:
                async with asyncio.timeout(seconds):
                    await self._signal.wait()
            except TimeoutError:
                pass

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # keep delivering after e.g. a transient database error
                log.exception("delivery round failed")
            await self._wait(POLL_SECONDS)

    @property
    def limit(self) -> int:
        return self.concurrency or self.ctx.config.federation.delivery_concurrency

    @property
    def _step(self) -> int:
        """Rows leased ahead, and the batch size of leases and outcome writes: half the slots."""
        return max(1, self.limit // 2)

    async def run_once(self) -> int:
        """Send everything due (leasing as slots free up), record outcomes; returns rows attempted.

        Sending never waits for the database: a finished send starts the next
        leased row at once, and up to `_step` rows are leased ahead. Leases and
        outcome writes are transactions that every delivery process competes
        for (and a lease scans the due rows), so both are batched: outcomes are
        written once `_step` sends have finished (or nothing else is in
        flight, or the oldest waited RECORD_SECONDS); rows are leased once
        `_step` slots (read-ahead included) are free, or new rows were
        committed, or nothing is left to do.
        """
        attempted = 0
        step = self._step
        self._woken = True  # look for due rows at least once
        while True:
            self._signal.clear()
            if self._done and (len(self._done) >= step or not self._sends
                               or time.monotonic() - self._first_done >= RECORD_SECONDS):
                done, self._done = self._done, []
                await self._record([self._finish(task, row) for task, row in done])
            room = self.limit + step - len(self._sends) - len(self._queue)
            if room >= step or (room > 0 and (self._woken or not self._sends)):
                self._woken = False
                attempted += await self._fill(room)
            if not self._sends and not self._queue and not self._done:
                return attempted
            if self._done:
                await self._wait(RECORD_SECONDS - (time.monotonic() - self._first_done))
            else:
                await self._wait(POLL_SECONDS)

    def _on_done(self, task: asyncio.Task[Outcome]) -> None:
        """Start the next leased row; wake the loop for the first outcome (its write deadline starts),
        a full step, or when nothing is left in flight."""
        row = self._sends.pop(task)
        self._done.append((task, row))
        self._start_queued()
        if len(self._done) == 1:
            self._first_done = time.monotonic()
            self._signal.set()
        elif len(self._done) >= self._step or not self._sends:
            self._signal.set()

    def _start_queued(self) -> None:
        limit = self.limit
        while self._queue and len(self._sends) < limit:
            row, make = self._queue.popleft()
            task = asyncio.create_task(make())
            task.add_done_callback(self._on_done)
            self._sends[task] = row

    async def _fill(self, room: int) -> int:
        """Lease up to `room` due rows, queue them and start as many as there are free slots."""
        room = min(BATCH, room)
        if not await self._anything_due():
            return 0
        rows = await self._lease(room)
        if rows:
            payloads = await self._load({row.activity_id for row in rows})
            rules = await domain_rules(self.ctx)  # one look per batch, not per delivery
            for row in rows:
                payload = payloads.get(row.activity_id)
                try:
                    signer = None if payload is None else await self._signer(payload.account_id)
                except Exception as exc:  # e.g. an unreadable key: retried like any crash
                    log.exception("delivery %s: cannot load the sender's key", row.id)
                    self._queue.append((row, functools.partial(self._crashed, row, exc)))
                    continue
                if payload is None or signer is None:
                    make = functools.partial(self._fail, row, "activity or sender key missing")
                elif payload.type not in WITHDRAWALS and rules.suspended(row.host):
                    make = functools.partial(self._fail, row, "domain is blocked")
                else:
                    make = functools.partial(self._send, row, payload, signer)
                self._queue.append((row, make))
            self._start_queued()
        return len(rows)

    async def _anything_due(self) -> bool:
        """A read (no write lock, which other processes want) before trying to lease: idle polls stay cheap."""
        now = self.clock()
        row = await self.ctx.db.fetchone(
            "SELECT 1 FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ? AND locked_until <= ? LIMIT 1",
            (now, now),
        )
        return row is not None

    async def _lease(self, limit: int) -> list[Leased]:
        fed = self.ctx.config.federation
        now = self.clock()
        params: dict[str, Any] = {
            "now": now, "until": now + fed.request_timeout_seconds * LEASE_FACTOR, "limit": limit,
            "per_host": fed.delivery_per_host_concurrency,
        }
        params["scan"] = scan = max(SCAN_MIN, SCAN_FACTOR * limit)
        async with self.ctx.db.write() as tx:  # one transaction: no other writer can lease these in between
            found = await tx.fetchall(_DUE_WINDOW, params)
            if len(found) < limit:
                if found:
                    full = found[0]["scanned"] >= scan
                else:
                    full = await tx.fetchone(
                        "SELECT 1 FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?"
                        " AND locked_until <= ? LIMIT 1 OFFSET ?", (now, now, scan - 1)
                    ) is not None
                if full:  # the window held fewer than wanted but rows lie past it: look at every due row
                    found = await tx.fetchall(_DUE, params)
            ids = [r["id"] for r in found]
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            if HAS_RETURNING:
                rows = await tx.fetchall(
                    f"UPDATE deliveries SET locked_until = ? WHERE id IN ({marks}) RETURNING {_COLUMNS}",
                    [params["until"], *ids],
                )
            else:
                await tx.execute(f"UPDATE deliveries SET locked_until = ? WHERE id IN ({marks})", [params["until"], *ids])
                rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM deliveries WHERE id IN ({marks})", ids)
        return [Leased(*row) for row in rows]

    async def _load(self, activity_ids: set[int]) -> dict[int, Payload]:
        """The frozen activity bytes, sending account and type of each activity: read once, then cached."""
        cache = self._payloads
        missing = [i for i in activity_ids if i not in cache]
        if missing:
            marks = ",".join("?" * len(missing))
            rows = await self.ctx.db.fetchall(
                f"SELECT id, account_id, body, type FROM outbox_activities WHERE id IN ({marks})", missing
            )
            for row in rows:
                cache[row["id"]] = Payload(row["body"].encode("utf-8"), row["account_id"], row["type"])
        found = {}
        for i in activity_ids:
            if i in cache:
                cache.move_to_end(i)
                found[i] = cache[i]
        while len(cache) > BODY_CACHE:
            cache.popitem(last=False)
        return found

    async def _signer(self, account_id: int) -> Signer | None:
        """The sender's key, loaded once per account (parsing a PEM costs milliseconds)."""
        if account_id not in self._signers:
            row = await self.ctx.db.fetchone(
                "SELECT public_key_id, private_key_pem FROM accounts WHERE id = ?", (account_id,)
            )
            if row is None or not row["public_key_id"] or not row["private_key_pem"]:
                return None
            self._signers[account_id] = Signer(row["public_key_id"], row["private_key_pem"])
        return self._signers[account_id]

    async def _fail(self, row: Leased, error: str) -> Outcome:
        return self._outcome(row, "failed", None, error, host_ok=None)

    async def _crashed(self, row: Leased, exc: Exception) -> Outcome:
        return self._retry(row, None, f"internal error: {type(exc).__name__}", None)

    async def _send(self, row: Leased, payload: Payload, signer: Signer) -> Outcome:
        try:
            result = await self.ctx.http.post(row.inbox_url, payload.body, signer)
        except FetchError as exc:
            if exc.status is not None:  # e.g. a refused redirect: the host did answer
                return self._classify(row, PostResult(exc.status, {}, exc.reason))
            return self._retry(row, None, exc.reason, None)
        return self._classify(row, result)

    def _finish(self, task: asyncio.Task[Outcome], row: Leased) -> Outcome:
        if task.cancelled():
            return self._retry(row, None, "internal error: cancelled", None)
        if task.exception() is None:
            return task.result()
        log.error("delivery %s crashed", row.id, exc_info=task.exception())
        return self._retry(row, None, f"internal error: {type(task.exception()).__name__}", None)

    def _classify(self, row: Leased, result: PostResult) -> Outcome:
        """Mastodon's reading of a status: 2xx done, 410 gone, 5xx/408/429/401 retry, other 4xx final."""
        status, text = result.status, excerpt(result.excerpt)
        if 200 <= status < 300:
            return self._outcome(row, "delivered", status, None, host_ok=True)
        if status == 410:
            return self._outcome(row, "failed", status, text, host_ok=None, gone=True)
        if status >= 500 or status in _RETRYABLE_4XX:
            wait = retry_after_seconds(result.headers.get("retry-after"), self.clock()) if status in _RETRY_AFTER else None
            return self._retry(row, status, text, wait)
        return self._outcome(row, "failed", status, text, host_ok=None)

    def _retry(self, row: Leased, status: int | None, error: str | None, wait: float | None) -> Outcome:
        """Back off (or honour Retry-After) — unless the delivery is past its max age."""
        fed = self.ctx.config.federation
        now = self.clock()
        if now - row.created_at >= fed.delivery_max_age_seconds:
            return self._outcome(row, "expired", status, excerpt(error), host_ok=False)
        if wait is None:
            wait = backoff_delay(row.attempts + 1, fed.delivery_first_retry_seconds, self.rng)
        return self._outcome(row, "pending", status, excerpt(error), host_ok=False, next_at=now + wait)

    def _outcome(self, row: Leased, state: str, status: int | None, error: str | None,
                 *, host_ok: bool | None, gone: bool = False, next_at: float = 0.0) -> Outcome:
        check_transition("pending", state)  # leased rows are always 'pending'
        return Outcome(row, state, status, error, next_at, host_ok, gone)

    async def _record(self, outcomes: list[Outcome]) -> None:
        """One transaction for every outcome that finished together."""
        if not outcomes:
            return
        now = self.clock()
        async with self.ctx.db.write() as tx:
            await tx.executemany(
                """UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?,
                       locked_until = 0, last_status = ?, last_error = ?, updated_at = ?
                   WHERE id = ? AND state = 'pending'""",
                [(o.state, o.next_attempt_at, o.status, o.error, now, o.delivery.id) for o in outcomes],
            )
            await self._record_hosts(tx, outcomes, now)
            for o in outcomes:
                if o.gone:
                    await self._inbox_gone(tx, o.delivery.inbox_url, now)

    async def _record_hosts(self, tx: Tx, outcomes: list[Outcome], now: float) -> None:
        """Success clears a host's failure streak; a streak as long as the max age makes it unavailable.

        A host's queue keeps its order through an outage. While it fails, every delivery to it
        that waits for a retry waits for the same moment (the latest retry time this batch gave
        one of them), so when that comes the oldest `delivery_per_host_concurrency` go first; when
        it gets through again after failing for at least `delivery_first_retry_seconds` (or after
        being marked unavailable), everything queued for it is due at once and goes oldest first.
        The first-retry bound is host_seen's: an inbox that keeps failing on a host that works
        is not retried at every success of its neighbours. Only failures and recoveries cost a
        statement per host; a batch of successes to healthy hosts costs one look-up.
        """
        fed = self.ctx.config.federation
        ok = sorted({o.delivery.host for o in outcomes if o.host_ok})
        bad = sorted({o.delivery.host for o in outcomes if o.host_ok is False} - set(ok))
        # Only a host that had been failing can have deliveries waiting for it (one look for the batch).
        recovered = [r[0] for r in await tx.fetchall(
            f"SELECT host FROM hosts WHERE host IN ({','.join('?' * len(ok))})"
            " AND (unavailable_since IS NOT NULL OR (failures > 0 AND first_failure_at <= ?))",
            [*ok, now - fed.delivery_first_retry_seconds],
        )] if ok else []
        await tx.executemany(
            """INSERT INTO hosts (host, last_success_at) VALUES (?, ?) ON CONFLICT (host) DO UPDATE SET
                   failures = 0, first_failure_at = NULL, unavailable_since = NULL,
                   last_success_at = excluded.last_success_at""",
            [(host, now) for host in ok],
        )
        await tx.executemany(  # everything held or backing off for it can go now, oldest first (the lease's order)
            "UPDATE deliveries SET next_attempt_at = ? WHERE host = ? AND state = 'pending' AND locked_until <= ?",
            [(now, host, now) for host in recovered],
        )
        await tx.executemany(
            """INSERT INTO hosts (host, failures, first_failure_at) VALUES (?, 1, ?) ON CONFLICT (host) DO UPDATE SET
                   failures = failures + 1, first_failure_at = coalesce(first_failure_at, excluded.first_failure_at)""",
            [(host, now) for host in bad],
        )
        since = now - fed.delivery_max_age_seconds
        retry_at: dict[str, float] = {}
        for o in outcomes:
            if o.host_ok is False and o.state == "pending" and o.delivery.host in bad:
                retry_at[o.delivery.host] = max(retry_at.get(o.delivery.host, 0.0), o.next_attempt_at)
        for host in bad:
            cur = await tx.execute(
                """UPDATE hosts SET unavailable_since = ?
                   WHERE host = ? AND unavailable_since IS NULL AND first_failure_at <= ?""",
                (now, host, since),
            )
            if cur.rowcount:  # hold what is still queued for it until it shows signs of life
                await tx.execute(
                    "UPDATE deliveries SET next_attempt_at = ? WHERE host = ? AND state = 'pending' AND locked_until <= ?",
                    (HELD, host, now),
                )
            elif host in retry_at:  # one retry time for everything waiting for a retry to this host
                await tx.execute(
                    """UPDATE deliveries SET next_attempt_at = ? WHERE host = ? AND state = 'pending'
                           AND locked_until <= ? AND next_attempt_at > ? AND next_attempt_at < ?""",
                    (retry_at[host], host, now, now, HELD),
                )
        if bad:
            tx.after_commit.append(functools.partial(note_troubled, self.ctx.db, bad))

    async def _inbox_gone(self, tx: Tx, inbox_url: str, now: float) -> None:
        """A 410 from a remote actor's own inbox: the actor is gone, so drop it from follow lists."""
        rows = await tx.fetchall(
            "SELECT id FROM accounts WHERE inbox_url = ? AND domain IS NOT NULL AND gone_at IS NULL", (inbox_url,)
        )
        for row in rows:
            await tx.execute("UPDATE accounts SET gone_at = ? WHERE id = ?", (now, row["id"]))
            await tx.execute(
                "DELETE FROM follows WHERE account_id = ? OR target_account_id = ?", (row["id"], row["id"])
            )
