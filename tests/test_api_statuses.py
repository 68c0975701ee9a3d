"""Status verbs, threads, edits, polls and scheduled posts through the client API, on real instances."""

from __future__ import annotations

import time

from actors.local import get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.api.scheduled import ScheduledPublisher
from fedi.clock import iso
from outbox import actions
from tests.api_calls import call, count, post
from tests.api_client import user_token
from tests.harness import Instance, Network


async def follow(inst: Instance, name: str, target: Instance, target_name: str) -> None:
    """`name` on `inst` follows `target_name` on `target` (the federation verb; the accounts API is elsewhere)."""
    me = await get_local_account(inst.ctx.db, name)
    uri = await resolve_handle(inst.ctx, f"@{target_name}@{target.config.instance.domain}")
    await actions.follow(inst.ctx, me, await get_actor(inst.ctx, uri))


async def test_favourite_reblog_bookmark_pin_round_trips(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    note = await post(alpha, alice, "hello")
    sid = note["id"]
    base = f"/api/v1/statuses/{sid}"

    code, fav, _ = await call(alpha, "POST", f"{base}/favourite", bob)
    assert code == 200 and fav["favourited"] is True and fav["favourites_count"] == 1
    code, again, _ = await call(alpha, "POST", f"{base}/favourite", bob)
    assert code == 200 and again["favourites_count"] == 1
    _, seen_by_alice, _ = await call(alpha, "GET", base, alice)
    assert seen_by_alice["favourites_count"] == 1 and seen_by_alice["favourited"] is False
    code, favers, _ = await call(alpha, "GET", f"{base}/favourited_by")
    assert code == 200 and [a["acct"] for a in favers] == ["bob"]

    code, boost, _ = await call(alpha, "POST", f"{base}/reblog", bob)
    assert code == 200 and boost["id"] != sid and boost["reblog"]["id"] == sid
    assert boost["reblog"]["reblogged"] is True and boost["reblog"]["reblogs_count"] == 1
    code, boosters, _ = await call(alpha, "GET", f"{base}/reblogged_by", alice)
    assert code == 200 and [a["acct"] for a in boosters] == ["bob"]

    code, marked, _ = await call(alpha, "POST", f"{base}/bookmark", bob)
    assert code == 200 and marked["bookmarked"] is True
    code, bookmarks, headers = await call(alpha, "GET", "/api/v1/bookmarks", bob)
    assert code == 200 and [s["id"] for s in bookmarks] == [sid] and 'rel="next"' in headers["Link"]
    _, favourites, _ = await call(alpha, "GET", "/api/v1/favourites", bob)
    assert [s["id"] for s in favourites] == [sid]
    _, none_for_alice, _ = await call(alpha, "GET", "/api/v1/bookmarks", alice)
    assert none_for_alice == []

    _, undone, _ = await call(alpha, "POST", f"{base}/unfavourite", bob)
    assert undone["favourited"] is False and undone["favourites_count"] == 0
    _, unboosted, _ = await call(alpha, "POST", f"{base}/unreblog", bob)
    assert unboosted["id"] == sid and unboosted["reblogged"] is False and unboosted["reblogs_count"] == 0
    _, unmarked, _ = await call(alpha, "POST", f"{base}/unbookmark", bob)
    assert unmarked["bookmarked"] is False
    assert (await call(alpha, "GET", "/api/v1/bookmarks", bob))[1] == []
    assert (await call(alpha, "GET", "/api/v1/favourites", bob))[1] == []

    code, pinned, _ = await call(alpha, "POST", f"{base}/pin", alice)
    assert code == 200 and pinned["pinned"] is True
    code, err, _ = await call(alpha, "POST", f"{base}/pin", bob)
    assert code == 422 and "Someone else" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM status_pins") == 1
    for n in range(4):
        more = await post(alpha, alice, f"pin me {n}")
        assert (await call(alpha, "POST", f"/api/v1/statuses/{more['id']}/pin", alice))[0] == 200
    sixth = await post(alpha, alice, "one too many")
    code, err, _ = await call(alpha, "POST", f"/api/v1/statuses/{sixth['id']}/pin", alice)
    assert code == 422 and "maximum" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM status_pins") == 5
    _, unpinned, _ = await call(alpha, "POST", f"{base}/unpin", alice)
    assert unpinned["pinned"] is False


async def test_remote_favourite_and_boost_arrive(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(beta, "bob")
    await follow(beta, "bob", alpha, "alice")
    await network.drain()
    note = await post(alpha, alice, "from alpha")
    await network.drain()
    _, home, _ = await call(beta, "GET", "/api/v1/timelines/home", bob)
    copy = next(s for s in home if s["uri"] == note["uri"])
    assert (await call(beta, "POST", f"/api/v1/statuses/{copy['id']}/favourite", bob))[0] == 200
    assert (await call(beta, "POST", f"/api/v1/statuses/{copy['id']}/reblog", bob))[0] == 200
    await network.drain()
    _, seen, _ = await call(alpha, "GET", f"/api/v1/statuses/{note['id']}", alice)
    assert seen["favourites_count"] == 1 and seen["reblogs_count"] == 1
    _, favers, _ = await call(alpha, "GET", f"/api/v1/statuses/{note['id']}/favourited_by", alice)
    assert [a["acct"] for a in favers] == [f"bob@{beta.config.instance.domain}"]
    _, boosters, _ = await call(alpha, "GET", f"/api/v1/statuses/{note['id']}/reblogged_by", alice)
    assert [a["acct"] for a in boosters] == [f"bob@{beta.config.instance.domain}"]


async def test_context_of_a_three_level_thread(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob, carol = await user_token(alpha, "alice"), await user_token(alpha, "bob"), await user_token(alpha, "carol")
    root = await post(alpha, alice, "root")
    middle = await post(alpha, bob, "middle", in_reply_to_id=root["id"])
    leaf = await post(alpha, alice, "leaf", in_reply_to_id=middle["id"])
    hidden = await post(alpha, carol, "followers only", in_reply_to_id=root["id"], visibility="private")

    code, ctx, _ = await call(alpha, "GET", f"/api/v1/statuses/{middle['id']}/context")
    assert code == 200
    assert [s["id"] for s in ctx["ancestors"]] == [root["id"]]
    assert [s["id"] for s in ctx["descendants"]] == [leaf["id"]]
    _, from_root, _ = await call(alpha, "GET", f"/api/v1/statuses/{root['id']}/context")
    assert from_root["ancestors"] == [] and [s["id"] for s in from_root["descendants"]] == [middle["id"], leaf["id"]]
    _, as_carol, _ = await call(alpha, "GET", f"/api/v1/statuses/{root['id']}/context", carol)
    assert [s["id"] for s in as_carol["descendants"]] == [middle["id"], leaf["id"], hidden["id"]]
    _, from_leaf, _ = await call(alpha, "GET", f"/api/v1/statuses/{leaf['id']}/context", bob)
    assert [s["id"] for s in from_leaf["ancestors"]] == [root["id"], middle["id"]] and from_leaf["descendants"] == []

    code, many, _ = await call(alpha, "GET", f"/api/v1/statuses?id[]={leaf['id']}&id[]={hidden['id']}&id[]=x"
                               f"&id[]={root['id']}")
    assert code == 200 and [s["id"] for s in many] == [leaf["id"], root["id"]]


async def test_edit_then_history_and_source(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    note = await post(alpha, alice, "first *draft*")
    path = f"/api/v1/statuses/{note['id']}"

    code, err, _ = await call(alpha, "PUT", path, bob, data={"status": "hijacked"})
    assert code == 404 and err == {"error": "Record not found"}
    code, err, _ = await call(alpha, "PUT", path, alice, data={"status": "with media", "media_ids[]": "123"})
    assert code == 422 and "media" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM status_edits") == 0

    code, edited, _ = await call(alpha, "PUT", path, alice, data={"status": "final text", "spoiler_text": "cw"})
    assert code == 200 and "final text" in edited["content"] and edited["spoiler_text"] == "cw"
    assert edited["edited_at"] is not None and edited["sensitive"] is True

    code, history, _ = await call(alpha, "GET", f"{path}/history")
    assert code == 200 and len(history) == 2
    assert "<em>draft</em>" in history[0]["content"] and history[0]["spoiler_text"] == ""
    assert "final text" in history[1]["content"] and history[1]["spoiler_text"] == "cw"
    assert history[0]["created_at"] == note["created_at"] and history[1]["created_at"] == edited["edited_at"]
    for version in history:
        assert set(version) == {"content", "spoiler_text", "sensitive", "created_at", "account", "poll",
                                "media_attachments", "emojis"}
        assert version["account"]["acct"] == "alice"

    code, source, _ = await call(alpha, "GET", f"{path}/source", alice)
    assert code == 200 and source == {"id": note["id"], "text": "final text", "spoiler_text": "cw"}
    assert (await call(alpha, "GET", f"{path}/source"))[0] == 401


async def test_poll_votes_and_their_validation(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob, carol = await user_token(alpha, "alice"), await user_token(alpha, "bob"), await user_token(alpha, "carol")
    note = await post(alpha, alice, "which?", **{"poll[options][]": ["a", "b"], "poll[expires_in]": "600"})
    poll = note["poll"]
    assert [o["title"] for o in poll["options"]] == ["a", "b"] and poll["expired"] is False
    votes = f"/api/v1/polls/{poll['id']}/votes"

    code, err, _ = await call(alpha, "POST", votes, carol, data={"choices[]": "5"})
    assert code == 422 and "Validation failed" in err["error"]
    code, err, _ = await call(alpha, "POST", votes, carol, data=[("choices[]", "0"), ("choices[]", "1")])
    assert code == 422
    code, err, _ = await call(alpha, "POST", votes, carol, data={"choices[]": "first"})
    assert code == 422
    code, err, _ = await call(alpha, "POST", votes, alice, data={"choices[]": "0"})
    assert code == 422 and "own poll" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM poll_votes") == 0

    code, voted, _ = await call(alpha, "POST", votes, bob, data={"choices[]": "1"})
    assert code == 200 and voted["votes_count"] == 1 and voted["voters_count"] == 1
    assert [o["votes_count"] for o in voted["options"]] == [0, 1]
    assert voted["voted"] is True and voted["own_votes"] == [1]
    code, err, _ = await call(alpha, "POST", votes, bob, data={"choices[]": "0"})
    assert code == 422 and "already voted" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM poll_votes") == 1

    code, seen, _ = await call(alpha, "GET", f"/api/v1/polls/{poll['id']}", carol)
    assert code == 200 and seen["votes_count"] == 1 and seen["voted"] is False and seen["own_votes"] == []
    _, as_status, _ = await call(alpha, "GET", f"/api/v1/statuses/{note['id']}", bob)
    assert as_status["poll"]["own_votes"] == [1]

    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE polls SET expires_at = ? WHERE id = ?", (time.time() - 1, int(poll["id"])))
    code, err, _ = await call(alpha, "POST", votes, carol, data={"choices[]": "0"})
    assert code == 422 and "ended" in err["error"]


async def test_vote_on_a_remote_poll_counts_at_its_origin(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(beta, "bob")
    await follow(alpha, "alice", beta, "bob")
    await network.drain()
    origin = await post(beta, bob, "tea or coffee?", **{"poll[options][]": ["tea", "coffee"], "poll[expires_in]": "600"})
    await network.drain()
    _, home, _ = await call(alpha, "GET", "/api/v1/timelines/home", alice)
    copy = next(s for s in home if s["uri"] == origin["uri"])
    assert [o["title"] for o in copy["poll"]["options"]] == ["tea", "coffee"]

    code, voted, _ = await call(alpha, "POST", f"/api/v1/polls/{copy['poll']['id']}/votes", alice,
                                data={"choices[]": "1"})
    assert code == 200 and [o["votes_count"] for o in voted["options"]] == [0, 1] and voted["own_votes"] == [1]
    await network.drain()
    _, counted, _ = await call(beta, "GET", f"/api/v1/polls/{origin['poll']['id']}", bob)
    assert [o["votes_count"] for o in counted["options"]] == [0, 1] and counted["voters_count"] == 1
    assert await count(beta, "SELECT count(*) FROM statuses") == 1  # the vote is not stored as a reply
    code, _, _ = await call(alpha, "POST", f"/api/v1/polls/{copy['poll']['id']}/votes", alice, data={"choices[]": "0"})
    assert code == 422
    await network.drain()
    assert await count(beta, "SELECT count(*) FROM poll_votes") == 1


async def test_scheduled_statuses(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    soon = iso(time.time() + 60)
    code, err, _ = await call(alpha, "POST", "/api/v1/statuses", alice, data={"status": "too soon", "scheduled_at": soon})
    assert code == 422 and "future" in err["error"]
    code, err, _ = await call(alpha, "POST", "/api/v1/statuses", alice,
                              data={"status": "", "scheduled_at": iso(time.time() + 900)})
    assert code == 422
    bob_row = await get_local_account(alpha.ctx.db, "bob")
    async with alpha.ctx.db.write() as tx:
        await tx.execute("INSERT INTO media_attachments (id, account_id, type, created_at) VALUES (?, ?, 'image', ?)",
                         (4242, bob_row["id"], time.time()))
    code, err, _ = await call(alpha, "POST", "/api/v1/statuses", alice, data={
        "status": "with bob's picture", "media_ids[]": "4242", "scheduled_at": iso(time.time() + 900)})
    assert code == 422 and "media" in err["error"]
    assert await count(alpha, "SELECT count(*) FROM scheduled_statuses") == 0

    code, entity, _ = await call(alpha, "POST", "/api/v1/statuses", alice,
                                 data={"status": "later", "visibility": "unlisted", "scheduled_at": iso(time.time() + 600)})
    assert code == 200 and set(entity) == {"id", "scheduled_at", "params", "media_attachments"}
    assert entity["params"]["text"] == "later" and entity["params"]["visibility"] == "unlisted"
    assert entity["params"]["poll"] is None and entity["media_attachments"] == []
    path = f"/api/v1/scheduled_statuses/{entity['id']}"
    _, listed, _ = await call(alpha, "GET", "/api/v1/scheduled_statuses", alice)
    assert [s["id"] for s in listed] == [entity["id"]]
    assert (await call(alpha, "GET", "/api/v1/timelines/home", alice))[1] == []
    assert await count(alpha, "SELECT count(*) FROM statuses") == 0

    for method in ("GET", "PUT", "DELETE"):
        code, err, _ = await call(alpha, method, path, bob, data={"scheduled_at": iso(time.time() + 3600)})
        assert code == 404 and err == {"error": "Record not found"}
    assert (await call(alpha, "GET", "/api/v1/scheduled_statuses", bob))[1] == []
    code, _, _ = await call(alpha, "PUT", path, alice, data={"scheduled_at": soon})
    assert code == 422
    later = time.time() + 1200
    code, moved, _ = await call(alpha, "PUT", path, alice, data={"scheduled_at": iso(later)})
    assert code == 200 and moved["scheduled_at"] == iso(later)

    publisher = ScheduledPublisher(alpha.ctx)
    assert await publisher.run_once(time.time() + 900) == 0
    assert await publisher.run_once(later + 1) == 1
    _, home, _ = await call(alpha, "GET", "/api/v1/timelines/home", alice)
    assert [s["content"] for s in home] == ["<p>later</p>"] and home[0]["visibility"] == "unlisted"
    assert (await call(alpha, "GET", "/api/v1/scheduled_statuses", alice))[1] == []
    assert (await call(alpha, "GET", path, alice))[0] == 404


async def test_hidden_statuses_are_not_found(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    secret = await post(alpha, alice, "followers only", visibility="private",
                        **{"poll[options][]": ["x", "y"], "poll[expires_in]": "600"})
    for verb in ("favourite", "reblog", "bookmark", "pin"):
        code, err, _ = await call(alpha, "POST", f"/api/v1/statuses/{secret['id']}/{verb}", bob)
        assert code == 404 and err == {"error": "Record not found"}
    for what in ("context", "history", "favourited_by", "reblogged_by", "source"):
        assert (await call(alpha, "GET", f"/api/v1/statuses/{secret['id']}/{what}", bob))[0] == 404
    assert (await call(alpha, "GET", f"/api/v1/polls/{secret['poll']['id']}", bob))[0] == 404
    assert (await call(alpha, "POST", f"/api/v1/polls/{secret['poll']['id']}/votes", bob,
                       data={"choices[]": "0"}))[0] == 404
    for table in ("favourites", "bookmarks", "status_pins", "poll_votes"):
        assert await count(alpha, f"SELECT count(*) FROM {table}") == 0
    assert await count(alpha, "SELECT count(*) FROM statuses") == 1
    code, err, _ = await call(alpha, "POST", f"/api/v1/statuses/{secret['id']}/favourite", await user_token(
        alpha, "reader", scopes="read"))
    assert code == 403
