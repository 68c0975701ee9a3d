"""Per-user reading state and settings: markers (home/notifications) and preferences.

Preferences read `users.settings_json`, the same keys the credential account's
`source` uses (`privacy`, `sensitive`, `language`), plus `expand_media` and
`expand_spoilers` for the reading settings.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.api.auth import require
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.clock import iso, now
from fedi.context import CTX
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import loads_strict

TIMELINES = ("home", "notifications")
EXPAND_MEDIA = ("default", "show_all", "hide_all")


def _marker(row: Row) -> dict[str, Any]:
    return {"last_read_id": row["last_read_id"], "version": row["version"], "updated_at": iso(row["updated_at"])}


async def get_markers(request: web.Request) -> web.Response:
    """GET /api/v1/markers?timeline[]=home&timeline[]=notifications"""
    auth = await require(request, "read:statuses")
    params = await read_params(request)
    wanted = [t for t in params.list("timeline") if t in TIMELINES]
    if not wanted:
        return json_response({})
    rows = await request.app[CTX].db.fetchall(
        f"SELECT * FROM markers WHERE account_id = ? AND timeline IN ({','.join('?' for _ in wanted)})",
        [auth.account["id"], *wanted],
    )
    return json_response({r["timeline"]: _marker(r) for r in rows})


async def save_markers(request: web.Request) -> web.Response:
    """POST /api/v1/markers (home[last_read_id], notifications[last_read_id]); each save bumps `version`."""
    auth = await require(request, "write:statuses")
    params = await read_params(request)
    updates = {}
    for timeline in TIMELINES:
        if timeline not in params:
            continue
        last_read_id = params.sub(timeline).str("last_read_id", max_length=19)
        if not last_read_id or not last_read_id.isdigit():
            raise HttpError(422, f"Validation failed: {timeline}[last_read_id] must be an id")
        updates[timeline] = last_read_id
    async with request.app[CTX].db.write() as tx:
        for timeline, last_read_id in updates.items():
            await tx.execute(
                "INSERT INTO markers (account_id, timeline, last_read_id, version, updated_at) VALUES (?, ?, ?, 1, ?)"
                " ON CONFLICT (account_id, timeline) DO UPDATE SET last_read_id = excluded.last_read_id,"
                " version = markers.version + 1, updated_at = excluded.updated_at",
                (auth.account["id"], timeline, last_read_id, now()),
            )
        rows = await tx.fetchall(
            "SELECT * FROM markers WHERE account_id = ? AND timeline IN ('home', 'notifications')", (auth.account["id"],)
        )
    return json_response({r["timeline"]: _marker(r) for r in rows if r["timeline"] in updates})


async def preferences(request: web.Request) -> web.Response:
    """GET /api/v1/preferences"""
    auth = await require(request, "read:accounts")
    settings_json = await request.app[CTX].db.fetchval(
        "SELECT settings_json FROM users WHERE account_id = ?", (auth.account["id"],)
    )
    settings = loads_strict(settings_json or "{}")
    expand_media = settings.get("expand_media")
    return json_response({
        "posting:default:visibility": settings.get("privacy") or "public",
        "posting:default:sensitive": bool(settings.get("sensitive", False)),
        "posting:default:language": settings.get("language") or None,
        "reading:expand:media": expand_media if expand_media in EXPAND_MEDIA else "default",
        "reading:expand:spoilers": bool(settings.get("expand_spoilers", False)),
    })


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/markers", get_markers)
    r.add_post("/api/v1/markers", save_markers)
    r.add_get("/api/v1/preferences", preferences)
