"""Social-graph verbs that stay (mostly) local: mutes, private notes, removing followers, domain blocks.

Mutes and notes are never federated (Mastodon keeps them private too). Removing
a follower and blocking a domain end follows; a remote follower is told with
Reject(Follow) through `outbox.actions.send_follow_answer`, the one place that
writes that activity.
"""

from __future__ import annotations

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from outbox.actions import ActionError, send_follow_answer

MAX_NOTE_CHARS = 2000


async def mute(ctx: Context, account: Row, target: Row, *, notifications: bool = True, duration: int = 0) -> None:
    """Mute (or re-mute with new settings); `duration` seconds, 0 for indefinitely."""
    if target["id"] == account["id"]:
        raise ActionError("you can't mute yourself")
    expires = now() + duration if duration > 0 else None
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO mutes (id, account_id, target_account_id, notifications, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, target_account_id)"
            " DO UPDATE SET notifications = excluded.notifications, expires_at = excluded.expires_at",
            (tx.new_id(), account["id"], target["id"], int(notifications), expires, now()),
        )


async def unmute(ctx: Context, account: Row, target: Row) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM mutes WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"]))


async def set_note(ctx: Context, account: Row, target: Row, comment: str) -> None:
    """The private note on another profile; an empty comment removes it."""
    if len(comment) > MAX_NOTE_CHARS:
        raise ActionError(f"note is longer than {MAX_NOTE_CHARS} characters")
    async with ctx.db.write() as tx:
        if comment.strip():
            await tx.execute(
                "INSERT INTO account_notes (account_id, target_account_id, comment) VALUES (?, ?, ?)"
                " ON CONFLICT (account_id, target_account_id) DO UPDATE SET comment = excluded.comment",
                (account["id"], target["id"], comment),
            )
        else:
            await tx.execute(
                "DELETE FROM account_notes WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"])
            )


async def _drop_follower(ctx: Context, tx: Tx, account: Row, follow_id: int, follow_uri: str | None, follower: Row) -> None:
    """End one follow of `account`: local feeds lose its posts, a remote follower gets Reject."""
    await tx.execute("DELETE FROM follows WHERE id = ?", (follow_id,))
    if follower["domain"] is None:
        await tx.execute(
            "DELETE FROM home_feed WHERE account_id = ? AND status_id IN (SELECT id FROM statuses WHERE account_id = ?)",
            (follower["id"], account["id"]),
        )
    elif follow_uri:
        await send_follow_answer(ctx, tx, account, follower, follow_uri, False)


async def remove_from_followers(ctx: Context, account: Row, follower: Row) -> None:
    async with ctx.db.write() as tx:
        follow = await tx.fetchone(
            "SELECT * FROM follows WHERE account_id = ? AND target_account_id = ?", (follower["id"], account["id"])
        )
        if follow is not None:
            await _drop_follower(ctx, tx, account, follow["id"], follow["uri"], follower)


async def block_domain(ctx: Context, account: Row, domain: str) -> None:
    """Hide a whole domain from one user; its accounts stop following them (as Mastodon does)."""
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT OR IGNORE INTO user_domain_blocks (account_id, domain, created_at) VALUES (?, ?, ?)",
            (account["id"], domain, now()),
        )
        rows = await tx.fetchall(
            "SELECT f.id AS follow_id, f.uri AS follow_uri, a.* FROM follows f JOIN accounts a ON a.id = f.account_id"
            " WHERE f.target_account_id = ? AND lower(a.domain) = ?",
            (account["id"], domain),
        )
        for row in rows:
            await _drop_follower(ctx, tx, account, row["follow_id"], row["follow_uri"], row)


async def unblock_domain(ctx: Context, account: Row, domain: str) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM user_domain_blocks WHERE account_id = ? AND domain = ?", (account["id"], domain))
