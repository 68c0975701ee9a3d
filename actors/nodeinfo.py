"""NodeInfo 2.0/2.1: what software this is and how big it is.

Instance lists and peers' admin screens read it; Mastodon uses it to detect the
software. Counts cover local human accounts only (not the instance actor).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi import __version__
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.jsonutil import dumps

SCHEMA = "http://nodeinfo.diaspora.software/ns/schema/{version}"
CORS = {"Access-Control-Allow-Origin": "*"}
#: The project's source and home page for NodeInfo 2.1; both optional in the schema and
#: left out until the project publishes them (the instance URL would be a wrong answer).
REPOSITORY: str | None = None
HOMEPAGE: str | None = None
MONTH = 30 * 86_400
HALF_YEAR = 180 * 86_400

_LOCAL_USERS = "FROM accounts WHERE domain IS NULL AND actor_type != 'Application' AND suspended_at IS NULL"
#: Local statuses not deleted (boosts included), from the trigger-maintained counters: crawlers ask
#: for NodeInfo and the instance often, and counting every local status each time grows with the instance.
LOCAL_POSTS = (
    "SELECT coalesce(sum(s.statuses_count), 0) FROM account_stats s JOIN accounts a ON a.id = s.account_id"
    " WHERE a.domain IS NULL"
)


def _json(doc: dict[str, Any], content_type: str) -> web.Response:
    return web.Response(body=dumps(doc), headers={**CORS, "Content-Type": content_type})


async def _active_since(ctx: Context, since: float) -> int:
    """Accounts that posted or signed up since then (fedi keeps no sign-in times)."""
    return int(await ctx.db.fetchval(
        f"SELECT count(*) {_LOCAL_USERS} AND (created_at >= ?"
        " OR id IN (SELECT account_id FROM account_stats WHERE last_status_at >= ?))",
        (since, since),
    ) or 0)


async def usage(ctx: Context) -> dict[str, Any]:
    total = await ctx.db.fetchval(f"SELECT count(*) {_LOCAL_USERS}")
    posts = await ctx.db.fetchval(LOCAL_POSTS)
    ts = now()
    return {
        "users": {
            "total": int(total or 0),
            "activeMonth": await _active_since(ctx, ts - MONTH),
            "activeHalfyear": await _active_since(ctx, ts - HALF_YEAR),
        },
        "localPosts": int(posts or 0),
    }


async def document(ctx: Context, version: str) -> dict[str, Any]:
    """The NodeInfo document for schema version "2.0" or "2.1"."""
    software: dict[str, Any] = {"name": "fedi", "version": __version__}
    if version == "2.1":
        if REPOSITORY:
            software["repository"] = REPOSITORY
        if HOMEPAGE:
            software["homepage"] = HOMEPAGE
    instance = ctx.config.instance
    return {
        "version": version,
        "software": software,
        "protocols": ["activitypub"],
        "services": {"inbound": [], "outbound": []},
        "openRegistrations": instance.registrations == "open",
        "usage": await usage(ctx),
        "metadata": {"nodeName": instance.name, "nodeDescription": instance.description},
    }


async def well_known(request: web.Request) -> web.Response:
    """GET /.well-known/nodeinfo — links to both schema versions."""
    base = request.app[CTX].base_url
    links = [
        {"rel": SCHEMA.format(version=v), "href": f"{base}/nodeinfo/{v}"} for v in ("2.0", "2.1")
    ]
    return _json({"links": links}, "application/json")


async def nodeinfo_20(request: web.Request) -> web.Response:
    doc = await document(request.app[CTX], "2.0")
    return _json(doc, f'application/json; profile="{SCHEMA.format(version="2.0")}#"')


async def nodeinfo_21(request: web.Request) -> web.Response:
    doc = await document(request.app[CTX], "2.1")
    return _json(doc, f'application/json; profile="{SCHEMA.format(version="2.1")}#"')
