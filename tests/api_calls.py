"""Calling a running instance's client API from tests, with the answer's status, JSON body and headers."""

from __future__ import annotations

from typing import Any

from tests.api_client import bearer
from tests.harness import Instance


async def call(inst: Instance, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
    assert inst.session is not None
    headers = bearer(token) if token else {}
    async with inst.session.request(method, inst.url(path), headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def post(inst: Instance, token: str, text: str, **fields: Any) -> dict[str, Any]:
    """A new status through POST /api/v1/statuses (it must be accepted)."""
    status, body, _ = await call(inst, "POST", "/api/v1/statuses", token, data={"status": text, **fields})
    assert status == 200, body
    return body


async def count(inst: Instance, sql: str, *args: Any) -> int:
    return int(await inst.ctx.db.fetchval(sql, args) or 0)
