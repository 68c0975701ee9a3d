"""HTTP routes for actors: discovery, actor documents, their collections, profile pages.

Actor URLs serve both audiences: ActivityPub clients get JSON, browsers the
profile page, decided by the Accept header (INTEROP pitfall 8) with `Vary: Accept`
so caches keep the two apart.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors import nodeinfo, webfinger
from actors.collections import PAGE_SIZE, offset_page, ordered_collection, page_number, page_url
from actors.documents import activity_response, actor_document, tombstone
from actors.local import get_local_account, instance_signer
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.negotiation import wants_activity_json, wants_html
from fedi.web.render import CSP_FORMS_LEAVE_SITE, render

VARY = {"Vary": "Accept"}
PROFILE_STATUSES = 20


async def _account(ctx: Context, username: str) -> Row:
    """A local (non-instance) account by name, or 404."""
    row = await get_local_account(ctx.db, username)
    if row is None:
        raise HttpError(404, "not found")
    return row


def _gone(request: web.Request, row: Row) -> web.Response:
    """410 for a suspended account: a Tombstone for ActivityPub clients, an error otherwise."""
    if wants_activity_json(request):
        return activity_response(tombstone(row["uri"]), status=410, headers=VARY)
    raise HttpError(410, "gone", headers=VARY)


async def _moved_away(ctx: Context, row: Row) -> web.Response | None:
    """A moved account's HTML profile sends browsers to the new account (its JSON keeps being served)."""
    if not row["moved_to_uri"]:
        return None
    target = await ctx.db.fetchone("SELECT url, uri FROM accounts WHERE id = ?", (row["moved_to_account_id"],))
    location = (target["url"] or target["uri"]) if target else row["moved_to_uri"]
    return web.Response(status=302, headers={"Location": location, **VARY})


async def _profile_page(request: web.Request, ctx: Context, row: Row) -> web.Response:
    moved = await _moved_away(ctx, row)
    if moved is not None:
        return moved
    counts = await ctx.db.fetchone(  # trigger-maintained counters: no count over a big account's rows per view
        """SELECT coalesce(max(followers_count), 0) AS followers, coalesce(max(following_count), 0) AS following,
                  coalesce(max(statuses_count), 0) AS posts FROM account_stats WHERE account_id = ?""",
        (row["id"],),
    )
    statuses = await ctx.db.fetchall(
        """SELECT id, uri, url, content, summary, sensitive, published_at FROM statuses
           WHERE account_id = ? AND local = 1 AND deleted_at IS NULL AND reblog_of_id IS NULL
             AND visibility IN ('public', 'unlisted')
           ORDER BY id DESC LIMIT ?""",
        (row["id"], PROFILE_STATUSES),
    )
    context: dict[str, Any] = {
        "instance": ctx.config.instance,
        "base_url": ctx.base_url,
        "account": row,
        "display_name": row["display_name"] or row["username"],
        "handle": f"@{row['username']}@{ctx.domain}",
        "counts": counts,
        "statuses": statuses,
        "title": f"{row['display_name'] or row['username']} (@{row['username']}@{ctx.domain})",
    }
    return render("profile.html", context, headers={**VARY, **CSP_FORMS_LEAVE_SITE})


async def actor(request: web.Request) -> web.Response:
    """GET /users/{username}: JSON unless a browser asked for HTML."""
    ctx = request.app[CTX]
    row = await _account(ctx, request.match_info["username"])
    if row["suspended_at"] is not None:
        return _gone(request, row)
    if wants_html(request):
        return await _profile_page(request, ctx, row)
    return activity_response(actor_document(ctx.config, row), headers=VARY)


async def profile(request: web.Request) -> web.Response:
    """GET /@{username}: the HTML profile, or the actor JSON for an ActivityPub Accept."""
    ctx = request.app[CTX]
    row = await _account(ctx, request.match_info["username"])
    if row["suspended_at"] is not None:
        return _gone(request, row)
    if wants_activity_json(request):
        return activity_response(actor_document(ctx.config, row), headers=VARY)
    return await _profile_page(request, ctx, row)


async def instance_actor(request: web.Request) -> web.Response:
    """GET /actor: always JSON and never behind a signature, so key fetches cannot deadlock."""
    ctx = request.app[CTX]
    await instance_signer(ctx)  # its key pair exists before anyone sees the document
    row = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (ctx.instance_actor_id,))
    if row is None:
        raise HttpError(404, "not found")
    return activity_response(actor_document(ctx.config, row))


async def _graph_collection(request: web.Request, column: str, other: str, url_column: str) -> web.Response:
    """Followers (column=target_account_id) or following (column=account_id): accepted follows only."""
    ctx = request.app[CTX]
    row = await _account(ctx, request.match_info["username"])
    if row["suspended_at"] is not None:
        return _gone(request, row)
    collection_id = row[url_column]
    page = page_number(request)
    counter = "followers_count" if column == "target_account_id" else "following_count"
    total = int(await ctx.db.fetchval(f"SELECT {counter} FROM account_stats WHERE account_id = ?", (row["id"],)) or 0)
    if page is None:
        return activity_response(ordered_collection(collection_id, total, page_url(collection_id, 1)))
    rows = await ctx.db.fetchall(
        f"""SELECT a.uri FROM follows f JOIN accounts a ON a.id = f.{other}
            WHERE f.{column} = ? AND f.state = 'accepted'
            ORDER BY f.id DESC LIMIT ? OFFSET ?""",
        (row["id"], PAGE_SIZE, (page - 1) * PAGE_SIZE),
    )
    items = [r["uri"] for r in rows]
    return activity_response(offset_page(collection_id, page, items, total))


async def followers(request: web.Request) -> web.Response:
    return await _graph_collection(request, "target_account_id", "account_id", "followers_url")


async def following(request: web.Request) -> web.Response:
    return await _graph_collection(request, "account_id", "target_account_id", "following_url")


async def featured(request: web.Request) -> web.Response:
    """GET /users/{username}/collections/featured: pinned posts (none until pins exist)."""
    ctx = request.app[CTX]
    row = await _account(ctx, request.match_info["username"])
    if row["suspended_at"] is not None:
        return _gone(request, row)
    return activity_response(ordered_collection(row["featured_url"], 0, None))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/.well-known/webfinger", webfinger.webfinger)
    r.add_get("/.well-known/host-meta", webfinger.host_meta)
    r.add_get("/.well-known/nodeinfo", nodeinfo.well_known)
    for path in ("/.well-known/webfinger", "/.well-known/host-meta", "/.well-known/nodeinfo"):
        r.add_route("OPTIONS", path, webfinger.preflight)
    r.add_get("/nodeinfo/2.0", nodeinfo.nodeinfo_20)
    r.add_get("/nodeinfo/2.1", nodeinfo.nodeinfo_21)
    r.add_get("/actor", instance_actor)
    r.add_get("/users/{username}", actor)
    r.add_get("/users/{username}/followers", followers)
    r.add_get("/users/{username}/following", following)
    r.add_get("/users/{username}/collections/featured", featured)
    r.add_get("/@{username}", profile)
