"""OAuth as Mastodon apps use it, and the ways it must refuse (THREATS O1–O3, O6)."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from actors.local import create_local_account
from tests.api_client import REDIRECT, authorize, bearer, register_app, user_token
from tests.harness import Instance, Network


async def _post(inst: Instance, path: str, data: dict[str, Any], **kw: Any) -> tuple[int, Any]:
    assert inst.session is not None
    async with inst.session.post(inst.url(path), data=data, **kw) as resp:
        body = await resp.json(content_type=None) if resp.content_type.endswith("json") else await resp.text()
        return resp.status, body


async def _token_count(inst: Instance) -> int:
    return int(await inst.ctx.db.fetchval("SELECT count(*) FROM oauth_tokens"))


async def test_authorization_code_flow_and_verify(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/api/v1/accounts/verify_credentials"), headers=bearer(token)) as resp:
        assert resp.status == 200
        assert (await resp.json())["username"] == "alice"
    async with alpha.session.get(alpha.url("/api/v1/apps/verify_credentials"), headers=bearer(token)) as resp:
        app = await resp.json()
        assert app["name"] == "test app" and "client_secret" not in app


async def test_authorize_page_renders_form(network: Network) -> None:
    alpha = await network.add("alpha.test")
    app = await register_app(alpha)
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/oauth/authorize"), params={
        "client_id": app["client_id"], "redirect_uri": REDIRECT, "response_type": "code", "scope": "read",
    }) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert 'name="password"' in page and app["client_id"] in page


@pytest.mark.parametrize("redirect", [
    "https://app.example/callback/evil", "https://app.example/", "https://app.example/callbackx",
    "https://evil@app.example/callback", "https://app.example/%63allback", "https://attacker.example/callback",
])
async def test_unregistered_redirect_uri_is_refused_without_redirect(network: Network, redirect: str) -> None:
    alpha = await network.add("alpha.test")
    app = await register_app(alpha)
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    status, body = await _post(alpha, "/oauth/authorize", {
        "client_id": app["client_id"], "redirect_uri": redirect, "response_type": "code", "scope": "read",
        "username": "alice", "password": "password123", "decision": "allow",
    }, allow_redirects=False)
    assert status == 400
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM oauth_codes") == 0


async def test_codes_are_single_use_and_bound_to_client(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    app, other = await register_app(alpha), await register_app(alpha)
    code = await authorize(alpha, app, "alice", "password123", "read")
    # another client's credentials with this code
    status, body = await _post(alpha, "/oauth/token", {
        "grant_type": "authorization_code", "code": code, "client_id": other["client_id"],
        "client_secret": other["client_secret"], "redirect_uri": REDIRECT,
    })
    assert status == 400 and body["error"] == "invalid_grant"
    # the code was burned by that attempt, as RFC 6749 §4.1.2 allows; a fresh one works once
    code = await authorize(alpha, app, "alice", "password123", "read")
    good = {"grant_type": "authorization_code", "code": code, "client_id": app["client_id"],
            "client_secret": app["client_secret"], "redirect_uri": REDIRECT}
    assert (await _post(alpha, "/oauth/token", good))[0] == 200
    status, body = await _post(alpha, "/oauth/token", good)
    assert status == 400 and body["error"] == "invalid_grant"
    status, body = await _post(alpha, "/oauth/token", {**good, "code": "unknown"})
    assert status == 400 and body["error"] == "invalid_grant"
    assert await _token_count(alpha) == 1


async def test_pkce_s256_only(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    app = await register_app(alpha)
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    form = {"client_id": app["client_id"], "redirect_uri": REDIRECT, "response_type": "code", "scope": "read",
            "username": "alice", "password": "password123", "decision": "allow"}
    status, _ = await _post(alpha, "/oauth/authorize", {**form, "code_challenge": verifier,
                                                        "code_challenge_method": "plain"}, allow_redirects=False)
    assert status == 400
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/oauth/authorize"), data={
        **form, "code_challenge": challenge, "code_challenge_method": "S256"}, allow_redirects=False) as resp:
        code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
    base = {"grant_type": "authorization_code", "code": code, "client_id": app["client_id"], "redirect_uri": REDIRECT}
    status, body = await _post(alpha, "/oauth/token", {**base, "code_verifier": "wrong" * 10})
    assert status == 400 and body["error"] == "invalid_grant"
    async with alpha.session.post(alpha.url("/oauth/authorize"), data={
        **form, "code_challenge": challenge, "code_challenge_method": "S256"}, allow_redirects=False) as resp:
        code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
    status, body = await _post(alpha, "/oauth/token", {**base, "code": code, "code_verifier": verifier})
    assert status == 200 and body["token_type"] == "Bearer"


async def test_wrong_password_and_unknown_user_look_the_same(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    app = await register_app(alpha)
    form = {"client_id": app["client_id"], "redirect_uri": REDIRECT, "response_type": "code", "scope": "read",
            "decision": "allow"}
    a = await _post(alpha, "/oauth/authorize", {**form, "username": "alice", "password": "nope-nope"}, allow_redirects=False)
    b = await _post(alpha, "/oauth/authorize", {**form, "username": "nobody", "password": "nope-nope"}, allow_redirects=False)
    assert a == b and a[0] == 401


async def test_scopes_are_enforced(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice", scopes="read")
    status, body = await _post(alpha, "/api/v1/statuses", {"status": "hi"}, headers=bearer(token))
    assert status == 403 and "error" in body
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses") == 0
    # scope beyond the app's registration
    app = await register_app(alpha, scopes="read")
    status, _ = await _post(alpha, "/oauth/authorize", {
        "client_id": app["client_id"], "redirect_uri": REDIRECT, "response_type": "code", "scope": "read write",
        "username": "alice", "password": "password123", "decision": "allow"}, allow_redirects=False)
    assert status == 400
    # admin scope for a non-admin
    admin_token = await user_token(alpha, "bob", scopes="read admin:read")
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/api/v1/timelines/home"), headers=bearer(admin_token)) as resp:
        assert resp.status == 200
    status, body = await _post(alpha, "/oauth/token", {"grant_type": "client_credentials", "client_id": app["client_id"],
                                                       "client_secret": app["client_secret"], "scope": "write"})
    assert status == 400 and body["error"] == "invalid_scope"


async def test_client_credentials_and_revoke(network: Network) -> None:
    alpha = await network.add("alpha.test")
    app = await register_app(alpha)
    status, body = await _post(alpha, "/oauth/token", {"grant_type": "client_credentials", "client_id": app["client_id"],
                                                       "client_secret": app["client_secret"], "scope": "read"})
    assert status == 200
    app_token = body["access_token"]
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/api/v1/apps/verify_credentials"), headers=bearer(app_token)) as resp:
        assert resp.status == 200
    async with alpha.session.get(alpha.url("/api/v1/timelines/home"), headers=bearer(app_token)) as resp:
        assert resp.status == 422  # no user behind an app token
    basic = base64.b64encode(f"{app['client_id']}:{app['client_secret']}".encode()).decode()
    status, _ = await _post(alpha, "/oauth/revoke", {"token": app_token}, headers={"Authorization": f"Basic {basic}"})
    assert status == 200
    async with alpha.session.get(alpha.url("/api/v1/apps/verify_credentials"), headers=bearer(app_token)) as resp:
        assert resp.status == 401


async def test_password_grant_only_when_enabled(network: Network) -> None:
    closed = await network.add("alpha.test")
    opened = await network.add("beta.test", oauth={"password_grant": True})
    for inst in (closed, opened):
        await create_local_account(inst.ctx.db, inst.base, "alice", "password123", email="alice@example.org")
    for inst, expected in ((closed, 400), (opened, 200)):
        app = await register_app(inst)
        for login in ("alice", "alice@example.org"):
            status, body = await _post(inst, "/oauth/token", {
                "grant_type": "password", "username": login, "password": "password123", "scope": "read",
                "client_id": app["client_id"], "client_secret": app["client_secret"]})
            assert status == expected, body
    assert await _token_count(closed) == 0


async def test_bad_app_registration(network: Network) -> None:
    alpha = await network.add("alpha.test")
    for data in ({"client_name": "x", "redirect_uris": "javascript:alert(1)"},
                 {"client_name": "", "redirect_uris": REDIRECT},
                 {"client_name": "x", "redirect_uris": REDIRECT, "scopes": "read bogus"}):
        status, body = await _post(alpha, "/api/v1/apps", data)
        assert status in (400, 422) and "error" in body
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM oauth_apps") == 0


async def test_oob_shows_code_and_metadata(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/api/v1/apps"), data={
        "client_name": "cli", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob", "scopes": "read"}) as resp:
        app = await resp.json()
    status, page = await _post(alpha, "/oauth/authorize", {
        "client_id": app["client_id"], "redirect_uri": "urn:ietf:wg:oauth:2.0:oob", "response_type": "code",
        "scope": "read", "username": "alice", "password": "password123", "decision": "allow"})
    assert status == 200 and 'id="code"' in page
    async with alpha.session.get(alpha.url("/.well-known/oauth-authorization-server")) as resp:
        meta = await resp.json()
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["token_endpoint"].endswith("/oauth/token")
