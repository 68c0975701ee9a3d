"""Sign-up through the API (POST /api/v1/accounts), as Mastodon apps drive it.

`[instance] registrations` decides: "closed" refuses, "approval" creates the
account unapproved (the token is answered but signs nothing in until an admin
approves), "open" answers a token that works at once. Validation errors come in
Mastodon's shape, every problem at once, so apps can mark each form field.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from actors.local import USERNAME_RE, AccountError, create_local_account
from fedi.api.auth import issue_token, require
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.context import CTX, Context
from fedi.errors import HttpError

RESERVED = frozenset({"admin", "administrator", "root", "support", "help", "webmaster", "mod", "moderator",
                      "postmaster", "hostmaster", "abuse", "security", "actor", "instance", "system"})
MAX_USERNAME = 30
MIN_PASSWORD, MAX_PASSWORD = 8, 72
MAX_EMAIL = 254
MAX_REASON = 420
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z]{2,63}$"
)
LOCALE_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")
#: The description Mastodon pairs with each error code.
DESCRIPTIONS = {
    "ERR_BLANK": "can't be blank",
    "ERR_INVALID": "is invalid",
    "ERR_TAKEN": "is already taken",
    "ERR_RESERVED": "is reserved",
    "ERR_ACCEPTED": "must be accepted",
    "ERR_INCLUSION": "is not included in the list",
}


class Problems:
    """Collected validation errors, rendered as Mastodon's 422 body."""

    def __init__(self) -> None:
        self.details: dict[str, list[dict[str, str]]] = {}

    def add(self, name: str, code: str, description: str | None = None) -> None:
        self.details.setdefault(name, []).append({"error": code, "description": description or DESCRIPTIONS[code]})

    def error(self) -> HttpError:
        summary = ", ".join(f"{name.capitalize()} {e['description']}" for name, errors in self.details.items()
                            for e in errors)
        return HttpError(422, f"Validation failed: {summary}", extra={"details": self.details})


def _text(params: Params, name: str, limit: int, problems: Problems) -> str:
    """A string parameter; too long or not a string is a detail, not an early exit."""
    value = params.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        problems.add(name, "ERR_INVALID")
        return ""
    if len(value) > limit:
        problems.add(name, "ERR_TOO_LONG", f"is too long (maximum is {limit} characters)")
        return ""
    return value


async def _check(ctx: Context, params: Params) -> tuple[str, str, str, str | None, str | None]:
    """(username, email, password, locale, reason), or 422 listing every problem."""
    problems = Problems()
    username = _text(params, "username", MAX_USERNAME, problems).strip()
    email = _text(params, "email", MAX_EMAIL, problems).strip()
    password = _text(params, "password", MAX_PASSWORD, problems)
    locale = _text(params, "locale", 16, problems).strip() or None
    reason = _text(params, "reason", MAX_REASON, problems).strip() or None
    if "username" not in problems.details:
        if not username:
            problems.add("username", "ERR_BLANK")
        elif not USERNAME_RE.match(username):
            problems.add("username", "ERR_INVALID", "must contain only letters, numbers and underscores")
        elif username.lower() in RESERVED or username.lower() == ctx.domain.lower():
            problems.add("username", "ERR_RESERVED")
        elif await ctx.db.fetchone("SELECT 1 FROM accounts WHERE domain IS NULL AND lower(username) = lower(?)", (username,)):
            problems.add("username", "ERR_TAKEN")
    if "email" not in problems.details:
        if not email:
            problems.add("email", "ERR_BLANK")
        elif not EMAIL_RE.match(email):
            problems.add("email", "ERR_INVALID")
        elif await ctx.db.fetchone("SELECT 1 FROM users WHERE lower(email) = lower(?)", (email,)):
            problems.add("email", "ERR_TAKEN")
    if "password" not in problems.details:
        if not password:
            problems.add("password", "ERR_BLANK")
        elif len(password) < MIN_PASSWORD:
            problems.add("password", "ERR_TOO_SHORT", f"is too short (minimum is {MIN_PASSWORD} characters)")
    try:
        agreed = params.bool("agreement")
    except HttpError:
        agreed = False
    if not agreed:
        problems.add("agreement", "ERR_ACCEPTED")
    if locale is not None and not LOCALE_RE.match(locale):
        problems.add("locale", "ERR_INCLUSION")
    if problems.details:
        raise problems.error()
    return username, email, password, locale, reason


async def register(request: web.Request) -> web.Response:
    """POST /api/v1/accounts: an app token with write:accounts creates a user and gets its token."""
    auth = await require(request, "write:accounts", user=False)
    ctx = request.app[CTX]
    mode = ctx.config.instance.registrations
    if mode == "closed":
        raise HttpError(403, "Registrations are closed on this server")
    username, email, password, locale, reason = await _check(ctx, await read_params(request))
    try:
        account_id = await create_local_account(
            ctx.db, ctx.base_url, username, password, email=email, approved=mode == "open", locale=locale, reason=reason
        )
    except AccountError as exc:  # someone took the name or address since the check
        problems = Problems()
        problems.add("email" if "e-mail" in str(exc) else "username", "ERR_TAKEN")
        raise problems.error() from None
    app = await ctx.db.fetchone("SELECT scopes FROM oauth_apps WHERE id = ?", (auth.app_id,))
    scopes = frozenset((app["scopes"] if app else "read").split())
    token, _, row = await issue_token(ctx, auth.app_id, account_id, scopes)
    body: dict[str, Any] = {"access_token": token, "token_type": "Bearer", "scope": " ".join(sorted(scopes)),
                            "created_at": int(row["created_at"])}
    return json_response(body, headers={"Cache-Control": "no-store"})


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/accounts", register)
