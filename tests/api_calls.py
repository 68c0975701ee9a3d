"""Calling a running instance's client API from tests, with the answer's status, JSON body and headers."""

from __future__ import annotations

from typing import Any

from actors.local import get_local_account
from tests.api_client import bearer, user_token
from tests.harness import Instance


async def call(inst: Instance, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
    assert inst.session is not None
    headers = bearer(token) if token else {}
    async with inst.session.request(method, inst.url(path), headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def api(inst: Instance, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    """Status and JSON body of a call that must answer JSON (errors included)."""
    assert inst.session is not None
    async with inst.session.request(method, inst.url(path), headers=bearer(token), **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


async def user(inst: Instance, name: str, scopes: str = "read write follow push") -> tuple[str, Any]:
    """A local user signed in through the real OAuth flow: (token, account row)."""
    token = await user_token(inst, name, scopes)
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return token, row


async def post(inst: Instance, token: str, text: str, **fields: Any) -> dict[str, Any]:
    """A new status through POST /api/v1/statuses (it must be accepted)."""
    status, body, _ = await call(inst, "POST", "/api/v1/statuses", token, data={"status": text, **fields})
    assert status == 200, body
    return body


async def count(inst: Instance, sql: str, *args: Any) -> int:
    return int(await inst.ctx.db.fetchval(sql, args) or 0)
