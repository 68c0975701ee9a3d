"""Block-list subscriptions against lists served by a real local aiohttp server, on real fedi instances.

The list server answers conditional GETs (ETag) with 304 and can be told to
break (500, an HTML page, garbage CSV, an empty body, or go away entirely).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.http_client import FetchError
from fedi.moderation.subscriptions import BlocklistSyncer
from outbox import actions
from tests.api_calls import count
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network, free_port
from tests.processes import run_cli, write_config

ADMIN_SCOPES = "read write follow push admin:read admin:write"
HEADER = "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate\n"
BL = "/api/v1/admin/fedi/blocklist"


@dataclass
class Served:
    status: int = 200
    body: str = ""
    content_type: str = "text/csv"
    etag: bool = True


@dataclass
class ListServer:
    """Serves block lists from `lists` (path → Served) and records what was asked."""

    lists: dict[str, Served] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def set(self, path: str, body: str, **kw: Any) -> None:
        self.lists[path] = Served(body=body, **kw)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        if request.path == "/moved":
            raise web.HTTPFound("/a.csv")
        served = self.lists.get(request.path)
        if served is None:
            return web.Response(status=404)
        tag = '"' + hashlib.sha256(served.body.encode()).hexdigest()[:16] + '"'
        if served.etag and request.headers.get("If-None-Match") == tag:
            return web.Response(status=304)
        headers = {"ETag": tag} if served.etag else {}
        return web.Response(status=served.status, text=served.body, content_type=served.content_type, headers=headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = self.port or free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def lists() -> AsyncIterator[ListServer]:
    server = ListServer()
    await server.start()
    yield server
    await server.stop()


def csv(*rows: str) -> str:
    return HEADER + "".join(r + "\n" for r in rows)


async def call(inst: Instance, method: str, path: str, token: str, **kw: Any) -> tuple[int, Any]:
    assert inst.session is not None
    async with inst.session.request(method, inst.url(path), headers=bearer(token), **kw) as resp:
        return resp.status, await resp.json()


async def admin(inst: Instance) -> str:
    await create_local_account(inst.ctx.db, inst.base, "admin", "password123", admin=True)
    return await user_token(inst, "admin", scopes=ADMIN_SCOPES, create=False)


async def subscribe(inst: Instance, token: str, url: str, **options: Any) -> dict[str, Any]:
    code, body = await call(inst, "POST", f"{BL}/sources", token, json={"url": url, **options})
    assert code == 200, body
    return body


async def sync(inst: Instance, token: str) -> dict[str, Any]:
    code, body = await call(inst, "POST", f"{BL}/sync", token)
    assert code == 200, body
    return body


async def blocks(inst: Instance) -> dict[str, str]:
    rows = await inst.ctx.db.fetchall("SELECT domain, severity FROM domain_blocks ORDER BY domain")
    return {r["domain"]: r["severity"] for r in rows}


async def test_draft_mode_apply_and_conditional_get(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    token = await admin(alpha)
    lists.set("/a.csv", csv("bad.example,suspend,false,false,spam,false", "meh.example,silence,true,false,,false"))
    source = await subscribe(alpha, token, lists.url("/a.csv"))
    assert source["mode"] == "draft" and source["last_fetched_at"] is None

    syncer = BlocklistSyncer(alpha.ctx)
    result = await syncer.run_once(now=1_000_000.0)
    assert [f.state for f in result.fetched] == ["updated"] and len(result.outcome.drafted) == 2
    assert await blocks(alpha) == {}  # drafts only
    assert (await syncer.run_once(now=1_000_010.0)).fetched == []  # not due before the interval
    code, drafts = await call(alpha, "GET", f"{BL}/drafts", token)
    assert code == 200 and {d["domain"]: d["severity"] for d in drafts} == {"bad.example": "suspend",
                                                                          "meh.example": "silence"}
    by_domain = {d["domain"]: d for d in drafts}
    code, applied = await call(alpha, "POST", f"{BL}/drafts/{by_domain['bad.example']['id']}/apply", token)
    assert code == 200 and applied["state"] == "applied"
    assert await blocks(alpha) == {"bad.example": "suspend"}
    row = await alpha.ctx.db.fetchone("SELECT * FROM domain_blocks WHERE domain = 'bad.example'")
    assert row["source"] == "subscription" and row["public_comment"] == "spam"
    code, _ = await call(alpha, "POST", f"{BL}/drafts/apply_all", token)
    assert await blocks(alpha) == {"bad.example": "suspend", "meh.example": "silence"}
    assert await count(alpha, "SELECT reject_media FROM domain_blocks WHERE domain = 'meh.example'") == 1
    audit = await alpha.ctx.db.fetchall(
        "SELECT * FROM audit_log WHERE action = 'domain_block.create' ORDER BY id")
    admin_id = (await get_local_account(alpha.ctx.db, "admin"))["id"]
    assert [a["account_id"] for a in audit] == [admin_id, admin_id]
    assert all(lists.url("/a.csv") in a["detail_json"] for a in audit)

    # unchanged list: the conditional GET answers 304; nothing changes, no error, no new drafts
    result = await syncer.run_once(now=1_000_000.0 + 3601)
    assert [f.state for f in result.fetched] == ["not_modified"]
    assert lists.requests[-1][1].get("If-None-Match", "").startswith('"')
    assert not result.outcome.applied and not result.outcome.drafted
    code, shown = await call(alpha, "GET", f"{BL}/sources/{source['id']}", token)
    assert shown["last_error"] is None and shown["entries_count"] == 2
    assert await count(alpha, "SELECT count(*) FROM blocklist_drafts WHERE state = 'pending'") == 0


async def test_consensus_priority_and_severity_cap(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    token = await admin(alpha)
    lists.set("/a.csv", csv("only-a.example,suspend,false,false,,false", "both.example,suspend,false,false,,false"))
    lists.set("/b.txt", "# plain text\nboth.example\nonly-b.example\n", content_type="text/plain")
    a = await subscribe(alpha, token, lists.url("/a.csv"), mode="apply")
    b = await subscribe(alpha, token, lists.url("/b.txt"), mode="apply")
    code, _ = await call(alpha, "PUT", f"{BL}/settings", token, json={"blocklist_consensus_count": 2})
    assert code == 200
    result = await sync(alpha, token)
    assert [c["domain"] for c in result["applied"]] == ["both.example"]
    assert await blocks(alpha) == {"both.example": "suspend"}
    detail = await alpha.ctx.db.fetchval(
        "SELECT detail_json FROM audit_log WHERE action = 'domain_block.create' AND target = 'both.example'")
    assert lists.url("/a.csv") in detail and lists.url("/b.txt") in detail
    assert await alpha.ctx.db.fetchval("SELECT account_id FROM audit_log WHERE target = 'both.example'") is None

    # a percentage threshold instead: 100% of the two enabled sources
    code, _ = await call(alpha, "PUT", f"{BL}/settings", token,
                         json={"blocklist_consensus_count": 1, "blocklist_consensus_percent": 100})
    assert (await sync(alpha, token))["applied"] == []

    # priority decides between disagreeing lists; max_severity caps a list
    code, _ = await call(alpha, "PUT", f"{BL}/settings", token, json={"blocklist_consensus_percent": 0})
    lists.set("/hi.csv", csv("both.example,silence,true,false,calm,false"))
    lists.set("/capped.csv", csv("capped.example,suspend,false,true,,false"))
    await subscribe(alpha, token, lists.url("/hi.csv"), mode="apply", priority=10)
    await subscribe(alpha, token, lists.url("/capped.csv"), mode="apply", max_severity="silence")
    await call(alpha, "DELETE", f"{BL}/sources/{a['id']}", token)
    await call(alpha, "DELETE", f"{BL}/sources/{b['id']}", token)
    await sync(alpha, token)
    assert await blocks(alpha) == {"both.example": "silence", "capped.example": "silence"}
    row = await alpha.ctx.db.fetchone("SELECT * FROM domain_blocks WHERE domain = 'both.example'")
    assert row["reject_media"] == 1 and row["public_comment"] == "calm"
    assert await count(alpha, "SELECT reject_reports FROM domain_blocks WHERE domain = 'capped.example'") == 1


async def test_broken_and_empty_lists_keep_the_last_good_copy(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    token = await admin(alpha)
    good = csv("bad.example,suspend,false,false,,false", "worse.example,suspend,false,false,,false")
    lists.set("/a.csv", good)
    source = await subscribe(alpha, token, lists.url("/a.csv"), mode="apply")
    await sync(alpha, token)
    assert await blocks(alpha) == {"bad.example": "suspend", "worse.example": "suspend"}
    broken = [
        (Served(status=500, body="oops"), "HTTP 500"),
        (Served(body="<!doctype html><html><body>Maintenance</body></html>", content_type="text/html"), "HTML"),
        (Served(body=csv("bad.example,obliterate,false,false,,false")), "severity"),
        (Served(body="domain,severity\n\"unterminated,suspend\n" + "x" * 10), "line"),
        (Served(body=""), "empty"),
        (Served(body=HEADER), "empty"),
        (Served(body="[]", content_type="application/json"), "empty"),
    ]
    for served, expected in broken:
        lists.lists["/a.csv"] = served
        result = await sync(alpha, token)
        assert result["sources"][0]["state"] == "error" and expected in result["sources"][0]["error"], result
        assert not result["applied"] and not result["drafted"]
        _, shown = await call(alpha, "GET", f"{BL}/sources/{source['id']}", token)
        assert expected in shown["last_error"] and shown["entries_count"] == 2
        assert await blocks(alpha) == {"bad.example": "suspend", "worse.example": "suspend"}
    await lists.stop()
    result = await sync(alpha, token)
    assert "unreachable" in result["sources"][0]["error"]
    assert await blocks(alpha) == {"bad.example": "suspend", "worse.example": "suspend"}
    await lists.start()
    lists.set("/a.csv", good)
    result = await sync(alpha, token)  # the good copy's ETag was kept through the failures
    assert result["sources"][0]["state"] == "not_modified" and result["applied"] == []
    _, shown = await call(alpha, "GET", f"{BL}/sources/{source['id']}", token)
    assert shown["last_error"] is None


async def test_retractions_remove_or_keep_and_follows_come_back(network: Network, lists: ListServer) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    token = await admin(alpha)
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    await user_token(alpha, "alice")
    alice = await get_local_account(alpha.ctx.db, "alice")
    bob = await get_actor(alpha.ctx, await resolve_handle(alpha.ctx, f"@bob@{beta.config.instance.domain}"))
    await actions.follow(alpha.ctx, alice, bob)
    await network.drain()
    lists.set("/remove.csv", csv("beta.test,suspend,false,false,,false"))
    lists.set("/keep.csv", csv("kept.example,silence,false,false,,false"))
    await subscribe(alpha, token, lists.url("/remove.csv"), mode="apply")
    await subscribe(alpha, token, lists.url("/keep.csv"), mode="apply", retractions="keep")
    await sync(alpha, token)
    assert await blocks(alpha) == {"beta.test": "suspend", "kept.example": "silence"}
    assert await count(alpha, "SELECT count(*) FROM follows WHERE account_id = ?", alice["id"]) == 0  # severed
    await network.drain()

    lists.set("/remove.csv", csv("other.example,noop,false,true,,false"))
    lists.set("/keep.csv", csv("other.example,noop,false,true,,false"))
    result = await sync(alpha, token)
    assert {(c["domain"], c["change"]) for c in result["applied"]} == {("beta.test", "remove"), ("other.example", "add")}
    assert await blocks(alpha) == {"kept.example": "silence", "other.example": "noop"}
    lifted = await alpha.ctx.db.fetchone("SELECT * FROM audit_log WHERE action = 'domain_block.remove'")
    assert lifted["account_id"] is None and lists.url("/remove.csv") in lifted["detail_json"]
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT state FROM follows WHERE account_id = ? AND target_account_id = ?", (alice["id"], bob["id"])) == "accepted"


async def test_change_cap_and_excludes(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    token = await admin(alpha)
    code, _ = await call(alpha, "PUT", f"{BL}/settings", token, json={"blocklist_max_changes": 2})
    code, excluded = await call(alpha, "POST", f"{BL}/excludes", token, json={"domain": "Friends.EXAMPLE."})
    assert code == 200 and excluded == {"domain": "friends.example"}
    lists.set("/many.txt", "\n".join(["friends.example", "sub.friends.example"] +
                                     [f"spam{i}.example" for i in range(5)]), content_type="text/plain")
    await subscribe(alpha, token, lists.url("/many.txt"), mode="apply")
    result = await sync(alpha, token)
    assert len(result["applied"]) == 2 and len(result["drafted"]) == 3
    assert sorted(await blocks(alpha)) == ["spam0.example", "spam1.example"]
    assert not {"friends.example", "sub.friends.example"} & {c["domain"] for c in result["drafted"]}
    # the excess stays drafts for an admin: the next sync applies nothing more
    result = await sync(alpha, token)
    assert result["applied"] == [] and len(result["drafted"]) == 3
    code, drafts = await call(alpha, "GET", f"{BL}/drafts", token)
    code, dismissed = await call(alpha, "POST", f"{BL}/drafts/{drafts[0]['id']}/dismiss", token)
    assert code == 200 and dismissed["state"] == "dismissed"
    await sync(alpha, token)
    assert await count(alpha, "SELECT count(*) FROM blocklist_drafts WHERE state = 'pending'") == 2  # not re-proposed


async def test_bad_input_changes_nothing(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    token = await admin(alpha)
    bad_sources = [
        {"url": "ftp://lists.example/a.csv"}, {"url": "not a url"}, {"url": "http://user:pw@lists.example/a"},
        {"url": "http:///a.csv"}, {"url": ""}, {"url": "javascript:alert(1)"},
        {"url": lists.url("/a.csv"), "max_severity": "obliterate"}, {"url": lists.url("/a.csv"), "mode": "yolo"},
        {"url": lists.url("/a.csv"), "retractions": "sometimes"}, {"url": lists.url("/a.csv"), "priority": "high"},
        {"url": lists.url("/a.csv"), "format": "xml"}, {"url": lists.url("/a.csv"), "priority": 10**6},
    ]
    for body in bad_sources:
        code, err = await call(alpha, "POST", f"{BL}/sources", token, json=body)
        assert code == 422 and "error" in err, body
    for body in ({"blocklist_consensus_count": 0}, {"blocklist_consensus_percent": 101, "blocklist_max_changes": 5},
                 {"blocklist_sync_interval": "soon"}, {"nonsense": 1}):
        code, err = await call(alpha, "PUT", f"{BL}/settings", token, json=body)
        assert code == 422 and "error" in err, body
    for domain in ("", "not a domain", "http://x.example/", "*.example"):
        code, err = await call(alpha, "POST", f"{BL}/excludes", token, json={"domain": domain})
        assert code == 422, domain
    source = await subscribe(alpha, token, lists.url("/a.csv"))
    code, err = await call(alpha, "PUT", f"{BL}/sources/{source['id']}", token, json={"max_severity": "total"})
    assert code == 422
    code, _ = await call(alpha, "POST", f"{BL}/sources", token, json={"url": lists.url("/a.csv")})
    assert code == 422  # subscribed already
    user = await user_token(alpha, "eve", scopes=ADMIN_SCOPES)
    code, _ = await call(alpha, "GET", f"{BL}/sources", user)
    assert code == 403
    assert await count(alpha, "SELECT count(*) FROM blocklist_sources") == 1
    assert await count(alpha, "SELECT count(*) FROM settings WHERE key LIKE 'blocklist_%'") == 0
    assert await count(alpha, "SELECT count(*) FROM blocklist_excludes") == 0
    assert await count(alpha, "SELECT count(*) FROM audit_log") == 1  # the one subscription


async def test_get_text_follows_checked_redirects(network: Network, lists: ListServer) -> None:
    alpha = await network.add("alpha.test")
    lists.set("/a.csv", csv("bad.example,suspend,false,false,,false"))
    status, headers, text = await alpha.ctx.http.get_text(lists.url("/moved"), {"Accept": "text/csv"})
    assert status == 200 and text.startswith("#domain") and headers["etag"]
    status, _, text = await alpha.ctx.http.get_text(lists.url("/a.csv"), {"If-None-Match": headers["etag"]})
    assert status == 304 and text == ""
    status, _, text = await alpha.ctx.http.get_text(lists.url("/missing"))
    assert status == 404 and text == ""
    with pytest.raises(FetchError, match="blocked address"):
        await alpha.ctx.http.get_text("http://169.254.169.254/latest/meta-data")
    lists.set("/big.txt", "x" * (alpha.config.federation.max_response_bytes + 1), content_type="text/plain")
    with pytest.raises(FetchError, match="too large"):
        await alpha.ctx.http.get_text(lists.url("/big.txt"))


async def test_cli_subscribe_sync_drafts_apply(tmp_path: Path, lists: ListServer) -> None:
    lists.set("/a.csv", csv("bad.example,suspend,false,false,,false", "meh.example,silence,false,false,,false",
                            "friend.example,suspend,false,false,,false"))
    config = write_config(tmp_path / "config.toml", {
        "instance": {"domain": "cli.test", "scheme": "http"}, "database": {"path": str(tmp_path / "db.sqlite3")},
        "federation": {"allow_private_networks": ["127.0.0.0/8"]}})

    async def fedi(*args: str) -> tuple[int, str, str]:
        done = await asyncio.to_thread(run_cli, *args, config=config)
        return done.returncode, done.stdout, done.stderr

    code, out, err = await fedi("blocklist", "subscribe", lists.url("/a.csv"), "--priority", "5")
    assert code == 0 and "subscribed" in out, err
    code, out, err = await fedi("blocklist", "subscribe", "gopher://x", "--mode", "draft")
    assert code == 1 and err.startswith("fedi: url") and out == ""
    code, out, err = await fedi("blocklist", "subscribe", lists.url("/b.csv"), "--max-severity", "obliterate")
    assert code == 2 and "invalid choice" in err
    code, out, err = await fedi("blocklist", "exclude", "friend.example")
    assert code == 0
    code, out, err = await fedi("blocklist", "sync")
    assert code == 0 and "updated (3 entries" in out and "drafted: 2" in out and "applied: 0" in out, out + err
    code, out, err = await fedi("blocklist", "drafts")
    draft_ids = [line.split("\t")[0] for line in out.splitlines()]
    assert code == 0 and len(draft_ids) == 2 and "bad.example" in out
    code, out, err = await fedi("blocklist", "apply-draft", draft_ids[0])
    assert code == 0 and "applied draft" in out
    code, out, err = await fedi("blocklist", "apply-draft", "999")
    assert code == 1 and "no pending draft" in err
    code, out, err = await fedi("blocklist", "apply-draft", "--all")
    assert code == 0 and "1 applied" in out
    code, out, err = await fedi("blocklist", "list")
    assert code == 0 and "priority 5" in out and "3 entries" in out and "excluded: friend.example" in out
    code, out, err = await fedi("domain-block", "list")
    assert "bad.example" in out and "meh.example" in out and "friend.example" not in out
