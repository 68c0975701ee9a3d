"""Jinja2 rendering for HTML pages.

Autoescape is always on: only fields that went through the sanitiser (status
content, profile summary) are marked `|safe` in templates; names, handles and
content warnings are escaped (THREATS X1, X2). The environment is built on first
use, not at import.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from importlib.resources import files
from typing import Any

import jinja2
from aiohttp import web

from fedi.clock import iso_seconds

#: Defence in depth should a sanitiser bug let markup through: no scripts, no framing.
_CSP = (
    "default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; "
    "form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP.format(form_action="'self'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
#: For pages whose form is answered with a redirect to another server (the remote-follow box):
#: browsers apply form-action to the redirect's target too.
CSP_FORMS_LEAVE_SITE = {"Content-Security-Policy": _CSP.format(form_action="'self' https: http:")}


def human_time(ts: float | None) -> str:
    """A timestamp (Unix seconds) as `2024-05-01 12:30 UTC` for page text."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


@functools.cache
def environment() -> jinja2.Environment:
    """The shared template environment (templates are immutable at runtime, so one is enough)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(files("templates"))),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["iso_time"] = lambda ts: iso_seconds(ts) if ts is not None else ""
    env.filters["human_time"] = human_time
    return env


def render_string(name: str, context: dict[str, Any]) -> str:
    return environment().get_template(name).render(**context)


def render(
    name: str, context: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """An HTML response from a template, with the security headers every page carries."""
    all_headers = {**SECURITY_HEADERS, **(headers or {})}
    return web.Response(
        text=render_string(name, context), status=status, content_type="text/html", charset="utf-8",
        headers=all_headers,
    )
