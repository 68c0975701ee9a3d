"""Our rows as ActivityStreams JSON, shaped the way Mastodon reads it (INTEROP.md)."""

from __future__ import annotations

from typing import Any

from actors import urls
from fedi.clock import iso_seconds
from fedi.db import Database, Row
from fedi.jsonutil import loads_strict

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
PUBLIC_FORMS = {PUBLIC, "as:Public", "Public"}

CONTEXT: list[Any] = [
    "https://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/v1",
    {
        "Hashtag": "as:Hashtag",
        "sensitive": "as:sensitive",
        "toot": "http://joinmastodon.org/ns#",
        "blurhash": "toot:blurhash",
        "focalPoint": {"@container": "@list", "@id": "toot:focalPoint"},
        "votersCount": "toot:votersCount",
        "previously": {"@id": "https://swicg.github.io/activitypub-data-portability/lola#previously", "@type": "@id"},
    },
]


def with_context(activity: dict[str, Any]) -> dict[str, Any]:
    return {"@context": CONTEXT, **activity}


async def note(db: Database, base: str, status: Row, author: Row) -> dict[str, Any]:
    """The Note for a local status (without @context)."""
    mentions = await db.fetchall(
        "SELECT a.uri, a.username, a.domain FROM mentions m JOIN accounts a ON a.id = m.account_id"
        " WHERE m.status_id = ?",
        (status["id"],),
    )
    tags = await db.fetchall(
        "SELECT t.name FROM status_tags st JOIN tags t ON t.id = st.tag_id WHERE st.status_id = ?", (status["id"],)
    )
    media = await db.fetchall(
        "SELECT * FROM media_attachments WHERE status_id = ? ORDER BY position", (status["id"],)
    )
    domain = base.split("://", 1)[1]
    tag_list: list[dict[str, Any]] = [
        {"type": "Mention", "href": m["uri"], "name": f"@{m['username']}@{m['domain'] or domain}"} for m in mentions
    ]
    tag_list += [{"type": "Hashtag", "href": urls.tag(base, t["name"]), "name": f"#{t['name']}"} for t in tags]
    obj: dict[str, Any] = {
        "id": status["uri"],
        "type": "Note",
        "summary": status["summary"] or None,
        "inReplyTo": status["in_reply_to_uri"],
        "published": iso_seconds(status["published_at"]),
        "url": status["url"],
        "attributedTo": author["uri"],
        "to": loads_strict(status["to_json"]),
        "cc": loads_strict(status["cc_json"]),
        "sensitive": bool(status["sensitive"]),
        "content": status["content"],
        "attachment": [_attachment(base, m) for m in media],
        "tag": tag_list,
    }
    poll = await db.fetchone("SELECT * FROM polls WHERE status_id = ?", (status["id"],))
    if poll is not None:
        obj["type"] = "Question"
        options = loads_strict(poll["options_json"])
        obj["anyOf" if poll["multiple"] else "oneOf"] = [
            {"type": "Note", "name": o["title"], "replies": {"type": "Collection", "totalItems": o.get("votes_count", 0)}}
            for o in options
        ]
        if poll["expires_at"]:
            obj["endTime"] = iso_seconds(poll["expires_at"])
        obj["votersCount"] = poll["voters_count"]
    if status["language"]:
        obj["contentMap"] = {status["language"]: status["content"]}
    if status["edited_at"]:
        obj["updated"] = iso_seconds(status["edited_at"])
    if status["previous_uri"]:
        obj["previously"] = status["previous_uri"]  # imported from an archive: the id it had before (LOLA)
    return obj


def _attachment(base: str, media: Row) -> dict[str, Any]:
    url = media["remote_url"] or f"{base}/media/{media['file_path']}"
    out: dict[str, Any] = {"type": "Document", "mediaType": media["media_type"], "url": url, "name": media["description"]}
    if media["blurhash"]:
        out["blurhash"] = media["blurhash"]
    if media["width"] and media["height"]:
        out["width"], out["height"] = media["width"], media["height"]
    return out


def tombstone(uri: str, deleted_at: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": uri, "type": "Tombstone"}
    if deleted_at:
        out["deleted"] = iso_seconds(deleted_at)
    return out
