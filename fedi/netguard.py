"""Which IP addresses outgoing requests may reach (THREATS.md D1–D4, S13).

Every URL we fetch comes from a remote party (actor ids, key ids, redirects,
attachment links), so without this guard any of them could make the server
talk to its own loopback, the LAN or a cloud metadata endpoint. Two checks
cover the two ways aiohttp reaches an address:

* `GuardedResolver` filters what DNS returns, at connect time, so the address
  checked is the address connected to (no DNS-rebinding window).
* `check_host` checks IP-literal hosts, which aiohttp never sends to the
  resolver, before each request and each redirect hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class BlockedAddress(Exception):
    """The destination address is not one this server may connect to."""


class BlockedResolution(BlockedAddress, OSError):
    """Raised from the resolver: an OSError so aiohttp reports a connection error."""


def _nets(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(c) for c in cidrs)


# Ranges refused even where the running Python's `is_global` tables are older
# than the IANA registries (3.11 calls multicast, fec0::/10 and 3fff::/20 global).
_REFUSED = _nets(
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/96", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "3fff::/20", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
)
# Never valid unicast destinations, whatever the allow-list says
# (connecting to 0.0.0.0 or :: reaches the local host on Linux).
_NEVER = _nets("0.0.0.0/32", "255.255.255.255/32", "224.0.0.0/4", "::/128", "ff00::/8")
#: Remembered verdicts per AddressPolicy; cleared when full (a cache, not a list of every address seen).
_MAX_VERDICTS = 4096
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address really points at, if it embeds one."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


class AddressPolicy:
    """Allows globally routable unicast addresses plus the admin's allow-list."""

    def __init__(self, allowed_networks: Iterable[str] = ()) -> None:
        self.allowed = tuple(ipaddress.ip_network(n, strict=False) for n in allowed_networks)
        self._verdicts: dict[str, str | None] = {}  # address text -> refusal reason, None if allowed

    def check(self, ip: str | IPAddress) -> None:
        """Raise BlockedAddress unless `ip` may be connected to.

        Verdicts on address texts are remembered (the policy never changes, and a
        fan-out connects to the same few addresses thousands of times)."""
        if not isinstance(ip, str):
            self._check(ip)
            return
        try:
            reason = self._verdicts[ip]
        except KeyError:
            try:
                self._check(ip)
                reason = None
            except BlockedAddress as exc:
                reason = str(exc)
            if len(self._verdicts) >= _MAX_VERDICTS:
                self._verdicts.clear()
            self._verdicts[ip] = reason
        if reason is not None:
            raise BlockedAddress(reason)

    def _check(self, ip: str | IPAddress) -> None:
        try:
            addr = ip if not isinstance(ip, str) else ipaddress.ip_address(ip.strip("[]"))
        except ValueError:
            raise BlockedAddress(f"{ip!r} is not an IP address") from None
        if isinstance(addr, ipaddress.IPv6Address):
            addr = addr.__class__(int(addr))  # drop any %zone for the comparisons
            if addr in _IPV4_COMPATIBLE and int(addr) > 1:
                raise BlockedAddress(f"{addr} is a deprecated IPv4-compatible address")
            v4 = _embedded_ipv4(addr)
            if v4 is not None:
                # The embedded IPv4 address is where the packet ends up (mapped,
                # NAT64, 6to4), so that is the address to judge.
                self._check(v4)
                return
        if any(addr in net for net in _NEVER):
            raise BlockedAddress(f"{addr} is not a unicast address")
        if any(addr.version == net.version and addr in net for net in self.allowed):
            return
        if (
            not addr.is_global
            or addr.is_multicast
            or addr.is_private
            or addr.is_reserved
            or addr.is_loopback
            or addr.is_link_local
            or addr.is_unspecified
            or any(addr in net for net in _REFUSED)
        ):
            raise BlockedAddress(f"{addr} is not a public address")


def _looks_like_ip_literal(host: str) -> bool:
    """Same heuristic as aiohttp.helpers.is_ip_address: such hosts skip the resolver."""
    return ":" in host or host.replace(".", "").isdigit()


def literal_address(host: str) -> str | None:
    """The address an IP-literal host denotes, in any spelling getaddrinfo accepts.

    Catches 2130706433, 0x7f.1, 127.1 and 0177.0.0.1 (inet_aton semantics).
    Returns None for a host name, which the resolver will check instead.
    """
    h = host.strip("[]")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(h))
    except (OSError, ValueError):
        return None


def check_host(policy: AddressPolicy, host: str) -> None:
    """Check a URL host before connecting; raises BlockedAddress.

    Host names pass here (the resolver checks what they resolve to); IP literals
    are checked now. Non-canonical IPv4 spellings are refused even when the
    address is allowed, and so is an unparseable host that aiohttp would still
    treat as a literal.
    """
    addr = literal_address(host)
    if addr is not None:
        policy.check(addr)
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            # No peer publishes URLs like http://0x7f.1/; whatever they point at,
            # they only serve to slip past string-based filters.
            raise BlockedAddress(f"{host!r} is a non-canonical IPv4 address") from None
    elif _looks_like_ip_literal(host):
        raise BlockedAddress(f"{host!r} is not a valid IP address")


class GuardedResolver(AbstractResolver):
    """Resolves through a base resolver and drops every address the policy refuses.

    `host_map` (tests only) answers listed names statically; other names fall
    through to the base resolver. Both answers are filtered the same way.
    The default base resolver needs a running event loop.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        base: AbstractResolver | None = None,
        host_map: dict[str, str] | None = None,
    ) -> None:
        self.policy = policy
        self.base = base if base is not None else ThreadedResolver()
        self.host_map = host_map if host_map is not None else {}  # shared: tests add names later

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        mapped = self.host_map.get(host.lower().rstrip("."))
        if mapped is not None:
            fam = socket.AF_INET6 if ":" in mapped else socket.AF_INET
            results: list[ResolveResult] = [
                ResolveResult(
                    hostname=host, host=mapped, port=port, family=fam, proto=0,
                    flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
                )
            ]
        else:
            results = await self.base.resolve(host, port, family)
        allowed = []
        for result in results:
            try:
                self.policy.check(result["host"])
            except BlockedAddress:
                continue
            allowed.append(result)
        if not allowed:
            raise BlockedResolution(f"{host} resolves only to blocked addresses")
        return allowed

    async def close(self) -> None:
        await self.base.close()
