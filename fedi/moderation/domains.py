"""Domain rules: normalisation, the longest-match rule model, and the per-instance cache.

Every inbox POST, delivery and fetch asks "is this host blocked?", so the rules
(blocks, allows, federation mode, authorized fetch) are held in memory on the
Context. A change made by this process installs the new rules at once; a change
made by another process (the CLI) bumps `settings.domain_rules_version`, which
is looked at no more than once a second.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Union

from fedi.context import Context
from fedi.db import Database, Row, Tx
from fedi.origin import origin

SEVERITIES = ("noop", "silence", "suspend")
MODES = ("blocklist", "allowlist")
FETCH_MODES = ("off", "blocked", "all")
VERSION_KEY = "domain_rules_version"
#: Still delivered to a blocked host: they only take back what it was given (a follow, an acceptance).
WITHDRAWALS = frozenset({"Reject", "Undo"})
RECHECK_SECONDS = 1.0
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$")

Source = Union[Context, Database, Tx]


def normalize_domain(text: str) -> str:
    """A domain as rules store it: IDNA (punycode), lower-case, without one trailing dot.

    Raises ValueError with a message fit to show an admin.
    """
    if not isinstance(text, str):
        raise ValueError("domain must be text")
    value = text.strip()
    if value.endswith("."):
        value = value[:-1]
    if not value:
        raise ValueError("domain is empty")
    if "*" in value:
        raise ValueError(f"{text.strip()!r} is obfuscated or a wildcard, not a domain")
    if any(c in value for c in "/:@ \t?#"):
        raise ValueError(f"{text.strip()[:100]!r} is not a domain name (no scheme, port, path or spaces)")
    if value.isascii():
        value = value.lower()  # what the idna codec does to ASCII labels (and much faster: lists are long)
    else:
        try:
            value = value.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise ValueError(f"{text.strip()[:100]!r} is not a valid (internationalised) domain name") from None
    if len(value) > 253 or not all(_LABEL.match(label) for label in value.split(".")):
        raise ValueError(f"{text.strip()[:100]!r} is not a valid domain name")
    return value


@lru_cache(maxsize=8192)
def host_of(value: str) -> str:
    """The normalised host of a URL, a `host[:port]` (as in accounts.domain) or a domain; "" if none."""
    if "://" in value:
        parsed = origin(value)
        return parsed[1] if parsed else ""
    host, _, port = value.rpartition(":")
    if host and port.isdigit():
        value = host
    try:
        return normalize_domain(value)
    except ValueError:
        return ""


def suffixes(host: str) -> list[str]:
    """`a.b.c` → [`a.b.c`, `b.c`, `c`]: the domains whose rules may cover the host, longest first."""
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(len(labels))]


def digest(domain: str) -> str:
    """Mastodon's `digest`: SHA-256 hex of the domain, so lists can be compared without revealing it."""
    return hashlib.sha256(domain.encode()).hexdigest()


@dataclass(frozen=True)
class Rules:
    version: int
    blocks: dict[str, Row]
    allows: frozenset[str]
    mode: str
    authorized_fetch: str
    own_host: str

    def block_for(self, value: str) -> Row | None:
        """The longest block rule covering the host of `value` (a rule covers subdomains)."""
        host = host_of(value)
        if not host or not self.blocks:
            return None
        for suffix in suffixes(host):
            row = self.blocks.get(suffix)
            if row is not None:
                return row
        return None

    def covering(self, value: str) -> list[Row]:
        """Every block rule covering the host, longest first."""
        host = host_of(value)
        return [self.blocks[s] for s in suffixes(host) if s in self.blocks] if host else []

    def allowed(self, value: str) -> bool:
        host = host_of(value)
        return bool(host) and any(s in self.allows for s in suffixes(host))

    def suspended(self, value: str) -> bool:
        """No federation at all with this host: a suspend rule, or not allowed in allow-list mode."""
        host = host_of(value)
        if not host or host == self.own_host:
            return False
        rule = self.block_for(host)
        if rule is not None and rule["severity"] == "suspend":
            return True
        return self.mode == "allowlist" and not self.allowed(host)

    def severity(self, value: str) -> str | None:
        rule = self.block_for(value)
        return rule["severity"] if rule is not None else None


async def _setting(conn: Database | Tx, key: str, default: str) -> str:
    row = await conn.fetchone("SELECT value FROM settings WHERE key = ?", (key,))
    return row[0] if row is not None else default


async def load_rules(conn: Database | Tx, own_domain: str) -> Rules:
    """Every rule as `conn` sees it (inside a transaction: including its uncommitted changes)."""
    blocks = {r["domain"]: r for r in await conn.fetchall("SELECT * FROM domain_blocks")}
    allows = frozenset(r[0] for r in await conn.fetchall("SELECT domain FROM domain_allows"))
    return Rules(
        version=int(await _setting(conn, VERSION_KEY, "0")),
        blocks=blocks,
        allows=allows,
        mode=await _setting(conn, "federation_mode", "blocklist"),
        authorized_fetch=await _setting(conn, "authorized_fetch", "off"),
        own_host=host_of(own_domain),
    )


async def current(ctx: Context) -> Rules:
    """The instance's rules from its cache, reloaded when another process changed them."""
    cached: tuple[Rules, float] | None = ctx.domain_rules
    clock = time.monotonic()
    if cached is not None and clock - cached[1] < RECHECK_SECONDS:
        return cached[0]
    # Lower than ours: our own change, installed before its commit (see `install`).
    if cached is not None and int(await _setting(ctx.db, VERSION_KEY, "0")) <= cached[0].version:
        ctx.domain_rules = (cached[0], clock)
        return cached[0]
    rules = await load_rules(ctx.db, ctx.domain)
    ctx.domain_rules = (rules, clock)
    return rules


def install(ctx: Context, rules: Rules) -> None:
    """Use `rules` from now on (a change made in this process, before its commit so that the
    activities it queues are checked against the new rules); `invalidate` if the commit fails."""
    ctx.domain_rules = (rules, time.monotonic())


def invalidate(ctx: Context) -> None:
    ctx.domain_rules = None


async def bump_version(tx: Tx) -> int:
    """Mark the rules changed (in the changing transaction) so other processes reload them."""
    await tx.execute(
        "INSERT INTO settings (key, value) VALUES (?, '1')"
        " ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)",
        (VERSION_KEY,),
    )
    return int(await _setting(tx, VERSION_KEY, "0"))


async def _rules(source: Source) -> Rules:
    if isinstance(source, Context):
        return await current(source)
    own = await source.fetchone("SELECT uri FROM accounts WHERE actor_type = 'Application' AND domain IS NULL")
    return await load_rules(source, own["uri"] if own else "")


async def rule_for(source: Source, domain: str) -> Row | None:
    """The domain block that governs `domain` (a host, `host:port` or URL), or None."""
    return (await _rules(source)).block_for(domain)


async def is_suspended(ctx: Context, *values: str | None) -> bool:
    """Whether any of these hosts/URLs is cut off (suspended, or not allowed in allow-list mode)."""
    rules = await current(ctx)
    return any(rules.suspended(v) for v in values if v)


async def is_silenced(ctx: Context, value: str | None) -> bool:
    return bool(value) and (await current(ctx)).severity(value) == "silence"  # type: ignore[arg-type]


async def media_rejected(ctx: Context, domains: Iterable[str | None]) -> set[str]:
    """Which of these account domains may not have their media shown (reject_media, or suspended)."""
    rules = await current(ctx)
    out = set()
    for domain in {d for d in domains if d}:
        rule = rules.block_for(domain)
        if rule is not None and (rule["reject_media"] or rule["severity"] == "suspend"):
            out.add(domain)
    return out


async def deliverable(ctx: Context, inboxes: Iterable[str], activity_type: str) -> set[str]:
    """The inboxes an activity may be queued for: none on a cut-off host, except withdrawals."""
    targets = set(inboxes)
    if activity_type in WITHDRAWALS or not targets:
        return targets
    rules = await current(ctx)
    return {url for url in targets if not rules.suspended(url)}

