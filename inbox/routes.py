"""Inbox endpoints: verify, then store durably, then answer 202.

The activity is committed before the 202 goes out, so an accepted activity
survives a crash; the worker applies it afterwards. A failed check stores
nothing and is logged.
"""

from __future__ import annotations

import logging

from aiohttp import web

from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import NEW_ID
from fedi.errors import HttpError
from fedi.jsonutil import JsonError, loads_strict
from fedi.moderation.domains import is_suspended
from fedi.origin import netloc
from inbox.parse import NOTE_TYPES, ParseError, check_envelope, parse_note
from inbox.verify import Verified, check_authority, check_headers, check_ownership, known_key, verify_key
from outbox.queue import host_seen

log = logging.getLogger("fedi.inbox")

ACCEPTED_TYPES = ("application/activity+json", "application/ld+json", "application/json")


async def _read_body(request: web.Request) -> bytes:
    media = request.content_type.lower()
    if media not in ACCEPTED_TYPES:
        raise HttpError(415, "inbox accepts application/activity+json")
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise HttpError(413, "activity too large") from None


def _accepted() -> web.Response:
    """202 `{}` (what json_response({}) sends, without encoding it each time)."""
    return web.Response(body=b"{}", status=202, content_type="application/json", charset="utf-8")


async def _stored(ctx: Context, act_id: str) -> bool:
    return await ctx.db.fetchone("SELECT 1 FROM inbox_activities WHERE activity_id = ?", (act_id,)) is not None


async def receive(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    username = request.match_info.get("username")
    if username is not None:
        row = await ctx.db.fetchone(
            "SELECT suspended_at FROM accounts WHERE domain IS NULL AND lower(username) = lower(?)"
            " AND actor_type != 'Application'", (username,)
        )
        if row is None:
            raise HttpError(404, "no such inbox")
        if row["suspended_at"] is not None:
            raise HttpError(410, "gone")
    at = now()
    act_id = ""
    verified: Verified | None = None
    try:
        body = await _read_body(request)
        parsed = check_headers(ctx, request, body, at)
        if await is_suspended(ctx, parsed.key_id):  # before any key fetch, nothing stored
            raise HttpError(403, "domain is blocked")
        try:
            activity = loads_strict(body)
            act_id, kind, actor = check_envelope(activity)
            obj = activity.get("object")
            if kind in ("Create", "Update") and isinstance(obj, dict) and obj.get("type") in NOTE_TYPES:
                parse_note(obj, sanitize=False)  # validation only: the worker sanitises what it keeps
        except (JsonError, ParseError) as exc:
            raise HttpError(400, str(exc)) from None
        if await is_suspended(ctx, actor):
            raise HttpError(403, "domain is blocked")
        if kind == "Delete" and not await known_key(ctx, parsed.key_id):
            # A Delete from an actor we never knew: nothing to remove, and fetching a
            # deleted actor's key would only fail (Mastodon skips these too).
            return _accepted()
        verified = await verify_key(ctx, request, parsed)
        check_authority(ctx, activity, kind, actor, verified.signer)
        await check_ownership(ctx, kind, activity, actor)
    except HttpError as exc:
        if exc.status == 403 and verified is not None and await _stored(ctx, act_id):
            # A validly signed repeat of an activity already stored (a retry): the first copy
            # passed these checks, and what it did since may make them fail now (a Reject
            # removes the follow it answers). Answer it like the original; store nothing.
            return _accepted()
        log.info("inbox refused %s from %s: %s %s", request.path, request.remote, exc.status, exc.message)
        raise
    assert verified is not None
    # Group commit (fedi/db.py): this row joins whatever else queued while the previous
    # commit ran, and the 202 goes out only after that COMMIT. A duplicate activity id
    # inserts nothing (the UNIQUE activity_id) and is answered 202 like the original.
    # The row keeps a time-sortable id (NEW_ID, minted in the group's transaction under
    # Database.write's cross-process rule): the admin API pages held activities by id.
    await ctx.db.submit(
        "INSERT OR IGNORE INTO inbox_activities (id, activity_id, actor_uri, signer_key_id, type, body, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (NEW_ID, act_id, actor, verified.key_id, kind, body.decode(), at),
        after_commit=ctx.wake_inbox,
    )
    await host_seen(ctx, netloc(actor))
    return _accepted()


def setup(app: web.Application) -> None:
    app.router.add_post("/inbox", receive)
    app.router.add_post("/users/{username}/inbox", receive)
    app.router.add_post("/actor/inbox", receive)
