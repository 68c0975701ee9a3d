"""Lists and bookmarks: the owner's private collections, never federated.

The client API (fedi/api/lists.py, fedi/api/status_actions.py) and the CSV
import (fedi/portability/import_jobs.py) both change them here, so the limits
(title length, number of lists, members only among followed accounts) are one rule.
"""

from __future__ import annotations

from collections.abc import Sequence

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from outbox.actions import ActionError

MAX_TITLE_CHARS = 256
MAX_LISTS = 50


async def create_list(ctx: Context, account: Row, title: str, replies_policy: str = "list",
                      exclusive: bool = False) -> Row:
    async with ctx.db.write() as tx:
        count = await tx.fetchall("SELECT count(*) FROM lists WHERE account_id = ?", (account["id"],))
        if count[0][0] >= MAX_LISTS:
            raise ActionError(f"at most {MAX_LISTS} lists")
        list_id = tx.new_id()
        await tx.execute(
            "INSERT INTO lists (id, account_id, title, replies_policy, exclusive, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (list_id, account["id"], title, replies_policy, int(exclusive), now()),
        )
        return (await tx.fetchall("SELECT * FROM lists WHERE id = ?", (list_id,)))[0]


async def list_named(ctx: Context, account: Row, title: str) -> Row | None:
    """The account's first list with exactly this title (imports match lists by title, as Mastodon does)."""
    return await ctx.db.fetchone(
        "SELECT * FROM lists WHERE account_id = ? AND title = ? ORDER BY id LIMIT 1", (account["id"], title)
    )


async def delete_list(ctx: Context, list_row: Row) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM list_accounts WHERE list_id = ?", (list_row["id"],))
        await tx.execute("DELETE FROM lists WHERE id = ?", (list_row["id"],))


async def add_members(ctx: Context, account: Row, list_row: Row, ids: Sequence[int], *,
                      requested_too: bool = False) -> None:
    """Add accounts the owner follows (with `requested_too`, also those only asked to follow, as an import
    does while its Follow awaits an answer); otherwise nothing is added (404 unknown, 422 not followed)."""
    ph = ",".join("?" for _ in ids)
    states = ("accepted", "pending") if requested_too else ("accepted",)
    async with ctx.db.write() as tx:
        known = {r[0] for r in await tx.fetchall(f"SELECT id FROM accounts WHERE id IN ({ph})", list(ids))}
        if len(known) != len(ids):
            raise ActionError("Record not found", 404)
        followed = {r[0] for r in await tx.fetchall(
            f"SELECT target_account_id FROM follows WHERE account_id = ? AND state IN ({','.join('?' for _ in states)})"
            f" AND target_account_id IN ({ph})", [account["id"], *states, *ids])}
        if len(followed) != len(ids):
            raise ActionError("Account has not been followed")
        await tx.executemany(
            "INSERT INTO list_accounts (list_id, account_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [(list_row["id"], i) for i in ids],
        )


async def remove_members(ctx: Context, list_row: Row, ids: Sequence[int]) -> None:
    async with ctx.db.write() as tx:
        await tx.executemany("DELETE FROM list_accounts WHERE list_id = ? AND account_id = ?",
                             [(list_row["id"], i) for i in ids])


async def bookmark(ctx: Context, account: Row, status_id: int) -> None:
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO bookmarks (id, account_id, status_id, created_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account_id, status_id) DO NOTHING",
            (tx.new_id(), account["id"], status_id, now()),
        )


async def unbookmark(ctx: Context, account: Row, status_id: int) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM bookmarks WHERE account_id = ? AND status_id = ?", (account["id"], status_id))
