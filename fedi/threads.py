"""Which thread a status belongs to, and whether a user muted that thread.

A thread is named by the URI of its root: `statuses.conversation_uri` when set,
otherwise the top of the known `in_reply_to` chain (the parent's URI when the
parent was never stored). DM conversations (`fedi.api.conversations`) and
conversation mutes (`conversation_mutes`, POST /api/v1/statuses/:id/mute) both
group statuses this way, so a mute covers exactly what clients show as one thread.
"""

from __future__ import annotations

from typing import Any, Protocol

from fedi.db import Row

MAX_THREAD_DEPTH = 100
ROOT_COLUMNS = "id, uri, in_reply_to_id, in_reply_to_uri, conversation_uri"


class Reader(Protocol):
    """A write transaction or the database's reader: both can look a row up."""

    async def fetchone(self, sql: str, params: Any = ()) -> Row | None: ...


async def thread_root(db: Reader, status: Row, memo: dict[int, str] | None = None) -> str:
    """The thread root's URI: walk up known parents (bounded), stopping at the first unknown one.

    `memo` carries roots already found between calls (a page of statuses often shares a thread).
    """
    memo = {} if memo is None else memo
    current, seen = status, []
    for _ in range(MAX_THREAD_DEPTH):
        if current["id"] in memo:
            root = memo[current["id"]]
            break
        seen.append(current["id"])
        if current["conversation_uri"]:
            root = current["conversation_uri"]
            break
        parent = None
        if current["in_reply_to_id"] is not None:
            parent = await db.fetchone(f"SELECT {ROOT_COLUMNS} FROM statuses WHERE id = ?", (current["in_reply_to_id"],))
        if parent is None:
            root = current["in_reply_to_uri"] or current["uri"]
            break
        current = parent
    else:
        root = current["uri"]
    for status_id in seen:
        memo[status_id] = root
    return root


async def root_of(db: Reader, status_id: int) -> str | None:
    """The thread root of a stored status, None if there is no such status."""
    status = await db.fetchone(f"SELECT {ROOT_COLUMNS} FROM statuses WHERE id = ?", (status_id,))
    return None if status is None else await thread_root(db, status)


async def muted_thread(db: Reader, account_id: int, status_id: int) -> bool:
    """Whether `account_id` muted the thread that `status_id` belongs to."""
    root = await root_of(db, status_id)
    return root is not None and await db.fetchone(
        "SELECT 1 FROM conversation_mutes WHERE account_id = ? AND conversation_uri = ?", (account_id, root)
    ) is not None
