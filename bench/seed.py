"""Fast bulk seeding of a fedi database with `sqlite3.executemany`.

The schema comes from fedi itself (`Database.open` runs the migrations), local
accounts that need a password and keys come from `create_local_account`;
everything bulky (remote accounts, follows, statuses, home_feed rows) is written
here in one transaction with `synchronous=OFF` and no rollback journal. Secondary
indexes of `statuses` are dropped during the load and rebuilt afterwards (a
sorted build is several times faster than a million random inserts). The file
is switched back to WAL at the end, so the server opens it exactly as usual.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

DAY_MS = 86_400_000


def init_db(path: Path) -> None:
    """Create the database through fedi's own migrations."""
    from fedi.db import Database

    async def go() -> None:
        db = await Database.open(str(path))
        await db.close()

    asyncio.run(go())


def create_users(path: Path, base: str, users: Iterable[tuple[str, str]]) -> dict[str, int]:
    """Local accounts through fedi's own code (scrypt password, RSA key pair); name -> account id."""
    from actors.local import create_local_account
    from fedi.db import Database

    async def go() -> dict[str, int]:
        db = await Database.open(str(path))
        try:
            return {name: await create_local_account(db, base, name, password) for name, password in users}
        finally:
            await db.close()

    return asyncio.run(go())


class Bulk:
    """One connection, one transaction, no journal; `close()` restores WAL."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None)
        c = self.conn
        c.execute("PRAGMA journal_mode=OFF")
        c.execute("PRAGMA synchronous=OFF")
        c.execute("PRAGMA cache_size=-1000000")
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA foreign_keys=OFF")
        c.execute("BEGIN")
        self._dropped: list[str] = []

    def many(self, sql: str, rows: Iterable[Any]) -> None:
        self.conn.executemany(sql, rows)

    def one(self, sql: str, params: Any = ()) -> Any:
        return self.conn.execute(sql, params).fetchall()

    def drop_indexes(self, table: str) -> None:
        """Drop the table's explicit indexes (their SQL is kept and replayed by `close`)."""
        rows = self.one("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
                        (table,))
        for name, sql in rows:
            self.conn.execute(f'DROP INDEX "{name}"')
            self._dropped.append(sql)

    def rebuild_indexes(self) -> None:
        for sql in self._dropped:
            self.conn.execute(sql)
        self._dropped.clear()

    def close(self) -> None:
        self.rebuild_indexes()
        self.conn.execute("COMMIT")
        # No ANALYZE: fedi never runs it, so its planner works without sqlite_stat1 and so must the
        # benchmark's (with statistics from this synthetic data, where no status is a reply or a
        # boost, SQLite would scan `statuses` for the reply and boost counts of a single status).
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.close()


class Ids:
    """fedi's id layout (ms << 16 | sequence), strictly increasing, for rows made at a given time."""

    def __init__(self) -> None:
        self.last = 0

    def at(self, ms: int) -> int:
        value = max(ms << 16, self.last + 1)
        self.last = value
        return value


def remote_accounts(bulk: Bulk, ids: Ids, n: int, host_of: Any, *, now: float, shared_inbox: Any = None,
                    key_of: Any = None, prefix: str = "u") -> list[int]:
    """n remote accounts (`host_of(i)` -> host[:port]); returns their ids in order."""
    now_ms = int(now * 1000) - DAY_MS
    out: list[int] = []
    rows = []
    for i in range(n):
        host = host_of(i)
        uri = f"http://{host}/users/{prefix}{i}"
        key_id, pem = key_of(i, uri) if key_of else (None, None)
        account_id = ids.at(now_ms)
        out.append(account_id)
        rows.append((
            account_id, f"{prefix}{i}", host, uri, uri, f"{uri}/inbox",
            shared_inbox(i, host) if shared_inbox else f"http://{host}/inbox",
            f"{uri}/outbox", f"{uri}/followers", f"{uri}/following", key_id, pem,
            f"{prefix.upper()} {i}", now - 86400 * 30, now, now,
        ))
    bulk.many(
        """INSERT INTO accounts (id, username, domain, uri, url, inbox_url, shared_inbox_url, outbox_url,
               followers_url, following_url, public_key_id, public_key_pem, display_name,
               created_at, updated_at, fetched_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )
    return out


def local_accounts(bulk: Bulk, ids: Ids, base: str, n: int, *, now: float, prefix: str = "l") -> list[int]:
    """Local accounts without logins or keys (authors for the local timeline only)."""
    now_ms = int(now * 1000) - DAY_MS
    out, rows = [], []
    for i in range(n):
        uri = f"{base}/users/{prefix}{i}"
        account_id = ids.at(now_ms)
        out.append(account_id)
        rows.append((account_id, f"{prefix}{i}", uri, f"{base}/@{prefix}{i}", f"{uri}/inbox", f"{base}/inbox",
                     f"{prefix.upper()} {i}", now - 86400 * 30, now))
    bulk.many(
        """INSERT INTO accounts (id, username, domain, uri, url, inbox_url, shared_inbox_url, display_name,
               created_at, updated_at) VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)""",
        rows,
    )
    return out


def follows(bulk: Bulk, ids: Ids, pairs: Iterable[tuple[int, int]], *, now: float, uri_prefix: str) -> int:
    now_ms = int(now * 1000) - DAY_MS
    n = 0

    def rows() -> Iterator[tuple[Any, ...]]:
        nonlocal n
        for follower, target in pairs:
            n += 1
            yield (ids.at(now_ms), follower, target, f"{uri_prefix}/follows/{n}", "accepted", now - 86400)

    bulk.many(
        "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        rows(),
    )
    return n


def statuses(bulk: Bulk, ids: Ids, count: int, authors: list[tuple[int, str, bool]], *, now: float,
             days: int = 60, seed: int = 7, chunk: int = 50_000) -> int:
    """`count` public statuses spread over `days` up to now, authors drawn uniformly.

    `authors` are (account id, actor uri, local). Rows are inserted in id order.
    """
    rng = random.Random(seed)
    start_ms = int(now * 1000) - days * DAY_MS
    step = days * DAY_MS / max(count, 1)
    text = ("A benchmark post about federated timelines, small servers and what a single core can do. "
            "It carries enough words to look like a real status.")
    sql = """INSERT INTO statuses (id, uri, url, account_id, local, content, visibility, to_json, cc_json,
                 published_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'public', ?, ?, ?, ?)"""
    to_json = '["https://www.w3.org/ns/activitystreams#Public"]'
    made = 0
    n_authors = len(authors)
    while made < count:
        rows = []
        for i in range(made, min(count, made + chunk)):
            ms = int(start_ms + i * step)
            status_id = ids.at(ms)
            account_id, actor, local = authors[rng.randrange(n_authors)]
            uri = f"{actor}/statuses/{status_id}"
            ts = ms / 1000
            rows.append((status_id, uri, uri, account_id, int(local), f"<p>{text} #{i}</p>", to_json,
                         f'["{actor}/followers"]', ts, ts))
        bulk.many(sql, rows)
        made += len(rows)
    return made


def timed(label: str, log: list[str]) -> Any:
    class _T:
        def __enter__(self) -> "_T":
            self.t = time.perf_counter()
            return self

        def __exit__(self, *exc: Any) -> None:
            log.append(f"{label}: {time.perf_counter() - self.t:.1f} s")

    return _T()
