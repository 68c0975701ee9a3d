"""Block-list subscriptions over the admin API (fedi's own; Mastodon has none), under /api/v1/admin/fedi/blocklist/:

sources (subscribe, change, unsubscribe, sync now), drafts (list, apply, dismiss,
apply all), excludes, and the sync settings (consensus, change cap, interval).
The same functions as the CLI make every change, so both are audited alike.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.context import CTX, Context
from fedi.errors import HttpError, refusing
from fedi.moderation.blocklist_drafts import SETTINGS, Outcome, apply_draft, dismiss_draft, draft_entity, load_settings
from fedi.moderation.blocklist_merge import Change
from fedi.moderation.blocks import RuleError
from fedi.moderation.subscriptions import (
    SourceSpec, SubscriptionError, SyncResult, add_exclude, remove_exclude, set_settings, source_entity, subscribe, sync,
    unsubscribe, update_source,
)

PREFIX = "/api/v1/admin/fedi/blocklist"
READ, WRITE = "admin:read:domain_blocks", "admin:write:domain_blocks"
# Each source with `n`, how many entries its last good copy has.
SOURCES = ("SELECT s.*, (SELECT count(*) FROM blocklist_entries e WHERE e.source_id = s.id) AS n"
           " FROM blocklist_sources s")

T = TypeVar("T")


def _change(c: Change) -> dict[str, Any]:
    return {"domain": c.domain, "change": c.change, "severity": c.severity, "reject_media": c.reject_media,
            "reject_reports": c.reject_reports, "public_comment": c.public_comment or None,
            "sources": [{"id": str(s.id), "url": s.url} for s in c.sources]}


def _outcome(outcome: Outcome) -> dict[str, Any]:
    return {"applied": [_change(c) for c in outcome.applied], "drafted": [_change(c) for c in outcome.drafted],
            "failed": [{**_change(c), "error": reason} for c, reason in outcome.failed]}


def _sync_result(result: SyncResult) -> dict[str, Any]:
    return {"sources": [{"id": str(f.source_id), "url": f.url, "state": f.state, "error": f.error,
                         "entries_count": f.entries, "dropped": f.dropped} for f in result.fetched],
            **_outcome(result.outcome)}


def _int(params: Params, name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not str(value).lstrip("-").isdigit() or len(str(value)) > 6:
        raise HttpError(422, f"Validation failed: {name} must be a whole number")
    return int(value)


async def sources(request: web.Request) -> web.Response:
    """GET …/sources: every subscription with how many entries its last good copy has."""
    await require(request, READ)
    rows = await request.app[CTX].db.fetchall(f"{SOURCES} ORDER BY s.priority DESC, s.id")
    return json_response([source_entity(r, r["n"]) for r in rows])


@refusing(SubscriptionError)
async def add_source(request: web.Request) -> web.Response:
    """POST …/sources (url, priority, max_severity, mode, retractions, format, enabled)"""
    auth = await require(request, WRITE)
    params = await read_params(request)
    spec = SourceSpec(
        url=params.str("url", "", max_length=2048) or "", priority=_int(params, "priority") or 0,
        max_severity=params.str("max_severity", "suspend", max_length=20) or "suspend",
        mode=params.str("mode", "draft", max_length=20) or "draft",
        retractions=params.str("retractions", "remove", max_length=20) or "remove",
        format=params.str("format", "auto", max_length=20) or "auto", enabled=params.bool("enabled", True))
    return json_response(source_entity(await subscribe(request.app[CTX], auth.account["id"], spec)))


async def show_source(request: web.Request) -> web.Response:
    await require(request, READ)
    row = await request.app[CTX].db.fetchone(f"{SOURCES} WHERE s.id = ?", (parse_id(request.match_info["id"]),))
    if row is None:
        raise HttpError(404, "Record not found")
    return json_response(source_entity(row, row["n"]))


@refusing(SubscriptionError)
async def change_source(request: web.Request) -> web.Response:
    """PUT …/sources/{id} with any of priority, max_severity, mode, retractions, format, enabled."""
    auth = await require(request, WRITE)
    params = await read_params(request)
    changes: dict[str, Any] = {k: params.str(k, max_length=20) for k in ("max_severity", "mode", "retractions", "format")
                               if params.get(k) is not None}
    if params.get("priority") is not None:
        changes["priority"] = _int(params, "priority")
    if params.get("enabled") is not None:
        changes["enabled"] = params.bool("enabled")
    row = await update_source(request.app[CTX], auth.account["id"], parse_id(request.match_info["id"]), changes)
    if row is None:
        raise HttpError(404, "Record not found")
    return json_response(source_entity(row))


async def _on_path_id(request: web.Request, action: Callable[[Context, int, int], Awaitable[T | None]],
                     render: Callable[[T], dict[str, Any]]) -> web.Response:
    """`action(ctx, admin, path id)` answered with `render`; None from it means no such record."""
    auth = await require(request, WRITE)
    result = await action(request.app[CTX], auth.account["id"], parse_id(request.match_info["id"]))
    if result is None:
        raise HttpError(404, "Record not found")
    return json_response(render(result))


async def remove_source(request: web.Request) -> web.Response:
    """DELETE …/sources/{id}: its domains count as retracted; answers what that changed."""
    return await _on_path_id(request, unsubscribe, _outcome)


async def sync_now(request: web.Request) -> web.Response:
    """POST …/sync: fetch every enabled list now and reconcile; answers what happened."""
    await require(request, WRITE)
    return json_response(_sync_result(await sync(request.app[CTX], force=True)))


async def drafts(request: web.Request) -> web.Response:
    """GET …/drafts (?state=pending|applied|dismissed, paging)"""
    await require(request, READ)
    params = await read_params(request)
    state = params.str("state", "pending", max_length=20)
    if state not in ("pending", "applied", "dismissed"):
        raise HttpError(422, "Validation failed: state must be pending, applied or dismissed")
    rows = await fetch_page(request.app[CTX], page_from(params, default=100, maximum=500),
                            "SELECT * FROM blocklist_drafts WHERE state = ?", [state])
    return paged_json(request, [draft_entity(r) for r in rows], [r["id"] for r in rows])


@refusing(RuleError)
async def apply_one(request: web.Request) -> web.Response:
    """POST …/drafts/{id}/apply"""
    return await _on_path_id(request, apply_draft, draft_entity)


async def apply_all(request: web.Request) -> web.Response:
    """POST …/drafts/apply_all: every pending draft; answers the applied ones and the refusals."""
    auth = await require(request, WRITE)
    ctx = request.app[CTX]
    applied, failed = [], []
    for r in await ctx.db.fetchall("SELECT id FROM blocklist_drafts WHERE state = 'pending' ORDER BY id"):
        try:
            row = await apply_draft(ctx, auth.account["id"], r["id"])
        except RuleError as exc:
            failed.append({"id": str(r["id"]), "error": exc.message})
            continue
        if row is not None:
            applied.append(draft_entity(row))
    return json_response({"applied": applied, "failed": failed})


async def dismiss_one(request: web.Request) -> web.Response:
    """POST …/drafts/{id}/dismiss"""
    return await _on_path_id(request, dismiss_draft, draft_entity)


async def excludes(request: web.Request) -> web.Response:
    await require(request, READ)
    rows = await request.app[CTX].db.fetchall("SELECT domain FROM blocklist_excludes ORDER BY domain")
    return json_response([r["domain"] for r in rows])


@refusing(SubscriptionError)
async def add_exclude_route(request: web.Request) -> web.Response:
    """POST …/excludes (domain)"""
    auth = await require(request, WRITE)
    params = await read_params(request)
    domain = await add_exclude(request.app[CTX], auth.account["id"], params.str("domain", "", max_length=300) or "")
    return json_response({"domain": domain})


@refusing(SubscriptionError)
async def remove_exclude_route(request: web.Request) -> web.Response:
    """DELETE …/excludes/{domain}"""
    auth = await require(request, WRITE)
    if not await remove_exclude(request.app[CTX], auth.account["id"], request.match_info["domain"]):
        raise HttpError(404, "Record not found")
    return json_response({})


async def settings(request: web.Request) -> web.Response:
    await require(request, READ)
    return json_response(await load_settings(request.app[CTX].db))


@refusing(SubscriptionError)
async def change_settings(request: web.Request) -> web.Response:
    """PUT …/settings with any of the blocklist_* keys; all are checked before any is stored."""
    auth = await require(request, WRITE)
    params = await read_params(request)
    given = {k: params.get(k) for k in SETTINGS if params.get(k) is not None}
    if not given or any(k not in SETTINGS and k != "access_token" for k in params):
        raise HttpError(422, f"Validation failed: give any of {', '.join(SETTINGS)}")
    ctx = request.app[CTX]
    await set_settings(ctx, auth.account["id"], given)
    return json_response(await load_settings(ctx.db))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get(f"{PREFIX}/sources", sources)
    r.add_post(f"{PREFIX}/sources", add_source)
    r.add_get(f"{PREFIX}/sources/{{id}}", show_source)
    r.add_put(f"{PREFIX}/sources/{{id}}", change_source)
    r.add_delete(f"{PREFIX}/sources/{{id}}", remove_source)
    r.add_post(f"{PREFIX}/sync", sync_now)
    r.add_get(f"{PREFIX}/drafts", drafts)
    r.add_post(f"{PREFIX}/drafts/apply_all", apply_all)
    r.add_post(f"{PREFIX}/drafts/{{id}}/apply", apply_one)
    r.add_post(f"{PREFIX}/drafts/{{id}}/dismiss", dismiss_one)
    r.add_get(f"{PREFIX}/excludes", excludes)
    r.add_post(f"{PREFIX}/excludes", add_exclude_route)
    r.add_delete(f"{PREFIX}/excludes/{{domain}}", remove_exclude_route)
    r.add_get(f"{PREFIX}/settings", settings)
    r.add_put(f"{PREFIX}/settings", change_settings)
