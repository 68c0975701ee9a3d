"""Who a streamed event is for: one query per kind of stream, whatever the number of listeners.

Listener sets are passed to SQLite as one JSON array (`json_each`), so a query
costs the same for one listener or five hundred and never hits the bound
parameter limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.jsonutil import dumps_str

HASHTAG, HASHTAG_LOCAL, USER, LIST, DIRECT = "hashtag", "hashtag:local", "user", "list", "direct"
Key = tuple[str, Any]  # (stream name, account id | tag name | list id | None)

#: Who still reads a status after it was deleted (its home-feed rows are gone): author, followers, mentions.
_READ_AFTER_DELETE = (
    "({who} = :author OR {who} IN (SELECT account_id FROM mentions WHERE status_id = :sid)"
    " OR (:vis != 'direct' AND {who} IN (SELECT account_id FROM follows"
    " WHERE target_account_id = :author AND state = 'accepted')))"
)
_READS = "EXISTS (SELECT 1 FROM home_feed h WHERE h.account_id = {who} AND h.status_id = :sid)"


def _ids(values: Iterable[Any]) -> str:
    return dumps_str(sorted(values))


async def audience(ctx: Context, listening: dict[str, list[Any]], status: Row, deleted: bool) -> list[Key]:
    """Every stream key that shows this status (or showed it, for a delete).

    `listening` maps a stream name to the arguments someone listens to (account
    ids, tags, list ids); public streams get public, non-boost statuses only,
    as in Mastodon; the user stream follows the home feed.
    """
    sid, author = status["id"], status["account_id"]
    keys: list[Key] = []
    if status["visibility"] == "public" and status["reblog_of_id"] is None:
        names = ["public", "public:local" if status["local"] else "public:remote"]
        if any(listening.get(f"{n}:media") for n in names) and await ctx.db.fetchval(
            "SELECT 1 FROM media_attachments WHERE status_id = ? LIMIT 1", (sid,)
        ):
            names += [f"{n}:media" for n in names]
        keys += [(n, None) for n in names]
        if listening.get(HASHTAG) or listening.get(HASHTAG_LOCAL):
            tags = [r[0] for r in await ctx.db.fetchall(
                "SELECT t.name FROM status_tags st JOIN tags t ON t.id = st.tag_id WHERE st.status_id = ?", (sid,))]
            keys += [(HASHTAG, t) for t in tags] + [(HASHTAG_LOCAL, t) for t in tags if status["local"]]
    args = {"sid": sid, "author": author, "vis": status["visibility"]}
    reads = _READ_AFTER_DELETE if deleted else _READS
    if users := listening.get(USER):
        rows = await ctx.db.fetchall(
            "SELECT value FROM json_each(:ids) WHERE " + reads.format(who="value"), {**args, "ids": _ids(users)})
        keys += [(USER, r[0]) for r in rows]
    if lists := listening.get(LIST):
        rows = await ctx.db.fetchall(
            "SELECT l.id FROM lists l JOIN list_accounts la ON la.list_id = l.id WHERE la.account_id = :author"
            " AND l.id IN (SELECT value FROM json_each(:ids)) AND " + reads.format(who="l.account_id"),
            {**args, "ids": _ids(lists)})
        keys += [(LIST, r[0]) for r in rows]
    if status["visibility"] == "direct" and (direct := set(listening.get(DIRECT, ()))):
        mentioned = {r[0] for r in await ctx.db.fetchall("SELECT account_id FROM mentions WHERE status_id = ?", (sid,))}
        keys += [(DIRECT, a) for a in sorted(direct & (mentioned | {author}))]
    return keys


async def excluded(ctx: Context, status: Row, listeners: set[int]) -> set[int]:
    """Listeners who block or mute the author (or the boosted author), block its domain, or are blocked by it."""
    if not listeners:
        return set()
    authors = [status["account_id"]]
    if status["reblog_of_id"]:
        original = await ctx.db.fetchval("SELECT account_id FROM statuses WHERE id = ?", (status["reblog_of_id"],))
        if original is not None:
            authors.append(original)
    rows = await ctx.db.fetchall(
        "SELECT account_id FROM blocks WHERE target_account_id IN (SELECT value FROM json_each(:a))"
        " AND account_id IN (SELECT value FROM json_each(:l))"
        " UNION SELECT target_account_id FROM blocks WHERE account_id IN (SELECT value FROM json_each(:a))"
        " AND target_account_id IN (SELECT value FROM json_each(:l))"
        " UNION SELECT account_id FROM mutes WHERE target_account_id IN (SELECT value FROM json_each(:a))"
        " AND account_id IN (SELECT value FROM json_each(:l)) AND (expires_at IS NULL OR expires_at > :now)"
        " UNION SELECT account_id FROM user_domain_blocks WHERE account_id IN (SELECT value FROM json_each(:l))"
        " AND domain IN (SELECT domain FROM accounts WHERE id IN (SELECT value FROM json_each(:a)))",
        {"a": _ids(authors), "l": _ids(listeners), "now": now()},
    )
    return {r[0] for r in rows}


async def with_filters(ctx: Context, listeners: set[int]) -> set[int]:
    """The listeners who have any unexpired filter (only they need a status judged for them)."""
    if not listeners:
        return set()
    rows = await ctx.db.fetchall(
        "SELECT DISTINCT account_id FROM filters WHERE account_id IN (SELECT value FROM json_each(?))"
        " AND (expires_at IS NULL OR expires_at > ?)", (_ids(listeners), now()),
    )
    return {r[0] for r in rows}
