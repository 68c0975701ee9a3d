"""Conversation mutes: POST /api/v1/statuses/:id/mute and /unmute, and the notifications a muted thread no longer makes.

Real instances on 127.0.0.1; the remote replier and liker live on another fedi
instance and reach alpha through real federation.
"""

from __future__ import annotations

from typing import Any

from actors.remote import get_actor
from actors.webfinger import resolve_handle
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import api, user
from tests.api_client import user_token
from tests.harness import Instance, Network


async def post(inst: Instance, author: Any, text: str, **kw: Any) -> int:
    return int((await actions.create_status(inst.ctx, author, PostRequest(text=text, **kw)))["id"])


async def kinds(inst: Instance, account_id: int) -> list[str]:
    rows = await inst.ctx.db.fetchall("SELECT type FROM notifications WHERE account_id = ? ORDER BY id", (account_id,))
    return [r[0] for r in rows]


async def test_a_muted_thread_notifies_no_more(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice_token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, carol = await user(alpha, "carol")
    _, erin = await user(beta, "erin")
    alice_domain = alpha.config.instance.domain
    alice_on_beta = await get_actor(beta.ctx, await resolve_handle(beta.ctx, f"@alice@{alice_domain}"))
    await actions.follow(beta.ctx, erin, alice_on_beta)
    await network.drain()

    root = await post(alpha, alice, "a post that will go viral")
    await network.drain()
    reply = await post(alpha, bob, "first!", in_reply_to_id=root)
    deep = await post(alpha, carol, "@alice replying to bob", in_reply_to_id=reply)
    assert await kinds(alpha, alice["id"]) == ["follow", "mention", "mention"]

    status, muted = await api(alpha, "POST", f"/api/v1/statuses/{deep}/mute", alice_token)  # any status of the thread
    assert status == 200 and muted["id"] == str(deep) and muted["muted"] is True
    for status_id in (root, reply, deep):
        status, entity = await api(alpha, "GET", f"/api/v1/statuses/{status_id}", alice_token)
        assert status == 200 and entity["muted"] is True
    status, context = await api(alpha, "GET", f"/api/v1/statuses/{root}/context", alice_token)
    assert [s["muted"] for s in context["descendants"]] == [True, True]
    status, timeline = await api(alpha, "GET", "/api/v1/timelines/home", alice_token)
    assert {s["id"]: s["muted"] for s in timeline}[str(root)] is True
    bob_token = await user_token(alpha, "bob", create=False)
    status, entity = await api(alpha, "GET", f"/api/v1/statuses/{root}", bob_token)
    assert entity["muted"] is False  # the mute is alice's alone

    # nothing from the thread reaches alice: replies, mentions, favourites, boosts, local or remote
    await post(alpha, bob, "@alice still here", in_reply_to_id=deep)
    await actions.favourite(alpha.ctx, carol, root)
    await actions.reblog(alpha.ctx, bob, root)
    root_on_beta = await beta.ctx.db.fetchval("SELECT id FROM statuses WHERE uri LIKE ?", (f"%/{root}",))
    await actions.create_status(beta.ctx, erin, PostRequest(text="from beta", in_reply_to_id=root_on_beta))
    await actions.favourite(beta.ctx, erin, root_on_beta)
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM favourites WHERE status_id = ?", (root,)) == 2
    assert await alpha.ctx.db.fetchval(  # erin's reply arrived, mentioning alice
        "SELECT count(*) FROM statuses s JOIN mentions m ON m.status_id = s.id WHERE s.in_reply_to_id = ?"
        " AND s.local = 0 AND m.account_id = ?", (root, alice["id"])) == 1
    assert await kinds(alpha, alice["id"]) == ["follow", "mention", "mention"]
    # ...while the rest of alice's world still does
    await post(alpha, carol, "@alice elsewhere")
    assert await kinds(alpha, alice["id"]) == ["follow", "mention", "mention", "mention"]

    status, unmuted = await api(alpha, "POST", f"/api/v1/statuses/{root}/unmute", alice_token)
    assert status == 200 and unmuted["muted"] is False
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM conversation_mutes") == 0
    await actions.reblog(alpha.ctx, carol, root)
    assert (await kinds(alpha, alice["id"]))[-1] == "reblog"


async def test_followers_status_notifications_respect_a_muted_thread(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    status, _ = await api(alpha, "POST", f"/api/v1/accounts/{bob['id']}/follow", alice_token, json={"notify": True})
    assert status == 200
    thread = await post(alpha, bob, "a long thread, 1/n")
    other = await post(alpha, bob, "something else")
    status, _ = await api(alpha, "POST", f"/api/v1/statuses/{thread}/mute", alice_token)
    assert status == 200
    await post(alpha, bob, "2/n", in_reply_to_id=thread)
    fresh = await post(alpha, bob, "a new topic")
    rows = await alpha.ctx.db.fetchall(
        "SELECT status_id FROM notifications WHERE account_id = ? AND type = 'status' ORDER BY id", (alice["id"],))
    assert [r[0] for r in rows] == [thread, other, fresh]


async def test_unknown_hidden_or_unauthorised_statuses_store_no_mute(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token, _ = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    readonly, _ = await user(alpha, "carol", scopes="read")
    hidden = await post(alpha, bob, "followers only", visibility="private")
    shown = await post(alpha, bob, "public")
    for status_id in ("999999", str(hidden), "12345678901234567890123"):
        for verb in ("mute", "unmute"):
            status, body = await api(alpha, "POST", f"/api/v1/statuses/{status_id}/{verb}", alice_token)
            assert status == 404 and body == {"error": "Record not found"}, (status_id, verb, body)
    status, body = await api(alpha, "POST", f"/api/v1/statuses/{shown}/mute", readonly)
    assert status == 403 and "error" in body
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM conversation_mutes") == 0
    for _ in range(2):  # muting twice is one mute
        status, body = await api(alpha, "POST", f"/api/v1/statuses/{shown}/mute", alice_token)
        assert status == 200 and body["muted"] is True
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM conversation_mutes") == 1
