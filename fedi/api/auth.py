"""Bearer tokens and Mastodon's scope model, enforced on every endpoint.

Tokens and codes are random 256-bit strings; only their SHA-256 is stored, so a
leaked database does not leak sessions. Scopes nest the way Mastodon defines:
`read` covers `read:statuses`, `follow` covers the follow/block/mute scopes,
`admin:read` covers `admin:read:accounts`.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Literal, overload

from aiohttp import web

from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError

TOP_SCOPES = ("read", "write", "follow", "push", "profile")
GRANULAR = {
    "read": ("accounts", "blocks", "bookmarks", "favourites", "filters", "follows", "lists", "mutes",
             "notifications", "search", "statuses"),
    "write": ("accounts", "blocks", "bookmarks", "conversations", "favourites", "filters", "follows", "lists",
              "media", "mutes", "notifications", "reports", "statuses"),
    "admin:read": ("accounts", "reports", "domain_allows", "domain_blocks", "ip_blocks", "email_domain_blocks",
                   "canonical_email_blocks"),
    "admin:write": ("accounts", "reports", "domain_allows", "domain_blocks", "ip_blocks", "email_domain_blocks",
                    "canonical_email_blocks"),
}
FOLLOW_COVERS = {"read:blocks", "write:blocks", "read:follows", "write:follows", "read:mutes", "write:mutes"}


def valid_scope(scope: str) -> bool:
    if scope in TOP_SCOPES or scope in ("admin:read", "admin:write"):
        return True
    parent, _, leaf = scope.rpartition(":")
    return leaf in GRANULAR.get(parent, ())


def parse_scopes(value: str | None, default: str = "read") -> frozenset[str]:
    """Space (or plus) separated scopes; 400 invalid_scope for unknown ones."""
    scopes = frozenset((value or default).replace("+", " ").split())
    if not scopes or not all(valid_scope(s) for s in scopes):
        raise HttpError(400, "invalid_scope")
    return scopes


def covers(granted: frozenset[str], needed: str) -> bool:
    """Whether granted scopes include `needed` (e.g. `read` covers `read:statuses`)."""
    if needed in granted:
        return True
    parent, _, _ = needed.rpartition(":")
    if parent and parent in granted:
        return True
    if needed in FOLLOW_COVERS and "follow" in granted:
        return True
    return False


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Auth:
    token_id: int
    app_id: int
    scopes: frozenset[str]
    account: Row | None  # None for client_credentials tokens
    admin: bool
    approved: bool = True


@dataclass(frozen=True)
class UserAuth(Auth):
    """A token with a user behind it: what `require()` answers unless asked for `user=False`."""

    account: Row


AUTH_KEY = web.RequestKey("fedi_auth", Auth)


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("access_token") or None


async def lookup_token(ctx: Context, token: str) -> Auth | None:
    row = await ctx.db.fetchone(
        "SELECT t.id, t.app_id, t.scopes, t.account_id, u.admin, u.disabled, u.approved, a.suspended_at"
        " FROM oauth_tokens t LEFT JOIN users u ON u.account_id = t.account_id"
        " LEFT JOIN accounts a ON a.id = t.account_id"
        " WHERE t.token_hash = ? AND t.revoked_at IS NULL",
        (digest(token),),
    )
    if row is None:
        return None
    account = None
    if row["account_id"] is not None:
        if row["disabled"] or row["suspended_at"] is not None:
            return None
        account = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (row["account_id"],))
    return Auth(row["id"], row["app_id"], frozenset(row["scopes"].split()), account, bool(row["admin"]),
                row["account_id"] is None or bool(row["approved"]))


async def authenticate(request: web.Request) -> Auth | None:
    """The request's token, if any; 401 for a token that is unknown or revoked."""
    cached = request.get(AUTH_KEY)
    if cached is not None:
        return cached
    token = bearer(request)
    if token is None:
        return None
    auth = await lookup_token(request.app[CTX], token)
    if auth is None:
        raise HttpError(401, "The access token is invalid")
    request[AUTH_KEY] = auth
    return auth


@overload
async def require(request: web.Request, scope: str) -> UserAuth: ...
@overload
async def require(request: web.Request, scope: str, *, user: Literal[True]) -> UserAuth: ...
@overload
async def require(request: web.Request, scope: str, *, user: bool) -> Auth: ...


async def require(request: web.Request, scope: str, *, user: bool = True) -> Auth:
    """A token with `scope` (and a user behind it unless `user=False`), else 401/403."""
    auth = await authenticate(request)
    if auth is None:
        raise HttpError(401, "The access token is invalid")
    if not covers(auth.scopes, scope):
        raise HttpError(403, "This action is outside the authorized scopes")
    if user and auth.account is None:
        raise HttpError(422, "This method requires an authenticated user")
    if not auth.approved:
        raise HttpError(403, "Your login is currently pending approval")
    if scope.startswith("admin:") and not auth.admin:
        raise HttpError(403, "This action is not allowed")
    if auth.account is not None:
        return UserAuth(auth.token_id, auth.app_id, auth.scopes, auth.account, auth.admin, auth.approved)
    return auth


async def optional(request: web.Request, scope: str) -> Auth | None:
    """For public endpoints: a token is used if present (and must carry `scope`)."""
    auth = await authenticate(request)
    if auth is not None and not covers(auth.scopes, scope):
        raise HttpError(403, "This action is outside the authorized scopes")
    return auth


async def issue_token(
    ctx: Context, app_id: int, account_id: int | None, scopes: frozenset[str]
) -> tuple[str, str, Row]:
    """A new access token and refresh token (plain, shown once) and the stored row."""
    token, refresh = new_secret(), new_secret()
    async with ctx.db.write() as tx:
        token_id = tx.new_id()
        await tx.execute(
            "INSERT INTO oauth_tokens (id, token_hash, refresh_hash, app_id, account_id, scopes, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (token_id, digest(token), digest(refresh), app_id, account_id, " ".join(sorted(scopes)), now()),
        )
        row = await tx.fetchone("SELECT * FROM oauth_tokens WHERE id = ?", (token_id,))
    assert row is not None
    return token, refresh, row
