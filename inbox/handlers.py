"""What each remote verb does, as a table from activity type to handler.

A handler runs after the activity was verified and stored. It returns the
outcome to record: "processed", or "ignored: why". Every handler is idempotent:
the same activity (or a replay of an undone one) changes nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from actors.local import instance_signer
from actors.remote import ActorError, fetch_actor, mark_gone
from fedi.clock import now, parse_iso
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.feeds import backfill, fan_out, notify
from fedi.http_client import FetchError
from fedi.jsonutil import dumps_str, loads_strict
from fedi.moderation.domains import is_silenced, is_suspended
from fedi.moderation.keyword_rules import check_rules
from fedi.moderation.reports import receive_flag
from fedi.origin import same_origin
from fedi.statuses import insert_status, record_edit, set_mentions, set_tags, tombstone
from inbox.move import on_move
from inbox.parse import NOTE_TYPES, ParseError, object_id, parse_note, visibility
from outbox.actions import send_follow_answer
from outbox.polls import add_vote, vote_problem

log = logging.getLogger("fedi.inbox")

Handler = Callable[[Context, dict[str, Any], Row], Awaitable[str]]
PROCESSED = "processed"
MAX_POLL_OPTIONS = 20
MAX_POLL_TITLE = 500


async def _local_account(ctx: Context, uri: str | None) -> Row | None:
    if uri is None:
        return None
    return await ctx.db.fetchone(
        "SELECT * FROM accounts WHERE uri = ? AND domain IS NULL AND actor_type != 'Application'", (uri,)
    )


async def on_follow(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    target = await _local_account(ctx, object_id(activity.get("object")))
    if target is None or target["suspended_at"] is not None:
        return "ignored: not a local account"
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM blocks WHERE account_id = ? AND target_account_id = ?", (target["id"], actor["id"])):
            await send_follow_answer(ctx, tx, target, actor, activity["id"], accept=False)
            return "processed: rejected (blocked)"
        existing = await tx.fetchone(
            "SELECT * FROM follows WHERE account_id = ? AND target_account_id = ?", (actor["id"], target["id"])
        )
        if existing:
            await tx.execute("UPDATE follows SET uri = ? WHERE id = ?", (activity["id"], existing["id"]))
            if existing["state"] == "accepted":
                await send_follow_answer(ctx, tx, target, actor, activity["id"], accept=True)
            return "processed: already known"
        # A silenced domain's accounts ask first, as Mastodon does.
        state = "pending" if target["locked"] or await is_silenced(ctx, actor["domain"]) else "accepted"
        await tx.execute(
            "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (tx.new_id(), actor["id"], target["id"], activity["id"], state, now()),
        )
        await notify(tx, target["id"], "follow" if state == "accepted" else "follow_request", actor["id"])
        if state == "accepted":
            await send_follow_answer(ctx, tx, target, actor, activity["id"], accept=True)
    return PROCESSED


async def _follow_answered(ctx: Context, activity: dict[str, Any], actor: Row, accepted: bool) -> str:
    """Accept/Reject of a Follow we sent. A Reject of an accepted follow (the peer cut it, e.g. by a
    domain block) is kept in severed_follows as 'rejected', so that the peer's later Accept of the
    same Follow reinstates it (fedi.moderation.enforce restores follows this way when a block is lifted).
    """
    obj = activity.get("object")
    follow_uri = object_id(obj)
    async with ctx.db.write() as tx:
        row = await tx.fetchone(
            "SELECT f.* FROM follows f WHERE f.uri = ? AND f.target_account_id = ?", (follow_uri, actor["id"])
        )
        if row is None and isinstance(obj, dict):
            row = await tx.fetchone(
                "SELECT f.* FROM follows f JOIN accounts a ON a.id = f.account_id"
                " WHERE f.target_account_id = ? AND a.uri = ? AND a.domain IS NULL",
                (actor["id"], object_id(obj.get("actor"))),
            )
        if row is None and accepted:
            row = await _reinstate(tx, follow_uri, actor)
        if row is None:
            return "ignored: no such follow"
        if accepted:
            await tx.execute("UPDATE follows SET state = 'accepted' WHERE id = ?", (row["id"],))
            await backfill(tx, row["account_id"], actor["id"])
        else:
            if row["state"] == "accepted" and row["uri"]:
                await tx.execute(
                    "INSERT INTO severed_follows (id, domain, account_id, target_account_id, uri, state, severed_at)"
                    " VALUES (?, ?, ?, ?, ?, 'rejected', ?)",
                    (tx.new_id(), actor["domain"], row["account_id"], actor["id"], row["uri"], now()),
                )
            await tx.execute("DELETE FROM follows WHERE id = ?", (row["id"],))
    return PROCESSED


async def _reinstate(tx: Tx, follow_uri: str | None, actor: Row) -> Row | None:
    """The follow `actor` once rejected after accepting it, back as it was (see _follow_answered)."""
    severed = await tx.fetchone(
        "SELECT * FROM severed_follows WHERE uri = ? AND target_account_id = ? AND state = 'rejected'"
        " AND restored_at IS NULL ORDER BY id DESC LIMIT 1", (follow_uri, actor["id"]),
    )
    if severed is None or await tx.fetchone(
        "SELECT 1 FROM follows WHERE account_id = ? AND target_account_id = ?", (severed["account_id"], actor["id"])
    ):
        return None
    ts = now()
    await tx.execute(
        "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at) VALUES (?, ?, ?, ?, 'accepted', ?)",
        (tx.new_id(), severed["account_id"], actor["id"], follow_uri, ts),
    )
    await tx.execute("UPDATE severed_follows SET restored_at = ? WHERE id = ?", (ts, severed["id"]))
    return await tx.fetchone("SELECT * FROM follows WHERE uri = ?", (follow_uri,))


async def on_accept(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    return await _follow_answered(ctx, activity, actor, accepted=True)


async def on_reject(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    return await _follow_answered(ctx, activity, actor, accepted=False)


async def on_undo(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    obj = activity.get("object")
    target = object_id(obj)
    kind = obj.get("type") if isinstance(obj, dict) else None
    async with ctx.db.write() as tx:
        statements = {
            "Follow": "DELETE FROM follows WHERE uri = ? AND account_id = ?",
            "Like": "DELETE FROM favourites WHERE uri = ? AND account_id = ?",
            "Block": "DELETE FROM blocks WHERE uri = ? AND account_id = ?",
            "Announce": "UPDATE statuses SET deleted_at = CAST(strftime('%s', 'now') AS REAL) WHERE uri = ? AND account_id = ?"
                        " AND reblog_of_id IS NOT NULL",
        }
        kinds = [kind] if kind in statements else list(statements)  # a bare URI: try each
        boost = await tx.fetchone("SELECT id FROM statuses WHERE uri = ? AND account_id = ? AND reblog_of_id IS NOT NULL"
                                  " AND deleted_at IS NULL", (target, actor["id"])) if "Announce" in kinds else None
        changed = 0
        for k in kinds:
            cur = await tx.execute(statements[k], (target, actor["id"]))
            changed += cur.rowcount
        if boost is not None:
            tx.publish("status.deleted", status_id=boost["id"], account_id=actor["id"])
        await tx.execute(
            "DELETE FROM home_feed WHERE status_id IN (SELECT id FROM statuses WHERE uri = ? AND account_id = ?"
            " AND deleted_at IS NOT NULL)", (target, actor["id"]),
        )
    return PROCESSED if changed else "ignored: nothing to undo"


async def _store_note(ctx: Context, tx: Tx, obj: dict[str, Any], author: Row) -> int | None:
    """Insert a remote note (already checked to belong to `author`); None if it is known or deleted."""
    note = parse_note(obj)
    if await tx.fetchone(
        "SELECT 1 FROM tombstones WHERE uri = ? AND (account_id IS NULL OR account_id = ?)", (note.id, author["id"])
    ):
        return None  # deleted by its author; another actor's Delete of an unseen id does not count (A4)
    if await tx.fetchone("SELECT 1 FROM statuses WHERE uri = ?", (note.id,)):
        return None  # never let a second Create rewrite a stored status (THREATS A3)
    parent = await tx.fetchone("SELECT id, account_id FROM statuses WHERE uri = ?", (note.in_reply_to,)) if note.in_reply_to else None
    mentioned = []
    for uri in note.mentions:
        row = await tx.fetchone("SELECT id FROM accounts WHERE uri = ?", (uri,))
        if row:
            mentioned.append(row["id"])
    vis = visibility(note.to, note.cc, author["followers_url"])
    ts = now()
    status_id = tx.new_id(int(min(note.published or ts, ts) * 1000))
    await insert_status(tx, status_id, {
        "uri": note.id, "url": note.url if note.url and same_origin(note.url, note.id) else note.id,
        "account_id": author["id"], "local": 0,
        "in_reply_to_id": parent["id"] if parent else None, "in_reply_to_uri": note.in_reply_to,
        "in_reply_to_account_id": parent["account_id"] if parent else None,
        "content": note.content, "summary": note.summary, "sensitive": int(note.sensitive or bool(note.summary)),
        "visibility": vis, "language": note.language, "to_json": dumps_str(note.to), "cc_json": dumps_str(note.cc),
        "published_at": note.published or ts, "created_at": ts,
    })
    await set_mentions(tx, status_id, mentioned)
    await set_tags(tx, status_id, note.hashtags)
    for position, att in enumerate(note.attachments):
        await tx.execute(
            "INSERT INTO media_attachments (id, status_id, account_id, type, media_type, remote_url, description,"
            " blurhash, width, height, position, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tx.new_id(), status_id, author["id"], att.kind, att.media_type, att.url, att.description,
             att.blurhash, att.width, att.height, position, ts),
        )
    await _store_poll(tx, status_id, obj)
    await fan_out(tx, status_id, author["id"], vis, mentioned)
    for account_id in mentioned:
        await notify(tx, account_id, "mention", author["id"], status_id)
    return status_id


async def _store_poll(tx: Tx, status_id: int, obj: dict[str, Any]) -> None:
    """A remote Question's options and counts, so local users see the poll and can vote on it.

    Titles are kept exactly (a vote names its option by title); counts change
    afterwards only by our own users' votes.
    """
    multiple = isinstance(obj.get("anyOf"), list)
    items = obj.get("anyOf") if multiple else obj.get("oneOf")
    if obj.get("type") != "Question" or not isinstance(items, list):
        return
    options: list[dict[str, Any]] = []
    for item in items[:MAX_POLL_OPTIONS]:
        title = item.get("name") if isinstance(item, dict) else None
        if not isinstance(title, str) or not title.strip() or len(title) > MAX_POLL_TITLE:
            continue
        replies = item.get("replies")
        count = replies.get("totalItems") if isinstance(replies, dict) else 0
        options.append({"title": title, "votes_count": count if isinstance(count, int) and 0 <= count < 10**9 else 0})
    if len(options) < 2:
        return
    ends = obj.get("endTime") or obj.get("closed")
    voters = obj.get("votersCount")
    await tx.execute(
        "INSERT INTO polls (id, status_id, options_json, multiple, expires_at, voters_count, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (tx.new_id(), status_id, dumps_str(options), int(multiple), parse_iso(ends) if isinstance(ends, str) else None,
         voters if isinstance(voters, int) and 0 <= voters < 10**9 else 0, now()),
    )


async def _poll_vote(ctx: Context, obj: dict[str, Any], voter: Row) -> str | None:
    """A remote vote on a local poll (Create(Note) with `name` = option, `inReplyTo` = the poll); None if not one."""
    async with ctx.db.write() as tx:
        poll = await tx.fetchone(
            "SELECT p.*, s.account_id AS author_id FROM polls p JOIN statuses s ON s.id = p.status_id"
            " WHERE s.uri = ? AND s.local = 1 AND s.deleted_at IS NULL"
            " AND (s.visibility IN ('public', 'unlisted')"
            "  OR EXISTS (SELECT 1 FROM mentions m WHERE m.status_id = s.id AND m.account_id = ?)"
            "  OR (s.visibility = 'private' AND EXISTS (SELECT 1 FROM follows f WHERE f.account_id = ?"
            "      AND f.target_account_id = s.account_id AND f.state = 'accepted')))",
            (object_id(obj.get("inReplyTo")), voter["id"], voter["id"]),
        )
        if poll is None:
            return None
        titles = [o["title"] for o in loads_strict(poll["options_json"])]
        if obj["name"] not in titles:
            return "ignored: not an option of the poll"
        choice = titles.index(obj["name"])
        voted = await tx.fetchone("SELECT 1 FROM poll_votes WHERE poll_id = ? AND account_id = ?", (poll["id"], voter["id"]))
        problem = vote_problem(poll, voter["id"], poll["author_id"], [choice], voted is not None and not poll["multiple"], now())
        if problem:
            return f"ignored: {problem}"
        added = await add_vote(tx, poll["id"], voter["id"], choice, object_id(obj), tx.new_id())
    return PROCESSED if added else "ignored: vote already counted"


async def on_create(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    obj = activity.get("object")
    if isinstance(obj, dict) and obj.get("type") == "Note" and isinstance(obj.get("name"), str) and obj.get("inReplyTo"):
        outcome = await _poll_vote(ctx, obj, actor)
        if outcome is not None:
            return outcome
    if not isinstance(obj, dict) or obj.get("type") not in NOTE_TYPES:
        return "ignored: not an embedded note"
    verdict = await check_rules(ctx, activity, obj)
    if verdict is not None:
        return "ignored: rejected by a keyword rule" if verdict == "reject" else "held: a keyword rule asks for review"
    async with ctx.db.write() as tx:
        stored = await _store_note(ctx, tx, obj, actor)
    return PROCESSED if stored else "ignored: already known or deleted"


async def on_update(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    obj = activity.get("object")
    if not isinstance(obj, dict):
        return "ignored: object not embedded"
    if object_id(obj) == actor["uri"]:
        # Never trust the payload's profile or key: refetch from the origin (THREATS S14).
        try:
            await fetch_actor(ctx, actor["uri"])
        except ActorError as exc:
            return f"ignored: refetch failed: {exc.reason}"
        return PROCESSED
    if obj.get("type") not in NOTE_TYPES:
        return "ignored: unsupported object"
    note = parse_note(obj)
    async with ctx.db.write() as tx:
        status = await tx.fetchone(
            "SELECT * FROM statuses WHERE uri = ? AND account_id = ? AND deleted_at IS NULL", (note.id, actor["id"])
        )
        if status is None:
            return "ignored: unknown status"
        at = note.updated or now()
        if status["edited_at"] and at <= status["edited_at"]:
            return "ignored: not newer"
        await record_edit(tx, status, at)
        await tx.execute(
            "UPDATE statuses SET content = ?, summary = ?, sensitive = ?, edited_at = ? WHERE id = ?",
            (note.content, note.summary, int(note.sensitive or bool(note.summary)), at, status["id"]),
        )
        await set_tags(tx, status["id"], note.hashtags)
        tx.publish("status.updated", status_id=status["id"])
    return PROCESSED


async def on_delete(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    target = object_id(activity.get("object"))
    if target == actor["uri"]:
        await mark_gone(ctx, actor["uri"])
        return PROCESSED
    async with ctx.db.write() as tx:
        ts = now()
        await tombstone(tx, target, actor["id"], ts)
        status = await tx.fetchone(
            "SELECT id FROM statuses WHERE uri = ? AND account_id = ? AND deleted_at IS NULL", (target, actor["id"])
        )
        if status is None:
            return "processed: tombstone only"
        await tx.execute("UPDATE statuses SET deleted_at = ? WHERE id = ?", (ts, status["id"]))
        await tx.execute("DELETE FROM home_feed WHERE status_id = ?", (status["id"],))
        tx.publish("status.deleted", status_id=status["id"], account_id=actor["id"])
    return PROCESSED


async def _local_status(ctx: Context, uri: str | None) -> Row | None:
    if uri is None:
        return None
    return await ctx.db.fetchone(
        "SELECT s.* FROM statuses s WHERE s.uri = ? AND s.local = 1 AND s.deleted_at IS NULL"
        " AND s.visibility IN ('public', 'unlisted', 'private')", (uri,)
    )


async def on_like(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    status = await _local_status(ctx, object_id(activity.get("object")))
    if status is None:
        return "ignored: not a local status"
    async with ctx.db.write() as tx:
        cur = await tx.execute(
            "INSERT OR IGNORE INTO favourites (id, account_id, status_id, uri, created_at) VALUES (?, ?, ?, ?, ?)",
            (tx.new_id(), actor["id"], status["id"], activity["id"], now()),
        )
        if cur.rowcount:
            await notify(tx, status["account_id"], "favourite", actor["id"], status["id"])
    return PROCESSED


async def _fetch_remote_note(ctx: Context, uri: str) -> tuple[dict[str, Any], Row] | None:
    """Fetch a boosted note from its origin; an embedded copy is never trusted (THREATS A5).

    Nothing is fetched from a blocked domain, nor taken from one a redirect led to (A11)."""
    if await is_suspended(ctx, uri):
        return None
    try:
        result = await ctx.http.fetch_json(uri, signer=await instance_signer(ctx))
        doc = result.document
        # The id must be the one asked for, and the host that answered (after redirects) its host (A7).
        if doc.get("id") != uri or not same_origin(result.url, uri) or doc.get("type") not in NOTE_TYPES:
            return None
        author_uri = object_id(doc.get("attributedTo"))
        if author_uri is None or not same_origin(author_uri, uri):
            return None
        from actors.remote import get_actor

        return doc, await get_actor(ctx, author_uri)
    except (FetchError, ActorError, ParseError):
        return None


async def on_announce(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    target = object_id(activity.get("object"))
    if target is None:
        return "ignored: no object"
    original = await ctx.db.fetchone(
        "SELECT * FROM statuses WHERE uri = ? AND deleted_at IS NULL AND visibility IN ('public', 'unlisted')", (target,)
    )
    if original is None:
        fetched = await _fetch_remote_note(ctx, target)
        if fetched is None:
            return "ignored: boosted object unavailable"
        doc, author = fetched
        async with ctx.db.write() as tx:
            await _store_note(ctx, tx, doc, author)
        original = await ctx.db.fetchone(
            "SELECT * FROM statuses WHERE uri = ? AND deleted_at IS NULL AND visibility IN ('public', 'unlisted')",
            (target,),
        )
        if original is None:
            return "ignored: boosted object not public"
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM statuses WHERE uri = ?", (activity["id"],)):
            return "ignored: already known"
        boost_id = tx.new_id()
        ts = now()
        await insert_status(tx, boost_id, {
            "uri": activity["id"], "url": activity["id"], "account_id": actor["id"], "local": 0,
            "reblog_of_id": original["id"], "visibility": "public", "published_at": ts, "created_at": ts,
        })
        await fan_out(tx, boost_id, actor["id"], "public")
        await notify(tx, original["account_id"], "reblog", actor["id"], original["id"])
    return PROCESSED


async def on_block(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    target = await _local_account(ctx, object_id(activity.get("object")))
    if target is None:
        return "ignored: not a local account"
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT OR IGNORE INTO blocks (id, account_id, target_account_id, uri, created_at) VALUES (?, ?, ?, ?, ?)",
            (tx.new_id(), actor["id"], target["id"], activity["id"], now()),
        )
        await tx.execute(
            "DELETE FROM follows WHERE (account_id = ? AND target_account_id = ?) OR (account_id = ? AND target_account_id = ?)",
            (actor["id"], target["id"], target["id"], actor["id"]),
        )
    return PROCESSED


async def on_flag(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    """A report from another instance about our accounts (unless its domain has reject_reports)."""
    return await receive_flag(ctx, activity, actor)


HANDLERS: dict[str, Handler] = {
    "Follow": on_follow,
    "Accept": on_accept,
    "Reject": on_reject,
    "Undo": on_undo,
    "Create": on_create,
    "Update": on_update,
    "Delete": on_delete,
    "Like": on_like,
    "Announce": on_announce,
    "Block": on_block,
    "Flag": on_flag,
    "Move": on_move,
}
