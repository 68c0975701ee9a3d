"""Nothing lost: `fedi serve` killed with SIGKILL during a delivery backlog, restarted on the same database.

The receivers are small aiohttp apps in this process, one per 127.0.0.1 port,
so each is its own host (origin) with its own row in the per-host limits. They
answer slowly so a backlog builds, and they verify every request's HTTP
signature against alice's public key as stored in A's database, so the test
proves that what arrives after the restart is still properly signed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from fedi.ids import IdGenerator
from fedi.signatures import SignatureError, check_request, load_public_key, parse_signature, verify_signature
from tests.processes import FediProcess, FediProcesses, wait_for_async

HOSTS = 20
POSTS = 5
ANSWER_DELAY = 0.5  # seconds per request: with one slot per host, each host's queue drains at 2/s
REQUEST_TIMEOUT = 2.0  # a delivery leased by the killed process is due again after 3x this


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


class Receiver:
    """One remote host: `POST /inbox` checks the signature, records the activity id, answers slowly."""

    def __init__(self, key_id: str, public_pem: str) -> None:
        self.key_id = key_id
        self.public_key = load_public_key(public_pem)
        self.received: list[str] = []
        self.rejected: list[str] = []
        self.runner: web.AppRunner | None = None
        self.port = 0

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if request.headers.get("Host") != self.netloc:
                raise SignatureError(f"sent to the wrong host: {request.headers.get('Host')}")
            parsed = parse_signature(request.headers.get("Signature", ""))
            if parsed.key_id != self.key_id:
                raise SignatureError(f"signed with {parsed.key_id}")
            check_request(parsed, "POST", request.headers, body, time.time(), 300)
            verify_signature(parsed, "POST", request.rel_url.raw_path, request.query_string, request.headers,
                             self.public_key)
        except SignatureError as exc:
            self.rejected.append(exc.reason)
            return web.json_response({"error": exc.reason}, status=401)
        self.received.append(json.loads(body)["id"])
        await asyncio.sleep(ANSWER_DELAY)
        return web.json_response({}, status=202)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/inbox", self.inbox)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def add_remote_followers(inst: FediProcess, username: str, receivers: list[Receiver]) -> None:
    """One remote follower per receiver host, written straight into A's database before it starts.

    Rows rather than real Follow activities: the followers must be *remote*
    accounts following the local one, and making each receiver a full peer that
    signs a Follow and takes the Accept would test follow handling (covered by
    test_federation), not what this test is about — that queued deliveries
    survive a crash. The rows are what fedi itself stores for an accepted remote
    follower (see fedi/schema.py and inbox/handlers.py).
    """
    ids = IdGenerator()
    now = time.time()
    with closing(sqlite3.connect(inst.db_path, timeout=10)) as conn, conn:
        (local_id,) = conn.execute(
            "SELECT id FROM accounts WHERE domain IS NULL AND username = ?", (username,)
        ).fetchone()
        for n, receiver in enumerate(receivers):
            uri = f"http://{receiver.netloc}/users/follower{n}"
            account_id = ids.next()
            conn.execute(
                """INSERT INTO accounts (id, username, domain, uri, url, inbox_url, shared_inbox_url,
                       followers_url, public_key_id, created_at, updated_at, fetched_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (account_id, f"follower{n}", receiver.netloc, uri, uri, f"{uri}/inbox",
                 f"http://{receiver.netloc}/inbox", f"{uri}/followers", f"{uri}#main-key", now, now, now),
            )
            conn.execute(
                "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at)"
                " VALUES (?, ?, ?, ?, 'accepted', ?)",
                (ids.next(), account_id, local_id, f"http://{receiver.netloc}/follows/{n}", now),
            )


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
    receivers = [Receiver(key_id, public_pem) for _ in range(HOSTS)]
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
