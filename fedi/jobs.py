"""Durable background jobs: slow work for one account (exports, imports) as leased rows.

A job is a row in `jobs` with a kind, its parameters and its progress. The runner
leases due rows and calls the handler for the job's kind. A handler does one
bounded step and says what comes next: `None` when the job is finished, or a
number of seconds after which to call it again (work left, or paced). Whatever a
step commits stays committed, so a job killed mid-way resumes from its last step
once its lease lapses (a handler must make each step safe to repeat).

A handler raises `JobError` for a failure to show its owner (a bad file): the job
ends `failed` with that message. Any other exception is retried with backoff, and
after `MAX_ATTEMPTS` the job fails with a generic message.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fedi.background import BackgroundLoop
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.jsonutil import dumps_str

log = logging.getLogger("fedi.jobs")

#: A handler gets the leased job row and returns None (finished) or the seconds until its next step.
JobHandler = Callable[[Context, Row], Awaitable[float | None]]

STATES = ("queued", "running", "done", "failed")
#: How long a leased job is left to one runner; a step must end well inside it.
LEASE_SECONDS = 120.0
MAX_ATTEMPTS = 5
#: Jobs stepped at once by one runner (one slow export must not hold up every import).
CONCURRENCY = 4


class JobError(Exception):
    """A job that cannot succeed; the message is shown to the job's owner."""


async def queue_job(tx: Tx, kind: str, account_id: int | None, params: Mapping[str, Any] | None = None, *,
                    total: int | None = None) -> int:
    """Add a job inside the caller's transaction (so its rows and the job commit together); returns its id."""
    job_id = tx.new_id()
    ts = now()
    await tx.execute(
        "INSERT INTO jobs (id, account_id, kind, params_json, total, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (job_id, account_id, kind, dumps_str(dict(params or {})), total, ts, ts),
    )
    return job_id


async def set_progress(tx: Tx, job_id: int, progress: int, total: int | None = None) -> None:
    await tx.execute(
        "UPDATE jobs SET progress = ?, total = coalesce(?, total), updated_at = ? WHERE id = ?",
        (progress, total, now(), job_id),
    )


async def set_result(tx: Tx, job_id: int, result: Mapping[str, Any]) -> None:
    await tx.execute("UPDATE jobs SET result_json = ?, updated_at = ? WHERE id = ?",
                     (dumps_str(dict(result)), now(), job_id))


async def renew_lease(ctx: Context, job_id: int) -> None:
    """Keep a long step's lease (a big archive's media): no other runner takes the job meanwhile."""
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE jobs SET locked_until = ? WHERE id = ? AND state = 'running'",
                         (now() + LEASE_SECONDS, job_id))


class JobRunner(BackgroundLoop):
    name = "fedi-jobs"
    interval = 1.0

    def __init__(self, ctx: Context, handlers: Mapping[str, JobHandler]) -> None:
        super().__init__()
        self.ctx = ctx
        self.handlers = dict(handlers)

    def wakeup(self) -> asyncio.Event:
        return self.ctx.jobs_wakeup

    def busy(self, result: Any) -> bool:
        return bool(result)

    async def _lease(self, at: float) -> list[Row]:
        async with self.ctx.db.write() as tx:
            return await tx.fetchall(
                "UPDATE jobs SET state = 'running', locked_until = ?, attempts = attempts + 1, updated_at = ?"
                " WHERE id IN (SELECT id FROM jobs WHERE state IN ('queued', 'running')"
                " AND next_attempt_at <= ? AND locked_until <= ? ORDER BY next_attempt_at, id LIMIT ?)"
                " RETURNING *",
                (at + LEASE_SECONDS, at, at, at, CONCURRENCY),
            )

    async def run_once(self) -> int:
        """Step every due job once; returns how many were stepped."""
        jobs = await self._lease(now())
        if jobs:
            await asyncio.gather(*(self._step(job) for job in jobs))
        return len(jobs)

    async def _step(self, job: Row) -> None:
        handler = self.handlers.get(job["kind"])
        try:
            if handler is None:
                raise JobError(f"unknown job kind {job['kind']!r}")
            again = await handler(self.ctx, job)
        except JobError as exc:
            await self._finish(job["id"], "failed", str(exc))
            return
        except Exception:
            log.exception("job %s (%s) step failed", job["id"], job["kind"])
            if job["attempts"] >= MAX_ATTEMPTS:
                await self._finish(job["id"], "failed", "the job failed repeatedly; an admin can find why in the log")
            else:
                await self._reschedule(job["id"], 2.0 ** job["attempts"], reset_attempts=False)
            return
        if again is None:
            await self._finish(job["id"], "done", None)
        else:
            await self._reschedule(job["id"], max(0.0, again), reset_attempts=True)

    async def _finish(self, job_id: int, state: str, error: str | None) -> None:
        ts = now()
        async with self.ctx.db.write() as tx:
            await tx.execute(
                "UPDATE jobs SET state = ?, error = ?, locked_until = 0, updated_at = ?, finished_at = ? WHERE id = ?",
                (state, error, ts, ts, job_id),
            )

    async def _reschedule(self, job_id: int, delay: float, *, reset_attempts: bool) -> None:
        """A step that made progress starts the attempt count again; a failed one keeps it."""
        ts = now()
        async with self.ctx.db.write() as tx:
            await tx.execute(
                "UPDATE jobs SET next_attempt_at = ?, locked_until = 0, updated_at = ?,"
                " attempts = CASE WHEN ? THEN 0 ELSE attempts END WHERE id = ?",
                (ts + delay, ts, int(reset_attempts), job_id),
            )
        if delay <= 0:
            self.ctx.wake_jobs()
