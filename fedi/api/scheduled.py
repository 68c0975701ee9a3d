"""Scheduled statuses: the post's parameters are stored now and published later by `ScheduledPublisher`.

Parameters are checked when the post is scheduled (a client learns of bad input
at once, and someone else's media id is refused then, THREATS M3); whatever can
still fail at publishing time (a deleted parent, media used meanwhile) is logged
and the scheduled post dropped, as Mastodon does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import authenticate, require
from fedi.api.owned import own_row
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.statuses import post_request
from fedi.api.visibility import can_see
from fedi.clock import iso, now, parse_iso
from fedi.background import BackgroundLoop
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import dumps_str, loads_strict
from outbox.actions import MAX_MEDIA, MAX_STATUS_CHARS, VISIBILITIES, ActionError, PollRequest, PostRequest
from outbox.actions import check_poll, create_status

log = logging.getLogger("fedi.scheduled")

MIN_LEAD_SECONDS = 300
MAX_SCHEDULED = 300
BATCH = 50
POLL_SECONDS = 5.0


def _invalid(message: str) -> HttpError:
    return HttpError(422, f"Validation failed: {message}")


def _check_time(at: float) -> None:
    if at < now() + MIN_LEAD_SECONDS:
        raise _invalid("Scheduled at The scheduled date must be in the future")


def _stored(req: PostRequest) -> dict[str, Any]:
    """Mastodon's ScheduledStatus `params` (ids as strings)."""
    poll = req.poll
    return {
        "text": req.text,
        "poll": {"options": list(poll.options), "expires_in": poll.expires_in, "multiple": poll.multiple,
                 "hide_totals": poll.hide_totals} if poll else None,
        "media_ids": [str(m) for m in req.media_ids] or None,
        "sensitive": req.sensitive,
        "spoiler_text": req.spoiler_text or None,
        "visibility": req.visibility,
        "language": req.language,
        "scheduled_at": None,
        "idempotency": None,
        "with_rate_limit": False,
        "in_reply_to_id": str(req.in_reply_to_id) if req.in_reply_to_id is not None else None,
        "application_id": req.app_id,
    }


def _request(stored: dict[str, Any]) -> PostRequest:
    poll = stored.get("poll")
    reply = stored.get("in_reply_to_id")
    return PostRequest(
        text=stored["text"],
        visibility=stored["visibility"],
        spoiler_text=stored.get("spoiler_text") or "",
        sensitive=bool(stored.get("sensitive")),
        in_reply_to_id=int(reply) if reply else None,
        language=stored.get("language"),
        media_ids=tuple(int(m) for m in stored.get("media_ids") or ()),
        poll=PollRequest(tuple(poll["options"]), int(poll["expires_in"]), bool(poll["multiple"]),
                         bool(poll["hide_totals"])) if poll else None,
        app_id=stored.get("application_id"),
    )


async def _check_request(ctx: Context, account: Row, req: PostRequest) -> None:
    """What create_status would refuse, asked now rather than at publishing time."""
    if not req.text.strip() and not req.media_ids:
        raise _invalid("Text can't be blank")
    if len(req.text.strip()) > MAX_STATUS_CHARS:
        raise _invalid(f"text is longer than {MAX_STATUS_CHARS} characters")
    if req.visibility not in VISIBILITIES:
        raise _invalid("unknown visibility")
    if len(req.media_ids) > MAX_MEDIA:
        raise _invalid(f"at most {MAX_MEDIA} media attachments")
    try:
        check_poll(req.poll, bool(req.media_ids))
    except ActionError as exc:
        raise _invalid(str(exc)) from None
    if req.media_ids:
        ids = list(set(req.media_ids))
        mine = await ctx.db.fetchval(
            f"SELECT count(*) FROM media_attachments WHERE id IN ({','.join('?' for _ in ids)})"
            " AND account_id = ? AND status_id IS NULL", [*ids, account["id"]],
        )
        if mine != len(ids) or len(ids) != len(req.media_ids):
            raise _invalid("media attachment not found or already used")
    if req.in_reply_to_id is not None:
        parent = await ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (req.in_reply_to_id,))
        if parent is None or not await can_see(ctx, parent, account):
            raise HttpError(404, "Record not found")


async def _entity(ctx: Context, row: Row) -> dict[str, Any]:
    stored = loads_strict(row["params_json"])
    ids = [int(m) for m in stored.get("media_ids") or ()]
    media = await ctx.db.fetchall(
        f"SELECT * FROM media_attachments WHERE id IN ({','.join('?' for _ in ids)}) AND account_id = ?",
        [*ids, row["account_id"]],
    ) if ids else []
    by_id = {m["id"]: m for m in media}
    return {
        "id": str(row["id"]),
        "scheduled_at": iso(row["scheduled_at"]),
        "params": stored,
        "media_attachments": [entities.media_attachment(ctx, by_id[i]) for i in ids if i in by_id],
    }


async def schedule(request: web.Request, account: Row, params: Params, at: float) -> web.Response:
    """POST /api/v1/statuses with scheduled_at: answers a ScheduledStatus instead of a Status."""
    ctx = request.app[CTX]
    auth = await authenticate(request)
    _check_time(at)
    req = post_request(params, auth.app_id if auth else None)
    await _check_request(ctx, account, req)
    async with ctx.db.write() as tx:
        count = await tx.fetchone("SELECT count(*) AS n FROM scheduled_statuses WHERE account_id = ?", (account["id"],))
        if count is not None and count["n"] >= MAX_SCHEDULED:
            raise _invalid(f"at most {MAX_SCHEDULED} scheduled posts")
        row_id = tx.new_id()
        await tx.execute(
            "INSERT INTO scheduled_statuses (id, account_id, scheduled_at, params_json, created_at) VALUES (?, ?, ?, ?, ?)",
            (row_id, account["id"], at, dumps_str(_stored(req)), now()),
        )
        row = await tx.fetchone("SELECT * FROM scheduled_statuses WHERE id = ?", (row_id,))
    assert row is not None
    return json_response(await _entity(ctx, row))


async def _own(request: web.Request, scope: str) -> tuple[Context, Row]:
    """The caller's scheduled status with the path's id; someone else's is simply not found."""
    auth = await require(request, scope)
    ctx = request.app[CTX]
    return ctx, await own_row(ctx, "scheduled_statuses", request.match_info["id"], auth.account["id"])


async def index(request: web.Request) -> web.Response:
    """GET /api/v1/scheduled_statuses"""
    auth = await require(request, "read:statuses")
    ctx = request.app[CTX]
    page = page_from(await read_params(request))
    rows = await fetch_page(ctx, page, "SELECT * FROM scheduled_statuses WHERE account_id = ?", [auth.account["id"]])
    return paged_json(request, [await _entity(ctx, r) for r in rows], [r["id"] for r in rows])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/scheduled_statuses/{id}"""
    ctx, row = await _own(request, "read:statuses")
    return json_response(await _entity(ctx, row))


async def update(request: web.Request) -> web.Response:
    """PUT /api/v1/scheduled_statuses/{id}: move the publishing time."""
    ctx, row = await _own(request, "write:statuses")
    value = (await read_params(request)).str("scheduled_at", max_length=40)
    at = parse_iso(value) if value else None
    if at is None:
        raise _invalid("scheduled_at is not a date")
    _check_time(at)
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE scheduled_statuses SET scheduled_at = ? WHERE id = ?", (at, row["id"]))
        updated = await tx.fetchone("SELECT * FROM scheduled_statuses WHERE id = ?", (row["id"],))
    assert updated is not None
    return json_response(await _entity(ctx, updated))


async def cancel(request: web.Request) -> web.Response:
    """DELETE /api/v1/scheduled_statuses/{id}"""
    ctx, row = await _own(request, "write:statuses")
    async with ctx.db.write() as tx:
        await tx.execute("DELETE FROM scheduled_statuses WHERE id = ?", (row["id"],))
    return json_response({})


class ScheduledPublisher(BackgroundLoop):
    """Publishes due scheduled statuses through create_status.

    A due row is deleted before its post is created (at most once: a crash in
    between loses that post rather than publishing it twice).
    """

    name = "fedi-scheduled-publisher"
    interval = POLL_SECONDS

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.clock: Callable[[], float] = time.time

    async def run_once(self, now: float | None = None) -> int:
        """Publish every status due at `now` (default: the clock); returns how many were due."""
        at = self.clock() if now is None else now
        async with self.ctx.db.write() as tx:
            rows = await tx.fetchall(
                "SELECT * FROM scheduled_statuses WHERE scheduled_at <= ? ORDER BY scheduled_at, id LIMIT ?", (at, BATCH)
            )
            await tx.executemany("DELETE FROM scheduled_statuses WHERE id = ?", [(r["id"],) for r in rows])
        for row in rows:
            account = await self.ctx.db.fetchone(
                "SELECT a.* FROM accounts a JOIN users u ON u.account_id = a.id"
                " WHERE a.id = ? AND a.suspended_at IS NULL AND u.disabled = 0", (row["account_id"],)
            )
            if account is None:
                log.info("scheduled status %s dropped: account unavailable", row["id"])
                continue
            try:
                await create_status(self.ctx, account, _request(loads_strict(row["params_json"])))
            except ActionError as exc:
                log.warning("scheduled status %s dropped: %s", row["id"], exc)
        return len(rows)


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/scheduled_statuses", index)
    r.add_get("/api/v1/scheduled_statuses/{id}", show)
    r.add_put("/api/v1/scheduled_statuses/{id}", update)
    r.add_delete("/api/v1/scheduled_statuses/{id}", cancel)
