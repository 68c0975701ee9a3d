"""What the signed-in user has shut out: blocked and muted accounts, blocked domains."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.accounts import account_list
from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import Handler, HttpError
from outbox import social

_DOMAIN = re.compile(r"^(?=.{1,253}(?::|$))[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)+"
                     r"(?::[0-9]{1,5})?$")


async def _my_page(request: web.Request, scope: str, column: str, sql: str, *args: Any,
                   default: int = 40, maximum: int = 80) -> tuple[Context, list[Row]]:
    """One page of `sql`, ordered by `column`: `sql` ends in its WHERE conditions,
    whose first `?` is the signed-in account and the next ones `args`."""
    auth = await require(request, scope)
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=default, maximum=maximum)
    return ctx, await fetch_page(ctx, page, sql, [auth.account["id"], *args], column)


async def blocks(request: web.Request) -> web.Response:
    """GET /api/v1/blocks, paged by the blocks row."""
    ctx, rows = await _my_page(request, "read:blocks", "b.id", "SELECT b.id AS block_id, a.* FROM blocks b"
                               " JOIN accounts a ON a.id = b.target_account_id WHERE b.account_id = ?")
    return await account_list(request, ctx, rows, "block_id")


async def mutes(request: web.Request) -> web.Response:
    """GET /api/v1/mutes: Accounts with `mute_expires_at`, expired mutes left out."""
    ctx, rows = await _my_page(
        request, "read:mutes", "m.id",
        "SELECT m.id AS mute_id, m.expires_at AS mute_expires, a.* FROM mutes m JOIN accounts a ON a.id = m.target_account_id"
        " WHERE m.account_id = ? AND (m.expires_at IS NULL OR m.expires_at > ?)", now())
    by_id = await entities.accounts(ctx, rows)
    body = [{**by_id[r["id"]], "mute_expires_at": iso(r["mute_expires"]) if r["mute_expires"] else None} for r in rows]
    return paged_json(request, body, [r["mute_id"] for r in rows])


def _domain(ctx: Context, raw: str | None) -> str:
    """A host name as stored on accounts (lower-case, IDN as punycode); 422 for anything else."""
    value = (raw or "").strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
    try:
        value = value.encode("idna").decode("ascii") if value and not value.isascii() else value
    except UnicodeError:
        value = ""
    if not _DOMAIN.match(value):
        raise HttpError(422, "Validation failed: domain is not a domain name")
    if value == ctx.domain.lower():
        raise HttpError(422, "Validation failed: you can't block your own domain")
    return value


async def domain_blocks(request: web.Request) -> web.Response:
    """GET /api/v1/domain_blocks: plain domain strings, paged."""
    _, rows = await _my_page(request, "read:blocks", "rowid",
                             "SELECT rowid, domain FROM user_domain_blocks WHERE account_id = ?", default=100, maximum=200)
    return paged_json(request, [r["domain"] for r in rows], [r["rowid"] for r in rows])


def _domain_change(change: Callable[[Context, Row, str], Awaitable[None]]) -> Handler:
    """POST /api/v1/domain_blocks (domain) blocks it, DELETE unblocks it."""

    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, "write:blocks")
        ctx = request.app[CTX]
        params = await read_params(request)
        await change(ctx, auth.account, _domain(ctx, params.str("domain", max_length=300)))
        return json_response({})

    return handler


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/blocks", blocks)
    r.add_get("/api/v1/mutes", mutes)
    r.add_get("/api/v1/domain_blocks", domain_blocks)
    r.add_post("/api/v1/domain_blocks", _domain_change(social.block_domain))
    r.add_delete("/api/v1/domain_blocks", _domain_change(social.unblock_domain))
