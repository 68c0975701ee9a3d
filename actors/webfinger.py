"""WebFinger (RFC 7033) and host-meta: how `@user@domain` becomes an actor id.

Server side: answer for local accounts and the instance actor, matching user and
domain case-insensitively but answering with the canonical case (INTEROP 16).
Client side: `resolve_handle` asks a remote host for its `self` link, and
`subscribe_template` for its remote-interaction (OStatus subscribe) template,
which is where a visitor's own server lets them follow one of ours.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.sax.saxutils import quoteattr

from aiohttp import web

from actors.local import get_local_account
from actors.remote import ActorError
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import json_error
from fedi.http_client import FetchError
from fedi.jsonutil import dumps
from fedi.negotiation import AS2
from fedi.moderation.domains import is_suspended
from fedi.origin import is_valid_url, same_origin

CORS = {"Access-Control-Allow-Origin": "*"}
JRD = "application/jrd+json"
MAX_RESOURCE = 512
PROFILE_PAGE = "http://webfinger.net/rel/profile-page"
SUBSCRIBE = "http://ostatus.org/schema/1.0/subscribe"
_LOCAL_PATH = re.compile(r"^/(?:users/|@)([^/]+)/?$")
_USER = re.compile(r"^[A-Za-z0-9_.-]+$")
_DOMAIN = re.compile(r"^(?=.{1,253}(?::|$))[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?"
                     r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*(?::[0-9]{1,5})?$")


class BadResource(ValueError):
    """The `resource` parameter is not something WebFinger can answer (400)."""


class BadHandle(ActorError):
    """What was given is not a `user@domain` handle at all (the caller's mistake, not the remote's)."""


def split_acct(value: str) -> tuple[str, str]:
    """(user, domain) from `acct:user@domain`, `user@domain` or `@user@domain`; raises BadResource."""
    rest = value[5:] if value[:5].lower() == "acct:" else value
    rest = rest[1:] if rest.startswith("@") else rest
    user, sep, domain = rest.rpartition("@")
    if not sep or not user or not domain:
        raise BadResource("resource must be acct:user@domain")
    return user, domain


async def _account_by_name(ctx: Context, user: str) -> Row | None:
    if user.lower() == ctx.domain.lower():
        return await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (ctx.instance_actor_id,))
    return await get_local_account(ctx.db, user)


async def lookup(ctx: Context, resource: str) -> Row | None:
    """The local account a resource names, or None (unknown, suspended, or another host)."""
    if len(resource) > MAX_RESOURCE or any(c.isspace() for c in resource) or not resource:
        raise BadResource("malformed resource")
    lowered = resource.lower()
    if lowered.startswith(("http://", "https://")):
        if not is_valid_url(resource):
            raise BadResource("malformed resource URL")
        if not same_origin(resource, ctx.base_url):
            return None
        path = urlsplit(resource).path
        if path.rstrip("/") == "/actor":
            row = await _account_by_name(ctx, ctx.domain)
        else:
            match = _LOCAL_PATH.match(path)
            row = await get_local_account(ctx.db, match.group(1)) if match else None
    elif lowered.startswith("acct:") or ("@" in resource and ":" not in resource.split("@", 1)[0]):
        user, domain = split_acct(resource)
        if domain.lower() != ctx.domain.lower():
            return None
        row = await _account_by_name(ctx, user)
    else:
        raise BadResource("resource must be an acct: URI or an http(s) URL")
    if row is None or row["suspended_at"] is not None:
        return None
    return row


def own_subscribe_template(ctx: Context) -> str:
    """Where remote servers send our users to follow or answer something of theirs (fedi.web.interaction)."""
    return f"{ctx.base_url}/authorize_interaction?uri={{uri}}"


def jrd(ctx: Context, row: Row) -> dict[str, Any]:
    """The JSON Resource Descriptor for a local account."""
    is_instance = row["actor_type"] == "Application"
    user = ctx.domain if is_instance else row["username"]
    profile = row["url"] or row["uri"]
    return {
        "subject": f"acct:{user}@{ctx.domain}",
        "aliases": [profile, row["uri"]] if profile != row["uri"] else [row["uri"]],
        "links": [
            {"rel": "self", "type": AS2, "href": row["uri"]},
            {"rel": PROFILE_PAGE, "type": "text/html", "href": profile},
            {"rel": SUBSCRIBE, "template": own_subscribe_template(ctx)},
        ],
    }


async def webfinger(request: web.Request) -> web.Response:
    """GET /.well-known/webfinger — every answer, errors included, carries CORS `*`."""
    ctx = request.app[CTX]
    resource = request.query.get("resource", "")
    try:
        row = await lookup(ctx, resource)
    except BadResource as exc:
        return json_error(400, str(exc), CORS)
    if row is None:
        return json_error(404, "not found", CORS)
    doc = jrd(ctx, row)
    rels = request.query.getall("rel", [])
    if rels:  # RFC 7033 §4.3: the client may ask for some link relations only
        doc["links"] = [link for link in doc["links"] if link["rel"] in rels]
    return web.Response(body=dumps(doc), content_type=JRD, headers=CORS)


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for the well-known endpoints (browser clients look people up)."""
    return web.Response(status=204, headers={
        **CORS,
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Allow-Headers": request.headers.get("Access-Control-Request-Headers", "Accept"),
        "Access-Control-Max-Age": "86400",
    })


async def host_meta(request: web.Request) -> web.Response:
    """GET /.well-known/host-meta — the XRD that points older clients at WebFinger."""
    base = request.app[CTX].base_url
    template = quoteattr(f"{base}/.well-known/webfinger?resource={{uri}}")
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<XRD xmlns="http://docs.oasis-open.org/ns/xri/xrd-1.0">\n'
        f'  <Link rel="lrdd" template={template}/>\n'
        "</XRD>\n"
    )
    return web.Response(text=body, content_type="application/xrd+xml", charset="utf-8", headers=CORS)


def _is_activity_type(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    media = value.split(";", 1)[0].strip().lower()
    return media == AS2 or (media == "application/ld+json" and "activitystreams" in value)


def _parse_handle(handle: str) -> tuple[str, str]:
    """(user, lower-cased domain) of a `user@domain` handle in any of its spellings; raises ActorError."""
    try:
        user, domain = split_acct(handle.strip())
    except BadResource:
        raise BadHandle("not a user@domain handle") from None
    if not _USER.match(user) or len(user) > 100 or not _DOMAIN.match(domain):
        raise BadHandle("not a valid user@domain handle")
    return user, domain.lower()


async def _local_named(ctx: Context, user: str) -> Row:
    row = await _account_by_name(ctx, user)
    if row is None or row["suspended_at"] is not None:
        raise ActorError("no such local account", 404)
    return row


async def _remote_links(ctx: Context, user: str, domain: str) -> list[dict[str, Any]]:
    """The links of a remote host's WebFinger answer for user@domain (never for a blocked domain)."""
    if await is_suspended(ctx, domain):
        raise ActorError(f"not looking up {user}@{domain}: the domain is blocked")
    query = urlencode({"resource": f"acct:{user}@{domain}"})
    url = f"{ctx.config.instance.scheme}://{domain}/.well-known/webfinger?{query}"
    try:
        result = await ctx.http.fetch_json(
            url, signer=None, accept="application/jrd+json, application/json", allow_json=True
        )
    except FetchError as exc:
        raise ActorError(f"WebFinger for {user}@{domain} failed: {exc.reason}", exc.status) from None
    links = result.document.get("links")
    return [link for link in links if isinstance(link, dict)] if isinstance(links, list) else []


async def resolve_handle(ctx: Context, handle: str) -> str:
    """The actor id for `@user@domain` (or `user@domain`, `acct:user@domain`); raises ActorError."""
    user, domain = _parse_handle(handle)
    if domain == ctx.domain.lower():
        return str((await _local_named(ctx, user))["uri"])
    for link in await _remote_links(ctx, user, domain):
        if link.get("rel") == "self" and _is_activity_type(link.get("type")):
            href = link.get("href")
            if is_valid_url(href):
                return str(href)
    raise ActorError(f"WebFinger for {user}@{domain} has no ActivityPub actor link")


async def subscribe_template(ctx: Context, handle: str) -> str:
    """The remote-interaction template (with `{uri}`) of the server `handle` lives on; raises ActorError.

    Only an http(s) URL is accepted, so a hostile answer cannot send the visitor to `javascript:`.
    """
    user, domain = _parse_handle(handle)
    if domain == ctx.domain.lower():
        await _local_named(ctx, user)
        return own_subscribe_template(ctx)
    for link in await _remote_links(ctx, user, domain):
        template = link.get("template")
        if link.get("rel") != SUBSCRIBE or not isinstance(template, str) or "{uri}" not in template:
            continue
        if is_valid_url(template.replace("{uri}", "x")):
            return template
    raise ActorError(f"{user}@{domain}'s server does not offer remote follows (no subscribe template)")
