"""Reading a Mastodon (or fedi) account archive as hostile input: the zip, its JSON, its media.

The layout is Mastodon's (`BackupService`): `actor.json`, `outbox.json` (an
OrderedCollection of the account's Create and Announce activities, every
visibility), `likes.json`, `bookmarks.json`, and the media files, referenced from
the Notes by paths relative to the archive (`media_attachments/files/…`).

`check_archive` validates the whole archive before anything is kept, and writes the
posts it will import, already normalised and sanitised, one JSON line each, to a
spool file. It refuses with `ArchiveError` (one line, safe to show):
- zip bombs: the member count (read from the end record before the central directory is
  parsed), declared sizes (per member, in total, compression ratio), and the bytes actually
  inflated, counted while reading;
- member names that are absolute, climb with `..`, use backslashes or control characters,
  repeat, or are symlinks; encrypted members and unknown compression;
- JSON that is malformed, too deep, has duplicate keys (`loads_strict`), is too large, or
  has the wrong shape;
- an attachment whose `url` names another server (never fetched: an archive carries its
  media), a referenced media member that is missing, and media that fail the upload checks
  (`fedi.images.encode_image`, the same decode limits and re-encoding as uploads). Every
  referenced image is checked here, so the import job cannot fail half-way on one.

Memory stays bounded: members are read in chunks with caps, `outbox.json` (at most
`MAX_OUTBOX_BYTES`) is cut into its items by a scanner and each item is parsed alone,
and the posts go to the spool file rather than a list.
"""

from __future__ import annotations

import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import IO, Any
from urllib.parse import urlsplit

from fedi import images
from fedi.clock import parse_iso
from fedi.errors import HttpError
from fedi.jsonutil import MAX_DEPTH, JsonError, dumps, loads_strict
from fedi.origin import is_valid_url
from fedi.sanitize import plain_text
from inbox.parse import NOTE_TYPES, ParseError, parse_note, visibility

#: The largest archive accepted (also the web upload's cap).
MAX_ARCHIVE_BYTES = 512 * 1024 * 1024
MAX_MEMBERS = 20_000
#: The sum of the members' declared (inflated) sizes.
MAX_TOTAL_BYTES = 2 * 1024 * 1024 * 1024
#: Any one member, as declared and as inflated (a referenced image: `images.MAX_BYTES`).
MAX_MEMBER_BYTES = 256 * 1024 * 1024
MAX_OUTBOX_BYTES = 128 * 1024 * 1024
MAX_JSON_BYTES = 16 * 1024 * 1024
#: Inflated size over compressed size, for members above `RATIO_FLOOR` bytes (JSON deflates ~10×).
MAX_RATIO = 100
RATIO_FLOOR = 1024 * 1024
MAX_NAME = 255
MAX_POSTS = 200_000
MAX_POLL_OPTIONS = 20
MAX_TOP_LEVEL_VALUE = 1024 * 1024
CHUNK = 1024 * 1024

_NAME_OK = re.compile(r"[^\x00-\x1f\x7f\\:]+")
_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_STRUCTURE = re.compile(rb'["\[\]{}]')
_SPACE = re.compile(rb"[ \t\r\n]*")
_SCALAR = re.compile(rb"[^ \t\r\n,\]}]+")


class ArchiveError(ValueError):
    """The archive is refused; the message is one line, safe to show its owner."""


@dataclass(frozen=True)
class ArchiveSummary:
    """What validation found: posts spooled, items skipped (boosts, other types, others' posts)."""

    actor_uri: str
    followers_uri: str
    posts: int
    skipped: int
    media_skipped: int


# --- the zip container ---------------------------------------------------------------------------------------------


def _entry_count(fh: IO[bytes]) -> int:
    """The member count from the end-of-central-directory record, before zipfile builds one object per member."""
    fh.seek(0, 2)
    size = fh.tell()
    tail = min(size, 22 + 65_535)
    fh.seek(size - tail)
    data = fh.read(tail)
    at = data.rfind(b"PK\x05\x06")
    if at < 0 or len(data) - at < 22:
        raise ArchiveError("not a zip archive")
    entries, total, cd_size = struct.unpack("<HHI", data[at + 8:at + 16])
    if entries == 0xFFFF or total == 0xFFFF or cd_size == 0xFFFFFFFF:
        raise ArchiveError(f"the archive has too many members (at most {MAX_MEMBERS})")
    if total > MAX_MEMBERS or cd_size > MAX_MEMBERS * (46 + MAX_NAME + 1024):
        raise ArchiveError(f"the archive has too many members (at most {MAX_MEMBERS})")
    return total


def _check_name(name: str) -> None:
    shown = name[:80]
    if not name or len(name) > MAX_NAME or not _NAME_OK.fullmatch(name):
        raise ArchiveError(f"member name {shown!r} is not allowed")
    if name.startswith("/"):
        raise ArchiveError(f"member name {shown!r} is absolute")
    parts = name.rstrip("/").split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ArchiveError(f"member name {shown!r} leaves the archive or is not normal")


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The files of the archive by name, each checked; directories left out."""
    members: dict[str, zipfile.ZipInfo] = {}
    seen: set[str] = set()
    total = 0
    for info in zf.infolist():
        name = info.filename
        _check_name(info.orig_filename)
        if name in seen:
            raise ArchiveError(f"member {name[:80]!r} appears twice")
        seen.add(name)
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ArchiveError(f"member {name[:80]!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"member {name[:80]!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"member {name[:80]!r} uses an unsupported compression")
        if info.is_dir():
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            raise ArchiveError(f"member {name[:80]!r} is larger than {MAX_MEMBER_BYTES // 2**20} MB")
        if info.file_size > RATIO_FLOOR and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ArchiveError(f"member {name[:80]!r} inflates more than {MAX_RATIO} times (a zip bomb?)")
        total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise ArchiveError(f"the archive inflates to more than {MAX_TOTAL_BYTES // 2**30} GB")
        members[name] = info
    return members


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int) -> bytes:
    """A member's bytes, refused past `cap` or past its declared size, counted while inflating."""
    name = info.filename[:80]
    if info.file_size > cap:
        raise ArchiveError(f"{name} is larger than {cap / 2**20:g} MB")
    parts: list[bytes] = []
    count = 0
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(CHUNK):
                count += len(chunk)
                if count > min(cap, info.file_size):
                    raise ArchiveError(f"{name} inflates beyond its declared size")
                parts.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as exc:
        raise ArchiveError(f"{name} cannot be read: {str(exc)[:100]}") from None
    return b"".join(parts)


# --- JSON ----------------------------------------------------------------------------------------------------------


def _json(data: bytes, what: str) -> Any:
    try:
        return loads_strict(data)
    except JsonError as exc:
        raise ArchiveError(f"{what}: {exc}") from None


def _value_end(buf: bytes, pos: int, what: str) -> int:
    """Where the JSON value starting at `pos` ends (its inside is checked later by `loads_strict`)."""
    first = buf[pos:pos + 1]
    if first == b'"':
        found = _STRING.match(buf, pos)
        if found is None:
            raise ArchiveError(f"{what}: malformed JSON (unterminated string)")
        return found.end()
    if first in (b"{", b"["):
        depth, at = 0, pos
        while True:
            found = _STRUCTURE.search(buf, at)
            if found is None:
                raise ArchiveError(f"{what}: malformed JSON (unterminated value)")
            char = buf[found.start()]
            if char == 0x22:
                string = _STRING.match(buf, found.start())
                if string is None:
                    raise ArchiveError(f"{what}: malformed JSON (unterminated string)")
                at = string.end()
                continue
            depth += 1 if char in (0x7B, 0x5B) else -1
            if depth > MAX_DEPTH:
                raise ArchiveError(f"{what}: nested too deeply")
            at = found.end()
            if depth == 0:
                return at
    found = _SCALAR.match(buf, pos)
    if found is None:
        raise ArchiveError(f"{what}: malformed JSON")
    return found.end()


class _Scanner:
    """Walks an outbox's top-level object, handing out the raw text of each `orderedItems` entry."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0
        self.top: dict[str, Any] = {}

    def _space(self) -> None:
        found = _SPACE.match(self.buf, self.pos)
        self.pos = found.end() if found else self.pos

    def _expect(self, char: bytes) -> None:
        self._space()
        if self.buf[self.pos:self.pos + 1] != char:
            raise ArchiveError(f"outbox.json: malformed JSON (expected {char.decode()!r} at byte {self.pos})")
        self.pos += 1

    def _peek(self) -> bytes:
        self._space()
        return self.buf[self.pos:self.pos + 1]

    def items(self) -> Any:
        self._expect(b"{")
        seen_items = False
        if self._peek() == b"}":
            self.pos += 1
        else:
            while True:
                self._space()
                end = _value_end(self.buf, self.pos, "outbox.json")
                key = _json(self.buf[self.pos:end], "outbox.json")
                if not isinstance(key, str):
                    raise ArchiveError("outbox.json: malformed JSON (object key)")
                if key in self.top or (key == "orderedItems" and seen_items):
                    raise ArchiveError(f"outbox.json: duplicate key {key[:40]!r}")
                self.pos = end
                self._expect(b":")
                self._space()
                if key == "orderedItems":
                    seen_items = True
                    yield from self._array()
                else:
                    end = _value_end(self.buf, self.pos, "outbox.json")
                    if end - self.pos > MAX_TOP_LEVEL_VALUE:
                        raise ArchiveError(f"outbox.json: {key[:40]!r} is too large")
                    self.top[key] = _json(self.buf[self.pos:end], "outbox.json")
                    self.pos = end
                if self._peek() == b",":
                    self.pos += 1
                    continue
                self._expect(b"}")
                break
        self._space()
        if self.pos != len(self.buf):
            raise ArchiveError("outbox.json: malformed JSON (trailing data)")
        if not seen_items:
            raise ArchiveError("outbox.json has no orderedItems")

    def _array(self) -> Any:
        self._expect(b"[")
        if self._peek() == b"]":
            self.pos += 1
            return
        count = 0
        while True:
            self._space()
            end = _value_end(self.buf, self.pos, "outbox.json")
            count += 1
            if count > MAX_POSTS:
                raise ArchiveError(f"outbox.json has more than {MAX_POSTS} items")
            yield count, self.buf[self.pos:end]
            self.pos = end
            if self._peek() == b",":
                self.pos += 1
                continue
            self._expect(b"]")
            return


# --- the posts -----------------------------------------------------------------------------------------------------


def _is_remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme or parts.netloc) or url.startswith("//")


def _focus(value: Any) -> list[float] | None:
    if (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and -1 <= v <= 1 for v in value)):
        return [float(value[0]), float(value[1])]
    return None


def _media(obj: dict[str, Any], members: dict[str, zipfile.ZipInfo], where: str) -> tuple[list[dict[str, Any]], int]:
    """The post's attachments as archive members; (media, non-images skipped). Refuses remote or missing ones."""
    raw = obj.get("attachment")
    items = raw if isinstance(raw, list) else ([] if raw is None else [raw])
    if len(items) > 16:
        raise ArchiveError(f"{where}: too many attachments")
    media: list[dict[str, Any]] = []
    skipped = 0
    for item in items:
        if not isinstance(item, dict):
            raise ArchiveError(f"{where}: an attachment is not an object")
        url = item.get("url")
        if isinstance(url, dict):
            url = url.get("href")
        if not isinstance(url, str) or not url or len(url) > 2000:
            raise ArchiveError(f"{where}: an attachment has no url")
        if _is_remote(url):
            raise ArchiveError(f"{where}: attachment {url[:100]!r} is on a server, not in the archive"
                               " (archive media are never fetched)")
        member = url.lstrip("/")
        _check_name(member)
        if member not in members:
            raise ArchiveError(f"{where}: attachment {member[:100]!r} is missing from the archive")
        media_type = item.get("mediaType")
        if isinstance(media_type, str) and not media_type.startswith("image/"):
            skipped += 1  # video and audio are not re-encoded by fedi yet: left out, counted
            continue
        description = plain_text(item.get("name") or item.get("summary"), images.MAX_DESCRIPTION) or None
        media.append({"member": member, "description": description, "focus": _focus(item.get("focalPoint"))})
    return media[:4], skipped + max(0, len(media) - 4)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9 else 0


def _poll(obj: dict[str, Any], published: float, where: str) -> dict[str, Any] | None:
    """A Question's options with their final counts; it is closed at endTime/closed (or when it was posted)."""
    if obj.get("type") != "Question":
        return None
    multiple = "anyOf" in obj
    raw = obj.get("anyOf" if multiple else "oneOf")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_POLL_OPTIONS:
        raise ArchiveError(f"{where}: a poll needs 1 to {MAX_POLL_OPTIONS} options")
    options: list[dict[str, Any]] = []
    for option in raw:
        if not isinstance(option, dict):
            raise ArchiveError(f"{where}: a poll option is not an object")
        replies = option.get("replies")
        votes = _count(replies.get("totalItems")) if isinstance(replies, dict) else 0
        options.append({"title": plain_text(option.get("name"), 200), "votes_count": votes})
    ends = [t for key in ("closed", "endTime") if isinstance(obj.get(key), str) and (t := parse_iso(obj[key]))]
    voters = _count(obj.get("votersCount")) or sum(int(o["votes_count"]) for o in options)
    return {"options": options, "multiple": multiple, "expires_at": min(ends) if ends else published,
            "voters_count": voters}


def _post(item: Any, actor_uri: str, followers: str, members: dict[str, zipfile.ZipInfo],
          index: int) -> tuple[dict[str, Any] | None, int]:
    """One outbox item as the post to import (None: not one of the actor's notes), and non-images skipped."""
    where = f"outbox.json item {index}"
    if not isinstance(item, dict):
        raise ArchiveError(f"{where} is not an object")
    obj = item.get("object")
    if item.get("type") != "Create" or not isinstance(obj, dict) or obj.get("type") not in NOTE_TYPES:
        return None, 0  # boosts (Announce) and other activities are not posts of this account
    try:
        fields = parse_note(obj)
    except ParseError as exc:
        raise ArchiveError(f"{where}: {exc}") from None
    if fields.attributed_to != actor_uri:
        return None, 0
    if fields.published is None:
        raise ArchiveError(f"{where}: the post has no published date")
    media, skipped = _media(obj, members, where)
    return {
        "uri": fields.id,
        "published": fields.published,
        "content": fields.content,
        "summary": fields.summary,
        "sensitive": fields.sensitive or bool(fields.summary),
        "language": fields.language,
        "visibility": visibility(fields.to, fields.cc, followers),
        "to": fields.to,
        "cc": fields.cc,
        "in_reply_to": fields.in_reply_to,
        "mentions": fields.mentions,
        "hashtags": fields.hashtags,
        "media": media,
        "poll": _poll(obj, fields.published, where),
    }, skipped


def _collection(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo], name: str) -> None:
    """likes.json and bookmarks.json, when present: an OrderedCollection of URIs (checked, not imported here)."""
    if name not in members:
        return
    doc = _json(read_member(zf, members[name], MAX_JSON_BYTES), name)
    if not isinstance(doc, dict) or doc.get("type") not in ("OrderedCollection", "Collection"):
        raise ArchiveError(f"{name} is not an OrderedCollection")
    items = doc.get("orderedItems", doc.get("items", []))
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ArchiveError(f"{name}: orderedItems must be a list of URIs")


def _actor(zf: zipfile.ZipFile, members: dict[str, zipfile.ZipInfo]) -> tuple[str, str]:
    if "actor.json" not in members:
        raise ArchiveError("the archive has no actor.json (is it an account archive?)")
    actor = _json(read_member(zf, members["actor.json"], MAX_JSON_BYTES), "actor.json")
    if not isinstance(actor, dict) or not is_valid_url(actor.get("id")):
        raise ArchiveError("actor.json is not an actor with an id")
    followers = actor.get("followers")
    return actor["id"], followers if isinstance(followers, str) else actor["id"] + "/followers"


def check_archive(path: str, spool: IO[bytes]) -> ArchiveSummary:
    """Validate the archive at `path` whole and write its posts, one JSON line each, to `spool` (blocking)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() > MAX_ARCHIVE_BYTES:
                raise ArchiveError(f"the archive is larger than {MAX_ARCHIVE_BYTES // 2**20} MB")
            _entry_count(fh)
            fh.seek(0)
            with zipfile.ZipFile(fh) as zf:
                return _check(zf, spool)
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"not a readable zip archive: {str(exc)[:100]}") from None


def _check(zf: zipfile.ZipFile, spool: IO[bytes]) -> ArchiveSummary:
    members = _members(zf)
    actor_uri, followers = _actor(zf, members)
    _collection(zf, members, "likes.json")
    _collection(zf, members, "bookmarks.json")
    if "outbox.json" not in members:
        raise ArchiveError("the archive has no outbox.json")
    scanner = _Scanner(read_member(zf, members["outbox.json"], MAX_OUTBOX_BYTES))
    posts = skipped = media_skipped = 0
    seen: set[str] = set()
    checked: set[str] = set()
    for index, raw in scanner.items():
        post, no_image = _post(_json(raw, f"outbox.json item {index}"), actor_uri, followers, members, index)
        media_skipped += no_image
        if post is None or post["uri"] in seen:
            skipped += 1
            continue
        seen.add(post["uri"])
        for media in post["media"]:
            if media["member"] not in checked:
                check_image(zf, members[media["member"]])
                checked.add(media["member"])
        spool.write(dumps(post) + b"\n")
        posts += 1
    if scanner.top.get("type") not in ("OrderedCollection", "Collection"):
        raise ArchiveError("outbox.json is not an OrderedCollection")
    return ArchiveSummary(actor_uri, followers, posts, skipped, media_skipped)


def check_image(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> images.Encoded:
    """A media member decoded and re-encoded as an upload would be; refused as the upload would be."""
    data = read_member(zf, info, images.MAX_BYTES)
    try:
        return images.encode_image(data)
    except HttpError as exc:
        raise ArchiveError(f"{info.filename[:100]}: {exc.message.removeprefix('Validation failed: ')}") from None
