"""Allow-list sanitising of remote HTML (and of our own rendered Markdown).

nh3 (Rust's ammonia) parses like a browser, so tricks that fool regexes or
naive parsers do not get through. The allowed set follows what Mastodon keeps:
paragraphs, links, mention/hashtag spans and simple formatting.
"""

from __future__ import annotations

import html
import re

_TAGS = {
    "p", "br", "a", "span", "del", "pre", "code", "em", "strong", "b", "i", "u",
    "ul", "ol", "li", "blockquote", "s", "sub", "sup",
}
_CLASS_OK = re.compile(r"^(h-\S+|p-\S+|u-\S+|dt-\S+|e-\S+|mention|hashtag|ellipsis|invisible)$")


def _filter_attr(element: str, attribute: str, value: str) -> str | None:
    if attribute == "class":
        kept = " ".join(c for c in value.split() if _CLASS_OK.match(c))
        return kept or None
    return value


def sanitize_html(text: str, max_length: int = 100_000) -> str:
    """Clean remote HTML to the allowed subset; links get rel=nofollow noopener."""
    if not text:
        return ""
    import nh3  # on first use: ~1.4 MB an instance that never receives or renders HTML need not load

    return nh3.clean(
        text[:max_length],
        tags=_TAGS,
        attributes={"a": {"href", "class", "title"}, "span": {"class"}, "*": set()},
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow noopener noreferrer",
        attribute_filter=_filter_attr,
        strip_comments=True,
    )


def plain_text(value: object, max_length: int) -> str:
    """A remote string meant as plain text (names, alt text): tags removed, entities decoded, capped."""
    if not isinstance(value, str):
        return ""
    import nh3

    stripped = nh3.clean(value[: max_length * 4], tags=set())
    return html.unescape(stripped).replace("\x00", "")[:max_length].strip()
