"""Rows that belong to one account (filters, lists, media, scheduled posts, DMs): looked up only with their owner.

Someone else's id answers exactly as an id that does not exist (THREATS O5), so
ids cannot be probed across accounts.
"""

from __future__ import annotations

from fedi.api.visibility import parse_id
from fedi.context import Context
from fedi.db import Row
from fedi.errors import HttpError

NOT_FOUND = "Record not found"


async def own_row(ctx: Context, table: str, raw_id: str, account_id: int) -> Row:
    """The row of `table` with this path id and `account_id`, else 404."""
    row = await ctx.db.fetchone(f"SELECT * FROM {table} WHERE id = ? AND account_id = ?", (parse_id(raw_id), account_id))
    if row is None:
        raise HttpError(404, NOT_FOUND)
    return row
