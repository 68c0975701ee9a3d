"""Mastodon's admin API for domain blocks and allows, and the public list of limited domains.

Tools written for Mastodon (FediBlockHole and others) must work unchanged, so the
details follow Mastodon: POST and PUT answer 200 with the block; a domain already
covered by a block at least as strict answers 422 with `error` and
`existing_domain_block`; PUT accepts (and checks) `domain`; every field is kept
exactly as sent; the list is paged by id with `Link` next (only while pages are
full) then prev. Every change goes through `fedi.moderation.blocks`, as the CLI's do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from fedi.api.auth import authenticate, require
from fedi.api.paging import fetch_page, page_from
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import Handler, HttpError, refusing
from fedi.moderation.blocks import (
    BLOCK_FIELDS, BOOLEAN_FIELDS, BlockSpec, RuleError, add_allow, check_domain, create_block, remove_allow,
    remove_block, update_block,
)
from fedi.moderation.domains import digest

LIMIT = 100
MAX_COMMENT = 10_000

Render = Callable[[Row], dict[str, Any]]
Remove = Callable[[Context, int, int], Awaitable[Row]]


def block_entity(row: Row) -> dict[str, Any]:
    """Admin::DomainBlock, with `digest` as Mastodon 4.x adds it."""
    return {
        "id": str(row["id"]),
        "domain": row["domain"],
        "digest": digest(row["domain"]),
        "created_at": iso(row["created_at"]),
        "severity": row["severity"],
        "reject_media": bool(row["reject_media"]),
        "reject_reports": bool(row["reject_reports"]),
        "private_comment": row["private_comment"],
        "public_comment": row["public_comment"],
        "obfuscate": bool(row["obfuscate"]),
    }


def allow_entity(row: Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "domain": row["domain"], "created_at": iso(row["created_at"])}


def public_domain(domain: str, obfuscate: bool) -> str:
    """Mastodon's obfuscation: the middle half of the name (dots kept) becomes `*`."""
    if not obfuscate:
        return domain
    keep = len(domain) // 4
    return "".join(c if i <= keep or i >= len(domain) - keep or c == "." else "*" for i, c in enumerate(domain))


def _rule_error(exc: RuleError) -> HttpError:
    extra: dict[str, object] | None = (
        {"existing_domain_block": block_entity(exc.existing)} if exc.existing is not None else None)
    return HttpError(exc.status, exc.message, extra=extra)


def _fields(params: Params) -> dict[str, Any]:
    """The block fields present in the request, as sent (comments: "" stays "", null stays null)."""
    values: dict[str, Any] = {}
    for name in BLOCK_FIELDS:
        if name not in params:
            continue
        if name in BOOLEAN_FIELDS:
            values[name] = params.bool(name)
        else:
            values[name] = params.str(name, max_length=MAX_COMMENT)
    return values


async def _paged(request: web.Request, table: str, render: Render) -> web.Response:
    """Newest first by id; `Link` has next only while pages are full, then prev (absolute URLs)."""
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=LIMIT, maximum=2 * LIMIT)
    rows = await fetch_page(ctx, page, f"SELECT * FROM {table} WHERE 1")
    links = []
    base = ctx.base_url + request.path
    if len(rows) == page.limit:
        links.append(f'<{base}?limit={page.limit}&max_id={rows[-1]["id"]}>; rel="next"')
    if rows:
        links.append(f'<{base}?limit={page.limit}&min_id={rows[0]["id"]}>; rel="prev"')
    return json_response([render(r) for r in rows], headers={"Link": ", ".join(links)} if links else None)


#: A RuleError from fedi.moderation.blocks answers as Mastodon's would (with `existing_domain_block`).
_rule_errors = refusing(RuleError, _rule_error)


async def _find(request: web.Request, table: str) -> Row:
    row = await request.app[CTX].db.fetchone(f"SELECT * FROM {table} WHERE id = ?", (parse_id(request.match_info["id"]),))
    if row is None:
        raise HttpError(404, "Record not found")
    return row


def _domain(params: Params) -> str:
    domain = params.str("domain", max_length=300)
    if not domain:
        raise HttpError(422, "Validation failed: Domain can't be blank")
    return domain


def _index(table: str, render: Render) -> Handler:
    """GET /api/v1/admin/domain_blocks or …/domain_allows"""

    async def handler(request: web.Request) -> web.Response:
        await require(request, f"admin:read:{table}")
        return await _paged(request, table, render)

    return handler


def _show(table: str, render: Render) -> Handler:
    """GET /api/v1/admin/domain_blocks/{id} or …/domain_allows/{id}"""

    async def handler(request: web.Request) -> web.Response:
        await require(request, f"admin:read:{table}")
        return json_response(render(await _find(request, table)))

    return handler


def _delete(table: str, remove: Remove) -> Handler:
    """DELETE /api/v1/admin/domain_blocks/{id} (lifts the block: severed follows are restored) or …/domain_allows/{id}"""

    @_rule_errors
    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, f"admin:write:{table}")
        row = await _find(request, table)
        await remove(request.app[CTX], auth.account["id"], row["id"])
        return json_response({})

    return handler


@_rule_errors
async def add_block(request: web.Request) -> web.Response:
    """POST /api/v1/admin/domain_blocks (domain, severity=silence, reject_media, reject_reports, comments, obfuscate)"""
    auth = await require(request, "admin:write:domain_blocks")
    params = await read_params(request)
    spec = BlockSpec(domain=_domain(params), **_fields(params))
    return json_response(block_entity(await create_block(request.app[CTX], auth.account["id"], spec)))


@_rule_errors
async def change_block(request: web.Request) -> web.Response:
    """PUT /api/v1/admin/domain_blocks/{id}: the fields sent change; `domain`, if sent, must be the block's."""
    auth = await require(request, "admin:write:domain_blocks")
    ctx = request.app[CTX]
    row = await _find(request, "domain_blocks")
    params = await read_params(request)
    if "domain" in params and check_domain(ctx, params.str("domain", max_length=300) or "") != row["domain"]:
        raise RuleError("a block's domain cannot be changed; remove it and add another")
    return json_response(block_entity(await update_block(ctx, auth.account["id"], row["id"], _fields(params))))


@_rule_errors
async def add_allow_route(request: web.Request) -> web.Response:
    """POST /api/v1/admin/domain_allows (domain): an existing allow is returned as it is."""
    auth = await require(request, "admin:write:domain_allows")
    domain = _domain(await read_params(request))
    return json_response(allow_entity(await add_allow(request.app[CTX], auth.account["id"], domain)))


async def public_blocks(request: web.Request) -> web.Response:
    """GET /api/v1/instance/domain_blocks: silenced and suspended domains, for whom `[moderation]` allows."""
    ctx = request.app[CTX]
    visibility = ctx.config.moderation.domain_blocks_visibility
    auth = await authenticate(request)
    if (visibility == "users" and (auth is None or auth.account is None)) or (
        visibility == "admins" and (auth is None or not auth.admin)
    ):
        raise HttpError(404, "Not found")
    rows = await ctx.db.fetchall(
        "SELECT * FROM domain_blocks WHERE severity IN ('silence', 'suspend')"
        " ORDER BY CASE severity WHEN 'silence' THEN 1 ELSE 2 END, domain"
    )
    return json_response([
        {"domain": public_domain(r["domain"], bool(r["obfuscate"])), "digest": digest(r["domain"]),
         "severity": r["severity"], "comment": r["public_comment"]}
        for r in rows
    ])


def setup(app: web.Application) -> None:
    r = app.router
    for table, render, remove in (("domain_blocks", block_entity, remove_block),
                                  ("domain_allows", allow_entity, remove_allow)):
        r.add_get(f"/api/v1/admin/{table}", _index(table, render))
        r.add_get(f"/api/v1/admin/{table}/{{id}}", _show(table, render))
        r.add_delete(f"/api/v1/admin/{table}/{{id}}", _delete(table, remove))
    r.add_post("/api/v1/admin/domain_blocks", add_block)
    r.add_put("/api/v1/admin/domain_blocks/{id}", change_block)
    r.add_post("/api/v1/admin/domain_allows", add_allow_route)
    r.add_get("/api/v1/instance/domain_blocks", public_blocks)
