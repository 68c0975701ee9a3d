"""Timelines: home (the materialised feed), public (local/remote/only_media), tag, list."""

from __future__ import annotations

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import optional, require
from fedi.api.owned import own_row
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import read_params
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.filtering import apply_filters

# Suspended authors (a blocked domain's accounts among them) appear in no timeline; silenced ones not in public ones.
VISIBLE = ("s.deleted_at IS NULL"
           " AND NOT EXISTS (SELECT 1 FROM accounts x WHERE x.id = s.account_id AND x.suspended_at IS NOT NULL)")
LISTED = "NOT EXISTS (SELECT 1 FROM accounts x WHERE x.id = s.account_id AND x.silenced_at IS NOT NULL)"


async def render_page(request: web.Request, ctx: Context, rows: list[Row], viewer: Row | None,
                      filter_context: str | None = None) -> web.Response:
    """A page of statuses; with `filter_context`, the viewer's filters drop or mark them (Link still spans the rows)."""
    body = await entities.statuses(ctx, rows, viewer)
    if filter_context is not None:
        body = await apply_filters(ctx, viewer, body, filter_context)
    return paged_json(request, body, [r["id"] for r in rows])


async def home(request: web.Request) -> web.Response:
    """GET /api/v1/timelines/home: one indexed range scan of home_feed."""
    auth = await require(request, "read:statuses")
    ctx = request.app[CTX]
    page = page_from(await read_params(request))
    rows = await fetch_page(
        ctx, page,
        "SELECT s.* FROM home_feed h JOIN statuses s ON s.id = h.status_id WHERE h.account_id = ? AND " + VISIBLE,
        [auth.account["id"]], column="h.status_id",
    )
    return await render_page(request, ctx, rows, auth.account, "home")


async def public(request: web.Request) -> web.Response:
    """GET /api/v1/timelines/public (?local, ?remote, ?only_media)."""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    params = await read_params(request)
    where = [VISIBLE, LISTED, "s.visibility = 'public'", "s.reblog_of_id IS NULL"]
    # The plan is named, not left to the planner: without statistics it sorts every public status for the
    # federated page, and with them (after an ANALYZE) it walks `statuses_reblog`'s NULL group or the whole
    # table for the local one. statuses_public (visibility, local, id) serves local and remote in id order;
    # the federated page walks the table newest-first, where most rows qualify.
    index = "NOT INDEXED"
    if params.bool("local"):
        where.append("s.local = 1")
        index = "INDEXED BY statuses_public"
    elif params.bool("remote"):
        where.append("s.local = 0")
        index = "INDEXED BY statuses_public"
    if params.bool("only_media"):
        where.append("EXISTS (SELECT 1 FROM media_attachments m WHERE m.status_id = s.id)")
    rows = await fetch_page(ctx, page_from(params), f"SELECT s.* FROM statuses s {index} WHERE " + " AND ".join(where),
                            column="s.id")
    return await render_page(request, ctx, rows, auth.account if auth else None, "public")


async def tag(request: web.Request) -> web.Response:
    """GET /api/v1/timelines/tag/{hashtag}"""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    params = await read_params(request)
    name = request.match_info["hashtag"].lower().lstrip("#")
    where = [VISIBLE, LISTED, "s.visibility = 'public'", "st.tag_id = (SELECT id FROM tags WHERE name = ?)"]
    if params.bool("local"):
        where.append("s.local = 1")
    elif params.bool("remote"):
        where.append("s.local = 0")
    rows = await fetch_page(
        ctx, page_from(params),
        "SELECT s.* FROM status_tags st JOIN statuses s ON s.id = st.status_id WHERE " + " AND ".join(where),
        [name], column="st.status_id",
    )
    return await render_page(request, ctx, rows, auth.account if auth else None, "public")


async def list_timeline(request: web.Request) -> web.Response:
    """GET /api/v1/timelines/list/{id}: home-feed statuses by the list's members."""
    auth = await require(request, "read:lists")
    ctx = request.app[CTX]
    owned = await own_row(ctx, "lists", request.match_info["id"], auth.account["id"])
    rows = await fetch_page(
        ctx, page_from(await read_params(request)),
        "SELECT s.* FROM home_feed h JOIN statuses s ON s.id = h.status_id WHERE h.account_id = ? AND " + VISIBLE
        + " AND s.account_id IN (SELECT account_id FROM list_accounts WHERE list_id = ?)",
        [auth.account["id"], owned["id"]], column="h.status_id",
    )
    return await render_page(request, ctx, rows, auth.account, "home")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/timelines/home", home)
    r.add_get("/api/v1/timelines/public", public)
    r.add_get("/api/v1/timelines/tag/{hashtag}", tag)
    r.add_get("/api/v1/timelines/list/{id}", list_timeline)
