"""The account's relationships as CSV, in GoToSocial's and Mastodon's formats, and GoToSocial's export stats.

Both servers write the same columns (GoToSocial copied Mastodon's), and their importers
read each other's files, so fedi writes them exactly: `user@domain` addresses without the
leading `@` (local accounts with this instance's domain), booleans `true`/`false`, `\\n`
line ends. What differs is order and headers: GoToSocial sorts by domain then username
(local accounts first) and heads its followers file with `Account address`; Mastodon
lists newest first. Only accepted follows and mutes still in force are exported.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.jsonutil import loads_strict

FOLLOWING_HEADER = ("Account address", "Show boosts", "Notify on new posts", "Languages")
FOLLOWERS_HEADER = ("Account address",)
MUTES_HEADER = ("Account address", "Hide notifications")

#: name -> what a Mastodon `/settings/exports/NAME.csv` is called when downloaded (its controller's name).
MASTODON_FILENAMES = {
    "follows": "following_accounts.csv",
    "blocks": "blocked_accounts.csv",
    "mutes": "muted_accounts.csv",
    "domain_blocks": "blocked_domains.csv",
    "bookmarks": "bookmarks.csv",
    "lists": "lists.csv",
}
GOTOSOCIAL_FILES = ("following", "followers", "lists", "blocks", "mutes")


def to_csv(rows: Iterable[Sequence[str]]) -> bytes:
    """Rows as CSV the way Ruby's and Go's writers emit it (minimal quoting, `\\n` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
    return out.getvalue().encode()


def _bool(value: Any) -> str:
    return "true" if value else "false"


def address(ctx: Context, row: Row) -> str:
    """`user@domain` without the leading `@`; local accounts carry this instance's domain."""
    return f"{row['username']}@{row['domain'] or ctx.domain}"


def _gts_order(rows: list[Row]) -> list[Row]:
    """GoToSocial's order: by domain + "/" + username, where a local account's domain is empty."""
    return sorted(rows, key=lambda r: f"{r['domain'] or ''}/{r['username']}")


def _languages(raw: str | None) -> str:
    langs = loads_strict(raw) if raw else None
    return ", ".join(str(lang) for lang in langs) if isinstance(langs, list) and langs else ""


async def _following(ctx: Context, account_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT f.id, f.show_reblogs, f.notify, f.languages_json, a.username, a.domain FROM follows f"
        " JOIN accounts a ON a.id = f.target_account_id WHERE f.account_id = ? AND f.state = 'accepted'"
        " ORDER BY f.id DESC", (account_id,))


async def _followers(ctx: Context, account_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT f.id, a.username, a.domain FROM follows f JOIN accounts a ON a.id = f.account_id"
        " WHERE f.target_account_id = ? AND f.state = 'accepted' ORDER BY f.id DESC", (account_id,))


async def _blocks(ctx: Context, account_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT b.id, a.username, a.domain FROM blocks b JOIN accounts a ON a.id = b.target_account_id"
        " WHERE b.account_id = ? ORDER BY b.id DESC", (account_id,))


async def _mutes(ctx: Context, account_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT m.id, m.notifications, a.username, a.domain FROM mutes m JOIN accounts a ON a.id = m.target_account_id"
        " WHERE m.account_id = ? AND (m.expires_at IS NULL OR m.expires_at > ?) ORDER BY m.id DESC", (account_id, now()))


async def _list_members(ctx: Context, account_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT l.id AS list_id, l.title, a.username, a.domain FROM lists l"
        " JOIN list_accounts la ON la.list_id = l.id JOIN accounts a ON a.id = la.account_id"
        " WHERE l.account_id = ? ORDER BY l.id, a.id", (account_id,))


# GoToSocial's files (GET /api/v1/exports/NAME.csv)


async def gts_following(ctx: Context, account_id: int) -> list[list[str]]:
    rows = _gts_order(await _following(ctx, account_id))
    # GoToSocial leaves Languages blank ("compat only").
    return [list(FOLLOWING_HEADER)] + [[address(ctx, r), _bool(r["show_reblogs"]), _bool(r["notify"]), ""] for r in rows]


async def gts_followers(ctx: Context, account_id: int) -> list[list[str]]:
    rows = _gts_order(await _followers(ctx, account_id))
    return [list(FOLLOWERS_HEADER)] + [[address(ctx, r)] for r in rows]


async def gts_lists(ctx: Context, account_id: int) -> list[list[str]]:
    """No header; lists by title, each list's members in GoToSocial's account order."""
    rows = await _list_members(ctx, account_id)
    by_list: dict[int, list[Row]] = {}
    for r in rows:
        by_list.setdefault(r["list_id"], []).append(r)
    ordered = sorted(by_list.values(), key=lambda members: members[0]["title"])
    return [[m["title"], address(ctx, m)] for members in ordered for m in _gts_order(members)]


async def gts_blocks(ctx: Context, account_id: int) -> list[list[str]]:
    return [[address(ctx, r)] for r in _gts_order(await _blocks(ctx, account_id))]


async def gts_mutes(ctx: Context, account_id: int) -> list[list[str]]:
    rows = _gts_order(await _mutes(ctx, account_id))
    return [list(MUTES_HEADER)] + [[address(ctx, r), _bool(r["notifications"])] for r in rows]


# Mastodon's files (GET /settings/exports/NAME.csv)


async def mastodon_follows(ctx: Context, account_id: int) -> list[list[str]]:
    rows = await _following(ctx, account_id)
    return [list(FOLLOWING_HEADER)] + [
        [address(ctx, r), _bool(r["show_reblogs"]), _bool(r["notify"]), _languages(r["languages_json"])] for r in rows]


async def mastodon_blocks(ctx: Context, account_id: int) -> list[list[str]]:
    return [[address(ctx, r)] for r in await _blocks(ctx, account_id)]


async def mastodon_mutes(ctx: Context, account_id: int) -> list[list[str]]:
    return [list(MUTES_HEADER)] + [[address(ctx, r), _bool(r["notifications"])] for r in await _mutes(ctx, account_id)]


async def mastodon_domain_blocks(ctx: Context, account_id: int) -> list[list[str]]:
    rows = await ctx.db.fetchall(
        "SELECT domain FROM user_domain_blocks WHERE account_id = ? ORDER BY created_at, domain", (account_id,))
    return [[r["domain"]] for r in rows]


async def mastodon_bookmarks(ctx: Context, account_id: int) -> list[list[str]]:
    """The bookmarked posts' ids (URIs), newest bookmark first; posts since deleted are left out."""
    rows = await ctx.db.fetchall(
        "SELECT s.uri FROM bookmarks b JOIN statuses s ON s.id = b.status_id"
        " WHERE b.account_id = ? AND s.deleted_at IS NULL ORDER BY b.id DESC", (account_id,))
    return [[r["uri"]] for r in rows]


async def mastodon_lists(ctx: Context, account_id: int) -> list[list[str]]:
    return [[r["title"], address(ctx, r)] for r in await _list_members(ctx, account_id)]


GOTOSOCIAL = {"following": gts_following, "followers": gts_followers, "lists": gts_lists,
              "blocks": gts_blocks, "mutes": gts_mutes}
MASTODON = {"follows": mastodon_follows, "blocks": mastodon_blocks, "mutes": mastodon_mutes,
            "domain_blocks": mastodon_domain_blocks, "bookmarks": mastodon_bookmarks, "lists": mastodon_lists}


def _size(n: int) -> str:
    """A byte count the way GoToSocial's example shows it ("500MB")."""
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1000:
            return f"{n}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}GB"


async def stats(ctx: Context, account_id: int) -> dict[str, Any]:
    """GoToSocial's AccountExportStats: how big each export will be."""
    row = await ctx.db.fetchone(
        "SELECT coalesce((SELECT followers_count FROM account_stats WHERE account_id = ?), 0) AS followers,"
        " coalesce((SELECT following_count FROM account_stats WHERE account_id = ?), 0) AS following,"
        " coalesce((SELECT statuses_count FROM account_stats WHERE account_id = ?), 0) AS statuses,"
        " (SELECT count(*) FROM lists WHERE account_id = ?) AS lists,"
        " (SELECT count(*) FROM blocks WHERE account_id = ?) AS blocks,"
        " (SELECT count(*) FROM mutes WHERE account_id = ? AND (expires_at IS NULL OR expires_at > ?)) AS mutes,"
        " (SELECT coalesce(sum(file_size), 0) FROM media_attachments WHERE account_id = ? AND file_path IS NOT NULL)"
        " AS media",
        (account_id,) * 6 + (now(), account_id),
    )
    assert row is not None
    return {"media_storage": _size(int(row["media"])), "followers_count": row["followers"],
            "following_count": row["following"], "statuses_count": row["statuses"], "lists_count": row["lists"],
            "blocks_count": row["blocks"], "mutes_count": row["mutes"]}
