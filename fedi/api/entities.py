"""Mastodon API entities, built in batches from rows.

Clients are strict: every documented key is present (null when empty), ids are
strings of decimal digits, datetimes are `YYYY-MM-DDTHH:MM:SS.sssZ`. Statuses
are rendered a page at a time with one query per kind of related row (never
one per status), which keeps timelines fast.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Sequence
from typing import Any

from actors.documents import also_known_as
from fedi.clock import iso
from fedi.context import Context
from fedi.db import Row
from fedi.jsonutil import loads_strict
from fedi.moderation.domains import media_rejected
from fedi.threads import thread_root

MISSING_AVATAR = "/static/missing.png"


def _placeholders(values: Sequence[Any]) -> str:
    return ",".join("?" for _ in values)


@functools.lru_cache(maxsize=4096)
def _midnight(day: int) -> str:
    """Midnight of a day (days since 1970) as an ISO datetime; a page repeats few days, so they are cached."""
    return iso(day * 86400)


def _iso_date(ts: float) -> str:
    """Mastodon gives account creation as midnight of the day."""
    return _midnight(int(ts // 86400))


def rules(ctx: Context) -> list[dict[str, Any]]:
    """The server's Rule entities, from `[instance] rules`: ids are positions, so reports keep naming the same rule."""
    return [{"id": str(n), "text": text, "hint": ""} for n, text in enumerate(ctx.config.instance.rules, start=1)]


def acct(ctx: Context, row: Row) -> str:
    return row["username"] if row["domain"] is None else f"{row['username']}@{row['domain']}"


def _media_url(ctx: Context, path: str | None, remote: str | None) -> str:
    if path:
        return f"{ctx.base_url}/media/{path}"
    return remote or f"{ctx.base_url}{MISSING_AVATAR}"


#: The `accounts` columns an Account entity is built from (`_accounts` reads no others). Pages select just
#: these: a full row also carries key PEMs and collection URLs, twice the bytes for nothing.
ACCOUNT_ENTITY_COLUMNS = (
    "id, username, domain, uri, url, actor_type, display_name, summary, avatar_url, header_url, avatar_path,"
    " header_path, locked, bot, discoverable, fields_json, created_at, suspended_at, moved_to_account_id"
)
ACCOUNT_STATS_SQL = ("SELECT account_id, statuses_count, last_status_at, followers_count, following_count"
                     " FROM account_stats WHERE account_id IN ({ph})")


async def _account_stats(ctx: Context, ids: Sequence[int]) -> list[Row]:
    """Counters kept by triggers (migration 4): one primary-key lookup per account, however much it posted."""
    return await ctx.db.fetchall(ACCOUNT_STATS_SQL.format(ph=_placeholders(ids)), ids) if ids else []


async def accounts(ctx: Context, rows: Iterable[Row]) -> dict[int, dict[str, Any]]:
    """Account entities by id; their counts come from `account_stats` in one query."""
    rows = [r for r in rows if r is not None]
    if not rows:
        return {}
    return await _accounts(ctx, rows, await _account_stats(ctx, list({r["id"] for r in rows})))


def _moved_id(row: Row) -> int | None:
    """The account this one moved to (a verified move), if the row carries the column."""
    try:
        return row["moved_to_account_id"]  # type: ignore[no-any-return]
    except (IndexError, KeyError):
        return None


async def _moved(ctx: Context, rows: list[Row]) -> dict[int, dict[str, Any]]:
    """The `moved` Account entities of moved accounts (one level deep, as Mastodon renders them)."""
    ids = list({m for r in rows if (m := _moved_id(r)) is not None})
    if not ids:
        return {}
    targets = await ctx.db.fetchall(f"SELECT {ACCOUNT_ENTITY_COLUMNS} FROM accounts WHERE id IN ({_placeholders(ids)})", ids)
    return await _accounts(ctx, targets, await _account_stats(ctx, ids), nested=False)


async def _accounts(ctx: Context, rows: list[Row], stat_rows: list[Row], *, nested: bool = True) -> dict[int, dict[str, Any]]:
    stats = {r[0]: r for r in stat_rows}
    out: dict[int, dict[str, Any]] = {}
    no_media = await media_rejected(ctx, (r["domain"] for r in rows))  # reject_media: remote files not shown
    moved = await _moved(ctx, rows) if nested else {}
    for r in rows:
        st = stats.get(r["id"])
        count, last, followers, following = (st[1], st[2], st[3], st[4]) if st is not None else (0, None, 0, 0)
        hide = r["domain"] in no_media
        avatar = _media_url(ctx, r["avatar_path"], None if hide else r["avatar_url"])
        header = _media_url(ctx, r["header_path"], None if hide else r["header_url"])
        fields_json = r["fields_json"]
        fields = loads_strict(fields_json) if fields_json and fields_json != "[]" else []
        out[r["id"]] = {
            "id": str(r["id"]),
            "username": r["username"],
            "acct": acct(ctx, r),
            "url": r["url"] or r["uri"],
            "uri": r["uri"],
            "display_name": r["display_name"] or "",
            "note": r["summary"] or "",
            "avatar": avatar,
            "avatar_static": avatar,
            "header": header,
            "header_static": header,
            "locked": bool(r["locked"]),
            "fields": [{"name": f.get("name", ""), "value": f.get("value", ""), "verified_at": None} for f in fields],
            "emojis": [],
            "bot": bool(r["bot"]),
            "group": r["actor_type"] == "Group",
            "discoverable": bool(r["discoverable"]),
            "indexable": False,
            "noindex": False,
            "hide_collections": False,
            "memorial": False,
            "suspended": r["suspended_at"] is not None or None,
            "limited": None,
            "moved": moved.get(_moved_id(r)),  # type: ignore[arg-type]
            "roles": [],
            "created_at": _iso_date(r["created_at"]),
            "last_status_at": _midnight(int(last // 86400))[:10] if last else None,
            "statuses_count": count,
            "followers_count": followers,
            "following_count": following,
        }
        if out[r["id"]]["suspended"] is None:
            del out[r["id"]]["suspended"]
            del out[r["id"]]["limited"]
        if out[r["id"]]["moved"] is None:
            del out[r["id"]]["moved"]
    return out


async def account(ctx: Context, row: Row) -> dict[str, Any]:
    return (await accounts(ctx, [row]))[row["id"]]


async def credential_account(ctx: Context, row: Row) -> dict[str, Any]:
    """The signed-in user's own Account, with `source` and `role`."""
    entity = await account(ctx, row)
    user = await ctx.db.fetchone("SELECT * FROM users WHERE account_id = ?", (row["id"],))
    settings = loads_strict(user["settings_json"]) if user else {}
    requests = await ctx.db.fetchval(
        "SELECT count(*) FROM follows WHERE target_account_id = ? AND state = 'pending'", (row["id"],)
    )
    fields = loads_strict(row["fields_json"] or "[]")
    entity["source"] = {
        "privacy": settings.get("privacy", "public"),
        "sensitive": bool(settings.get("sensitive", False)),
        "language": settings.get("language") or "",
        "note": settings.get("note_source", ""),
        "fields": [{"name": f.get("name", ""), "value": f.get("source_value", f.get("value", "")), "verified_at": None}
                   for f in fields],
        "follow_requests_count": requests or 0,
        "hide_collections": False,
        "discoverable": bool(row["discoverable"]),
        "indexable": False,
        "attribution_domains": [],
    }
    aliases = also_known_as(row)
    if aliases:  # GoToSocial shows the aliases here (omitted when there are none)
        entity["source"]["also_known_as_uris"] = aliases
    admin = bool(user and user["admin"])
    entity["role"] = {
        "id": "3" if admin else "-99", "name": "Admin" if admin else "", "color": "",
        "permissions": "1" if admin else "0", "highlighted": admin,
    }
    return entity


def _attachment(ctx: Context, m: Row, hide_remote: bool = False) -> dict[str, Any]:
    meta = loads_strict(m["meta_json"] or "{}")
    if m["width"] and m["height"] and "original" not in meta:
        meta["original"] = {"width": m["width"], "height": m["height"], "size": f"{m['width']}x{m['height']}",
                            "aspect": m["width"] / m["height"]}
    if m["focus_x"] is not None:
        meta["focus"] = {"x": m["focus_x"], "y": m["focus_y"]}
    remote = None if hide_remote else m["remote_url"]
    url = f"{ctx.base_url}/media/{m['file_path']}" if m["file_path"] else (
        f"{ctx.base_url}{MISSING_AVATAR}" if hide_remote else remote)
    preview = f"{ctx.base_url}/media/{m['thumbnail_path']}" if m["thumbnail_path"] else url
    return {
        "id": str(m["id"]),
        "type": m["type"],
        "url": url,
        "preview_url": preview,
        "remote_url": remote,
        "preview_remote_url": None,
        "text_url": None,
        "meta": meta,
        "description": m["description"],
        "blurhash": m["blurhash"],
    }


def media_attachment(ctx: Context, row: Row) -> dict[str, Any]:
    return _attachment(ctx, row)


def _poll(p: Row, voted: set[int] | None, own: list[int] | None) -> dict[str, Any]:
    from fedi.clock import now as _now

    options = loads_strict(p["options_json"])
    expired = p["expires_at"] is not None and p["expires_at"] <= _now()
    votes = sum(o.get("votes_count", 0) for o in options)
    return {
        "id": str(p["id"]),
        "expires_at": iso(p["expires_at"]) if p["expires_at"] else None,
        "expired": expired,
        "multiple": bool(p["multiple"]),
        "votes_count": votes,
        "voters_count": p["voters_count"] if p["multiple"] else votes,
        "options": [{"title": o["title"], "votes_count": None if p["hide_totals"] and not expired else o.get("votes_count", 0)}
                    for o in options],
        "emojis": [],
        "voted": (p["id"] in voted) if voted is not None else None,
        "own_votes": own if voted is not None else None,
    }


async def _no_rows() -> list[Row]:
    return []


async def statuses(ctx: Context, rows: Sequence[Row], viewer: Row | None) -> list[dict[str, Any]]:
    """Status entities for a page of status rows (boosts embed their original)."""
    originals_ids = [r["reblog_of_id"] for r in rows if r["reblog_of_id"]]
    originals: dict[int, Row] = {}
    if originals_ids:
        for r in await ctx.db.fetchall(
            f"SELECT * FROM statuses WHERE id IN ({_placeholders(originals_ids)})", originals_ids
        ):
            originals[r["id"]] = r
    every = list(rows) + list(originals.values())
    ids = [r["id"] for r in every]
    if not ids:
        return []
    ph = _placeholders(ids)
    author_ids = list({r["account_id"] for r in every})
    aph = _placeholders(author_ids)
    app_ids = list({r["app_id"] for r in every if r["app_id"]})

    # Every query below depends only on the page, so they are issued together: the reader connection's
    # thread runs them back to back and the page waits for one round of hand-offs, not one per query.
    (author_rows, stat_rows, count_rows, media_rows, mention_rows, tag_rows, poll_rows, app_rows,
     mine_rows, muted_rows) = await asyncio.gather(
        ctx.db.fetchall(f"SELECT {ACCOUNT_ENTITY_COLUMNS} FROM accounts WHERE id IN ({aph})", author_ids),
        _account_stats(ctx, author_ids),
        # Counters kept by triggers (migration 4): a primary-key lookup per status, never a count over
        # `statuses` (whose plan a later ANALYZE could turn into a full scan).
        ctx.db.fetchall(
            f"SELECT status_id, replies_count, reblogs_count, favourites_count FROM status_stats WHERE status_id IN ({ph})",
            ids),
        ctx.db.fetchall(f"SELECT status_id, * FROM media_attachments WHERE status_id IN ({ph}) ORDER BY position", ids),
        ctx.db.fetchall(
            "SELECT m.status_id, a.id, a.username, a.domain, a.url, a.uri FROM mentions m"
            f" JOIN accounts a ON a.id = m.account_id WHERE m.status_id IN ({ph})", ids),
        ctx.db.fetchall(
            f"SELECT st.status_id, t.name FROM status_tags st JOIN tags t ON t.id = st.tag_id WHERE st.status_id IN ({ph})",
            ids),
        ctx.db.fetchall(f"SELECT * FROM polls WHERE status_id IN ({ph})", ids),
        ctx.db.fetchall(f"SELECT id, name, website FROM oauth_apps WHERE id IN ({_placeholders(app_ids)})", app_ids)
        if app_ids else _no_rows(),
        # The viewer's own favourites, boosts, bookmarks and pins among the page, in one query that probes
        # each table once per id of the page (CROSS JOIN keeps the page outermost, so a viewer with
        # thousands of favourites costs the same; four `IN (…)` lists cost four times as much). The boosts
        # part names its index: left to itself the planner walks every status the viewer ever wrote.
        ctx.db.fetchall(
            f"WITH page(id) AS MATERIALIZED (VALUES {','.join('(?)' for _ in ids)})"
            " SELECT 0, f.status_id FROM page CROSS JOIN favourites f ON f.account_id = ? AND f.status_id = page.id"
            " UNION ALL SELECT 1, s.reblog_of_id FROM page CROSS JOIN statuses s INDEXED BY statuses_reblog_account"
            " ON s.reblog_of_id = page.id AND s.account_id = ? AND s.deleted_at IS NULL"
            " UNION ALL SELECT 2, b.status_id FROM page CROSS JOIN bookmarks b ON b.account_id = ? AND b.status_id = page.id"
            " UNION ALL SELECT 3, p.status_id FROM page CROSS JOIN status_pins p ON p.account_id = ? AND p.status_id = page.id",
            [*ids, *[viewer["id"]] * 4]) if viewer is not None else _no_rows(),
        # The threads the viewer muted: usually none, and then no status's thread is looked up.
        ctx.db.fetchall("SELECT conversation_uri FROM conversation_mutes WHERE account_id = ?", (viewer["id"],))
        if viewer is not None else _no_rows(),
    )
    authors = await _accounts(ctx, list(author_rows), stat_rows)
    no_media = await media_rejected(ctx, (a["domain"] for a in author_rows))
    media_hidden = {a["id"] for a in author_rows if a["domain"] in no_media}
    counts = {r[0]: r for r in count_rows}
    media: dict[int, list[Row]] = {}
    mentions: dict[int, list[Row]] = {}
    tags: dict[int, list[Row]] = {}
    for target, found in ((media, media_rows), (mentions, mention_rows), (tags, tag_rows)):
        for r in found:
            target.setdefault(r[0], []).append(r)
    polls = {r["status_id"]: r for r in poll_rows}
    apps = {r["id"]: r for r in app_rows}
    mine: dict[str, set[int]] = {k: set() for k in ("fav", "boost", "bookmark", "pin", "mute", "voted")}
    kinds = ("fav", "boost", "bookmark", "pin")
    for r in mine_rows:
        mine[kinds[r[0]]].add(r[1])
    muted_roots = {r[0] for r in muted_rows}
    if muted_roots:
        memo: dict[int, str] = {}
        for r in every:
            if await thread_root(ctx.db, r, memo) in muted_roots:
                mine["mute"].add(r["id"])
    own_votes: dict[int, list[int]] = {}
    if viewer is not None and polls:
        poll_ids = [p["id"] for p in polls.values()]
        for r in await ctx.db.fetchall(
            f"SELECT poll_id, choice FROM poll_votes WHERE account_id = ? AND poll_id IN ({_placeholders(poll_ids)})",
            [viewer["id"], *poll_ids],
        ):
            mine["voted"].add(r[0])
            own_votes.setdefault(r[0], []).append(r[1])

    def build(r: Row) -> dict[str, Any]:
        original = originals.get(r["reblog_of_id"]) if r["reblog_of_id"] else None
        poll = polls.get(r["id"])
        app = apps.get(r["app_id"]) if r["app_id"] else None
        c = counts.get(r["id"])
        return {
            "id": str(r["id"]),
            "uri": r["uri"],
            "url": r["url"] or r["uri"],
            "account": authors[r["account_id"]],
            "in_reply_to_id": str(r["in_reply_to_id"]) if r["in_reply_to_id"] else None,
            "in_reply_to_account_id": str(r["in_reply_to_account_id"]) if r["in_reply_to_account_id"] else None,
            "reblog": build(original) if original is not None else None,
            "content": r["content"] if original is None else "",
            "created_at": iso(r["published_at"]),
            "edited_at": iso(r["edited_at"]) if r["edited_at"] else None,
            "emojis": [],
            "replies_count": c[1] if c is not None else 0,
            "reblogs_count": c[2] if c is not None else 0,
            "favourites_count": c[3] if c is not None else 0,
            "reblogged": r["id"] in mine["boost"],
            "favourited": r["id"] in mine["fav"],
            "muted": r["id"] in mine["mute"],
            "bookmarked": r["id"] in mine["bookmark"],
            "pinned": r["id"] in mine["pin"],
            "sensitive": bool(r["sensitive"]),
            "spoiler_text": r["summary"] or "",
            "visibility": r["visibility"],
            "media_attachments": [_attachment(ctx, m, r["account_id"] in media_hidden) for m in media.get(r["id"], [])],
            "mentions": [{"id": str(a["id"]), "username": a["username"], "acct": acct(ctx, a), "url": a["url"] or a["uri"]}
                         for a in mentions.get(r["id"], [])],
            "tags": [{"name": t["name"], "url": f"{ctx.base_url}/tags/{t['name']}"} for t in tags.get(r["id"], [])],
            "card": None,
            "poll": _poll(poll, mine["voted"] if viewer is not None else None, own_votes.get(poll["id"], []))
            if poll else None,
            "application": {"name": app["name"], "website": app["website"]} if app else None,
            "language": r["language"],
            "text": None,
            "filtered": [],
        }

    return [build(r) for r in rows]


async def status(ctx: Context, row: Row, viewer: Row | None) -> dict[str, Any]:
    return (await statuses(ctx, [row], viewer))[0]
