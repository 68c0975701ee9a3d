"""The durable job runner (fedi/jobs.py) on a real instance's database: steps, failures, leases."""

from __future__ import annotations

from typing import Any

from fedi.context import Context
from fedi.db import Row
from fedi.jobs import LEASE_SECONDS, MAX_ATTEMPTS, JobError, JobRunner, queue_job, set_progress
from tests.harness import Instance


async def _queue(inst: Instance, kind: str, **params: Any) -> int:
    async with inst.ctx.db.write() as tx:
        job_id = await queue_job(tx, kind, None, params, total=3)
    return job_id


async def _job(inst: Instance, job_id: int) -> Row:
    row = await inst.ctx.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return row


async def counting(ctx: Context, job: Row) -> float | None:
    """Three steps, each committed as progress; finished after the third."""
    async with ctx.db.write() as tx:
        await set_progress(tx, job["id"], job["progress"] + 1)
    return None if job["progress"] + 1 >= 3 else 0


async def refusing(ctx: Context, job: Row) -> float | None:
    raise JobError("line 3: not an account address")


async def crashing(ctx: Context, job: Row) -> float | None:
    raise RuntimeError("bug")


async def test_steps_until_done_and_keeps_progress(alpha: Instance) -> None:
    runner = JobRunner(alpha.ctx, {"count": counting})
    job_id = await _queue(alpha, "count")
    assert (await _job(alpha, job_id))["state"] == "queued"
    assert await runner.run_once() == 1
    row = await _job(alpha, job_id)
    assert (row["state"], row["progress"], row["total"]) == ("running", 1, 3)
    while await runner.run_once():
        pass
    row = await _job(alpha, job_id)
    assert (row["state"], row["progress"], row["error"]) == ("done", 3, None)
    assert row["finished_at"] is not None
    assert await runner.run_once() == 0


async def test_job_error_fails_at_once_with_its_message(alpha: Instance) -> None:
    runner = JobRunner(alpha.ctx, {"refuse": refusing})
    job_id = await _queue(alpha, "refuse")
    await runner.run_once()
    row = await _job(alpha, job_id)
    assert (row["state"], row["error"]) == ("failed", "line 3: not an account address")
    unknown = await _queue(alpha, "no-such-kind")
    await runner.run_once()
    assert (await _job(alpha, unknown))["state"] == "failed"


async def test_unexpected_errors_back_off_then_fail(alpha: Instance) -> None:
    runner = JobRunner(alpha.ctx, {"crash": crashing})
    job_id = await _queue(alpha, "crash")
    await runner.run_once()
    row = await _job(alpha, job_id)
    assert row["state"] == "running" and row["next_attempt_at"] > row["updated_at"]  # backing off
    for _ in range(MAX_ATTEMPTS):
        await alpha.ctx.db.submit("UPDATE jobs SET next_attempt_at = 0 WHERE id = ?", (job_id,))
        await runner.run_once()
    row = await _job(alpha, job_id)
    assert row["state"] == "failed" and "repeatedly" in row["error"]


async def test_a_lapsed_lease_is_taken_again(alpha: Instance) -> None:
    """A runner that died mid-step leaves its lease; once it lapses another runner resumes the job."""
    runner = JobRunner(alpha.ctx, {"count": counting})
    job_id = await _queue(alpha, "count")
    leased = await runner._lease(1000.0)  # a runner "at t=1000" took it and died
    assert [r["id"] for r in leased] == [job_id]
    assert await runner._lease(1000.0 + LEASE_SECONDS - 1) == []  # still held
    assert await runner.run_once() == 1  # now is far past the lease
    assert (await _job(alpha, job_id))["progress"] == 1
