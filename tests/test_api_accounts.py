"""Accounts, relationships, follow requests, blocks, mutes, domain blocks and sign-up, driven over HTTP.

Entity shapes are checked key by key against Mastodon's documentation
(docs.joinmastodon.org/entities/Account, /Relationship); every refusal is a JSON
4xx and leaves the database as it was.
"""

from __future__ import annotations

import io
import os
from typing import Any

import aiohttp
from aiohttp.web_request import FileField
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image

from actors.local import create_local_account
from fedi.api.ratelimit import RATE_LIMITER, Limits, Rule
from fedi.images import store_upload
from outbox.actions import PostRequest, create_status, reblog
from tests.api_client import bearer, register_app, user_token
from tests.harness import Instance, Network

ACCOUNT_KEYS = {
    "id", "username", "acct", "url", "uri", "display_name", "note", "avatar", "avatar_static", "header",
    "header_static", "locked", "fields", "emojis", "bot", "group", "discoverable", "indexable", "created_at",
    "last_status_at", "statuses_count", "followers_count", "following_count", "hide_collections", "roles",
}
SOURCE_KEYS = {"privacy", "sensitive", "language", "note", "fields", "follow_requests_count", "hide_collections",
               "discoverable", "indexable", "attribution_domains"}
RELATIONSHIP_KEYS = {
    "id", "following", "showing_reblogs", "notifying", "languages", "followed_by", "blocking", "blocked_by", "muting",
    "muting_notifications", "muting_expires_at", "requested", "requested_by", "domain_blocking", "endorsed", "note",
}


async def api(inst: Instance, method: str, path: str, token: str | None = None, **kw: Any) -> tuple[int, Any, Any]:
    """(status, JSON body, headers) of one API call; every answer must be JSON."""
    assert inst.session is not None
    headers = bearer(token) if token else {}
    async with inst.session.request(method, inst.url(path), headers=headers, **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json(), resp.headers


def check_account(entity: dict[str, Any]) -> None:
    assert ACCOUNT_KEYS <= set(entity), ACCOUNT_KEYS - set(entity)
    assert isinstance(entity["id"], str) and entity["id"].isdigit()
    for key in ("locked", "bot", "group"):
        assert isinstance(entity[key], bool)
    for key in ("statuses_count", "followers_count", "following_count"):
        assert isinstance(entity[key], int)
    assert entity["created_at"].endswith("Z") and len(entity["created_at"]) == 24
    for field in entity["fields"]:
        assert set(field) == {"name", "value", "verified_at"}


def check_relationship(entity: dict[str, Any]) -> None:
    assert set(entity) == RELATIONSHIP_KEYS
    for key in RELATIONSHIP_KEYS - {"id", "languages", "muting_expires_at", "note"}:
        assert isinstance(entity[key], bool), key
    assert isinstance(entity["note"], str)


async def account_id(inst: Instance, username: str) -> str:
    return str(await inst.ctx.db.fetchval("SELECT id FROM accounts WHERE username = ? AND domain IS NULL", (username,)))


async def relationship(inst: Instance, token: str, target: str) -> dict[str, Any]:
    status, body, _ = await api(inst, "GET", "/api/v1/accounts/relationships", token, params={"id[]": target})
    assert status == 200 and len(body) == 1
    check_relationship(body[0])
    return body[0]


def png(width: int = 64, height: int = 64) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


# --- credentials ---------------------------------------------------------------------------------------------------


async def test_verify_and_update_credentials(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    status, me, _ = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", token)
    assert status == 200
    check_account(me)
    assert SOURCE_KEYS <= set(me["source"]) and {"id", "name", "permissions", "color", "highlighted"} <= set(me["role"])
    assert me["acct"] == "alice" and me["source"]["privacy"] == "public"
    status, me, _ = await api(alpha, "PATCH", "/api/v1/accounts/update_credentials", token, data={
        "display_name": "Alice A.", "note": "Hello #fedi", "locked": "true", "bot": "1", "discoverable": "false",
        "fields_attributes[0][name]": "Site", "fields_attributes[0][value]": "https://alice.example/x",
        "fields_attributes[1][name]": "Likes", "fields_attributes[1][value]": "<b>cats</b> & dogs",
        "source[privacy]": "private", "source[sensitive]": "true", "source[language]": "de",
    })
    assert status == 200, me
    check_account(me)
    assert me["display_name"] == "Alice A." and me["locked"] is True and me["bot"] is True
    assert me["discoverable"] is False
    assert "<p>" in me["note"] and 'class="mention hashtag"' in me["note"]
    assert me["source"]["note"] == "Hello #fedi"
    site, likes = me["fields"]
    assert site["name"] == "Site" and '<a href="https://alice.example/x"' in site["value"]
    assert likes["value"] == "&lt;b&gt;cats&lt;/b&gt; &amp; dogs"
    assert (me["source"]["privacy"], me["source"]["sensitive"], me["source"]["language"]) == ("private", True, "de")
    row = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice'")
    assert row["actor_type"] == "Service"
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM outbox_activities WHERE type = 'Update'") == 1
    status, again, _ = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", token)
    assert again["fields"] == me["fields"] and again["source"]["privacy"] == "private"


BAD_PROFILES = [
    {"fields_attributes[0][name]": "a", "fields_attributes[0][value]": "1", "fields_attributes[1][name]": "b",
     "fields_attributes[2][name]": "c", "fields_attributes[3][name]": "d", "fields_attributes[4][name]": "e",
     "display_name": "changed"},
    {"display_name": "x" * 31},
    {"note": "n" * 501, "display_name": "changed"},
    {"source[privacy]": "direct", "display_name": "changed"},
    {"source[language]": "not a language", "display_name": "changed"},
    {"avatar": "not a file", "display_name": "changed"},
    {"fields_attributes[0][name]": "a", "fields_attributes[0][value]": "v" * 256, "display_name": "changed"},
    {"locked": "maybe", "display_name": "changed"},
]


async def test_update_credentials_rejects_bad_input_and_stores_nothing(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    before = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice'")
    for data in BAD_PROFILES:
        status, body, _ = await api(alpha, "PATCH", "/api/v1/accounts/update_credentials", token, data=data)
        assert status == 422 and body["error"], data
        after = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice'")
        assert dict(after) == dict(before), data
        assert await alpha.ctx.db.fetchval("SELECT settings_json FROM users") == "{}"
        assert await alpha.ctx.db.fetchval("SELECT count(*) FROM outbox_activities") == 0


async def test_avatar_and_header_upload(network: Network) -> None:
    alpha = await network.add("alpha.test", media={"path": str(network.tmp / "media")})
    token = await user_token(alpha, "alice")
    form = aiohttp.FormData()
    form.add_field("avatar", png(), filename="../../me.png", content_type="image/png")
    form.add_field("header", png(300, 100), filename="h.png", content_type="image/png")
    status, me, _ = await api(alpha, "PATCH", "/api/v1/accounts/update_credentials", token, data=form)
    assert status == 200, me
    row = await alpha.ctx.db.fetchone("SELECT avatar_path, header_path FROM accounts WHERE username = 'alice'")
    assert me["avatar"] == f"{alpha.base}/media/{row['avatar_path']}" and me["avatar_static"] == me["avatar"]
    assert me["header"] == f"{alpha.base}/media/{row['header_path']}"
    assert "me.png" not in row["avatar_path"]
    with Image.open(os.path.join(alpha.config.media_path, row["avatar_path"])) as img:
        assert img.size == (400, 400)
    bad = aiohttp.FormData()
    bad.add_field("avatar", b"<svg onload=alert(1)>", filename="x.png", content_type="image/png")
    status, body, _ = await api(alpha, "PATCH", "/api/v1/accounts/update_credentials", token, data=bad)
    assert status == 422 and body["error"]
    assert await alpha.ctx.db.fetchval("SELECT avatar_path FROM accounts WHERE username = 'alice'") == row["avatar_path"]


# --- reading accounts ----------------------------------------------------------------------------------------------


async def test_get_lookup_and_search(network: Network) -> None:
    alpha = await network.add("alpha.test")
    beta = await network.add("beta.test")
    token = await user_token(alpha, "alice")
    await create_local_account(alpha.ctx.db, alpha.base, "alicia", "password123", display_name="Al Jones")
    await create_local_account(beta.ctx.db, beta.base, "bob", "password123")
    alice = await account_id(alpha, "alice")
    status, entity, _ = await api(alpha, "GET", f"/api/v1/accounts/{alice}")
    assert status == 200 and entity["username"] == "alice" and entity["url"] == f"{alpha.base}/@alice"
    check_account(entity)
    for path in ("/api/v1/accounts/999999", f"/api/v1/accounts/{alpha.ctx.instance_actor_id}"):
        status, body, _ = await api(alpha, "GET", path)
        assert status == 404 and body["error"]
    alicia = await account_id(alpha, "alicia")
    status, many, _ = await api(alpha, "GET", "/api/v1/accounts", params=[("id[]", alicia), ("id[]", "999999"),
                                                                           ("id[]", alice), ("id[]", "x")])
    assert status == 200 and [a["id"] for a in many] == [alicia, alice]
    for acct in ("alice", "@alice", f"alice@{alpha.ctx.domain}"):
        status, entity, _ = await api(alpha, "GET", "/api/v1/accounts/lookup", params={"acct": acct})
        assert status == 200 and entity["id"] == alice, acct
    for acct in ("nobody", f"bob@{beta.ctx.domain}", "a@b.tld@evil", ""):
        status, body, _ = await api(alpha, "GET", "/api/v1/accounts/lookup", params={"acct": acct})
        assert status == 404 and body["error"], acct
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", params={"q": "ali"})
    assert status == 200 and [a["username"] for a in found] == ["alice", "alicia"]
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", params={"q": "jon"})
    assert [a["username"] for a in found] == ["alicia"]
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", params={"q": "a%", "limit": "1"})
    assert found == []
    handle = f"bob@{beta.ctx.domain}"
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", params={"q": handle, "resolve": "true"})
    assert status == 200 and found == []  # no token: no remote fetch
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", token, params={"q": handle, "resolve": "true"})
    assert status == 200 and [a["acct"] for a in found] == [handle]
    check_account(found[0])
    status, entity, _ = await api(alpha, "GET", "/api/v1/accounts/lookup", params={"acct": handle})
    assert status == 200 and entity["id"] == found[0]["id"]
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", token, params={"q": "ali", "following": "true"})
    assert status == 200 and found == []


async def test_account_statuses_filters_and_visibility(network: Network) -> None:
    alpha = await network.add("alpha.test", media={"path": str(network.tmp / "media")})
    alice_token = await user_token(alpha, "alice")
    bob_token = await user_token(alpha, "bob")
    carol_token = await user_token(alpha, "carol")
    ctx = alpha.ctx
    alice = await ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'alice'")
    bob = await ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'bob'")
    alice_id = str(alice["id"])
    status, _, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice_id}/follow", carol_token)
    assert status == 200
    field = FileField("file", "p.png", io.BytesIO(png()), "image/png", CIMultiDictProxy(CIMultiDict()))
    media = await store_upload(ctx, field, "red", None, alice["id"])
    public = await create_status(ctx, alice, PostRequest("public #cats"))
    private = await create_status(ctx, alice, PostRequest("followers only", visibility="private"))
    bobs = await create_status(ctx, bob, PostRequest("bob here"))
    reply = await create_status(ctx, alice, PostRequest("@bob reply", in_reply_to_id=bobs["id"]))
    with_media = await create_status(ctx, alice, PostRequest("a picture", media_ids=(media["id"],)))
    boost = await reblog(ctx, alice, bobs["id"])
    async with ctx.db.write() as tx:
        await tx.execute("INSERT INTO status_pins (id, account_id, status_id, created_at) VALUES (?, ?, ?, 0)",
                         (tx.new_id(), alice["id"], public["id"]))

    async def ids(token: str | None, **params: str) -> list[int]:
        status, body, _ = await api(alpha, "GET", f"/api/v1/accounts/{alice_id}/statuses", token, params=params)
        assert status == 200
        return [int(s["id"]) for s in body]

    everything = [boost["id"], with_media["id"], reply["id"], public["id"]]
    assert await ids(None) == everything
    assert await ids(bob_token) == everything
    assert await ids(carol_token) == [boost["id"], with_media["id"], reply["id"], private["id"], public["id"]]
    assert await ids(alice_token) == await ids(carol_token)
    assert await ids(None, only_media="true") == [with_media["id"]]
    assert await ids(None, exclude_replies="true") == [boost["id"], with_media["id"], public["id"]]
    assert await ids(None, exclude_reblogs="true") == [with_media["id"], reply["id"], public["id"]]
    assert await ids(None, pinned="true") == [public["id"]]
    assert await ids(None, tagged="cats") == [public["id"]]
    status, page, headers = await api(alpha, "GET", f"/api/v1/accounts/{alice_id}/statuses", params={"limit": "2"})
    assert [int(s["id"]) for s in page] == everything[:2]
    assert f"max_id={with_media['id']}" in headers["Link"] and 'rel="next"' in headers["Link"]
    assert await ids(None, max_id=str(with_media["id"])) == everything[2:]
    async with ctx.db.write() as tx:
        await tx.execute("INSERT INTO blocks (id, account_id, target_account_id, created_at) VALUES (?, ?, ?, 0)",
                         (tx.new_id(), alice["id"], bob["id"]))
    assert await ids(bob_token) == []
    status, body, _ = await api(alpha, "GET", "/api/v1/accounts/999999/statuses")
    assert status == 404 and body["error"]


async def test_followers_and_following_paged_by_follow(network: Network) -> None:
    alpha = await network.add("alpha.test")
    tokens = [await user_token(alpha, name) for name in ("alice", "bob", "carol", "dave")]
    alice = await account_id(alpha, "alice")
    for token in tokens[1:]:
        status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", token)
        assert status == 200 and rel["following"] is True
    status, page, headers = await api(alpha, "GET", f"/api/v1/accounts/{alice}/followers", params={"limit": "2"})
    assert status == 200 and [a["username"] for a in page] == ["dave", "carol"]
    check_account(page[0])
    follow_ids = [r[0] for r in await alpha.ctx.db.fetchall("SELECT id FROM follows ORDER BY id")]
    assert f"max_id={follow_ids[1]}" in headers["Link"] and f"min_id={follow_ids[2]}" in headers["Link"]
    status, rest, _ = await api(alpha, "GET", f"/api/v1/accounts/{alice}/followers",
                                params={"limit": "2", "max_id": str(follow_ids[1])})
    assert [a["username"] for a in rest] == ["bob"]
    bob = await account_id(alpha, "bob")
    status, following, _ = await api(alpha, "GET", f"/api/v1/accounts/{bob}/following")
    assert [a["username"] for a in following] == ["alice"] and following[0]["followers_count"] == 3


# --- relationships -------------------------------------------------------------------------------------------------


async def test_follow_relationships_familiar_followers_and_unfollow(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token = await user_token(alpha, "alice")
    bob_token = await user_token(alpha, "bob")
    carol_token = await user_token(alpha, "carol")
    alice, bob, carol = [await account_id(alpha, n) for n in ("alice", "bob", "carol")]
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", bob_token,
                               json={"reblogs": False, "notify": True, "languages": ["en"]})
    assert status == 200, rel
    check_relationship(rel)
    assert rel["following"] is True and rel["id"] == alice and rel["requested"] is False
    status, rels, _ = await api(alpha, "GET", "/api/v1/accounts/relationships", alice_token,
                                params=[("id[]", bob), ("id[]", carol), ("id[]", "999999"), ("id[]", "x")])
    assert status == 200 and [r["id"] for r in rels] == [bob, carol]
    assert rels[0]["followed_by"] is True and rels[0]["following"] is False and rels[1]["followed_by"] is False
    await api(alpha, "POST", f"/api/v1/accounts/{bob}/follow", carol_token)
    status, familiar, _ = await api(alpha, "GET", "/api/v1/accounts/familiar_followers", carol_token,
                                    params=[("id[]", alice), ("id[]", carol)])
    assert status == 200 and [f["id"] for f in familiar] == [alice, carol]
    assert [a["username"] for a in familiar[0]["accounts"]] == ["bob"] and familiar[1]["accounts"] == []
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice}/unfollow", bob_token)
    assert status == 200 and rel["following"] is False
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows WHERE target_account_id = ?", (int(alice),)) == 0
    status, body, _ = await api(alpha, "POST", f"/api/v1/accounts/{bob}/follow", bob_token)
    assert status == 422 and body["error"]


async def test_locked_account_follow_requests(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token = await user_token(alpha, "alice")
    bob_token = await user_token(alpha, "bob")
    carol_token = await user_token(alpha, "carol")
    alice, bob, carol = [await account_id(alpha, n) for n in ("alice", "bob", "carol")]
    await api(alpha, "PATCH", "/api/v1/accounts/update_credentials", alice_token, data={"locked": "true"})
    for token in (bob_token, carol_token):
        status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", token)
        assert status == 200 and rel["requested"] is True and rel["following"] is False
    status, me, _ = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", alice_token)
    assert me["source"]["follow_requests_count"] == 2
    status, waiting, headers = await api(alpha, "GET", "/api/v1/follow_requests", alice_token)
    assert status == 200 and [a["username"] for a in waiting] == ["carol", "bob"] and "Link" in headers
    assert (await relationship(alpha, alice_token, bob))["requested_by"] is True
    status, rel, _ = await api(alpha, "POST", f"/api/v1/follow_requests/{bob}/authorize", alice_token)
    assert status == 200 and rel["id"] == bob and rel["followed_by"] is True and rel["requested_by"] is False
    assert (await relationship(alpha, bob_token, alice))["following"] is True
    status, rel, _ = await api(alpha, "POST", f"/api/v1/follow_requests/{carol}/reject", alice_token)
    assert status == 200 and rel["requested_by"] is False and rel["followed_by"] is False
    assert (await relationship(alpha, carol_token, alice))["requested"] is False
    for path in (f"/api/v1/follow_requests/{carol}/authorize", "/api/v1/follow_requests/999999/reject"):
        status, body, _ = await api(alpha, "POST", path, alice_token)
        assert status == 404 and body["error"]


async def test_follow_remote_account_and_its_profile_updates(network: Network) -> None:
    alpha = await network.add("alpha.test")
    beta = await network.add("beta.test")
    alice_token = await user_token(alpha, "alice")
    bob_token = await user_token(beta, "bob")
    handle = f"bob@{beta.ctx.domain}"
    status, found, _ = await api(alpha, "GET", "/api/v1/accounts/search", alice_token,
                                 params={"q": handle, "resolve": "true"})
    remote_bob = found[0]["id"]
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{remote_bob}/follow", alice_token)
    assert status == 200 and rel["requested"] is True and rel["following"] is False
    await network.drain()
    rel = await relationship(alpha, alice_token, remote_bob)
    assert rel["following"] is True and rel["requested"] is False
    status, _, _ = await api(beta, "PATCH", "/api/v1/accounts/update_credentials", bob_token, data={
        "display_name": "Bob on Beta", "fields_attributes[0][name]": "Home", "fields_attributes[0][value]": "beta",
    })
    assert status == 200
    await network.drain()
    status, seen, _ = await api(alpha, "GET", f"/api/v1/accounts/{remote_bob}")
    assert seen["display_name"] == "Bob on Beta" and seen["acct"] == handle
    assert [(f["name"], f["value"]) for f in seen["fields"]] == [("Home", "beta")]
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{remote_bob}/unfollow", alice_token)
    await network.drain()
    assert await beta.ctx.db.fetchval("SELECT count(*) FROM follows") == 0


async def test_block_mute_note_and_remove_from_followers(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token = await user_token(alpha, "alice")
    bob_token = await user_token(alpha, "bob")
    carol_token = await user_token(alpha, "carol")
    alice, bob, carol = [await account_id(alpha, n) for n in ("alice", "bob", "carol")]
    await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", bob_token)
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{bob}/block", alice_token)
    assert status == 200 and rel["blocking"] is True and rel["followed_by"] is False
    assert (await relationship(alpha, bob_token, alice))["blocked_by"] is True
    status, body, _ = await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", bob_token)
    assert status == 403 and body["error"]
    status, blocked, _ = await api(alpha, "GET", "/api/v1/blocks", alice_token)
    assert [a["username"] for a in blocked] == ["bob"]
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{bob}/unblock", alice_token)
    assert rel["blocking"] is False
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/mute", alice_token,
                               data={"notifications": "false", "duration": "3600"})
    assert rel["muting"] is True and rel["muting_notifications"] is False and rel["muting_expires_at"].endswith("Z")
    status, muted, _ = await api(alpha, "GET", "/api/v1/mutes", alice_token)
    assert [a["username"] for a in muted] == ["carol"] and muted[0]["mute_expires_at"] == rel["muting_expires_at"]
    check_account(muted[0])
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/unmute", alice_token)
    assert rel["muting"] is False
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/note", alice_token, data={"comment": "met at a café"})
    assert rel["note"] == "met at a café"
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/note", alice_token, data={"comment": ""})
    assert rel["note"] == "" and await alpha.ctx.db.fetchval("SELECT count(*) FROM account_notes") == 0
    status, body, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/note", alice_token, data={"comment": "x" * 2001})
    assert status == 422 and await alpha.ctx.db.fetchval("SELECT count(*) FROM account_notes") == 0
    await api(alpha, "POST", f"/api/v1/accounts/{alice}/follow", carol_token)
    status, rel, _ = await api(alpha, "POST", f"/api/v1/accounts/{carol}/remove_from_followers", alice_token)
    assert status == 200 and rel["followed_by"] is False
    assert (await relationship(alpha, carol_token, alice))["following"] is False


async def test_domain_blocks(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    for domain in ("one.example", "two.example", "three.example"):
        status, body, _ = await api(alpha, "POST", "/api/v1/domain_blocks", token, data={"domain": domain})
        assert status == 200 and body == {}
    status, page, headers = await api(alpha, "GET", "/api/v1/domain_blocks", token, params={"limit": "2"})
    assert page == ["three.example", "two.example"] and 'rel="next"' in headers["Link"]
    next_url = headers["Link"].split(">")[0].lstrip("<")
    status, rest, _ = await api(alpha, "GET", "/api/v1/domain_blocks?" + next_url.split("?", 1)[1], token)
    assert rest == ["one.example"]
    for bad in ("", "not a domain", "a@b.example", alpha.ctx.domain, "x" * 300):
        status, body, _ = await api(alpha, "POST", "/api/v1/domain_blocks", token, data={"domain": bad})
        assert status == 422 and body["error"], bad
    status, _, _ = await api(alpha, "DELETE", "/api/v1/domain_blocks", token, data={"domain": "two.example"})
    assert status == 200
    assert sorted(r[0] for r in await alpha.ctx.db.fetchall("SELECT domain FROM user_domain_blocks")) == [
        "one.example", "three.example"]


async def test_lists_of_account_are_only_mine_and_featured_tags(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice_token = await user_token(alpha, "alice")
    await user_token(alpha, "bob")
    await create_local_account(alpha.ctx.db, alpha.base, "carol", "password123")
    alice, bob, carol = [int(await account_id(alpha, n)) for n in ("alice", "bob", "carol")]
    async with alpha.ctx.db.write() as tx:
        for owner, title in ((bob, "bob's secret"), (alice, "friends")):
            list_id = tx.new_id()
            await tx.execute("INSERT INTO lists (id, account_id, title, created_at) VALUES (?, ?, ?, 0)", (list_id, owner, title))
            await tx.execute("INSERT INTO list_accounts (list_id, account_id) VALUES (?, ?)", (list_id, carol))
    status, lists, _ = await api(alpha, "GET", f"/api/v1/accounts/{carol}/lists", alice_token)
    assert status == 200 and [(x["title"], set(x)) for x in lists] == [
        ("friends", {"id", "title", "replies_policy", "exclusive"})]
    status, body, _ = await api(alpha, "GET", "/api/v1/accounts/999999/lists", alice_token)
    assert status == 404
    status, tags, _ = await api(alpha, "GET", f"/api/v1/accounts/{alice}/featured_tags")
    assert status == 200 and tags == []
    alice_row = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (alice,))
    await create_status(alpha.ctx, alice_row, PostRequest("I like #Cats"))
    async with alpha.ctx.db.write() as tx:
        await tx.execute("INSERT INTO featured_tags (id, account_id, tag_id, created_at)"
                         " SELECT ?, ?, id, 0 FROM tags WHERE name = 'cats'", (tx.new_id(), alice))
    status, tags, _ = await api(alpha, "GET", f"/api/v1/accounts/{alice}/featured_tags")
    assert len(tags) == 1 and set(tags[0]) == {"id", "name", "url", "statuses_count", "last_status_at"}
    assert tags[0]["name"] == "cats" and tags[0]["statuses_count"] == "1"
    assert tags[0]["url"] == f"{alpha.base}/@alice/tagged/cats" and len(tags[0]["last_status_at"]) == 10


# --- scopes and unknown ids ----------------------------------------------------------------------------------------


async def test_scopes_are_enforced(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await user_token(alpha, "alice")
    reader = await user_token(alpha, "bob", scopes="read")
    alice = await account_id(alpha, "alice")
    for method, path in (("POST", f"/api/v1/accounts/{alice}/follow"), ("POST", f"/api/v1/accounts/{alice}/block"),
                         ("POST", f"/api/v1/accounts/{alice}/mute"), ("POST", "/api/v1/domain_blocks"),
                         ("PATCH", "/api/v1/accounts/update_credentials")):
        status, body, _ = await api(alpha, method, path, reader, data={"domain": "x.example", "display_name": "x"})
        assert status == 403 and body["error"], path
    status, body, _ = await api(alpha, "GET", "/api/v1/accounts/relationships", params={"id[]": alice})
    assert status == 401 and body["error"]
    status, rel, _ = await api(alpha, "GET", "/api/v1/accounts/relationships", reader, params={"id[]": alice})
    assert status == 200
    for table in ("follows", "blocks", "mutes", "user_domain_blocks", "outbox_activities"):
        assert await alpha.ctx.db.fetchval(f"SELECT count(*) FROM {table}") == 0, table
    assert await alpha.ctx.db.fetchval("SELECT display_name FROM accounts WHERE username = 'bob'") == ""


async def test_unknown_account_ids_are_404(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    for method, path in (
        ("GET", "/api/v1/accounts/999999"), ("GET", "/api/v1/accounts/999999/followers"),
        ("GET", "/api/v1/accounts/999999/following"), ("GET", "/api/v1/accounts/99999999999999999999"),
        ("GET", "/api/v1/accounts/999999/featured_tags"), ("POST", "/api/v1/accounts/999999/follow"),
        ("POST", "/api/v1/accounts/999999/mute"), ("POST", "/api/v1/accounts/999999/note"),
        ("POST", "/api/v1/follow_requests/999999/authorize"),
    ):
        status, body, _ = await api(alpha, method, path, token)
        assert status == 404 and body == {"error": "Record not found"}, path


# --- registration --------------------------------------------------------------------------------------------------


async def app_token(inst: Instance, scopes: str = "read write follow push") -> str:
    app = await register_app(inst, scopes)
    status, body, _ = await api(inst, "POST", "/oauth/token", data={
        "grant_type": "client_credentials", "client_id": app["client_id"], "client_secret": app["client_secret"],
        "scope": scopes,
    })
    assert status == 200, body
    return str(body["access_token"])


SIGNUP = {"username": "newbie", "email": "newbie@mail.example", "password": "correct horse", "agreement": "true",
          "locale": "en"}


async def test_registration_open_gives_a_working_token(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "open"})
    status, token, headers = await api(alpha, "POST", "/api/v1/accounts", await app_token(alpha), data=SIGNUP)
    assert status == 200, token
    assert set(token) == {"access_token", "token_type", "scope", "created_at"}
    assert token["token_type"] == "Bearer" and isinstance(token["created_at"], int)
    assert headers["Cache-Control"] == "no-store"
    status, me, _ = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", token["access_token"])
    assert status == 200 and me["username"] == "newbie"
    user = await alpha.ctx.db.fetchone("SELECT * FROM users")
    assert (user["email"], user["approved"], user["locale"]) == ("newbie@mail.example", 1, "en")


async def test_registration_closed_is_refused(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "closed"})
    status, body, _ = await api(alpha, "POST", "/api/v1/accounts", await app_token(alpha), data=SIGNUP)
    assert status == 403 and body["error"]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM users") == 0


async def test_registration_needs_a_token_with_write_accounts(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "open"})
    status, body, _ = await api(alpha, "POST", "/api/v1/accounts", data=SIGNUP)
    assert status == 401 and body["error"]
    status, body, _ = await api(alpha, "POST", "/api/v1/accounts", await app_token(alpha, "read"), data=SIGNUP)
    assert status == 403 and body["error"]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM users") == 0


async def test_registration_with_approval_stores_an_unapproved_user(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "approval"})
    status, token, _ = await api(alpha, "POST", "/api/v1/accounts", await app_token(alpha),
                                 data={**SIGNUP, "reason": "I like cats"})
    assert status == 200 and token["access_token"]
    user = await alpha.ctx.db.fetchone("SELECT * FROM users")
    assert (user["approved"], user["reason"]) == (0, "I like cats")


async def test_unapproved_token_signs_nothing_in(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "approval"})
    status, token, _ = await api(alpha, "POST", "/api/v1/accounts", await app_token(alpha), data=SIGNUP)
    status, body, _ = await api(alpha, "GET", "/api/v1/accounts/verify_credentials", token["access_token"])
    assert status == 403 and body["error"]


BAD_SIGNUPS: list[tuple[dict[str, str | None], str, str]] = [
    ({"email": "a@b.tld@evil"}, "email", "ERR_INVALID"),
    ({"email": "no-at-sign"}, "email", "ERR_INVALID"),
    ({"email": ""}, "email", "ERR_BLANK"),
    ({"email": "taken@mail.example"}, "email", "ERR_TAKEN"),
    ({"username": "Taken"}, "username", "ERR_TAKEN"),
    ({"username": "bad name!"}, "username", "ERR_INVALID"),
    ({"username": "admin"}, "username", "ERR_RESERVED"),
    ({"username": "u" * 31}, "username", "ERR_TOO_LONG"),
    ({"agreement": "false"}, "agreement", "ERR_ACCEPTED"),
    ({"agreement": None}, "agreement", "ERR_ACCEPTED"),
    ({"password": "short"}, "password", "ERR_TOO_SHORT"),
    ({"locale": "<script>"}, "locale", "ERR_INCLUSION"),
]


async def test_registration_validation_errors_store_nothing(network: Network) -> None:
    alpha = await network.add("alpha.test", instance={"registrations": "open"})
    assert alpha.app is not None
    alpha.app[RATE_LIMITER].limits = Limits(sign_up=Rule(100, 1800))  # many sign-ups from one test client
    await create_local_account(alpha.ctx.db, alpha.base, "taken", "password123", email="Taken@mail.example")
    token = await app_token(alpha)
    for change, field, code in BAD_SIGNUPS:
        data = {k: v for k, v in {**SIGNUP, **change}.items() if v is not None}
        status, body, _ = await api(alpha, "POST", "/api/v1/accounts", token, data=data)
        assert status == 422, (change, body)
        assert body["error"].startswith("Validation failed: ")
        assert list(body["details"]) == [field], change
        assert [e["error"] for e in body["details"][field]] == [code] and body["details"][field][0]["description"]
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM users") == 1
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM oauth_tokens WHERE account_id IS NOT NULL") == 0
    status, body, _ = await api(alpha, "POST", "/api/v1/accounts", token, data={"username": "x"})
    assert status == 422 and {"email", "password", "agreement"} <= set(body["details"])
