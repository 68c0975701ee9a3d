"""Statuses: create, read, edit, delete (further verbs live in fedi/api/status_actions.py)."""

from __future__ import annotations

import re

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import optional, require
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id, visible_status
from fedi.clock import parse_iso
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import loads_strict
from outbox.actions import ActionError, PollRequest, PostRequest, create_status, delete_status, edit_status

LANGUAGE = re.compile(r"^[a-zA-Z]{2,3}(-[a-zA-Z0-9]{1,8})?$")


def _poll(params: Params) -> PollRequest | None:
    poll = params.sub("poll")
    options = poll.list("options")
    if not options:
        return None
    if not all(isinstance(o, str) for o in options):
        raise HttpError(422, "Validation failed: poll options must be strings")
    return PollRequest(
        options=tuple(options),
        expires_in=poll.int("expires_in", 86400) or 86400,
        multiple=poll.bool("multiple"),
        hide_totals=poll.bool("hide_totals"),
    )


def post_request(params: Params, app_id: int | None, default_visibility: str = "public") -> PostRequest:
    """A PostRequest from Mastodon's parameters (also used by scheduled statuses)."""
    media_ids = params.list("media_ids")
    if not all(isinstance(m, (str, int)) and str(m).isdigit() and len(str(m)) < 20 for m in media_ids):
        raise HttpError(422, "Validation failed: media_ids must be ids")
    reply = params.get("in_reply_to_id")
    language = params.str("language", max_length=16)
    if language is not None and language != "" and not LANGUAGE.match(language):
        raise HttpError(422, "Validation failed: language is not a language code")
    visibility = params.str("visibility", max_length=20) or default_visibility
    return PostRequest(
        text=params.str("status", "", max_length=20_000) or "",
        visibility=visibility,
        spoiler_text=params.str("spoiler_text", "", max_length=2000) or "",
        sensitive=params.bool("sensitive"),
        in_reply_to_id=parse_id(str(reply)) if reply not in (None, "") else None,
        language=language or None,
        media_ids=tuple(int(m) for m in media_ids),
        poll=_poll(params),
        app_id=app_id,
    )


async def create(request: web.Request) -> web.Response:
    """POST /api/v1/statuses"""
    auth = await require(request, "write:statuses")
    ctx = request.app[CTX]
    params = await read_params(request)
    scheduled = params.str("scheduled_at", max_length=40)
    req = post_request(params, auth.app_id)
    if scheduled:
        from fedi.api.scheduled import schedule  # here, not at the top: fedi.api.scheduled imports post_request

        at = parse_iso(scheduled)
        if at is None:
            raise HttpError(422, "Validation failed: scheduled_at is not a date")
        return await schedule(request, auth.account, params, at)
    try:
        row = await create_status(ctx, auth.account, req)
    except ActionError as exc:
        raise HttpError(exc.status, f"Validation failed: {exc}") from None
    return json_response(await entities.status(ctx, row, auth.account))


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/statuses/{id}"""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    viewer = auth.account if auth else None
    row = await visible_status(ctx, request.match_info["id"], viewer)
    return json_response(await entities.status(ctx, row, viewer))


async def delete(request: web.Request) -> web.Response:
    """DELETE /api/v1/statuses/{id}: answers the status with its source `text` (for "delete and redraft")."""
    auth = await require(request, "write:statuses")
    ctx = request.app[CTX]
    row = await visible_status(ctx, request.match_info["id"], auth.account)
    if row["account_id"] != auth.account["id"]:
        raise HttpError(404, "Record not found")
    entity = await entities.status(ctx, row, auth.account)
    try:
        await delete_status(ctx, auth.account, row["id"])
    except ActionError as exc:
        raise HttpError(exc.status, str(exc)) from None
    entity["text"] = row["source_text"] or ""
    return json_response(entity)


async def _check_attachments_kept(ctx: Context, status: Row, params: Params) -> None:
    """Edits change text, content warning and sensitivity; media and poll may be sent but not changed (yet)."""
    if "media_ids" in params or "media_ids[]" in params:
        current = [r["id"] for r in await ctx.db.fetchall(
            "SELECT id FROM media_attachments WHERE status_id = ? ORDER BY position", (status["id"],))]
        if [str(m) for m in params.list("media_ids")] != [str(m) for m in current]:
            raise HttpError(422, "Validation failed: media attachments can't be changed by an edit")
    wanted = _poll(params)
    if wanted is not None:
        poll = await ctx.db.fetchone("SELECT options_json, multiple FROM polls WHERE status_id = ?", (status["id"],))
        kept = poll is not None and bool(poll["multiple"]) == wanted.multiple and wanted.options == tuple(
            o["title"] for o in loads_strict(poll["options_json"]))
        if not kept:
            raise HttpError(422, "Validation failed: a poll can't be added or changed by an edit")


async def edit(request: web.Request) -> web.Response:
    """PUT /api/v1/statuses/{id}: the author's own post; the previous version goes to the history."""
    auth = await require(request, "write:statuses")
    ctx = request.app[CTX]
    row = await visible_status(ctx, request.match_info["id"], auth.account)
    if row["account_id"] != auth.account["id"] or row["reblog_of_id"] is not None:
        raise HttpError(404, "Record not found")
    params = await read_params(request)
    await _check_attachments_kept(ctx, row, params)
    try:
        updated = await edit_status(
            ctx, auth.account, row["id"], params.str("status", "", max_length=20_000) or "",
            spoiler_text=params.str("spoiler_text", max_length=2000),
            sensitive=params.bool("sensitive") if params.get("sensitive") is not None else None,
        )
    except ActionError as exc:
        raise HttpError(exc.status, f"Validation failed: {exc}") from None
    return json_response(await entities.status(ctx, updated, auth.account))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/statuses", create)
    r.add_get("/api/v1/statuses/{id:\\d+}", show)
    r.add_put("/api/v1/statuses/{id:\\d+}", edit)
    r.add_delete("/api/v1/statuses/{id:\\d+}", delete)
