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
import re
import threading
from datetime import datetime
from typing import Any

import pytest
from mastodon import Mastodon, MastodonAPIError, MastodonNotFoundError, StreamListener
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
    signup = Mastodon(client_id, client_secret, api_base_url=api_base(inst), session=dns, version_check_mode="created")
    assert signup.create_account(username, PASSWORD, f"{username}@mail.example", agreement=True, scopes=SCOPES)
    api = Mastodon(client_id, client_secret, api_base_url=api_base(inst), session=dns, version_check_mode="created")
    url = api.auth_request_url(redirect_uris=REDIRECT, scopes=SCOPES, state="s1", allow_http=True)
    code = code_from_redirect(sign_in(dns, url, username, PASSWORD), REDIRECT)
    api.log_in(code=code, redirect_uri=REDIRECT, scopes=SCOPES, allow_http=True)
    return api


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 40, 90)).save(out, "PNG")
    return out.getvalue()


def _text(html: str) -> str:
    """A status's text without markup and trailing hashtags, to compare with what was posted."""
    return re.sub(r"<[^>]+>", "", html).split(" #")[0].strip()


class Listener(StreamListener):
    """Collects the first notification and hangs up, as a one-shot bot does.

    `ready` is set by the server's first heartbeat, sent once the stream is subscribed. Closing from the
    stream's own thread returns at once; from another thread it waits for the blocked read to time out."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.got = threading.Event()
        self.notifications: list[Any] = []
        self.handle: Any = None

    def handle_heartbeat(self) -> None:
        self.ready.set()

    def on_notification(self, notification: Any) -> None:
        self.notifications.append(notification)
        self.handle.close()
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
    assert info.domain == alpha.config.instance.domain and "compatible; fedi" in info.version
    assert (await run(alice.instance_v1)).uri == alpha.config.instance.domain
    assert alice.verify_minimum_version("4.0.0", cached=True)

    # Alice listens for notifications; Bob finds her over WebFinger and follows her.
    listener = Listener()
    listener.handle = handle = await run(alice.stream_user, listener, run_async=True, timeout=15)
    try:
        await _wait(listener.ready, "the stream to open")
        found = await run(bob.search_v2, f"alice@{alpha.config.instance.domain}", resolve=True, result_type="accounts")
        assert [a.acct for a in found.accounts] == [f"alice@{alpha.config.instance.domain}"]
        await run(bob.account_follow, found.accounts[0])
        await network.drain()
        await _wait(listener.got, "the follow notification on the stream")
        await run(handle.join, 5)
        assert not handle.is_alive()
    finally:
        if handle.is_alive():  # only after a failure: bounded by the stream's 15 s read timeout
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
    shown = await run(alice.session.get, media.url, timeout=10)
    assert shown.status_code == 200 and shown.headers["Content-Type"].startswith("image/")
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
    first = await run(alice.timeline_home, limit=2)
    rest = await run(alice.fetch_next, first)  # follows the Link header
    assert [s.id for s in first + rest] == [s.id for s in home]
    assert (await run(alice.timeline_local))[0].id == poll_post.id
    assert {s.id for s in await run(alice.timeline_public)} >= {pic.id, poll_post.id}
    assert [s.id for s in await run(alice.timeline_hashtag, "feditest")] == [pic.id]
    friends = await run(alice.list_create, "friends")
    await run(alice.list_accounts_add, friends, [bob_there])
    assert [s.id for s in await run(alice.timeline_list, friends)] == [from_bob.id]

    # Bob sees Alice's poll (he follows her) and votes; the count reaches alpha.
    bob_home = await run(bob.timeline_home)
    their_pic = next(s for s in bob_home if s.media_attachments)
    assert [m.description for m in their_pic.media_attachments] == ["a pink rectangle"]
    theirs = next(s for s in bob_home if s.poll is not None)
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


async def test_mastodonpy_everyday_api(network: Network) -> None:
    """The rest of what bots and apps call, on one instance: profile, edits, pins, DMs, filters, markers."""
    alpha = await network.add("alpha.test", instance={"registrations": "open"})
    run = asyncio.to_thread
    alice = await run(_new_user, network, alpha, "alice")
    carol = await run(_new_user, network, alpha, "carol")
    carol_me = await run(carol.me)

    me = await run(alice.account_update_credentials, display_name="Alice A.", note="Hi, I post #pictures",
                   avatar=_png(), avatar_mime_type="image/png", fields=[("Site", "https://alice.example")])
    assert me.display_name == "Alice A." and me.fields[0].name == "Site" and me.avatar.startswith("http")
    assert (await run(alice.account_lookup, "alice")).display_name == "Alice A."
    assert (await run(alice.preferences))["posting:default:visibility"] == "public"

    first = await run(alice.status_post, "First draft", spoiler_text="cw", language="en", visibility="unlisted")
    edited = await run(alice.status_update, first, "Second draft", spoiler_text="cw")
    assert _text(edited.content) == "Second draft" and edited.edited_at is not None
    assert [_text(e.content) for e in await run(alice.status_history, first)] == ["First draft", "Second draft"]
    assert (await run(alice.status_source, first)).text == "Second draft"
    assert (await run(alice.status_pin, first)).pinned
    assert [s.id for s in await run(alice.account_statuses, me, pinned=True)] == [first.id]

    # Carol follows, favourites and writes a direct message; Alice filters notifications by type.
    await run(carol.account_follow, me)
    await run(carol.status_favourite, first)
    dm = await run(carol.status_post, "@alice just between us", visibility="direct")
    only = await run(alice.notifications, types=["favourite"])
    assert [(n.type, n.account.id) for n in only] == [("favourite", carol_me.id)]
    rest = await run(alice.notifications, exclude_types=["favourite"])
    assert {n.type for n in rest} == {"follow", "mention"}
    conversations = await run(alice.conversations)
    assert [c.last_status.id for c in conversations] == [dm.id] and conversations[0].unread
    assert not (await run(alice.conversations_read, conversations[0])).unread

    markers = await run(alice.markers_set, ["home"], [edited])
    assert markers["home"].last_read_id == edited.id
    assert (await run(alice.markers_get, ["home"]))["home"].last_read_id == edited.id

    hide = await run(alice.create_filter_v2, "no drafts", ["home"], "hide",
                     keywords_attributes=[{"keyword": "draft", "whole_word": True}])
    assert [k.keyword for k in hide.keywords] == ["draft"]
    assert [f.title for f in await run(alice.filters_v2)] == ["no drafts"]
    await run(alice.delete_filter_v2, hide)
    assert await run(alice.filters_v2) == []

    tag = await run(alice.tag_follow, "pictures")
    assert tag.following and [t.name for t in await run(alice.followed_tags)] == ["pictures"]
    found = await run(alice.search_v2, "carol", result_type="accounts")
    assert [a.id for a in found.accounts] == [carol_me.id]
    rel = (await run(alice.account_relationships, [carol_me]))[0]
    assert rel.followed_by and not rel.following
    await run(alice.status_delete, first)
    assert [s.id for s in await run(alice.account_statuses, me)] == []

    # Errors reach the library as JSON it can read; the rate-limit headers parse.
    before = await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses")
    with pytest.raises(MastodonAPIError) as refused:
        await run(alice.status_post, "x" * 5001)
    assert refused.value.args[1] == 422 and "characters" in refused.value.args[3]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses") == before
    private = await run(carol.status_post, "followers only", visibility="private")
    with pytest.raises(MastodonNotFoundError):
        await run(alice.status, private)  # Alice does not follow Carol
    assert 0 < alice.ratelimit_remaining < alice.ratelimit_limit == 300
    assert isinstance(edited.created_at, datetime) and edited.created_at.tzinfo is not None
