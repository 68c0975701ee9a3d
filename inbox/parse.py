"""Reading untrusted activities: liberal in form (INTEROP.md), strict in limits (THREATS P4–P7).

Peers differ: `to` may be a string or a list, `tag` and `attachment` a single
object, Public spelled three ways, `object` a URI or an embedded object. These
helpers normalise that and raise `ParseError` (a 400) for what no peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fedi.clock import parse_iso
from fedi.origin import is_valid_url
from fedi.sanitize import plain_text, sanitize_html
from outbox.serialize import PUBLIC, PUBLIC_FORMS

MAX_AUDIENCE = 1000
MAX_TAGS = 100
MAX_ATTACHMENTS = 16
MAX_CONTENT = 100_000


class ParseError(ValueError):
    """Malformed input; the message goes back in a 400."""


def as_list(value: Any, limit: int, what: str) -> list[Any]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > limit:
        raise ParseError(f"too many entries in {what}")
    return items


def object_id(value: Any) -> str | None:
    """The id of an `object`/`actor` field given as a URI or as an embedded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if is_valid_url(value) else None


def audience(value: Any, what: str) -> list[str]:
    """A `to`/`cc` list with every spelling of Public folded into the full IRI (THREATS A13)."""
    out = []
    for item in as_list(value, MAX_AUDIENCE, what):
        uri = item.get("id") if isinstance(item, dict) else item
        if not isinstance(uri, str):
            raise ParseError(f"{what} entries must be URIs")
        out.append(PUBLIC if uri in PUBLIC_FORMS else uri)
    return out


def check_envelope(activity: Any) -> tuple[str, str, str]:
    """(id, type, actor) of an activity, or ParseError; nothing else is trusted yet."""
    if not isinstance(activity, dict):
        raise ParseError("activity must be a JSON object")
    kind = activity.get("type")
    if not isinstance(kind, str) or not kind or len(kind) > 64:
        raise ParseError("activity needs a type")
    actor = activity.get("actor")
    if isinstance(actor, list):
        raise ParseError("activity must have exactly one actor")
    actor_id = object_id(actor)
    if actor_id is None:
        raise ParseError("activity needs an actor URI")
    act_id = activity.get("id")
    if not is_valid_url(act_id):
        raise ParseError("activity needs an id URI")
    for key in ("to", "cc", "bto", "bcc"):
        audience(activity.get(key), key)
    if "published" in activity and parse_iso(activity["published"]) is None:
        raise ParseError("published is not an ISO 8601 date")
    return act_id, kind, actor_id


@dataclass
class Attachment:
    url: str
    media_type: str | None
    kind: str
    description: str
    blurhash: str | None
    width: int | None
    height: int | None


@dataclass
class NoteFields:
    id: str
    attributed_to: str
    content: str
    summary: str
    sensitive: bool
    in_reply_to: str | None
    published: float | None
    updated: float | None
    url: str | None
    to: list[str]
    cc: list[str]
    language: str | None
    mentions: list[str] = field(default_factory=list)
    hashtags: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


def _unsanitized_text(value: object, max_length: int) -> str:
    return value[:max_length] if isinstance(value, str) else ""


def _attachment(item: Any, sanitize: bool = True) -> Attachment | None:
    if not isinstance(item, dict):
        return None
    url = item.get("url")
    if isinstance(url, dict):
        url = url.get("href")
    if isinstance(url, list):
        url = next((u.get("href") if isinstance(u, dict) else u for u in url), None)
    if not is_valid_url(url):
        return None
    media_type = item.get("mediaType") if isinstance(item.get("mediaType"), str) else None
    major = (media_type or "").split("/", 1)[0]
    kind = {"image": "image", "video": "video", "audio": "audio"}.get(major, "unknown")
    width, height = item.get("width"), item.get("height")
    return Attachment(
        url=url,
        media_type=media_type[:100] if media_type else None,
        kind=kind,
        description=(plain_text if sanitize else _unsanitized_text)(
            item.get("summary") or item.get("name"), 1500),
        blurhash=item.get("blurhash") if isinstance(item.get("blurhash"), str) and len(item["blurhash"]) < 100 else None,
        width=width if isinstance(width, int) and 0 < width < 100_000 else None,
        height=height if isinstance(height, int) and 0 < height < 100_000 else None,
    )


def parse_note(obj: Any, *, sanitize: bool = True) -> NoteFields:
    """The fields fedi keeps from a Note (or Article/Page/Question shown as a note).

    `sanitize=False` only validates (the inbox, before storing the raw activity): the
    HTML of content, summary and alt texts comes back as sent, so it must not be kept.
    """
    if not isinstance(obj, dict):
        raise ParseError("object must be embedded")
    note_id = obj.get("id")
    if not is_valid_url(note_id):
        raise ParseError("object needs an id URI")
    author = object_id(obj.get("attributedTo"))
    if author is None:
        raise ParseError("object needs attributedTo")
    content = obj.get("content", "")
    if not isinstance(content, str):
        content_map = obj.get("contentMap")
        content = next(iter(content_map.values()), "") if isinstance(content_map, dict) and content_map else ""
    if not isinstance(content, str):
        raise ParseError("content must be a string")
    if len(content) > MAX_CONTENT:
        raise ParseError("content too long")
    published = parse_iso(obj["published"]) if obj.get("published") is not None else None
    if obj.get("published") is not None and published is None:
        raise ParseError("published is not an ISO 8601 date")
    updated = parse_iso(obj["updated"]) if obj.get("updated") is not None else None
    reply = obj.get("inReplyTo")
    language = None
    if isinstance(obj.get("contentMap"), dict) and obj["contentMap"]:
        first = next(iter(obj["contentMap"]))
        language = first[:16] if isinstance(first, str) else None
    mentions, hashtags = [], []
    for tag in as_list(obj.get("tag"), MAX_TAGS, "tag"):
        if not isinstance(tag, dict):
            continue
        if tag.get("type") == "Mention" and is_valid_url(tag.get("href")):
            mentions.append(tag["href"])
        elif tag.get("type") == "Hashtag" and isinstance(tag.get("name"), str):
            name = tag["name"].lstrip("#").lower()
            if 0 < len(name) <= 100 and all(c.isalnum() or c == "_" for c in name):
                hashtags.append(name)
    attachments = [a for item in as_list(obj.get("attachment"), MAX_ATTACHMENTS, "attachment")
                   if (a := _attachment(item, sanitize))]
    summary = obj.get("summary")
    text = plain_text if sanitize else _unsanitized_text
    return NoteFields(
        id=note_id,
        attributed_to=author,
        content=sanitize_html(content) if sanitize else content,
        summary=text(summary, 1000) if isinstance(summary, str) else "",
        sensitive=obj.get("sensitive") is True,
        in_reply_to=object_id(reply),
        published=published,
        updated=updated,
        url=obj.get("url") if isinstance(obj.get("url"), str) and is_valid_url(obj.get("url")) else None,
        to=audience(obj.get("to"), "to"),
        cc=audience(obj.get("cc"), "cc"),
        language=language,
        mentions=mentions[:MAX_TAGS],
        hashtags=list(dict.fromkeys(hashtags)),
        attachments=attachments,
    )


def visibility(to: list[str], cc: list[str], followers_url: str | None) -> str:
    """Mastodon's reading of addressing: Public in to / in cc / followers / mentions only."""
    if PUBLIC in to:
        return "public"
    if PUBLIC in cc:
        return "unlisted"
    if followers_url and followers_url in to + cc:
        return "private"
    return "direct"


NOTE_TYPES = {"Note", "Article", "Page", "Question"}
