"""Local post composition: Markdown in, sanitised HTML out, mentions and hashtags linked.

Python-Markdown passes raw HTML through, so its output is sanitised afterwards
(THREATS X4). Mention and hashtag patterns are simple bounded character
classes, linear on any input (X6).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any

from fedi.sanitize import sanitize_html

MENTION_RE = re.compile(r"(?<![\w@/.])@([A-Za-z0-9_]{1,30})(?:@([A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}(?::\d{1,5})?))?")
HASHTAG_RE = re.compile(r"(?<![\w#&/])#(\w{1,100})")
_TAG_SPLIT = re.compile(r"(<[^>]*>)")
_NO_LINK_INSIDE = ("a", "code", "pre")
_local = threading.local()


def _markdown() -> Any:
    """This thread's Markdown converter, built once: building one (extensions, processors) cost ~0.4 ms
    of every post. `markdown` is imported here, not at module level, so a server that is only read
    from never loads it (~1 MB and ~30 ms of start-up)."""
    md = getattr(_local, "md", None)
    if md is None:
        import markdown

        md = _local.md = markdown.Markdown(extensions=["fenced_code", "nl2br", "sane_lists"], output_format="html")
    return md


@dataclass(frozen=True)
class MentionRef:
    username: str
    domain: str | None  # None: local, or the author's own instance

    @property
    def handle(self) -> str:
        return f"@{self.username}@{self.domain}" if self.domain else f"@{self.username}"


def find_mentions(text: str) -> list[MentionRef]:
    seen: dict[tuple[str, str | None], MentionRef] = {}
    for match in MENTION_RE.finditer(text):
        ref = MentionRef(match.group(1), match.group(2).lower() if match.group(2) else None)
        seen.setdefault((ref.username.lower(), ref.domain), ref)
    return list(seen.values())[:50]


def find_hashtags(text: str) -> list[str]:
    tags: dict[str, None] = {}
    for match in HASHTAG_RE.finditer(text):
        name = match.group(1)
        if not name.isdigit():
            tags.setdefault(name.lower(), None)
    return list(tags)[:30]


def _linkify(html: str, replace: Callable[[str], str]) -> str:
    """Apply `replace` to text outside tags, skipping text inside <a>, <code> and <pre>."""
    out: list[str] = []
    depth = 0
    for part in _TAG_SPLIT.split(html):
        if part.startswith("<"):
            name = part[1:].lstrip("/").split(None, 1)[0].rstrip(">").lower() if len(part) > 2 else ""
            if name in _NO_LINK_INSIDE:
                depth += -1 if part.startswith("</") else 1
            out.append(part)
        elif depth > 0:
            out.append(part)
        else:
            out.append(replace(part))
    return "".join(out)


def render_post(
    text: str,
    mention_urls: dict[tuple[str, str | None], str],
    tag_url: Callable[[str], str],
) -> str:
    """Markdown → sanitised HTML with known mentions and all hashtags as links.

    `mention_urls` maps (lower-case username, domain or None) to the profile URL of
    each mention that resolved; unresolved mentions stay plain text.
    """
    md = _markdown()
    try:
        html = md.convert(text)
    finally:
        md.reset()  # state from this post (footnotes, references, the parsed tree) must not reach the next
    html = sanitize_html(html)

    def replace(segment: str) -> str:
        def mention(match: re.Match[str]) -> str:
            key = (match.group(1).lower(), match.group(2).lower() if match.group(2) else None)
            url = mention_urls.get(key)
            if url is None:
                return match.group(0)
            return (
                f'<span class="h-card"><a href="{escape(url)}" class="u-url mention">'
                f"@<span>{escape(match.group(1))}</span></a></span>"
            )

        def hashtag(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.isdigit():
                return match.group(0)
            return (
                f'<a href="{escape(tag_url(name.lower()))}" class="mention hashtag" rel="tag">'
                f"#<span>{escape(name)}</span></a>"
            )

        return HASHTAG_RE.sub(hashtag, MENTION_RE.sub(mention, segment))

    return _linkify(html, replace)
