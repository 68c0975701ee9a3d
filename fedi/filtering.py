"""A user's v2 filters applied to rendered statuses, with Mastodon 4's matching rules.

Keywords are literal text: `re.escape`d and matched case-insensitively, so a
keyword such as `a.*(b` matches only those characters. `whole_word` adds `\\b`
only on a side where the keyword begins or ends with a word character (as
Mastodon does, so `#tag` or `@x` still match). Escaped literals cannot
backtrack catastrophically, keywords are length-capped when stored, and only
the first `MAX_TEXT` characters of a status are examined. Timelines drop
`hide` matches and mark the others through the status's `filtered` list.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fedi.clock import iso, now
from fedi.context import Context
from fedi.db import Database, Row
from fedi.jsonutil import loads_strict

CONTEXTS = ("home", "notifications", "public", "thread", "account")
ACTIONS = ("warn", "hide", "blur_media")
MAX_TITLE_CHARS = 256
MAX_KEYWORD_CHARS = 512
MAX_KEYWORDS_PER_FILTER = 50
MAX_STATUSES_PER_FILTER = 500
MAX_FILTERS = 50
MAX_TEXT = 20_000

_BREAKS = re.compile(r"<br\s*/?>|</p>", re.IGNORECASE)
_TAGS = re.compile(r"<[^>]*>")


def keyword_entity(row: Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "keyword": row["keyword"], "whole_word": bool(row["whole_word"])}


def filter_status_entity(row: Row) -> dict[str, Any]:
    return {"id": str(row["id"]), "status_id": str(row["status_id"])}


def filter_entity(row: Row, keywords: Sequence[Row], statuses: Sequence[Row]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "title": row["title"],
        "context": loads_strict(row["context_json"]),
        "expires_at": iso(row["expires_at"]) if row["expires_at"] is not None else None,
        "filter_action": row["filter_action"],
        "keywords": [keyword_entity(k) for k in keywords],
        "statuses": [filter_status_entity(s) for s in statuses],
    }


async def filter_rules(db: Database, filter_ids: Sequence[int]) -> tuple[dict[int, list[Row]], dict[int, list[Row]]]:
    """Keywords and filtered statuses of several filters, by filter id (two queries)."""
    keywords: dict[int, list[Row]] = {i: [] for i in filter_ids}
    statuses: dict[int, list[Row]] = {i: [] for i in filter_ids}
    if filter_ids:
        ph = ",".join("?" for _ in filter_ids)
        for r in await db.fetchall(f"SELECT * FROM filter_keywords WHERE filter_id IN ({ph}) ORDER BY id", list(filter_ids)):
            keywords[r["filter_id"]].append(r)
        for r in await db.fetchall(f"SELECT * FROM filter_statuses WHERE filter_id IN ({ph}) ORDER BY id", list(filter_ids)):
            statuses[r["filter_id"]].append(r)
    return keywords, statuses


def keyword_pattern(keyword: str, whole_word: bool) -> str:
    escaped = re.escape(keyword)
    if not whole_word:
        return escaped
    start = r"\b" if re.match(r"\w", keyword) else ""
    end = r"\b" if re.search(r"\w\Z", keyword) else ""
    return f"{start}{escaped}{end}"


@dataclass(frozen=True)
class ActiveFilter:
    entity: dict[str, Any]
    action: str
    keywords: tuple[tuple[str, re.Pattern[str]], ...]
    any_keyword: re.Pattern[str] | None
    status_ids: frozenset[str]


async def active_filters(ctx: Context, account_id: int, context: str) -> list[ActiveFilter]:
    """The account's unexpired filters that apply in `context`, compiled once per request."""
    rows = [
        r for r in await ctx.db.fetchall(
            "SELECT * FROM filters WHERE account_id = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY id",
            (account_id, now()),
        )
        if context in loads_strict(r["context_json"])
    ]
    keywords, statuses = await filter_rules(ctx.db, [r["id"] for r in rows])
    out = []
    for r in rows:
        patterns = tuple(
            (k["keyword"], re.compile(keyword_pattern(k["keyword"], bool(k["whole_word"])), re.IGNORECASE))
            for k in keywords[r["id"]]
        )
        combined = re.compile("|".join(f"(?:{p.pattern})" for _, p in patterns), re.IGNORECASE) if patterns else None
        entity = filter_entity(r, keywords[r["id"]], statuses[r["id"]])
        out.append(ActiveFilter(entity, r["filter_action"], patterns, combined,
                                frozenset(str(s["status_id"]) for s in statuses[r["id"]])))
    return out


def searchable_text(status: dict[str, Any]) -> str:
    """What a keyword is matched against: content warning, text, media descriptions, poll options."""
    content = html.unescape(_TAGS.sub("", _BREAKS.sub("\n", status["content"][: MAX_TEXT * 4])))
    parts = [status["spoiler_text"], content]
    parts += [m["description"] or "" for m in status["media_attachments"]]
    if status["poll"]:
        parts += [o["title"] for o in status["poll"]["options"]]
    return "\n\n".join(p for p in parts if p)[:MAX_TEXT]


def match(filters: Sequence[ActiveFilter], status: dict[str, Any], viewer_id: int) -> tuple[bool, list[dict[str, Any]]]:
    """(hide?, FilterResult list) for one status entity; a boost is judged by its original."""
    proper = status["reblog"] or status
    if proper["account"]["id"] == str(viewer_id):
        return False, []  # one's own posts are never filtered
    text: str | None = None
    results = []
    for f in filters:
        keyword_matches: list[str] = []
        if f.any_keyword is not None:
            text = searchable_text(proper) if text is None else text
            if f.any_keyword.search(text):
                keyword_matches = [k for k, pattern in f.keywords if pattern.search(text)]
        status_matches = [proper["id"]] if proper["id"] in f.status_ids else []
        if not keyword_matches and not status_matches:
            continue
        if f.action == "hide":
            return True, []
        results.append({"filter": f.entity, "keyword_matches": keyword_matches or None,
                        "status_matches": status_matches or None})
    return False, results


async def apply_filters(
    ctx: Context, viewer: Row | None, statuses: list[dict[str, Any]], context: str
) -> list[dict[str, Any]]:
    """The statuses minus `hide` matches; the others' `filtered` lists the warn matches."""
    if viewer is None or not statuses:
        return statuses
    filters = await active_filters(ctx, viewer["id"], context)
    if not filters:
        return statuses
    kept = []
    for status in statuses:
        hide, results = match(filters, status, viewer["id"])
        if hide:
            continue
        if results:
            status["filtered"] = results
            if status["reblog"] is not None:
                status["reblog"]["filtered"] = results
        kept.append(status)
    return kept
