"""Filters v2 (groups of keywords and statuses, matched server-side) and the v1 read view.

Every id is looked up together with its owner, so someone else's filter,
keyword or filtered status is simply not found (THREATS O5). Input is checked
in full before anything is written: titles and keywords have length caps
(THREATS O9) and counts are bounded, which also bounds matching cost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from fedi.api.auth import require
from fedi.api.owned import NOT_FOUND, own_row
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id, visible_status
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row, Tx
from fedi.errors import Handler, HttpError
from fedi.filtering import (
    ACTIONS, CONTEXTS, MAX_FILTERS, MAX_KEYWORD_CHARS, MAX_KEYWORDS_PER_FILTER, MAX_STATUSES_PER_FILTER,
    MAX_TITLE_CHARS, filter_entity, filter_rules, filter_status_entity, keyword_entity,
)
from fedi.jsonutil import dumps_str, loads_strict

MAX_EXPIRES_IN = 10 * 365 * 86400

Render = Callable[[Row], dict[str, Any]]


def _invalid(message: str) -> HttpError:
    return HttpError(422, f"Validation failed: {message}")


def _text(params: Params, name: str, max_length: int, required: bool) -> str | None:
    """A title or keyword: absent is None unless required; blank is refused."""
    value = params.str(name, max_length=max_length)
    if value is None and not required:
        return None
    if value is None or not value.strip():
        raise _invalid(f"{name.capitalize()} can't be blank")
    return value


def _contexts(params: Params, required: bool) -> list[str] | None:
    values = params.list("context")
    if not values and not required:
        return None
    if not values or not all(isinstance(v, str) and v in CONTEXTS for v in values):
        raise _invalid("Context can't be blank, Context None or invalid context supplied")
    return list(dict.fromkeys(values))


def _action(params: Params) -> str | None:
    action = params.str("filter_action", max_length=20)
    if action is not None and action not in ACTIONS:
        raise _invalid("Filter action is not included in the list")
    return action


def _expires_at(params: Params) -> float | None:
    """Seconds from now; blank means never."""
    seconds = params.int("expires_in")
    if seconds is None:
        return None
    if not 1 <= seconds <= MAX_EXPIRES_IN:
        raise _invalid("Expires in is out of range")
    return now() + seconds


@dataclass(frozen=True)
class KeywordChange:
    id: int | None
    keyword: str | None
    whole_word: bool | None
    destroy: bool


def _keyword_changes(params: Params) -> list[KeywordChange]:
    """`keywords_attributes[]` items, each fully validated."""
    items = params.list("keywords_attributes")
    if len(items) > MAX_KEYWORDS_PER_FILTER:
        raise _invalid(f"at most {MAX_KEYWORDS_PER_FILTER} keywords")
    changes = []
    for item in items:
        if not isinstance(item, dict):
            raise _invalid("keywords_attributes must be a list of keywords")
        p = Params(item)
        raw_id = p.get("id")
        keyword_id = parse_id(str(raw_id)) if raw_id not in (None, "") else None
        destroy = p.bool("_destroy")
        keyword = None if destroy else _text(p, "keyword", MAX_KEYWORD_CHARS, required=keyword_id is None)
        whole_word = p.bool("whole_word") if p.get("whole_word") is not None else None
        changes.append(KeywordChange(keyword_id, keyword, whole_word, destroy))
    return changes


async def _own(request: web.Request, table: str, account_id: int) -> Row:
    """The path's filter (`table` "filters"), or a keyword or filtered status of one of the account's filters."""
    ctx = request.app[CTX]
    if table == "filters":
        return await own_row(ctx, table, request.match_info["id"], account_id)
    row = await ctx.db.fetchone(
        f"SELECT c.* FROM {table} c JOIN filters f ON f.id = c.filter_id WHERE c.id = ? AND f.account_id = ?",
        (parse_id(request.match_info["id"]), account_id),
    )
    if row is None:
        raise HttpError(404, NOT_FOUND)
    return row


async def _entities(ctx: Context, rows: list[Row]) -> list[dict[str, Any]]:
    keywords, statuses = await filter_rules(ctx.db, [r["id"] for r in rows])
    return [filter_entity(r, keywords[r["id"]], statuses[r["id"]]) for r in rows]


async def _entity(ctx: Context, filter_id: int) -> dict[str, Any]:
    row = await ctx.db.fetchone("SELECT * FROM filters WHERE id = ?", (filter_id,))
    assert row is not None
    return (await _entities(ctx, [row]))[0]


async def _insert_keyword(tx: Tx, filter_id: int, keyword: str, whole_word: bool) -> int:
    keyword_id = tx.new_id()
    await tx.execute("INSERT INTO filter_keywords (id, filter_id, keyword, whole_word) VALUES (?, ?, ?, ?)",
                     (keyword_id, filter_id, keyword, int(whole_word)))
    return keyword_id


async def _check_keyword_count(tx: Tx, filter_id: int) -> None:
    count = (await tx.fetchrow("SELECT count(*) FROM filter_keywords WHERE filter_id = ?", (filter_id,)))[0]
    if count > MAX_KEYWORDS_PER_FILTER:
        raise _invalid(f"at most {MAX_KEYWORDS_PER_FILTER} keywords")


async def index(request: web.Request) -> web.Response:
    """GET /api/v2/filters"""
    auth = await require(request, "read:filters")
    ctx = request.app[CTX]
    rows = await ctx.db.fetchall("SELECT * FROM filters WHERE account_id = ? ORDER BY id", (auth.account["id"],))
    return json_response(await _entities(ctx, rows))


async def show(request: web.Request) -> web.Response:
    """GET /api/v2/filters/:id"""
    auth = await require(request, "read:filters")
    ctx = request.app[CTX]
    row = await _own(request, "filters", auth.account["id"])
    return json_response((await _entities(ctx, [row]))[0])


async def create(request: web.Request) -> web.Response:
    """POST /api/v2/filters"""
    auth = await require(request, "write:filters")
    ctx = request.app[CTX]
    params = await read_params(request)
    title, contexts = _text(params, "title", MAX_TITLE_CHARS, True), _contexts(params, True)
    action = _action(params) or "warn"
    expires_at = _expires_at(params)
    changes = _keyword_changes(params)
    if any(c.id is not None for c in changes):
        raise HttpError(404, NOT_FOUND)  # as Mastodon: a new filter has no keywords to refer to
    async with ctx.db.write() as tx:
        count = (await tx.fetchrow("SELECT count(*) FROM filters WHERE account_id = ?", (auth.account["id"],)))[0]
        if count >= MAX_FILTERS:
            raise _invalid(f"at most {MAX_FILTERS} filters")
        filter_id = tx.new_id()
        await tx.execute(
            "INSERT INTO filters (id, account_id, title, context_json, filter_action, expires_at, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (filter_id, auth.account["id"], title, dumps_str(contexts), action, expires_at, now()),
        )
        for c in changes:
            if not c.destroy:
                await _insert_keyword(tx, filter_id, c.keyword or "", True if c.whole_word is None else c.whole_word)
    return json_response(await _entity(ctx, filter_id))


async def update(request: web.Request) -> web.Response:
    """PUT /api/v2/filters/:id (keywords_attributes may add, change or `_destroy` keywords)."""
    auth = await require(request, "write:filters")
    ctx = request.app[CTX]
    row = await _own(request, "filters", auth.account["id"])
    params = await read_params(request)
    title, contexts, action = _text(params, "title", MAX_TITLE_CHARS, False), _contexts(params, False), _action(params)
    expires_given = "expires_in" in params
    expires_at = _expires_at(params)
    changes = _keyword_changes(params)
    async with ctx.db.write() as tx:
        own = {r["id"] for r in await tx.fetchall("SELECT id FROM filter_keywords WHERE filter_id = ?", (row["id"],))}
        if any(c.id is not None and c.id not in own for c in changes):
            raise HttpError(404, NOT_FOUND)
        await tx.execute(
            "UPDATE filters SET title = ?, context_json = ?, filter_action = ?, expires_at = ? WHERE id = ?",
            (title or row["title"], dumps_str(contexts) if contexts else row["context_json"],
             action or row["filter_action"], expires_at if expires_given else row["expires_at"], row["id"]),
        )
        for c in changes:
            if c.id is None and not c.destroy:
                await _insert_keyword(tx, row["id"], c.keyword or "", True if c.whole_word is None else c.whole_word)
            elif c.id is not None and c.destroy:
                await tx.execute("DELETE FROM filter_keywords WHERE id = ?", (c.id,))
            elif c.id is not None:
                await tx.execute(
                    "UPDATE filter_keywords SET keyword = coalesce(?, keyword), whole_word = coalesce(?, whole_word)"
                    " WHERE id = ?", (c.keyword, None if c.whole_word is None else int(c.whole_word), c.id),
                )
        await _check_keyword_count(tx, row["id"])
    return json_response(await _entity(ctx, row["id"]))


def _rules_index(table: str, render: Render) -> Handler:
    """GET /api/v2/filters/:id/keywords or …/statuses: the filter's rows of `table`."""

    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, "read:filters")
        row = await _own(request, "filters", auth.account["id"])
        rows = await request.app[CTX].db.fetchall(f"SELECT * FROM {table} WHERE filter_id = ? ORDER BY id", (row["id"],))
        return json_response([render(r) for r in rows])

    return handler


def _rule_show(table: str, render: Render) -> Handler:
    """GET /api/v2/filters/keywords/:id or …/statuses/:id"""

    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, "read:filters")
        return json_response(render(await _own(request, table, auth.account["id"])))

    return handler


def _delete(table: str) -> Handler:
    """DELETE /api/v2/filters/:id, …/keywords/:id or …/statuses/:id (a filter takes its keywords and statuses along)."""

    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, "write:filters")
        row = await _own(request, table, auth.account["id"])
        async with request.app[CTX].db.write() as tx:
            await tx.execute(f"DELETE FROM {table} WHERE id = ?", (row["id"],))
        return json_response({})

    return handler


async def keywords_create(request: web.Request) -> web.Response:
    """POST /api/v2/filters/:id/keywords"""
    auth = await require(request, "write:filters")
    ctx = request.app[CTX]
    row = await _own(request, "filters", auth.account["id"])
    params = await read_params(request)
    keyword = _text(params, "keyword", MAX_KEYWORD_CHARS, True) or ""
    whole_word = params.bool("whole_word", True)
    async with ctx.db.write() as tx:
        keyword_id = await _insert_keyword(tx, row["id"], keyword, whole_word)
        await _check_keyword_count(tx, row["id"])
        created = await tx.fetchrow("SELECT * FROM filter_keywords WHERE id = ?", (keyword_id,))
    return json_response(keyword_entity(created))


async def keyword_update(request: web.Request) -> web.Response:
    """PUT /api/v2/filters/keywords/:id"""
    auth = await require(request, "write:filters")
    ctx = request.app[CTX]
    row = await _own(request, "filter_keywords", auth.account["id"])
    params = await read_params(request)
    keyword = _text(params, "keyword", MAX_KEYWORD_CHARS, True)
    whole_word = params.bool("whole_word", bool(row["whole_word"]))
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE filter_keywords SET keyword = ?, whole_word = ? WHERE id = ?",
                         (keyword, int(whole_word), row["id"]))
        updated = await tx.fetchrow("SELECT * FROM filter_keywords WHERE id = ?", (row["id"],))
    return json_response(keyword_entity(updated))


async def statuses_create(request: web.Request) -> web.Response:
    """POST /api/v2/filters/:id/statuses (only a status the user can see)"""
    auth = await require(request, "write:filters")
    ctx = request.app[CTX]
    row = await _own(request, "filters", auth.account["id"])
    params = await read_params(request)
    raw_status = params.str("status_id", max_length=20)
    if not raw_status:
        raise _invalid("Status can't be blank")
    status = await visible_status(ctx, raw_status, auth.account)
    async with ctx.db.write() as tx:
        existing = await tx.fetchall("SELECT status_id FROM filter_statuses WHERE filter_id = ?", (row["id"],))
        if any(r["status_id"] == status["id"] for r in existing):
            raise _invalid("Status has already been taken")
        if len(existing) >= MAX_STATUSES_PER_FILTER:
            raise _invalid(f"at most {MAX_STATUSES_PER_FILTER} statuses")
        entry_id = tx.new_id()
        await tx.execute("INSERT INTO filter_statuses (id, filter_id, status_id) VALUES (?, ?, ?)",
                         (entry_id, row["id"], status["id"]))
        created = await tx.fetchrow("SELECT * FROM filter_statuses WHERE id = ?", (entry_id,))
    return json_response(filter_status_entity(created))


def _v1(keyword: Row) -> dict[str, Any]:
    """A V1::Filter: one keyword of a v2 filter, as Mastodon 4 presents it."""
    return {
        "id": str(keyword["id"]),
        "phrase": keyword["keyword"],
        "context": loads_strict(keyword["context_json"]),
        "whole_word": bool(keyword["whole_word"]),
        "expires_at": iso(keyword["expires_at"]) if keyword["expires_at"] is not None else None,
        "irreversible": keyword["filter_action"] == "hide",
    }


V1_SELECT = ("SELECT k.*, f.context_json, f.expires_at, f.filter_action FROM filter_keywords k"
             " JOIN filters f ON f.id = k.filter_id WHERE f.account_id = ?")


async def v1_index(request: web.Request) -> web.Response:
    """GET /api/v1/filters"""
    auth = await require(request, "read:filters")
    rows = await request.app[CTX].db.fetchall(V1_SELECT + " ORDER BY k.id", (auth.account["id"],))
    return json_response([_v1(r) for r in rows])


async def v1_show(request: web.Request) -> web.Response:
    """GET /api/v1/filters/:id (the id of a keyword)"""
    auth = await require(request, "read:filters")
    row = await request.app[CTX].db.fetchone(V1_SELECT + " AND k.id = ?",
                                             (auth.account["id"], parse_id(request.match_info["id"])))
    if row is None:
        raise HttpError(404, NOT_FOUND)
    return json_response(_v1(row))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v2/filters", index)
    r.add_post("/api/v2/filters", create)
    r.add_get("/api/v2/filters/keywords/{id}", _rule_show("filter_keywords", keyword_entity))
    r.add_put("/api/v2/filters/keywords/{id}", keyword_update)
    r.add_delete("/api/v2/filters/keywords/{id}", _delete("filter_keywords"))
    r.add_get("/api/v2/filters/statuses/{id}", _rule_show("filter_statuses", filter_status_entity))
    r.add_delete("/api/v2/filters/statuses/{id}", _delete("filter_statuses"))
    r.add_get("/api/v2/filters/{id}", show)
    r.add_put("/api/v2/filters/{id}", update)
    r.add_delete("/api/v2/filters/{id}", _delete("filters"))
    r.add_get("/api/v2/filters/{id}/keywords", _rules_index("filter_keywords", keyword_entity))
    r.add_post("/api/v2/filters/{id}/keywords", keywords_create)
    r.add_get("/api/v2/filters/{id}/statuses", _rules_index("filter_statuses", filter_status_entity))
    r.add_post("/api/v2/filters/{id}/statuses", statuses_create)
    r.add_get("/api/v1/filters", v1_index)
    r.add_get("/api/v1/filters/{id}", v1_show)
