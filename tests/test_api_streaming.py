"""The streaming API against real instances: WebSocket and server-sent events (THREATS O4)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.api.streaming import HUB
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import user
from tests.api_client import REDIRECT, authorize, bearer, register_app, user_token
from tests.harness import Instance, Network

STATUS_KEYS = {"id", "uri", "url", "account", "in_reply_to_id", "in_reply_to_account_id", "reblog", "content",
               "created_at", "edited_at", "emojis", "replies_count", "reblogs_count", "favourites_count", "reblogged",
               "favourited", "muted", "bookmarked", "pinned", "sensitive", "spoiler_text", "visibility",
               "media_attachments", "mentions", "tags", "card", "poll", "application", "language", "text", "filtered"}


async def _ws(inst: Instance, token: str | None = None, query: str = "", **kw: Any) -> aiohttp.ClientWebSocketResponse:
    assert inst.session is not None
    headers = bearer(token) if token else {}
    return await inst.session.ws_connect(inst.url(f"/api/v1/streaming{query}"), headers=headers, **kw)


async def _event(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> dict[str, Any]:
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return json.loads(message.data)


async def _sync(ws: aiohttp.ClientWebSocketResponse) -> None:
    """The server handles messages in order: once this bad subscribe is answered, earlier ones are done."""
    await ws.send_json({"type": "subscribe", "stream": "no-such-stream"})
    assert await _event(ws) == {"error": "Unknown stream type", "status": 400}


async def _post(inst: Instance, author: Any, text: str, **kw: Any) -> Any:
    return await actions.create_status(inst.ctx, author, PostRequest(text=text, **kw))


def _status(event: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(event["payload"], str)
    status = json.loads(event["payload"])
    assert STATUS_KEYS <= status.keys()
    return status


async def test_health_and_tokens_are_required(network: Network) -> None:
    alpha = await network.add("alpha.test")
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/api/v1/streaming/health")) as resp:
        assert resp.status == 200 and resp.content_type == "text/plain" and await resp.text() == "OK"
    for token in (None, "not-a-token"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as failed:
            await _ws(alpha, token, "?stream=public")
        assert failed.value.status == 401
        async with alpha.session.get(alpha.url("/api/v1/streaming/public"), headers=bearer(token) if token else {}) as resp:
            assert resp.status == 401 and "error" in await resp.json()
    assert not alpha.app[HUB].by_token


async def test_user_stream_gets_followed_posts_and_notifications(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, carol = await user(alpha, "carol")
    await actions.follow(alpha.ctx, alice, bob)
    ws = await _ws(alpha, token, "?stream=user")
    await _sync(ws)
    await _post(alpha, carol, "not followed, so not on alice's stream")
    followed = await _post(alpha, bob, "hello from bob")
    event = await _event(ws)
    assert event["stream"] == ["user"] and event["event"] == "update"
    status = _status(event)
    assert status["id"] == str(followed["id"]) and status["account"]["username"] == "bob"
    assert "hello from bob" in status["content"]

    mention = await _post(alpha, carol, "@alice are you there?")
    first, second = await _event(ws), await _event(ws)
    assert [first["event"], second["event"]] == ["update", "notification"]  # a mention lands in the home feed too
    notification = json.loads(second["payload"])
    assert notification["type"] == "mention" and notification["account"]["username"] == "carol"
    assert notification["status"]["id"] == str(mention["id"]) and notification["id"].isdigit()

    await actions.delete_status(alpha.ctx, bob, followed["id"])
    event = await _event(ws)
    assert event == {"stream": ["user"], "event": "delete", "payload": str(followed["id"])}
    await ws.close()


async def test_token_in_query_and_in_websocket_protocol(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    by_query = await _ws(alpha, None, f"?access_token={token}&stream=public:local")
    by_protocol = await _ws(alpha, None, "?stream=public", protocols=(token,))
    assert by_protocol.protocol == token
    for ws in (by_query, by_protocol):
        await _sync(ws)
    post = await _post(alpha, alice, "public words")
    await _post(alpha, alice, "only followers", visibility="private")
    await _post(alpha, alice, "unlisted words", visibility="unlisted")
    last = await _post(alpha, alice, "public again")
    for ws, stream in ((by_query, ["public:local"]), (by_protocol, ["public"])):
        events = [await _event(ws), await _event(ws)]
        assert [e["stream"] for e in events] == [stream, stream]
        assert [_status(e)["id"] for e in events] == [str(post["id"]), str(last["id"])]
        await ws.close()


async def test_remote_post_arrives_on_public_streams(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    token, alice = await user(alpha, "alice")
    _, bob = await user(beta, "bob")
    target = await get_actor(alpha.ctx, await resolve_handle(alpha.ctx, f"@bob@{beta.config.instance.domain}"))
    await actions.follow(alpha.ctx, alice, target)
    await network.drain()
    ws = await _ws(alpha, token, "?stream=public:remote")
    await ws.send_json({"type": "subscribe", "stream": "user"})
    await _sync(ws)
    await _post(alpha, alice, "local, so not on public:remote")
    post = await _post(beta, bob, "greetings from #beta")
    await network.drain()
    events = [await _event(ws), await _event(ws), await _event(ws)]
    local, *remote = events
    assert local["stream"] == ["user"] and "local, so not" in _status(local)["content"]
    assert sorted(e["stream"][0] for e in remote) == ["public:remote", "user"]
    for event in remote:
        status = _status(event)
        assert status["uri"] == post["uri"] and status["account"]["acct"] == f"bob@{beta.config.instance.domain}"
    await ws.close()


async def test_hashtag_subscribe_and_unsubscribe(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    ws = await _ws(alpha, token)
    await ws.send_json({"type": "subscribe", "stream": "hashtag", "tag": "Cats"})
    await ws.send_json({"type": "subscribe", "stream": "hashtag:local", "tag": "dogs"})
    await ws.send_json({"type": "subscribe", "stream": "hashtag"})
    assert await _event(ws) == {"error": "No valid tag for stream provided", "status": 400}
    await _sync(ws)
    cats = await _post(alpha, alice, "look #cats")
    event = await _event(ws)
    assert event["stream"] == ["hashtag", "cats"] and _status(event)["id"] == str(cats["id"])
    await ws.send_json({"type": "unsubscribe", "stream": "hashtag", "tag": "cats"})
    await _sync(ws)
    await _post(alpha, alice, "more #cats")
    dogs = await _post(alpha, alice, "now #dogs")
    event = await _event(ws)
    assert event["stream"] == ["hashtag:local", "dogs"] and _status(event)["id"] == str(dogs["id"])
    await ws.send_str("not json")
    assert (await _event(ws))["status"] == 400
    await ws.close()


async def test_edit_and_direct_streams(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    await actions.follow(alpha.ctx, alice, bob)
    ws = await _ws(alpha, token, "?stream=direct")
    await ws.send_json({"type": "subscribe", "stream": "public"})
    await _sync(ws)
    dm = await _post(alpha, bob, "@alice just between us", visibility="direct")
    event = await _event(ws)
    assert event["stream"] == ["direct"] and event["event"] == "conversation"
    conversation = json.loads(event["payload"])
    assert conversation["id"].isdigit() and conversation["unread"] is True
    assert [a["username"] for a in conversation["accounts"]] == ["bob"]
    assert conversation["last_status"]["id"] == str(dm["id"]) and conversation["last_status"]["visibility"] == "direct"
    public = await _post(alpha, bob, "first draft")
    assert _status(await _event(ws))["id"] == str(public["id"])
    await actions.edit_status(alpha.ctx, bob, public["id"], "second draft")
    event = await _event(ws)
    assert event["event"] == "status.update" and "second draft" in _status(event)["content"]
    await ws.close()


async def test_list_stream_only_for_its_owner(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    other_token, _ = await user(alpha, "mallory")
    _, bob = await user(alpha, "bob")
    await actions.follow(alpha.ctx, alice, bob)
    async with alpha.ctx.db.write() as tx:
        list_id = tx.new_id()
        await tx.execute("INSERT INTO lists (id, account_id, title, created_at) VALUES (?, ?, 'friends', 0)",
                         (list_id, alice["id"]))
        await tx.execute("INSERT INTO list_accounts (list_id, account_id) VALUES (?, ?)", (list_id, bob["id"]))
    assert alpha.session is not None
    async with alpha.session.get(alpha.url(f"/api/v1/streaming/list?list={list_id}"), headers=bearer(other_token)) as resp:
        assert resp.status == 404 and await resp.json() == {"error": "Record not found"}
    foreign = await _ws(alpha, other_token)
    await foreign.send_json({"type": "subscribe", "stream": "list", "list": str(list_id)})
    assert await _event(foreign) == {"error": "Record not found", "status": 404}
    ws = await _ws(alpha, token, f"?stream=list&list={list_id}")
    await _sync(ws)
    post = await _post(alpha, bob, "for my friends")
    event = await _event(ws)
    assert event["stream"] == ["list", str(list_id)] and _status(event)["id"] == str(post["id"])
    for socket in (ws, foreign):
        await socket.close()


async def test_blocks_and_filters_are_applied_per_listener(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token, alice = await user(alpha, "alice")
    other_token, _ = await user(alpha, "mallory")
    _, bob = await user(alpha, "bob")
    _, carol = await user(alpha, "carol")
    await actions.block(alpha.ctx, alice, carol)
    async with alpha.ctx.db.write() as tx:
        for action, keyword in (("hide", "spoilers"), ("warn", "movie")):
            filter_id = tx.new_id()
            await tx.execute("INSERT INTO filters (id, account_id, title, context_json, filter_action, created_at)"
                             " VALUES (?, ?, ?, '[\"public\"]', ?, 0)", (filter_id, alice["id"], keyword, action))
            await tx.execute("INSERT INTO filter_keywords (id, filter_id, keyword) VALUES (?, ?, ?)",
                             (tx.new_id(), filter_id, keyword))
    mine, theirs = await _ws(alpha, token, "?stream=public"), await _ws(alpha, other_token, "?stream=public")
    for ws in (mine, theirs):
        await _sync(ws)
    posts = [await _post(alpha, bob, "big spoilers here"), await _post(alpha, bob, "movie night"),
             await _post(alpha, carol, "hello from carol"), await _post(alpha, bob, "plain words")]
    seen = [_status(await _event(theirs)) for _ in posts]
    assert [s["id"] for s in seen] == [str(p["id"]) for p in posts] and all(s["filtered"] == [] for s in seen)
    warned, plain = _status(await _event(mine)), _status(await _event(mine))
    assert warned["id"] == str(posts[1]["id"]) and warned["filtered"][0]["keyword_matches"] == ["movie"]
    assert plain["id"] == str(posts[3]["id"]) and plain["filtered"] == []
    for ws in (mine, theirs):
        await ws.close()


async def _sse_line(resp: aiohttp.ClientResponse, timeout: float = 5.0) -> str:
    line = await asyncio.wait_for(resp.content.readline(), timeout)
    return line.decode().rstrip("\n")


async def test_server_sent_events(network: Network) -> None:
    alpha = await network.add("alpha.test")
    hub = alpha.app[HUB]
    hub.settings = replace(hub.settings, sse_heartbeat=0.2)
    token, alice = await user(alpha, "alice")
    notify_only, _ = await user(alpha, "nora", scopes="read:notifications")
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/api/v1/streaming/user"), headers=bearer(notify_only)) as resp:
        assert resp.status == 403
    async with alpha.session.get(alpha.url("/api/v1/streaming/hashtag?tag=a%20b"), headers=bearer(token)) as resp:
        assert resp.status == 400
    async with alpha.session.get(alpha.url("/api/v1/streaming/user"), headers=bearer(token)) as resp:
        assert resp.status == 200 and resp.content_type == "text/event-stream"
        assert await _sse_line(resp) == ":)"
        assert await _sse_line(resp) == ":thump"
        post = await _post(alpha, alice, "to myself, by SSE")
        line = await _sse_line(resp)
        while line == ":thump":
            line = await _sse_line(resp)
        assert line == "event: update"
        data = await _sse_line(resp)
        assert data.startswith("data: ") and json.loads(data[6:])["id"] == str(post["id"])
        assert await _sse_line(resp) == ""
    deadline = time.monotonic() + 2
    while hub.by_token and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not hub.by_token and not hub.subs, "a connection closed by the client stays registered"


async def _token_and_app(inst: Instance, name: str) -> tuple[str, dict[str, Any]]:
    await user_token(inst, name)
    app = await register_app(inst)
    code = await authorize(inst, app, name, "password123", "read write follow push")
    assert inst.session is not None
    async with inst.session.post(inst.url("/oauth/token"), data={
        "grant_type": "authorization_code", "code": code, "client_id": app["client_id"],
        "client_secret": app["client_secret"], "redirect_uri": REDIRECT,
    }) as resp:
        return (await resp.json())["access_token"], app


async def test_revoking_a_token_closes_its_streams_within_a_second(network: Network) -> None:
    alpha = await network.add("alpha.test")
    hub = alpha.app[HUB]
    token, app = await _token_and_app(alpha, "alice")
    other, bob = await user(alpha, "bob")
    ws = await _ws(alpha, token, "?stream=user")
    survivor = await _ws(alpha, other, "?stream=user")
    assert alpha.session is not None
    sse = await alpha.session.get(alpha.url("/api/v1/streaming/public"), headers=bearer(token))
    assert await _sse_line(sse) == ":)"
    await _sync(ws)
    started = time.monotonic()
    async with alpha.session.post(alpha.url("/oauth/revoke"), data={
        "token": token, "client_id": app["client_id"], "client_secret": app["client_secret"],
    }) as resp:
        assert resp.status == 200
    closed = await asyncio.wait_for(ws.receive(), 1.0)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED) and ws.closed
    assert await asyncio.wait_for(sse.content.read(), 1.0) == b""
    assert time.monotonic() - started < 1.5
    sse.release()
    assert [c.account_id for conns in hub.by_token.values() for c in conns] == [bob["id"]]
    assert not survivor.closed
    with pytest.raises(aiohttp.WSServerHandshakeError):
        await _ws(alpha, token, "?stream=user")
    await survivor.close()
