"""Every local verb: one transaction writes the model rows, the frozen activity and its deliveries.

The client API, the web pages and the CLI all call these; nothing else writes
outgoing activities. After commit the delivery worker is woken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from actors import urls
from actors.documents import actor_document
from fedi.clock import iso_seconds, now
from fedi.content import find_hashtags, find_mentions, render_post
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.feeds import backfill, fan_out, notify
from fedi.jsonutil import dumps_str, loads_strict
from fedi.moderation.domains import deliverable
from fedi.statuses import insert_status, record_edit, set_mentions, set_tags, tombstone
from outbox.queue import enqueue_deliveries
from outbox.serialize import PUBLIC, note, with_context

MAX_STATUS_CHARS = 5000
MAX_REMOTE_MENTION_LOOKUPS = 5
VISIBILITIES = ("public", "unlisted", "private", "direct")


class ActionError(Exception):
    """A local action that cannot be done; `status` is the HTTP status an API should answer."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PollRequest:
    options: tuple[str, ...]
    expires_in: int
    multiple: bool = False
    hide_totals: bool = False


@dataclass(frozen=True)
class PostRequest:
    text: str
    visibility: str = "public"
    spoiler_text: str = ""
    sensitive: bool = False
    in_reply_to_id: int | None = None
    language: str | None = None
    media_ids: tuple[int, ...] = ()
    poll: PollRequest | None = None
    app_id: int | None = None


MAX_MEDIA = 4
MAX_POLL_OPTIONS = 4
MAX_POLL_OPTION_CHARS = 50


def check_poll(poll: PollRequest | None, has_media: bool) -> None:
    if poll is None:
        return
    if has_media:
        raise ActionError("a post can't have both media and a poll")
    if not 2 <= len(poll.options) <= MAX_POLL_OPTIONS:
        raise ActionError(f"a poll needs 2 to {MAX_POLL_OPTIONS} options")
    if any(not o.strip() or len(o) > MAX_POLL_OPTION_CHARS for o in poll.options):
        raise ActionError(f"poll options must be 1 to {MAX_POLL_OPTION_CHARS} characters")
    if len(set(poll.options)) != len(poll.options):
        raise ActionError("poll options must be different")
    if not 300 <= poll.expires_in <= 2_629_746:
        raise ActionError("poll duration must be between 5 minutes and a month")


async def _attach_media(tx: Tx, account: Row, status_id: int, media_ids: tuple[int, ...]) -> None:
    """Only the author's own, not yet attached uploads (THREATS M3)."""
    for position, media_id in enumerate(media_ids):
        cur = await tx.execute(
            "UPDATE media_attachments SET status_id = ?, position = ? WHERE id = ? AND account_id = ? AND status_id IS NULL",
            (status_id, position, media_id, account["id"]),
        )
        if cur.rowcount != 1:
            raise ActionError("media attachment not found or already used")


def _inbox(account: Row) -> str | None:
    """Where to deliver to an account: its host's shared inbox when it has one."""
    return account["shared_inbox_url"] or account["inbox_url"]


async def _follower_inboxes(tx: Tx, account_id: int) -> set[str]:
    rows = await tx.fetchall(
        "SELECT DISTINCT coalesce(a.shared_inbox_url, a.inbox_url) AS inbox FROM follows f"
        " JOIN accounts a ON a.id = f.account_id"
        " WHERE f.target_account_id = ? AND f.state = 'accepted' AND a.domain IS NOT NULL AND a.gone_at IS NULL",
        (account_id,),
    )
    return {r["inbox"] for r in rows if r["inbox"]}


async def publish(
    ctx: Context, tx: Tx, account: Row, activity: dict[str, Any], inboxes: set[str], *,
    public: bool = False, object_uri: str | None = None, row_id: int | None = None,
) -> None:
    """Store the activity with its frozen bytes and queue one delivery per distinct inbox (none to a blocked domain)."""
    inboxes = await deliverable(ctx, inboxes, activity["type"])
    body = dumps_str(with_context(activity))
    row_id = row_id or tx.new_id()
    ts = now()
    await tx.execute(
        "INSERT INTO outbox_activities (id, uri, account_id, type, object_uri, public, body, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (row_id, activity["id"], account["id"], activity["type"], object_uri, int(public), body, ts),
    )
    if inboxes:
        await enqueue_deliveries(tx, row_id, sorted(inboxes), ts)
        tx.after_commit.append(ctx.wake_delivery)


async def _undo(ctx: Context, tx: Tx, account: Row, original: tuple[str, str, str], inboxes: set[str]) -> None:
    """Withdraw one of our earlier activities, given as (its id, its type, its object), as we sent it."""
    uri, kind, obj = original
    row_id, activity = new_activity(
        ctx, tx, "Undo", account, {"id": uri, "type": kind, "actor": account["uri"], "object": obj}
    )
    await publish(ctx, tx, account, activity, inboxes, row_id=row_id)


def new_activity(ctx: Context, tx: Tx, kind: str, actor: Row, obj: Any, **extra: Any) -> tuple[int, dict[str, Any]]:
    row_id = tx.new_id()
    return row_id, {"id": urls.activity(ctx.base_url, row_id), "type": kind, "actor": actor["uri"], "object": obj, **extra}


async def _resolve_mentions(ctx: Context, text: str) -> list[Row]:
    """Known accounts for each @mention; unknown remote ones via WebFinger, a few per post (THREATS R3)."""
    from actors.remote import ActorError, get_actor
    from actors.webfinger import resolve_handle

    found: list[Row] = []
    lookups = 0
    for ref in find_mentions(text):
        domain = None if ref.domain in (None, ctx.domain.lower()) else ref.domain
        row = await ctx.db.fetchone(
            "SELECT * FROM accounts WHERE lower(username) = lower(?) AND domain IS ? AND actor_type != 'Application'"
            " AND suspended_at IS NULL AND gone_at IS NULL",
            (ref.username, domain),
        )
        if row is None and domain is not None and lookups < MAX_REMOTE_MENTION_LOOKUPS:
            lookups += 1
            try:
                row = await get_actor(ctx, await resolve_handle(ctx, f"{ref.username}@{domain}"))
            except ActorError:
                row = None
        if row is not None:
            found.append(row)
    return found


def _addressing(account: Row, visibility: str, mentioned: list[Row]) -> tuple[list[str], list[str]]:
    followers = account["followers_url"]
    mention_uris = [m["uri"] for m in mentioned]
    if visibility == "public":
        return [PUBLIC], [followers, *mention_uris]
    if visibility == "unlisted":
        return [followers], [PUBLIC, *mention_uris]
    if visibility == "private":
        return [followers], mention_uris
    return mention_uris, []


def _mention_keys(ctx: Context, mentioned: list[Row]) -> dict[tuple[str, str | None], str]:
    keys: dict[tuple[str, str | None], str] = {}
    for m in mentioned:
        url = m["url"] or m["uri"]
        if m["domain"] is None:
            keys[(m["username"].lower(), None)] = url
            keys[(m["username"].lower(), ctx.domain.lower())] = url
        else:
            keys[(m["username"].lower(), m["domain"].lower())] = url
    return keys


async def _status_inboxes(tx: Tx, account: Row, visibility: str, mentioned: list[Row]) -> set[str]:
    inboxes = set() if visibility == "direct" else await _follower_inboxes(tx, account["id"])
    inboxes |= {i for m in mentioned if m["domain"] is not None and (i := _inbox(m))}
    return inboxes


async def create_status(ctx: Context, account: Row, req: PostRequest) -> Row:
    """Publish a local post: Markdown rendered, mentions and tags linked, Create(Note) delivered."""
    if account["moved_to_uri"]:
        raise ActionError(f"this account has moved to {account['moved_to_uri']}")
    text = req.text.strip()
    if not text and not req.media_ids:
        raise ActionError("text can't be blank")
    if len(text) > MAX_STATUS_CHARS:
        raise ActionError(f"text is longer than {MAX_STATUS_CHARS} characters")
    if req.visibility not in VISIBILITIES:
        raise ActionError("unknown visibility")
    if len(req.spoiler_text) > 1000:
        raise ActionError("content warning is too long")
    if len(req.media_ids) > MAX_MEDIA:
        raise ActionError(f"at most {MAX_MEDIA} media attachments")
    check_poll(req.poll, bool(req.media_ids))
    parent = None
    if req.in_reply_to_id is not None:
        parent = await ctx.db.fetchone(
            "SELECT s.*, a.uri AS author_uri FROM statuses s JOIN accounts a ON a.id = s.account_id"
            " WHERE s.id = ? AND s.deleted_at IS NULL", (req.in_reply_to_id,)
        )
        if parent is None:
            raise ActionError("the status replied to does not exist", 404)
    mentioned = await _resolve_mentions(ctx, text)
    if parent is not None and parent["account_id"] != account["id"] and all(m["id"] != parent["account_id"] for m in mentioned):
        replied = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (parent["account_id"],))
        if replied is not None:
            mentioned.append(replied)
    tags = find_hashtags(text)
    html = render_post(text, _mention_keys(ctx, mentioned), lambda t: urls.tag(ctx.base_url, t))
    to, cc = _addressing(account, req.visibility, mentioned)
    ts = now()
    async with ctx.db.write() as tx:
        status_id = tx.new_id()
        uri = urls.status(ctx.base_url, account["username"], status_id)
        await insert_status(tx, status_id, {
            "uri": uri, "url": urls.status_url(ctx.base_url, account["username"], status_id),
            "account_id": account["id"], "local": 1,
            "in_reply_to_id": parent["id"] if parent else None,
            "in_reply_to_uri": parent["uri"] if parent else None,
            "in_reply_to_account_id": parent["account_id"] if parent else None,
            "content": html, "source_text": text, "summary": req.spoiler_text.strip(),
            "sensitive": int(req.sensitive or bool(req.spoiler_text.strip())), "visibility": req.visibility,
            "language": req.language, "to_json": dumps_str(to), "cc_json": dumps_str(cc),
            "published_at": ts, "created_at": ts, "app_id": req.app_id,
        })
        await _attach_media(tx, account, status_id, req.media_ids)
        if req.poll is not None:
            await tx.execute(
                "INSERT INTO polls (id, status_id, options_json, multiple, hide_totals, expires_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tx.new_id(), status_id, dumps_str([{"title": o, "votes_count": 0} for o in req.poll.options]),
                 int(req.poll.multiple), int(req.poll.hide_totals), ts + req.poll.expires_in, ts),
            )
        await set_mentions(tx, status_id, [m["id"] for m in mentioned])
        await set_tags(tx, status_id, tags)
        await fan_out(tx, status_id, account["id"], req.visibility, [m["id"] for m in mentioned])
        for m in mentioned:
            await notify(tx, m["id"], "mention", account["id"], status_id)
        status = await tx.fetchone("SELECT * FROM statuses WHERE id = ?", (status_id,))
        assert status is not None
        obj = await _note_in_tx(ctx, tx, status, account)
        activity = {"id": f"{uri}/activity", "type": "Create", "actor": account["uri"],
                    "published": obj["published"], "to": to, "cc": cc, "object": obj}
        await publish(ctx, tx, account, activity, await _status_inboxes(tx, account, req.visibility, mentioned),
                       public=req.visibility in ("public", "unlisted"), object_uri=uri)
    return status


async def _note_in_tx(ctx: Context, tx: Tx, status: Row, account: Row) -> dict[str, Any]:
    """Serialise inside the write transaction (the reader cannot see uncommitted rows)."""
    return await note(tx, ctx.base_url, status, account)  # type: ignore[arg-type]


async def _own_status(ctx: Context, account: Row, status_id: int) -> Row:
    status = await ctx.db.fetchone(
        "SELECT * FROM statuses WHERE id = ? AND account_id = ? AND deleted_at IS NULL AND reblog_of_id IS NULL",
        (status_id, account["id"]),
    )
    if status is None:
        raise ActionError("status not found", 404)
    return status


async def _mentioned(tx: Tx, status_id: int) -> list[Row]:
    return await tx.fetchall(
        "SELECT a.* FROM mentions m JOIN accounts a ON a.id = m.account_id WHERE m.status_id = ?", (status_id,)
    )


async def edit_status(ctx: Context, account: Row, status_id: int, text: str, spoiler_text: str | None = None,
                      sensitive: bool | None = None) -> Row:
    """Edit a local post; the previous version goes to the history and Update(Note) carries `updated`."""
    status = await _own_status(ctx, account, status_id)
    text = text.strip()
    if not text or len(text) > MAX_STATUS_CHARS:
        raise ActionError(f"text must be 1 to {MAX_STATUS_CHARS} characters")
    async with ctx.db.write() as tx:
        mentioned = await _mentioned(tx, status_id)
        html = render_post(text, _mention_keys(ctx, mentioned), lambda t: urls.tag(ctx.base_url, t))
        ts = now()
        await record_edit(tx, status, ts)
        summary = status["summary"] if spoiler_text is None else spoiler_text.strip()
        await tx.execute(
            "UPDATE statuses SET content = ?, source_text = ?, summary = ?, sensitive = ?, edited_at = ? WHERE id = ?",
            (html, text, summary, int(bool(summary) or (status["sensitive"] if sensitive is None else sensitive)),
             ts, status_id),
        )
        await set_tags(tx, status_id, find_hashtags(text))
        tx.publish("status.updated", status_id=status_id)
        updated = await tx.fetchone("SELECT * FROM statuses WHERE id = ?", (status_id,))
        assert updated is not None
        obj = await _note_in_tx(ctx, tx, updated, account)
        row_id, activity = new_activity(ctx, tx, "Update", account, obj, to=obj["to"], cc=obj["cc"])
        await publish(ctx, tx, account, activity, await _status_inboxes(tx, account, status["visibility"], mentioned),
                       object_uri=status["uri"], row_id=row_id)
    return updated


async def delete_status(ctx: Context, account: Row, status_id: int) -> None:
    """Delete a local post: a Tombstone stays behind, and Delete goes where the post went."""
    status = await _own_status(ctx, account, status_id)
    async with ctx.db.write() as tx:
        ts = now()
        mentioned = await _mentioned(tx, status_id)
        await tx.execute("UPDATE statuses SET deleted_at = ? WHERE id = ?", (ts, status_id))
        await tx.execute("DELETE FROM home_feed WHERE status_id = ?", (status_id,))
        tx.publish("status.deleted", status_id=status_id, account_id=account["id"])
        await tombstone(tx, status["uri"], account["id"], ts)
        to, cc = loads_list(status["to_json"]), loads_list(status["cc_json"])
        row_id, activity = new_activity(
            ctx, tx, "Delete", account, {"id": status["uri"], "type": "Tombstone"}, to=to, cc=cc
        )
        await publish(ctx, tx, account, activity, await _status_inboxes(tx, account, status["visibility"], mentioned),
                       object_uri=status["uri"], row_id=row_id)


def loads_list(text: str) -> list[Any]:
    value = loads_strict(text)
    return value if isinstance(value, list) else []


@dataclass(frozen=True)
class FollowOptions:
    """Mastodon's follow options; None leaves an existing follow's value as it is (a new one takes the default)."""

    reblogs: bool | None = None  # boosts enter the home feed (default True)
    notify: bool | None = None  # a `status` notification for each new post (default False)
    languages: tuple[str, ...] | None = None  # only posts in these languages; () = every language (the default)


def _languages_json(languages: tuple[str, ...]) -> str | None:
    return dumps_str(list(languages)) if languages else None


async def follow(ctx: Context, account: Row, target: Row, options: FollowOptions = FollowOptions()) -> str:
    """Follow an account; returns "following" or "requested" (locked or remote, until Accept).

    Following again changes only the options (as Mastodon does): no new Follow is sent.
    """
    if target["id"] == account["id"]:
        raise ActionError("you can't follow yourself")
    if target["gone_at"] is not None or target["suspended_at"] is not None:
        raise ActionError("that account is gone", 404)
    async with ctx.db.write() as tx:
        existing = await tx.fetchone(
            "SELECT id, state FROM follows WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"])
        )
        if existing:
            if options != FollowOptions():
                await tx.execute(
                    "UPDATE follows SET show_reblogs = coalesce(?, show_reblogs), notify = coalesce(?, notify),"
                    " languages_json = CASE WHEN ? THEN ? ELSE languages_json END WHERE id = ?",
                    (None if options.reblogs is None else int(options.reblogs),
                     None if options.notify is None else int(options.notify),
                     options.languages is not None, _languages_json(options.languages or ()), existing["id"]),
                )
            return "following" if existing["state"] == "accepted" else "requested"
        row_id, activity = new_activity(ctx, tx, "Follow", account, target["uri"])
        local_auto = target["domain"] is None and not target["locked"]
        state = "accepted" if local_auto else "pending"
        await tx.execute(
            "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at, show_reblogs, notify,"
            " languages_json) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tx.new_id(), account["id"], target["id"], activity["id"], state, now(),
             int(options.reblogs is not False), int(bool(options.notify)), _languages_json(options.languages or ())),
        )
        if target["domain"] is None:
            await notify(tx, target["id"], "follow" if local_auto else "follow_request", account["id"])
            if local_auto:
                await backfill(tx, account["id"], target["id"])
        else:
            await publish(ctx, tx, account, activity, {target["inbox_url"]}, object_uri=target["uri"], row_id=row_id)
    return "following" if state == "accepted" else "requested"


async def unfollow(ctx: Context, account: Row, target: Row) -> None:
    async with ctx.db.write() as tx:
        row = await tx.fetchone(
            "SELECT * FROM follows WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"])
        )
        if row is None:
            return
        await tx.execute("DELETE FROM follows WHERE id = ?", (row["id"],))
        await tx.execute(
            "DELETE FROM home_feed WHERE account_id = ? AND status_id IN (SELECT id FROM statuses WHERE account_id = ?)",
            (account["id"], target["id"]),
        )
        await tx.execute(
            "DELETE FROM list_accounts WHERE account_id = ? AND list_id IN (SELECT id FROM lists WHERE account_id = ?)",
            (target["id"], account["id"]),
        )
        if target["domain"] is not None:
            await _undo(ctx, tx, account, (row["uri"], "Follow", target["uri"]), {target["inbox_url"]})


async def answer_follow_request(ctx: Context, account: Row, follower: Row, accept: bool) -> None:
    """Accept or reject a pending follow of a locked account."""
    async with ctx.db.write() as tx:
        row = await tx.fetchone(
            "SELECT * FROM follows WHERE account_id = ? AND target_account_id = ? AND state = 'pending'",
            (follower["id"], account["id"]),
        )
        if row is None:
            raise ActionError("no such follow request", 404)
        if accept:
            await tx.execute("UPDATE follows SET state = 'accepted' WHERE id = ?", (row["id"],))
        else:
            await tx.execute("DELETE FROM follows WHERE id = ?", (row["id"],))
        if follower["domain"] is not None:
            await send_follow_answer(ctx, tx, account, follower, row["uri"], accept)
        elif accept:
            await backfill(tx, follower["id"], account["id"])


async def send_follow_answer(ctx: Context, tx: Tx, account: Row, follower: Row, follow_uri: str, accept: bool) -> None:
    """Accept/Reject a remote Follow (also used by the inbox when it auto-accepts)."""
    follow_obj = {"id": follow_uri, "type": "Follow", "actor": follower["uri"], "object": account["uri"]}
    row_id, activity = new_activity(ctx, tx, "Accept" if accept else "Reject", account, follow_obj)
    await publish(ctx, tx, account, activity, {follower["inbox_url"]}, row_id=row_id)


async def _visible_status(ctx: Context, status_id: int) -> tuple[Row, Row]:
    status = await ctx.db.fetchone(
        "SELECT * FROM statuses WHERE id = ? AND deleted_at IS NULL AND visibility IN ('public', 'unlisted')",
        (status_id,),
    )
    if status is None:
        raise ActionError("status not found", 404)
    author = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (status["account_id"],))
    assert author is not None
    return status, author


async def favourite(ctx: Context, account: Row, status_id: int) -> None:
    status, author = await _visible_status(ctx, status_id)
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM favourites WHERE account_id = ? AND status_id = ?", (account["id"], status_id)):
            return
        row_id, activity = new_activity(ctx, tx, "Like", account, status["uri"])
        await tx.execute(
            "INSERT INTO favourites (id, account_id, status_id, uri, created_at) VALUES (?, ?, ?, ?, ?)",
            (tx.new_id(), account["id"], status_id, activity["id"], now()),
        )
        await notify(tx, author["id"], "favourite", account["id"], status_id)
        if author["domain"] is not None:
            await publish(ctx, tx, account, activity, {author["inbox_url"]}, object_uri=status["uri"], row_id=row_id)


async def unfavourite(ctx: Context, account: Row, status_id: int) -> None:
    status, author = await _visible_status(ctx, status_id)
    async with ctx.db.write() as tx:
        fav = await tx.fetchone("SELECT * FROM favourites WHERE account_id = ? AND status_id = ?", (account["id"], status_id))
        if fav is None:
            return
        await tx.execute("DELETE FROM favourites WHERE id = ?", (fav["id"],))
        if author["domain"] is not None:
            await _undo(ctx, tx, account, (fav["uri"], "Like", status["uri"]), {author["inbox_url"]})


async def reblog(ctx: Context, account: Row, status_id: int) -> Row:
    """Boost a public post: a status row pointing at the original, Announce to followers and the author."""
    status, author = await _visible_status(ctx, status_id)
    async with ctx.db.write() as tx:
        existing = await tx.fetchone(
            "SELECT * FROM statuses WHERE account_id = ? AND reblog_of_id = ? AND deleted_at IS NULL",
            (account["id"], status_id),
        )
        if existing:
            return existing
        row_id, activity = new_activity(
            ctx, tx, "Announce", account, status["uri"], to=[PUBLIC], cc=[author["uri"], account["followers_url"]],
            published=iso_seconds(now()),
        )
        boost_id = tx.new_id()
        ts = now()
        await insert_status(tx, boost_id, {
            "uri": activity["id"], "url": activity["id"], "account_id": account["id"], "local": 1,
            "reblog_of_id": status_id, "visibility": "public", "published_at": ts, "created_at": ts,
        })
        await fan_out(tx, boost_id, account["id"], "public")
        await notify(tx, author["id"], "reblog", account["id"], status_id)
        inboxes = await _follower_inboxes(tx, account["id"])
        if author["domain"] is not None and (inbox := _inbox(author)):
            inboxes.add(inbox)
        await publish(ctx, tx, account, activity, inboxes, public=True, object_uri=status["uri"], row_id=row_id)
        boost = await tx.fetchone("SELECT * FROM statuses WHERE id = ?", (boost_id,))
    assert boost is not None
    return boost


async def unreblog(ctx: Context, account: Row, status_id: int) -> None:
    status, author = await _visible_status(ctx, status_id)
    async with ctx.db.write() as tx:
        boost = await tx.fetchone(
            "SELECT * FROM statuses WHERE account_id = ? AND reblog_of_id = ? AND deleted_at IS NULL",
            (account["id"], status_id),
        )
        if boost is None:
            return
        await tx.execute("UPDATE statuses SET deleted_at = ? WHERE id = ?", (now(), boost["id"]))
        await tx.execute("DELETE FROM home_feed WHERE status_id = ?", (boost["id"],))
        tx.publish("status.deleted", status_id=boost["id"], account_id=account["id"])
        inboxes = await _follower_inboxes(tx, account["id"])
        if author["domain"] is not None and (inbox := _inbox(author)):
            inboxes.add(inbox)
        await _undo(ctx, tx, account, (boost["uri"], "Announce", status["uri"]), inboxes)


async def block(ctx: Context, account: Row, target: Row) -> None:
    """Block an account: follows both ways end, and a remote target is told with Block."""
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM blocks WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"])):
            return
        row_id, activity = new_activity(ctx, tx, "Block", account, target["uri"])
        await tx.execute(
            "INSERT INTO blocks (id, account_id, target_account_id, uri, created_at) VALUES (?, ?, ?, ?, ?)",
            (tx.new_id(), account["id"], target["id"], activity["id"], now()),
        )
        await tx.execute(
            "DELETE FROM follows WHERE (account_id = ? AND target_account_id = ?) OR (account_id = ? AND target_account_id = ?)",
            (account["id"], target["id"], target["id"], account["id"]),
        )
        if target["domain"] is not None:
            await publish(ctx, tx, account, activity, {target["inbox_url"]}, row_id=row_id)


async def unblock(ctx: Context, account: Row, target: Row) -> None:
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT * FROM blocks WHERE account_id = ? AND target_account_id = ?", (account["id"], target["id"]))
        if row is None:
            return
        await tx.execute("DELETE FROM blocks WHERE id = ?", (row["id"],))
        if target["domain"] is not None:
            await _undo(ctx, tx, account, (row["uri"], "Block", target["uri"]), {target["inbox_url"]})


async def update_profile(ctx: Context, account: Row, *, display_name: str | None = None,
                         summary: str | None = None, locked: bool | None = None) -> Row:
    """Change profile fields and send Update(Person) to every follower's inbox."""
    sets: dict[str, Any] = {}
    if display_name is not None:
        if len(display_name) > 100:
            raise ActionError("display name is longer than 100 characters")
        sets["display_name"] = display_name
    if summary is not None:
        if len(summary) > 2000:
            raise ActionError("bio is longer than 2000 characters")
        sets["summary"] = render_post(summary, {}, lambda t: urls.tag(ctx.base_url, t)) if summary else ""
    if locked is not None:
        sets["locked"] = int(locked)
    async with ctx.db.write() as tx:
        if sets:
            await tx.execute(
                f"UPDATE accounts SET {', '.join(k + ' = ?' for k in sets)}, updated_at = ? WHERE id = ?",
                [*sets.values(), now(), account["id"]],
            )
        updated = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (account["id"],))
        assert updated is not None
        doc = actor_document(ctx.config, updated)
        doc.pop("@context", None)
        row_id, activity = new_activity(ctx, tx, "Update", updated, doc, to=[PUBLIC])
        await publish(ctx, tx, updated, activity, await _follower_inboxes(tx, account["id"]), row_id=row_id)
    return updated
