"""Discovery and actor endpoints: WebFinger, NodeInfo, host-meta, actor documents,
follower collections, profile pages, and the WebFinger client."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

import actors.webfinger
from actors.local import create_local_account, instance_signer
from fedi.signatures import load_private_key, load_public_key, public_key_pem
from actors.remote import ActorError
from tests.harness import Instance, Network

AS2 = "application/activity+json"
LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
ACTOR_KEYS = {
    "@context", "id", "type", "preferredUsername", "name", "summary", "url", "inbox", "outbox",
    "followers", "following", "featured", "endpoints", "publicKey", "manuallyApprovesFollowers",
    "discoverable", "published", "attachment", "indexable", "memorial",
}


async def get(inst: Instance, path: str, **kwargs: Any) -> tuple[int, dict[str, str], Any]:
    assert inst.session is not None
    async with inst.session.get(inst.url(path), **kwargs) as resp:
        ctype = resp.headers.get("Content-Type", "")
        body: Any = await resp.json(content_type=None) if "json" in ctype else await resp.text()
        return resp.status, dict(resp.headers), body


async def finger(inst: Instance, resource: str | None) -> tuple[int, dict[str, str], Any]:
    params = {} if resource is None else {"resource": resource}
    return await get(inst, "/.well-known/webfinger", params=params)


@pytest.fixture
async def alpha(network: Network) -> Instance:
    inst = await network.add("alpha.test")
    await create_local_account(inst.ctx.db, inst.base, "Alice", "password123", display_name="Alice A.")
    return inst


async def insert_remote(inst: Instance, name: str) -> int:
    async with inst.ctx.db.write() as tx:
        account_id = tx.new_id()
        await tx.execute(
            "INSERT INTO accounts (id, username, domain, uri, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
            (account_id, name, "remote.test", f"https://remote.test/users/{name}", time.time(), time.time()),
        )
    return account_id


async def follow(inst: Instance, follower: int, target: int, state: str = "accepted") -> None:
    async with inst.ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO follows (id, account_id, target_account_id, state, created_at) VALUES (?, ?, ?, ?, ?)",
            (tx.new_id(), follower, target, state, time.time()),
        )


async def add_status(inst: Instance, account_id: int, content: str, visibility: str = "public",
                     deleted: bool = False) -> None:
    async with inst.ctx.db.write() as tx:
        sid = tx.new_id()
        await tx.execute(
            """INSERT INTO statuses (id, uri, url, account_id, local, content, visibility, published_at,
                   created_at, deleted_at) VALUES (?, ?, ?, ?, 1, ?, ?, ?, ?, ?)""",
            (sid, f"{inst.base}/users/Alice/statuses/{sid}", f"{inst.base}/@Alice/{sid}", account_id, content,
             visibility, time.time(), time.time(), time.time() if deleted else None),
        )


async def alice_id(inst: Instance) -> int:
    return int(await inst.ctx.db.fetchval("SELECT id FROM accounts WHERE username = 'Alice'"))


# --- WebFinger -------------------------------------------------------------------------

async def test_webfinger_acct(alpha: Instance) -> None:
    domain = alpha.config.instance.domain
    status, headers, doc = await finger(alpha, f"acct:Alice@{domain}")
    assert status == 200
    assert headers["Content-Type"].startswith("application/jrd+json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert doc["subject"] == f"acct:Alice@{domain}"
    assert doc["aliases"] == [f"{alpha.base}/@Alice", f"{alpha.base}/users/Alice"]
    links = {link["rel"]: link for link in doc["links"]}
    assert links["self"] == {"rel": "self", "type": AS2, "href": f"{alpha.base}/users/Alice"}
    assert links["http://webfinger.net/rel/profile-page"]["href"] == f"{alpha.base}/@Alice"
    assert links["http://webfinger.net/rel/profile-page"]["type"] == "text/html"
    assert links["http://ostatus.org/schema/1.0/subscribe"]["template"] == f"{alpha.base}/authorize_interaction?uri={{uri}}"


@pytest.mark.parametrize("resource", [
    "acct:alice@{domain}", "acct:ALICE@{DOMAIN}", "ACCT:aLiCe@{domain}",
    "{base}/users/Alice", "{base}/users/alice", "{base}/@Alice", "alice@{domain}",
])
async def test_webfinger_resource_forms(alpha: Instance, resource: str) -> None:
    domain = alpha.config.instance.domain
    resource = resource.format(domain=domain, DOMAIN=domain.upper(), base=alpha.base)
    status, _, doc = await finger(alpha, resource)
    assert status == 200, doc
    assert doc["subject"] == f"acct:Alice@{domain}"


@pytest.mark.parametrize("resource", ["acct:{domain}@{domain}", "{base}/actor"])
async def test_webfinger_instance_actor(alpha: Instance, resource: str) -> None:
    domain = alpha.config.instance.domain
    status, _, doc = await finger(alpha, resource.format(domain=domain, base=alpha.base))
    assert status == 200
    assert doc["subject"] == f"acct:{domain}@{domain}"
    self_link = next(link for link in doc["links"] if link["rel"] == "self")
    assert self_link["href"] == f"{alpha.base}/actor"


async def test_webfinger_rel_filter(alpha: Instance) -> None:
    domain = alpha.config.instance.domain
    status, _, doc = await get(alpha, "/.well-known/webfinger",
                               params={"resource": f"acct:alice@{domain}", "rel": "self"})
    assert status == 200
    assert [link["rel"] for link in doc["links"]] == ["self"]


@pytest.mark.parametrize("resource", [
    None, "", "alice", "mailto:alice@x.test", "acct:@{domain}", "acct:alice@", "acct:alice",
    "acct:al ice@{domain}", "acct:" + "a" * 520 + "@{domain}", "http://", "https://exa mple.test/users/alice",
])
async def test_webfinger_bad_request(alpha: Instance, resource: str | None) -> None:
    if resource is not None:
        resource = resource.format(domain=alpha.config.instance.domain)
    status, headers, doc = await finger(alpha, resource)
    assert status == 400
    assert "error" in doc
    assert headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("resource", [
    "acct:bob@{domain}", "acct:alice@beta.test", "acct:alice@alpha.test", "https://beta.test/users/alice",
    "{base}/users/bob", "{base}/statuses/1",
])
async def test_webfinger_not_found(alpha: Instance, resource: str) -> None:
    resource = resource.format(domain=alpha.config.instance.domain, base=alpha.base)
    status, headers, doc = await finger(alpha, resource)
    assert status == 404
    assert doc == {"error": "not found"}
    assert headers["Access-Control-Allow-Origin"] == "*"


async def test_webfinger_suspended_is_not_found(alpha: Instance) -> None:
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET suspended_at = ? WHERE username = 'Alice'", (time.time(),))
    status, _, _ = await finger(alpha, f"acct:alice@{alpha.config.instance.domain}")
    assert status == 404


async def test_webfinger_cors_preflight(alpha: Instance) -> None:
    assert alpha.session is not None
    async with alpha.session.options(alpha.url("/.well-known/webfinger"), headers={
        "Origin": "https://client.test", "Access-Control-Request-Method": "GET",
    }) as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]


# --- host-meta and NodeInfo ----------------------------------------------------------

async def test_host_meta(alpha: Instance) -> None:
    status, headers, body = await get(alpha, "/.well-known/host-meta")
    assert status == 200
    assert headers["Content-Type"].startswith("application/xrd+xml")
    assert 'rel="lrdd"' in body
    assert f'template="{alpha.base}/.well-known/webfinger?resource={{uri}}"' in body


async def test_nodeinfo(alpha: Instance) -> None:
    status, _, doc = await get(alpha, "/.well-known/nodeinfo")
    assert status == 200
    links = {link["rel"]: link["href"] for link in doc["links"]}
    assert links == {
        "http://nodeinfo.diaspora.software/ns/schema/2.0": f"{alpha.base}/nodeinfo/2.0",
        "http://nodeinfo.diaspora.software/ns/schema/2.1": f"{alpha.base}/nodeinfo/2.1",
    }
    account = await alice_id(alpha)
    await add_status(alpha, account, "<p>one</p>")
    await add_status(alpha, account, "<p>two</p>", visibility="private")
    await add_status(alpha, account, "<p>gone</p>", deleted=True)
    for version in ("2.0", "2.1"):
        status, headers, info = await get(alpha, f"/nodeinfo/{version}")
        assert status == 200
        assert headers["Content-Type"] == (
            f'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/{version}#"'
        )
        assert info["version"] == version
        assert info["software"]["name"] == "fedi"
        assert info["software"]["version"] == __import__("fedi").__version__
        assert info["protocols"] == ["activitypub"]
        assert info["openRegistrations"] is False
        assert info["usage"] == {"users": {"total": 1, "activeMonth": 1, "activeHalfyear": 1}, "localPosts": 2}
        assert info["metadata"]["nodeName"] == "alpha.test"


async def test_nodeinfo_activity_counts_posters_by_their_last_post(alpha: Instance) -> None:
    """Old accounts count as active by when they last posted; deleted posts neither count nor make anyone active."""
    day = 86_400.0
    alice = await alice_id(alpha)
    await create_local_account(alpha.ctx.db, alpha.base, "quiet", "password123")
    await create_local_account(alpha.ctx.db, alpha.base, "seasonal", "password123")
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET created_at = ? WHERE domain IS NULL", (time.time() - 400 * day,))
    await add_status(alpha, alice, "<p>today</p>")
    seasonal = int(await alpha.ctx.db.fetchval("SELECT id FROM accounts WHERE username = 'seasonal'"))
    await add_status(alpha, seasonal, "<p>then</p>")
    await add_status(alpha, seasonal, "<p>gone</p>", deleted=True)
    async with alpha.ctx.db.write() as tx:  # seasonal's kept post is from 60 days ago
        await tx.execute("UPDATE statuses SET published_at = ?, created_at = ? WHERE account_id = ? AND deleted_at IS NULL",
                         (time.time() - 60 * day, time.time() - 60 * day, seasonal))
    _, _, info = await get(alpha, "/nodeinfo/2.1")
    assert info["usage"] == {"users": {"total": 3, "activeMonth": 1, "activeHalfyear": 2}, "localPosts": 2}
    _, _, instance = await get(alpha, "/api/v1/instance")
    assert instance["stats"]["status_count"] == 2


async def test_instance_activity_counts_this_week_and_earlier_weeks(alpha: Instance) -> None:
    """GET /api/v1/instance/activity: twelve weeks, newest first, local posts counted in the week they were published."""
    week = 604_800
    alice = await alice_id(alpha)
    await add_status(alpha, alice, "<p>this week</p>")
    await add_status(alpha, alice, "<p>three weeks ago</p>")
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE statuses SET published_at = published_at - ? WHERE content = '<p>three weeks ago</p>'",
                         (3 * week,))
    _, _, weeks = await get(alpha, "/api/v1/instance/activity")
    assert len(weeks) == 12
    starts = [int(w["week"]) for w in weeks]
    assert starts[0] == int(time.time()) // week * week and all(a - b == week for a, b in zip(starts, starts[1:]))
    assert [w["statuses"] for w in weeks[:4]] == ["1", "0", "0", "1"]
    assert weeks[0]["registrations"] == "1"


async def test_nodeinfo_open_registrations(network: Network) -> None:
    inst = await network.add("open.test", instance={"registrations": "open"})
    _, _, info = await get(inst, "/nodeinfo/2.1")
    assert info["openRegistrations"] is True
    assert info["usage"]["users"]["total"] == 0


# --- actor documents and content negotiation -----------------------------------------

async def test_actor_document(alpha: Instance) -> None:
    status, headers, doc = await get(alpha, "/users/Alice", headers={"Accept": AS2})
    assert status == 200
    assert headers["Content-Type"].startswith(AS2)
    assert ACTOR_KEYS <= doc.keys()
    uri = f"{alpha.base}/users/Alice"
    assert doc["@context"][:2] == ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"]
    terms = doc["@context"][2]
    assert terms["featured"] == {"@id": "toot:featured", "@type": "@id"}
    assert terms["Hashtag"] == "as:Hashtag" and terms["PropertyValue"] == "schema:PropertyValue"
    assert doc["id"] == uri and doc["type"] == "Person"
    assert doc["preferredUsername"] == "Alice" and doc["name"] == "Alice A."
    assert doc["url"] == f"{alpha.base}/@Alice"
    assert doc["inbox"] == f"{uri}/inbox" and doc["outbox"] == f"{uri}/outbox"
    assert doc["followers"] == f"{uri}/followers" and doc["following"] == f"{uri}/following"
    assert doc["featured"] == f"{uri}/collections/featured"
    assert doc["endpoints"] == {"sharedInbox": f"{alpha.base}/inbox"}
    assert doc["manuallyApprovesFollowers"] is False and doc["discoverable"] is True
    assert doc["memorial"] is False and doc["attachment"] == []
    assert doc["published"].endswith("Z") and "." not in doc["published"]
    assert "icon" not in doc and "image" not in doc
    key = doc["publicKey"]
    assert key["id"] == f"{uri}#main-key" and key["owner"] == uri
    public = serialization.load_pem_public_key(key["publicKeyPem"].encode())
    private_pem = await alpha.ctx.db.fetchval("SELECT private_key_pem FROM accounts WHERE uri = ?", (uri,))
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert public.public_numbers() == private.public_key().public_numbers()  # type: ignore[union-attr]


async def test_actor_document_optional_fields(alpha: Instance) -> None:
    async with alpha.ctx.db.write() as tx:
        await tx.execute(
            "UPDATE accounts SET avatar_url = ?, header_url = ?, fields_json = ?, bot = 1, actor_type = 'Service',"
            " locked = 1 WHERE username = 'Alice'",
            ("https://cdn.test/a.png", "https://cdn.test/h.jpg", '[{"name": "Site", "value": "<a>x</a>"}]'),
        )
    _, _, doc = await get(alpha, "/users/Alice", headers={"Accept": AS2})
    assert doc["type"] == "Service" and doc["manuallyApprovesFollowers"] is True
    assert doc["icon"] == {"type": "Image", "url": "https://cdn.test/a.png", "mediaType": "image/png"}
    assert doc["image"]["url"] == "https://cdn.test/h.jpg"
    assert doc["attachment"] == [{"type": "PropertyValue", "name": "Site", "value": "<a>x</a>"}]


@pytest.mark.parametrize("accept", [AS2, LD, "application/ld+json", f"{AS2}, {LD}", None, "*/*",
                                    "application/json"])
async def test_actor_json_negotiation(alpha: Instance, accept: str | None) -> None:
    headers = {} if accept is None else {"Accept": accept}
    status, resp_headers, doc = await get(alpha, "/users/Alice", headers=headers)
    assert status == 200
    assert resp_headers["Content-Type"].startswith(AS2)
    assert doc["id"] == f"{alpha.base}/users/Alice"
    assert "Accept" in resp_headers.get("Vary", "")


@pytest.mark.parametrize("path", ["/users/Alice", "/users/alice", "/@Alice"])
async def test_actor_html_for_browsers(alpha: Instance, path: str) -> None:
    status, headers, body = await get(alpha, path, headers={"Accept": BROWSER})
    assert status == 200
    assert headers["Content-Type"].startswith("text/html")
    assert "Alice A." in body
    assert f"@Alice@{alpha.config.instance.domain}" in body
    assert "Content-Security-Policy" in headers


async def test_profile_page_counts(alpha: Instance) -> None:
    alice = await alice_id(alpha)
    for i in range(3):
        await follow(alpha, await insert_remote(alpha, f"fan{i}"), alice)
    await follow(alpha, await insert_remote(alpha, "asked"), alice, state="pending")  # not a follower yet
    await follow(alpha, alice, await insert_remote(alpha, "idol"))
    for text, deleted in (("one", False), ("two", False), ("gone", True)):
        await add_status(alpha, alice, text, deleted=deleted)
    status, _, body = await get(alpha, "/@Alice", headers={"Accept": BROWSER})
    assert status == 200
    for figure in ("<strong>3</strong> followers", "<strong>1</strong> following", "<strong>2</strong> posts"):
        assert figure in body, figure


async def test_profile_url_serves_json_to_activitypub(alpha: Instance) -> None:
    status, headers, doc = await get(alpha, "/@Alice", headers={"Accept": LD})
    assert status == 200 and headers["Content-Type"].startswith(AS2)
    assert doc["id"] == f"{alpha.base}/users/Alice"


async def test_instance_actor(alpha: Instance) -> None:
    for accept in (AS2, BROWSER, None):
        status, headers, doc = await get(alpha, "/actor", headers={"Accept": accept} if accept else {})
        assert status == 200 and headers["Content-Type"].startswith(AS2)
        assert doc["type"] == "Application"
        assert doc["id"] == f"{alpha.base}/actor"
        assert doc["preferredUsername"] == alpha.config.instance.domain
        assert doc["publicKey"]["id"] == f"{alpha.base}/actor#main-key"


async def test_instance_actor_key_is_made_on_first_need(alpha: Instance) -> None:
    """A new instance has no instance-actor key until something needs it; then exactly one, kept."""
    actor_id = alpha.ctx.instance_actor_id
    stored = "SELECT private_key_pem, public_key_pem FROM accounts WHERE id = ?"
    assert alpha.ctx.instance_signer is None
    assert tuple(await alpha.ctx.db.fetchone(stored, (actor_id,))) == (None, None)
    # Two at once (a page view and a signed fetch, say) still make a single key pair.
    first, second = await asyncio.gather(instance_signer(alpha.ctx), instance_signer(alpha.ctx))
    private, public = await alpha.ctx.db.fetchone(stored, (actor_id,))
    assert first.private_key_pem == second.private_key_pem == private
    assert public_key_pem(load_private_key(private)) == public
    status, _, doc = await get(alpha, "/actor", headers={"Accept": AS2})
    assert status == 200 and doc["publicKey"]["publicKeyPem"] == public
    alpha.ctx.instance_signer = None  # as after a restart: the stored pair is used, not a new one
    assert (await instance_signer(alpha.ctx)).private_key_pem == private


async def test_actor_document_of_a_new_instance_carries_its_key(alpha: Instance) -> None:
    status, _, doc = await get(alpha, "/actor", headers={"Accept": AS2})
    assert status == 200
    public = await alpha.ctx.db.fetchval("SELECT public_key_pem FROM accounts WHERE id = ?", (alpha.ctx.instance_actor_id,))
    assert public and doc["publicKey"]["publicKeyPem"] == public
    load_public_key(public)


@pytest.mark.parametrize("path", ["/users/bob", "/@bob", "/users/bob/followers", "/users/bob/following",
                                  "/users/bob/collections/featured", "/users/{domain}"])
async def test_unknown_user_404(alpha: Instance, path: str) -> None:
    path = path.format(domain=alpha.config.instance.domain)  # the instance actor is not a /users/ account
    status, _, _ = await get(alpha, path, headers={"Accept": AS2})
    assert status == 404


async def test_suspended_account_is_gone(alpha: Instance) -> None:
    async with alpha.ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET suspended_at = ? WHERE username = 'Alice'", (time.time(),))
    status, _, doc = await get(alpha, "/users/Alice", headers={"Accept": AS2})
    assert status == 410 and doc["type"] == "Tombstone"
    status, _, doc = await get(alpha, "/users/Alice")
    assert status == 410 and doc == {"error": "gone"}
    status, _, _ = await get(alpha, "/@Alice", headers={"Accept": BROWSER})
    assert status == 410


# --- collections -----------------------------------------------------------------------

async def test_followers_collection(alpha: Instance) -> None:
    alice = await alice_id(alpha)
    remotes = [await insert_remote(alpha, f"r{i}") for i in range(42)]
    for rid in remotes:
        await follow(alpha, rid, alice)
    pending = await insert_remote(alpha, "pending")
    await follow(alpha, pending, alice, state="pending")
    await follow(alpha, alice, remotes[0])

    coll_id = f"{alpha.base}/users/Alice/followers"
    status, headers, doc = await get(alpha, "/users/alice/followers", headers={"Accept": AS2})
    assert status == 200 and headers["Content-Type"].startswith(AS2)
    assert doc["type"] == "OrderedCollection" and doc["id"] == coll_id
    assert doc["totalItems"] == 42 and doc["first"] == f"{coll_id}?page=1"

    _, _, page1 = await get(alpha, "/users/Alice/followers?page=1")
    assert page1["type"] == "OrderedCollectionPage" and page1["partOf"] == coll_id
    assert len(page1["orderedItems"]) == 40 and page1["next"] == f"{coll_id}?page=2"
    assert page1["orderedItems"][0] == "https://remote.test/users/r41"  # newest first
    assert "prev" not in page1
    _, _, page2 = await get(alpha, "/users/Alice/followers?page=2")
    assert len(page2["orderedItems"]) == 2 and "next" not in page2 and page2["prev"] == f"{coll_id}?page=1"
    items = set(page1["orderedItems"]) | set(page2["orderedItems"])
    assert "https://remote.test/users/pending" not in items and len(items) == 42

    _, _, following = await get(alpha, "/users/Alice/following")
    assert following["totalItems"] == 1
    _, _, fpage = await get(alpha, "/users/Alice/following?page=1")
    assert fpage["orderedItems"] == ["https://remote.test/users/r0"]

    status, _, _ = await get(alpha, "/users/Alice/followers?page=abc")
    assert status == 400


async def test_featured_collection(alpha: Instance) -> None:
    status, _, doc = await get(alpha, "/users/Alice/collections/featured")
    assert status == 200
    assert doc["type"] == "OrderedCollection" and doc["totalItems"] == 0 and doc["orderedItems"] == []
    assert doc["id"] == f"{alpha.base}/users/Alice/collections/featured"


# --- HTML pages --------------------------------------------------------------------------

async def test_profile_page_lists_public_posts(alpha: Instance) -> None:
    alice = await alice_id(alpha)
    await add_status(alpha, alice, "<p>hello <strong>world</strong></p>")
    await add_status(alpha, alice, "<p>unlisted note</p>", visibility="unlisted")
    await add_status(alpha, alice, "<p>secret</p>", visibility="private")
    await add_status(alpha, alice, "<p>removed</p>", deleted=True)
    remote = await insert_remote(alpha, "fan")
    await follow(alpha, remote, alice)
    _, _, body = await get(alpha, "/@Alice", headers={"Accept": BROWSER})
    assert "<p>hello <strong>world</strong></p>" in body
    assert "unlisted note" in body
    assert "secret" not in body and "removed" not in body
    assert "<strong>3</strong> posts" in body and "<strong>1</strong> followers" in body


async def test_profile_page_escapes_display_name(network: Network) -> None:
    inst = await network.add("alpha.test")
    await create_local_account(inst.ctx.db, inst.base, "mallory", "password123",
                               display_name="<script>alert(1)</script>")
    _, _, body = await get(inst, "/@mallory", headers={"Accept": BROWSER})
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body
    _, _, index = await get(inst, "/", headers={"Accept": BROWSER})
    assert "<script>alert(1)</script>" not in index


async def test_index_page(alpha: Instance) -> None:
    status, headers, body = await get(alpha, "/", headers={"Accept": BROWSER})
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "alpha.test" in body and "A fedi instance" in body
    assert f"@Alice@{alpha.config.instance.domain}" in body
    assert alpha.config.instance.domain + "@" not in body  # the instance actor is not listed


# --- WebFinger client --------------------------------------------------------------------

@pytest.mark.parametrize("form", ["@alice@{domain}", "Alice@{domain}", "acct:alice@{domain}"])
async def test_resolve_handle_remote(network: Network, alpha: Instance, form: str) -> None:
    beta = await network.add("beta.test")
    uri = await actors.webfinger.resolve_handle(beta.ctx, form.format(domain=alpha.config.instance.domain))
    assert uri == f"{alpha.base}/users/Alice"


async def test_resolve_handle_local(alpha: Instance) -> None:
    uri = await actors.webfinger.resolve_handle(alpha.ctx, f"@alice@{alpha.config.instance.domain}")
    assert uri == f"{alpha.base}/users/Alice"


async def test_resolve_handle_unknown(network: Network, alpha: Instance) -> None:
    beta = await network.add("beta.test")
    with pytest.raises(ActorError) as info:
        await actors.webfinger.resolve_handle(beta.ctx, f"@nobody@{alpha.config.instance.domain}")
    assert info.value.status == 404


@pytest.mark.parametrize("handle", ["", "alice", "@alice@", "@@x.test", "al ice@x.test", "alice@x_y.test",
                                    "alice@x.test/path", "alice@-x.test", "alice@x.test:99999999"])
async def test_resolve_handle_malformed(alpha: Instance, handle: str) -> None:
    with pytest.raises(ActorError):
        await actors.webfinger.resolve_handle(alpha.ctx, handle)
