"""Search v2: local accounts, statuses and hashtags, and resolving remote accounts and posts over the network."""

from __future__ import annotations

from typing import Any

from actors.local import create_local_account, get_local_account
from outbox import actions
from outbox.actions import PostRequest
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network

TAG_KEYS = {"id", "name", "url", "history", "following", "featuring"}


async def _search(inst: Instance, token: str | None, **query: str) -> tuple[int, Any]:
    assert inst.session is not None
    async with inst.session.get(inst.url("/api/v2/search"), params=query,
                                headers=bearer(token) if token else {}) as resp:
        return resp.status, await resp.json()


async def _local(inst: Instance, name: str) -> Any:
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return row


async def _stored(inst: Instance, uri: str) -> bool:
    return await inst.ctx.db.fetchone("SELECT 1 FROM accounts WHERE uri = ?", (uri,)) is not None


async def test_local_accounts_statuses_and_hashtags(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    await user_token(alpha, "bobby")
    await create_local_account(alpha.ctx.db, alpha.base, "bob", "password123", display_name="Robert Tables")
    await create_local_account(alpha.ctx.db, alpha.base, "carol", "password123")
    bob, carol = await _local(alpha, "bob"), await _local(alpha, "carol")
    await actions.create_status(alpha.ctx, bob, PostRequest(text="hello #fediverse and #fedora friends"))
    await actions.create_status(alpha.ctx, carol, PostRequest(text="hello from a secret corner", visibility="private"))
    alice = await _local(alpha, "alice")
    await actions.create_status(alpha.ctx, alice, PostRequest(text="hello to my followers only", visibility="private"))

    status, body = await _search(alpha, token, q="bob")
    assert status == 200 and set(body) == {"accounts", "statuses", "hashtags"}
    assert [a["acct"] for a in body["accounts"]] == ["bob", "bobby"]  # the exact name first
    for q in ("rob", "tab", "@bo", f"bob@{alpha.config.instance.domain}"):
        _, body = await _search(alpha, token, q=q, type="accounts")
        assert "bob" in [a["acct"] for a in body["accounts"]], q
        assert body["statuses"] == [] and body["hashtags"] == []
    _, body = await _search(alpha, token, q="b", type="accounts", limit="1", offset="1")
    assert [a["acct"] for a in body["accounts"]] == ["bobby"]
    _, body = await _search(alpha, token, q="bob", type="accounts", following="true")
    assert body["accounts"] == []

    _, body = await _search(alpha, token, q="#fed", type="hashtags")
    assert [t["name"] for t in body["hashtags"]] == ["fedora", "fediverse"]
    tag = body["hashtags"][0]
    assert set(tag) == TAG_KEYS and tag["url"] == f"{alpha.base}/tags/fedora" and tag["history"] == []
    assert tag["following"] is False and tag["id"].isdigit()
    _, body = await _search(alpha, None, q="fediverse", type="hashtags")
    assert [t["name"] for t in body["hashtags"]] == ["fediverse"] and body["hashtags"][0]["following"] is None

    _, body = await _search(alpha, token, q="hello", type="statuses")
    texts = sorted(s["content"] for s in body["statuses"])
    assert len(texts) == 2 and "secret corner" not in "".join(texts)  # carol's private post stays hidden
    assert any("followers only" in t for t in texts)  # the viewer's own private post is found
    _, body = await _search(alpha, token, q="hello", type="statuses", account_id=str(bob["id"]))
    assert len(body["statuses"]) == 1 and body["statuses"][0]["account"]["acct"] == "bob"
    _, body = await _search(alpha, None, q="hello")
    assert len(body["statuses"]) == 1 and "fediverse" in body["statuses"][0]["content"]
    _, body = await _search(alpha, token, q="%")
    assert body == {"accounts": [], "statuses": [], "hashtags": []}  # wildcards are literal


async def test_bad_parameters(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    for query, code in (({}, 400), ({"q": "  "}, 400), ({"q": "x", "type": "users"}, 422),
                        ({"q": "x", "offset": "5"}, 401)):
        status, body = await _search(alpha, token if code != 401 else None, **query)
        assert status == code and "error" in body, query
    reader = await user_token(alpha, "alice", scopes="write", create=False)
    status, _ = await _search(alpha, reader, q="x")
    assert status == 403


async def test_resolve_remote_account_by_handle_and_by_url(network: Network) -> None:
    alpha = await network.add("alpha.test")
    beta = await network.add("beta.test")
    token = await user_token(alpha, "alice")
    for name in ("carol", "dave", "erin"):
        await create_local_account(beta.ctx.db, beta.base, name, "password123", display_name=name.title())
    domain = beta.config.instance.domain
    carol_uri = f"{beta.base}/users/carol"

    # no token: resolving is refused and nothing is fetched or stored
    status, body = await _search(alpha, None, q=f"@carol@{domain}", resolve="true")
    assert status == 401 and "error" in body
    assert not await _stored(alpha, carol_uri)
    # a token without resolve: only what is already known
    status, body = await _search(alpha, token, q=f"@carol@{domain}")
    assert status == 200 and body["accounts"] == [] and not await _stored(alpha, carol_uri)

    status, body = await _search(alpha, token, q=f"@carol@{domain}", resolve="true")
    assert status == 200 and [a["acct"] for a in body["accounts"]] == [f"carol@{domain}"]
    assert body["accounts"][0]["uri"] == carol_uri and body["accounts"][0]["display_name"] == "Carol"
    assert await _stored(alpha, carol_uri)
    _, again = await _search(alpha, token, q=f"carol@{domain}", resolve="true")
    assert again["accounts"][0]["id"] == body["accounts"][0]["id"]

    # by actor id, and by profile URL (whose document names another id: fetched from that id)
    for q, uri in ((f"{beta.base}/users/dave", f"{beta.base}/users/dave"), (f"{beta.base}/@erin", f"{beta.base}/users/erin")):
        status, body = await _search(alpha, token, q=q, resolve="true")
        assert status == 200 and [a["uri"] for a in body["accounts"]] == [uri], q
        assert await _stored(alpha, uri)

    # unknown user and unreachable host: an empty answer, nothing stored
    for q in (f"@nobody@{domain}", "@someone@127.0.0.1:9", f"{beta.base}/users/nobody"):
        status, body = await _search(alpha, token, q=q, resolve="true")
        assert status == 200 and body["accounts"] == [], q
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM accounts WHERE domain IS NOT NULL") == 3


async def test_resolve_remote_status_url(network: Network) -> None:
    alpha = await network.add("alpha.test")
    beta = await network.add("beta.test")
    token = await user_token(alpha, "alice")
    await create_local_account(beta.ctx.db, beta.base, "carol", "password123")
    carol = await _local(beta, "carol")
    post = await actions.create_status(beta.ctx, carol, PostRequest(text="a post worth finding #found"))
    hidden = await actions.create_status(beta.ctx, carol, PostRequest(text="just followers", visibility="private"))

    status, body = await _search(alpha, token, q=post["url"], resolve="true")
    assert status == 200 and len(body["statuses"]) == 1
    found = body["statuses"][0]
    assert found["uri"] == post["uri"] and "worth finding" in found["content"]
    assert found["account"]["acct"] == f"carol@{beta.config.instance.domain}"
    assert [t["name"] for t in found["tags"]] == ["found"]
    # now known: by its id too, without another fetch
    _, body = await _search(alpha, token, q=post["uri"])
    assert [s["id"] for s in body["statuses"]] == [found["id"]]

    status, body = await _search(alpha, token, q=hidden["url"], resolve="true")
    assert status == 200 and body["statuses"] == []
    assert await alpha.ctx.db.fetchone("SELECT 1 FROM statuses WHERE uri = ?", (hidden["uri"],)) is None
