"""SQLite storage: one writer connection, one reader connection, WAL mode.

SQLite allows a single writer at a time; funnelling every write through one
connection guarded by an asyncio lock avoids `database is locked` errors and
keeps transactions short. Readers use their own connection so timelines are
never stuck behind a write (WAL gives them a consistent snapshot).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite

from fedi.events import EventBus
from fedi.ids import IdGenerator
from fedi.schema import MIGRATIONS

Row = sqlite3.Row
Params = Sequence[Any] | dict[str, Any]


class Tx:
    """An open write transaction; every statement runs on the writer connection."""

    def __init__(self, conn: aiosqlite.Connection, ids: IdGenerator, events: EventBus) -> None:
        self._conn = conn
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

    async def execute(self, sql: str, params: Params = ()) -> aiosqlite.Cursor:
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._conn.execute_fetchall(sql, params)
        return next(iter(rows), None)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return list(await self._conn.execute_fetchall(sql, params))


async def _connect(path: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute("PRAGMA synchronous=NORMAL")
    await conn.execute("PRAGMA foreign_keys=ON")
    await conn.execute("PRAGMA busy_timeout=5000")
    await conn.execute("PRAGMA cache_size=-32768")  # 32 MiB page cache per connection
    return conn


class Database:
    """The instance's database; create with `await Database.open(path)`."""

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self.path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self.ids = IdGenerator()
        self.events = EventBus()

    @classmethod
    async def open(cls, path: str) -> "Database":
        writer = await _connect(path)
        await _migrate(writer)
        reader = await _connect(path)
        return cls(path, writer, reader)

    async def close(self) -> None:
        await self._reader.close()
        await self._writer.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Tx]:
        """A transaction on the single writer; commits on success, rolls back on error.

        The CLI and the server may write to one file at once, so the last id minted
        is kept in `settings` and read under the write lock: ids stay unique across
        processes, not just within one.
        """
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            tx = Tx(self._writer, self.ids, self.events)
            try:
                row = next(iter(await self._writer.execute_fetchall("SELECT value FROM settings WHERE key = 'last_id'")), None)
                if row is not None:
                    self.ids.observe(int(row[0]))
                yield tx
                if tx.minted:
                    await self._writer.execute(
                        "INSERT OR REPLACE INTO settings (key, value) VALUES ('last_id', ?)", (str(self.ids.last),)
                    )
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")
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


async def _migrate(conn: aiosqlite.Connection) -> None:
    """Apply every migration newer than the database's `user_version`."""
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = row[0] if row else 0
    for number, script in enumerate(MIGRATIONS, start=1):
        if number <= version:
            continue
        await conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
