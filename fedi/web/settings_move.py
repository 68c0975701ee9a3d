"""Settings pages for aliases and moving: /settings/aliases and /settings/migration.

The forms post the API's field names (`also_known_as_uris`, `moved_to_uri`,
`password`) and call the same outbox.move functions; a refusal shows its reason
on the page (422) and changes nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.documents import also_known_as
from fedi.clock import iso_seconds
from fedi.context import CTX
from fedi.db import Row
from fedi.web.session import Form, Session, user_get, user_post
from fedi.web.settings import settings_page
from outbox.actions import ActionError
from outbox.move import MAX_ALIASES, move_account, set_aliases


def _aliases_page(request: web.Request, session: Session, account: Row, *, status: int = 200,
                  **extra: Any) -> web.Response:
    aliases = also_known_as(account)
    return settings_page(request, session, "settings/aliases.html", {
        "title": "Aliases", "aliases": aliases, "slots": aliases + [""] * (MAX_ALIASES - len(aliases)),
        "max_aliases": MAX_ALIASES, **extra,
    }, status=status)


@user_get
async def aliases(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/aliases"""
    return _aliases_page(request, session, session.account)


@user_post
async def aliases_submit(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /settings/aliases: the whole list at once; empty fields are dropped, all empty clears it."""
    refs = [v for v in form.getall("also_known_as_uris", []) if isinstance(v, str)]
    try:
        account = await set_aliases(request.app[CTX], session.account, refs)
    except ActionError as exc:
        return _aliases_page(request, session, session.account, status=exc.status, error=str(exc))
    return _aliases_page(request, session, account, notice="Aliases saved.")


async def _migration_page(request: web.Request, session: Session, account: Row, *, status: int = 200,
                          **extra: Any) -> web.Response:
    ctx = request.app[CTX]
    target = None
    if account["moved_to_account_id"] is not None:
        target = await ctx.db.fetchone("SELECT uri, url FROM accounts WHERE id = ?", (account["moved_to_account_id"],))
    return settings_page(request, session, "settings/migration.html", {
        "title": "Move", "moved_to_uri": account["moved_to_uri"], "target": target, "uri": account["uri"],
        "moved_at": iso_seconds(account["moved_at"]) if account["moved_at"] else None,
        "cooldown_days": ctx.config.accounts.move_cooldown_days, **extra,
    }, status=status)


@user_get
async def migration(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/migration"""
    return await _migration_page(request, session, session.account)


@user_post
async def migration_submit(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /settings/migration: move this account (password asked again)."""
    target, password = form.get("moved_to_uri"), form.get("password")
    target = target if isinstance(target, str) else ""
    try:
        account = await move_account(request.app[CTX], session.account, target,
                                     password if isinstance(password, str) else "")
    except ActionError as exc:
        return await _migration_page(request, session, session.account, status=exc.status, error=str(exc),
                                     entered=target[:2000])
    return await _migration_page(request, session, account, notice="Moved. Your followers are being moved.")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/settings/aliases", aliases)
    r.add_post("/settings/aliases", aliases_submit)
    r.add_get("/settings/migration", migration)
    r.add_post("/settings/migration", migration_submit)
