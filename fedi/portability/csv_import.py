"""Reading relationship CSVs (Mastodon's, GoToSocial's and fedi's exports) into rows to import.

Pure parsing, no I/O: the whole file is checked before anything is stored, so a
bad file is refused with the line at fault and nothing of it is applied. Headers
are Mastodon's (`Account address,Show boosts,Notify on new posts,Languages`,
`Account address,Hide notifications`, `#domain`, `#uri`, `List name,Account address`);
files without one (Mastodon's blocked_accounts, blocked_domains, bookmarks, lists,
GoToSocial's blocks and lists, or a plain list of addresses with or without `@`)
take the type's columns in order. A header alone can tell the type of a following
or mutes file; other files need the type named.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fedi.origin import is_valid_url

TYPES = ("following", "blocks", "mutes", "domain_blocks", "bookmarks", "lists")
MODES = ("merge", "overwrite")
MAX_BYTES = 2 * 1024 * 1024
MAX_ROWS = 20_000
MAX_TITLE_CHARS = 256
MAX_URI_CHARS = 2048

#: Each type's columns in Mastodon's order (the first is required; headerless files use this order).
COLUMNS: dict[str, tuple[str, ...]] = {
    "following": ("Account address", "Show boosts", "Notify on new posts", "Languages"),
    "blocks": ("Account address",),
    "mutes": ("Account address", "Hide notifications"),
    "domain_blocks": ("#domain",),
    "bookmarks": ("#uri",),
    "lists": ("List name", "Account address"),
}
KNOWN_HEADERS = {name for columns in COLUMNS.values() for name in columns}
FIRST_HEADERS = {columns[0] for columns in COLUMNS.values()}

_USER = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_DOMAIN = re.compile(r"^(?=.{1,253}(?::|$))[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)+"
                     r"(?::[0-9]{1,5})?$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})?$")


class ImportFileError(ValueError):
    """A file that cannot be imported; the message names the line. `status` is the HTTP answer (422, or 413)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImportRow:
    line: int
    data: dict[str, Any]
    host: str | None  # the remote host the row reaches (paced per host), None for none


@dataclass(frozen=True)
class ParsedImport:
    type: str
    rows: list[ImportRow]


def _domain(raw: str) -> str | None:
    """A lower-case ASCII host[:port] (international names in their IDNA form), or None."""
    value = raw.strip().lower().rstrip(".")
    host, sep, port = value.partition(":")
    try:
        ascii_host = host.encode("idna").decode("ascii") if host and not host.isascii() else host
    except UnicodeError:
        return None
    value = ascii_host + (sep + port if sep else "")
    return value if _DOMAIN.match(value) else None


def account_address(raw: str) -> str | None:
    """`user@domain` (lower-case domain) from `user@domain` or `@user@domain`, or None."""
    value = raw.strip()
    value = value.removeprefix("@")
    user, sep, domain = value.rpartition("@")
    if not sep or not _USER.match(user):
        return None
    host = _domain(domain)
    return f"{user}@{host}" if host else None


def _bool(raw: str, column: str, line: int) -> bool | None:
    value = raw.strip().lower()
    if value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ImportFileError(f'line {line}: "{_shown(raw)}" is not true or false ({column})')


def _languages(raw: str, line: int) -> list[str] | None:
    codes = [code.strip() for code in raw.split(",") if code.strip()]
    for code in codes:
        if not _LANGUAGE.match(code):
            raise ImportFileError(f'line {line}: "{_shown(code)}" is not a language code')
    return codes or None


def _shown(value: str) -> str:
    """A cell as quoted in an error: short, one line."""
    value = value.strip().replace("\n", " ")
    return value if len(value) <= 80 else value[:77] + "..."


def _decode(data: bytes) -> str:
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"the file is larger than {MAX_BYTES // (1024 * 1024)} MiB", 413)
    if data.startswith(b"PK\x03\x04"):
        raise ImportFileError("this is a zip archive, not a CSV file")
    if b"\x00" in data:
        line = data[:data.index(b"\x00")].count(b"\n") + 1
        raise ImportFileError(f"line {line}: the file is binary, not CSV text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise ImportFileError(f"line {line}: the file is not UTF-8 text") from None
    return text.removeprefix("\ufeff")


def _records(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, cells) of every non-blank record; quoted cells may span lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    out: list[tuple[int, list[str]]] = []
    start = 1
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                out.append((start, cells))
                if len(out) > MAX_ROWS + 1:  # one more for a header
                    raise ImportFileError(f"the file has more than {MAX_ROWS} rows")
            start = reader.line_num + 1
    except csv.Error as exc:
        raise ImportFileError(f"line {reader.line_num}: not valid CSV ({exc})") from None
    return out


def guess_type(header: list[str]) -> str | None:
    """The type a header tells by itself (Mastodon's guess): mutes or following, else None."""
    names = {cell.strip() for cell in header}
    if "Hide notifications" in names:
        return "mutes"
    if names & {"Show boosts", "Notify on new posts", "Languages"}:
        return "following"
    if "List name" in names:
        return "lists"
    if "#domain" in names:
        return "domain_blocks"
    if "#uri" in names:
        return "bookmarks"
    return None


def _header_columns(header: list[str], kind: str, line: int) -> list[str]:
    expected = COLUMNS[kind]
    names = [cell.strip() for cell in header]
    for name in names:
        if name and name not in expected:
            raise ImportFileError(f'line {line}: column "{_shown(name)}" does not belong in a {kind} file'
                                  f" (expected {', '.join(expected)})")
    if expected[0] not in names:
        raise ImportFileError(f'line {line}: a {kind} file needs the column "{expected[0]}"')
    return names


def _row(kind: str, line: int, cells: dict[str, str]) -> tuple[tuple[str, ...], ImportRow]:
    """(identity within the file, row) of one record; raises ImportFileError for a bad cell."""
    if kind == "domain_blocks":
        raw = cells.get("#domain", "")
        domain = _domain(raw.removeprefix("*."))
        if domain is None:
            raise ImportFileError(f'line {line}: "{_shown(raw)}" is not a domain name')
        return (domain,), ImportRow(line, {"domain": domain}, None)
    if kind == "bookmarks":
        uri = cells.get("#uri", "").strip()
        if len(uri) > MAX_URI_CHARS or not is_valid_url(uri):
            raise ImportFileError(f'line {line}: "{_shown(uri)}" is not an http(s) URI')
        return (uri,), ImportRow(line, {"uri": uri}, (urlsplit(uri).netloc or "").lower())
    raw = cells.get("Account address", "")
    acct = account_address(raw)
    if acct is None:
        raise ImportFileError(f'line {line}: "{_shown(raw)}" is not an account address')
    host = acct.rpartition("@")[2]
    data: dict[str, Any] = {"acct": acct}
    key: tuple[str, ...] = (acct.lower(),)
    if kind == "following":
        data["reblogs"] = _bool(cells.get("Show boosts", ""), "Show boosts", line)
        data["notify"] = _bool(cells.get("Notify on new posts", ""), "Notify on new posts", line)
        data["languages"] = _languages(cells.get("Languages", ""), line)
    elif kind == "mutes":
        data["notifications"] = _bool(cells.get("Hide notifications", ""), "Hide notifications", line)
    elif kind == "lists":
        title = cells.get("List name", "").strip()
        if not title or len(title) > MAX_TITLE_CHARS:
            raise ImportFileError(f"line {line}: a list name must have 1 to {MAX_TITLE_CHARS} characters")
        data["list"] = title
        key = (title, acct.lower())
    return key, ImportRow(line, data, host)


def parse_import(data: bytes, kind: str | None) -> ParsedImport:
    """Every row of an uploaded file, or ImportFileError naming the line at fault.

    `kind` None asks the header to tell the type. Duplicate rows keep their first line.
    """
    if kind is not None and kind not in TYPES:
        raise ImportFileError(f"type must be one of {', '.join(TYPES)}")
    records = _records(_decode(data))
    if not records:
        raise ImportFileError("the file has no rows")
    first_line, first = records[0]
    has_header = first[0].strip() in FIRST_HEADERS
    if kind is None:
        kind = guess_type(first) if has_header else None
        if kind is None:
            raise ImportFileError("the file does not say what it holds: choose a type "
                                  f"({', '.join(TYPES)})")
    if has_header:
        names = _header_columns(first, kind, first_line)
        body = records[1:]
    else:
        names = list(COLUMNS[kind])
        body = records
    if len(body) > MAX_ROWS:
        raise ImportFileError(f"the file has more than {MAX_ROWS} rows")
    rows: list[ImportRow] = []
    seen: set[tuple[str, ...]] = set()
    for line, cells in body:
        extra = [c for c in cells[len(names):] if c.strip()]
        if extra:
            raise ImportFileError(f"line {line}: {len(cells)} columns where a {kind} file has {len(names)}")
        key, row = _row(kind, line, {name: cell for name, cell in zip(names, cells) if name})
        if key not in seen:
            seen.add(key)
            rows.append(row)
    if not rows:
        raise ImportFileError("the file has no rows")
    return ParsedImport(kind, rows)
