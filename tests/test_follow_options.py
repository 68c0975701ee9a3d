"""Follow options (reblogs, notify, languages) through the client API, applied as posts arrive.

Real instances on 127.0.0.1: local authors post through the API or `outbox.actions`,
remote authors on another fedi instance reach alpha through real federation.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from actors.remote import get_actor
from actors.webfinger import resolve_handle
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import api, user
from tests.api_client import bearer
from tests.harness import Instance, Network


async def follow(inst: Instance, token: str, account_id: int, **options: Any) -> dict[str, Any]:
    status, rel = await api(inst, "POST", f"/api/v1/accounts/{account_id}/follow", token, json=options)
    assert status == 200, rel
    return rel


async def home(inst: Instance, token: str) -> list[str]:
    status, page = await api(inst, "GET", "/api/v1/timelines/home", token)
    assert status == 200, page
    return [s["id"] for s in page]


async def notified(inst: Instance, account_id: int, kind: str = "status") -> list[int]:
    rows = await inst.ctx.db.fetchall(
        "SELECT status_id FROM notifications WHERE account_id = ? AND type = ? ORDER BY id", (account_id, kind)
    )
    return [r[0] for r in rows]


async def post(inst: Instance, author: Any, text: str, **kw: Any) -> str:
    return str((await actions.create_status(inst.ctx, author, PostRequest(text=text, **kw)))["id"])


async def test_options_shape_the_home_feed_and_notifications(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, carol = await user(alpha, "carol")
    _, dave = await user(alpha, "dave")
    daves = await actions.create_status(alpha.ctx, dave, PostRequest(text="dave's post"))
    early_boost = await actions.reblog(alpha.ctx, carol, daves["id"])
    carol_early = await post(alpha, carol, "carol before the follow")

    rel = await follow(alpha, alice_token, bob["id"], notify=True, languages=["en", "de", "en"])
    assert rel["following"] is True and rel["notifying"] is True and rel["showing_reblogs"] is True
    assert rel["languages"] == ["en", "de"]
    rel = await follow(alpha, alice_token, carol["id"], reblogs=False)
    assert rel["showing_reblogs"] is False and rel["notifying"] is False and rel["languages"] is None
    feed = await home(alpha, alice_token)
    assert carol_early in feed and str(early_boost["id"]) not in feed  # the follow's backfill honours reblogs=false

    english = await post(alpha, bob, "hello", language="en")
    british = await post(alpha, bob, "colour", language="en-GB")
    unknown = await post(alpha, bob, "no language given")
    french = await post(alpha, bob, "bonjour", language="fr")
    self_reply = await post(alpha, bob, "and another thing", in_reply_to_id=int(english))
    other_reply = await post(alpha, bob, "replying to dave", in_reply_to_id=daves["id"])
    bob_boost = await actions.reblog(alpha.ctx, bob, daves["id"])
    carol_boost = await actions.reblog(alpha.ctx, carol, int(english))
    carol_post = await post(alpha, carol, "carol speaks")

    feed = await home(alpha, alice_token)
    for shown in (english, british, unknown, self_reply, other_reply, str(bob_boost["id"]), carol_post):
        assert shown in feed
    assert french not in feed and str(carol_boost["id"]) not in feed
    # a `status` notification for bob's own posts and self-replies in alice's languages; none for
    # replies to others, boosts, other languages, or from carol (notify off)
    assert [str(s) for s in await notified(alpha, alice["id"])] == [english, british, unknown, self_reply]
    status, listed = await api(alpha, "GET", "/api/v1/notifications?types[]=status", alice_token)
    assert status == 200 and [n["status"]["id"] for n in listed] == [self_reply, unknown, british, english]
    assert all(n["account"]["username"] == "bob" for n in listed)

    # following again changes only what is given, and makes no new follow or notification
    follows_before = await alpha.ctx.db.fetchval("SELECT count(*) FROM follows")
    follow_notes = len(await notified(alpha, carol["id"], "follow"))
    rel = await follow(alpha, alice_token, carol["id"], reblogs=True)
    assert rel["showing_reblogs"] is True and rel["following"] is True
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == follows_before
    assert len(await notified(alpha, carol["id"], "follow")) == follow_notes
    rel = await follow(alpha, alice_token, bob["id"], languages=[])
    assert rel["languages"] is None and rel["notifying"] is True  # absent notify: unchanged
    second_boost = await actions.reblog(alpha.ctx, carol, int(unknown))
    french_again = await post(alpha, bob, "encore", language="fr")
    feed = await home(alpha, alice_token)
    assert str(second_boost["id"]) in feed and french_again in feed
    assert str((await notified(alpha, alice["id"]))[-1]) == french_again
    rel = await follow(alpha, alice_token, bob["id"], notify="false")
    assert rel["notifying"] is False
    quiet = await post(alpha, bob, "nobody is told")
    assert quiet in await home(alpha, alice_token) and int(quiet) not in await notified(alpha, alice["id"])


async def test_boosts_hidden_from_the_user_stream(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token, _ = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, dave = await user(alpha, "dave")
    await follow(alpha, alice_token, bob["id"], reblogs=False)
    daves = await actions.create_status(alpha.ctx, dave, PostRequest(text="dave's post"))
    assert alpha.session is not None
    ws = await alpha.session.ws_connect(alpha.url("/api/v1/streaming?stream=user"), headers=bearer(alice_token))
    await ws.send_json({"type": "subscribe", "stream": "no-such-stream"})  # answered: the subscription is live
    assert json.loads((await asyncio.wait_for(ws.receive(), 5)).data)["status"] == 400
    await actions.reblog(alpha.ctx, bob, daves["id"])
    own = await post(alpha, bob, "an original")
    message = await asyncio.wait_for(ws.receive(), 5)
    assert message.type == aiohttp.WSMsgType.TEXT
    event = json.loads(message.data)
    assert event["event"] == "update" and json.loads(event["payload"])["id"] == own  # the boost never came
    await ws.close()


async def test_bad_options_are_refused_and_store_nothing(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, carol = await user(alpha, "carol")
    await follow(alpha, alice_token, carol["id"], languages=["en"])
    for bad in ({"languages": [1]}, {"languages": ["english"]}, {"languages": ["EN"]}, {"languages": [["en"]]},
                {"languages": {"x": {"y": "en"}}}, {"reblogs": "maybe"}, {"notify": ["true"]},
                {"languages": [f"{a}{b}" for a in "abcdefghijk" for b in "abcdefghijk"]}):
        for target in (bob, carol):
            status, body = await api(alpha, "POST", f"/api/v1/accounts/{target['id']}/follow", alice_token, json=bad)
            assert status == 422 and "error" in body, (bad, body)
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM follows WHERE account_id = ? AND target_account_id = ?", (alice["id"], bob["id"])) == 0
    row = await alpha.ctx.db.fetchone(
        "SELECT show_reblogs, notify, languages_json FROM follows WHERE account_id = ? AND target_account_id = ?",
        (alice["id"], carol["id"]))
    assert tuple(row) == (1, 0, '["en"]')
    status, body = await api(alpha, "POST", "/api/v1/accounts/999999/follow", alice_token, json={"notify": True})
    assert status == 404 and body == {"error": "Record not found"}


async def test_remote_authors_follow_options(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice_token, alice = await user(alpha, "alice")
    _, bob = await user(beta, "bob")
    _, eve = await user(beta, "eve")
    _, zoe = await user(beta, "zoe")
    domain = beta.config.instance.domain
    remote = {name: await get_actor(alpha.ctx, await resolve_handle(alpha.ctx, f"@{name}@{domain}"))
              for name in ("bob", "eve")}
    rel = await follow(alpha, alice_token, remote["bob"]["id"], notify=True, languages=["en"])
    assert rel["requested"] is True and rel["notifying"] is True and rel["languages"] == ["en"]
    rel = await follow(alpha, alice_token, remote["eve"]["id"], reblogs=False)
    assert rel["requested"] is True and rel["showing_reblogs"] is False
    await network.drain()
    status, rels = await api(alpha, "GET", "/api/v1/accounts/relationships", alice_token,
                             params=[("id[]", str(remote["bob"]["id"])), ("id[]", str(remote["eve"]["id"]))])
    assert status == 200 and [(r["following"], r["notifying"], r["showing_reblogs"]) for r in rels] == [
        (True, True, True), (True, False, False)]

    zoes = await actions.create_status(beta.ctx, zoe, PostRequest(text="zoe's post"))
    english = await actions.create_status(beta.ctx, bob, PostRequest(text="hello alpha", language="en"))
    french = await actions.create_status(beta.ctx, bob, PostRequest(text="bonjour alpha", language="fr"))
    await actions.create_status(beta.ctx, bob, PostRequest(text="to zoe", in_reply_to_id=zoes["id"]))
    await actions.reblog(beta.ctx, eve, english["id"])
    eves = await actions.create_status(beta.ctx, eve, PostRequest(text="eve's own"))
    await network.drain()

    ids = {}
    for name, row in (("english", english), ("french", french), ("eve", eves)):
        ids[name] = str(await alpha.ctx.db.fetchval("SELECT id FROM statuses WHERE uri = ?", (row["uri"],)))
    eve_boost = await alpha.ctx.db.fetchval(
        "SELECT id FROM statuses WHERE account_id = ? AND reblog_of_id IS NOT NULL", (remote["eve"]["id"],))
    assert eve_boost is not None  # the boost arrived, but stays out of alice's home feed
    feed = await home(alpha, alice_token)
    assert ids["english"] in feed and ids["eve"] in feed and ids["french"] not in feed and str(eve_boost) not in feed
    assert [str(s) for s in await notified(alpha, alice["id"])] == [ids["english"]]

    # following again only changes the options: no second Follow goes out
    follows_sent = await alpha.ctx.db.fetchval("SELECT count(*) FROM outbox_activities WHERE type = 'Follow'")
    rel = await follow(alpha, alice_token, remote["bob"]["id"], notify=False)
    assert rel["following"] is True and rel["notifying"] is False and rel["languages"] == ["en"]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM outbox_activities WHERE type = 'Follow'") == follows_sent
    later = await actions.create_status(beta.ctx, bob, PostRequest(text="quietly", language="en"))
    await network.drain()
    later_id = await alpha.ctx.db.fetchval("SELECT id FROM statuses WHERE uri = ?", (later["uri"],))
    assert str(later_id) in await home(alpha, alice_token) and later_id not in await notified(alpha, alice["id"])
