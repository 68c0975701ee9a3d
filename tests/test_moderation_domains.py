"""Domain blocks against real fedi instances on loopback: one suspended, one silenced, one allowed.

alpha is "us". Each test checks what a rule does to inbound activities, outbound
deliveries, fetches, timelines and existing follows — on both sides of the
federation, after the queues have drained — and what lifting it restores.
"""

from __future__ import annotations

from typing import Any

import pytest

from actors.local import create_local_account, get_local_account, instance_signer
from actors.remote import ActorError, fetch_actor, get_actor
from actors.webfinger import resolve_handle
from fedi.api import entities
from fedi.db import Row
from fedi.http_client import FetchError
from fedi.jsonutil import dumps
from fedi.moderation import enforce
from fedi.moderation.blocks import BlockSpec, add_allow, create_block, remove_block, set_setting, update_block
from fedi.moderation.domains import Rules, deliverable, host_of, normalize_domain, rule_for
from fedi.signatures import load_private_key, sign_request
from inbox.handlers import _fetch_remote_note
from outbox import actions
from outbox.actions import PostRequest
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network

AS2 = {"Accept": "application/activity+json"}


async def user(inst: Instance, name: str, **kw: Any) -> Row:
    await create_local_account(inst.ctx.db, inst.base, name, "password123", **kw)
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return row


async def follow(src: Instance, follower: Row, dst: Instance, name: str) -> str:
    target = await get_actor(src.ctx, await resolve_handle(src.ctx, f"{name}@{dst.config.instance.domain}"))
    return await actions.follow(src.ctx, follower, target)


async def states(inst: Instance, follower_uri: str, target_uri: str) -> list[str]:
    rows = await inst.ctx.db.fetchall(
        "SELECT f.state FROM follows f JOIN accounts a ON a.id = f.account_id JOIN accounts t ON t.id = f.target_account_id"
        " WHERE a.uri = ? AND t.uri = ?", (follower_uri, target_uri))
    return [r["state"] for r in rows]


async def post(inst: Instance, who: Row, text: str, **kw: Any) -> Row:
    return await actions.create_status(inst.ctx, who, PostRequest(text=text, **kw))


async def signed_post(inst: Instance, key_id: str, key: Any, actor: str) -> int:
    """A correctly signed POST to the shared inbox of `inst`, claiming `actor`, signed as `key_id`."""
    body = dumps({"@context": "https://www.w3.org/ns/activitystreams", "id": f"{actor}#like-{key_id[-6:]}",
                  "type": "Like", "actor": actor, "object": f"{inst.base}/users/alice/statuses/1"})
    headers = sign_request("POST", f"{inst.base}/inbox", key_id, key, body=body)
    async with inst.session.post(inst.url("/inbox"), data=body, headers=headers) as resp:
        return resp.status


def test_normalize_domain() -> None:
    assert normalize_domain("Example.COM.") == "example.com"
    assert normalize_domain("  BÜCHER.example ") == "xn--bcher-kva.example"
    assert normalize_domain("xn--bcher-kva.example") == "xn--bcher-kva.example"
    assert normalize_domain("sub.EXAMPLE.com") == "sub.example.com"
    for bad, words in (("", "empty"), (".", "empty"), ("a..b", "not a valid"), ("https://x.com", "not a domain"),
                       ("x.com:443", "not a domain"), ("*.x.com", "wildcard"), ("ex**le.com", "obfuscated"),
                       ("a b.com", "not a domain"), ("-bad.com", "not a valid"), ("x" * 64 + ".com", "not a valid")):
        with pytest.raises(ValueError, match=words):
            normalize_domain(bad)
    assert host_of("http://Alpha.test:1234/users/x") == "alpha.test"
    assert host_of("alpha.test:1234") == "alpha.test"
    assert host_of("BÜCHER.example.") == "xn--bcher-kva.example"


def test_longest_matching_rule_wins() -> None:
    blocks = {d: {"domain": d, "severity": s, "reject_media": 0, "created_at": 1.0} for d, s in (
        ("example.com", "suspend"), ("sub.example.com", "silence"), ("deep.sub.example.com", "noop"))}
    rules = Rules(1, blocks, frozenset({"ok.test"}), "blocklist", "off", "alpha.test")  # type: ignore[arg-type]
    assert rules.severity("a.deep.sub.example.com:8443") == "noop"
    assert rules.severity("https://x.sub.example.com/users/a") == "silence"
    assert rules.severity("EXAMPLE.com") == "suspend" and rules.suspended("www.example.com")
    assert rules.block_for("notexample.com") is None and rules.block_for("com") is None
    assert not rules.suspended("other.test")
    allowlist = Rules(1, blocks, frozenset({"ok.test"}), "allowlist", "off", "alpha.test")  # type: ignore[arg-type]
    assert allowlist.suspended("other.test") and not allowlist.suspended("a.ok.test")
    assert not allowlist.suspended("alpha.test:8080"), "our own host is never cut off"
    blocked_but_allowed = Rules(1, {"ok.test": {"domain": "ok.test", "severity": "suspend"}}, frozenset({"ok.test"}),
                                "allowlist", "off", "alpha.test")  # type: ignore[arg-type]
    assert blocked_but_allowed.suspended("ok.test"), "a suspend rule wins over an allow"


async def test_rule_for_through_the_database(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_block(alpha.ctx, None, BlockSpec("example.com", "silence"))
    await create_block(alpha.ctx, None, BlockSpec("Deep.Sub.Example.com.", "suspend"))
    for source in (alpha.ctx, alpha.ctx.db):
        assert (await rule_for(source, "x.deep.sub.example.com"))["domain"] == "deep.sub.example.com"
        assert (await rule_for(source, "sub.example.com:99"))["domain"] == "example.com"
        assert await rule_for(source, "example.org") is None


async def test_suspend_severs_both_ways_and_lifting_restores(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    alice, bob = await user(alpha, "alice"), await user(beta, "bob")
    await follow(alpha, alice, beta, "bob")
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    assert await states(alpha, alice["uri"], bob["uri"]) == ["accepted"] == await states(beta, alice["uri"], bob["uri"])
    assert await states(alpha, bob["uri"], alice["uri"]) == ["accepted"] == await states(beta, bob["uri"], alice["uri"])
    await post(beta, bob, "before the block")
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM home_feed WHERE account_id = ?", (alice["id"],)) == 1
    queued = await post(alpha, alice, "queued for beta before the block")  # not drained: pending to beta

    block = await create_block(alpha.ctx, None, BlockSpec("beta.test", "suspend", public_comment="spam"))
    bob_here = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (bob["uri"],))
    assert bob_here["suspended_at"] == block["created_at"], "marked by the rule, so a lift can undo exactly this"
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
    severed = await alpha.ctx.db.fetchall("SELECT * FROM severed_follows ORDER BY id")
    assert [(s["domain"], s["state"]) for s in severed] == [("beta.test", "accepted")] * 2
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM home_feed WHERE account_id = ?", (alice["id"],)) == 1  # own post only
    notes = await alpha.ctx.db.fetchall("SELECT * FROM notifications WHERE account_id = ? AND type != 'follow'", (alice["id"],))
    assert [(n["type"], n["status_id"]) for n in notes] == [("severed_relationships", None)]
    audit = await alpha.ctx.db.fetchone("SELECT * FROM audit_log WHERE action = 'domain_block.create'")
    assert '"follows_severed":2' in audit["detail_json"] and '"followers_lost":1' in audit["detail_json"]
    assert await deliverable(alpha.ctx, {beta.base + "/inbox"}, "Create") == set()
    with pytest.raises(ActorError, match="not fetching"):
        await fetch_actor(alpha.ctx, bob["uri"])

    await network.drain()
    # The remote fedi instance really received the Undo and the Reject, and applied them.
    got = await beta.ctx.db.fetchall("SELECT type, state FROM inbox_activities WHERE type IN ('Undo', 'Reject') ORDER BY type")
    assert [(r["type"], r["state"]) for r in got] == [("Reject", "processed"), ("Undo", "processed")]
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM follows") == 0
    create = await alpha.ctx.db.fetchone(
        "SELECT d.state, d.last_error FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id WHERE o.uri = ?",
        (queued["uri"] + "/activity",))
    assert (create["state"], create["last_error"]) == ("failed", "domain is blocked")
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE uri = ?", (queued["uri"],)) == 0

    # Inbound from the blocked domain: 403 before any key fetch (zed is unknown to alpha), nothing stored.
    zed = await user(beta, "zed")
    before = await alpha.ctx.db.fetchval("SELECT count(*) FROM inbox_activities")
    await post(beta, zed, f"@alice@{alpha.config.instance.domain} hello?")
    await post(beta, bob, f"@alice@{alpha.config.instance.domain} still there?")
    await network.drain()
    refused = await beta.ctx.db.fetchall("SELECT last_status, state FROM deliveries WHERE inbox_url LIKE ?", (alpha.base + "%",))
    assert [(r["last_status"], r["state"]) for r in refused][-2:] == [(403, "failed")] * 2
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM inbox_activities") == before
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM accounts WHERE uri = ?", (zed["uri"],)) == 0

    # Either name alone is enough to refuse, before any key is fetched: a key elsewhere for an actor on beta
    # (delta's key would have to be fetched), or a key on beta for an actor elsewhere.
    delta = await network.add("delta.test")
    zed_key = load_private_key(zed["private_key_pem"])
    for key_id, actor in ((f"{delta.base}/actor#main-key", zed["uri"]), (zed["public_key_id"], f"{delta.base}/actor")):
        assert await signed_post(alpha, key_id, zed_key, actor) == 403
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM accounts WHERE domain = ?", (delta.config.instance.domain,)) == 0

    await remove_block(alpha.ctx, None, block["id"])
    assert (await alpha.ctx.db.fetchone("SELECT suspended_at FROM accounts WHERE uri = ?", (bob["uri"],)))[0] is None
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM severed_follows WHERE restored_at IS NULL") == 0
    await network.drain()
    for inst in (alpha, beta):  # both sides agree again
        assert await states(inst, alice["uri"], bob["uri"]) == ["accepted"], inst.name
        assert await states(inst, bob["uri"], alice["uri"]) == ["accepted"], inst.name
    after = await post(beta, bob, "after the lift")
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM home_feed h JOIN statuses s ON s.id = h.status_id WHERE h.account_id = ? AND s.uri = ?",
        (alice["id"], after["uri"])) == 1


async def test_content_from_a_blocked_domain_through_an_allowed_one(network: Network) -> None:
    alpha, beta, delta = [await network.add(n) for n in ("alpha.test", "beta.test", "delta.test")]
    alice, bob, erin = await user(alpha, "alice"), await user(beta, "bob"), await user(delta, "erin")
    for src, who, dst, name in ((alpha, alice, beta, "bob"), (alpha, alice, delta, "erin"), (delta, erin, beta, "bob")):
        await follow(src, who, dst, name)
    await network.drain()
    original = await post(beta, bob, "posted before the block")
    await network.drain()
    await create_block(alpha.ctx, None, BlockSpec("beta.test", "suspend"))
    await network.drain()
    statuses = await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses")
    on_delta = await delta.ctx.db.fetchone("SELECT id FROM statuses WHERE uri = ?", (original["uri"],))
    await actions.reblog(delta.ctx, erin, on_delta["id"])
    await post(delta, erin, f"@alice@{alpha.config.instance.domain} look at this", in_reply_to_id=on_delta["id"])
    await network.drain()
    results = await alpha.ctx.db.fetchall("SELECT type, result FROM inbox_activities WHERE actor_uri = ? ORDER BY id",
                                          (erin["uri"],))
    assert [(r["type"], r["result"]) for r in results][-2:] == [("Announce", "ignored: involves a blocked domain"),
                                                               ("Create", "ignored: involves a blocked domain")]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses") == statuses, "0 rows (THREATS A11)"
    assert await _fetch_remote_note(alpha.ctx, original["uri"]) is None, "not fetched (boosts, search)"


async def test_silence_hides_from_public_timelines_and_makes_follows_requests(network: Network) -> None:
    alpha, gamma, delta = [await network.add(n) for n in ("alpha.test", "gamma.test", "delta.test")]
    token = await user_token(alpha, "dave")
    dave = await get_local_account(alpha.ctx.db, "dave")
    alice = await user(alpha, "alice")
    carol, erin = await user(gamma, "carol"), await user(delta, "erin")
    await follow(alpha, dave, gamma, "carol")
    await follow(alpha, dave, delta, "erin")
    await network.drain()
    block = await create_block(alpha.ctx, None, BlockSpec("gamma.test", "silence", reject_media=True))
    carol_here = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE uri = ?", (carol["uri"],))
    assert carol_here["silenced_at"] == block["created_at"] and carol_here["suspended_at"] is None
    loud, fine = await post(gamma, carol, "silenced #news"), await post(delta, erin, "allowed #news")
    await network.drain()

    async def timeline(path: str, headers: dict[str, str] | None = None) -> list[str]:
        async with alpha.session.get(alpha.url(path), headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            return [s["uri"] for s in await resp.json()]

    assert await timeline("/api/v1/timelines/public") == [fine["uri"]]
    assert await timeline("/api/v1/timelines/tag/news") == [fine["uri"]]
    assert set(await timeline("/api/v1/timelines/home", bearer(token))) == {loud["uri"], fine["uri"]}, "followers still see it"

    # reject_media: the silenced domain's remote files are not shown.
    status = await alpha.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (loud["uri"],))
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET avatar_url = 'http://gamma.test/a.png' WHERE id = ?", (carol_here["id"],))
        await tx.execute(
            "INSERT INTO media_attachments (id, status_id, account_id, type, remote_url, created_at)"
            " VALUES (?, ?, ?, 'image', 'http://gamma.test/m.png', 0)", (tx.new_id(), status["id"], carol_here["id"]))
    entity = (await entities.statuses(alpha.ctx, [status], None))[0]
    assert entity["account"]["avatar"].endswith("/static/missing.png")
    assert entity["media_attachments"][0]["remote_url"] is None
    assert entity["media_attachments"][0]["url"].endswith("/static/missing.png")

    # A new follow from the silenced domain becomes a request; the new account starts silenced.
    frank = await user(gamma, "frank")
    assert await follow(gamma, frank, alpha, "alice") == "requested"
    await network.drain()
    assert await states(alpha, frank["uri"], alice["uri"]) == ["pending"] == await states(gamma, frank["uri"], alice["uri"])
    assert await alpha.ctx.db.fetchval(
        "SELECT type FROM notifications WHERE account_id = ?", (alice["id"],)) == "follow_request"
    assert (await alpha.ctx.db.fetchone("SELECT silenced_at FROM accounts WHERE uri = ?", (frank["uri"],)))[0] == block["created_at"]

    await update_block(alpha.ctx, None, block["id"], {"severity": "noop"})
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM accounts WHERE silenced_at IS NOT NULL") == 0
    assert await timeline("/api/v1/timelines/public") == [fine["uri"], loud["uri"]]


async def test_allowlist_mode_switches_at_runtime(network: Network) -> None:
    alpha, gamma, delta = [await network.add(n) for n in ("alpha.test", "gamma.test", "delta.test")]
    alice = await user(alpha, "alice")
    carol, erin = await user(gamma, "carol"), await user(delta, "erin")
    handle = f"@alice@{alpha.config.instance.domain}"
    for inst in (gamma, delta):  # both know alice from before, and alpha knows carol
        await get_actor(inst.ctx, await resolve_handle(inst.ctx, handle))
    await get_actor(alpha.ctx, carol["uri"])
    await add_allow(alpha.ctx, None, "delta.test")
    await set_setting(alpha.ctx, None, "federation_mode", "allowlist")
    with pytest.raises(FetchError) as refused_fetch:  # signed by gamma's instance actor: gamma is not allowed
        await gamma.ctx.http.fetch_json(f"{alpha.base}/users/alice", signer=await instance_signer(gamma.ctx))
    assert refused_fetch.value.status == 403
    await post(gamma, carol, f"{handle} not allowed")
    await post(delta, erin, f"{handle} allowed")
    await network.drain()
    mentions = await alpha.ctx.db.fetchall(
        "SELECT a.uri FROM notifications n JOIN accounts a ON a.id = n.from_account_id WHERE n.account_id = ?", (alice["id"],))
    assert [m["uri"] for m in mentions] == [erin["uri"]]
    refused = await gamma.ctx.db.fetchone("SELECT last_status FROM deliveries")
    assert refused["last_status"] == 403
    assert await deliverable(alpha.ctx, {gamma.base + "/inbox", delta.base + "/inbox"}, "Create") == {delta.base + "/inbox"}
    await post(alpha, alice, f"@carol@{gamma.config.instance.domain} @erin@{delta.config.instance.domain} hi both")
    queued = await alpha.ctx.db.fetchall("SELECT host FROM deliveries")
    assert [q["host"] for q in queued] == [delta.config.instance.domain], "nothing is queued for a domain not allowed"
    with pytest.raises(ActorError, match="blocked"):
        await get_actor(alpha.ctx, carol["uri"], refresh=True)

    await set_setting(alpha.ctx, None, "federation_mode", "blocklist")
    await post(gamma, carol, f"{handle} now you hear me")
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM notifications WHERE account_id = ?", (alice["id"],)) == 2


async def test_authorized_fetch(network: Network) -> None:
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    await user(alpha, "alice")
    alice_uri = f"{alpha.base}/users/alice"
    await set_setting(alpha.ctx, None, "authorized_fetch", "all")

    async def get(path: str, headers: dict[str, str]) -> int:
        async with alpha.session.get(alpha.url(path), headers=headers) as resp:
            return resp.status

    assert await get("/users/alice", AS2) == 401
    assert await get("/users/alice/outbox", AS2) == 401
    assert await get("/actor", AS2) == 200, "the instance actor stays fetchable"
    assert await get("/@alice", {"Accept": "text/html"}) == 200, "pages for people are not behind it"
    # A real instance signs its fetches with its instance actor: alpha checks that key (beta's /actor) and answers.
    fetched = await beta.ctx.http.fetch_json(alice_uri, signer=await instance_signer(beta.ctx))
    assert fetched.document["id"] == alice_uri

    await create_block(alpha.ctx, None, BlockSpec("beta.test", "suspend"))
    await set_setting(alpha.ctx, None, "authorized_fetch", "off")
    assert await get("/users/alice", AS2) == 200
    with pytest.raises(FetchError) as refused:
        await beta.ctx.http.fetch_json(alice_uri, signer=await instance_signer(beta.ctx))
    assert refused.value.status == 403, "a blocked domain's signed fetch is refused in every mode"
    await set_setting(alpha.ctx, None, "authorized_fetch", "blocked")
    bogus = {**AS2, "Signature": 'keyId="http://delta.test/actor#main-key",headers="date",signature="AAAA"'}
    assert await get("/users/alice", bogus) == 401
    assert await get("/users/alice", AS2) == 200


async def test_reports_rejected_follows_the_rule(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await create_block(alpha.ctx, None, BlockSpec("noisy.test", "noop", reject_reports=True))
    assert await enforce.reports_rejected(alpha.ctx, "a.noisy.test:443")
    assert not await enforce.reports_rejected(alpha.ctx, "quiet.test")
