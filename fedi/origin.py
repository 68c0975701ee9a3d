"""Origins of URLs, compared strictly.

Authority on the fediverse is the host an id lives on, so look-alikes must not
compare equal: a trailing dot, userinfo (`a.tld@b.tld`), or another port is a
different origin (CVE-2023-42451). Host names are compared case-insensitively
after IDNA encoding; anything unparsable has no origin.
"""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_URL = 2048


def origin(url: object) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an http(s) URL, or None for anything else."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if "@" in parts.netloc or any(c.isspace() for c in url):
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
