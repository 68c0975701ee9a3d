"""Polls: view one, vote on one. A poll is visible exactly when its status is (THREATS O5)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import optional, require
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.api.status_actions import api_error
from fedi.api.visibility import parse_id, visible_status
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from outbox.actions import ActionError
from outbox.polls import vote as cast_vote


async def _poll_status(ctx: Context, raw_id: str, viewer: Row | None) -> Row:
    """The status carrying this poll, if the viewer may see it; 404 otherwise."""
    poll = await ctx.db.fetchone("SELECT status_id FROM polls WHERE id = ?", (parse_id(raw_id),))
    if poll is None:
        raise HttpError(404, "Record not found")
    return await visible_status(ctx, str(poll["status_id"]), viewer)


async def _poll_entity(ctx: Context, status: Row, viewer: Row | None) -> dict[str, Any]:
    return (await entities.status(ctx, status, viewer))["poll"]


def _choice(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 3:
        return int(value)
    raise HttpError(422, "Validation failed: choices must be option indexes")


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/polls/{id}"""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    viewer = auth.account if auth else None
    status = await _poll_status(ctx, request.match_info["id"], viewer)
    return json_response(await _poll_entity(ctx, status, viewer))


async def vote(request: web.Request) -> web.Response:
    """POST /api/v1/polls/{id}/votes with choices[]"""
    auth = await require(request, "write:statuses")
    ctx = request.app[CTX]
    status = await _poll_status(ctx, request.match_info["id"], auth.account)
    choices = [_choice(c) for c in (await read_params(request)).list("choices")]
    try:
        await cast_vote(ctx, auth.account, parse_id(request.match_info["id"]), choices)
    except ActionError as exc:
        raise api_error(exc) from None
    return json_response(await _poll_entity(ctx, status, auth.account))


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/polls/{id}", show)
    app.router.add_post("/api/v1/polls/{id}/votes", vote)
