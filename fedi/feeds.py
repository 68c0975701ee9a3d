"""Home-feed fan-out and notifications, shared by local actions and inbox handlers.

Home timelines are materialised on write (one `home_feed` row per local reader),
which keeps reading a timeline a single indexed range scan (PERFORMANCE.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from fedi.clock import now
from fedi.db import Tx


async def fan_out(tx: Tx, status_id: int, author_id: int, visibility: str, mentioned: Iterable[int] = ()) -> None:
    """Put a status into the home feeds of its local author, local followers and local mentions."""
    await tx.execute(
        "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
        " SELECT id, ? FROM accounts WHERE id = ? AND domain IS NULL",
        (status_id, author_id),
    )
    if visibility != "direct":
        await tx.execute(
            "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
            " SELECT f.account_id, ? FROM follows f JOIN accounts a ON a.id = f.account_id"
            " WHERE f.target_account_id = ? AND f.state = 'accepted' AND a.domain IS NULL",
            (status_id, author_id),
        )
    if visibility == "public":
        await tx.execute(
            "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
            " SELECT DISTINCT ft.account_id, ? FROM status_tags st JOIN followed_tags ft ON ft.tag_id = st.tag_id"
            " WHERE st.status_id = ?",
            (status_id, status_id),
        )
    ids = list(mentioned)
    if ids:
        await tx.executemany(
            "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
            " SELECT id, ? FROM accounts WHERE id = ? AND domain IS NULL",
            [(status_id, i) for i in ids],
        )
    tx.publish("status.created", status_id=status_id, author_id=author_id, visibility=visibility, mentioned=ids)


async def notify(tx: Tx, account_id: int, kind: str, from_account_id: int, status_id: int | None = None) -> None:
    """Record a notification for a local account (remote accounts and self-actions get none)."""
    if account_id == from_account_id:
        return
    local = await tx.fetchone("SELECT 1 FROM accounts WHERE id = ? AND domain IS NULL", (account_id,))
    if not local:
        return
    notification_id = tx.new_id()
    await tx.execute(
        "INSERT INTO notifications (id, account_id, type, from_account_id, status_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (notification_id, account_id, kind, from_account_id, status_id, now()),
    )
    tx.publish("notification", notification_id=notification_id, account_id=account_id)
