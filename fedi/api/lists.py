"""Lists: CRUD and membership (only accounts the user follows), as Mastodon's /api/v1/lists.

Every list is looked up with its owner, so someone else's list id is not found
(THREATS O5); titles are length-capped and the number of lists bounded (O9).
The list timeline itself lives in fedi/api/timelines.py.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import require
from fedi.api.owned import NOT_FOUND, own_row
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.context import CTX
from fedi.db import Row
from fedi.errors import HttpError
from outbox import lists
from outbox.actions import ActionError
from outbox.lists import MAX_TITLE_CHARS

REPLIES_POLICIES = ("followed", "list", "none")
MAX_ACCOUNT_IDS = 100


def list_entity(row: Row) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "replies_policy": row["replies_policy"],
        "exclusive": bool(row["exclusive"]),
    }


def _title(params: Params, required: bool) -> str | None:
    title = params.str("title", max_length=MAX_TITLE_CHARS)
    if title is None and not required:
        return None
    if title is None or not title.strip():
        raise HttpError(422, "Validation failed: Title can't be blank")
    return title.strip()


def _policy(params: Params) -> str | None:
    policy = params.str("replies_policy", max_length=20)
    if policy is not None and policy not in REPLIES_POLICIES:
        raise HttpError(422, "Validation failed: Replies policy is not included in the list")
    return policy


async def _own_list(request: web.Request, account_id: int) -> Row:
    return await own_row(request.app[CTX], "lists", request.match_info["id"], account_id)


async def index(request: web.Request) -> web.Response:
    """GET /api/v1/lists"""
    auth = await require(request, "read:lists")
    rows = await request.app[CTX].db.fetchall("SELECT * FROM lists WHERE account_id = ? ORDER BY id", (auth.account["id"],))
    return json_response([list_entity(r) for r in rows])


async def create(request: web.Request) -> web.Response:
    """POST /api/v1/lists"""
    auth = await require(request, "write:lists")
    ctx = request.app[CTX]
    params = await read_params(request)
    title, policy = _title(params, True), _policy(params) or "list"
    exclusive = params.bool("exclusive")
    try:
        row = await lists.create_list(ctx, auth.account, title or "", policy, exclusive)
    except ActionError as exc:
        raise HttpError(exc.status, f"Validation failed: {exc}") from None
    return json_response(list_entity(row))


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/lists/:id"""
    auth = await require(request, "read:lists")
    return json_response(list_entity(await _own_list(request, auth.account["id"])))


async def update(request: web.Request) -> web.Response:
    """PUT /api/v1/lists/:id"""
    auth = await require(request, "write:lists")
    ctx = request.app[CTX]
    row = await _own_list(request, auth.account["id"])
    params = await read_params(request)
    title, policy = _title(params, False), _policy(params)
    exclusive = params.bool("exclusive", bool(row["exclusive"]))
    async with ctx.db.write() as tx:
        await tx.execute(
            "UPDATE lists SET title = ?, replies_policy = ?, exclusive = ? WHERE id = ?",
            (title or row["title"], policy or row["replies_policy"], int(exclusive), row["id"]),
        )
        updated = await tx.fetchone("SELECT * FROM lists WHERE id = ?", (row["id"],))
    return json_response(list_entity(updated))


async def delete(request: web.Request) -> web.Response:
    """DELETE /api/v1/lists/:id"""
    auth = await require(request, "write:lists")
    ctx = request.app[CTX]
    row = await _own_list(request, auth.account["id"])
    await lists.delete_list(ctx, row)
    return json_response({})


async def members(request: web.Request) -> web.Response:
    """GET /api/v1/lists/:id/accounts (limit=0 gives every member without paging)"""
    auth = await require(request, "read:lists")
    ctx = request.app[CTX]
    row = await _own_list(request, auth.account["id"])
    params = await read_params(request)
    sql = "SELECT a.* FROM list_accounts la JOIN accounts a ON a.id = la.account_id WHERE la.list_id = ?"
    if params.int("limit") == 0:
        rows = await ctx.db.fetchall(sql + " ORDER BY la.account_id DESC", (row["id"],))
        rendered = await entities.accounts(ctx, rows)
        return json_response([rendered[r["id"]] for r in rows])
    rows = await fetch_page(ctx, page_from(params, default=40, maximum=80), sql, [row["id"]], "la.account_id")
    rendered = await entities.accounts(ctx, rows)
    return paged_json(request, [rendered[r["id"]] for r in rows], [r["id"] for r in rows])


def _account_ids(params: Params) -> list[int]:
    values = params.list("account_ids")
    if not values:
        raise HttpError(422, "Validation failed: account_ids can't be blank")
    if len(values) > MAX_ACCOUNT_IDS:
        raise HttpError(422, f"Validation failed: at most {MAX_ACCOUNT_IDS} accounts at once")
    if not all(isinstance(v, (str, int)) for v in values):
        raise HttpError(404, NOT_FOUND)
    return list(dict.fromkeys(parse_id(str(v)) for v in values))


async def add_members(request: web.Request) -> web.Response:
    """POST /api/v1/lists/:id/accounts: every account must be one the user follows, else nothing is added."""
    auth = await require(request, "write:lists")
    ctx = request.app[CTX]
    row = await _own_list(request, auth.account["id"])
    ids = _account_ids(await read_params(request))
    try:
        await lists.add_members(ctx, auth.account, row, ids)
    except ActionError as exc:
        raise HttpError(exc.status, NOT_FOUND if exc.status == 404 else f"Validation failed: {exc}") from None
    return json_response({})


async def remove_members(request: web.Request) -> web.Response:
    """DELETE /api/v1/lists/:id/accounts"""
    auth = await require(request, "write:lists")
    ctx = request.app[CTX]
    row = await _own_list(request, auth.account["id"])
    ids = _account_ids(await read_params(request))
    await lists.remove_members(ctx, row, ids)
    return json_response({})


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/lists", index)
    r.add_post("/api/v1/lists", create)
    r.add_get("/api/v1/lists/{id}", show)
    r.add_put("/api/v1/lists/{id}", update)
    r.add_delete("/api/v1/lists/{id}", delete)
    r.add_get("/api/v1/lists/{id}/accounts", members)
    r.add_post("/api/v1/lists/{id}/accounts", add_members)
    r.add_delete("/api/v1/lists/{id}/accounts", remove_members)
