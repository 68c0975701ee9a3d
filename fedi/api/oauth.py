"""OAuth 2 as Mastodon does it: apps, the authorize page, tokens, revocation.

Redirect URIs match exactly (RFC 6749 §10.6, THREATS O1); codes are single-use,
bound to their client and redirect URI, and expire in ten minutes; PKCE accepts
S256 only (O2). The sign-in page answers the same for an unknown user and a
wrong password, and hashes a dummy password on a miss so timing matches (O6, O7).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from actors.passwords import check_password, hash_password
from fedi.api.auth import GRANULAR, authenticate, digest, issue_token, new_secret, parse_scopes
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.web.render import render

OOB = "urn:ietf:wg:oauth:2.0:oob"
CODE_SECONDS = 600
#: The authorize page must be able to redirect to custom schemes, so no form-action CSP.
AUTHORIZE_CSP = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"}
_DUMMY_HASH: list[str] = []


def _valid_redirect(uri: str) -> bool:
    if uri == OOB:
        return True
    if len(uri) > 2000 or any(c.isspace() for c in uri):
        return False
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or parts.scheme.lower() in ("javascript", "data", "file", "vbscript"):
        return False
    if parts.scheme in ("http", "https"):
        return bool(parts.netloc) and "@" not in parts.netloc
    return True


def _app_entity(app: Row, with_secret: bool) -> dict[str, Any]:
    uris = app["redirect_uris"].split("\n")
    entity: dict[str, Any] = {
        "id": str(app["id"]),
        "name": app["name"],
        "website": app["website"],
        "scopes": app["scopes"].split(),
        "redirect_uri": app["redirect_uris"],
        "redirect_uris": uris,
        "vapid_key": "",
    }
    if with_secret:
        entity.update(client_id=app["client_id"], client_secret=app["client_secret"], client_secret_expires_at=0)
    return entity


async def create_app(request: web.Request) -> web.Response:
    """POST /api/v1/apps"""
    ctx = request.app[CTX]
    params = await read_params(request)
    name = (params.str("client_name", max_length=200) or "").strip()
    if not name:
        raise HttpError(422, "Validation failed: Application name can't be blank")
    raw = params.get("redirect_uris")
    uris = [u for u in (raw if isinstance(raw, list) else str(raw or "").split()) if isinstance(u, str) and u]
    if not uris or len(uris) > 10 or not all(_valid_redirect(u) for u in uris):
        raise HttpError(422, "Validation failed: Redirect URI must be an absolute URI")
    scopes = parse_scopes(params.str("scopes", max_length=1000))
    website = params.str("website", max_length=1000) or None
    async with ctx.db.write() as tx:
        app_id = tx.new_id()
        await tx.execute(
            "INSERT INTO oauth_apps (id, client_id, client_secret, name, website, redirect_uris, scopes, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (app_id, new_secret(), new_secret(), name, website, "\n".join(uris), " ".join(sorted(scopes)), now()),
        )
        app = await tx.fetchone("SELECT * FROM oauth_apps WHERE id = ?", (app_id,))
    assert app is not None
    return json_response(_app_entity(app, with_secret=True))


async def verify_app(request: web.Request) -> web.Response:
    """GET /api/v1/apps/verify_credentials"""
    auth = await authenticate(request)
    if auth is None:
        raise HttpError(401, "The access token is invalid")
    app = await request.app[CTX].db.fetchone("SELECT * FROM oauth_apps WHERE id = ?", (auth.app_id,))
    assert app is not None
    return json_response(_app_entity(app, with_secret=False))


async def _client(ctx: Context, client_id: str | None) -> Row:
    app = await ctx.db.fetchone("SELECT * FROM oauth_apps WHERE client_id = ?", (client_id or "",))
    if app is None:
        raise HttpError(401, "invalid_client")
    return app


def _page_error(message: str) -> web.Response:
    return web.Response(status=400, content_type="text/html",
                        text="<!doctype html><meta charset=utf-8><title>Authorization error</title>"
                             f"<h1>Authorization error</h1><p>{message}</p>")


async def _authorize_request(ctx: Context, params: Params) -> tuple[Row, str, frozenset[str], str | None]:
    """Validate the authorize parameters; anything wrong is a 400 page, never a redirect (O1)."""
    app = await ctx.db.fetchone("SELECT * FROM oauth_apps WHERE client_id = ?", (params.str("client_id") or "",))
    if app is None:
        raise HttpError(400, "unknown client_id")
    redirect = params.str("redirect_uri") or ""
    if redirect not in app["redirect_uris"].split("\n"):
        raise HttpError(400, "redirect_uri does not match a registered one")
    if (params.str("response_type") or "code") != "code":
        raise HttpError(400, "unsupported response_type")
    scopes = parse_scopes(params.str("scope") or params.str("scopes"), default=app["scopes"])
    if not scopes <= frozenset(app["scopes"].split()):
        raise HttpError(400, "invalid_scope: the app did not register these scopes")
    challenge = params.str("code_challenge")
    method = params.str("code_challenge_method")
    if challenge is not None or method is not None:
        if method != "S256" or not challenge or not 43 <= len(challenge) <= 128:
            raise HttpError(400, "invalid_request: only PKCE S256 is supported")
    return app, redirect, scopes, challenge


def _form_fields(params: Params) -> dict[str, str]:
    keys = ("client_id", "redirect_uri", "scope", "state", "code_challenge", "code_challenge_method", "response_type")
    return {k: v for k in keys if (v := params.str(k, max_length=2000)) is not None}


async def authorize_page(request: web.Request) -> web.Response:
    """GET /oauth/authorize: sign in and consent in one form."""
    ctx = request.app[CTX]
    params = await read_params(request)
    try:
        app, _, scopes, _ = await _authorize_request(ctx, params)
    except HttpError as exc:
        return _page_error(exc.message)
    return render("authorize.html", {
        "instance": ctx.config.instance, "base_url": ctx.base_url, "app": app, "scopes": sorted(scopes),
        "fields": _form_fields(params), "error": None, "title": f"Authorize {app['name']}",
    }, headers=AUTHORIZE_CSP)


async def check_login(ctx: Context, login: str, password: str) -> Row | None:
    """The account for a username or e-mail and password; same work whether or not it exists."""
    user = await ctx.db.fetchone(
        "SELECT u.*, a.suspended_at FROM users u JOIN accounts a ON a.id = u.account_id"
        " WHERE a.domain IS NULL AND (lower(a.username) = lower(?) OR lower(u.email) = lower(?))",
        (login, login),
    )
    if user is None:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not a real password"))
        check_password(password, _DUMMY_HASH[0])
        return None
    if not check_password(password, user["password_hash"]):
        return None
    if user["disabled"] or not user["approved"] or user["suspended_at"] is not None:
        return None
    return await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (user["account_id"],))


def _redirect_with(uri: str, values: dict[str, str]) -> web.Response:
    sep = "&" if "?" in uri else "?"
    return web.Response(status=302, headers={"Location": f"{uri}{sep}{urlencode(values)}"})


async def authorize_submit(request: web.Request) -> web.Response:
    """POST /oauth/authorize: check the password, then redirect with a code (or show it for oob)."""
    ctx = request.app[CTX]
    params = await read_params(request)
    try:
        app, redirect, scopes, challenge = await _authorize_request(ctx, params)
    except HttpError as exc:
        return _page_error(exc.message)
    state = params.str("state", max_length=2000)
    if params.str("decision") == "deny":
        extra = {"state": state} if state else {}
        return _redirect_with(redirect, {"error": "access_denied", **extra}) if redirect != OOB else _page_error("access denied")
    account = await check_login(ctx, params.str("username", max_length=500) or "", params.str("password", max_length=1024) or "")
    if account is None:
        return render("authorize.html", {
            "instance": ctx.config.instance, "base_url": ctx.base_url, "app": app, "scopes": sorted(scopes),
            "fields": _form_fields(params), "error": "Invalid username or password.", "title": f"Authorize {app['name']}",
        }, status=401, headers=AUTHORIZE_CSP)
    code = new_secret()
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO oauth_codes (code_hash, app_id, account_id, redirect_uri, scopes, code_challenge, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (digest(code), app["id"], account["id"], redirect, " ".join(sorted(scopes)), challenge, now() + CODE_SECONDS),
        )
    if redirect == OOB:
        return render("authorize_code.html", {
            "instance": ctx.config.instance, "base_url": ctx.base_url, "code": code, "app": app, "title": "Authorization code",
        }, headers=AUTHORIZE_CSP)
    values = {"code": code}
    if state:
        values["state"] = state
    return _redirect_with(redirect, values)


def _grant_error(error: str, description: str, status: int = 400) -> HttpError:
    return HttpError(status, error, extra={"error_description": description})


def _client_credentials(request: web.Request, params: Params) -> tuple[str | None, str | None]:
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        try:
            client_id, _, secret = base64.b64decode(header[6:]).decode().partition(":")
            return client_id, secret
        except (ValueError, UnicodeDecodeError):
            raise _grant_error("invalid_client", "malformed Basic credentials", 401) from None
    return params.str("client_id", max_length=200), params.str("client_secret", max_length=200)


async def _token_response(ctx: Context, app: Row, account_id: int | None, scopes: frozenset[str]) -> web.Response:
    token, refresh, row = await issue_token(ctx, app["id"], account_id, scopes)
    body = {"access_token": token, "token_type": "Bearer", "scope": " ".join(sorted(scopes)),
            "created_at": int(row["created_at"])}
    if account_id is not None:
        body["refresh_token"] = refresh
    return json_response(body, headers={"Cache-Control": "no-store"})


async def token(request: web.Request) -> web.Response:
    """POST /oauth/token: authorization_code, client_credentials, refresh_token, password (if enabled)."""
    ctx = request.app[CTX]
    params = await read_params(request)
    client_id, secret = _client_credentials(request, params)
    app = await ctx.db.fetchone("SELECT * FROM oauth_apps WHERE client_id = ?", (client_id or "",))
    grant = params.str("grant_type")
    if app is None or (secret is not None and not hmac.compare_digest(secret, app["client_secret"])):
        raise _grant_error("invalid_client", "client authentication failed", 401)
    if secret is None and grant != "authorization_code":
        raise _grant_error("invalid_client", "client authentication failed", 401)
    app_scopes = frozenset(app["scopes"].split())
    if grant == "authorization_code":
        code = params.str("code", max_length=200) or ""
        async with ctx.db.write() as tx:
            row = await tx.fetchone("SELECT * FROM oauth_codes WHERE code_hash = ?", (digest(code),))
            if row is not None:
                await tx.execute("UPDATE oauth_codes SET used_at = ? WHERE code_hash = ?", (now(), digest(code)))
        if row is None or row["used_at"] is not None or row["expires_at"] < now() or row["app_id"] != app["id"]:
            raise _grant_error("invalid_grant", "the code is unknown, used, expired or not this client's")
        if (params.str("redirect_uri") or "") != row["redirect_uri"]:
            raise _grant_error("invalid_grant", "redirect_uri does not match")
        if row["code_challenge"]:
            verifier = params.str("code_verifier", max_length=200) or ""
            expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not verifier or not hmac.compare_digest(expected, row["code_challenge"]):
                raise _grant_error("invalid_grant", "PKCE verification failed")
        elif secret is None:
            raise _grant_error("invalid_client", "client authentication failed", 401)
        return await _token_response(ctx, app, row["account_id"], frozenset(row["scopes"].split()))
    requested = parse_scopes(params.str("scope") or params.str("scopes"), default=app["scopes"])
    if not requested <= app_scopes:
        raise _grant_error("invalid_scope", "the app did not register these scopes")
    if grant == "client_credentials":
        return await _token_response(ctx, app, None, requested)
    if grant == "refresh_token":
        refresh = params.str("refresh_token", max_length=200) or ""
        async with ctx.db.write() as tx:
            row = await tx.fetchone(
                "SELECT * FROM oauth_tokens WHERE refresh_hash = ? AND app_id = ? AND revoked_at IS NULL",
                (digest(refresh), app["id"]),
            )
            if row is not None:
                await tx.execute("UPDATE oauth_tokens SET revoked_at = ? WHERE id = ?", (now(), row["id"]))
        if row is None:
            raise _grant_error("invalid_grant", "unknown refresh token")
        ctx.events.publish("token.revoked", token_id=row["id"])
        return await _token_response(ctx, app, row["account_id"], frozenset(row["scopes"].split()) & requested)
    if grant == "password":
        if not ctx.config.oauth.password_grant:
            raise _grant_error("unsupported_grant_type", "the password grant is disabled on this instance")
        account = await check_login(ctx, params.str("username", max_length=500) or "", params.str("password", max_length=1024) or "")
        if account is None:
            raise _grant_error("invalid_grant", "invalid username or password")
        return await _token_response(ctx, app, account["id"], requested)
    raise _grant_error("unsupported_grant_type", "unknown grant_type")


async def revoke(request: web.Request) -> web.Response:
    """POST /oauth/revoke: the token stops working and its streaming connections close."""
    ctx = request.app[CTX]
    params = await read_params(request)
    client_id, secret = _client_credentials(request, params)
    app = await _client(ctx, client_id)
    if secret is None or not hmac.compare_digest(secret, app["client_secret"]):
        raise _grant_error("invalid_client", "client authentication failed", 401)
    value = params.str("token", max_length=200) or ""
    async with ctx.db.write() as tx:
        row = await tx.fetchone(
            "SELECT id FROM oauth_tokens WHERE (token_hash = ? OR refresh_hash = ?) AND app_id = ? AND revoked_at IS NULL",
            (digest(value), digest(value), app["id"]),
        )
        if row is not None:
            await tx.execute("UPDATE oauth_tokens SET revoked_at = ? WHERE id = ?", (now(), row["id"]))
            tx.publish("token.revoked", token_id=row["id"])
    return json_response({})


async def server_metadata(request: web.Request) -> web.Response:
    """GET /.well-known/oauth-authorization-server (RFC 8414)."""
    base = request.app[CTX].base_url
    scopes = ["read", "write", "follow", "push", "profile", "admin:read", "admin:write"]
    scopes += [f"{parent}:{leaf}" for parent, leaves in GRANULAR.items() for leaf in leaves]
    return json_response({
        "issuer": base + "/",
        "service_documentation": "https://docs.joinmastodon.org/",
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "app_registration_endpoint": f"{base}/api/v1/apps",
        "scopes_supported": scopes,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query", "fragment", "form_post"],
        "code_challenge_methods_supported": ["S256"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"]
        + (["password"] if request.app[CTX].config.oauth.password_grant else []),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    })


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/apps", create_app)
    r.add_get("/api/v1/apps/verify_credentials", verify_app)
    r.add_get("/oauth/authorize", authorize_page)
    r.add_get("/oauth/authorize/", authorize_page)  # toot's browser login adds the slash (Rails ignores it)
    r.add_post("/oauth/authorize", authorize_submit)
    r.add_post("/oauth/token", token)
    r.add_post("/oauth/revoke", revoke)
    r.add_get("/.well-known/oauth-authorization-server", server_metadata)
