"""The delivery queue and worker against real fedi instances and real scripted peers (no mocks).

Peers are small aiohttp apps on 127.0.0.1 under their own names (added to the
network's host map) that record every request and answer scripted statuses.
Time moves by setting the worker's clock. The outgoing client copies the host
map when an instance starts, so every peer name is mapped before any instance.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

import outbox.delivery
from actors.local import create_local_account
from fedi import signatures
from fedi.app import DELIVERY_WORKER
from fedi.db import Row
from fedi.origin import netloc
from outbox.delivery import DeliveryWorker
from outbox.queue import (
    HELD, MAX_DELAY, TRANSITIONS, TransitionError, backoff_delay, check_transition, enqueue_deliveries, host_seen,
    retry_after_seconds,
)
from tests.harness import Instance, Network, free_port

DAY = 86_400.0
PEER_NAMES = ("peer.test", "slow.test", "fast.test", "dead.test", "gone.test", "back.test", "other.test")


@dataclass
class Received:
    path: str
    query: str
    headers: CIMultiDict[str]
    body: bytes
    at: float


@dataclass
class Peer:
    """A scripted receiver: answers `script` in order (then `default`), optionally slowly."""

    name: str
    port: int
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    default: int = 202
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    @property
    def host(self) -> str:
        return f"{self.name}:{self.port}"

    def inbox(self, path: str = "/inbox") -> str:
        return f"http://{self.host}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            self.received.append(Received(request.raw_path.split("?")[0], request.query_string,
                                          CIMultiDict(request.headers), body, time.time()))
            if self.delay:
                await asyncio.sleep(self.delay)
            status, headers = self.script.pop(0) if self.script else (self.default, {})
            return web.Response(status=status, headers=headers, text=f"status {status} from {self.name}")
        finally:
            self.in_flight -= 1


StartPeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def peers(network: Network) -> AsyncIterator[StartPeer]:
    for name in PEER_NAMES:  # before any instance is added (see the module docstring)
        network.host_map[name] = "127.0.0.1"
    runners: list[web.AppRunner] = []

    async def start(name: str, port: int | None = None, **options: Any) -> Peer:
        peer = Peer(name, port or free_port(), **options)
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", peer.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", peer.port).start()
        runners.append(runner)
        assert network.host_map.get(name) == "127.0.0.1", "add the name to PEER_NAMES"
        return peer

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def alpha(network: Network, peers: StartPeer) -> Instance:
    return await network.add("alpha.test")


def worker(inst: Instance) -> DeliveryWorker:
    assert inst.app is not None
    return inst.app[DELIVERY_WORKER]


async def alice(inst: Instance) -> Row:
    """A local account to send from (created once per instance)."""
    row = await inst.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice' AND domain IS NULL")
    if row is None:
        await create_local_account(inst.ctx.db, inst.base, "alice", "password123")
        row = await inst.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice' AND domain IS NULL")
    assert row is not None
    return row


async def publish(inst: Instance, inboxes: list[str], now: float | None = None) -> int:
    """Store a frozen Create from alice and queue it to `inboxes`, as an action would."""
    sender = await alice(inst)
    ctx = inst.ctx
    activity_id = ctx.db.ids.next()
    uri = f"{sender['uri']}/statuses/{activity_id}/activity"
    body = json.dumps({
        "@context": "https://www.w3.org/ns/activitystreams", "id": uri, "type": "Create",
        "actor": sender["uri"], "to": ["https://www.w3.org/ns/activitystreams#Public"],
        "object": {"id": f"{sender['uri']}/statuses/{activity_id}", "type": "Note",
                   "attributedTo": sender["uri"], "content": "<p>héllo</p>"},
    }, ensure_ascii=False)
    when = worker(inst).clock() if now is None else now
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO outbox_activities (id, uri, account_id, type, public, body, created_at) "
            "VALUES (?, ?, ?, 'Create', 1, ?, ?)",
            (activity_id, uri, sender["id"], body, when),
        )
        await enqueue_deliveries(tx, activity_id, inboxes, when)
        tx.after_commit.append(ctx.wake_delivery)
    return activity_id


async def deliveries(inst: Instance, activity_id: int) -> list[Row]:
    return await inst.ctx.db.fetchall("SELECT * FROM deliveries WHERE activity_id = ? ORDER BY id", (activity_id,))


async def only(inst: Instance, activity_id: int) -> Row:
    rows = await deliveries(inst, activity_id)
    assert len(rows) == 1
    return rows[0]


async def host_row(inst: Instance, host: str) -> Row | None:
    return await inst.ctx.db.fetchone("SELECT * FROM hosts WHERE host = ?", (host,))


def freeze(inst: Instance) -> float:
    """Pin the worker's clock to now; returns it."""
    t = time.time()
    worker(inst).clock = lambda: t
    return t


def advance(inst: Instance, seconds: float) -> float:
    t = worker(inst).clock() + seconds
    worker(inst).clock = lambda: t
    return t


# --- the queue as data -------------------------------------------------------------------------


def test_transitions_are_data() -> None:
    assert set(TRANSITIONS) == {"pending", "delivered", "failed", "expired"}
    for new in ("pending", "delivered", "failed", "expired"):
        check_transition("pending", new)
    for final in ("delivered", "failed", "expired"):
        assert TRANSITIONS[final] == frozenset()
        with pytest.raises(TransitionError):
            check_transition(final, "pending")
    with pytest.raises(TransitionError):
        check_transition("nonsense", "pending")


async def test_enqueue_one_row_per_distinct_valid_inbox(alpha: Instance) -> None:
    inboxes = ["http://a.test/inbox", "http://a.test/inbox", "http://B.test:8080/users/x/inbox", "not a url",
               "ftp://a.test/inbox"]
    activity_id = await publish(alpha, inboxes)
    rows = await deliveries(alpha, activity_id)
    assert [(r["inbox_url"], r["host"], r["state"]) for r in rows] == [
        ("http://a.test/inbox", "a.test", "pending"),
        ("http://B.test:8080/users/x/inbox", "b.test:8080", "pending"),
    ]
    async with alpha.ctx.db.write() as tx:
        again = await enqueue_deliveries(tx, activity_id, ["http://a.test/inbox", "http://c.test/inbox"], time.time())
    assert again == 1  # the duplicate is ignored, the new inbox added


def test_backoff_and_retry_after_helpers() -> None:
    rng = random.Random(1)
    for attempts in range(1, 8):
        delay = backoff_delay(attempts, 60, rng)
        assert 0.8 * 60 * 2 ** (attempts - 1) <= delay <= 1.2 * 60 * 2 ** (attempts - 1)
    assert backoff_delay(40, 60, rng) == MAX_DELAY
    now = time.time()
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds(signatures.http_date(now + 300), now) == pytest.approx(300, abs=1.5)
    assert retry_after_seconds("9999999", now) == MAX_DELAY
    assert retry_after_seconds("0", now) == 1.0
    assert retry_after_seconds("soon", now) is None


# --- outcomes ------------------------------------------------------------------------------------


async def test_delivered_once_with_valid_signature(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test")
    activity_id = await publish(alpha, [peer.inbox("/users/bob/inbox")])
    assert await worker(alpha).run_once() == 1
    assert await worker(alpha).run_once() == 0
    assert len(peer.received) == 1
    got = peer.received[0]
    sender = await alice(alpha)
    stored = await alpha.ctx.db.fetchval("SELECT body FROM outbox_activities WHERE id = ?", (activity_id,))
    assert got.body == stored.encode("utf-8")
    parsed = signatures.parse_signature(got.headers["Signature"])
    assert parsed.key_id == sender["public_key_id"]
    signatures.check_request(parsed, "POST", got.headers, got.body, now=time.time(), window=300)
    signatures.verify_signature(parsed, "POST", got.path, got.query, got.headers,
                                signatures.load_public_key(sender["public_key_pem"]))
    assert got.headers["Host"] == peer.host
    row = await only(alpha, activity_id)
    assert (row["state"], row["attempts"], row["last_status"], row["last_error"]) == ("delivered", 1, 202, None)
    host = await host_row(alpha, peer.host)
    assert host is not None and host["last_success_at"] and host["failures"] == 0


async def test_server_error_is_retried_after_backoff(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test", script=[(500, {})])
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, activity_id)
    assert (row["state"], row["attempts"], row["last_status"]) == ("pending", 1, 500)
    assert "status 500" in row["last_error"]
    assert t0 + 48 <= row["next_attempt_at"] <= t0 + 72  # 60 s × jitter
    assert row["locked_until"] == 0
    assert await worker(alpha).run_once() == 0  # not due yet
    assert len(peer.received) == 1
    advance(alpha, 3600)
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, activity_id)
    assert (row["state"], row["attempts"], row["last_status"]) == ("delivered", 2, 202)
    assert len(peer.received) == 2
    assert peer.received[0].body == peer.received[1].body  # the frozen bytes, resent


async def test_backoff_grows(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test", default=503)
    freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    delays = []
    for attempt in range(1, 6):
        assert await worker(alpha).run_once() == 1
        row = await only(alpha, activity_id)
        assert row["attempts"] == attempt
        delays.append(row["next_attempt_at"] - worker(alpha).clock())
        advance(alpha, delays[-1])
    assert all(later > earlier * 1.3 for earlier, later in zip(delays, delays[1:]))
    assert 0.8 * 60 * 16 <= delays[-1] <= 1.2 * 60 * 16
    host = await host_row(alpha, peer.host)
    assert host is not None and host["failures"] == 5 and host["unavailable_since"] is None


async def test_429_honours_retry_after(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test", script=[(429, {"Retry-After": "120"})])
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, activity_id)
    assert (row["state"], row["last_status"]) == ("pending", 429)
    assert row["next_attempt_at"] == pytest.approx(t0 + 120)
    advance(alpha, 119)
    assert await worker(alpha).run_once() == 0
    advance(alpha, 1)
    assert await worker(alpha).run_once() == 1
    assert (await only(alpha, activity_id))["state"] == "delivered"


async def test_404_fails_at_once(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test", default=404)
    freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, activity_id)
    assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 1, 404)
    advance(alpha, 2 * DAY)
    assert await worker(alpha).run_once() == 0
    assert len(peer.received) == 1


async def insert_remote(inst: Instance, peer: Peer, username: str) -> int:
    account_id = inst.ctx.db.ids.next()
    uri = f"http://{peer.host}/users/{username}"
    async with inst.ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO accounts (id, username, domain, uri, inbox_url, shared_inbox_url, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (account_id, username, peer.host, uri, f"{uri}/inbox", peer.inbox("/inbox"), time.time(), time.time()),
        )
    return account_id


async def test_410_from_personal_inbox_marks_actor_gone(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test", default=410)
    sender = await alice(alpha)
    bob = await insert_remote(alpha, peer, "bob")
    carol = await insert_remote(alpha, peer, "carol")
    async with alpha.ctx.db.write() as tx:
        for follower, target in ((bob, sender["id"]), (sender["id"], bob), (carol, sender["id"])):
            await tx.execute(
                "INSERT INTO follows (id, account_id, target_account_id, state, created_at) VALUES (?, ?, ?, 'accepted', ?)",
                (tx.new_id(), follower, target, time.time()),
            )
    activity_id = await publish(alpha, [f"http://{peer.host}/users/bob/inbox", peer.inbox("/inbox")])
    assert await worker(alpha).run_once() == 2
    assert {r["state"] for r in await deliveries(alpha, activity_id)} == {"failed"}
    gone = {r["username"]: r["gone_at"] for r in await alpha.ctx.db.fetchall(
        "SELECT username, gone_at FROM accounts WHERE domain IS NOT NULL")}
    assert gone["bob"] is not None
    assert gone["carol"] is None  # a 410 from the shared inbox says nothing about one actor
    follows = await alpha.ctx.db.fetchall("SELECT account_id, target_account_id FROM follows")
    assert [(r["account_id"], r["target_account_id"]) for r in follows] == [(carol, sender["id"])]


async def test_refused_connection_backs_off(alpha: Instance) -> None:
    url = f"http://dead.test:{free_port()}/inbox"
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [url])
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, activity_id)
    assert (row["state"], row["attempts"], row["last_status"]) == ("pending", 1, None)
    assert "connection" in row["last_error"] and len(row["last_error"]) <= 300
    assert t0 + 48 <= row["next_attempt_at"] <= t0 + 72
    host = await host_row(alpha, netloc(url))
    assert host is not None and host["failures"] == 1 and host["first_failure_at"] == t0


async def test_max_age_expires_and_holds_host_until_seen(alpha: Instance, peers: StartPeer) -> None:
    port = free_port()
    url, host = f"http://gone.test:{port}/inbox", f"gone.test:{port}"
    t0 = freeze(alpha)
    first = await publish(alpha, [url])
    assert await worker(alpha).run_once() == 1
    assert (await only(alpha, first))["state"] == "pending"
    advance(alpha, alpha.config.federation.delivery_max_age_seconds)
    assert await worker(alpha).run_once() == 1
    row = await only(alpha, first)
    assert (row["state"], row["attempts"]) == ("expired", 2)
    unavailable = await host_row(alpha, host)
    assert unavailable is not None and unavailable["unavailable_since"] == worker(alpha).clock()
    assert unavailable["first_failure_at"] == t0

    peer = await peers("gone.test", port=port)  # the host comes back, but we do not know yet
    second = await publish(alpha, [url])
    assert (await only(alpha, second))["next_attempt_at"] == HELD
    advance(alpha, 30 * DAY)
    assert await worker(alpha).run_once() == 0
    assert peer.received == []

    assert await host_seen(alpha.ctx, host, now=worker(alpha).clock())
    assert alpha.ctx.delivery_wakeup.is_set()
    assert await worker(alpha).run_once() == 1
    assert (await only(alpha, second))["state"] == "delivered"
    assert len(peer.received) == 1
    cleared = await host_row(alpha, host)
    assert cleared is not None and cleared["unavailable_since"] is None and cleared["failures"] == 0


async def test_a_success_on_an_unavailable_host_releases_what_was_held(alpha: Instance, peers: StartPeer) -> None:
    """A delivery that gets through (one already under way when the host was marked unavailable) lets
    the held rows go at once; a success on a host that never failed releases nothing of another host's."""
    port = free_port()
    url, host = f"http://back.test:{port}/inbox", f"back.test:{port}"
    t0 = freeze(alpha)
    first = await publish(alpha, [url])
    assert await worker(alpha).run_once() == 1  # refused: a failure streak starts
    advance(alpha, alpha.config.federation.delivery_max_age_seconds)
    other = f"http://other.test:{free_port()}/inbox"
    held_elsewhere = await publish(alpha, [other])
    async with alpha.ctx.db.write() as tx:  # other.test is unavailable too, with a row held
        await tx.execute("INSERT INTO hosts (host, failures, first_failure_at, unavailable_since) VALUES (?, 3, ?, ?)",
                         (netloc(other), t0, t0))
        await tx.execute("UPDATE deliveries SET next_attempt_at = ? WHERE activity_id = ?", (HELD, held_elsewhere))
    assert await worker(alpha).run_once() == 1  # the first row expires: back.test is now unavailable
    second = await publish(alpha, [url])
    assert (await only(alpha, second))["next_attempt_at"] == HELD
    assert (await host_row(alpha, host))["unavailable_since"] is not None
    peer = await peers("back.test", port=port)
    in_flight = await publish(alpha, [url])  # as if leased before the host was marked: due now
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE deliveries SET next_attempt_at = 0 WHERE activity_id = ?", (in_flight,))
    # One pass: the due row gets through, its success releases the held one, which goes out too.
    assert await worker(alpha).run_once() == 2
    assert (await only(alpha, in_flight))["state"] == "delivered"
    assert (await only(alpha, second))["state"] == "delivered" and len(peer.received) == 2
    assert (await only(alpha, held_elsewhere))["next_attempt_at"] == HELD  # another host's stay held
    assert (await only(alpha, first))["state"] == "expired"


async def test_host_seen_is_a_no_op_for_healthy_hosts(alpha: Instance, peers: StartPeer) -> None:
    assert not await host_seen(alpha.ctx, "never.test")
    assert await host_row(alpha, "never.test") is None
    peer = await peers("peer.test", script=[(503, {"Retry-After": "3600"})])
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    await worker(alpha).run_once()
    # A failing host seen again soon after its first failure keeps its backoff (no retry storm)...
    assert not await host_seen(alpha.ctx, peer.host, now=t0 + 1)
    # ...and is released once the first retry interval has passed.
    assert await host_seen(alpha.ctx, peer.host, now=t0 + 61)
    assert (await only(alpha, activity_id))["next_attempt_at"] == t0 + 61


# --- concurrency, isolation, crashes -----------------------------------------------------------


async def test_per_host_concurrency_is_bounded(network: Network, peers: StartPeer) -> None:
    beta = await network.add("beta.test", federation={"delivery_per_host_concurrency": 2})
    peer = await peers("slow.test", delay=0.5)
    activity_id = await publish(beta, [peer.inbox(f"/users/u{i}/inbox") for i in range(10)])
    assert await worker(beta).run_once() == 10
    assert len(peer.received) == 10
    assert peer.max_in_flight == 2
    assert {r["state"] for r in await deliveries(beta, activity_id)} == {"delivered"}


async def test_slow_host_does_not_block_another(network: Network, peers: StartPeer) -> None:
    beta = await network.add("beta.test", federation={"delivery_per_host_concurrency": 2})
    slow = await peers("slow.test", delay=1.0)
    fast = await peers("fast.test")
    start = time.time()
    activity_id = await publish(
        beta, [slow.inbox(f"/u{i}/inbox") for i in range(6)] + [fast.inbox(f"/u{i}/inbox") for i in range(3)]
    )
    assert await worker(beta).run_once() == 9
    assert time.time() - start >= 3.0  # 6 slow requests, 2 at a time
    assert all(r.at - start < 0.8 for r in fast.received) and len(fast.received) == 3
    rows = await deliveries(beta, activity_id)
    fast_done = [r["updated_at"] for r in rows if r["host"] == fast.host]
    slow_done = [r["updated_at"] for r in rows if r["host"] == slow.host]
    assert max(fast_done) < min(slow_done)  # fast outcomes were recorded without waiting for the slow host
    assert {r["state"] for r in rows} == {"delivered"}


async def test_expired_lease_is_picked_up_again(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test")
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox()])
    async with alpha.ctx.db.write() as tx:  # a worker that leased the row and then died
        await tx.execute("UPDATE deliveries SET locked_until = ? WHERE activity_id = ?", (t0 + 30, activity_id))
    assert await worker(alpha).run_once() == 0
    advance(alpha, 31)
    assert await worker(alpha).run_once() == 1
    assert (await only(alpha, activity_id))["state"] == "delivered"
    assert len(peer.received) == 1


async def test_lease_without_returning(alpha: Instance, peers: StartPeer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SELECT-then-UPDATE lease used on SQLite older than 3.35 leases the same rows."""
    monkeypatch.setattr(outbox.delivery, "HAS_RETURNING", False)
    peer = await peers("peer.test")
    t0 = freeze(alpha)
    activity_id = await publish(alpha, [peer.inbox(f"/u{i}/inbox") for i in range(3)])
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE deliveries SET locked_until = ? WHERE id = (SELECT min(id) FROM deliveries)", (t0 + 30,))
    assert await worker(alpha).run_once() == 2
    advance(alpha, 31)
    assert await worker(alpha).run_once() == 1
    assert {r["state"] for r in await deliveries(alpha, activity_id)} == {"delivered"}
    assert sorted(r.path for r in peer.received) == ["/u0/inbox", "/u1/inbox", "/u2/inbox"]


async def test_background_worker_wakes_on_commit(alpha: Instance, peers: StartPeer) -> None:
    peer = await peers("peer.test")
    worker(alpha).start()
    try:
        await asyncio.sleep(0.05)
        activity_id = await publish(alpha, [peer.inbox()])
        for _ in range(100):
            if (await only(alpha, activity_id))["state"] == "delivered":
                break
            await asyncio.sleep(0.01)
        assert (await only(alpha, activity_id))["state"] == "delivered"
    finally:
        await worker(alpha).stop()
    assert len(peer.received) == 1
