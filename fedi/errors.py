"""Typed HTTP errors and the middleware that renders them.

Handlers raise `HttpError(status, code, message)`; the middleware turns it into
`{"error": message}` JSON for API and ActivityPub clients, or a short HTML page
for browsers. Anything unexpected becomes a logged 500 with no internals shown.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from fedi.negotiation import wants_html

log = logging.getLogger("fedi.errors")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
E = TypeVar("E", bound=Exception)


class HttpError(Exception):
    """An error with the HTTP status and message the client should see."""

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        #: More JSON keys beside "error" (OAuth's error_description, for one).
        self.extra = extra or {}


def json_error(
    status: int, message: str, headers: dict[str, str] | None = None, extra: dict[str, object] | None = None
) -> web.Response:
    return web.json_response({"error": message, **(extra or {})}, status=status, headers=headers)


def validation_failed(exc: Exception) -> HttpError:
    """`Validation failed: <message>` with the exception's `status` (422 if it has none)."""
    return HttpError(getattr(exc, "status", 422), f"Validation failed: {exc}")


def refusing(exc_type: type[E], convert: Callable[[E], HttpError] = validation_failed) -> Callable[[Handler], Handler]:
    """A handler decorator: the domain layer's `exc_type` (a refused change) becomes `convert(exc)` for the client.

    Lets the handler call the same functions as the CLI, which raise their own
    error types, without a try block around each call.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapped(request: web.Request) -> web.StreamResponse:
            try:
                return await handler(request)
            except exc_type as exc:
                raise convert(exc) from None

        return wrapped

    return decorate


#: Paths whose errors are always JSON, whatever the Accept header says (API clients are strict).
JSON_ONLY = ("/api/", "/oauth/token", "/oauth/revoke")


def _render(
    request: web.Request, status: int, message: str, headers: dict[str, str] | None = None,
    extra: dict[str, object] | None = None,
) -> web.Response:
    if wants_html(request) and not request.path.startswith(JSON_ONLY):
        body = (
            "<!doctype html><meta charset=utf-8><title>{s}</title>"
            "<h1>{s}</h1><p>{m}</p>".format(s=status, m=_escape(message))
        )
        return web.Response(status=status, text=body, content_type="text/html", headers=headers)
    return json_error(status, message, headers, extra)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except HttpError as exc:
        return _render(request, exc.status, exc.message, exc.headers, exc.extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 413:
            return _render(request, 413, "request body too large")
        return _render(request, exc.status, exc.reason, {k: v for k, v in exc.headers.items() if k.lower() == "allow"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(request, 500, "internal server error")
