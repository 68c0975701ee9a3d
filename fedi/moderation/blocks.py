"""Changing domain rules. The admin API, the CLI, list imports and subscriptions all come here.

Each change is one transaction: the rule rows, the rules version (so other
processes reload), the effects on accounts and follows (`enforce.reconcile`) and
the audit row commit together or not at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.moderation import audit, enforce
from fedi.moderation.domains import (
    FETCH_MODES, MODES, SEVERITIES, Rules, bump_version, host_of, install, invalidate, load_rules, normalize_domain,
)

BLOCK_FIELDS = ("severity", "reject_media", "reject_reports", "private_comment", "public_comment", "obfuscate")
BOOLEAN_FIELDS = ("reject_media", "reject_reports", "obfuscate")
RANK = {"noop": 0, "silence": 1, "suspend": 2}


class RuleError(Exception):
    """A rule change that cannot be made; `status` for the API, `existing` the block in the way."""

    def __init__(self, message: str, status: int = 422, existing: Row | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.existing = existing


@dataclass(frozen=True)
class BlockSpec:
    """A block as asked for; comments stay exactly as given (None when not given)."""

    domain: str
    severity: str = "silence"
    reject_media: bool = False
    reject_reports: bool = False
    private_comment: str | None = None
    public_comment: str | None = None
    obfuscate: bool = False


def check_domain(ctx: Context, text: str) -> str:
    try:
        domain = normalize_domain(text)
    except ValueError as exc:
        raise RuleError(str(exc)) from None
    if domain == host_of(ctx.domain):
        raise RuleError("this instance's own domain cannot be blocked or allowed")
    return domain


def check_severity(value: Any) -> str:
    if value not in SEVERITIES:
        raise RuleError(f"severity must be one of {', '.join(SEVERITIES)}")
    return str(value)


def stricter_than(new: Mapping[str, Any], old: Mapping[str, Any] | Row) -> bool:
    """Whether a block under an existing one limits more: a higher severity, or the same one (short of
    suspend) adding a reject flag without dropping one. (Mastodon also lets any suspend through.)"""
    if RANK[new["severity"]] != RANK[old["severity"]]:
        return RANK[new["severity"]] > RANK[old["severity"]]
    if new["severity"] == "suspend":
        return False
    flags = [(bool(new[f]), bool(old[f])) for f in ("reject_media", "reject_reports")]
    return all(n or not o for n, o in flags) and any(n and not o for n, o in flags)


def in_the_way(rules: Rules, spec: BlockSpec) -> Row | None:
    """The existing block that makes a new block of `spec` pointless (same domain, or a parent at least as strict)."""
    existing = rules.block_for(spec.domain)
    if existing is not None and (existing["domain"] == spec.domain or not stricter_than(vars(spec), existing)):
        return existing
    return None


#: Changed domains (None: nothing changed), markers of removed rules, and the result to return.
Mutation = Callable[[Tx, Rules], Awaitable[tuple[list[str] | None, set[float], Any]]]


async def change(ctx: Context, admin_id: int | None, action: str, target: str, detail: dict[str, Any],
                 mutate: Mutation, target_type: str = "domain_block") -> Any:
    """Run `mutate` (returns changed domains, markers of removed rules, result) with its effects and audit row.

    The new rules are installed before the effects run so that what they queue is
    checked against them; a failed transaction drops the cache instead.
    """
    try:
        async with ctx.db.write() as tx:
            before = await load_rules(tx, ctx.domain)
            changed, removed, result = await mutate(tx, before)
            if changed is None:  # nothing to do: no version bump, no audit row
                return result
            version = await bump_version(tx)
            rules = await load_rules(tx, ctx.domain)
            assert rules.version == version
            install(ctx, rules)
            effects = await enforce.reconcile(ctx, tx, rules, changed, removed) if changed else {}
            await audit.record(tx, admin_id, action, target_type, target, {**detail, **effects})
    except BaseException:
        invalidate(ctx)
        raise
    return result


async def create_block(ctx: Context, admin_id: int | None, spec: BlockSpec, *, source: str = "manual",
                       detail: dict[str, Any] | None = None) -> Row:
    """Add a block; RuleError(422, existing=…) if the domain is already covered as strictly."""
    spec = BlockSpec(**{**asdict(spec), "domain": check_domain(ctx, spec.domain), "severity": check_severity(spec.severity)})

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str], set[float], Row]:
        existing = in_the_way(rules, spec)
        if existing is not None:
            raise RuleError(f"{existing['domain']} is already blocked with equal or stronger limits", existing=existing)
        block_id, ts = tx.new_id(), now()
        values = asdict(spec)
        await tx.execute(
            f"INSERT INTO domain_blocks (id, {', '.join(values)}, source, created_at, updated_at)"
            f" VALUES (?, {', '.join('?' for _ in values)}, ?, ?, ?)",
            [block_id, *values.values(), source, ts, ts],
        )
        row = await tx.fetchone("SELECT * FROM domain_blocks WHERE id = ?", (block_id,))
        assert row is not None
        return [spec.domain], set(), row

    return await change(ctx, admin_id, "domain_block.create", spec.domain, {**asdict(spec), **(detail or {})}, mutate)


async def update_block(ctx: Context, admin_id: int | None, block_id: int, changes: Mapping[str, Any], *,
                       detail: dict[str, Any] | None = None) -> Row:
    """Change some fields of a block (only those given); no audit row if nothing differs."""
    unknown = set(changes) - set(BLOCK_FIELDS)
    if unknown:
        raise RuleError(f"unknown field {sorted(unknown)[0]}")
    if "severity" in changes:
        check_severity(changes["severity"])

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str] | None, set[float], Row]:
        row = await tx.fetchone("SELECT * FROM domain_blocks WHERE id = ?", (block_id,))
        if row is None:
            raise RuleError("Record not found", status=404)
        values = {k: (bool(v) if k in BOOLEAN_FIELDS else v) for k, v in changes.items()}
        diff = {k: v for k, v in values.items() if row[k] != v}
        if not diff:
            return None, set(), row
        await tx.execute(
            f"UPDATE domain_blocks SET {', '.join(k + ' = ?' for k in diff)}, updated_at = ? WHERE id = ?",
            [*diff.values(), now(), block_id],
        )
        updated = await tx.fetchone("SELECT * FROM domain_blocks WHERE id = ?", (block_id,))
        assert updated is not None
        detail.update(domain=row["domain"], changes=diff)
        return [row["domain"]], set(), updated

    detail = dict(detail or {})
    row = await ctx.db.fetchone("SELECT domain FROM domain_blocks WHERE id = ?", (block_id,))
    return await change(ctx, admin_id, "domain_block.update", row["domain"] if row else str(block_id), detail, mutate)


async def remove_block(ctx: Context, admin_id: int | None, block_id: int, *,
                       detail: dict[str, Any] | None = None) -> Row:
    """Lift a block: markers it set are cleared and the follows it cut come back."""

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str], set[float], Row]:
        row = await tx.fetchone("SELECT * FROM domain_blocks WHERE id = ?", (block_id,))
        if row is None:
            raise RuleError("Record not found", status=404)
        await tx.execute("DELETE FROM domain_blocks WHERE id = ?", (block_id,))
        extra.update({k: row[k] for k in BLOCK_FIELDS})
        return [row["domain"]], {row["created_at"]}, row

    extra = dict(detail or {})
    row = await ctx.db.fetchone("SELECT domain FROM domain_blocks WHERE id = ?", (block_id,))
    return await change(ctx, admin_id, "domain_block.remove", row["domain"] if row else str(block_id), extra, mutate)


async def block_id_for(ctx: Context, text: str) -> int:
    """The id of the block on exactly this domain (for the CLI), or RuleError 404."""
    domain = check_domain(ctx, text)
    block_id = await ctx.db.fetchval("SELECT id FROM domain_blocks WHERE domain = ?", (domain,))
    if block_id is None:
        raise RuleError(f"{domain} is not blocked", status=404)
    return int(block_id)


async def add_allow(ctx: Context, admin_id: int | None, text: str) -> Row:
    """Allow a domain (for allow-list mode); an existing allow is returned unchanged."""
    domain = check_domain(ctx, text)

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str] | None, set[float], Row]:
        row = await tx.fetchone("SELECT * FROM domain_allows WHERE domain = ?", (domain,))
        if row is not None:
            return None, set(), row
        allow_id = tx.new_id()
        await tx.execute("INSERT INTO domain_allows (id, domain, created_at) VALUES (?, ?, ?)", (allow_id, domain, now()))
        row = await tx.fetchone("SELECT * FROM domain_allows WHERE id = ?", (allow_id,))
        return [], set(), row

    return await change(ctx, admin_id, "domain_allow.create", domain, {}, mutate, target_type="domain_allow")


async def remove_allow(ctx: Context, admin_id: int | None, allow_id: int) -> Row:
    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str], set[float], Row]:
        row = await tx.fetchone("SELECT * FROM domain_allows WHERE id = ?", (allow_id,))
        if row is None:
            raise RuleError("Record not found", status=404)
        await tx.execute("DELETE FROM domain_allows WHERE id = ?", (allow_id,))
        return [], set(), row

    row = await ctx.db.fetchone("SELECT domain FROM domain_allows WHERE id = ?", (allow_id,))
    return await change(ctx, admin_id, "domain_allow.remove", row["domain"] if row else str(allow_id), {}, mutate,
                        target_type="domain_allow")


async def set_setting(ctx: Context, admin_id: int | None, key: str, value: str) -> None:
    """`federation_mode` (blocklist | allowlist) or `authorized_fetch` (off | blocked | all), at runtime."""
    allowed = {"federation_mode": MODES, "authorized_fetch": FETCH_MODES}.get(key)
    if allowed is None:
        raise RuleError(f"unknown setting {key}")
    if value not in allowed:
        raise RuleError(f"{key} must be one of {', '.join(allowed)}")

    async def mutate(tx: Tx, rules: Rules) -> tuple[list[str] | None, set[float], None]:
        if (rules.mode if key == "federation_mode" else rules.authorized_fetch) == value:
            return None, set(), None
        await tx.execute("INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)", (key, value))
        return [], set(), None

    await change(ctx, admin_id, f"setting.{key}", value, {}, mutate, target_type="setting")
