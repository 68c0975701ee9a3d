"""Local accounts: creation (with their RSA key pair), look-up, suspension."""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING

from actors import urls
from actors.passwords import hash_password
from fedi.clock import now
from fedi.db import Database, Row, Tx
from fedi.http_client import Signer
from fedi.signatures import generate_private_key, private_key_pem, public_key_pem

if TYPE_CHECKING:
    from fedi.context import Context

USERNAME_RE = re.compile(r"^[A-Za-z0-9_]{1,30}$")


class AccountError(ValueError):
    """An account request that cannot be met; the message is for the person asking."""


def new_key_pair() -> tuple[str, str]:
    """A fresh RSA-2048 key pair as (private PEM, public PEM)."""
    key = generate_private_key()
    return private_key_pem(key), public_key_pem(key)


async def _insert_account(
    tx: Tx, base: str, username: str, *, actor_type: str, uri: str, locked: bool, bot: bool, display_name: str,
    keys: tuple[str, str] | tuple[None, None],
) -> int:
    private, public = keys
    account_id = tx.new_id()
    ts = now()
    await tx.execute(
        """INSERT INTO accounts (id, username, domain, uri, url, actor_type, display_name, locked, bot,
               inbox_url, shared_inbox_url, outbox_url, followers_url, following_url, featured_url,
               public_key_id, public_key_pem, private_key_pem, created_at, updated_at)
           VALUES (?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            account_id, username, uri, urls.profile(base, username) if actor_type != "Application" else base,
            actor_type, display_name, int(locked), int(bot),
            f"{uri}/inbox", urls.shared_inbox(base), f"{uri}/outbox", f"{uri}/followers",
            f"{uri}/following", f"{uri}/collections/featured",
            urls.key_id(uri), public, private, ts, ts,
        ),
    )
    return account_id


async def create_local_account(
    db: Database,
    base: str,
    username: str,
    password: str,
    *,
    admin: bool = False,
    email: str | None = None,
    locked: bool = False,
    bot: bool = False,
    display_name: str = "",
    approved: bool = True,
    locale: str | None = None,
    reason: str | None = None,
) -> int:
    """Create a local account and its login; raises AccountError for a bad or taken name."""
    if not USERNAME_RE.match(username):
        raise AccountError("username must be 1-30 letters, digits or underscores")
    if len(password) < 8:
        raise AccountError("password must be at least 8 characters")
    if len(password) > 1024:
        raise AccountError("password is too long")
    # The slow parts (RSA key generation, scrypt: ~0.1 s) off the event loop, and before the
    # transaction, so neither the loop nor the single writer waits for them.
    keys, password_hash = await asyncio.gather(asyncio.to_thread(new_key_pair), asyncio.to_thread(hash_password, password))
    async with db.write() as tx:
        taken = await tx.fetchone(
            "SELECT 1 FROM accounts WHERE domain IS NULL AND lower(username) = lower(?)", (username,)
        )
        if taken:
            raise AccountError(f"username {username} is taken")
        account_id = await _insert_account(
            tx, base, username, actor_type="Service" if bot else "Person",
            uri=urls.actor(base, username), locked=locked, bot=bot, display_name=display_name, keys=keys,
        )
        if email and await tx.fetchone("SELECT 1 FROM users WHERE lower(email) = lower(?)", (email,)):
            raise AccountError("e-mail address is taken")
        await tx.execute(
            "INSERT INTO users (account_id, email, password_hash, admin, approved, locale, reason, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (account_id, email, password_hash, int(admin), int(approved), locale, reason, now()),
        )
    return account_id


async def ensure_instance_actor(db: Database, base: str, domain: str) -> int:
    """The instance actor (`/actor`, type Application) that signs fetches; created once.

    Created without its key pair: `instance_signer` makes that on first need (the
    first signed fetch, `/actor` served, a report forwarded, or `fedi init`), so an
    instance that has not federated yet never loads `cryptography` (~7 MB of memory
    and 30-150 ms of its first start).
    """
    row = await db.fetchone("SELECT id FROM accounts WHERE domain IS NULL AND actor_type = 'Application'")
    if row:
        return int(row["id"])
    async with db.write() as tx:
        return await _insert_account(
            tx, base, domain, actor_type="Application", uri=urls.instance_actor(base),
            locked=True, bot=True, display_name=domain, keys=(None, None),
        )


async def instance_signer(ctx: Context) -> Signer:
    """The instance actor's signer, its key pair made and stored on first need.

    Several processes may race to make it: the UPDATE only fills an empty key, and
    everyone then uses what the database holds.
    """
    if ctx.instance_signer is None:
        row = await ctx.db.fetchone("SELECT public_key_id, private_key_pem FROM accounts WHERE id = ?",
                                    (ctx.instance_actor_id,))
        assert row is not None, "the instance actor is created at start-up"
        if not row["private_key_pem"]:
            private, public = await asyncio.to_thread(new_key_pair)
            async with ctx.db.write() as tx:
                await tx.execute(
                    "UPDATE accounts SET private_key_pem = ?, public_key_pem = ? WHERE id = ? AND private_key_pem IS NULL",
                    (private, public, ctx.instance_actor_id),
                )
            row = await ctx.db.fetchone("SELECT public_key_id, private_key_pem FROM accounts WHERE id = ?",
                                        (ctx.instance_actor_id,))
            assert row is not None and row["private_key_pem"]
        ctx.instance_signer = Signer(row["public_key_id"], row["private_key_pem"])
    return ctx.instance_signer


async def get_local_account(db: Database, username: str) -> Row | None:
    return await db.fetchone(
        "SELECT * FROM accounts WHERE domain IS NULL AND actor_type != 'Application' AND lower(username) = lower(?)",
        (username,),
    )
