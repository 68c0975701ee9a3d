"""Content negotiation between ActivityPub clients and browsers."""

from __future__ import annotations

from aiohttp import web

AS2 = "application/activity+json"
LD_PROFILE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'


def _media_types(header: str) -> list[str]:
    return [part.split(";", 1)[0].strip().lower() for part in header.split(",") if part.strip()]


def wants_activity_json(request: web.Request) -> bool:
    """True for any Accept naming activity+json or ld+json (with or without a profile)."""
    types = _media_types(request.headers.get("Accept", ""))
    return any(t in (AS2, "application/ld+json") for t in types)


def wants_html(request: web.Request) -> bool:
    """True when a browser asked: text/html is accepted and no JSON type is preferred."""
    types = _media_types(request.headers.get("Accept", ""))
    if not types or any(t in (AS2, "application/ld+json", "application/json") for t in types):
        return False
    return "text/html" in types or "application/xhtml+xml" in types


def is_activity_content_type(value: str) -> bool:
    media = value.split(";", 1)[0].strip().lower()
    return media in (AS2, "application/ld+json")
