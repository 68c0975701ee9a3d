"""The audit log: every moderation action, who took it, and what it touched."""

from __future__ import annotations

from typing import Any

from fedi.clock import now
from fedi.db import Tx
from fedi.jsonutil import dumps_str


async def record(tx: Tx, admin_id: int | None, action: str, target_type: str, target: str,
                 detail: dict[str, Any] | None = None) -> None:
    """Write one audit row in the same transaction as the action (so neither exists without the other).

    `admin_id` is None for automatic changes (a block-list sync); `detail` then names the source.
    """
    await tx.execute(
        "INSERT INTO audit_log (id, account_id, action, target_type, target, detail_json, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tx.new_id(), admin_id, action, target_type, target, dumps_str(detail or {}), now()),
    )
