"""Getting a real OAuth token from a running instance, the way an app does (for API tests)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from actors.local import create_local_account
from tests.harness import Instance

REDIRECT = "https://app.example/callback"


async def register_app(inst: Instance, scopes: str = "read write follow push") -> dict[str, Any]:
    assert inst.session is not None
    async with inst.session.post(inst.url("/api/v1/apps"), data={
        "client_name": "test app", "redirect_uris": REDIRECT, "scopes": scopes, "website": "https://app.example",
    }) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def authorize(inst: Instance, app: dict[str, Any], username: str, password: str, scopes: str) -> str:
    """Submit the real sign-in form and return the code from the redirect."""
    assert inst.session is not None
    async with inst.session.post(inst.url("/oauth/authorize"), data={
        "client_id": app["client_id"], "redirect_uri": REDIRECT, "scope": scopes, "response_type": "code",
        "username": username, "password": password, "decision": "allow", "state": "xyz",
    }, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


async def user_token(inst: Instance, username: str, scopes: str = "read write follow push",
                     password: str = "password123", create: bool = True) -> str:
    """Create the user (optionally) and obtain a token through the authorization-code flow."""
    assert inst.session is not None
    if create:
        await create_local_account(inst.ctx.db, inst.base, username, password)
    app = await register_app(inst, scopes)
    code = await authorize(inst, app, username, password, scopes)
    async with inst.session.post(inst.url("/oauth/token"), data={
        "grant_type": "authorization_code", "code": code, "client_id": app["client_id"],
        "client_secret": app["client_secret"], "redirect_uri": REDIRECT,
    }) as resp:
        assert resp.status == 200, await resp.text()
        return (await resp.json())["access_token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
