"""SQLite storage: one writer connection, one reader connection, WAL mode.

SQLite allows a single writer at a time; funnelling every write through one
connection guarded by an asyncio lock avoids `database is locked` errors and
keeps transactions short. Readers use their own connection (aiosqlite, in its
thread) so timelines are never stuck behind a write (WAL gives them a
consistent snapshot).

The writer is a plain sqlite3 connection used on the event-loop thread: a
statement costs a few µs instead of a 25–50 µs round trip to a thread (an
applied Create runs a dozen of them). It never blocks the loop waiting for
another process (the CLI, the delivery processes): BEGIN IMMEDIATE is tried
without a busy timeout and retried after short async sleeps. WAL checkpoints,
which copy pages and fsync, run on the reader's thread instead of at COMMIT.

Two ways to write, on the same lock and connection:

* `Database.write()` — a transaction the caller drives statement by statement
  (reads, decisions, several writes); a long one lets the loop serve other
  requests every few dozen statements.
* `Database.submit()` / `enqueue()` — small, self-contained statements (the inbox
  INSERT, a worker's state update) committed in *natural groups*: one committer
  task writes everything that queued while the previous commit ran in a single
  transaction, and each submitter learns its row counts only after that COMMIT
  (so a 202 still means "on disk"). No timer: an idle server commits a lone
  submission at once; a busy one commits bigger groups (PERFORMANCE.md: "never
  one commit per request, never a timer").
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from fedi.events import EventBus
from fedi.ids import IdGenerator
from fedi.schema import MIGRATIONS

log = logging.getLogger("fedi.db")

Row = sqlite3.Row
Params = Sequence[Any] | dict[str, Any]
Statement = tuple[str, Params]


class _NewId:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NEW_ID"


#: In `submit`/`enqueue` parameters (sequences only): replaced by a fresh id minted
#: inside the group's transaction, under the cross-process rule of `Database.write`.
NEW_ID: Any = _NewId()

#: Most submissions one group transaction takes; the rest go in the next group.
MAX_GROUP = 1000


class _Submission:
    __slots__ = ("statements", "future", "after_commit", "mints")

    def __init__(self, statements: list[Statement], future: "asyncio.Future[list[int]]",
                 after_commit: Callable[[], Any] | None) -> None:
        self.statements = statements
        self.future = future
        self.after_commit = after_commit
        # `in` compares by identity first, and no parameter type equals the sentinel.
        self.mints = any(not isinstance(params, dict) and NEW_ID in params for _, params in statements)


def _run_group(conn: sqlite3.Connection, ids: IdGenerator, group: list[_Submission]) -> list[Any]:
    """The statements of one group transaction (already begun), then COMMIT.

    Returns, per submission, its row counts or the sqlite3.Error that refused it. A
    submission of several statements runs inside a savepoint, so it is applied whole
    or not at all; a statement that fails leaves the others' work in place (SQLite
    undoes only the failed statement). An error that ends the transaction itself
    raises, and the whole group fails. Runs while the caller holds the write lock,
    which is what makes touching `ids` from this thread safe.
    """
    results: list[Any] = []
    try:
        minted = False
        if any(s.mints for s in group):
            row = conn.execute("SELECT value FROM settings WHERE key = 'last_id'").fetchone()
            if row is not None:
                ids.observe(int(row[0]))
        for sub in group:
            several = len(sub.statements) > 1
            if several:
                conn.execute("SAVEPOINT fedi_submission")
            try:
                counts = []
                for sql, params in sub.statements:
                    if sub.mints and not isinstance(params, dict):
                        params = [ids.next() if p is NEW_ID else p for p in params]
                        minted = True
                    counts.append(conn.execute(sql, params).rowcount)
            except sqlite3.Error as exc:
                if not conn.in_transaction:
                    raise
                if several:
                    conn.execute("ROLLBACK TO fedi_submission")
                    conn.execute("RELEASE fedi_submission")
                results.append(exc)
                continue
            if several:
                conn.execute("RELEASE fedi_submission")
            results.append(counts)
        if minted:
            conn.execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('last_id', ?)", (str(ids.last),))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return results


#: A long transaction lets the event loop serve other requests every this many statements.
_YIELD_EVERY = 64


class Tx:
    """An open write transaction on the writer connection, run on the event-loop thread.

    Statements are plain sqlite3 calls (a few µs each, no hand-off to a thread); every
    `_YIELD_EVERY` statements the loop gets a turn, so a bulk import keeps the lock but
    not the whole server.
    """

    def __init__(self, conn: sqlite3.Connection, ids: IdGenerator, events: EventBus) -> None:
        self._conn = conn
        self._statements = 0
        self._ids = ids
        self._events = events
        self.minted = False
        #: Callbacks run after a successful commit (e.g. waking a worker).
        self.after_commit: list[Any] = []

    def new_id(self, at_ms: int | None = None) -> int:
        self.minted = True
        return self._ids.next(at_ms)

    def publish(self, kind: str, **data: Any) -> None:
        """Announce an event to live listeners once this transaction has committed."""
        self.after_commit.append(lambda: self._events.publish(kind, **data))

    async def _turn(self) -> None:
        self._statements += 1
        if self._statements % _YIELD_EVERY == 0:
            await asyncio.sleep(0)

    async def execute(self, sql: str, params: Params = ()) -> sqlite3.Cursor:
        await self._turn()
        return self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._turn()
        self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        await self._turn()
        row: Row | None = self._conn.execute(sql, params).fetchone()
        return row

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        await self._turn()
        return self._conn.execute(sql, params).fetchall()

    async def fetchrow(self, sql: str, params: Params = ()) -> Row:
        """A row the caller knows is there (just written in this transaction); LookupError if not."""
        return _present(await self.fetchone(sql, params), sql)


def _present(row: Row | None, sql: str) -> Row:
    if row is None:
        raise LookupError(f"expected a row from: {sql[:80]}")
    return row


_PRAGMAS = ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON",
            "cache_size=-32768")  # 32 MiB page cache per connection


async def _connect_reader(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    for pragma in (*_PRAGMAS, "busy_timeout=5000"):
        await conn.execute(f"PRAGMA {pragma}")
    return conn


def _connect_writer(path: str) -> sqlite3.Connection:
    """The writer, used on the event-loop thread: it never waits inside SQLite for another
    process's lock (busy_timeout 0, `_begin` retries asynchronously), and leaves WAL
    checkpoints to `Database._checkpoint`, which runs them on the reader's thread."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    for pragma in (*_PRAGMAS, "busy_timeout=0", "wal_autocheckpoint=0"):
        conn.execute(f"PRAGMA {pragma}")
    return conn


#: How long `_begin` keeps retrying while another process holds SQLite's write lock.
WRITE_LOCK_SECONDS = 5.0
#: Rows changed after which a commit asks for a checkpoint (about SQLite's own 1,000-page threshold).
CHECKPOINT_ROWS = 1000


async def _begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE without blocking the loop: on a lock held elsewhere, sleep and retry."""
    deadline = asyncio.get_running_loop().time() + WRITE_LOCK_SECONDS
    pause = 0.0005
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            text = str(exc)
            if ("locked" not in text and "busy" not in text) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.01)


class Database:
    """The instance's database; create with `await Database.open(path)`."""

    def __init__(self, path: str, writer: sqlite3.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._changes_at_checkpoint = 0  # the writer's total_changes when the last checkpoint started
        self._checkpointing: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.ids = IdGenerator()
        self.events = EventBus()
        # Group commit: submissions waiting for the committer task (see `enqueue`).
        self._queue: list[_Submission] = []
        self._queued: asyncio.Event | None = None
        self._committer: asyncio.Task[None] | None = None
        self._committer_loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        #: Group commits made and submissions they carried (for tests and benchmarks).
        self.group_commits = 0
        self.group_submissions = 0

    @classmethod
    async def open(cls, path: str) -> "Database":
        writer = _connect_writer(path)
        await _migrate(writer)
        reader = await _connect_reader(path)
        return cls(path, writer, reader)

    async def close(self) -> None:
        """Commit what is still queued for group commit, then close both connections."""
        self._closing = True
        task = self._committer
        if task is not None and not task.done() and self._committer_loop is asyncio.get_running_loop():
            assert self._queued is not None
            self._queued.set()
            await task
        self._fail_queued(RuntimeError("database closed"))
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        await self._reader.close()
        self._writer.close()

    def _committed(self) -> None:
        """After each commit: once CHECKPOINT_ROWS rows changed since the last checkpoint, run one on
        the reader's thread (PASSIVE: it copies what no reader still needs and waits for nobody), so
        the loop never copies pages nor waits for fsync."""
        if self._writer.total_changes - self._changes_at_checkpoint < CHECKPOINT_ROWS:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._changes_at_checkpoint = self._writer.total_changes
        self._checkpointing = asyncio.get_running_loop().create_task(self._checkpoint(), name="fedi-db-checkpoint")

    async def _checkpoint(self) -> None:
        try:
            await self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint failed: %s", exc)

    # ------------------------------------------------------------ group commit

    def enqueue(self, statements: Iterable[Statement], *,
                after_commit: Callable[[], Any] | None = None) -> "asyncio.Future[list[int]]":
        """Queue statements for the next group commit; the future gives their row counts.

        The future resolves only after the group transaction holding these statements
        has committed (or fails with the statement's `sqlite3.Error`, having changed
        nothing; several statements are applied all or none). `NEW_ID` in a parameter
        sequence becomes a fresh id. `after_commit` runs once per group even if several
        submissions name it. Cancelling the future does not withdraw the statements.
        """
        loop = asyncio.get_running_loop()
        if self._closing:
            raise RuntimeError("database closed")
        future: asyncio.Future[list[int]] = loop.create_future()
        self._queue.append(_Submission(list(statements), future, after_commit))
        if self._committer is None or self._committer.done() or self._committer_loop is not loop:
            self._queued = asyncio.Event()
            self._committer_loop = loop
            self._committer = loop.create_task(self._commit_loop(), name="fedi-db-group-commit")
        assert self._queued is not None
        self._queued.set()
        return future

    async def submit(self, sql: str, params: Params = (), *,
                     after_commit: Callable[[], Any] | None = None) -> int:
        """One statement through group commit; its row count once committed."""
        return (await self.enqueue([(sql, params)], after_commit=after_commit))[0]

    async def submit_many(self, statements: Iterable[Statement], *,
                          after_commit: Callable[[], Any] | None = None) -> list[int]:
        """Several statements through group commit, applied together or not at all."""
        return await self.enqueue(statements, after_commit=after_commit)

    async def _commit_loop(self) -> None:
        queued = self._queued
        assert queued is not None
        while True:
            if not self._queue:
                if self._closing:
                    return
                queued.clear()
                await queued.wait()
                continue
            group, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            try:
                async with self._lock:
                    await _begin(self._writer)
                    results = _run_group(self._writer, self.ids, group)
                self._committed()
            except BaseException as exc:  # the group's transaction failed (or we were cancelled)
                failure = exc if isinstance(exc, Exception) else RuntimeError("group commit interrupted")
                for sub in group:
                    if not sub.future.done():
                        sub.future.set_exception(failure)
                if failure is not exc:
                    self._fail_queued(failure)
                    raise
                log.warning("group commit of %d submissions failed: %s", len(group), exc)
                continue
            self.group_commits += 1
            self.group_submissions += len(group)
            callbacks: dict[Callable[[], Any], None] = {}
            for sub, result in zip(group, results):
                if isinstance(result, BaseException):
                    if not sub.future.done():
                        sub.future.set_exception(result)
                    continue
                if not sub.future.done():
                    sub.future.set_result(result)
                if sub.after_commit is not None:
                    callbacks[sub.after_commit] = None
            for callback in callbacks:
                try:
                    callback()
                except Exception:
                    log.exception("after-commit callback failed")

    def _fail_queued(self, exc: Exception) -> None:
        queue, self._queue = self._queue, []
        for sub in queue:
            if not sub.future.done():
                sub.future.set_exception(exc)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A transaction on the single writer; commits on success, rolls back on error.

        The CLI and the server may write to one file at once, so the last id minted
        is kept in `settings` and read under the write lock: ids stay unique across
        processes, not just within one.
        """
        async with self._lock:
            await _begin(self._writer)
            tx = Tx(self._writer, self.ids, self.events)
            try:
                row = self._writer.execute("SELECT value FROM settings WHERE key = 'last_id'").fetchone()
                if row is not None:
                    self.ids.observe(int(row[0]))
                yield tx
                if tx.minted:
                    self._writer.execute(
                        "INSERT OR REPLACE INTO settings (key, value) VALUES ('last_id', ?)", (str(self.ids.last),)
                    )
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
        self._committed()
        for callback in tx.after_commit:
            callback()

    # execute_fetchall is one hand-off to the connection's thread instead of three
    # (execute, fetch, close): ~28 µs per query instead of ~78 µs.
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._reader.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def fetchrow(self, sql: str, params: Params = ()) -> Row:
        """A row the caller knows is there (written before, or named by a foreign key); LookupError if not."""
        return _present(await self.fetchone(sql, params), sql)


async def _migrate(conn: sqlite3.Connection) -> None:
    """Apply every migration newer than the database's `user_version` (at start-up, before serving)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    version = row[0] if row else 0
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        for attempt in range(int(WRITE_LOCK_SECONDS / 0.01)):  # another process may hold the write lock
            try:
                conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
                break
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                await asyncio.sleep(0.01)
        else:
            raise sqlite3.OperationalError("database is locked: cannot migrate")
