"""CORS for the client API, as Mastodon sets it, so browser clients (Elk, Phanpy) work."""

from __future__ import annotations

from aiohttp import web

from fedi.errors import Handler

PREFIXES = ("/api/", "/oauth/token", "/oauth/revoke", "/.well-known/oauth-authorization-server", "/nodeinfo/")
HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PUT, DELETE, GET, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Idempotency-Key, Accept",
    "Access-Control-Expose-Headers": "Link, X-RateLimit-Reset, X-RateLimit-Limit, X-RateLimit-Remaining, X-Request-Id, Idempotency-Key",
    "Access-Control-Max-Age": "1728000",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not request.path.startswith(PREFIXES):
        return await handler(request)
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        return web.Response(status=204, headers=HEADERS)
    response = await handler(request)
    if not response.prepared:
        response.headers.update(HEADERS)
    return response
