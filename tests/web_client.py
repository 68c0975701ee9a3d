"""A browser for tests: keeps cookies, reads each page's CSRF token, signs in through the real form."""

from __future__ import annotations

import re
from typing import Any

import aiohttp
from yarl import URL

from fedi.web.session import COOKIE
from tests.harness import Instance

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class Browser:
    """A cookie-keeping client that reads the CSRF token from each page, as a browser's forms carry it."""

    def __init__(self, inst: Instance) -> None:
        self.inst = inst
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), headers={"Accept": "text/html"})
        self.csrf = ""

    async def close(self) -> None:
        await self.http.close()

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, str, Any]:
        async with self.http.request(method, self.inst.url(path), allow_redirects=False, **kw) as resp:
            body = await resp.text()
            found = CSRF.search(body)
            if found:
                self.csrf = found.group(1)
            return resp.status, body, resp.headers

    async def get(self, path: str) -> tuple[int, str, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, data: dict[str, Any] | aiohttp.FormData, csrf: bool = True) -> tuple[int, str, Any]:
        if csrf and isinstance(data, dict):
            data = {"csrf": self.csrf, **data}
        return await self.request("POST", path, data=data)

    def session_cookie(self) -> str | None:
        cookie = self.http.cookie_jar.filter_cookies(URL(self.inst.url("/admin"))).get(COOKIE)
        return cookie.value if cookie else None

    async def sign_in(self, username: str, password: str = "password123") -> tuple[int, str, Any]:
        status, body, _ = await self.get("/admin/login")
        assert status == 200, body
        token = re.search(r'name="login_token" value="([^"]+)"', body)
        assert token is not None
        return await self.post("/admin/login", {"login_token": token.group(1), "username": username,
                                                "password": password, "next": "/admin"}, csrf=False)


async def browser(inst: Instance, username: str, password: str = "password123") -> Browser:
    """A browser signed in as `username` (its session cookie set by the sign-in form)."""
    b = Browser(inst)
    status, _, headers = await b.sign_in(username, password)
    assert status == 303 and headers["Location"] == "/admin"
    return b
