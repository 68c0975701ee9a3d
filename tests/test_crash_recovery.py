"""Nothing lost: `fedi serve` killed with SIGKILL during a delivery backlog, restarted on the same database.

The receivers are small aiohttp apps in this process, one per 127.0.0.1 port,
so each is its own host (origin) with its own row in the per-host limits. They
answer slowly so a backlog builds, and they verify every request's HTTP
signature against alice's public key as stored in A's database, so the test
proves that what arrives after the restart is still properly signed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import FediProcess, FediProcesses, wait_for_async
from tests.receivers import Receiver, add_remote_followers

HOSTS = 20
POSTS = 5
ANSWER_DELAY = 0.5  # seconds per request: with one slot per host, each host's queue drains at 2/s
REQUEST_TIMEOUT = 2.0  # a delivery leased by the killed process is due again after 3x this


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


def delivery_states(inst: FediProcess) -> dict[str, int]:
    return {row[0]: row[1] for row in inst.query("SELECT state, count(*) FROM deliveries GROUP BY state")}


async def test_sigkill_during_backlog_loses_no_delivery(procs: FediProcesses, record_property: Any) -> None:
    inst = procs.add(
        "a", federation={"delivery_per_host_concurrency": 1, "request_timeout_seconds": REQUEST_TIMEOUT}
    )
    inst.create_account("alice")
    ((key_id, public_pem),) = inst.query(
        "SELECT public_key_id, public_key_pem FROM accounts WHERE domain IS NULL AND username = 'alice'"
    )
    receivers = [Receiver(delay=ANSWER_DELAY) for _ in range(HOSTS)]
    for receiver in receivers:
        receiver.expect_key(key_id, public_pem)
    try:
        for receiver in receivers:
            await receiver.start()
        add_remote_followers(inst, "alice", receivers)
        await asyncio.to_thread(inst.start)

        def received() -> list[tuple[str, str]]:
            return [(activity, r.netloc) for r in receivers for activity in r.received]

        def detail() -> str:
            rejected = [reason for r in receivers for reason in r.rejected]
            return f"states {delivery_states(inst)}; rejected {rejected[:5]}\n{inst.logs()}"

        # The CLI queues each post in the database; the running server delivers them.
        outputs = await asyncio.gather(*(
            asyncio.to_thread(inst.ok, "post", "alice", f"crash test post {n}") for n in range(POSTS)
        ))
        expected = {(uri.strip() + "/activity", r.netloc) for uri in outputs for r in receivers}
        assert len(expected) == POSTS * HOSTS
        queued = inst.query("SELECT o.uri, d.host FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id")
        assert {(row[0], row[1]) for row in queued} == expected

        # Some but not all have arrived: crash.
        await wait_for_async(lambda: len(received()) >= HOSTS + HOSTS // 2, 15, "the first deliveries",
                             interval=0.02, detail=detail)
        inst.kill()
        before_kill = set(received())
        assert 0 < len(before_kill) < len(expected), f"no backlog to lose: {len(before_kill)} of {len(expected)}"
        left = delivery_states(inst)
        assert left.get("pending", 0) > 0, left

        # Restart on the same database: every (activity, host) pair arrives at least once.
        await asyncio.to_thread(inst.start)
        started_again = time.monotonic()
        await wait_for_async(lambda: expected <= set(received()), 40, "every delivery after the restart",
                             detail=lambda: f"missing {len(expected - set(received()))}; {detail()}")
        recovery_seconds = time.monotonic() - started_again
        await wait_for_async(lambda: delivery_states(inst) == {"delivered": len(expected)}, 15,
                             "every delivery recorded as delivered", detail=detail)

        got = received()
        assert set(got) == expected, "something arrived that was never queued"
        assert not any(r.rejected for r in receivers), [r.rejected for r in receivers]
        duplicates = sum(n - 1 for n in Counter(got).values())
        record_property("deliveries", len(expected))
        record_property("received_before_kill", len(before_kill))
        record_property("duplicates", duplicates)
        record_property("recovery_seconds", round(recovery_seconds, 1))
        print(f"\n{len(expected)} deliveries: {len(before_kill)} arrived before SIGKILL, left {left},"
              f" all arrived {recovery_seconds:.1f}s after restart, {duplicates} duplicates (at-least-once)")
        # only what was in flight at the kill may come twice: at most one request per host
        assert duplicates <= HOSTS, duplicates
    finally:
        inst.stop()
        for receiver in receivers:
            await receiver.stop()
