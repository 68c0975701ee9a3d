"""Who may say what: signature, then authority, before anything is stored.

Order matters for both safety and cost: the cheap header checks (strength,
Date, Digest) run before any key is fetched, and a key is fetched only through
the guarded client. Status policy follows THREATS.md: 401 only for signature
failures (senders retry those), 403 for a valid signer without authority.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from actors.remote import ActorError, resolve_key
from fedi.context import Context
from fedi.errors import HttpError
from fedi.origin import netloc, same_origin
from fedi.signatures import ParsedSignature, SignatureError, check_request, parse_signature, verify_signature
from inbox.parse import NOTE_TYPES, object_id

log = logging.getLogger("fedi.inbox")


@dataclass(frozen=True)
class Verified:
    key_id: str
    signer: str  # the actor id that owns the key


def unauthorized(reason: str) -> HttpError:
    return HttpError(401, f"signature: {reason}")


def forbidden(reason: str) -> HttpError:
    return HttpError(403, reason)


def check_headers(ctx: Context, request: web.Request, body: bytes, at: float) -> ParsedSignature:
    """Signature header present and strong enough, Date in the window, Digest matching the body."""
    header = request.headers.get("Signature")
    if not header:
        raise unauthorized("missing Signature header")
    try:
        parsed = parse_signature(header)
        check_request(parsed, request.method, request.headers, body, at, ctx.config.federation.signature_window_seconds)
    except SignatureError as exc:
        raise unauthorized(exc.reason) from None
    if "host" in parsed.headers and not _is_our_host(ctx, request.headers.get("Host", "")):
        # Valid for the server it was made for, replayed here with its Host (THREATS S5).
        raise unauthorized("signed Host is not this instance")
    return parsed


def _is_our_host(ctx: Context, host: str) -> bool:
    """`Host` names this instance (case and default port aside)."""
    if any(c in host for c in "/?#@\\"):
        return False
    return same_origin(f"{ctx.config.instance.scheme}://{host}/", ctx.base_url)


async def verify_key(ctx: Context, request: web.Request, parsed: ParsedSignature) -> Verified:
    """Verify with the keyId's key; on failure refetch the key once (it may have been rotated)."""
    path, _, query = request.raw_path.partition("?")
    for refresh in (False, True):
        try:
            key = await resolve_key(ctx, parsed.key_id, refresh=refresh)
        except ActorError as exc:
            raise unauthorized(f"key not usable: {exc.reason}") from None
        try:
            verify_signature(parsed, request.method, path, query, request.headers, key.key)
            return Verified(parsed.key_id, key.owner)
        except SignatureError as exc:
            reason = exc.reason
    raise unauthorized(reason)


async def known_key(ctx: Context, key_id: str) -> bool:
    if ctx.keys.get(key_id):
        return True
    return await ctx.db.fetchone("SELECT 1 FROM accounts WHERE public_key_id = ?", (key_id,)) is not None


def check_authority(ctx: Context, activity: dict[str, Any], kind: str, actor: str, signer: str) -> None:
    """The signer speaks for the actor, and the activity only claims objects from the actor's host."""
    if signer != actor:
        raise forbidden("signer does not speak for the activity's actor")
    if netloc(actor).lower() == ctx.domain.lower():
        raise forbidden("remote activity claims a local actor")
    if not same_origin(activity["id"], actor):
        raise forbidden("activity id is not on the actor's host")
    obj = activity.get("object")
    if kind in ("Create", "Update") and isinstance(obj, dict):
        obj_id = object_id(obj)
        if obj.get("type") in NOTE_TYPES or "attributedTo" in obj:
            if obj_id is None or not same_origin(obj_id, actor):
                raise forbidden("object id is not on the actor's host")
            if object_id(obj.get("attributedTo")) != actor:
                raise forbidden("object is attributed to someone else")
        elif obj_id != actor:
            raise forbidden("actor may only update itself")
    if kind == "Move" and object_id(obj) != actor:
        raise forbidden("an actor may only move itself")
    if kind in ("Delete", "Undo"):
        target = object_id(obj)
        if target is None:
            raise forbidden("object missing")
        if not same_origin(target, actor):
            raise forbidden("object is not on the actor's host")
        if kind == "Undo" and isinstance(obj, dict) and object_id(obj.get("actor")) not in (None, actor):
            raise forbidden("cannot undo another actor's activity")


async def check_ownership(ctx: Context, kind: str, activity: dict[str, Any], actor: str) -> None:
    """Checks that need the database: the object belongs to the actor (THREATS A4, A6)."""
    obj = activity.get("object")
    target = object_id(obj)
    if kind in ("Delete", "Update") and target and target != actor:
        row = await ctx.db.fetchone(
            "SELECT a.uri FROM statuses s JOIN accounts a ON a.id = s.account_id WHERE s.uri = ?", (target,)
        )
        if row is not None and row["uri"] != actor:
            raise forbidden("object belongs to another actor")
    if kind in ("Accept", "Reject"):
        follow_uri = target or (obj.get("id") if isinstance(obj, dict) else None)
        row = await ctx.db.fetchone(
            "SELECT t.uri FROM follows f JOIN accounts t ON t.id = f.target_account_id WHERE f.uri = ?", (follow_uri,)
        )
        if row is None and isinstance(obj, dict) and object_id(obj.get("object")):
            row = await ctx.db.fetchone(
                "SELECT t.uri FROM follows f JOIN accounts t ON t.id = f.target_account_id"
                " JOIN accounts a ON a.id = f.account_id WHERE t.uri = ? AND a.uri = ? AND a.domain IS NULL",
                (actor, object_id(obj.get("actor"))),
            )
        if row is None and kind == "Accept":  # a follow the actor once rejected, accepted again (inbox/handlers)
            row = await ctx.db.fetchone(
                "SELECT t.uri FROM severed_follows s JOIN accounts t ON t.id = s.target_account_id"
                " WHERE s.uri = ? AND s.state = 'rejected' AND s.restored_at IS NULL", (follow_uri,)
            )
        if row is None or row["uri"] != actor:
            raise forbidden("no follow of this actor to answer")
