"""The streaming API as Mastodon serves it: a WebSocket and server-sent-event endpoints.

`GET /api/v1/streaming` upgrades to a WebSocket; the token comes from the
`Authorization` header, the `access_token` query parameter, or the
`Sec-WebSocket-Protocol` header (browsers cannot set headers; the token is then
echoed back as the chosen protocol). Clients subscribe with
`{"type": "subscribe", "stream": "hashtag", "tag": "cats"}` and get
`{"stream": [...], "event": "update", "payload": "<entity JSON as a string>"}`.
`GET /api/v1/streaming/<stream>` serves the same events as `text/event-stream`
(Mastodon.py bots use these). Every stream needs a token, as Mastodon does by
default. The routing itself lives in `fedi.api.stream_hub`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import WSMsgType, web

from fedi.api.auth import Auth, bearer, covers, lookup_token
from fedi.api.cors import HEADERS as CORS_HEADERS
from fedi.api.stream_audience import DIRECT, HASHTAG, HASHTAG_LOCAL, LIST, USER, Key
from fedi.api.stream_hub import NOTIFICATIONS, Connection, Frame, Hub
from fedi.context import CTX, Context
from fedi.errors import HttpError
from fedi.jsonutil import JsonError, loads_strict

HUB = web.AppKey("fedi_streaming_hub", Hub)
PUBLIC_STREAMS = ("public", "public:local", "public:remote", "public:media", "public:local:media", "public:remote:media")
STREAMS = (USER, NOTIFICATIONS, DIRECT, LIST, HASHTAG, HASHTAG_LOCAL, *PUBLIC_STREAMS)
_TAG = re.compile(r"^\w{1,100}$")
MAX_MESSAGE_BYTES = 16_384


class StreamError(Exception):
    """A subscription that cannot be made; sent as `{"error", "status"}` (or a JSON HTTP error)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _protocol_token(request: web.Request) -> str | None:
    value = request.headers.get("Sec-WebSocket-Protocol", "")
    first = value.split(",")[0].strip()
    return first or None


async def _authenticate(ctx: Context, token: str | None) -> Auth:
    if token is None:
        raise HttpError(401, "Missing access token")
    auth = await lookup_token(ctx, token)
    if auth is None:
        raise HttpError(401, "Invalid access token")
    return auth


def stream_key(auth: Auth, name: str, tag: Any = None, list_id: Any = None) -> Key:
    """The hub key for a stream name and its parameters, checking the token's scopes."""
    if name not in STREAMS:
        raise StreamError(400, "Unknown stream type")
    scope = "read:notifications" if name == NOTIFICATIONS else "read:statuses"
    if not covers(auth.scopes, scope):
        raise StreamError(403, "This action is outside the authorized scopes")
    if name in (HASHTAG, HASHTAG_LOCAL):
        normal = tag.lstrip("#").lower() if isinstance(tag, str) else ""
        if not _TAG.match(normal):
            raise StreamError(400, "No valid tag for stream provided")
        return (name, normal)
    if name in PUBLIC_STREAMS:
        return (name, None)
    if auth.account is None:
        raise StreamError(401, "This stream requires a user token")
    if name == LIST:
        text = str(list_id) if isinstance(list_id, (str, int)) and not isinstance(list_id, bool) else ""
        if not text.isdigit() or len(text) > 19:
            raise StreamError(404, "Record not found")
        return (LIST, int(text))
    return (name, auth.account["id"])


async def check_list(ctx: Context, auth: Auth, key: Key) -> None:
    """Only the owner may stream a list (THREATS O5: a foreign id is simply not found)."""
    if key[0] == LIST:
        assert auth.account is not None
        owned = await ctx.db.fetchval(
            "SELECT 1 FROM lists WHERE id = ? AND account_id = ?", (key[1], auth.account["id"])
        )
        if not owned:
            raise StreamError(404, "Record not found")


async def _register(ctx: Context, hub: Hub, auth: Auth) -> Connection:
    """Add a connection to the hub, then make sure its token was not revoked meanwhile.

    A revocation committed before the check is seen by it; one committed after
    finds the connection registered and closes it: no window is left (O4).
    """
    conn = Connection(auth, notifications=covers(auth.scopes, "read:notifications"))
    hub.add(conn)
    if not await ctx.db.fetchval("SELECT 1 FROM oauth_tokens WHERE id = ? AND revoked_at IS NULL", (auth.token_id,)):
        hub.revoke(auth.token_id)
    return conn


# WebSocket -------------------------------------------------------------------


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /api/v1/streaming (WebSocket upgrade)."""
    ctx, hub = request.app[CTX], request.app[HUB]
    offered = _protocol_token(request)
    auth = await _authenticate(ctx, bearer(request) or offered)
    ws = web.WebSocketResponse(
        protocols=(offered,) if offered else (), heartbeat=hub.settings.ws_heartbeat, max_msg_size=MAX_MESSAGE_BYTES
    )
    if not ws.can_prepare(request).ok:
        raise HttpError(400, "This endpoint needs a WebSocket upgrade")
    await ws.prepare(request)
    conn = await _register(ctx, hub, auth)
    pump = asyncio.create_task(_pump(ws, conn, hub))
    try:
        if "stream" in request.query:
            q = request.query
            await _subscribe(ctx, hub, conn, auth, q.get("stream", ""), q.get("tag"), q.get("list"))
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _handle_message(ctx, hub, conn, auth, msg.data)
    finally:
        hub.remove(conn)
        conn.close(conn.close_code)
        await pump
    return ws


async def _pump(ws: web.WebSocketResponse, conn: Connection, hub: Hub) -> None:
    """Write queued frames until the connection is closed by either side."""
    # asyncio.timeout, not wait_for: wait_for wraps every send in a new Task, which with hundreds of
    # listeners was half the cost of fanning an event out.
    try:
        while not conn.closed and not ws.closed:
            await conn.wake.wait()
            for frame in conn.take():
                async with asyncio.timeout(hub.settings.send_timeout):
                    await ws.send_str(frame.ws_text)
    except (ConnectionError, RuntimeError, asyncio.TimeoutError):
        pass  # the client went away or stopped reading: closing below is all that is left
    if not ws.closed:
        try:
            async with asyncio.timeout(1.0):
                await ws.close(code=conn.close_code)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            pass


def _send_error(hub: Hub, conn: Connection, status: int, message: str) -> None:
    """Queued like any frame, so only the pump task ever writes to the socket."""
    conn.push(Frame.error(status, message), hub.settings.queue_limit)


async def _subscribe(
    ctx: Context, hub: Hub, conn: Connection, auth: Auth, name: Any, tag: Any, list_id: Any
) -> None:
    try:
        key = stream_key(auth, name if isinstance(name, str) else "", tag, list_id)
        await check_list(ctx, auth, key)
        if key not in conn.keys and len(conn.keys) >= hub.settings.max_subscriptions:
            raise StreamError(429, "Too many subscriptions on this connection")
    except StreamError as exc:
        _send_error(hub, conn, exc.status, exc.message)
        return
    if not conn.closed:
        hub.subscribe(conn, key)


async def _handle_message(
    ctx: Context, hub: Hub, conn: Connection, auth: Auth, text: str
) -> None:
    try:
        message = loads_strict(text)
    except JsonError:
        message = None
    if not isinstance(message, dict) or message.get("type") not in ("subscribe", "unsubscribe"):
        _send_error(hub, conn, 400, "Unknown message: expected subscribe or unsubscribe")
        return
    name, tag, list_id = message.get("stream"), message.get("tag"), message.get("list")
    if message["type"] == "subscribe":
        await _subscribe(ctx, hub, conn, auth, name, tag, list_id)
        return
    try:
        hub.unsubscribe(conn, stream_key(auth, name if isinstance(name, str) else "", tag, list_id))
    except StreamError as exc:
        _send_error(hub, conn, exc.status, exc.message)


# Server-sent events ------------------------------------------------------------


def sse_endpoint(name: str) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A handler for GET /api/v1/streaming/<name>: one stream as `text/event-stream`."""

    async def handler(request: web.Request) -> web.StreamResponse:
        ctx, hub = request.app[CTX], request.app[HUB]
        auth = await _authenticate(ctx, bearer(request))
        stream = name
        if name.startswith("public") and request.query.get("only_media") in ("true", "1"):
            stream = f"{name}:media"
        try:
            key = stream_key(auth, stream, request.query.get("tag"), request.query.get("list"))
            await check_list(ctx, auth, key)
        except StreamError as exc:
            raise HttpError(exc.status, exc.message) from None
        return await _serve_sse(request, ctx, hub, auth, key)

    return handler


async def _serve_sse(request: web.Request, ctx: Context, hub: Hub, auth: Auth, key: Key) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        **CORS_HEADERS, "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no",
    })
    await response.prepare(request)
    conn = await _register(ctx, hub, auth)
    if not conn.closed:
        hub.subscribe(conn, key)
    try:
        await response.write(b":)\n")
        async for chunk in _sse_chunks(request, conn, hub):
            async with asyncio.timeout(hub.settings.send_timeout):
                await response.write(chunk)
    except (ConnectionError, asyncio.TimeoutError):
        pass
    finally:
        hub.remove(conn)
        conn.close(conn.close_code)
    return response


async def _sse_chunks(request: web.Request, conn: Connection, hub: Hub) -> AsyncIterator[bytes]:
    """Frames as they come, a `:thump` comment when idle; ends when closed or the client is gone."""
    while not conn.closed:
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        try:
            async with asyncio.timeout(hub.settings.sse_heartbeat):
                await conn.wake.wait()
        except asyncio.TimeoutError:
            yield b":thump\n"
            continue
        frames = conn.take()
        if frames:
            yield b"".join(f.sse_bytes for f in frames)


async def health(request: web.Request) -> web.Response:
    """GET /api/v1/streaming/health"""
    return web.Response(text="OK", content_type="text/plain")


def setup(app: web.Application) -> None:
    hub = Hub()
    app[HUB] = hub

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        hub.start(app[CTX])
        yield
        await hub.stop()

    async def on_shutdown(app: web.Application) -> None:
        hub.close_all()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(on_shutdown)
    r = app.router
    r.add_get("/api/v1/streaming", websocket)
    r.add_get("/api/v1/streaming/", websocket)
    r.add_get("/api/v1/streaming/health", health)
    for path, name in (
        ("user", USER), ("user/notification", NOTIFICATIONS), ("public", "public"), ("public/local", "public:local"),
        ("public/remote", "public:remote"), ("hashtag", HASHTAG), ("hashtag/local", HASHTAG_LOCAL), ("list", LIST),
        ("direct", DIRECT),
    ):
        r.add_get(f"/api/v1/streaming/{path}", sse_endpoint(name))
