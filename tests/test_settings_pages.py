"""The signed-in user's settings pages: open to every local user, through the admin pages' sign-in."""

from __future__ import annotations

from urllib.parse import quote

from actors.local import create_local_account
from tests.harness import Network
from tests.web_client import Browser, browser


async def test_any_signed_in_user_reaches_settings_and_sign_in_returns_there(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    visitor = Browser(alpha)
    try:
        status, _, headers = await visitor.get("/settings")
        assert status == 303 and headers["Location"] == "/admin/login?next=" + quote("/settings", safe="")
        status, body, _ = await visitor.get(headers["Location"])
        assert status == 200 and 'name="next" value="/settings"' in body
    finally:
        await visitor.close()

    alice = await browser(alpha, "alice")  # not an admin
    try:
        status, body, _ = await alice.get("/settings")
        assert status == 200
        for path in ("/settings/aliases", "/settings/migration", "/settings/export", "/settings/import"):
            assert f'href="{path}"' in body
        assert "@alice@" in body and 'href="/admin"' not in body
        status, _, _ = await alice.get("/admin")
        assert status == 403  # settings are hers; the admin pages still are not
    finally:
        await alice.close()
