"""The admin web pages, driven like a browser: sign in through the form, submit the real forms.

Real fedi instances on 127.0.0.1 (a second one provides remote followers, so a
suspension has follows to cut and a lift has follows to restore); block lists for
subscriptions come from a real local aiohttp server. Each refusal is checked to
leave the database as it was.
"""

from __future__ import annotations

import hashlib
import html
import re
from typing import Any

from dataclasses import replace

import aiohttp
from aiohttp import web
from yarl import URL

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.api.ratelimit import RATE_LIMITER, Limits, Rule
from fedi.moderation.csv_io import parse_list
from fedi.moderation.reports import ReportRequest, create_report
from fedi.web.session import COOKIE
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import count
from tests.api_client import user_token
from tests.harness import Instance, Network, free_port
from tests.web_client import Browser, browser

HEADER = "#domain,#severity,#reject_media,#reject_reports,#public_comment,#obfuscate"
async def account(inst: Instance, name: str, **kw: Any) -> Any:
    await create_local_account(inst.ctx.db, inst.base, name, "password123", **kw)
    return await get_local_account(inst.ctx.db, name)


async def audit(inst: Instance) -> list[tuple[Any, str, str]]:
    rows = await inst.ctx.db.fetchall("SELECT account_id, action, target FROM audit_log ORDER BY id")
    return [(r[0], r[1], r[2]) for r in rows]


async def follow(src: Instance, name: str, dst: Instance, target: str) -> None:
    remote = await get_actor(src.ctx, await resolve_handle(src.ctx, f"{target}@{dst.config.instance.domain}"))
    await actions.follow(src.ctx, await get_local_account(src.ctx.db, name), remote)


async def federated_pair(network: Network) -> tuple[Instance, Instance]:
    """alpha (with admin `root` and `alice`) and beta (`bob`), following each other."""
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    await account(alpha, "root", admin=True)
    await account(alpha, "alice")
    await account(beta, "bob")
    await follow(beta, "bob", alpha, "alice")
    await follow(alpha, "alice", beta, "bob")
    await network.drain()
    return alpha, beta


async def test_sign_in_csrf_and_non_admins(network: Network) -> None:
    alpha = await network.add("alpha.test")
    root = await account(alpha, "root", admin=True, email="root@example.org")
    await account(alpha, "eve")
    b = Browser(alpha)
    try:
        status, _, headers = await b.get("/admin/domain_blocks?q=x")
        assert status == 303 and headers["Location"] == "/admin/login?next=%2Fadmin%2Fdomain_blocks%3Fq%3Dx"
        for login, password in (("root", "wrong password"), ("nobody", "password123")):
            status, body, headers = await b.sign_in(login, password)
            assert status == 401 and "Invalid username or password." in body and 'name="username"' in body
            assert b.session_cookie() is None and COOKIE not in headers.get("Set-Cookie", "")
        status, body, _ = await b.post("/admin/login", {"username": "root", "password": "password123"}, csrf=False)
        assert status == 403 and b.session_cookie() is None, "the sign-in form needs its own token"
        assert await count(alpha, "SELECT count(*) FROM oauth_tokens") == 0

        status, _, headers = await b.sign_in("ROOT@example.org")  # the e-mail works too
        assert status == 303 and headers["Location"] == "/admin"
        cookie = headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookie if c.startswith(COOKIE + "="))
        assert "HttpOnly" in session_cookie and "SameSite=Lax" in session_cookie and "Secure" not in session_cookie
        token = b.session_cookie()
        assert token and await count(alpha, "SELECT count(*) FROM oauth_tokens WHERE token_hash = ? AND account_id = ?",
                                     hashlib.sha256(token.encode()).hexdigest(), root["id"]) == 1
        status, body, headers = await b.get("/admin")
        assert status == 200 and "Open reports" in body and headers["Cache-Control"] == "no-store"
        assert "script-src" not in headers["Content-Security-Policy"] and "<script" not in body

        # CSRF: missing, wrong, or another session's token changes nothing
        good = b.csrf
        eve = await browser(alpha, "eve")
        for data in ({"domain": "spam.example", "severity": "suspend"},
                     {"domain": "spam.example", "severity": "suspend", "csrf": "0" * 64},
                     {"domain": "spam.example", "severity": "suspend", "csrf": eve.csrf}):
            status, body, _ = await b.post("/admin/domain_blocks", data, csrf=False)
            assert status == 403 and "nothing was changed" in body
        assert await count(alpha, "SELECT count(*) FROM domain_blocks") == 0 and await audit(alpha) == []
        assert b.csrf == good

        # a signed-in non-admin gets 403 pages and cannot post, even with her own token
        for path in ("/admin", "/admin/domain_blocks", "/admin/reports", "/admin/audit", "/admin/domain_blocks/export"):
            status, body, _ = await eve.get(path)
            assert status == 403 and "administrators" in body, path
        status, _, _ = await eve.post("/admin/domain_blocks", {"domain": "spam.example", "severity": "suspend"})
        assert status == 403 and await count(alpha, "SELECT count(*) FROM domain_blocks") == 0
        await eve.close()

        # an API token in the cookie is not a session; signing out revokes the session
        api_token = await user_token(alpha, "root", scopes="read admin:read", create=False)
        intruder = Browser(alpha)
        intruder.http.cookie_jar.update_cookies({COOKIE: api_token}, URL(alpha.url("/")))
        status, _, _ = await intruder.get("/admin")
        assert status == 303
        status, _, headers = await b.post("/admin/logout", {})
        assert status == 303 and headers["Location"] == "/admin/login" and b.session_cookie() is None
        intruder.http.cookie_jar.update_cookies({COOKIE: token}, URL(alpha.url("/")))
        status, _, _ = await intruder.get("/admin")
        assert status == 303, "a signed-out session's cookie no longer works"
        await intruder.close()

        # a session ends a week after sign-in, however active
        await b.close()
        b = await browser(alpha, "root")
        async with alpha.ctx.db.write() as tx:
            await tx.execute("UPDATE oauth_tokens SET created_at = created_at - 8 * 86400")
        status, _, headers = await b.get("/admin")
        assert status == 303 and headers["Location"].startswith("/admin/login")

        # sign-ins count against the authorize form's limits (here: 2 per name)
        await account(alpha, "zed")
        alpha.app[RATE_LIMITER].limits = replace(Limits(), login_name=Rule(2, 900))
        for expected in (401, 401, 429):
            status, body, _ = await b.sign_in("zed", "wrong password")
            assert status == expected
        status, body, _ = await b.sign_in("zed")
        assert status == 429 and "Too many sign-in attempts" in body and b.session_cookie() is None
    finally:
        await b.close()


async def test_block_add_edit_and_lift_restores_follows(network: Network) -> None:
    alpha, beta = await federated_pair(network)
    root_id = (await get_local_account(alpha.ctx.db, "root"))["id"]
    follows = "SELECT count(*) FROM follows WHERE state = 'accepted'"
    assert await count(alpha, follows) == 2
    b = await browser(alpha, "root")
    try:
        await b.get("/admin/domain_blocks")
        for bad, words in (({"domain": "beta.test", "severity": "bogus"}, "severity must be"),
                           ({"domain": "https://beta.test/x", "severity": "suspend"}, "not a domain")):
            status, body, _ = await b.post("/admin/domain_blocks", bad)
            assert status == 422 and words in html.unescape(body)
            assert f'value="{bad["domain"]}"' in body, "the form keeps what was typed"
        assert await count(alpha, "SELECT count(*) FROM domain_blocks") == 0 and await audit(alpha) == []

        status, _, headers = await b.post("/admin/domain_blocks", {
            "domain": "BETA.test.", "severity": "suspend", "reject_media": "1", "public_comment": "spam & <abuse>"})
        assert status == 303 and headers["Location"] == "/admin/domain_blocks"
        status, body, _ = await b.get("/admin/domain_blocks")
        assert status == 200 and ">beta.test<" in body and "spam &amp; &lt;abuse&gt;" in body
        block = await alpha.ctx.db.fetchone("SELECT * FROM domain_blocks")
        assert block["domain"] == "beta.test" and block["severity"] == "suspend" and block["reject_media"] == 1
        assert await count(alpha, follows) == 0, "the suspension cut both follows"
        status, _, _ = await b.post("/admin/domain_blocks", {"domain": "beta.test", "severity": "silence"})
        assert status == 422 and await count(alpha, "SELECT count(*) FROM domain_blocks") == 1

        status, body, _ = await b.get(f"/admin/domain_blocks/{block['id']}")
        assert status == 200 and 'value="spam &amp; &lt;abuse&gt;"' in body
        status, _, _ = await b.post(f"/admin/domain_blocks/{block['id']}", {
            "severity": "suspend", "reject_media": "1", "public_comment": "spam", "private_comment": "see report 7"})
        assert status == 303
        assert (await alpha.ctx.db.fetchone("SELECT private_comment FROM domain_blocks"))[0] == "see report 7"

        status, body, _ = await b.get(f"/admin/domain_blocks/{block['id']}/remove")
        assert status == 200 and "<strong>2</strong> follows will be restored" in body
        status, body, _ = await b.post(f"/admin/domain_blocks/{block['id']}/remove", {})
        assert status == 200 and "2 follows it had cut are being restored" in body
        status, body, _ = await b.get("/admin/domain_blocks")
        assert ">beta.test<" not in body and await count(alpha, "SELECT count(*) FROM domain_blocks") == 0
        await network.drain()
        assert await count(alpha, follows) == 2 and await count(beta, follows) == 2
        assert await audit(alpha) == [(root_id, "domain_block.create", "beta.test"),
                                      (root_id, "domain_block.update", "beta.test"),
                                      (root_id, "domain_block.remove", "beta.test")]
        status, _, _ = await b.post(f"/admin/domain_blocks/{block['id']}/remove", {})
        assert status == 404
        status, body, _ = await b.get("/admin/audit")
        assert status == 200 and body.index(">domain_block.remove<") < body.index(">domain_block.create<")
    finally:
        await b.close()


async def test_import_preview_apply_and_export(network: Network) -> None:
    alpha, beta = await federated_pair(network)
    root_id = (await get_local_account(alpha.ctx.db, "root"))["id"]
    b = await browser(alpha, "root")
    blocks = "SELECT count(*) FROM domain_blocks"
    try:
        await b.get("/admin/domain_blocks/import")
        malformed = f"{HEADER}\nok.example,silence,false,false,,false\nbad.example,obliterate,false,false,,false\n"
        status, body, _ = await b.post("/admin/domain_blocks/import", {"text": malformed, "format": "auto"})
        assert status == 422 and "line 3: severity must be one of" in html.unescape(body)
        assert "ok.example" in body, "the pasted list is shown again to be fixed"
        assert await count(alpha, blocks) == 0

        text = (f"{HEADER}\nbeta.test,suspend,false,false,spam,false\nloud.example,silence,TRUE,False,,false\n"
                "ex***le.com,suspend,false,false,,true\nsub.beta.test,silence,false,false,,false\n")
        form = aiohttp.FormData()
        form.add_field("csrf", b.csrf)
        form.add_field("format", "csv")
        form.add_field("text", "")
        form.add_field("file", text.encode(), filename="list.csv", content_type="text/csv")
        status, body, _ = await b.post("/admin/domain_blocks/import", form)
        assert status == 200, body
        rows = re.findall(r'<td class="num">(\d+)</td>\s*<td class="handle">([^<]+)</td>\s*<td class="change-(\w+)">'
                          r'.*?<td class="num(?: severs)?">(\d+)</td>', body, re.S)
        assert rows == [("2", "beta.test", "add", "2"), ("3", "loud.example", "add", "0"),
                        ("4", "ex***le.com", "skip", "0"), ("5", "sub.beta.test", "skip", "0")]
        assert "covered by the block of beta.test" in body and "obfuscated domain" in body
        assert await count(alpha, blocks) == 0, "a preview changes nothing"
        digest = re.search(r'name="digest" value="([0-9a-f]{64})"', body).group(1)
        assert re.search(r'name="name" value="list.csv"', body)

        apply = {"text": text, "format": "csv", "name": "list.csv"}
        status, body, _ = await b.post("/admin/domain_blocks/import/apply", {**apply, "digest": "0" * 64})
        assert status == 409 and await count(alpha, blocks) == 0
        status, body, _ = await b.post("/admin/domain_blocks/import/apply", {**apply, "digest": digest})
        assert status == 200 and "2 added" in body and "2 local follows cut" in body
        assert await count(alpha, blocks) == 2 and await count(alpha, "SELECT count(*) FROM follows") == 0
        assert await audit(alpha) == [(root_id, "domain_block.import", "list.csv")]
        status, body, _ = await b.post("/admin/domain_blocks/import/apply", {**apply, "digest": digest})
        assert status == 409 and await count(alpha, "SELECT count(*) FROM audit_log") == 1, "no second apply"

        async with b.http.get(alpha.url("/admin/domain_blocks/export?format=csv")) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv"
            assert resp.headers["Content-Disposition"].startswith("attachment; filename=")
            exported = await resp.text()
        assert exported.splitlines()[0] == HEADER
        parsed = parse_list(exported)
        assert [(e.spec.domain, e.spec.severity, e.spec.reject_media, e.spec.public_comment) for e in parsed.entries] == [
            ("beta.test", "suspend", False, "spam"), ("loud.example", "silence", True, None)]
        status, body, _ = await b.post("/admin/domain_blocks/import", {"text": exported, "format": "auto"})
        assert status == 200 and re.findall(r'<td class="change-(\w+)">', body) == ["unchanged", "unchanged"]
        async with b.http.get(alpha.url("/admin/domain_blocks/export?format=json")) as resp:
            assert resp.content_type == "application/json"
            assert [e["domain"] for e in await resp.json()] == ["beta.test", "loud.example"]
    finally:
        await b.close()


async def test_subscription_drafts_apply_and_dismiss(network: Network) -> None:
    alpha = await network.add("alpha.test")
    root = await account(alpha, "root", admin=True)
    served = {"body": f"{HEADER}\none.example,suspend,false,false,bad,false\ntwo.example,silence,false,false,,false\n"}

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=served["body"], content_type="text/csv")

    lists = web.Application()
    lists.router.add_get("/list.csv", handle)
    runner = web.AppRunner(lists)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}/list.csv"
    b = await browser(alpha, "root")
    try:
        await b.get("/admin/subscriptions")
        status, body, _ = await b.post("/admin/subscriptions", {"url": "ftp://x.example/l", "priority": "1"})
        assert status == 422 and "url must be" in body and await count(alpha, "SELECT count(*) FROM blocklist_sources") == 0
        status, _, _ = await b.post("/admin/subscriptions", {
            "url": url, "priority": "5", "max_severity": "suspend", "mode": "draft", "retractions": "keep", "format": "auto"})
        assert status == 303
        status, body, _ = await b.post("/admin/subscriptions/sync", {})
        assert status == 200 and "0 changes applied, 2 drafts to review" in body and "updated (2 entries" in body
        assert await count(alpha, "SELECT count(*) FROM domain_blocks") == 0
        status, body, _ = await b.get("/admin/subscriptions")
        row = re.search(r'<tr>\s*<td class="handle">' + re.escape(url) + r'</td>(.*?)</tr>', body, re.S)
        assert row is not None and re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))[:5] == [
            "5", "suspend", "draft", "keep", "2"]
        assert "never" not in row.group(1)
        drafts = {r["domain"]: r["id"] for r in await alpha.ctx.db.fetchall("SELECT id, domain FROM blocklist_drafts")}
        status, body, _ = await b.get("/admin/drafts")
        assert status == 200 and "one.example" in body and "two.example" in body and url in body

        status, _, _ = await b.post(f"/admin/drafts/{drafts['one.example']}/apply", {})
        assert status == 303
        block = await alpha.ctx.db.fetchone("SELECT * FROM domain_blocks")
        assert block["domain"] == "one.example" and block["severity"] == "suspend" and block["source"] == "subscription"
        status, _, _ = await b.post(f"/admin/drafts/{drafts['two.example']}/dismiss", {})
        assert status == 303
        states = {r[0]: r[1] for r in await alpha.ctx.db.fetchall("SELECT domain, state FROM blocklist_drafts")}
        assert states == {"one.example": "applied", "two.example": "dismissed"}
        status, _, _ = await b.post(f"/admin/drafts/{drafts['two.example']}/apply", {})
        assert status == 404 and await count(alpha, "SELECT count(*) FROM domain_blocks") == 1
        logged = [(a, action, target) for a, action, target in await audit(alpha) if target in drafts]
        assert logged == [(root["id"], "domain_block.create", "one.example"),
                          (root["id"], "blocklist_draft.dismiss", "two.example")]

        served["body"] += "three.example,silence,false,false,,false\n"
        await b.post("/admin/subscriptions/sync", {})
        status, body, _ = await b.post("/admin/drafts/apply_all", {})
        assert status == 200 and "1 drafts applied, 0 not applied" in body
        assert await count(alpha, "SELECT count(*) FROM domain_blocks WHERE domain = 'three.example'") == 1
    finally:
        await b.close()
        await runner.cleanup()


async def test_report_review_assign_resolve_and_act(network: Network) -> None:
    alpha = await network.add("alpha.test")
    root = await account(alpha, "root", admin=True)
    alice, mallory = await account(alpha, "alice"), await account(alpha, "mallory")
    spam = await actions.create_status(alpha.ctx, mallory, PostRequest(text="buy <script>alert(1)</script> cheap pills"))
    report = await create_report(alpha.ctx, alice, ReportRequest(mallory, (spam["id"],), "this is spam", "spam", (), False),
                                 [spam])
    b = await browser(alpha, "root")
    path = f"/admin/reports/{report['id']}"
    try:
        status, body, _ = await b.get("/admin/reports")
        assert status == 200 and f'href="{path}"' in body and "mallory" in body and "this is spam" in body
        status, body, _ = await b.get(path)
        assert status == 200 and "Open" in body and "unassigned" in body and "cheap pills" in body and "<script" not in body
        assert "alice" in body and "spam" in body
        for change in ("assign_to_self", "unassign", "assign_to_self", "resolve"):
            status, _, headers = await b.post(f"{path}/{change}", {})
            assert status == 303 and headers["Location"] == path
        row = await alpha.ctx.db.fetchone("SELECT * FROM reports")
        assert row["assigned_account_id"] == root["id"] and row["action_taken_by_account_id"] == root["id"]
        status, body, _ = await b.get("/admin/reports?resolved=1")
        assert f'href="{path}"' in body
        status, body, _ = await b.get("/admin/reports")
        assert f'href="{path}"' not in body
        status, _, _ = await b.post(f"{path}/reopen", {})
        assert status == 303 and (await alpha.ctx.db.fetchone("SELECT action_taken_at FROM reports"))[0] is None

        status, body, _ = await b.post(f"{path}/action", {"type": "obliterate", "text": "x"})
        assert status == 422 and "type must be" in body
        assert (await get_local_account(alpha.ctx.db, "mallory"))["silenced_at"] is None
        status, _, _ = await b.post(f"{path}/action", {"type": "silence", "text": "repeated spam"})
        assert status == 303
        assert (await get_local_account(alpha.ctx.db, "mallory"))["silenced_at"] is not None
        row = await alpha.ctx.db.fetchone("SELECT * FROM reports")
        assert row["action_taken_at"] is not None and row["action_taken_by_account_id"] == root["id"]
        assert [a[1] for a in await audit(alpha)] == ["assign_to_self", "unassign", "assign_to_self", "resolve", "reopen",
                                                      "resolve", "silence"]
        assert all(a[0] == root["id"] for a in await audit(alpha))
        status, _, _ = await b.get("/admin/reports/424242")
        assert status == 404
    finally:
        await b.close()


async def test_federation_keyword_rules_and_held_posts(network: Network) -> None:
    alpha, beta = await federated_pair(network)
    root_id = (await get_local_account(alpha.ctx.db, "root"))["id"]
    b = await browser(alpha, "root")
    try:
        await b.get("/admin/domain_allows")
        status, _, _ = await b.post("/admin/domain_allows", {"domain": "Friends.example"})
        assert status == 303
        status, _, _ = await b.post("/admin/federation", {"setting": "federation_mode", "value": "everything"})
        assert status == 422
        status, _, _ = await b.post("/admin/federation", {"setting": "federation_mode", "value": "allowlist"})
        assert status == 303
        status, body, _ = await b.get("/admin/domain_allows")
        assert "Federation mode: allowlist" in body and "friends.example" in body
        allow_id = await alpha.ctx.db.fetchval("SELECT id FROM domain_allows")
        status, _, _ = await b.post(f"/admin/domain_allows/{allow_id}/remove", {})
        assert status == 303 and await count(alpha, "SELECT count(*) FROM domain_allows") == 0
        status, _, _ = await b.post("/admin/federation", {"setting": "federation_mode", "value": "blocklist"})
        assert status == 303

        await b.get("/admin/keyword_rules")
        status, body, _ = await b.post("/admin/keyword_rules", {"pattern": "#bad tag", "kind": "hashtag", "action": "reject"})
        assert status == 422 and await count(alpha, "SELECT count(*) FROM keyword_rules") == 0
        status, _, _ = await b.post("/admin/keyword_rules", {"pattern": "crypto giveaway", "kind": "keyword",
                                                             "action": "review", "whole_word": "1"})
        assert status == 303
        rule_id = await alpha.ctx.db.fetchval("SELECT id FROM keyword_rules")
        bob = await get_local_account(beta.ctx.db, "bob")
        held_post = await actions.create_status(beta.ctx, bob, PostRequest(text="free crypto giveaway today"))
        await network.drain()
        status, body, _ = await b.get(f"/admin/keyword_rules/{rule_id}")
        assert status == 200 and "caught 1 posts" in body and "crypto giveaway" in body
        status, body, _ = await b.get("/admin/held")
        assert status == 200 and "free crypto giveaway today" in body
        held_id = await alpha.ctx.db.fetchval("SELECT id FROM inbox_activities WHERE state = 'held'")
        status, _, _ = await b.post(f"/admin/held/{held_id}/release", {})
        assert status == 303
        await network.drain()
        assert await count(alpha, "SELECT count(*) FROM statuses WHERE uri = ?", held_post["uri"]) == 1
        status, _, _ = await b.post(f"/admin/held/{held_id}/drop", {})
        assert status == 404
        status, _, _ = await b.post(f"/admin/keyword_rules/{rule_id}/delete", {})
        assert status == 303 and await count(alpha, "SELECT count(*) FROM keyword_rules") == 0
        assert [(a, action) for a, action, _ in await audit(alpha)] == [
            (root_id, "domain_allow.create"), (root_id, "setting.federation_mode"), (root_id, "domain_allow.remove"),
            (root_id, "setting.federation_mode"), (root_id, "create"), (root_id, "release"), (root_id, "delete")]
    finally:
        await b.close()
