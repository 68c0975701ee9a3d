"""GoToSocial's export API: `GET /api/v1/exports/stats` and the relationship CSVs, for the token's owner.

Each endpoint asks for the narrow read scope GoToSocial asks for (`read` covers them all).
"""

from __future__ import annotations

from aiohttp import web

from fedi.api.auth import require
from fedi.api.respond import json_response
from fedi.context import CTX
from fedi.errors import Handler
from fedi.portability import exports

#: GoToSocial's scope for each file.
SCOPES = {"following": "read:follows", "followers": "read:accounts", "lists": "read:lists",
          "blocks": "read:blocks", "mutes": "read:mutes"}


def csv_response(body: bytes, filename: str) -> web.Response:
    """A CSV download (never cached: it is the account's private data)."""
    return web.Response(body=body, content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


async def owner_id(request: web.Request, scope: str) -> int:
    """The id of the account behind the request's token, which must carry `scope` (401/403 otherwise)."""
    auth = await require(request, scope)
    assert auth.account is not None  # require() insists on a user
    return int(auth.account["id"])


async def stats(request: web.Request) -> web.Response:
    """GET /api/v1/exports/stats"""
    return json_response(await exports.stats(request.app[CTX], await owner_id(request, "read:accounts")))


def _csv(name: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        rows = await exports.GOTOSOCIAL[name](request.app[CTX], await owner_id(request, SCOPES[name]))
        return csv_response(exports.to_csv(rows), f"{name}.csv")

    handler.__doc__ = f"GET /api/v1/exports/{name}.csv"
    return handler


def setup(app: web.Application) -> None:
    app.router.add_get("/api/v1/exports/stats", stats)
    for name in exports.GOTOSOCIAL_FILES:
        app.router.add_get(f"/api/v1/exports/{name}.csv", _csv(name))
