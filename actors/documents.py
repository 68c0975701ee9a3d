"""ActivityPub documents for local accounts.

The JSON-LD context is always the literal AS and security URLs plus inline
terms (INTEROP pitfall 9): bare unknown context URLs make JSON-LD processors
fail, and Mastodon ignores properties whose terms are not declared.
"""

from __future__ import annotations

import json
import mimetypes
from typing import Any

from aiohttp import web

from fedi.clock import iso_seconds
from fedi.config import Config
from fedi.db import Row
from fedi.jsonutil import dumps
from fedi.negotiation import AS2

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"

ACTOR_TERMS: dict[str, Any] = {
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "movedTo": {"@id": "as:movedTo", "@type": "@id"},
    "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"},
    "toot": "http://joinmastodon.org/ns#",
    "featured": {"@id": "toot:featured", "@type": "@id"},
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
    "memorial": "toot:memorial",
    "schema": "http://schema.org#",
    "PropertyValue": "schema:PropertyValue",
    "value": "schema:value",
    "Hashtag": "as:Hashtag",
    "sensitive": "as:sensitive",
    "blurhash": "toot:blurhash",
    "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
}

ACTOR_CONTEXT: list[Any] = [AS_CONTEXT, SECURITY_CONTEXT, ACTOR_TERMS]


def _image(url: str) -> dict[str, Any]:
    image: dict[str, Any] = {"type": "Image", "url": url}
    media_type, _ = mimetypes.guess_type(url.split("?", 1)[0])
    if media_type and media_type.startswith("image/"):
        image["mediaType"] = media_type
    return image


def _fields(raw: str | None) -> list[dict[str, str]]:
    """Profile fields as PropertyValues; values are already sanitised HTML."""
    try:
        items = json.loads(raw or "[]")
    except ValueError:
        return []
    if not isinstance(items, list):
        return []
    return [
        {"type": "PropertyValue", "name": str(item.get("name", "")), "value": str(item.get("value", ""))}
        for item in items
        if isinstance(item, dict)
    ]


def also_known_as(row: Row) -> list[str]:
    """The account's aliases (accounts.also_known_as_json), a list of actor URIs."""
    try:
        items = json.loads(row["also_known_as_json"] or "[]")
    except ValueError:
        return []
    return [i for i in items if isinstance(i, str)] if isinstance(items, list) else []


def actor_document(config: Config, row: Row) -> dict[str, Any]:
    """The actor document for a local accounts row (Person, Service or the Application instance actor)."""
    is_instance = row["actor_type"] == "Application"
    uri = row["uri"]
    doc: dict[str, Any] = {
        "@context": ACTOR_CONTEXT,
        "id": uri,
        "type": row["actor_type"],
        "preferredUsername": config.instance.domain if is_instance else row["username"],
        "name": row["display_name"] or "",
        "summary": row["summary"] or "",
        "url": row["url"] or uri,
        "inbox": row["inbox_url"],
        "outbox": row["outbox_url"],
        "followers": row["followers_url"],
        "following": row["following_url"],
        "featured": row["featured_url"],
        "endpoints": {"sharedInbox": row["shared_inbox_url"]},
        "publicKey": {"id": row["public_key_id"], "owner": uri, "publicKeyPem": row["public_key_pem"]},
        "manuallyApprovesFollowers": bool(row["locked"]),
        "discoverable": bool(row["discoverable"]) and not is_instance,
        # Search indexing of posts is opt-in on Mastodon; fedi has no opt-in yet.
        "indexable": False,
        "memorial": False,
        "published": iso_seconds(row["created_at"]),
        "attachment": _fields(row["fields_json"]),
        "tag": [],
    }
    aliases = also_known_as(row)
    if aliases:
        doc["alsoKnownAs"] = aliases
    if row["moved_to_uri"]:
        doc["movedTo"] = row["moved_to_uri"]
    if row["avatar_url"]:
        doc["icon"] = _image(row["avatar_url"])
    if row["header_url"]:
        doc["image"] = _image(row["header_url"])
    return doc


def tombstone(uri: str) -> dict[str, Any]:
    """What a deleted or suspended object answers with (410), so peers stop retrying."""
    return {"@context": AS_CONTEXT, "id": uri, "type": "Tombstone"}


def activity_response(doc: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON served as `application/activity+json` (Mastodon ignores plain application/json)."""
    return web.Response(body=dumps(doc), status=status, content_type=AS2, headers=headers)
