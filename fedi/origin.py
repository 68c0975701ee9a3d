"""Origins of URLs, compared strictly.

Authority on the fediverse is the host an id lives on, so look-alikes must not
compare equal: a trailing dot, userinfo (`a.tld@b.tld`), or another port is a
different origin (CVE-2023-42451). Host names are compared case-insensitively
after IDNA encoding; anything unparsable has no origin.
"""

from __future__ import annotations

import re
from functools import lru_cache
from urllib.parse import urlsplit

MAX_URL = 2048
#: Any whitespace, as str.isspace sees it (re's Unicode \s is the same predicate).
_SPACE = re.compile(r"\s")
#: The common case, decided without urlsplit and IDNA: a lower-case http(s) URL whose host is
#: plain ASCII labels of 1–63 characters, no port, no userinfo, no whitespace anywhere.
#: Whatever this does not match takes the general path below, which gives the same answer
#: for what it does match (tests/test_inbox_security.py compares the two).
_SIMPLE = re.compile(r"(https?)://([a-z0-9-]{1,63}(?:\.[a-z0-9-]{1,63})*)(?:[/?#]\S*)?")


def origin(url: object) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None for anything else."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        return None
    return _origin(url)


# An inbox request asks for the origin of the same few URLs a dozen times (actor, ids,
# keyId, Host check), and every activity from a peer repeats its actor's: cache them.
# Bounded: at most 4096 × MAX_URL characters, far less in practice.
@lru_cache(maxsize=4096)
def _origin(url: str) -> tuple[str, str, int] | None:
    simple = _SIMPLE.fullmatch(url)
    if simple is not None:
        scheme, host = simple.groups()
        return scheme, host, 443 if scheme == "https" else 80
    return _general(url)


def _general(url: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if "@" in parts.netloc or _SPACE.search(url):
        return None
    try:
        host = parts.hostname.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def same_origin(a: object, b: object) -> bool:
    oa, ob = origin(a), origin(b)
    return oa is not None and oa == ob


def netloc(url: str) -> str:
    """host[:port] as written in ids (the form used for `domain`)."""
    o = origin(url)
    if o is None:
        return ""
    scheme, host, port = o
    default = 443 if scheme == "https" else 80
    return host if port == default else f"{host}:{port}"


def is_valid_url(url: object) -> bool:
    return origin(url) is not None
