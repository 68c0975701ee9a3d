"""FediBlockHole (PyPI `fediblockhole`), unchanged, pushing a block list into a running fedi instance.

How it connects: FediBlockHole builds `{scheme}://{domain}/api/v1/admin/...` from each
destination's `domain`, and its `scheme` option (default "https") may be "http", so no
TLS is needed: the destination is `127.0.0.1:PORT` with `scheme = "http"`. The
instance is named `127.0.0.1:PORT` too, so the absolute `Link` URLs it pages with
are reachable by FediBlockHole's own HTTP client. `max_followed_severity =
"suspend"` keeps it from asking `/api/v1/admin/measures` before each suspend (that
endpoint is not this test's subject). The source list is Mastodon's CSV export,
served by a local aiohttp server. FediBlockHole waits a second between API calls
(Mastodon's rate limit), so the list is short.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

from fedi.moderation.csv_io import apply_list, parse_list
from tests.harness import Network, free_port
from tests.test_admin_domain_blocks import admin_token

SOURCE = """#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate
spam.example,suspend,true,true,"Spam, scams and phishing",false
hate.example,suspend,false,false,Hate speech,true
loud.example,silence,false,false,,false
media.example,noop,true,false,Unlabelled NSFW media,false
sub.hate.example,suspend,false,false,Already covered by hate.example,false
old0.example,silence,false,true,Downgraded by the list,false
"""
EXPECTED = {  # (severity, reject_media, reject_reports, public_comment, private_comment, obfuscate)
    "spam.example": ("suspend", 1, 1, "Spam, scams and phishing", "", 0),
    "hate.example": ("suspend", 0, 0, "Hate speech", "", 1),
    "loud.example": ("silence", 0, 0, "", "", 0),
    "media.example": ("noop", 1, 0, "Unlabelled NSFW media", "", 0),
    "old0.example": ("silence", 0, 1, "Downgraded by the list", "", 0),
}
EARLIER = 150  # blocks the instance already has: FediBlockHole must page through them (100 a page)


def command() -> list[str]:
    script = Path(sys.executable).with_name("fediblock-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from fediblockhole import main; sys.exit(main())"]


async def sync(config: Path) -> str:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = "127.0.0.1,localhost"
    proc = await asyncio.create_subprocess_exec(
        *command(), "-c", str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


async def test_fediblockhole_push_lands_and_a_second_run_changes_nothing(network: Network, tmp_path: Path) -> None:
    fedi = await network.add("127.0.0.1")
    token = await admin_token(fedi)
    await apply_list(fedi.ctx, None, parse_list("\n".join(f"old{i}.example" for i in range(EARLIER)), "text"), "earlier")

    async def serve_list(request: web.Request) -> web.Response:
        return web.Response(text=SOURCE, content_type="text/csv")

    lists = web.Application()
    lists.router.add_get("/blocklist.csv", serve_list)
    runner = web.AppRunner(lists)
    await runner.setup()
    list_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", list_port).start()
    config = tmp_path / "fediblockhole.conf.toml"
    config.write_text(f"""
blocklist_url_sources = [{{ url = "http://127.0.0.1:{list_port}/blocklist.csv", format = "mastodon_csv" }}]
blocklist_instance_destinations = [
    {{ domain = "127.0.0.1:{fedi.port}", token = "{token}", scheme = "http", max_followed_severity = "suspend" }},
]
import_fields = ["public_comment", "reject_media", "reject_reports", "obfuscate"]
no_fetch_instance = true
savedir = "{tmp_path}"
""")
    try:
        first = await sync(config)
        rows = {r["domain"]: r for r in await fedi.ctx.db.fetchall("SELECT * FROM domain_blocks")}
        got = {d: tuple(rows[d][k] for k in ("severity", "reject_media", "reject_reports", "public_comment",
                                             "private_comment", "obfuscate")) for d in EXPECTED}
        assert got == EXPECTED, first
        assert "sub.hate.example" not in rows and "already blocked" in first, "a covered domain is refused with 422"
        assert len(rows) == EARLIER + len(EXPECTED) - 1
        audit = await fedi.ctx.db.fetchval("SELECT count(*) FROM audit_log")
        assert audit == 1 + len(EXPECTED), "the earlier import, four creations and one update"

        second = await sync(config)
        assert await fedi.ctx.db.fetchval("SELECT count(*) FROM audit_log") == audit, second
        again = {r["domain"]: tuple(r) for r in await fedi.ctx.db.fetchall("SELECT * FROM domain_blocks")}
        assert again == {d: tuple(r) for d, r in rows.items()}, "the second run changed nothing"
    finally:
        await runner.cleanup()
