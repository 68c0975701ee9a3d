"""Delivery from separate worker processes: `fedi serve` with `[federation] delivery_processes`.

Real `fedi serve` subprocesses deliver to real aiohttp receivers in this
process, one per 127.0.0.1 port (so each is its own host with its own
per-host limit). Every receiver verifies each request's HTTP signature against
alice's public key as stored in the instance's database. The children are
found through /proc (Linux) by their parent's PID and command line.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from fedi.config import ConfigError, FederationConfig, config_from_dict, delivery_process_count
from outbox.delivery_process import parse_cpus, shares
from tests.processes import FediProcess, FediProcesses, wait_for, wait_for_async
from tests.receivers import Receiver, add_remote_followers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds children through /proc")

HOSTS = 8
MODULE = "outbox.delivery_process"


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


# ------------------------------------------------------------------ configuration


def test_delivery_processes_setting() -> None:
    assert FederationConfig().delivery_processes == 1
    for value in (0, 1, 2, "auto"):
        config = config_from_dict({"federation": {"delivery_processes": value}})
        assert config.federation.delivery_processes == value
    for bad in ("two", -1, 1.5, True, 65, "AUTO"):
        with pytest.raises(ConfigError, match="delivery_processes"):
            config_from_dict({"federation": {"delivery_processes": bad}})
    assert delivery_process_count(FederationConfig(delivery_processes=0)) == 0
    assert delivery_process_count(FederationConfig(delivery_processes=3)) == 3
    assert 1 <= delivery_process_count(FederationConfig(delivery_processes="auto")) <= max(1, os.cpu_count() or 1)


def test_concurrency_shares_and_cpu_lists() -> None:
    assert shares(64, 2) == [32, 32]
    assert shares(64, 3) == [22, 21, 21]
    assert shares(1, 2) == [1, 1]  # every process can send something
    assert parse_cpus("0,2-3") == {0, 2, 3}
    for bad in ("", "x", "3-1", "-1"):
        with pytest.raises(ValueError):
            parse_cpus(bad)


# ------------------------------------------------------------------ helpers


def process_state(pid: int) -> str | None:
    """The state letter of a process (R, S, Z, ...), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def alive(pid: int) -> bool:
    return process_state(pid) not in (None, "Z", "X")


def delivery_children(parent: int) -> list[int]:
    """Running `python -m outbox.delivery_process` processes whose parent is `parent`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent and MODULE.encode() in argv and alive(int(entry)):
            found.append(int(entry))
    return sorted(found)


async def api_post(inst: FediProcess, username: str, password: str, text: str) -> str:
    """POST /api/v1/statuses with a password-grant token: the server process itself queues the deliveries."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.post(f"{inst.base}/api/v1/apps", data={
            "client_name": "t", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob", "scopes": "read write",
        }) as resp:
            assert resp.status == 200, await resp.text()
            app = await resp.json()
        async with session.post(f"{inst.base}/oauth/token", data={
            "grant_type": "password", "username": username, "password": password, "scope": "read write",
            "client_id": app["client_id"], "client_secret": app["client_secret"],
        }) as resp:
            assert resp.status == 200, await resp.text()
            token = (await resp.json())["access_token"]
        async with session.post(f"{inst.base}/api/v1/statuses", data={"status": text},
                                headers={"Authorization": f"Bearer {token}"}) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["uri"])


PASSWORD = "correct horse battery"


async def started(procs: FediProcesses, receivers: list[Receiver], **federation: Any) -> FediProcess:
    """An instance with alice followed from every receiver host, serving with its delivery processes."""
    inst = procs.add("a", federation=federation, oauth={"password_grant": True})
    inst.create_account("alice", password=PASSWORD)
    ((key_id, public_pem),) = inst.query(
        "SELECT public_key_id, public_key_pem FROM accounts WHERE domain IS NULL AND username = 'alice'"
    )
    for receiver in receivers:
        receiver.expect_key(key_id, public_pem)
        await receiver.start()
    add_remote_followers(inst, "alice", receivers)
    await asyncio.to_thread(inst.start)
    return inst


def delivery_states(inst: FediProcess) -> dict[str, int]:
    return {row[0]: row[1] for row in inst.query("SELECT state, count(*) FROM deliveries GROUP BY state")}


# ------------------------------------------------------------------ delivery


async def test_two_processes_deliver_each_post_once_per_inbox(procs: FediProcesses) -> None:
    receivers = [Receiver(delay=0.05) for _ in range(HOSTS)]
    try:
        inst = await started(procs, receivers, delivery_processes=2, delivery_per_host_concurrency=1)
        children = await wait_for_async(lambda: len(delivery_children(inst.pid)) == 2 and delivery_children(inst.pid),
                                        10, "two delivery processes", detail=inst.logs)

        def received() -> list[tuple[str, str]]:
            return [(activity, r.netloc) for r in receivers for activity in r.received]

        # Posts through the API: the server commits the rows and wakes the children over their pipes.
        t0 = time.monotonic()
        first = await api_post(inst, "alice", PASSWORD, "through the API")
        await wait_for_async(lambda: len(received()) == HOSTS, 10, "the first post at every host",
                             interval=0.01, detail=inst.logs)
        first_latency = time.monotonic() - t0
        uris = [first] + [await api_post(inst, "alice", PASSWORD, f"post {n}") for n in range(5)]
        # ... and through the CLI (another process): the children find those rows by polling.
        uris.append(inst.ok("post", "alice", "from the command line").strip())
        expected = {(uri + "/activity", r.netloc) for uri in uris for r in receivers}
        await wait_for_async(lambda: set(received()) == expected, 20, "every post at every host",
                             detail=lambda: f"{len(received())} of {len(expected)}; {delivery_states(inst)}\n"
                                            f"{inst.logs()}")
        await wait_for_async(lambda: delivery_states(inst) == {"delivered": len(expected)}, 10,
                             "every delivery recorded", detail=lambda: str(delivery_states(inst)))
        got = received()
        assert not [r.rejected for r in receivers if r.rejected]
        assert Counter(got).most_common(1)[0][1] == 1, "a delivery arrived twice"
        assert len(got) == len(expected)
        # the per-host limit (1) held across both processes
        assert max(r.max_in_flight for r in receivers) == 1, [r.max_in_flight for r in receivers]
        assert delivery_children(inst.pid) == children, "a delivery process died or was replaced"
        assert first_latency < 3.0, f"the first post took {first_latency:.2f} s: were the children woken?"
        assert inst.stop() == 0
    finally:
        for receiver in receivers:
            await receiver.stop()


async def test_sigterm_stops_the_delivery_processes(procs: FediProcesses) -> None:
    inst = procs.add("a", federation={"delivery_processes": 2})
    await asyncio.to_thread(inst.start)
    children = wait_for(lambda: len(delivery_children(inst.pid)) == 2 and delivery_children(inst.pid), 10,
                        "two delivery processes", detail=inst.logs)
    assert inst.stop() == 0
    wait_for(lambda: not any(alive(pid) for pid in children), 5, "the children to exit with the server",
             detail=inst.logs)


async def test_children_exit_by_themselves_after_sigkill_of_the_server(procs: FediProcesses) -> None:
    inst = procs.add("a", federation={"delivery_processes": 2})
    await asyncio.to_thread(inst.start)
    children = wait_for(lambda: len(delivery_children(inst.pid)) == 2 and delivery_children(inst.pid), 10,
                        "two delivery processes", detail=inst.logs)
    inst.kill()
    t0 = time.monotonic()
    wait_for(lambda: not any(alive(pid) for pid in children), 5, "orphaned children to exit",
             interval=0.05, detail=inst.logs)
    print(f"\norphans exited {time.monotonic() - t0:.2f} s after SIGKILL of the server")


async def test_a_dead_child_is_restarted(procs: FediProcesses) -> None:
    inst = procs.add("a", federation={"delivery_processes": 1})
    await asyncio.to_thread(inst.start)
    (child,) = wait_for(lambda: delivery_children(inst.pid), 10, "the delivery process", detail=inst.logs)
    os.kill(child, signal.SIGKILL)
    (again,) = wait_for(lambda: [p for p in delivery_children(inst.pid) if p != child], 10,
                        "a new delivery process", detail=inst.logs)
    assert alive(again) and not alive(child)
    assert inst.stop() == 0
    wait_for(lambda: not alive(again), 5, "the new child to exit with the server")


async def test_zero_delivers_inside_the_server(procs: FediProcesses) -> None:
    receivers = [Receiver() for _ in range(2)]
    try:
        inst = await started(procs, receivers, delivery_processes=0)
        assert delivery_children(inst.pid) == []
        uri = await api_post(inst, "alice", PASSWORD, "no children")
        await wait_for_async(lambda: all(r.received == [uri + "/activity"] for r in receivers), 10,
                             "the post at both hosts", detail=inst.logs)
        assert delivery_children(inst.pid) == []
    finally:
        for receiver in receivers:
            await receiver.stop()


# ------------------------------------------------------------------ the child's database


async def test_child_writes_wait_for_the_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    from fedi.db import Database
    from outbox.delivery_process import SyncDatabase

    path = str(tmp_path / "db.sqlite3")
    await (await Database.open(path)).close()  # migrated, as the server leaves it
    db = SyncDatabase(path)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process is writing
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        async def write() -> Any:
            async with db.write() as tx:
                await tx.execute("INSERT INTO settings (key, value) VALUES ('child', 'wrote')")
                return await tx.fetchone("SELECT value FROM settings WHERE key = 'child'")

        tick = asyncio.create_task(ticker())
        pending = asyncio.create_task(write())
        await asyncio.sleep(0.2)
        assert not pending.done() and ticks >= 10, "the write did not wait, or blocked the loop"
        other.execute("COMMIT")
        row = await asyncio.wait_for(pending, 5)
        assert row["value"] == "wrote"
        assert await db.fetchval("SELECT value FROM settings WHERE key = 'child'") == "wrote"
        with pytest.raises(RuntimeError):  # a failed transaction is rolled back
            async with db.write() as tx:
                await tx.execute("INSERT INTO settings (key, value) VALUES ('gone', 'x')")
                raise RuntimeError
        assert await db.fetchone("SELECT 1 FROM settings WHERE key = 'gone'") is None
        tick.cancel()
    finally:
        other.close()
        await db.close()


# ------------------------------------------------------------------ leasing


async def test_lease_looks_past_a_window_of_hosts_at_their_limit(network: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The windowed lease falls back to every due row when its window holds only hosts at their limit."""
    import outbox.delivery
    from fedi.app import DELIVERY_WORKER

    monkeypatch.setattr(outbox.delivery, "SCAN_MIN", 1)
    monkeypatch.setattr(outbox.delivery, "SCAN_FACTOR", 1)  # window = the rows wanted
    inst = await network.add("alpha.test", federation={"delivery_per_host_concurrency": 2})
    worker = inst.app[DELIVERY_WORKER]
    now = time.time()
    worker.clock = lambda: now
    async with inst.ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO outbox_activities (id, uri, account_id, type, body, created_at) VALUES (1, 'x', ?, 'Create', '{}', ?)",
            (inst.ctx.instance_actor_id, now),
        )
        rows = [(f"http://slow.test/u{i}/inbox", "slow.test", now - 10 + i) for i in range(6)]
        rows += [(f"http://fast.test/u{i}/inbox", "fast.test", now - 1) for i in range(2)]
        await tx.executemany(
            "INSERT INTO deliveries (activity_id, inbox_url, host, state, next_attempt_at, created_at, updated_at)"
            " VALUES (1, ?, ?, 'pending', ?, ?, ?)", [(url, host, at, now, now) for url, host, at in rows],
        )

    def hosts(leased: list[Any]) -> list[str]:
        return sorted(row.host for row in leased)

    # the 4 oldest rows are all slow.test's, and only 2 of them may go: the fast ones are found past the window
    assert hosts(await worker._lease(4)) == ["fast.test", "fast.test", "slow.test", "slow.test"]
    assert await worker._lease(4) == []  # both hosts are at their limit now
    async with inst.ctx.db.write() as tx:  # fast.test's two finished
        await tx.execute("UPDATE deliveries SET state = 'delivered', locked_until = 0 WHERE host = 'fast.test'")
        await tx.executemany(
            "INSERT INTO deliveries (activity_id, inbox_url, host, state, next_attempt_at, created_at, updated_at)"
            " VALUES (1, ?, 'fast.test', 'pending', ?, ?, ?)", [(f"http://fast.test/v{i}/inbox", now - 1, now, now)
                                                                for i in range(3)],
        )
    # nothing in the window may go at all (slow.test has 2 in flight): still found
    assert hosts(await worker._lease(4)) == ["fast.test", "fast.test"]
