"""Mastodon's admin API for domain blocks and allows, and the public list of limited domains.

Tools written for Mastodon (FediBlockHole and others) must work unchanged, so the
details follow Mastodon: POST and PUT answer 200 with the block; a domain already
covered by a block at least as strict answers 422 with `error` and
`existing_domain_block`; PUT accepts (and checks) `domain`; every field is kept
exactly as sent; the list is paged by id with `Link` next (only while pages are
full) then prev. Every change goes through `fedi.moderation.blocks`, as the CLI's do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api.auth import authenticate, require
from fedi.api.paging import page_from
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso
from fedi.context import CTX
from fedi.db import Row
from fedi.errors import HttpError
from fedi.moderation.blocks import (
    BLOCK_FIELDS, BOOLEAN_FIELDS, BlockSpec, RuleError, add_allow, check_domain, create_block, remove_allow,
    remove_block, update_block,
)
from fedi.moderation.domains import digest

LIMIT = 100
MAX_COMMENT = 10_000


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
    extra = {"existing_domain_block": block_entity(exc.existing)} if exc.existing is not None else None
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


async def _paged(request: web.Request, table: str, render: Any) -> web.Response:
    """Newest first by id; `Link` has next only while pages are full, then prev (absolute URLs)."""
    ctx = request.app[CTX]
    params = await read_params(request)
    page = page_from(params, default=LIMIT, maximum=2 * LIMIT)
    cond, args, order = page.clause("id")
    rows = page.arrange(await ctx.db.fetchall(f"SELECT * FROM {table} WHERE {cond} ORDER BY {order} LIMIT ?",
                                              [*args, page.limit]))
    links = []
    base = ctx.base_url + request.path
    if len(rows) == page.limit:
        links.append(f'<{base}?limit={page.limit}&max_id={rows[-1]["id"]}>; rel="next"')
    if rows:
        links.append(f'<{base}?limit={page.limit}&min_id={rows[0]["id"]}>; rel="prev"')
    return json_response([render(r) for r in rows], headers={"Link": ", ".join(links)} if links else None)


async def list_blocks(request: web.Request) -> web.Response:
    """GET /api/v1/admin/domain_blocks"""
    await require(request, "admin:read:domain_blocks")
    return await _paged(request, "domain_blocks", block_entity)


async def _block(request: web.Request) -> Row:
    row = await request.app[CTX].db.fetchone("SELECT * FROM domain_blocks WHERE id = ?",
                                             (parse_id(request.match_info["id"]),))
    if row is None:
        raise HttpError(404, "Record not found")
    return row


async def show_block(request: web.Request) -> web.Response:
    """GET /api/v1/admin/domain_blocks/{id}"""
    await require(request, "admin:read:domain_blocks")
    return json_response(block_entity(await _block(request)))


async def add_block(request: web.Request) -> web.Response:
    """POST /api/v1/admin/domain_blocks (domain, severity=silence, reject_media, reject_reports, comments, obfuscate)"""
    auth = await require(request, "admin:write:domain_blocks")
    params = await read_params(request)
    domain = params.str("domain", max_length=300)
    if not domain:
        raise HttpError(422, "Validation failed: Domain can't be blank")
    try:
        row = await create_block(request.app[CTX], auth.account["id"], BlockSpec(domain=domain, **_fields(params)))
    except RuleError as exc:
        raise _rule_error(exc) from None
    return json_response(block_entity(row))


async def change_block(request: web.Request) -> web.Response:
    """PUT /api/v1/admin/domain_blocks/{id}: the fields sent change; `domain`, if sent, must be the block's."""
    auth = await require(request, "admin:write:domain_blocks")
    ctx = request.app[CTX]
    row = await _block(request)
    params = await read_params(request)
    try:
        if "domain" in params and check_domain(ctx, params.str("domain", max_length=300) or "") != row["domain"]:
            raise RuleError("a block's domain cannot be changed; remove it and add another")
        row = await update_block(ctx, auth.account["id"], row["id"], _fields(params))
    except RuleError as exc:
        raise _rule_error(exc) from None
    return json_response(block_entity(row))


async def delete_block(request: web.Request) -> web.Response:
    """DELETE /api/v1/admin/domain_blocks/{id}: lifts the block (severed follows are restored)."""
    auth = await require(request, "admin:write:domain_blocks")
    row = await _block(request)
    try:
        await remove_block(request.app[CTX], auth.account["id"], row["id"])
    except RuleError as exc:
        raise _rule_error(exc) from None
    return json_response({})


async def list_allows(request: web.Request) -> web.Response:
    """GET /api/v1/admin/domain_allows"""
    await require(request, "admin:read:domain_allows")
    return await _paged(request, "domain_allows", allow_entity)


async def _allow(request: web.Request) -> Row:
    row = await request.app[CTX].db.fetchone("SELECT * FROM domain_allows WHERE id = ?",
                                             (parse_id(request.match_info["id"]),))
    if row is None:
        raise HttpError(404, "Record not found")
    return row


async def show_allow(request: web.Request) -> web.Response:
    await require(request, "admin:read:domain_allows")
    return json_response(allow_entity(await _allow(request)))


async def add_allow_route(request: web.Request) -> web.Response:
    """POST /api/v1/admin/domain_allows (domain): an existing allow is returned as it is."""
    auth = await require(request, "admin:write:domain_allows")
    domain = (await read_params(request)).str("domain", max_length=300)
    if not domain:
        raise HttpError(422, "Validation failed: Domain can't be blank")
    try:
        row = await add_allow(request.app[CTX], auth.account["id"], domain)
    except RuleError as exc:
        raise _rule_error(exc) from None
    return json_response(allow_entity(row))


async def delete_allow(request: web.Request) -> web.Response:
    auth = await require(request, "admin:write:domain_allows")
    row = await _allow(request)
    await remove_allow(request.app[CTX], auth.account["id"], row["id"])
    return json_response({})


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
    r.add_get("/api/v1/admin/domain_blocks", list_blocks)
    r.add_post("/api/v1/admin/domain_blocks", add_block)
    r.add_get("/api/v1/admin/domain_blocks/{id}", show_block)
    r.add_put("/api/v1/admin/domain_blocks/{id}", change_block)
    r.add_delete("/api/v1/admin/domain_blocks/{id}", delete_block)
    r.add_get("/api/v1/admin/domain_allows", list_allows)
    r.add_post("/api/v1/admin/domain_allows", add_allow_route)
    r.add_get("/api/v1/admin/domain_allows/{id}", show_allow)
    r.add_delete("/api/v1/admin/domain_allows/{id}", delete_allow)
    r.add_get("/api/v1/instance/domain_blocks", public_blocks)
