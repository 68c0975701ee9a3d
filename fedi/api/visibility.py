"""Who may see a status through the API: the single rule every endpoint uses (THREATS O5)."""

from __future__ import annotations

from fedi.context import Context
from fedi.db import Row
from fedi.errors import HttpError


def parse_id(value: str | None) -> int:
    """A path id: decimal digits only; anything else is simply not found."""
    if not value or not value.isdigit() or len(value) > 19:
        raise HttpError(404, "Record not found")
    return int(value)


async def can_see(ctx: Context, status: Row, viewer: Row | None) -> bool:
    if status["deleted_at"] is not None:
        return False
    if status["visibility"] in ("public", "unlisted"):
        return True
    if viewer is None:
        return False
    if status["account_id"] == viewer["id"]:
        return True
    mentioned = await ctx.db.fetchone(
        "SELECT 1 FROM mentions WHERE status_id = ? AND account_id = ?", (status["id"], viewer["id"])
    )
    if mentioned:
        return True
    if status["visibility"] == "private":
        follows = await ctx.db.fetchone(
            "SELECT 1 FROM follows WHERE account_id = ? AND target_account_id = ? AND state = 'accepted'",
            (viewer["id"], status["account_id"]),
        )
        return follows is not None
    return False


async def visible_status(ctx: Context, raw_id: str | None, viewer: Row | None) -> Row:
    """The status with this id if the viewer may see it; 404 otherwise (never 403: no existence leak)."""
    row = await ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (parse_id(raw_id),))
    if row is None or not await can_see(ctx, row, viewer):
        raise HttpError(404, "Record not found")
    return row
