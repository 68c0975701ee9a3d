"""Browser sessions for the admin and settings pages: sign-in, the session cookie, CSRF tokens, sign-out.

A session is an OAuth token of an internal app, "fedi web" (its id kept in
`settings`, never looked up by name: anyone can register an app of that name).
So only the token's SHA-256 is stored, sessions survive restarts, and revocation,
disabled logins and suspensions end them exactly as they end API tokens
(`fedi.api.auth.lookup_token`). A session also ends `MAX_AGE` seconds after
sign-in, or after `IDLE` seconds without use.

The cookie is HttpOnly, SameSite=Lax and Secure on https instances. Every POST
carries a CSRF token derived from the session token (HMAC), so a page on another
site cannot make an admin's browser change anything; the sign-in form has its own
double-submit token against login CSRF. Sign-in shares the authorize page's rate
limits and dummy-hash timing (`fedi.api.oauth.check_login`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict, MultiDictProxy

from fedi.api.auth import issue_token, lookup_token
from fedi.api.oauth import check_login
from fedi.api.ratelimit import RATE_LIMITER
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.web.render import render

COOKIE = "fedi_session"
LOGIN_COOKIE = "fedi_login"
APP_SETTING = "web_session_app_id"
APP_NAME = "fedi web"
SCOPES = frozenset({"read", "write", "follow", "admin:read", "admin:write"})
MAX_AGE = 7 * 86400
IDLE = 86400
#: last_used_at is written at most this often per session (a page view is not a write).
TOUCH_SECONDS = 300
FORM_BYTES = 1_048_576
NO_STORE = {"Cache-Control": "no-store"}

Form = MultiDictProxy[Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
GetHandler = Callable[[web.Request, "Session"], Awaitable[web.StreamResponse]]
PostHandler = Callable[[web.Request, "Session", Form], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Session:
    token_id: int
    account: Row
    admin: bool
    csrf: str


class Stop(Exception):
    """Ends a page handler with this response: a redirect to sign in, or a 403/404 page (the error
    middleware would replace the page with a generic one)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


def not_found(request: web.Request, session: Session, message: str) -> Stop:
    return Stop(message_page(request, session, 404, "Not found", message))


def csrf_token(session_token: str) -> str:
    return hmac.new(session_token.encode(), b"fedi admin csrf", hashlib.sha256).hexdigest()


def base_context(ctx: Context, title: str) -> dict[str, Any]:
    return {"instance": ctx.config.instance, "base_url": ctx.base_url, "title": title}


def page(request: web.Request, session: Session | None, template: str, context: dict[str, Any], *,
         status: int = 200) -> web.Response:
    """An admin page: the template with the instance, the signed-in admin and the CSRF token."""
    ctx = request.app[CTX]
    full = {**base_context(ctx, context.get("title", "Administration")), "me": session.account if session else None,
            "csrf": session.csrf if session else "", "path": request.path, **context}
    return render(template, full, status=status, headers=NO_STORE)


def message_page(request: web.Request, session: Session | None, status: int, title: str, message: str) -> web.Response:
    return page(request, session, "admin/message.html", {"title": title, "message": message}, status=status)


async def web_app_id(ctx: Context, *, create: bool = True) -> int | None:
    """The internal app that owns session tokens, created on the first sign-in (None before, unless `create`)."""
    query = "SELECT value FROM settings WHERE key = ?"
    value = await ctx.db.fetchval(query, (APP_SETTING,))
    if value is not None or not create:
        return int(value) if value is not None else None
    async with ctx.db.write() as tx:
        row = await tx.fetchone(query, (APP_SETTING,))
        if row is not None:
            return int(row[0])
        app_id = tx.new_id()
        await tx.execute(
            "INSERT INTO oauth_apps (id, client_id, client_secret, name, website, redirect_uris, scopes, created_at)"
            " VALUES (?, ?, ?, ?, NULL, ?, ?, ?)",
            (app_id, secrets.token_urlsafe(32), secrets.token_urlsafe(32), APP_NAME, "urn:ietf:wg:oauth:2.0:oob",
             " ".join(sorted(SCOPES)), now()),
        )
        await tx.execute("INSERT INTO settings (key, value) VALUES (?, ?)", (APP_SETTING, str(app_id)))
    return app_id


async def current_session(request: web.Request) -> Session | None:
    """The signed-in session of this request, or None (no cookie, unknown, revoked, expired, or not ours)."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 100:
        return None
    ctx = request.app[CTX]
    auth = await lookup_token(ctx, token)
    if auth is None or auth.account is None or not auth.approved or auth.app_id != await web_app_id(ctx, create=False):
        return None
    row = await ctx.db.fetchrow("SELECT created_at, last_used_at FROM oauth_tokens WHERE id = ?", (auth.token_id,))
    at = now()
    last = row["last_used_at"] or row["created_at"]
    if at - row["created_at"] > MAX_AGE or at - last > IDLE:
        await revoke(ctx, auth.token_id)
        return None
    if at - last > TOUCH_SECONDS:
        async with ctx.db.write() as tx:
            await tx.execute("UPDATE oauth_tokens SET last_used_at = ? WHERE id = ?", (at, auth.token_id))
    return Session(auth.token_id, auth.account, auth.admin, csrf_token(token))


async def revoke(ctx: Context, token_id: int) -> None:
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE oauth_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now(), token_id))
        tx.publish("token.revoked", token_id=token_id)


def _secure(request: web.Request) -> bool:
    return request.app[CTX].config.instance.scheme == "https"


def _safe_next(value: str | None) -> str:
    """Only a path under /admin, /settings or the remote-interaction page (never another site: no `//` in
    the path, no backslash anywhere); the query may hold a URL (`?uri=https://…`)."""
    if (value and value.startswith(("/admin", "/settings", "/authorize_interaction"))
            and "//" not in value.partition("?")[0]
            and "\\" not in value and len(value) < 2000):
        return value
    return "/admin"


def see_other(location: str) -> web.Response:
    """A 303 to a path of ours (after a POST, the browser GETs it)."""
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


def login_redirect(request: web.Request) -> web.Response:
    target = request.path_qs if request.method == "GET" else ("/settings" if request.path.startswith("/settings") else "/admin")
    return see_other("/admin/login?" + urlencode({"next": target}))


async def _user_session_or_stop(request: web.Request) -> Session:
    session = await current_session(request)
    if session is None:
        raise Stop(login_redirect(request))
    return session


async def _session_or_stop(request: web.Request) -> Session:
    session = await _user_session_or_stop(request)
    if not session.admin:
        raise Stop(message_page(request, session, 403, "Forbidden",
                                "These pages are for the administrators of this instance."))
    return session


def stops(handler: Handler) -> Handler:
    """Let `handler` end with `raise Stop(response)`."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Stop as stop:
            return stop.response

    return wrapped


def admin_get(handler: GetHandler) -> Handler:
    """A GET page for admins: signed-out visitors go to the sign-in page, other users get a 403 page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await handler(request, await _session_or_stop(request))

    return stops(wrapped)


def user_get(handler: GetHandler) -> Handler:
    """A GET page for any signed-in user (the settings pages); signed-out visitors go to the sign-in page."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        return await handler(request, await _user_session_or_stop(request))

    return stops(wrapped)


def user_post(handler: PostHandler, max_bytes: int = FORM_BYTES) -> Handler:
    """A form POST for any signed-in user, only with the session's CSRF token."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await _user_session_or_stop(request)
        return await handler(request, session, await checked_form(request, session, max_bytes))

    return stops(wrapped)


async def read_form(request: web.Request, max_bytes: int) -> Form:
    """The submitted form (empty for other bodies); a malformed one is a 400 page."""
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return MultiDictProxy(MultiDict())
    try:
        return await request.clone(client_max_size=max_bytes).post()
    except (ValueError, HttpProcessingError):
        raise Stop(message_page(request, None, 400, "Bad request", "The form could not be read.")) from None


async def checked_form(request: web.Request, session: Session, max_bytes: int = FORM_BYTES) -> Form:
    """The form, if it carries this session's CSRF token; otherwise a 403 page and nothing changes."""
    form = await read_form(request, max_bytes)
    given = form.get("csrf")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise Stop(message_page(request, session, 403, "Form expired",
                                "The form did not carry this session's token, so nothing was changed. "
                                "Go back, reload the page and try again."))
    return form


def admin_post(handler: PostHandler, max_bytes: int = FORM_BYTES) -> Handler:
    """A form POST for admins: as `admin_get`, and only with the session's CSRF token."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        session = await _session_or_stop(request)
        return await handler(request, session, await checked_form(request, session, max_bytes))

    return stops(wrapped)


def _login_page(request: web.Request, token: str, error: str | None, next_path: str, status: int = 200) -> web.Response:
    response = page(request, None, "admin/login.html", {"title": "Sign in", "login_token": token, "error": error,
                                                        "next": next_path}, status=status)
    response.set_cookie(LOGIN_COOKIE, token, path="/admin/login", httponly=True, samesite="Strict",
                        secure=_secure(request), max_age=3600)
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /admin/login"""
    next_path = _safe_next(request.query.get("next"))
    if await current_session(request) is not None:
        return see_other(next_path)
    response = _login_page(request, secrets.token_urlsafe(24), None, next_path)
    if COOKIE in request.cookies:
        response.del_cookie(COOKIE, path="/")  # expired or revoked: the browser may forget it
    return response


def _rate_limited(request: web.Request, login: str) -> bool:
    """Count a sign-in against the same limits as the authorize form (per address and per login name)."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return False
    at, limits = now(), limiter.limits
    hits = [limiter.hit("login_ip", limits.login_ip, f"ip:{limiter.client_ip(request)}", at)]
    if login:
        hits.append(limiter.hit("login_name", limits.login_name, f"name:{login.strip().lower()[:320]}", at))
    return any(h.count > h.rule.limit for h in hits)


async def login_submit(request: web.Request) -> web.StreamResponse:
    """POST /admin/login: check the password; on success a new session cookie and a redirect."""
    ctx = request.app[CTX]
    form = await read_form(request, FORM_BYTES)
    next_path = _safe_next(form.get("next"))
    expected, given = request.cookies.get(LOGIN_COOKIE, ""), form.get("login_token")
    if not expected or not isinstance(given, str) or not hmac.compare_digest(given.encode(), expected.encode()):
        return _login_page(request, secrets.token_urlsafe(24), "The sign-in form expired; please try again.",
                           next_path, status=403)
    login, password = form.get("username"), form.get("password")
    login = login[:500] if isinstance(login, str) else ""
    password = password[:1024] if isinstance(password, str) else ""
    if _rate_limited(request, login):
        return _login_page(request, expected, "Too many sign-in attempts; wait a few minutes.", next_path, status=429)
    account = await check_login(ctx, login, password)
    if account is None:
        return _login_page(request, expected, "Invalid username or password.", next_path, status=401)
    app_id = await web_app_id(ctx)
    assert app_id is not None
    token, _, _ = await issue_token(ctx, app_id, account["id"], SCOPES)
    response = see_other(next_path)
    response.set_cookie(COOKIE, token, path="/", httponly=True, samesite="Lax", secure=_secure(request), max_age=MAX_AGE)
    response.del_cookie(LOGIN_COOKIE, path="/admin/login")
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /admin/logout (any signed-in user, with the CSRF token): the session is revoked."""
    session = await current_session(request)
    if session is None:
        return see_other("/admin/login")
    await checked_form(request, session)
    await revoke(request.app[CTX], session.token_id)
    response = see_other("/admin/login")
    response.del_cookie(COOKIE, path="/")
    return response


def setup(app: web.Application) -> None:
    app.router.add_get("/admin/login", login_form)
    app.router.add_post("/admin/login", stops(login_submit))
    app.router.add_post("/admin/logout", stops(logout))
