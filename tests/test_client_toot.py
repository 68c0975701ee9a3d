"""The `toot` command-line client against running fedi instances (issue 3).

toot runs as a real subprocess with its own config folder ($XDG_CONFIG_HOME),
answering its prompts on stdin; the instances serve in the test's event loop
meanwhile, and federation is stepped with `network.drain()` between commands.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from actors.local import create_local_account
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network
from tests.live_instance import PASSWORD, TestDns, api_base, code_from_page, sign_in

COMMAND_SECONDS = 20


class Toot:
    """One toot user: a config folder and a way to run commands."""

    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "XDG_CONFIG_HOME": str(home), "COLUMNS": "120", "NO_COLOR": "1"}

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "toot", *args, env=self.env,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)

    async def __call__(self, *args: str, stdin: str = "", ok: bool = True) -> str:
        proc = await self.start(*args)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), COMMAND_SECONDS)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"toot {' '.join(args)} did not finish in {COMMAND_SECONDS} s") from None
        text = out.decode() + err.decode()
        assert (proc.returncode == 0) == ok, f"toot {' '.join(args)} exited {proc.returncode}:\n{text}"
        return text


async def _account_id(inst: Instance, acct: str) -> int:
    username, _, domain = acct.partition("@")
    return int(await inst.ctx.db.fetchval(
        "SELECT id FROM accounts WHERE username = ? AND domain IS ?", (username, domain or None)))


async def _post_as(inst: Instance, token: str, text: str) -> dict[str, Any]:
    assert inst.session is not None
    async with inst.session.post(inst.url("/api/v1/statuses"), data={"status": text}, headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def test_toot_login_post_follow_search_timeline(network: Network, tmp_path: Path) -> None:
    alpha = await network.add("alpha.test", oauth={"password_grant": True})
    beta = await network.add("beta.test")
    await create_local_account(alpha.ctx.db, alpha.base, "alice", PASSWORD, email="alice@mail.example")
    bob_token = await user_token(beta, "bob")
    bob_acct = f"bob@{beta.config.instance.domain}"
    toot = Toot(tmp_path)

    # A wrong password gets no token; the e-mail (or username) and password then sign in.
    out = await toot("login_cli", "-i", api_base(alpha), "-e", "alice@mail.example", "-p", "wrong password", ok=False)
    assert "Login failed" in out
    out = await toot("login_cli", "-i", api_base(alpha), "-e", "alice@mail.example", "-p", PASSWORD)
    assert "Successfully logged in" in out
    config = json.loads((tmp_path / "toot" / "config.json").read_text())
    assert config["active_user"] == f"alice@{alpha.config.instance.domain}"
    alice_id = await _account_id(alpha, "alice")
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM oauth_tokens WHERE account_id = ? AND revoked_at IS NULL", (alice_id,)) == 1
    assert "@alice" in await toot("whoami")

    out = await toot("post", "Hello from toot #TootCli")
    assert "Toot posted: " in out
    url = out.split("Toot posted: ")[1].split()[0]
    row = await alpha.ctx.db.fetchone(
        "SELECT * FROM statuses WHERE account_id = ? AND deleted_at IS NULL", (alice_id,))
    assert row is not None and "Hello from toot" in row["content"]
    assert url == f"{alpha.base}/@alice/{row['id']}"

    # An image, sent as toot sends it: a multipart part without a content type.
    picture = tmp_path / "picture.png"
    Image.new("RGB", (40, 30), (10, 120, 200)).save(picture)
    out = await toot("post", "--media", str(picture), "--description", "a blue square", "With a picture")
    assert "Toot posted: " in out
    media = await alpha.ctx.db.fetchone("SELECT m.* FROM media_attachments m JOIN statuses s ON s.id = m.status_id"
                                        " WHERE s.account_id = ? AND s.content LIKE '%With a picture%'", (alice_id,))
    assert media is not None and media["description"] == "a blue square" and media["type"] == "image"

    # Search resolves Bob over WebFinger; follow finds him the same way.
    out = await toot("search", "--resolve", "--type", "accounts", bob_acct)
    assert f"@{bob_acct}" in out
    out = await toot("follow", f"@{bob_acct}")
    assert f"You are now following @{bob_acct}" in out
    await network.drain()
    bob_there = await _account_id(alpha, bob_acct)
    assert await alpha.ctx.db.fetchval(
        "SELECT state FROM follows WHERE account_id = ? AND target_account_id = ?", (alice_id, bob_there)) == "accepted"
    assert bob_acct in await toot("following")

    greeting = await _post_as(beta, bob_token, "Greetings from beta")
    await network.drain()
    home = await toot("timelines", "home", "--no-pager", "--no-clear")
    assert "Greetings from beta" in home and "Hello from toot" in home and f"@{bob_acct}" in home
    old = await toot("timeline", "--once", "--count", "5")
    assert "Greetings from beta" in old
    tagged = await toot("timelines", "tag", "tootcli", "--no-pager", "--no-clear")
    assert "Hello from toot" in tagged and "Greetings" not in tagged
    public = await toot("timelines", "public", "--local", "--no-pager", "--no-clear")
    assert "Hello from toot" in public and "Greetings" not in public
    here = await alpha.ctx.db.fetchval("SELECT id FROM statuses WHERE uri = ?", (greeting["uri"],))
    assert "favourited" in (await toot("favourite", str(here))).lower()
    assert "reblogged" in (await toot("reblog", str(here))).lower()
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM favourites WHERE status_id = ?", (int(greeting["id"]),)) == 1
    await _post_as(beta, bob_token, f"@alice@{alpha.config.instance.domain} did you get this?")
    await network.drain()
    notes = await toot("notifications")
    assert "mentioned you" in notes and "did you get this?" in notes, notes


async def test_toot_browser_login(network: Network, tmp_path: Path) -> None:
    """`toot login` prints the authorize URL and waits for the out-of-band code a person pastes."""
    alpha = await network.add("alpha.test")
    await create_local_account(alpha.ctx.db, alpha.base, "carol", PASSWORD)
    toot = Toot(tmp_path)
    proc = await toot.start("login", "-i", api_base(alpha))
    assert proc.stdout is not None and proc.stdin is not None
    try:
        async with asyncio.timeout(COMMAND_SECONDS):
            url = ""
            while not url.startswith("http"):
                line = await proc.stdout.readline()
                assert line, "toot ended before printing the login URL"
                url = line.decode().strip()
            dns = TestDns(network)
            code = code_from_page(await asyncio.to_thread(sign_in, dns, url, "carol", PASSWORD))
            proc.stdin.write(f"n\n{code}\n".encode())
            await proc.stdin.drain()
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0 and "Successfully logged in" in out.decode(), out.decode()
    assert "@carol" in await toot("whoami")
    # The code was single-use: it cannot be traded again.
    app = json.loads((tmp_path / "toot" / "config.json").read_text())["apps"][alpha.config.instance.domain]
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/oauth/token"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "urn:ietf:wg:oauth:2.0:oob",
        "client_id": app["client_id"], "client_secret": app["client_secret"],
    }) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
