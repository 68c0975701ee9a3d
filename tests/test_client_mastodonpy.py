"""Mastodon.py, the library most bots use, against two running fedi instances (issue 3).

Alice signs up on alpha through the API, signs in through the real authorize
form, posts with an image and a poll, reads every timeline, follows Bob on beta
and gets his posts, and hears Bob's follow on the notification stream. Mastodon.py
is synchronous (requests), so its calls run in threads while the instances serve
in the test's event loop; federation is stepped with `network.drain()`.
"""

from __future__ import annotations

import asyncio
import io
import threading
from typing import Any

from mastodon import Mastodon, StreamListener
from PIL import Image

from tests.harness import Instance, Network
from tests.live_instance import PASSWORD, TestDns, api_base, code_from_redirect, sign_in

REDIRECT = "https://bot.example/callback"
SCOPES = ["read", "write", "follow", "push"]


def _new_user(network: Network, inst: Instance, username: str) -> Mastodon:
    """Sign up through the API, then sign in through the authorize page: a new user's first minute."""
    dns = TestDns(network)
    client_id, client_secret = Mastodon.create_app(
        "fedi e2e bot", scopes=SCOPES, redirect_uris=REDIRECT, website="https://bot.example",
        api_base_url=api_base(inst), session=dns)
    signup = Mastodon(client_id, client_secret, api_base_url=api_base(inst), session=dns, version_check_mode="changed")
    assert signup.create_account(username, PASSWORD, f"{username}@mail.example", agreement=True, scopes=SCOPES)
    api = Mastodon(client_id, client_secret, api_base_url=api_base(inst), session=dns, version_check_mode="changed")
    url = api.auth_request_url(redirect_uris=REDIRECT, scopes=SCOPES, state="s1", allow_http=True)
    code = code_from_redirect(sign_in(dns, url, username, PASSWORD), REDIRECT)
    api.log_in(code=code, redirect_uri=REDIRECT, scopes=SCOPES, allow_http=True)
    return api


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


class Listener(StreamListener):
    """Collects notifications from the stream; `ready` is set by the first heartbeat (subscribed)."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.got = threading.Event()
        self.notifications: list[Any] = []

    def handle_heartbeat(self) -> None:
        self.ready.set()

    def on_notification(self, notification: Any) -> None:
        self.notifications.append(notification)
        self.got.set()


async def _wait(event: threading.Event, what: str, seconds: float = 10) -> None:
    assert await asyncio.to_thread(event.wait, seconds), f"timed out waiting for {what}"


async def test_mastodonpy_end_to_end(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "open"})
    beta = await network.add("beta.test", instance={"registrations": "open"})
    run = asyncio.to_thread
    alice = await run(_new_user, network, alpha, "alice")
    bob = await run(_new_user, network, beta, "bob")

    me = await run(alice.account_verify_credentials)
    assert me.username == "alice" and me.acct == "alice" and isinstance(me.id, str)
    assert (await run(alice.app_verify_credentials)).name == "fedi e2e bot"
    info = await run(alice.instance)
    assert info.uri == alpha.config.instance.domain and "compatible; fedi" in info.version
    assert alice.verify_minimum_version("4.0.0", cached=True)

    # Alice listens for notifications; Bob finds her over WebFinger and follows her.
    listener = Listener()
    handle = await run(alice.stream_user, listener, run_async=True, timeout=15)
    try:
        await _wait(listener.ready, "the stream to open")
        found = await run(bob.search_v2, f"alice@{alpha.config.instance.domain}", resolve=True, result_type="accounts")
        assert [a.acct for a in found.accounts] == [f"alice@{alpha.config.instance.domain}"]
        await run(bob.account_follow, found.accounts[0])
        await network.drain()
        await _wait(listener.got, "the follow notification on the stream")
    finally:
        await run(handle.close)
    streamed = listener.notifications[0]
    assert streamed.type == "follow" and streamed.account.acct == f"bob@{beta.config.instance.domain}"
    listed = await run(alice.notifications)
    assert [(n.type, n.account.acct) for n in listed] == [("follow", f"bob@{beta.config.instance.domain}")]

    # Alice finds Bob and follows him back (account search this time).
    hits = await run(alice.account_search, f"bob@{beta.config.instance.domain}", resolve=True)
    bob_there = next(a for a in hits if a.acct == f"bob@{beta.config.instance.domain}")
    await run(alice.account_follow, bob_there)
    await network.drain()
    rel = (await run(alice.account_relationships, bob_there))[0]
    assert rel.following and rel.followed_by

    # Posting: an image with alt text and a hashtag, a poll.
    media = await run(alice.media_post, _png(), mime_type="image/png", description="a pink rectangle")
    assert media.type == "image" and media.description == "a pink rectangle"
    pic = await run(alice.status_post, "A picture #FediTest", media_ids=[media])
    assert [m.id for m in pic.media_attachments] == [media.id]
    assert [t.name.lower() for t in pic.tags] == ["feditest"]
    poll_post = await run(alice.status_post, "Tea or coffee?", poll=alice.make_poll(["tea", "coffee"], expires_in=3600))
    assert [o.title for o in poll_post.poll.options] == ["tea", "coffee"]

    # Bob posts; federation brings it to Alice's home and list timelines.
    bobs = await run(bob.status_post, "Hello from beta")
    await network.drain()
    home = await run(alice.timeline_home)
    assert {"Hello from beta", "Tea or coffee?", "A picture"} <= {_text(s.content) for s in home}
    from_bob = next(s for s in home if s.account.acct == f"bob@{beta.config.instance.domain}")
    assert (await run(alice.timeline_local))[0].id == poll_post.id
    assert {s.id for s in await run(alice.timeline_public)} >= {pic.id, poll_post.id}
    assert [s.id for s in await run(alice.timeline_hashtag, "feditest")] == [pic.id]
    friends = await run(alice.list_create, "friends")
    await run(alice.list_accounts_add, friends, [bob_there])
    assert [s.id for s in await run(alice.timeline_list, friends)] == [from_bob.id]

    # Bob sees Alice's poll (he follows her) and votes; the count reaches alpha.
    theirs = next(s for s in await run(bob.timeline_home) if s.poll is not None)
    assert theirs.account.acct == f"alice@{alpha.config.instance.domain}"
    await run(bob.poll_vote, theirs.poll, [1])
    await network.drain()
    assert [o.votes_count for o in (await run(alice.poll, poll_post.poll)).options] == [0, 1]

    # Favourite, boost, bookmark and reply to Bob's post; he is told about the first two.
    assert (await run(alice.status_favourite, from_bob)).favourited
    assert (await run(alice.status_reblog, from_bob)).reblog.id == from_bob.id
    assert (await run(alice.status_bookmark, from_bob)).bookmarked
    assert [s.id for s in await run(alice.bookmarks)] == [from_bob.id]
    reply = await run(alice.status_reply, from_bob, "Hello back")
    context = await run(alice.status_context, from_bob)
    assert [s.id for s in context.descendants] == [reply.id] and context.ancestors == []
    await network.drain()
    told = await run(bob.notifications)
    assert {n.type for n in told} >= {"favourite", "reblog", "mention", "follow"}
    assert (await run(bob.status, bobs)).favourites_count == 1


def _text(html: str) -> str:
    import re

    return re.sub(r"<[^>]+>", "", html).split(" #")[0].strip()
