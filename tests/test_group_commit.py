"""Group commit through the single writer (fedi/db.py `submit`/`enqueue`), and its use by the inbox.

What must hold: a submitter learns its result only after the COMMIT that holds its
statements (durability: the inbox answers 202 after that); statements queued while a
commit runs go together in the next one (natural groups, no timer); a bad statement
fails only its own submitter; ids stay unique with `Database.write` and across processes;
duplicates of an inbox activity are answered 202 and store nothing new.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from actors.local import get_local_account
from actors.remote import get_actor
from fedi.db import CHECKPOINT_ROWS, NEW_ID, Database
from fedi.jsonutil import JsonError, loads_strict
from fedi.origin import _general, origin
from inbox.worker import InboxWorker
from outbox import actions
from outbox.queue import host_seen
from tests.harness import Instance, Network
from tests.peer import PeerActor, body_of, send

INSERT = (
    "INSERT OR IGNORE INTO inbox_activities (id, activity_id, actor_uri, signer_key_id, type, body, received_at)"
    " VALUES (?, ?, 'https://a.test/u', 'https://a.test/u#k', 'Create', '{}', 0)"
)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(str(tmp_path / "fedi.sqlite3"))
    yield database
    await database.close()


def _outside(path: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """What another connection (another process) sees: only committed data."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def test_concurrent_submissions_share_commits_and_are_durable_when_answered(db: Database) -> None:
    seen_committed: list[bool] = []

    async def one(i: int) -> None:
        assert await db.submit(INSERT, (NEW_ID, f"https://a.test/a/{i}")) == 1
        # answered only after COMMIT: another connection already sees the row
        rows = await asyncio.to_thread(_outside, db.path, "SELECT 1 FROM inbox_activities WHERE activity_id = ?",
                                       (f"https://a.test/a/{i}",))
        seen_committed.append(bool(rows))

    await asyncio.gather(*(one(i) for i in range(200)))
    assert all(seen_committed) and len(seen_committed) == 200
    assert await db.fetchval("SELECT count(*) FROM inbox_activities") == 200
    assert db.group_submissions == 200
    assert db.group_commits < 50, "submissions queued during a commit must share the next one"


async def test_a_lone_submission_commits_at_once(db: Database) -> None:
    started = asyncio.get_running_loop().time()
    await db.submit(INSERT, (NEW_ID, "https://a.test/a/lone"))
    assert asyncio.get_running_loop().time() - started < 1.0  # no timer to wait for
    assert db.group_commits == 1


async def test_duplicate_insert_reports_zero_rows_and_stores_nothing(db: Database) -> None:
    assert await db.submit(INSERT, (NEW_ID, "https://a.test/a/dup")) == 1
    first = await db.fetchone("SELECT * FROM inbox_activities")
    counts = await asyncio.gather(*(db.submit(INSERT, (NEW_ID, "https://a.test/a/dup")) for _ in range(5)))
    assert counts == [0] * 5
    assert [tuple(r) for r in await db.fetchall("SELECT * FROM inbox_activities")] == [tuple(first)]


async def test_ids_are_unique_with_write_transactions_and_other_processes(db: Database) -> None:
    async def via_write(i: int) -> int:
        async with db.write() as tx:
            new = tx.new_id()
            await tx.execute(INSERT, (new, f"https://a.test/w/{i}"))
            return new

    await asyncio.gather(*(db.submit(INSERT, (NEW_ID, f"https://a.test/s/{i}")) for i in range(50)),
                         *(via_write(i) for i in range(20)))
    ids = [r[0] for r in await db.fetchall("SELECT id FROM inbox_activities")]
    assert len(ids) == len(set(ids)) == 70
    assert int(await db.fetchval("SELECT value FROM settings WHERE key = 'last_id'")) == max(ids)

    # Another process (the CLI) minted a higher id meanwhile: the next group must go above it.
    far = max(ids) + 10**9
    await asyncio.to_thread(_outside_write, db.path, far)
    await db.submit(INSERT, (NEW_ID, "https://a.test/s/after"))
    assert await db.fetchval("SELECT id FROM inbox_activities WHERE activity_id = 'https://a.test/s/after'") > far


def _outside_write(path: str, last_id: int) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('last_id', ?)", (str(last_id),))
    finally:
        conn.close()


async def test_a_failing_statement_fails_only_its_submitter(db: Database) -> None:
    good = [db.enqueue([(INSERT, (NEW_ID, f"https://a.test/ok/{i}"))]) for i in range(3)]
    bad = db.enqueue([("INSERT INTO inbox_activities (id) VALUES (?)", (NEW_ID,))])  # NOT NULL violations
    # several statements are all or nothing: the first must not stay when the second fails
    pair = db.enqueue([(INSERT, (NEW_ID, "https://a.test/pair/1")), ("INSERT INTO no_such_table VALUES (1)", ())])
    results = await asyncio.gather(*good, bad, pair, return_exceptions=True)
    assert results[:3] == [[1], [1], [1]]
    assert isinstance(results[3], sqlite3.IntegrityError)
    assert isinstance(results[4], sqlite3.OperationalError)
    rows = {r[0] for r in await db.fetchall("SELECT activity_id FROM inbox_activities")}
    assert rows == {f"https://a.test/ok/{i}" for i in range(3)}
    assert db.group_commits == 1


async def test_after_commit_runs_once_per_group_after_the_commit(db: Database) -> None:
    calls: list[int] = []

    def wake() -> None:
        calls.append(len(_outside(db.path, "SELECT 1 FROM inbox_activities")))

    await asyncio.gather(*(db.submit(INSERT, (NEW_ID, f"https://a.test/c/{i}"), after_commit=wake) for i in range(10)))
    assert calls == [10]  # one group, one call, and the rows were already committed


async def test_submissions_wait_for_an_open_write_transaction(db: Database) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()

    async def long_write() -> None:
        async with db.write() as tx:
            await tx.execute(INSERT, (tx.new_id(), "https://a.test/long"))
            inside.set()
            await release.wait()

    writer = asyncio.create_task(long_write())
    await inside.wait()
    pending = asyncio.ensure_future(db.submit(INSERT, (NEW_ID, "https://a.test/queued")))
    await asyncio.sleep(0.05)
    assert not pending.done()  # same lock, same connection: it waits its turn
    release.set()
    await writer
    assert await pending == 1
    assert await db.fetchval("SELECT count(*) FROM inbox_activities") == 2


async def test_another_process_holding_the_lock_does_not_stop_the_loop(db: Database) -> None:
    """The writer runs on the event loop: while another connection (the CLI, a delivery process)
    holds SQLite's write lock, our writes wait without blocking the loop, then go through."""
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    ticking = asyncio.create_task(ticker())
    try:
        queued = asyncio.ensure_future(db.submit(INSERT, (NEW_ID, "https://a.test/after-the-lock")))

        async def write() -> None:
            async with db.write() as tx:
                await tx.execute(INSERT, (tx.new_id(), "https://a.test/tx-after-the-lock"))

        writing = asyncio.ensure_future(write())
        await asyncio.sleep(0.3)
        assert not queued.done() and not writing.done()
        assert ticks >= 20  # the loop kept turning while both waited for the lock
        other.execute("COMMIT")
        assert await asyncio.wait_for(queued, 5) == 1
        await asyncio.wait_for(writing, 5)
    finally:
        ticking.cancel()
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()
    assert _outside(db.path, "SELECT count(*) FROM inbox_activities") == [(2,)]


async def test_checkpoints_run_off_the_loop_as_the_log_grows(db: Database) -> None:
    for i in range(CHECKPOINT_ROWS + 10):
        await db.submit(INSERT, (NEW_ID, f"https://a.test/many/{i}"))
    assert db._checkpointing is not None  # started by a commit, run on the reader's thread
    await db._checkpointing
    busy, frames, done = _outside(db.path, "PRAGMA wal_checkpoint(PASSIVE)")[0]
    assert busy == 0 and frames == done  # nothing left that a checkpoint could not copy


async def test_close_commits_what_is_queued(tmp_path: Path) -> None:
    path = str(tmp_path / "closing.sqlite3")
    database = await Database.open(path)
    futures = [database.enqueue([(INSERT, (NEW_ID, f"https://a.test/q/{i}"))]) for i in range(5)]
    await database.close()
    assert all(f.done() and f.result() == [1] for f in futures)
    assert _outside(path, "SELECT count(*) FROM inbox_activities") == [(5,)]
    with pytest.raises(RuntimeError):
        database.enqueue([(INSERT, (NEW_ID, "https://a.test/late"))])


# ------------------------------------------------------------------ the inbox on top of it
# `alpha` (alice on alpha.test) and `mallory` (a scripted peer's actor) come from conftest.


async def test_inbox_duplicates_answer_202_and_store_nothing_new(alpha: Instance, mallory: PeerActor) -> None:
    act = mallory.create("<p>once</p>")
    body = body_of(act)
    alpha.ctx.inbox_wakeup.clear()  # the harness runs no workers: nothing else clears it
    replies = await asyncio.gather(*(
        send(alpha, "/inbox", body, mallory.signed_headers(alpha, "/inbox", body)) for _ in range(4)))
    assert [r.status for r in replies] == [202] * 4
    assert alpha.ctx.inbox_wakeup.is_set()  # after_commit woke the inbox worker
    await alpha.drain()
    rows = await alpha.ctx.db.fetchall("SELECT state FROM inbox_activities WHERE activity_id = ?", (act["id"],))
    assert [r["state"] for r in rows] == ["processed"]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE uri = ?", (act["object"]["id"],)) == 1
    # and once more after it was applied: still 202, still one row
    again = await send(alpha, "/inbox", body, mallory.signed_headers(alpha, "/inbox", body))
    assert again.status == 202
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM inbox_activities") == 1


async def test_running_inbox_worker_is_woken_by_the_commit_not_its_poll(
    network: Network, mallory: PeerActor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(InboxWorker, "interval", 60.0)  # idle passes a minute apart: only the wake-up is in time
    alpha = await network.add("alpha.test", workers=True)
    act = mallory.create("<p>wake up</p>")
    assert (await mallory.post(alpha, act, "/inbox")).status == 202
    async with asyncio.timeout(10):
        while await alpha.ctx.db.fetchval(
                "SELECT state FROM inbox_activities WHERE activity_id = ?", (act["id"],)) != "processed":
            await asyncio.sleep(0.02)
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE uri = ?", (act["object"]["id"],)) == 1


async def test_inbox_repeat_of_an_answered_reject_is_still_202(alpha: Instance, mallory: PeerActor) -> None:
    """A retried Reject whose follow is gone by now fails the ownership check; as a repeat it is 202."""
    alice = await get_local_account(alpha.ctx.db, "alice")
    assert alice is not None
    assert await actions.follow(alpha.ctx, alice, await get_actor(alpha.ctx, mallory.id)) == "requested"
    await alpha.drain()
    follow_uri = await alpha.ctx.db.fetchval("SELECT uri FROM follows")
    reject = mallory.activity(
        "Reject", {"id": follow_uri, "type": "Follow", "actor": alice["uri"], "object": mallory.id})
    assert (await mallory.post(alpha, reject)).status == 202
    await alpha.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
    assert (await mallory.post(alpha, reject)).status == 202
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM inbox_activities WHERE activity_id = ?", (reject["id"],)) == 1


# ------------------------------------------------------------------ cheap per-request checks


async def test_host_seen_reads_the_troubled_hosts_at_most_every_few_seconds(alpha: Instance) -> None:
    db = alpha.ctx.db
    t0 = 1_000_000.0
    assert not await host_seen(alpha.ctx, "down.test", now=t0)  # loads the (empty) list
    async with db.write() as tx:
        await tx.execute("INSERT INTO hosts (host, failures, first_failure_at, unavailable_since) VALUES"
                         " ('down.test', 3, ?, ?)", (t0 - 10, t0 - 5))
    assert not await host_seen(alpha.ctx, "down.test", now=t0 + 1)  # still the cached list: no query
    assert await host_seen(alpha.ctx, "down.test", now=t0 + 10)  # re-read: released
    row = await db.fetchone("SELECT failures, unavailable_since FROM hosts WHERE host = 'down.test'")
    assert tuple(row) == (0, None)
    assert not await host_seen(alpha.ctx, "down.test", now=t0 + 11)


def test_origin_fast_path_agrees_with_the_general_parser() -> None:
    urls = [
        "https://a.test/u/1", "http://a.test", "https://a.test?x", "https://a.test#f", "https://a-b.c0.test/x y",
        "https://A.test/", "HTTPS://a.test/", "https://a.test./", "https://a..test/", "https://a.test:443/",
        "https://user@a.test/", "https://a.test\\@b.test/", "https://a.test/\u00a0", "https://é.test/",
        "https://" + "a" * 63 + ".test/", "https://" + "a" * 64 + ".test/", "https://a.test/p@b", "ftp://a.test/",
        "https://a.test\t/", "https://[::1]/", "https://a_b.test/", "https://a.test:99999/",
    ]
    for url in urls:
        assert origin(url) == _general(url), url


@pytest.mark.parametrize("text", [
    b'{"a":1,"a":2}', b'{"x":"\\u0022\\u0022","a":1,"a":2}', b'{"a":"\\\\","b":{"c":"\\"","c":1}}',
    b'{"a" :1 , "a":2}', b'[{"k":"v"},{"k":"v","k":"w"}]', '{"\\u0061":1,"a":2}',
])
def test_loads_strict_refuses_every_duplicate_key(text: bytes | str) -> None:
    with pytest.raises(JsonError, match="duplicate key"):
        loads_strict(text)


@pytest.mark.parametrize("text", [
    b'{"a":"\\"","b":"\\\\","c":"\\\\\\"","d":["\\"\\"",{"a":"x"}]}', b'"just a string"', b"[]", b"{}",
    '{"a": "\u00e9\\"", "b": {"a": 1}}',
])
def test_loads_strict_accepts_escapes_without_duplicates(text: bytes | str) -> None:
    loads_strict(text)


def test_loads_strict_deep_nesting_is_a_json_error_not_a_crash() -> None:
    for depth in (950, 1000, 5000):
        with pytest.raises(JsonError):
            loads_strict(b"[" * depth + b"]" * depth)
    assert loads_strict(b"[" * 500 + b"]" * 500)
