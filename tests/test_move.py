"""Aliases and Move, both directions: real fedi instances on 127.0.0.1, a scripted peer that speaks as Mastodon does.

alice moves from alpha to beta while carol on gamma (and dave on alpha) follow her;
a Mastodon account moves and alpha's followers follow its new account; bad Moves,
in the inbox and through the API, change nothing.
"""

from __future__ import annotations

import json
from typing import Any

from actors.remote import get_actor
from outbox import actions
from tests.api_calls import api, call, count, user
from tests.harness import Instance, Network
from tests.peer import AS2, Peer, PeerActor, send

PASSWORD = "password123"
MASTODON_CONTEXT: list[Any] = [
    "https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1",
    {"manuallyApprovesFollowers": "as:manuallyApprovesFollowers", "toot": "http://joinmastodon.org/ns#",
     "alsoKnownAs": {"@id": "as:alsoKnownAs", "@type": "@id"}, "movedTo": {"@id": "as:movedTo", "@type": "@id"}},
]


def handle(inst: Instance, name: str) -> str:
    return f"@{name}@{inst.config.instance.domain}"


async def remote_id(inst: Instance, uri: str) -> int:
    """The id `inst` knows a remote account by (fetched now if unknown)."""
    return int((await get_actor(inst.ctx, uri))["id"])


async def follows(inst: Instance, follower_id: int) -> dict[str, str]:
    rows = await inst.ctx.db.fetchall(
        "SELECT a.uri, f.state FROM follows f JOIN accounts a ON a.id = f.target_account_id WHERE f.account_id = ?",
        (follower_id,),
    )
    return {r["uri"]: r["state"] for r in rows}


async def moves_sent(inst: Instance) -> int:
    return await count(inst, "SELECT count(*) FROM outbox_activities WHERE type = 'Move'")


async def test_alice_moves_from_alpha_to_beta_and_her_followers_follow(network: Network) -> None:
    alpha, beta, gamma = [await network.add(n) for n in ("alpha.test", "beta.test", "gamma.test")]
    old_token, old = await user(alpha, "alice")
    new_token, new = await user(beta, "alice")
    carol_token, carol = await user(gamma, "carol")
    _, dave = await user(alpha, "dave")

    old_on_gamma = await remote_id(gamma, old["uri"])
    status, rel = await api(gamma, "POST", f"/api/v1/accounts/{old_on_gamma}/follow", carol_token)
    assert status == 200, rel
    await actions.follow(alpha.ctx, dave, old)
    await network.drain()
    assert await follows(gamma, carol["id"]) == {old["uri"]: "accepted"}
    status, lst = await api(gamma, "POST", "/api/v1/lists", carol_token, data={"title": "friends"})
    assert status == 200, lst
    status, body = await api(gamma, "POST", f"/api/v1/lists/{lst['id']}/accounts", carol_token,
                             data={"account_ids[]": str(old_on_gamma)})
    assert status == 200, body
    status, body = await api(gamma, "POST", f"/api/v1/accounts/{old_on_gamma}/mute", carol_token,
                             data={"notifications": "false"})
    assert status == 200, body

    # The new account names the old one (by handle, resolved over WebFinger); GoToSocial's answer shape.
    status, cred = await api(beta, "POST", "/api/v1/accounts/alias", new_token,
                             data={"also_known_as_uris[]": handle(alpha, "alice")})
    assert status == 200, cred
    assert cred["source"]["also_known_as_uris"] == [old["uri"]] and cred["id"] == str(new["id"])
    async with beta.session.get(beta.url("/users/alice"), headers={"Accept": AS2}) as resp:  # type: ignore[union-attr]
        doc = json.loads(await resp.read())
    assert doc["alsoKnownAs"] == [old["uri"]] and "movedTo" not in doc
    assert {"alsoKnownAs", "movedTo"} <= set(doc["@context"][2])

    status, body = await api(alpha, "POST", "/api/v1/accounts/move", old_token,
                             data={"password": PASSWORD, "moved_to_uri": new["uri"]})
    assert (status, body) == (202, {"message": "accepted"})
    await network.drain()

    # carol (gamma) follows the new account, accepted by beta, with her list and mute carried over.
    new_on_gamma = await remote_id(gamma, new["uri"])
    assert await follows(gamma, carol["id"]) == {new["uri"]: "accepted"}
    assert await count(gamma, "SELECT count(*) FROM list_accounts WHERE list_id = ? AND account_id = ?",
                       int(lst["id"]), new_on_gamma) == 1
    assert await count(gamma, "SELECT count(*) FROM mutes WHERE account_id = ? AND target_account_id = ?"
                       " AND notifications = 0", carol["id"], new_on_gamma) == 1
    status, notes = await api(gamma, "GET", "/api/v1/notifications?types[]=move", carol_token)
    assert status == 200 and len(notes) == 1, notes
    assert notes[0]["account"]["uri"] == old["uri"] and notes[0]["target"]["uri"] == new["uri"]
    assert notes[0]["account"]["moved"]["uri"] == new["uri"]
    # dave (alpha, same instance as the old account) moved at once, and beta knows both followers.
    assert await follows(alpha, dave["id"]) == {new["uri"]: "accepted"}
    followers = await beta.ctx.db.fetchall(
        "SELECT a.uri FROM follows f JOIN accounts a ON a.id = f.account_id WHERE f.target_account_id = ?"
        " AND f.state = 'accepted'", (new["id"],))
    assert {r["uri"] for r in followers} == {carol["uri"], dave["uri"]}
    # One Move, sent once to gamma (dave is local), signed by the old account.
    assert await moves_sent(alpha) == 1
    assert await count(alpha, "SELECT count(*) FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id"
                       " WHERE o.type = 'Move'") == 1
    assert await count(gamma, "SELECT count(*) FROM inbox_activities WHERE type = 'Move' AND state = 'processed'") == 1

    # The old account afterwards: profile redirects, JSON still served with movedTo, API shows `moved`.
    async with alpha.session.get(alpha.url("/@alice"), allow_redirects=False,  # type: ignore[union-attr]
                                 headers={"Accept": "text/html"}) as resp:
        assert resp.status == 302 and resp.headers["Location"] == new["url"]
    async with alpha.session.get(alpha.url("/users/alice"), allow_redirects=False,  # type: ignore[union-attr]
                                 headers={"Accept": "text/html"}) as resp:
        assert resp.status == 302 and resp.headers["Location"] == new["url"]
    async with alpha.session.get(alpha.url("/users/alice"), headers={"Accept": AS2}) as resp:  # type: ignore[union-attr]
        assert resp.status == 200 and json.loads(await resp.read())["movedTo"] == new["uri"]
    status, entity = await api(alpha, "GET", f"/api/v1/accounts/{old['id']}", old_token)
    assert status == 200 and entity["moved"]["uri"] == new["uri"] and entity["moved"]["acct"].startswith("alice@beta")
    status, body, _ = await call(alpha, "POST", "/api/v1/statuses", old_token, data={"status": "still here?"})
    assert status == 422 and body["error"].endswith(f"this account has moved to {new['uri']}")
    # It can still sign in and read.
    status, me = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", old_token)
    assert status == 200 and me["moved"]["uri"] == new["uri"]
    status, _ = await api(alpha, "GET", "/api/v1/timelines/home", old_token)
    assert status == 200
    # Within the cooldown it can't move again (even back), and nothing more is sent.
    status, body = await api(alpha, "POST", "/api/v1/accounts/move", old_token,
                             data={"password": PASSWORD, "moved_to_uri": new["uri"]})
    assert status == 422 and "moved within the last 7 days" in body["error"]
    assert await moves_sent(alpha) == 1


async def test_api_refuses_bad_moves_and_changes_nothing(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    token, alice = await user(alpha, "alice")
    _, stranger = await user(beta, "stranger")  # never lists alice
    _, other = await user(beta, "other")

    async def refused(data: dict[str, str], reason: str) -> None:
        status, body = await api(alpha, "POST", "/api/v1/accounts/move", token, data=data)
        assert status == 422 and reason in body["error"], body
        row = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (alice["id"],))
        assert row["moved_to_uri"] is None and row["moved_at"] is None
        assert await moves_sent(alpha) == 0

    await refused({"password": "wrong", "moved_to_uri": stranger["uri"]}, "the password is wrong")
    await refused({"password": PASSWORD, "moved_to_uri": stranger["uri"]}, "does not list")
    await refused({"password": PASSWORD, "moved_to_uri": "@nobody@beta.test:1"}, "could not reach")
    await refused({"password": PASSWORD, "moved_to_uri": "not a handle"}, "neither an actor URI")
    await refused({"password": PASSWORD}, "required")
    # The target's alias is checked on its server now: a stale cached copy listing alice does not count.
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET also_known_as_json = ? WHERE uri = ?",
                         (json.dumps([alice["uri"]]), stranger["uri"]))
    await refused({"password": PASSWORD, "moved_to_uri": stranger["uri"]}, "does not list")
    # A target that itself moved on (its actor says movedTo).
    async with beta.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET also_known_as_json = ?, moved_to_uri = ? WHERE id = ?",
                         (json.dumps([alice["uri"]]), stranger["uri"], other["id"]))
    await refused({"password": PASSWORD, "moved_to_uri": other["uri"]}, "has itself moved")

    # Aliases: unreachable or invalid ones are refused and the list stays as it was; the cap holds; [] clears.
    status, body = await api(alpha, "POST", "/api/v1/accounts/alias", token,
                             data={"also_known_as_uris[]": [stranger["uri"], "http://nowhere.test:1/users/x"]})
    assert status == 422 and "could not reach http://nowhere.test:1/users/x" in body["error"], body
    assert (await alpha.ctx.db.fetchone("SELECT also_known_as_json FROM accounts WHERE id = ?", (alice["id"],)))[0] == "[]"
    status, body = await api(alpha, "POST", "/api/v1/accounts/alias", token,
                             data={"also_known_as_uris[]": [f"https://x{i}.test/u" for i in range(6)]})
    assert status == 422 and "at most 5 aliases" in body["error"]
    status, body = await api(alpha, "POST", "/api/v1/accounts/alias", token,
                             data={"also_known_as_uris[]": alice["uri"]})
    assert status == 422 and "itself" in body["error"]
    status, cred = await api(alpha, "POST", "/api/v1/accounts/alias", token, data={"also_known_as_uris[]": stranger["uri"]})
    assert status == 200 and cred["source"]["also_known_as_uris"] == [stranger["uri"]]
    status, cred = await api(alpha, "POST", "/api/v1/accounts/alias", token, json={"also_known_as_uris": []})
    assert status == 200 and "also_known_as_uris" not in cred["source"]


async def mastodon(network: Network) -> Peer:
    return await Peer(network, "mastodon.test").start()


def mastodon_actor(peer: Peer, name: str, **extra: Any) -> PeerActor:
    return peer.actor(name, **{"@context": MASTODON_CONTEXT, "url": f"{peer.base}/@{name}",
                               "endpoints": {"sharedInbox": f"{peer.base}/inbox"}, **extra})


def mastodon_move(old: PeerActor, target: Any) -> dict[str, Any]:
    """Mastodon's Move: id under the actor (`#moves/N`), object the actor itself, target the new account."""
    move = old.activity("Move", old.id, target=target)
    move["@context"] = "https://www.w3.org/ns/activitystreams"
    move["id"] = f"{old.id}#moves/{move['id'].rsplit('/', 1)[1]}"
    return move


async def following_peer(alpha: Instance, peer_actor: PeerActor, *names: str) -> list[Any]:
    """Local users following a peer account, each follow accepted by the peer."""
    rows = []
    target = await get_actor(alpha.ctx, peer_actor.id)
    for name in names:
        _, row = await user(alpha, name)
        await actions.follow(alpha.ctx, row, target)
        follow_uri = await alpha.ctx.db.fetchval(
            "SELECT uri FROM follows WHERE account_id = ? AND target_account_id = ?", (row["id"], target["id"]))
        accept = peer_actor.activity("Accept", {"id": follow_uri, "type": "Follow", "actor": row["uri"],
                                                "object": peer_actor.id})
        assert (await peer_actor.post(alpha, accept, path="/inbox")).status == 202
        rows.append(row)
    await alpha.drain()
    return rows


async def test_a_mastodon_account_moves_and_local_followers_follow_it(network: Network) -> None:
    alpha = await network.add("alpha.test")
    peer = await mastodon(network)
    try:
        old = mastodon_actor(peer, "gargron")
        bob, erin = await following_peer(alpha, old, "bob", "erin")
        new = mastodon_actor(peer, "gargron2", alsoKnownAs=[old.id], manuallyApprovesFollowers=True)
        _, frank = await user(alpha, "frank")
        old_row = await get_actor(alpha.ctx, old.id)
        await actions.block(alpha.ctx, frank, old_row)  # a local block of the old account is carried over
        erin_blocks_new = await get_actor(alpha.ctx, new.id)
        await actions.block(alpha.ctx, erin, erin_blocks_new)  # erin blocks the target: she is left alone
        await alpha.drain()
        old.extra["movedTo"] = new.id
        old.publish()
        peer.received.clear()

        reply = await old.post(alpha, mastodon_move(old, new.id), path="/inbox")
        assert reply.status == 202, reply.text
        await alpha.drain()

        assert await follows(alpha, bob["id"]) == {new.id: "pending"}  # a locked (and remote) target: a request
        assert await follows(alpha, erin["id"]) == {old.id: "accepted"}
        sent = [json.loads(body) for _, body in peer.received]
        assert {(a["type"], json.dumps(a["object"], sort_keys=True)) for a in sent if a["actor"] == bob["uri"]} == {
            ("Follow", json.dumps(new.id)),
            ("Undo", json.dumps({"actor": bob["uri"], "id": a_follow_of(sent, bob, old), "object": old.id,
                                 "type": "Follow"}, sort_keys=True)),
        }
        assert await count(alpha, "SELECT count(*) FROM blocks b JOIN accounts a ON a.id = b.target_account_id"
                           " WHERE b.account_id = ? AND a.uri = ?", frank["id"], new.id) == 1
        assert await count(alpha, "SELECT count(*) FROM notifications WHERE type = 'move' AND account_id = ?",
                           bob["id"]) == 1
        assert await count(alpha, "SELECT count(*) FROM notifications WHERE type = 'move' AND account_id = ?",
                           erin["id"]) == 0
        moved = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (old.id,))
        assert moved["moved_to_uri"] == new.id and moved["moved_at"] is not None
        # The same Move again (a new delivery of it) changes nothing.
        peer.received.clear()
        reply = await old.post(alpha, mastodon_move(old, new.id), path="/inbox")
        await alpha.drain()
        assert peer.received == []
        assert await count(alpha, "SELECT count(*) FROM notifications WHERE type = 'move'") == 1
        assert await count(alpha, "SELECT count(*) FROM inbox_activities WHERE type = 'Move' AND state = 'ignored'"
                           " AND result LIKE '%cooldown%'") == 1
    finally:
        await peer.close()


def a_follow_of(sent: list[dict[str, Any]], follower: Any, target: PeerActor) -> str:
    """The id of the Follow `follower` sent to `target` earlier, as its Undo names it."""
    undo = next(a for a in sent if a["type"] == "Undo" and a["actor"] == follower["uri"])
    assert undo["object"]["object"] == target.id
    return str(undo["object"]["id"])


async def test_a_move_to_a_fedi_account_from_mastodon(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    peer = await mastodon(network)
    try:
        old = mastodon_actor(peer, "zoe")
        (bob,) = await following_peer(alpha, old, "bob")
        new_token, new = await user(beta, "zoe")
        status, body = await api(beta, "POST", "/api/v1/accounts/alias", new_token,
                                 data={"also_known_as_uris[]": old.id})
        assert status == 200, body
        assert (await old.post(alpha, mastodon_move(old, new["uri"]), path="/inbox")).status == 202
        await network.drain()
        assert await follows(alpha, bob["id"]) == {new["uri"]: "accepted"}  # beta accepted the follow
    finally:
        await peer.close()


async def test_bad_inbound_moves_are_refused_and_change_nothing(network: Network) -> None:
    alpha = await network.add("alpha.test")
    peer = await mastodon(network)
    try:
        old = mastodon_actor(peer, "olga")
        (bob,) = await following_peer(alpha, old, "bob")
        mallory = mastodon_actor(peer, "mallory", alsoKnownAs=[old.id])
        unaliased = mastodon_actor(peer, "plain")
        before = await follows(alpha, bob["id"])

        move = mastodon_move(old, mallory.id)
        body = json.dumps(move).encode()
        unsigned = await send(alpha, "/inbox", body, {"Content-Type": AS2, "Host": alpha.config.instance.domain})
        assert unsigned.status == 401
        by_someone_else = mallory.activity("Move", old.id, target=mallory.id)
        by_someone_else["actor"] = old.id
        assert (await mallory.post(alpha, by_someone_else, path="/inbox")).status == 403
        moving_another = old.activity("Move", mallory.id, target=old.id)
        assert (await old.post(alpha, moving_another, path="/inbox")).status == 403
        assert await count(alpha, "SELECT count(*) FROM inbox_activities WHERE type = 'Move'") == 0

        # A target that does not list the old actor, even though the payload embeds one that does.
        embedded = {"id": unaliased.id, "type": "Person", "alsoKnownAs": [old.id]}
        assert (await old.post(alpha, mastodon_move(old, embedded), path="/inbox")).status == 202
        await alpha.drain()
        assert await follows(alpha, bob["id"]) == before
        assert await count(alpha, "SELECT count(*) FROM inbox_activities WHERE state = 'ignored'"
                           " AND result LIKE '%does not list the actor in alsoKnownAs%'") == 1
        # Inside the cooldown (the actor moved recently): ignored.
        async with alpha.ctx.db.write() as tx:
            await tx.execute("UPDATE accounts SET moved_at = ? WHERE uri = ?", (__import__("time").time() - 3600, old.id))
        assert (await old.post(alpha, mastodon_move(old, mallory.id), path="/inbox")).status == 202
        await alpha.drain()
        assert await follows(alpha, bob["id"]) == before
        assert await count(alpha, "SELECT count(*) FROM notifications WHERE type = 'move'") == 0
    finally:
        await peer.close()


def one_error_line(result: Any) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
    return str(lines[0])


def test_cli_alias_and_move_on_one_instance(tmp_path: Any) -> None:
    from tests.processes import FediProcess

    inst = FediProcess(tmp_path, "solo")
    inst.ok("init")
    for name in ("alice", "bob", "dave"):
        inst.create_account(name)
    alice_uri, bob_uri = f"{inst.base}/users/alice", f"{inst.base}/users/bob"
    inst.ok("follow", "dave", f"@alice@{inst.domain}")

    assert "could not reach http://127.0.0.1:1/users/x" in one_error_line(
        inst.cli("account", "alias", "bob", "http://127.0.0.1:1/users/x"))
    assert inst.query("SELECT also_known_as_json FROM accounts WHERE uri = ?", (bob_uri,))[0][0] == "[]"
    assert inst.ok("account", "alias", "bob", f"@alice@{inst.domain}").strip() == f"bob: {alice_uri}"

    assert one_error_line(inst.cli("account", "move", "alice", bob_uri, stdin="wrong\n")) == "fedi: the password is wrong"
    assert one_error_line(inst.cli("account", "move", "alice", bob_uri)) == "fedi: no password on standard input"
    assert inst.query("SELECT moved_to_uri FROM accounts WHERE uri = ?", (alice_uri,))[0][0] is None
    out = inst.ok("account", "move", "alice", f"@bob@{inst.domain}", stdin="correct horse battery\n")
    assert out.strip() == f"alice moved to {bob_uri}"
    rows = inst.query("SELECT a.uri, f.state FROM follows f JOIN accounts a ON a.id = f.target_account_id"
                      " JOIN accounts d ON d.id = f.account_id WHERE d.username = 'dave'")
    assert [tuple(r) for r in rows] == [(bob_uri, "accepted")]
    assert one_error_line(inst.cli("post", "alice", "hello")) == f"fedi: this account has moved to {bob_uri}"
    assert "moved within the last 7 days" in one_error_line(
        inst.cli("account", "move", "bob", alice_uri, stdin="correct horse battery\n"))  # bob just took alice in


async def test_settings_pages_set_an_alias_and_move(network: Network) -> None:
    from tests.web_client import browser

    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    _, old = await user(alpha, "alice")
    _, new = await user(beta, "alice")
    on_beta = await browser(beta, "alice")
    on_alpha = await browser(alpha, "alice")
    try:
        status, body, _ = await on_beta.get("/settings/aliases")
        assert status == 200 and "no aliases" in body and body.count('name="also_known_as_uris"') == 5
        status, body, _ = await on_beta.post("/settings/aliases", {"also_known_as_uris": "http://nowhere.test:1/u"})
        assert status == 422 and "could not reach" in body
        status, body, _ = await on_beta.post("/settings/aliases", {"also_known_as_uris": handle(alpha, "alice")})
        assert status == 200 and "Aliases saved." in body and f'href="{old["uri"]}"' in body
        assert json.loads((await beta.ctx.db.fetchone(
            "SELECT also_known_as_json FROM accounts WHERE id = ?", (new["id"],)))[0]) == [old["uri"]]

        status, body, _ = await on_alpha.get("/settings/migration")
        assert status == 200 and "has not moved" in body and 'name="moved_to_uri"' in body and 'name="password"' in body
        status, body, _ = await on_alpha.post("/settings/migration", {"moved_to_uri": new["uri"], "password": "nope"})
        assert status == 422 and "the password is wrong" in body
        assert await moves_sent(alpha) == 0
        status, body, _ = await on_alpha.post("/settings/migration", {"moved_to_uri": new["uri"], "password": PASSWORD},
                                              csrf=False)
        assert status == 403 and await moves_sent(alpha) == 0  # no CSRF token, nothing done
        status, body, _ = await on_alpha.post("/settings/migration", {"moved_to_uri": new["uri"], "password": PASSWORD})
        assert status == 200 and "has moved to" in body and new["uri"] in body
        assert await moves_sent(alpha) == 1
        status, body, _ = await on_alpha.get("/settings/migration")  # still signed in after the move
        assert status == 200 and "has moved to" in body
    finally:
        await on_beta.close()
        await on_alpha.close()
