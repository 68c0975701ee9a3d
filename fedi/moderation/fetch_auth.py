"""Authorized fetch: who may GET our ActivityPub documents (actors, posts, collections, activities).

The `authorized_fetch` setting (changed at runtime with `fedi federation authorized-fetch`):

* off — anyone may fetch; a request whose signature names a key on a blocked domain is refused (403).
* blocked — as off, and a signature that is present must verify; a blocked signer is refused.
* all — a valid signature is required (401 without one), and a blocked signer is refused.

The instance actor (`/actor`), WebFinger, NodeInfo and HTML pages are never behind
this: peers fetch the instance actor's key to check the signatures of our own
fetches, so it must stay reachable unsigned or two such instances would deadlock.
Local users' keys live in their actor documents (`…#main-key`); peers fetch them
signed by their own instance actor, as Mastodon does.
"""

from __future__ import annotations

from aiohttp import web

from fedi.clock import now
from fedi.context import CTX
from fedi.errors import Handler, HttpError
from fedi.moderation.domains import current
from fedi.negotiation import wants_activity_json, wants_html
from fedi.signatures import SignatureError, parse_signature
from inbox.verify import check_headers, verify_key

#: Routes that serve ActivityPub documents (instance actor excluded on purpose).
DOCUMENT_ROUTES = frozenset({
    "/users/{username}", "/users/{username}/followers", "/users/{username}/following",
    "/users/{username}/collections/featured", "/users/{username}/outbox", "/users/{username}/statuses/{id}",
    "/users/{username}/statuses/{id}/activity", "/activities/{id}", "/@{username}", "/@{username}/{id}",
})


def _is_document_request(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if request.method not in ("GET", "HEAD") or resource is None or resource.canonical not in DOCUMENT_ROUTES:
        return False
    if resource.canonical.startswith("/@"):  # profile and post pages: JSON only when asked for
        return wants_activity_json(request)
    return not wants_html(request)


async def check_fetch(request: web.Request) -> None:
    """Raise 401/403 if this GET may not have the document (see the module docstring)."""
    ctx = request.app[CTX]
    rules = await current(ctx)
    header = request.headers.get("Signature")
    parsed = None
    if header:
        try:
            parsed = parse_signature(header)
        except SignatureError as exc:
            if rules.authorized_fetch != "off":
                raise HttpError(401, f"signature: {exc.reason}") from None
    if parsed is not None and rules.suspended(parsed.key_id):
        raise HttpError(403, "domain is blocked")
    if parsed is None:
        if rules.authorized_fetch == "all":
            raise HttpError(401, "signature: this instance requires signed fetches",
                            headers={"WWW-Authenticate": 'Signature realm="fedi",headers="(request-target) host date"'})
        return
    if rules.authorized_fetch == "off":
        return
    check_headers(ctx, request, b"", now())
    verified = await verify_key(ctx, request, parsed)
    if rules.suspended(verified.signer):
        raise HttpError(403, "domain is blocked")


@web.middleware
async def authorized_fetch_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if _is_document_request(request):
        await check_fetch(request)
    return await handler(request)
