"""Real fedi instances federating on 127.0.0.1: follow, post, reply, like, boost, edit, delete."""

from __future__ import annotations

from typing import Any

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from outbox import actions
from outbox.actions import PostRequest
from tests.harness import Instance, Network


async def account(inst: Instance, name: str, **kw: Any) -> Any:
    await create_local_account(inst.ctx.db, inst.base, name, "password123", **kw)
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return row


async def follow(follower_inst: Instance, follower: Any, target_inst: Instance, name: str) -> str:
    uri = await resolve_handle(follower_inst.ctx, f"@{name}@{target_inst.config.instance.domain}")
    target = await get_actor(follower_inst.ctx, uri)
    return await actions.follow(follower_inst.ctx, follower, target)


async def remote_row(inst: Instance, uri: str) -> Any:
    return await inst.ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (uri,))


async def three_instances(network: Network) -> tuple[Instance, Instance, Instance]:
    return (await network.add("alpha.test"), await network.add("beta.test"), await network.add("gamma.test"))


async def test_follow_post_and_one_delivery_per_shared_inbox(network: Network) -> None:
    alpha, beta, gamma = await three_instances(network)
    alice = await account(alpha, "alice")
    bob, carol = await account(beta, "bob"), await account(beta, "carol")
    dave = await account(gamma, "dave")
    for inst, who in ((beta, bob), (beta, carol), (gamma, dave)):
        assert await follow(inst, who, alpha, "alice") == "requested"
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM follows WHERE target_account_id = ? AND state = 'accepted'", (alice["id"],)
    ) == 3
    for inst in (beta, gamma):
        assert await inst.ctx.db.fetchval("SELECT count(*) FROM follows WHERE state = 'accepted'") >= 1

    status = await actions.create_status(alpha.ctx, alice, PostRequest(text="Hello **fediverse** #fedi"))
    create_row = await alpha.ctx.db.fetchone("SELECT id FROM outbox_activities WHERE type = 'Create'")
    deliveries = await alpha.ctx.db.fetchall(
        "SELECT inbox_url FROM deliveries WHERE activity_id = ?", (create_row["id"],)
    )
    assert sorted(d["inbox_url"] for d in deliveries) == [beta.base + "/inbox", gamma.base + "/inbox"]
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM deliveries WHERE state != 'delivered'") == 0

    for inst, reader in ((beta, bob), (beta, carol), (gamma, dave)):
        row = await inst.ctx.db.fetchone(
            "SELECT s.content, s.visibility FROM home_feed h JOIN statuses s ON s.id = h.status_id"
            " WHERE h.account_id = ? AND s.uri = ?", (reader["id"], status["uri"])
        )
        assert row is not None, f"{inst.name} did not get the post"
        assert "<strong>fediverse</strong>" in row["content"] and row["visibility"] == "public"
    # beta received the Create once for its two followers
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM inbox_activities WHERE type = 'Create'") == 1


async def test_locked_account_approval(network: Network) -> None:
    alpha, beta, _ = await three_instances(network)
    erin = await account(alpha, "erin", locked=True)
    bob = await account(beta, "bob")
    await follow(beta, bob, alpha, "erin")
    await network.drain()
    pending = await alpha.ctx.db.fetchone("SELECT * FROM follows WHERE target_account_id = ?", (erin["id"],))
    assert pending["state"] == "pending"
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM notifications WHERE account_id = ? AND type = 'follow_request'", (erin["id"],)
    ) == 1
    assert await beta.ctx.db.fetchval("SELECT state FROM follows WHERE account_id = ?", (bob["id"],)) == "pending"
    bob_on_alpha = await remote_row(alpha, bob["uri"])
    await actions.answer_follow_request(alpha.ctx, erin, bob_on_alpha, accept=True)
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT state FROM follows WHERE account_id = ?", (bob["id"],)) == "accepted"

    carol = await account(beta, "carol")
    await follow(beta, carol, alpha, "erin")
    await network.drain()
    carol_on_alpha = await remote_row(alpha, carol["uri"])
    await actions.answer_follow_request(alpha.ctx, erin, carol_on_alpha, accept=False)
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM follows WHERE account_id = ?", (carol["id"],)) == 0


async def test_reply_like_boost_undo_edit_delete_profile(network: Network) -> None:
    alpha, beta, gamma = await three_instances(network)
    alice = await account(alpha, "alice")
    bob = await account(beta, "bob")
    dave = await account(gamma, "dave")
    await follow(beta, bob, alpha, "alice")
    await follow(gamma, dave, beta, "bob")
    await network.drain()
    post = await actions.create_status(alpha.ctx, alice, PostRequest(text="original post"))
    await network.drain()
    on_beta = await beta.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (post["uri"],))
    assert on_beta is not None

    # reply from bob: alice is mentioned, notified, and the reply threads under her post
    reply = await actions.create_status(
        beta.ctx, bob, PostRequest(text="a reply", in_reply_to_id=on_beta["id"])
    )
    await network.drain()
    got = await alpha.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (reply["uri"],))
    assert got is not None and got["in_reply_to_id"] == post["id"]
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM notifications WHERE account_id = ? AND type = 'mention'", (alice["id"],)
    ) == 1

    # like and undo
    await actions.favourite(beta.ctx, bob, on_beta["id"])
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM favourites WHERE status_id = ?", (post["id"],)) == 1
    await actions.unfavourite(beta.ctx, bob, on_beta["id"])
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM favourites WHERE status_id = ?", (post["id"],)) == 0

    # boost reaches the author and the booster's followers (dave on gamma fetches the original)
    await actions.reblog(beta.ctx, bob, on_beta["id"])
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM statuses WHERE reblog_of_id = ? AND deleted_at IS NULL", (post["id"],)
    ) == 1
    boosted = await gamma.ctx.db.fetchone(
        "SELECT b.id FROM statuses b JOIN statuses o ON o.id = b.reblog_of_id JOIN home_feed h ON h.status_id = b.id"
        " WHERE o.uri = ? AND h.account_id = ?", (post["uri"], dave["id"])
    )
    assert boosted is not None
    await actions.unreblog(beta.ctx, bob, on_beta["id"])
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM statuses WHERE reblog_of_id = ? AND deleted_at IS NULL", (post["id"],)
    ) == 0

    # edit: content replaced, history kept
    await actions.edit_status(alpha.ctx, alice, post["id"], "edited post")
    await network.drain()
    edited = await beta.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (post["uri"],))
    assert "edited post" in edited["content"] and edited["edited_at"] is not None
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM status_edits WHERE status_id = ?", (edited["id"],)) == 1

    # actor update: the new display name arrives (refetched from alpha)
    await actions.update_profile(alpha.ctx, alice, display_name="Alice A.")
    await network.drain()
    assert (await remote_row(beta, alice["uri"]))["display_name"] == "Alice A."

    # delete: tombstoned on beta, 410 at the origin
    await actions.delete_status(alpha.ctx, alice, post["id"])
    await network.drain()
    deleted = await beta.ctx.db.fetchone("SELECT deleted_at FROM statuses WHERE uri = ?", (post["uri"],))
    assert deleted["deleted_at"] is not None
    async with alpha.session.get(
        alpha.url(f"/users/alice/statuses/{post['id']}"), headers={"Accept": "application/activity+json"}
    ) as resp:
        assert resp.status == 410
        assert (await resp.json(content_type=None))["type"] == "Tombstone"

    # unfollow reaches alpha
    alice_on_beta = await remote_row(beta, alice["uri"])
    await actions.unfollow(beta.ctx, bob, alice_on_beta)
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows WHERE target_account_id = ?", (alice["id"],)) == 0


async def test_block_severs_follows_both_ways(network: Network) -> None:
    alpha, beta, _ = await three_instances(network)
    alice = await account(alpha, "alice")
    bob = await account(beta, "bob")
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    bob_on_alpha = await remote_row(alpha, bob["uri"])
    await actions.block(alpha.ctx, alice, bob_on_alpha)
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM blocks") == 1
    # a new Follow from the blocked account is rejected
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
