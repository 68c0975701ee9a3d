"""Instance keyword and hashtag rules: reject, or hold for an admin, inbound posts that match.

Matching is safe by construction (THREATS R-class): a keyword is a literal,
`re.escape`d and bounded by `\\b` only where it begins or ends with a word
character (the same rule as user filters, `fedi.filtering.keyword_pattern`);
admins never supply a regular expression. Text is extracted with nh3 (linear)
rather than a tag-stripping regex, and capped. Hashtags compare by exact name.
Every match is logged in `keyword_rule_hits` so an admin sees what a rule caught.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

from fedi.clock import iso, now
from fedi.context import Context
from fedi.db import Row
from fedi.filtering import keyword_pattern
from fedi.moderation.audit import record
from inbox.parse import parse_note

KINDS = ("keyword", "hashtag")
ACTIONS = ("reject", "review")
MAX_PATTERN = 200
MAX_TAG = 100
MAX_TEXT = 100_000
MAX_RULES = 1000
EXCERPT = 80
#: Marks an inbox row an admin released: the re-run skips the rules that held it.
RELEASED = "released"

_BREAKS = re.compile(r"<br\s*/?>|</p>", re.IGNORECASE)


class RuleError(ValueError):
    """A rule an admin cannot create; the message goes back in a 422."""


@dataclass(frozen=True)
class NewRule:
    pattern: str
    kind: str
    action: str
    whole_word: bool


def check_new_rule(pattern: str | None, kind: str | None, action: str | None, whole_word: bool) -> NewRule:
    """The rule as it will be stored, or RuleError."""
    kind = kind or "keyword"
    action = action or "reject"
    if kind not in KINDS:
        raise RuleError("kind must be keyword or hashtag")
    if action not in ACTIONS:
        raise RuleError("action must be reject or review")
    text = (pattern or "").strip()
    if any(ord(c) < 32 for c in text):
        raise RuleError("pattern must not contain control characters")
    if kind == "hashtag":
        text = text.lstrip("#").lower()
        if not 0 < len(text) <= MAX_TAG or not all(c.isalnum() or c == "_" for c in text):
            raise RuleError("a hashtag is 1 to 100 letters, digits or underscores")
    elif not 0 < len(text) <= MAX_PATTERN:
        raise RuleError(f"a keyword is 1 to {MAX_PATTERN} characters")
    return NewRule(text, kind, action, whole_word)


async def create_rule(ctx: Context, admin_id: int | None, rule: NewRule) -> Row:
    async with ctx.db.write() as tx:
        if await tx.fetchone("SELECT 1 FROM keyword_rules WHERE kind = ? AND lower(pattern) = lower(?)",
                             (rule.kind, rule.pattern)):
            raise RuleError("this rule exists already")
        count = await tx.fetchone("SELECT count(*) AS n FROM keyword_rules")
        if count is not None and count["n"] >= MAX_RULES:
            raise RuleError(f"at most {MAX_RULES} rules")
        rule_id = tx.new_id()
        await tx.execute(
            "INSERT INTO keyword_rules (id, pattern, kind, action, whole_word, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (rule_id, rule.pattern, rule.kind, rule.action, int(rule.whole_word), now()),
        )
        await record(tx, admin_id, "create", "keyword_rule", str(rule_id),
                     {"pattern": rule.pattern, "kind": rule.kind, "action": rule.action})
        row = await tx.fetchone("SELECT * FROM keyword_rules WHERE id = ?", (rule_id,))
    assert row is not None
    return row


async def delete_rule(ctx: Context, admin_id: int | None, rule_id: int) -> bool:
    """Remove a rule and its hits; False if there was none."""
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT * FROM keyword_rules WHERE id = ?", (rule_id,))
        if row is None:
            return False
        await tx.execute("DELETE FROM keyword_rule_hits WHERE rule_id = ?", (rule_id,))
        await tx.execute("DELETE FROM keyword_rules WHERE id = ?", (rule_id,))
        await record(tx, admin_id, "delete", "keyword_rule", str(rule_id),
                     {"pattern": row["pattern"], "kind": row["kind"], "action": row["action"]})
    return True


def searchable_text(content_html: str, summary: str) -> str:
    """Plain text of a post (content warning and body), line breaks kept so `\\b` means something."""
    import nh3  # on first use, as in fedi.sanitize (~1.4 MB)

    body = nh3.clean(_BREAKS.sub("\n", content_html[:MAX_TEXT * 2]), tags=set())
    return f"{summary}\n{html.unescape(body)}"[:MAX_TEXT]


def _excerpt(text: str, start: int, end: int) -> str:
    left = max(0, start - EXCERPT // 2)
    return text[left:min(len(text), end + EXCERPT // 2)].replace("\n", " ")


def matches(rules: list[Row], text: str, hashtags: list[str]) -> list[tuple[Row, str]]:
    """(rule, excerpt) for each rule the post matches."""
    found = []
    tags = set(hashtags)
    for rule in rules:
        if rule["kind"] == "hashtag":
            if rule["pattern"] in tags:
                found.append((rule, f"#{rule['pattern']}"))
            continue
        hit = re.search(keyword_pattern(rule["pattern"], bool(rule["whole_word"])), text, re.IGNORECASE)
        if hit:
            found.append((rule, _excerpt(text, hit.start(), hit.end())))
    return found


async def check_rules(ctx: Context, activity: dict[str, Any], note: dict[str, Any]) -> str | None:
    """"reject", "review" or None for an inbound Create; logs each rule that matched.

    A released activity (an admin let it through) is not checked again.
    """
    rules = await ctx.db.fetchall("SELECT * FROM keyword_rules ORDER BY id")
    if not rules:
        return None
    released = await ctx.db.fetchval("SELECT result FROM inbox_activities WHERE activity_id = ?", (activity["id"],))
    if released == RELEASED:
        return None
    fields = parse_note(note)
    found = matches(rules, searchable_text(fields.content, fields.summary), fields.hashtags)
    if not found:
        return None
    actor = activity.get("actor")
    actor_uri = actor if isinstance(actor, str) else str((actor or {}).get("id", ""))
    async with ctx.db.write() as tx:
        await tx.executemany(
            "INSERT INTO keyword_rule_hits (id, rule_id, activity_id, actor_uri, excerpt, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(tx.new_id(), rule["id"], activity["id"], actor_uri, excerpt, now()) for rule, excerpt in found],
        )
    return "reject" if any(rule["action"] == "reject" for rule, _ in found) else "review"


def rule_entity(row: Row, hits: int = 0) -> dict[str, Any]:
    return {"id": str(row["id"]), "pattern": row["pattern"], "kind": row["kind"], "action": row["action"],
            "whole_word": bool(row["whole_word"]), "hits_count": hits, "created_at": iso(row["created_at"])}


async def settle_held(ctx: Context, admin_id: int | None, row_id: int, release: bool) -> bool:
    """Release a held activity (queued again; the rules are not asked twice) or drop it; audited.

    False if no held activity has this id.
    """
    async with ctx.db.write() as tx:
        row = await tx.fetchone("SELECT activity_id, actor_uri FROM inbox_activities WHERE id = ? AND state = 'held'",
                                (row_id,))
        if row is None:
            return False
        if release:
            await tx.execute("UPDATE inbox_activities SET state = 'queued', result = ?, attempts = 0, locked_until = 0"
                             " WHERE id = ?", (RELEASED, row_id))
            tx.after_commit.append(ctx.wake_inbox)
        else:
            await tx.execute("UPDATE inbox_activities SET state = 'ignored', result = 'ignored: dropped by an admin',"
                             " processed_at = ? WHERE id = ?", (now(), row_id))
        await record(tx, admin_id, "release" if release else "drop", "held_activity", row["activity_id"],
                     {"actor": row["actor_uri"]})
    return True
