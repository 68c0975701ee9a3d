"""JSON responses for the client API (orjson; Mastodon's error shape)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.jsonutil import dumps


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json", headers=headers)
