"""Writing status rows and their tags and mentions; shared by local posts and inbox Creates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedi.db import Tx

STATUS_COLUMNS = (
    "uri", "url", "account_id", "local", "in_reply_to_id", "in_reply_to_uri", "in_reply_to_account_id",
    "reblog_of_id", "content", "source_text", "summary", "sensitive", "visibility", "language",
    "to_json", "cc_json", "published_at", "created_at", "app_id",
)


async def insert_status(tx: Tx, status_id: int, values: dict[str, Any]) -> None:
    cols = [c for c in STATUS_COLUMNS if c in values]
    await tx.execute(
        f"INSERT INTO statuses (id, {', '.join(cols)}) VALUES (?, {', '.join('?' for _ in cols)})",
        [status_id, *(values[c] for c in cols)],
    )


async def set_tags(tx: Tx, status_id: int, names: Iterable[str]) -> None:
    await tx.execute("DELETE FROM status_tags WHERE status_id = ?", (status_id,))
    for name in names:
        await tx.execute("INSERT OR IGNORE INTO tags (id, name) VALUES (?, ?)", (tx.new_id(), name))
        await tx.execute(
            "INSERT OR IGNORE INTO status_tags (status_id, tag_id) SELECT ?, id FROM tags WHERE name = ?",
            (status_id, name),
        )


async def set_mentions(tx: Tx, status_id: int, account_ids: Iterable[int]) -> None:
    await tx.execute("DELETE FROM mentions WHERE status_id = ?", (status_id,))
    await tx.executemany(
        "INSERT OR IGNORE INTO mentions (status_id, account_id) VALUES (?, ?)",
        [(status_id, a) for a in account_ids],
    )


async def record_edit(tx: Tx, status: Any, at: float) -> None:
    """Keep the previous version so clients can show the edit history."""
    await tx.execute(
        "INSERT INTO status_edits (id, status_id, content, summary, sensitive, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (tx.new_id(), status["id"], status["content"], status["summary"], status["sensitive"],
         status["edited_at"] or status["published_at"]),
    )


async def tombstone(tx: Tx, uri: str, account_id: int | None, at: float) -> None:
    """Remember a deleted id so a late or replayed Create cannot resurrect it (THREATS A10)."""
    await tx.execute(
        "INSERT OR IGNORE INTO tombstones (uri, account_id, deleted_at) VALUES (?, ?, ?)", (uri, account_id, at)
    )
