"""The delivery worker: leases due rows of `deliveries`, signs and POSTs them, records outcomes.

The table is the queue, so nothing lives only in memory: a lease
(`locked_until`) that expires after a crash makes the row due again
(at-least-once; receivers dedupe by activity id). The per-host limit is applied
when leasing — a host never has more leased rows than its slots — so a
black-holed inbox holds its slots and nothing else, and no row waits in memory
long enough for its lease to run out. Outcomes are written in group commits:
whatever finished while the previous commit ran.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fedi.context import Context
from fedi.db import Tx
from fedi.http_client import FetchError, PostResult, Signer
from fedi.moderation.domains import WITHDRAWALS, is_suspended
from fedi.signatures import load_private_key
from outbox.queue import HELD, backoff_delay, check_transition, retry_after_seconds

log = logging.getLogger("fedi.delivery")

BATCH = 200
POLL_SECONDS = 1.0  # also picks up rows queued by another process (the CLI) and retries coming due
LEASE_FACTOR = 3  # lease = request timeout × this
EXCERPT = 300
_RETRY_AFTER = frozenset({429, 503})
_RETRYABLE_4XX = frozenset({401, 408, 429})
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)

# Due rows, at most `per_host` per host counting rows this worker already holds
# (`busy`: JSON {host: count}), oldest first.
_DUE = """
SELECT due.id FROM (
    SELECT id, host, next_attempt_at,
           ROW_NUMBER() OVER (PARTITION BY host ORDER BY next_attempt_at, id) AS rn
    FROM deliveries
    WHERE state = 'pending' AND next_attempt_at <= :now AND locked_until <= :now
) AS due
LEFT JOIN json_each(:busy) AS b ON b.key = due.host
WHERE due.rn + COALESCE(b.value, 0) <= :per_host
ORDER BY due.next_attempt_at LIMIT :limit
"""
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
    """Sends queued deliveries; `start()` runs it in the background, tests call `run_once()`."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.clock: Callable[[], float] = time.time
        self.rng = random.Random()
        self._task: asyncio.Task[None] | None = None
        self._sends: dict[asyncio.Task[Outcome], Leased] = {}
        self._held: dict[str, int] = {}  # host -> rows leased by this worker and not yet recorded
        self._signers: dict[int, Signer] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="fedi-delivery")

    async def stop(self) -> None:
        """Stop sending; unfinished sends keep their lease and are retried after it expires."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for task in self._sends:
            task.cancel()
        await asyncio.gather(*self._sends, return_exceptions=True)
        self._sends.clear()
        self._held.clear()

    async def _loop(self) -> None:
        wakeup = self.ctx.delivery_wakeup
        while True:
            try:
                await self.run_once()
            except Exception:  # keep delivering after e.g. a transient database error
                log.exception("delivery round failed")
            try:
                await asyncio.wait_for(wakeup.wait(), POLL_SECONDS)
            except TimeoutError:
                pass
            wakeup.clear()  # rows committed before the set are seen by the next lease

    async def run_once(self) -> int:
        """Send everything due (leasing as slots free up), record outcomes; returns rows attempted."""
        attempted = 0
        while True:
            attempted += await self._fill()
            if not self._sends:
                return attempted
            done, _ = await asyncio.wait(self._sends, timeout=POLL_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            await self._record([self._finish(task) for task in done])

    async def _fill(self) -> int:
        """Lease due rows up to the free slots and start sending them."""
        started = 0
        while (room := min(BATCH, self.ctx.config.federation.delivery_concurrency - len(self._sends))) > 0:
            rows = await self._lease(room)
            if not rows:
                break
            bodies = await self._bodies({row.activity_id for row in rows})
            for row in rows:
                self._held[row.host] = self._held.get(row.host, 0) + 1
                task = asyncio.create_task(self._send(row, bodies.get(row.activity_id)))
                self._sends[task] = row
            started += len(rows)
        return started

    async def _lease(self, limit: int) -> list[Leased]:
        fed = self.ctx.config.federation
        now = self.clock()
        params: dict[str, Any] = {
            "now": now, "until": now + fed.request_timeout_seconds * LEASE_FACTOR, "limit": limit,
            "busy": json.dumps(self._held), "per_host": fed.delivery_per_host_concurrency,
        }
        async with self.ctx.db.write() as tx:
            if HAS_RETURNING:
                rows = await tx.fetchall(
                    f"UPDATE deliveries SET locked_until = :until WHERE id IN ({_DUE}) RETURNING {_COLUMNS}", params
                )
            else:  # same transaction, so no other writer can lease these in between
                ids = [r["id"] for r in await tx.fetchall(_DUE, params)]
                marks = ",".join("?" * len(ids))
                await tx.execute(f"UPDATE deliveries SET locked_until = ? WHERE id IN ({marks})", [params["until"], *ids])
                rows = await tx.fetchall(f"SELECT {_COLUMNS} FROM deliveries WHERE id IN ({marks})", ids)
        return [Leased(*row) for row in rows]

    async def _bodies(self, activity_ids: set[int]) -> dict[int, tuple[bytes, int, str]]:
        """The frozen activity bytes, sending account and type of each activity (one read per batch)."""
        marks = ",".join("?" * len(activity_ids))
        rows = await self.ctx.db.fetchall(
            f"SELECT id, account_id, body, type FROM outbox_activities WHERE id IN ({marks})", list(activity_ids)
        )
        return {row["id"]: (row["body"].encode("utf-8"), row["account_id"], row["type"]) for row in rows}

    async def _signer(self, account_id: int) -> Signer | None:
        """The sender's key, loaded once per account (parsing a PEM costs milliseconds)."""
        if account_id not in self._signers:
            row = await self.ctx.db.fetchone(
                "SELECT public_key_id, private_key_pem FROM accounts WHERE id = ?", (account_id,)
            )
            if row is None or not row["public_key_id"] or not row["private_key_pem"]:
                return None
            self._signers[account_id] = Signer(row["public_key_id"], load_private_key(row["private_key_pem"]))
        return self._signers[account_id]

    async def _send(self, row: Leased, payload: tuple[bytes, int, str] | None) -> Outcome:
        signer = None if payload is None else await self._signer(payload[1])
        if payload is None or signer is None:
            return self._outcome(row, "failed", None, "activity or sender key missing", host_ok=None)
        if payload[2] not in WITHDRAWALS and await is_suspended(self.ctx, row.host):
            return self._outcome(row, "failed", None, "domain is blocked", host_ok=None)
        try:
            result = await self.ctx.http.post(row.inbox_url, payload[0], signer)
        except FetchError as exc:
            if exc.status is not None:  # e.g. a refused redirect: the host did answer
                return self._classify(row, PostResult(exc.status, {}, exc.reason))
            return self._retry(row, None, exc.reason, None)
        return self._classify(row, result)

    def _finish(self, task: asyncio.Task[Outcome]) -> Outcome:
        row = self._sends.pop(task)
        self._held[row.host] -= 1
        if not self._held[row.host]:
            del self._held[row.host]
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
        """Success clears a host's failure streak; a streak as long as the max age makes it unavailable."""
        ok = sorted({o.delivery.host for o in outcomes if o.host_ok})
        bad = sorted({o.delivery.host for o in outcomes if o.host_ok is False} - set(ok))
        await tx.executemany(
            """INSERT INTO hosts (host, last_success_at) VALUES (?, ?) ON CONFLICT (host) DO UPDATE SET
                   failures = 0, first_failure_at = NULL, unavailable_since = NULL,
                   last_success_at = excluded.last_success_at""",
            [(host, now) for host in ok],
        )
        await tx.executemany(  # deliveries held while the host was unavailable can go now
            "UPDATE deliveries SET next_attempt_at = ? WHERE host = ? AND state = 'pending' AND next_attempt_at >= ?",
            [(now, host, HELD) for host in ok],
        )
        await tx.executemany(
            """INSERT INTO hosts (host, failures, first_failure_at) VALUES (?, 1, ?) ON CONFLICT (host) DO UPDATE SET
                   failures = failures + 1, first_failure_at = coalesce(first_failure_at, excluded.first_failure_at)""",
            [(host, now) for host in bad],
        )
        since = now - self.ctx.config.federation.delivery_max_age_seconds
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
