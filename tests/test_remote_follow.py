"""Remote interaction between two real instances: the WebFinger subscribe link, `/authorize_interaction`
and the profile page's "follow from your instance" form.

alpha has `alice` (an ordinary user, signed in through the admin sign-in form, as a browser would),
beta has `bob`. Every refusal is checked to leave the database as it was.
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Any
from urllib.parse import quote, unquote, urlencode

from actors.webfinger import SUBSCRIBE
from fedi.api.ratelimit import RATE_LIMITER, Rule
from outbox import actions
from outbox.actions import PostRequest
from tests.harness import Instance, Network
from tests.peer import Peer
from tests.test_admin_pages import account, count
from tests.web_client import Browser, browser

JRD = "application/jrd+json"
ACCOUNT_ID = re.compile(r'name="account_id" value="(\d+)"')
TABLES = ("accounts", "follows", "outbox_activities", "deliveries", "statuses")


async def pair(network: Network) -> tuple[Instance, Instance]:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    await account(alpha, "alice")
    await account(beta, "bob")
    return alpha, beta


def acct(inst: Instance, name: str) -> str:
    return f"{name}@{inst.config.instance.domain}"


async def snapshot(*instances: Instance) -> list[int]:
    return [await count(inst, f"SELECT count(*) FROM {table}") for inst in instances for table in TABLES]


def interaction(uri: str) -> str:
    return "/authorize_interaction?" + urlencode({"uri": uri})


async def test_webfinger_has_the_subscribe_template(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await account(alpha, "alice")
    async with alpha.session.get(alpha.url("/.well-known/webfinger"),  # type: ignore[union-attr]
                                 params={"resource": f"acct:{acct(alpha, 'alice')}"}) as resp:
        assert resp.status == 200 and resp.content_type == JRD
        doc = await resp.json(content_type=JRD)
    links = {link["rel"]: link for link in doc["links"]}
    assert links[SUBSCRIBE] == {"rel": SUBSCRIBE, "template": f"{alpha.base}/authorize_interaction?uri={{uri}}"}


async def test_signed_in_user_follows_a_remote_account(network: Network) -> None:
    alpha, beta = await pair(network)
    bob_uri = f"{beta.base}/users/bob"
    b = await browser(alpha, "alice")
    try:
        for spelling in (acct(beta, "bob"), "@" + acct(beta, "bob"), "acct:" + acct(beta, "bob"), bob_uri):
            status, body, headers = await b.get(interaction(spelling))
            assert status == 200, body
            assert headers["Cache-Control"] == "no-store" and "form-action 'self'" in headers["Content-Security-Policy"]
            assert "@bob@" + beta.config.instance.domain in body and "Signed in as <strong>@alice</strong>" in body
            assert 'action="/authorize_interaction"' in body and ">Follow</button>" in body
        found = ACCOUNT_ID.search(body)
        assert found is not None
        assert await count(alpha, "SELECT count(*) FROM accounts WHERE uri = ?", bob_uri) == 1, "stored once"

        status, body, headers = await b.post("/authorize_interaction", {"account_id": found.group(1)})
        assert status == 303 and headers["Location"] == interaction(bob_uri)
        assert await count(alpha, "SELECT count(*) FROM follows WHERE state = 'pending'") == 1
        status, body, _ = await b.get(headers["Location"])
        assert status == 200 and "waiting for their approval" in body and ">Follow</button>" not in body

        await network.drain()  # the Follow reaches beta, which accepts; the Accept comes back
        assert await count(beta, "SELECT count(*) FROM follows f JOIN accounts a ON a.id = f.account_id"
                                 " WHERE a.uri = ? AND f.state = 'accepted'", f"{alpha.base}/users/alice") == 1
        assert await count(alpha, "SELECT count(*) FROM follows WHERE state = 'accepted'") == 1
        status, body, _ = await b.get(interaction(bob_uri))
        assert status == 200 and "You follow @bob@" in body

        status, body, _ = await b.post("/authorize_interaction", {"account_id": found.group(1)})
        assert status == 303, "following again changes nothing"
        assert await count(alpha, "SELECT count(*) FROM follows") == 1

        status, body, _ = await b.get(interaction(acct(alpha, "alice")))
        assert status == 200 and "This is you." in body and ">Follow</button>" not in body
    finally:
        await b.close()


async def test_a_remote_post_is_shown_and_linked(network: Network) -> None:
    alpha, beta = await pair(network)
    bob = await beta.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'bob'")
    post = await actions.create_status(beta.ctx, bob, PostRequest("a post seen elsewhere"))
    b = await browser(alpha, "alice")
    try:
        status, body, _ = await b.get(interaction(post["uri"]))
        assert status == 200, body
        assert "a post seen elsewhere" in body and "Post by @bob@" in body
        assert f'href="{post["url"] or post["uri"]}">Open the post' in body
        assert f'href="{interaction(bob["uri"])}"' in body, "the author's own page is a click away"
        assert await count(alpha, "SELECT count(*) FROM statuses WHERE uri = ?", post["uri"]) == 1
    finally:
        await b.close()


async def test_authorize_interaction_refusals_store_nothing(network: Network) -> None:
    alpha, beta = await pair(network)
    bob_uri = f"{beta.base}/users/bob"
    anonymous = Browser(alpha)
    b = await browser(alpha, "alice")
    try:
        before = await snapshot(alpha, beta)
        status, body, _ = await anonymous.get(interaction(acct(beta, "bob")))
        assert status == 401 and "Sign in first" in body
        link = re.search(r'href="/admin/login\?next=([^"]+)"', body)
        assert link is not None and unquote(link.group(1)) == f"/authorize_interaction?uri={acct(beta, 'bob')}"
        status, body, _ = await anonymous.post("/authorize_interaction", {"account_id": "1"}, csrf=False)
        assert status == 401 and "Sign in first" in body

        for uri, expected in (("", 400), ("   ", 400), ("not an address", 400), ("javascript:alert(1)", 400),
                              ("x" * 3000, 400),
                              ("http://10.1.2.3/users/x", 404), ("eve@10.1.2.3", 404), ("http://169.254.169.254/", 404),
                              ("eve@unknown.test", 404), (f"{beta.base}/users/nobody", 404),
                              (acct(beta, "nobody"), 404), (acct(alpha, "nobody"), 404)):
            status, body, _ = await b.get(interaction(uri) if uri else "/authorize_interaction")
            assert status == expected, (uri, status, body)
            assert "Follow</button>" not in body
        assert await snapshot(alpha, beta) == before, "nothing stored for refused or unresolvable addresses"

        status, body, _ = await b.get(interaction(bob_uri))  # resolves bob (stored), shows the form
        found = ACCOUNT_ID.search(body)
        assert status == 200 and found is not None
        before = await snapshot(alpha, beta)
        for form in ({"account_id": found.group(1)}, {"account_id": found.group(1), "csrf": "forged"}):
            status, body, _ = await b.post("/authorize_interaction", form, csrf=False)
            assert status == 403 and "Form expired" in body
        for bad in ("", "abc", "99999999", "1" * 30):
            status, body, _ = await b.post("/authorize_interaction", {"account_id": bad})
            assert status == 404, (bad, body)
        alice = await alpha.ctx.db.fetchone("SELECT id FROM accounts WHERE username = 'alice' AND domain IS NULL")
        status, body, _ = await b.post("/authorize_interaction", {"account_id": str(alice["id"])})
        assert status == 422 and "follow yourself" in body
        status, body, _ = await b.post("/authorize_interaction", {"account_id": str(alpha.ctx.instance_actor_id)})
        assert status == 404
        assert await snapshot(alpha, beta) == before
    finally:
        await anonymous.close()
        await b.close()


async def test_blocked_accounts_cannot_be_followed(network: Network) -> None:
    alpha, beta = await pair(network)
    b = await browser(alpha, "alice")
    try:
        status, body, _ = await b.get(interaction(acct(beta, "bob")))
        found = ACCOUNT_ID.search(body)
        assert status == 200 and found is not None
        alice = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice' AND domain IS NULL")
        bob = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (int(found.group(1)),))
        await actions.block(alpha.ctx, alice, bob)
        status, body, _ = await b.post("/authorize_interaction", {"account_id": found.group(1)})
        assert status == 403 and "not allowed" in body
        assert await count(alpha, "SELECT count(*) FROM follows") == 0
    finally:
        await b.close()


async def remote_follow(inst: Instance, username: str, data: dict[str, Any]) -> tuple[int, str, Any]:
    async with inst.session.post(inst.url(f"/users/{username}/remote_follow"), data=data,  # type: ignore[union-attr]
                                 allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp.headers


async def test_profile_form_sends_the_visitor_to_their_server(network: Network) -> None:
    alpha, beta = await pair(network)
    async with beta.session.get(beta.url("/@bob"), headers={"Accept": "text/html"}) as resp:  # type: ignore[union-attr]
        page = await resp.text()
    assert 'action="/users/bob/remote_follow"' in page and 'name="acct"' in page

    bob_uri = f"{beta.base}/users/bob"
    for handle in (acct(alpha, "alice"), "@" + acct(alpha, "alice"), " acct:" + acct(alpha, "alice") + " "):
        status, body, headers = await remote_follow(beta, "bob", {"acct": handle})
        assert status == 303, body
        assert headers["Location"] == f"{alpha.base}/authorize_interaction?uri={quote(bob_uri, safe='')}"
    status, _, headers = await remote_follow(beta, "BOB", {"acct": acct(beta, "bob")})  # a local visitor
    assert status == 303 and headers["Location"].startswith(f"{beta.base}/authorize_interaction?uri=")

    _, _, headers = await remote_follow(beta, "bob", {"acct": acct(alpha, "alice")})
    b = await browser(alpha, "alice")  # alice lands on her own server's page, signed in, with the Follow button
    try:
        status, body, _ = await b.get(headers["Location"].removeprefix(alpha.base))
        assert status == 200 and ">Follow</button>" in body and "@bob@" + beta.config.instance.domain in body
    finally:
        await b.close()


async def test_profile_form_failures_are_readable(network: Network) -> None:
    alpha, beta = await pair(network)
    peer = await Peer(network, "nolink.test").start()
    try:
        domain = f"nolink.test:{peer.port}"
        for user, template in (("eve", None), ("mal", "javascript:alert(1)//{uri}"), ("odd", "https://x.test/no-uri")):
            links: list[dict[str, Any]] = [{"rel": "self", "type": "application/activity+json",
                                            "href": f"{peer.base}/users/{user}"}]
            if template:
                links.append({"rel": SUBSCRIBE, "template": template})
            peer.serve(f"/.well-known/webfinger?resource=acct:{user}@{domain}",  # as the peer sees the query
                       {"subject": f"acct:{user}@{domain}", "links": links}, content_type=JRD)
        before = await snapshot(alpha, beta)
        for handle, expected, text in (
            ("", 400, "Type your own handle"), ("   ", 400, "Type your own handle"),
            ("not a handle", 400, "not a user@domain handle"), ("x" * 400 + "@a.test", 400, "Type your own handle"),
            (f"eve@{domain}", 404, "does not offer remote follows"),
            (f"mal@{domain}", 404, "does not offer remote follows"),
            (f"odd@{domain}", 404, "does not offer remote follows"),
            ("eve@10.1.2.3", 404, "Could not find where"), ("eve@unknown.test", 404, "Could not find where"),
            (acct(alpha, "nobody"), 404, "Could not find where"), (acct(beta, "nobody"), 404, "no such local account"),
        ):
            status, body, headers = await remote_follow(beta, "bob", {"acct": handle})
            assert status == expected and text in body, (handle, status, body)
            assert "Location" not in headers and f'href="{beta.base}/@bob"' in body, "no redirect; a way back"
        status, body, _ = await remote_follow(beta, "nobody", {"acct": acct(alpha, "alice")})
        assert status == 404
        assert await snapshot(alpha, beta) == before, "looking up a visitor's server stores nothing"
    finally:
        await peer.close()


async def test_profile_form_is_rate_limited(network: Network) -> None:
    alpha, beta = await pair(network)
    limiter = beta.app[RATE_LIMITER]  # type: ignore[index]
    limiter.limits = replace(limiter.limits, login_ip=Rule(2, 300))
    for _ in range(2):
        status, _, _ = await remote_follow(beta, "bob", {"acct": acct(alpha, "alice")})
        assert status == 303
    status, body, headers = await remote_follow(beta, "bob", {"acct": acct(alpha, "alice")})
    assert status == 429 and "Too many" in body and "Location" not in headers


async def test_sign_in_from_the_interaction_page_comes_back_to_it(network: Network) -> None:
    alpha, beta = await pair(network)
    target = interaction(f"{beta.base}/users/bob")  # a URL: its "//" must survive the round trip encoded
    visitor = Browser(alpha)
    try:
        status, body, _ = await visitor.get(target)
        assert status == 401
        link = re.search(r'href="(/admin/login\?next=[^"]+)"', body)
        assert link is not None
        status, body, _ = await visitor.get(html.unescape(link.group(1)))
        assert status == 200
        token = re.search(r'name="login_token" value="([^"]+)"', body)
        next_path = re.search(r'name="next" value="([^"]+)"', body)
        assert token is not None and next_path is not None
        status, _, headers = await visitor.post("/admin/login", {
            "login_token": token.group(1), "username": "alice", "password": "password123",
            "next": html.unescape(next_path.group(1))}, csrf=False)
        assert status == 303 and unquote(headers["Location"]) == unquote(target)
        status, body, _ = await visitor.get(headers["Location"])
        assert status == 200 and "Follow" in body
    finally:
        await visitor.close()


async def test_sign_in_never_sends_a_browser_to_another_site(network: Network) -> None:
    alpha, _ = await pair(network)
    visitor = Browser(alpha)
    try:
        for hostile in ("//evil.test/x", "https://evil.test/", "/admin//evil.test", "/authorize_interaction\\evil.test",
                        "/\\evil.test", "/authorize_interaction/../..//evil.test"):
            status, body, _ = await visitor.get("/admin/login?" + urlencode({"next": hostile}))
            next_path = re.search(r'name="next" value="([^"]*)"', body)
            assert status == 200 and next_path is not None and html.unescape(next_path.group(1)) == "/admin", hostile
    finally:
        await visitor.close()
