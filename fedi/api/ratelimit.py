"""Rate limits as Mastodon sets them, with its `X-RateLimit-*` headers and 429.

300 API calls per 5 minutes per account (per IP without a user token); media
uploads 30 and status deletions 30 per 30 minutes per account; sign-ups 5 per
30 minutes per IP; sign-ins (the authorize form and the password grant) 25 per
5 minutes per IP and 10 per 15 minutes per login name, so neither rotating
addresses nor rotating accounts gets many guesses (THREATS O8, R1).

Counters are fixed windows aligned to the epoch (as Rack::Attack counts), kept
in memory per instance on the application, with a bounded number of keys. The
client address is the TCP peer; `X-Forwarded-For` counts only when the peer is
one of `[server] trusted_proxies`. IPv6 clients are counted per /64, since one
host usually owns the whole prefix.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import NamedTuple

from aiohttp import web

from fedi.api.auth import authenticate, bearer
from fedi.api.params import read_params
from fedi.clock import iso, now
from fedi.errors import Handler, HttpError, json_error

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DELETE_STATUS = re.compile(r"^/api/v1/statuses/[^/]+$")
_UNREBLOG = re.compile(r"^/api/v1/statuses/[^/]+/unreblog$")
LOGIN_PATHS = ("/oauth/authorize", "/oauth/token")


@dataclass(frozen=True)
class Rule:
    limit: int
    period: int  # seconds; windows start at multiples of it


@dataclass(frozen=True)
class Limits:
    """Every limit; a test swaps `app[RATE_LIMITER].limits` for smaller numbers."""

    api: Rule = Rule(300, 300)
    media: Rule = Rule(30, 1800)
    status_deletes: Rule = Rule(30, 1800)
    sign_up: Rule = Rule(5, 1800)
    login_ip: Rule = Rule(25, 300)
    login_name: Rule = Rule(10, 900)
    #: Counters kept at most; expired windows go first, then the least recently started.
    max_keys: int = 100_000


class Hit(NamedTuple):
    name: str
    rule: Rule
    count: int
    reset: float

    @property
    def remaining(self) -> int:
        return max(0, self.rule.limit - self.count)


@dataclass
class RateLimiter:
    """The counters of one instance and the trusted proxies that may name the client."""

    trusted_proxies: tuple[Network, ...] = ()
    limits: Limits = field(default_factory=Limits)
    _counters: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def hit(self, name: str, rule: Rule, who: str, at: float) -> Hit:
        reset = (at // rule.period + 1) * rule.period
        key = (name, who)
        entry = self._counters.get(key)
        if entry is None or entry[0] != reset:
            self._counters.pop(key, None)
            self._evict(at)
            entry = self._counters[key] = [reset, 0]
        entry[1] += 1
        return Hit(name, rule, int(entry[1]), reset)

    def _evict(self, at: float) -> None:
        cap = self.limits.max_keys
        if len(self._counters) < cap:
            return
        for key in [k for k, (reset, _) in self._counters.items() if reset <= at]:
            del self._counters[key]
        while len(self._counters) >= cap * 0.9:
            del self._counters[next(iter(self._counters))]

    def client_ip(self, request: web.Request) -> str:
        """The address to count: the peer, or the first untrusted hop named by trusted proxies."""
        peer = _parse(request.remote)
        if peer is None:
            return request.remote or "unknown"
        address = peer
        if self._trusted(peer):
            hops = [h.strip() for value in request.headers.getall("X-Forwarded-For", ())
                    for h in value.split(",") if h.strip()]
            for hop in reversed(hops):
                parsed = _parse(hop)
                if parsed is None:
                    break
                address = parsed
                if not self._trusted(parsed):
                    break
        if isinstance(address, ipaddress.IPv6Address):
            return str(ipaddress.IPv6Network((address, 64), strict=False))
        return str(address)

    def _trusted(self, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(address in net for net in self.trusted_proxies)


def _parse(value: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address((value or "").strip("[]"))
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


RATE_LIMITER = web.AppKey("fedi_rate_limiter", RateLimiter)


async def _login_name(request: web.Request) -> str | None:
    """The account a sign-in names (None when the request is not a sign-in)."""
    try:
        params = await read_params(request)
        if request.path == "/oauth/token" and params.str("grant_type") != "password":
            return None
        return (params.str("username", max_length=100_000) or "").strip().lower()[:320]
    except HttpError:
        return None  # the endpoint answers the malformed body itself


async def _checks(request: web.Request, limiter: RateLimiter) -> list[tuple[str, Rule, str]]:
    """Which limits this request counts against, and under which client key."""
    limits, path, method = limiter.limits, request.path, request.method
    ip = f"ip:{limiter.client_ip(request)}"
    checks: list[tuple[str, Rule, str]] = []
    if path.startswith("/api/"):
        who = ip
        if bearer(request) is not None:
            try:
                auth = await authenticate(request)
            except HttpError:
                auth = None  # the endpoint itself answers 401
            if auth is not None and auth.account is not None:
                who = f"account:{auth.account['id']}"
        checks.append(("api", limits.api, who))
        if method == "POST" and path in ("/api/v1/media", "/api/v2/media"):
            checks.append(("media", limits.media, who))
        if (method == "DELETE" and _DELETE_STATUS.match(path)) or (method == "POST" and _UNREBLOG.match(path)):
            checks.append(("status_deletes", limits.status_deletes, who))
        if method == "POST" and path == "/api/v1/accounts":
            checks.append(("sign_up", limits.sign_up, ip))
    elif method == "POST" and path in LOGIN_PATHS:
        name = await _login_name(request)
        if name is not None:
            checks.append(("login_ip", limits.login_ip, ip))
        if name:
            checks.append(("login_name", limits.login_name, f"name:{name}"))
    return checks


def _headers(hit: Hit) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(hit.rule.limit),
        "X-RateLimit-Remaining": str(hit.remaining),
        "X-RateLimit-Reset": iso(hit.reset),
    }


@web.middleware
async def rate_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request; 429 past a limit; headers for the limit closest to running out."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None or not (request.path.startswith("/api/") or request.path in LOGIN_PATHS):
        return await handler(request)
    checks = await _checks(request, limiter)
    if not checks:
        return await handler(request)
    at = now()
    hits = [limiter.hit(name, rule, who, at) for name, rule, who in checks]
    over = [h for h in hits if h.count > h.rule.limit]
    if over:
        worst = max(over, key=lambda h: h.reset)
        retry = max(1, math.ceil(worst.reset - at))
        return json_error(429, "Too many requests", {**_headers(worst), "Retry-After": str(retry)})
    headers = _headers(min(hits, key=lambda h: (h.remaining, -h.reset)))
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        exc.headers.update(headers)
        raise
    if not response.prepared:
        response.headers.update(headers)
    return response


def setup(app: web.Application, trusted_proxies: tuple[str, ...]) -> None:
    """Put this instance's limiter on the application (the middleware finds it there)."""
    networks = tuple(ipaddress.ip_network(n, strict=False) for n in trusted_proxies)
    app[RATE_LIMITER] = RateLimiter(trusted_proxies=networks)
