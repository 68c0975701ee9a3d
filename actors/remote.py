"""Remote actors: fetched from their origin, checked, cached in `accounts`.

Nothing about a remote actor is taken from an activity's payload: profiles and
keys come only from a signed GET of the actor's own id (THREATS S11, S14, A7,
A8). A deleted actor (410) is marked gone.
"""

from __future__ import annotations

import logging
from typing import Any

from fedi.clock import now, parse_iso
from fedi.context import Context
from fedi.db import Row
from fedi.http_client import FetchError
from fedi.jsonutil import dumps_str
from fedi.moderation.domains import is_suspended, rule_for
from fedi.origin import is_valid_url, netloc, same_origin
from fedi.sanitize import plain_text, sanitize_html
from fedi.signatures import SignatureError, load_public_key
from actors.keys import PublicKey
from actors.local import instance_signer

log = logging.getLogger("fedi.actors")

ACTOR_TYPES = {"Person", "Service", "Application", "Group", "Organization"}
MAX_ALIASES = 20  # alsoKnownAs entries kept for a remote actor (a move checks only whether one is listed)


class ActorError(Exception):
    """A remote actor (or key) that cannot be fetched or trusted."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def _first_url(value: Any) -> str | None:
    """`icon`/`image`/`url` may be a string, a Link/Image object, or a list of them."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("url") if "url" in value else value.get("href")
        if isinstance(value, (list, dict)):
            return _first_url(value)
    return value if is_valid_url(value) else None


def _first_id(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else value


def _key_of(doc: dict[str, Any]) -> dict[str, Any] | None:
    key = doc.get("publicKey")
    if isinstance(key, list):
        key = key[0] if key else None
    return key if isinstance(key, dict) else None


def _aliases(value: Any) -> list[str]:
    """`alsoKnownAs` as a bounded list of distinct http(s) URIs (a string or a list of strings or objects)."""
    items = value if isinstance(value, list) else [value]
    found: list[str] = []
    for item in items[:100]:
        uri = item.get("id") if isinstance(item, dict) else item
        if isinstance(uri, str) and is_valid_url(uri) and len(uri) <= 2000 and uri not in found:
            found.append(uri)
    return found[:MAX_ALIASES]


def parse_actor(doc: dict[str, Any]) -> dict[str, Any]:
    """Account columns from an actor document; raises ActorError if it is not a usable actor."""
    uri = doc.get("id")
    if not is_valid_url(uri):
        raise ActorError("actor has no valid id")
    if doc.get("type") not in ACTOR_TYPES:
        raise ActorError("document is not an actor")
    inbox = doc.get("inbox")
    if not same_origin(inbox, uri):
        raise ActorError("actor inbox missing or on another host")
    username = doc.get("preferredUsername")
    # An instance actor is named after its host, which may carry a port (fedi's own do).
    forbidden = "@/ \t\n" if doc.get("type") == "Application" else "@/ \t\n:"
    if not isinstance(username, str) or not username or len(username) > 100 or any(c in username for c in forbidden):
        raise ActorError("actor has no usable preferredUsername")
    endpoints = doc.get("endpoints") if isinstance(doc.get("endpoints"), dict) else {}
    shared = endpoints.get("sharedInbox")
    key = _key_of(doc)
    key_id = key.get("id") if key else None
    pem = key.get("publicKeyPem") if key else None
    if key and (key.get("owner") != uri or not same_origin(key_id, uri) or not isinstance(pem, str)):
        raise ActorError("actor key does not belong to the actor")
    if pem:
        try:
            load_public_key(pem)
        except SignatureError as exc:
            raise ActorError(f"actor key unusable: {exc.reason}") from None

    def own(value: Any) -> str | None:
        return value if same_origin(value, uri) else None

    fields = []
    for att in doc.get("attachment", []) if isinstance(doc.get("attachment"), list) else []:
        if isinstance(att, dict) and att.get("type") == "PropertyValue":
            fields.append({"name": plain_text(att.get("name"), 255), "value": sanitize_html(str(att.get("value", ""))[:2000])})
    published = parse_iso(doc.get("published", "")) if doc.get("published") else None
    return {
        "uri": uri,
        "username": username,
        "domain": netloc(uri),
        "url": doc.get("url") if is_valid_url(doc.get("url")) else uri,
        "actor_type": doc["type"],
        "display_name": plain_text(doc.get("name"), 100),
        "summary": sanitize_html(doc.get("summary") if isinstance(doc.get("summary"), str) else "", 10_000),
        "avatar_url": _first_url(doc.get("icon")),
        "header_url": _first_url(doc.get("image")),
        "locked": int(doc.get("manuallyApprovesFollowers") is True),
        "bot": int(doc["type"] in ("Service", "Application")),
        "discoverable": int(doc.get("discoverable") is not False),
        "inbox_url": inbox,
        "shared_inbox_url": shared if is_valid_url(shared) else None,
        "outbox_url": own(doc.get("outbox")),
        "followers_url": own(doc.get("followers")),
        "following_url": own(doc.get("following")),
        "featured_url": own(doc.get("featured")),
        "public_key_id": key_id if pem else None,
        "public_key_pem": pem,
        "fields_json": dumps_str(fields[:16]),
        "also_known_as_json": dumps_str(_aliases(doc.get("alsoKnownAs"))),
        "moved_to_uri": moved if is_valid_url(moved := _first_id(doc.get("movedTo"))) and len(moved) <= 2000 else None,
        "created_at": published or now(),
    }


async def store_actor(ctx: Context, doc: dict[str, Any]) -> Row:
    """Insert or refresh a remote account from a document fetched from its origin."""
    values = parse_actor(doc)
    if values["domain"].lower() == ctx.domain.lower():
        raise ActorError("remote actor claims our own domain")
    ts = now()
    cols = [c for c in values if c != "created_at"]
    async with ctx.db.write() as tx:
        existing = await tx.fetchone(
            "SELECT a.id, t.uri AS moved_uri FROM accounts a LEFT JOIN accounts t ON t.id = a.moved_to_account_id"
            " WHERE a.uri = ?", (values["uri"],),
        )
        if existing:
            if existing["moved_uri"] is not None and existing["moved_uri"] != values["moved_to_uri"]:
                cols.append("moved_to_account_id")  # a verified move (inbox/move.py) the actor no longer claims
                values["moved_to_account_id"] = None
            await tx.execute(
                f"UPDATE accounts SET {', '.join(c + ' = ?' for c in cols)}, updated_at = ?, fetched_at = ?,"
                " gone_at = NULL WHERE id = ?",
                [values[c] for c in cols] + [ts, ts, existing["id"]],
            )
            account_id = existing["id"]
        else:
            clash = await tx.fetchone(
                "SELECT id FROM accounts WHERE domain = ? AND lower(username) = lower(?)",
                (values["domain"], values["username"]),
            )
            if clash:  # the handle moved to a new id on the same host: the newest document wins
                await tx.execute("UPDATE accounts SET username = username || '~' || id WHERE id = ?", (clash["id"],))
            account_id = tx.new_id()
            values.update(await _rule_markers(ctx, values["domain"]))
            await tx.execute(
                f"INSERT INTO accounts (id, {', '.join(values)}, updated_at, fetched_at)"
                f" VALUES (?, {', '.join('?' for _ in values)}, ?, ?)",
                [account_id, *values.values(), ts, ts],
            )
        row = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
    assert row is not None
    if row["public_key_id"]:
        ctx.keys.put(row["public_key_id"], row["uri"], row["public_key_pem"])
    return row


async def _rule_markers(ctx: Context, domain: str) -> dict[str, float]:
    """A new account from a silenced (or suspended) domain starts so, marked by the rule (fedi.moderation.enforce)."""
    rule = await rule_for(ctx, domain)
    if rule is None or rule["severity"] not in ("silence", "suspend"):
        return {}
    return {"silenced_at" if rule["severity"] == "silence" else "suspended_at": rule["created_at"]}


async def _fetch(ctx: Context, url: str) -> dict[str, Any]:
    """A document that speaks for its id: served by the id's host, after any redirects (THREATS A7).

    Nothing is fetched from a blocked domain, nor taken from one a redirect led to.
    """
    if await is_suspended(ctx, url):
        raise ActorError(f"not fetching {url[:200]}: the domain is blocked")
    try:
        result = await ctx.http.fetch_json(url, signer=await instance_signer(ctx))
    except FetchError as exc:
        raise ActorError(f"fetching {url[:200]} failed: {exc.reason}", exc.status) from None
    if await is_suspended(ctx, result.url):
        raise ActorError(f"fetching {url[:200]}: redirected to a blocked domain")
    if not same_origin(result.document.get("id"), result.url):
        raise ActorError(f"fetching {url[:200]}: the document's id is not on the host that served it")
    return result.document


async def fetch_actor(ctx: Context, uri: str) -> Row:
    """Fetch an actor from its own id and store it; the document must carry that id."""
    if not is_valid_url(uri):
        raise ActorError("not an http(s) actor id")
    try:
        doc = await _fetch(ctx, uri.split("#", 1)[0])
    except ActorError as exc:
        if exc.status == 410:
            await mark_gone(ctx, uri)
        raise
    if doc.get("id") != uri:
        raise ActorError("fetched actor carries another id")
    return await store_actor(ctx, doc)


async def get_actor(ctx: Context, uri: str, *, refresh: bool = False) -> Row:
    """A remote (or local) account by actor id, fetching it when unknown or stale."""
    row = await ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (uri,))
    if row is not None and (row["domain"] is None or row["gone_at"] is not None):
        return row
    stale = row is not None and (row["fetched_at"] or 0) + ctx.config.federation.actor_refresh_seconds < now()
    if row is not None and not refresh and not stale:
        return row
    try:
        return await fetch_actor(ctx, uri)
    except ActorError:
        if row is not None and not refresh:
            return row  # a peer that is down keeps its cached profile
        raise


async def known_actor(ctx: Context, uri: str) -> Row | None:
    return await ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (uri,))


async def mark_gone(ctx: Context, uri: str) -> None:
    """The actor answered 410 or sent Delete: keep the row (for ids) but mark it gone."""
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT id FROM accounts WHERE uri = ? AND domain IS NOT NULL", (uri,))
        if row is None:
            return
        await tx.execute("UPDATE accounts SET gone_at = ? WHERE id = ?", (now(), row["id"]))
        await tx.execute("DELETE FROM follows WHERE account_id = ? OR target_account_id = ?", (row["id"], row["id"]))
        await tx.execute("UPDATE statuses SET deleted_at = ? WHERE account_id = ? AND deleted_at IS NULL", (now(), row["id"]))


async def resolve_key(ctx: Context, key_id: str, *, refresh: bool = False) -> PublicKey:
    """The public key named by a keyId, and the actor that owns it.

    The keyId may name the actor itself with a fragment (Mastodon: `#main-key`) or a
    separate key document (GoToSocial: `/main-key`); either way the key must be
    listed by an actor fetched from its own origin, whose `publicKey.id` is this keyId.
    """
    if not refresh:
        cached = ctx.keys.get(key_id)
        if cached:
            return cached
        row = await ctx.db.fetchone(
            "SELECT uri, public_key_pem FROM accounts WHERE public_key_id = ? AND gone_at IS NULL", (key_id,)
        )
        if row and row["public_key_pem"]:
            return ctx.keys.put(key_id, row["uri"], row["public_key_pem"])
    ctx.keys.drop(key_id)
    if not is_valid_url(key_id):
        raise ActorError("keyId is not an http(s) URL")
    if netloc(key_id).lower() == ctx.domain.lower():
        raise ActorError("keyId names an unknown local key")
    doc = await _fetch(ctx, key_id.split("#", 1)[0])
    key = _key_of(doc) if "publicKey" in doc else doc
    owner = key.get("owner") if isinstance(key, dict) else None
    if not isinstance(key, dict) or key.get("id") != key_id or not same_origin(owner, key_id):
        raise ActorError("keyId document does not describe this key")
    if doc.get("id") == owner and "inbox" in doc:
        actor = await store_actor(ctx, doc)
    else:
        actor = await fetch_actor(ctx, owner)
    if actor["public_key_id"] != key_id:
        raise ActorError("the key's owner does not list this key")
    cached = ctx.keys.get(key_id)
    assert cached is not None
    return cached
