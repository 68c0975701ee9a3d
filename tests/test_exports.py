"""Exports: GoToSocial's CSV API, Mastodon's CSV pages, and the archive in Mastodon's layout.

Real instances on 127.0.0.1: alice on alpha follows, lists, blocks, mutes and bookmarks
local accounts and carol on beta (reached through real federation), so addresses carry
both domains. The archive is requested on the settings page, built by the job runner and
opened as a zip; `fedi export` runs as a real subprocess against alpha's database.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import aiohttp
from PIL import Image

from actors.local import get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.clock import now
from fedi.portability.archive_export import exports_dir
from outbox import actions, social
from outbox.actions import PollRequest, PostRequest
from tests.api_calls import api, call, count, post, user
from tests.api_client import bearer
from tests.harness import Instance, Network
from tests.processes import run_cli, write_config
from tests.web_client import browser

MASTODON_FILES = ("follows", "blocks", "mutes", "domain_blocks", "bookmarks", "lists")


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (10, 120, 200)).save(out, format="PNG")
    return out.getvalue()


async def raw_get(inst: Instance, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    assert inst.session is not None
    async with inst.session.get(inst.url(path), headers=headers or {}, allow_redirects=False) as resp:
        return resp.status, await resp.read(), resp.headers


async def upload(inst: Instance, token: str, description: str) -> str:
    assert inst.session is not None
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="photo.png", content_type="image/png")
    form.add_field("description", description)
    async with inst.session.post(inst.url("/api/v2/media"), data=form, headers=bearer(token)) as resp:
        assert resp.status in (200, 202), await resp.text()
        return str((await resp.json())["id"])


async def social_graph(network: Network) -> dict[str, Any]:
    """alice on alpha with follows, followers, lists, a block, mutes, domain blocks and bookmarks."""
    alpha, beta = await network.add("alpha.test"), await network.add("beta.test")
    token, alice = await user(alpha, "alice")
    _, bob = await user(alpha, "bob")
    _, dave = await user(alpha, "dave")
    _, erin = await user(alpha, "erin")
    _, carol_home = await user(beta, "carol")
    a, b = alpha.ctx.domain, beta.ctx.domain
    carol = await get_actor(alpha.ctx, await resolve_handle(alpha.ctx, f"@carol@{b}"))
    alice_on_beta = await get_actor(beta.ctx, await resolve_handle(beta.ctx, f"@alice@{a}"))

    status, rel = await api(alpha, "POST", f"/api/v1/accounts/{bob['id']}/follow", token,
                            json={"notify": True, "languages": ["en", "de"]})
    assert status == 200 and rel["following"], rel
    status, rel = await api(alpha, "POST", f"/api/v1/accounts/{carol['id']}/follow", token, json={"reblogs": False})
    assert status == 200, rel
    await actions.follow(alpha.ctx, bob, alice)
    await actions.follow(beta.ctx, carol_home, alice_on_beta)
    await network.drain()

    lists = {}
    for title, members in (("Friends", [bob, carol]), ("Close, and far", [carol])):
        status, made = await api(alpha, "POST", "/api/v1/lists", token, json={"title": title})
        assert status == 200, made
        status, body = await api(alpha, "POST", f"/api/v1/lists/{made['id']}/accounts", token,
                                 json={"account_ids": [str(m["id"]) for m in members]})
        assert status == 200, body
        lists[title] = made["id"]
    status, body = await api(alpha, "POST", f"/api/v1/accounts/{dave['id']}/block", token)
    assert status == 200, body
    status, body = await api(alpha, "POST", f"/api/v1/accounts/{erin['id']}/mute", token, json={"notifications": False})
    assert status == 200, body
    await social.mute(alpha.ctx, alice, carol)  # notifications muted too (the default)
    for domain in ("spam.example", "junk.example"):
        status, body = await api(alpha, "POST", "/api/v1/domain_blocks", token, data={"domain": domain})
        assert status == 200, body

    bobs = await actions.create_status(alpha.ctx, bob, PostRequest(text="bob's post"))
    carols = await actions.create_status(beta.ctx, carol_home, PostRequest(text="carol's post"))
    await network.drain()
    carols_here = await alpha.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (carols["uri"],))
    assert carols_here is not None
    for status_id in (bobs["id"], carols_here["id"]):
        status, body = await api(alpha, "POST", f"/api/v1/statuses/{status_id}/bookmark", token)
        assert status == 200, body
    return {"alpha": alpha, "beta": beta, "token": token, "alice": alice, "bob": bob, "carol": carol,
            "bobs": bobs, "carols": carols_here, "a": a, "b": b}


async def test_csv_exports_in_gotosocial_and_mastodon_formats(network: Network) -> None:
    g = await social_graph(network)
    alpha, token, a, b = g["alpha"], g["token"], g["a"], g["b"]

    expected_gts = {
        "following": "Account address,Show boosts,Notify on new posts,Languages\n"
                     f"bob@{a},true,true,\ncarol@{b},false,false,\n",
        "followers": f"Account address\nbob@{a}\ncarol@{b}\n",
        "lists": f'"Close, and far",carol@{b}\nFriends,bob@{a}\nFriends,carol@{b}\n',
        "blocks": f"dave@{a}\n",
        "mutes": f"Account address,Hide notifications\nerin@{a},false\ncarol@{b},true\n",
    }
    for name, body in expected_gts.items():
        status, got, headers = await raw_get(alpha, f"/api/v1/exports/{name}.csv", bearer(token))
        assert status == 200, got
        assert got.decode() == body, name
        assert headers["Content-Type"].startswith("text/csv")
        assert headers["Content-Disposition"] == f'attachment; filename="{name}.csv"'

    status, stats = await api(alpha, "GET", "/api/v1/exports/stats", token)
    assert status == 200
    assert stats == {"media_storage": "0B", "followers_count": 2, "following_count": 2, "statuses_count": 0,
                     "lists_count": 2, "blocks_count": 1, "mutes_count": 2}

    expected_mastodon = {  # newest first, as Mastodon writes them
        "follows": "Account address,Show boosts,Notify on new posts,Languages\n"
                   f'carol@{b},false,false,\nbob@{a},true,true,"en, de"\n',
        "blocks": f"dave@{a}\n",
        "mutes": f"Account address,Hide notifications\ncarol@{b},true\nerin@{a},false\n",
        "domain_blocks": "spam.example\njunk.example\n",
        "bookmarks": f"{g['carols']['uri']}\n{g['bobs']['uri']}\n",
        "lists": f'Friends,bob@{a}\nFriends,carol@{b}\n"Close, and far",carol@{b}\n',
    }
    filenames = {"follows": "following_accounts.csv", "blocks": "blocked_accounts.csv", "mutes": "muted_accounts.csv",
                 "domain_blocks": "blocked_domains.csv", "bookmarks": "bookmarks.csv", "lists": "lists.csv"}
    alice_web = await browser(alpha, "alice")
    try:
        for name, body in expected_mastodon.items():
            async with alice_web.http.get(alpha.url(f"/settings/exports/{name}.csv"), allow_redirects=False) as resp:
                assert resp.status == 200, name
                assert (await resp.read()).decode() == body, name
                assert resp.headers["Content-Type"].startswith("text/csv")
                assert resp.headers["Content-Disposition"] == f'attachment; filename="{filenames[name]}"'
            status, got, _ = await raw_get(alpha, f"/settings/exports/{name}.csv", bearer(token))  # a token works too
            assert status == 200 and got.decode() == body
        status, page, _ = await alice_web.get("/settings/export")
        assert status == 200
        for name in MASTODON_FILES:
            assert f'href="/settings/exports/{name}.csv"' in page
    finally:
        await alice_web.close()

    # bob sees his own relationships, never alice's
    bob_token = await user_token_for(alpha, "bob")
    status, got, _ = await raw_get(alpha, "/api/v1/exports/following.csv", bearer(bob_token))
    assert got.decode() == f"Account address,Show boosts,Notify on new posts,Languages\nalice@{a},true,false,\n"


async def user_token_for(inst: Instance, name: str, scopes: str = "read") -> str:
    from tests.api_client import user_token

    return await user_token(inst, name, scopes, create=False)


async def test_exports_refuse_without_the_right_credentials(network: Network) -> None:
    alpha = await network.add("alpha.test")
    await user(alpha, "alice")
    write_only = await user_token_for(alpha, "alice", "write")
    follows_only = await user_token_for(alpha, "alice", "read:follows")
    for name in ("following", "followers", "lists", "blocks", "mutes"):
        path = f"/api/v1/exports/{name}.csv"
        status, body, _ = await call(alpha, "GET", path)
        assert status == 401 and body["error"]
        status, body, _ = await call(alpha, "GET", path, "not-a-token")
        assert status == 401
        status, body, _ = await call(alpha, "GET", path, write_only)
        assert status == 403 and "scope" in body["error"]
    status, _, _ = await raw_get(alpha, "/api/v1/exports/following.csv", bearer(follows_only))
    assert status == 200  # GoToSocial's narrow scope is enough for its file...
    status, body, _ = await call(alpha, "GET", "/api/v1/exports/stats", follows_only)
    assert status == 403  # ...and no more (stats need read:accounts)
    status, body, _ = await call(alpha, "GET", "/api/v1/exports/stats")
    assert status == 401
    for name in MASTODON_FILES:
        path = f"/settings/exports/{name}.csv"
        status, _, headers = await raw_get(alpha, path)
        assert status == 303 and headers["Location"].startswith("/admin/login?next=")
        status, body, _ = await raw_get(alpha, path, {**bearer(write_only), "Accept": "application/json"})
        assert status == 403 and json.loads(body)["error"]
    status, _, headers = await raw_get(alpha, "/settings/export")
    assert status == 303
    status, _, headers = await raw_get(alpha, "/settings/export/archive")
    assert status == 303


async def archive_setup(network: Network) -> dict[str, Any]:
    """alice's posts in every visibility, with media, a closed poll, a content warning, a reply and a boost."""
    g = await social_graph(network)
    alpha, token = g["alpha"], g["token"]
    assert alpha.session is not None
    form = aiohttp.FormData()
    form.add_field("avatar", png(), filename="me.png", content_type="image/png")
    async with alpha.session.patch(alpha.url("/api/v1/accounts/update_credentials"), data=form,
                                   headers=bearer(token)) as resp:
        assert resp.status == 200, await resp.text()
    media_id = await upload(alpha, token, "a blue rectangle")
    posts = {
        "public": await post(alpha, token, "public with a picture", media_ids=[media_id]),
        "unlisted": await post(alpha, token, "careful now", visibility="unlisted", spoiler_text="spoilers",
                               sensitive="true", language="de"),
        "private": await post(alpha, token, "followers only", visibility="private"),
        "direct": await post(alpha, token, f"@bob@{g['a']} just us", visibility="direct"),
        "reply": await post(alpha, token, f"@carol@{g['b']} replying", in_reply_to_id=str(g["carols"]["id"])),
    }
    alice = await get_local_account(alpha.ctx.db, "alice")
    assert alice is not None
    poll = await actions.create_status(alpha.ctx, alice, PostRequest(
        text="tea or coffee?", poll=PollRequest(options=("tea", "coffee"), expires_in=300)))
    bob_token = await user_token_for(alpha, "bob", "read write")
    poll_row = await alpha.ctx.db.fetchone("SELECT id FROM polls WHERE status_id = ?", (poll["id"],))
    assert poll_row is not None
    status, body = await api(alpha, "POST", f"/api/v1/polls/{poll_row['id']}/votes", bob_token, json={"choices": ["1"]})
    assert status == 200, body
    async with alpha.ctx.db.write() as tx:  # the poll's five minutes pass
        await tx.execute("UPDATE polls SET expires_at = ? WHERE id = ?", (now() - 60, poll_row["id"]))
    boost = await actions.reblog(alpha.ctx, alice, g["bobs"]["id"])
    status, body = await api(alpha, "POST", f"/api/v1/statuses/{g['bobs']['id']}/favourite", token)
    assert status == 200, body
    await network.drain()
    return {**g, "posts": posts, "poll": poll, "boost": boost, "alice": alice}


def check_archive(data: bytes, g: dict[str, Any]) -> dict[str, Any]:
    """Open the zip and check Mastodon's layout; returns the outbox."""
    alpha = g["alpha"]
    zf = zipfile.ZipFile(io.BytesIO(data))
    assert zf.testzip() is None
    names = set(zf.namelist())
    assert {"actor.json", "outbox.json", "likes.json", "bookmarks.json"} <= names
    actor = json.loads(zf.read("actor.json"))
    assert actor["id"] == g["alice"]["uri"] and actor["type"] == "Person" and actor["preferredUsername"] == "alice"
    avatar = actor["icon"]["url"]
    ext = os.path.splitext(g["alice"]["avatar_path"])[1]
    assert avatar == f"avatar{ext}" and zf.read(avatar) == (Path(alpha.config.media_path) / g["alice"]["avatar_path"]).read_bytes()
    assert "image" not in actor  # no header was set
    assert (actor["outbox"], actor["likes"], actor["bookmarks"]) == ("outbox.json", "likes.json", "bookmarks.json")

    outbox = json.loads(zf.read("outbox.json"))
    assert outbox["type"] == "OrderedCollection" and outbox["id"] == "outbox.json"
    items = outbox["orderedItems"]
    assert outbox["totalItems"] == len(items) == 7
    creates = {i["object"]["id"]: i for i in items if i["type"] == "Create"}
    by_text = {p: creates[g["posts"][p]["uri"]]["object"] for p in g["posts"]}
    public = "https://www.w3.org/ns/activitystreams#Public"
    followers = g["alice"]["followers_url"]
    assert public in by_text["public"]["to"]
    assert public in by_text["unlisted"]["cc"] and public not in by_text["unlisted"]["to"]
    assert by_text["private"]["to"] == [followers]
    assert by_text["direct"]["to"] == [g["bob"]["uri"]] and not by_text["direct"]["cc"]
    assert "just us" in by_text["direct"]["content"]
    cw = by_text["unlisted"]
    assert cw["summary"] == "spoilers" and cw["sensitive"] is True and set(cw["contentMap"]) == {"de"}
    assert by_text["reply"]["inReplyTo"] == g["carols"]["uri"]
    [attachment] = by_text["public"]["attachment"]
    assert attachment["url"].startswith("media_attachments/files/") and attachment["name"] == "a blue rectangle"
    media = zf.read(attachment["url"])
    path = attachment["url"].removeprefix("media_attachments/files/")
    assert media == (Path(alpha.config.media_path) / path).read_bytes()
    question = creates[g["poll"]["uri"]]["object"]
    assert question["type"] == "Question" and question["closed"] == question["endTime"]
    assert [(o["name"], o["replies"]["totalItems"]) for o in question["oneOf"]] == [("tea", 0), ("coffee", 1)]
    for item in creates.values():
        assert item["published"] and item["object"]["published"] and item["actor"] == g["alice"]["uri"]
    [announce] = [i for i in items if i["type"] == "Announce"]
    assert announce["object"] == g["bobs"]["uri"] and announce["id"] == g["boost"]["uri"]

    likes, bookmarks = json.loads(zf.read("likes.json")), json.loads(zf.read("bookmarks.json"))
    assert likes["type"] == bookmarks["type"] == "OrderedCollection"
    assert likes["orderedItems"] == [g["bobs"]["uri"]]
    assert bookmarks["orderedItems"] == [g["bobs"]["uri"], g["carols"]["uri"]]
    return outbox


async def test_archive_from_the_settings_page(network: Network) -> None:
    g = await archive_setup(network)
    alpha = g["alpha"]
    alice_web = await browser(alpha, "alice")
    bob_web = await browser(alpha, "bob")
    try:
        status, page, _ = await alice_web.get("/settings/export")
        assert status == 200 and "Request a new archive" in page and "archive-download" not in page
        status, _, headers = await alice_web.post("/settings/export/archive", {})
        assert status == 303 and headers["Location"] == "/settings/export"
        status, page, _ = await alice_web.get("/settings/export")
        assert "waiting to start" in page
        status, page, _ = await alice_web.post("/settings/export/archive", {})  # one at a time
        assert status == 429 and "already being prepared" in page
        status, _, _ = await alice_web.post("/settings/export/archive", {"csrf": "forged"}, csrf=False)
        assert status == 403
        assert await count(alpha, "SELECT count(*) FROM jobs WHERE kind = 'export_archive'") == 1

        await alpha.drain()
        status, page, _ = await alice_web.get("/settings/export")
        assert 'id="archive-download"' in page and "7 posts" in page
        async with alice_web.http.get(alpha.url("/settings/export/archive"), allow_redirects=False) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "application/zip"
            assert resp.headers["Content-Disposition"].startswith('attachment; filename="archive-')
            data = await resp.read()
        check_archive(data, g)

        folder = Path(exports_dir(alpha.config))
        assert folder.parent == Path(alpha.config.database_path).parent
        assert not str(folder).startswith(os.path.abspath(alpha.config.media_path))
        assert [p.suffix for p in folder.iterdir()] == [".zip"]  # the part file is gone

        # bob has no archive of his own and cannot reach alice's
        async with bob_web.http.get(alpha.url("/settings/export/archive"), allow_redirects=False) as resp:
            assert resp.status == 404
        status, page, _ = await bob_web.get("/settings/export")
        assert "archive-download" not in page

        # a day must pass before the next one; then it replaces the first
        status, page, _ = await alice_web.post("/settings/export/archive", {})
        assert status == 429 and "one archive a day" in page
        assert await count(alpha, "SELECT count(*) FROM jobs WHERE kind = 'export_archive'") == 1
        async with alpha.ctx.db.write() as tx:
            await tx.execute("UPDATE jobs SET created_at = created_at - 90000 WHERE kind = 'export_archive'")
        first = list(folder.iterdir())
        await post(alpha, g["token"], "one more")
        status, _, _ = await alice_web.post("/settings/export/archive", {})
        assert status == 303
        await alpha.drain()
        files = list(folder.iterdir())
        assert len(files) == 1 and files != first
        async with alice_web.http.get(alpha.url("/settings/export/archive")) as resp:
            outbox = json.loads(zipfile.ZipFile(io.BytesIO(await resp.read())).read("outbox.json"))
        assert outbox["totalItems"] == 8
    finally:
        await alice_web.close()
        await bob_web.close()


async def test_archive_job_resumes_after_a_cut_short_step(network: Network, monkeypatch: Any) -> None:
    """Steps of a few posts each; a step that dies mid-way leaves a part file that the next attempt trims."""
    from fedi.app import JOB_RUNNER
    from fedi.portability import archive_export

    alpha = await network.add("alpha.test")
    _, alice = await user(alpha, "alice")
    for i in range(25):
        await actions.create_status(alpha.ctx, alice, PostRequest(text=f"post {i}"))
    monkeypatch.setattr(archive_export, "STEP_POSTS", 10)
    monkeypatch.setattr(archive_export, "PAGE", 4)
    job_id = await archive_export.request_archive(alpha.ctx, alice)
    assert alpha.app is not None and await alpha.app[JOB_RUNNER].run_once() == 1
    job = await alpha.ctx.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert job is not None and job["state"] == "running" and job["progress"] == 12 and job["total"] == 25
    part = Path(exports_dir(alpha.config)) / f"{alice['id']}-{job_id}.posts"
    with part.open("ab") as fh:  # a step that wrote and then died before recording how far it got
        fh.write(b',{"half": "written')
    await alpha.drain()
    job = await alpha.ctx.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert job is not None
    assert job["state"] == "done", job["error"]
    path = json.loads(job["result_json"])["path"]
    outbox = json.loads(zipfile.ZipFile(path).read("outbox.json"))
    texts = [i["object"]["content"] for i in outbox["orderedItems"]]
    assert outbox["totalItems"] == 25 and texts == [f"<p>post {i}</p>" for i in range(25)]


async def test_fedi_export_command(network: Network, tmp_path: Path) -> None:
    g = await archive_setup(network)
    alpha = g["alpha"]
    config = write_config(tmp_path / "alpha.toml", {
        "instance": {"domain": alpha.ctx.domain, "scheme": "http"},
        "database": {"path": alpha.config.database_path},
        "media": {"path": alpha.config.media_path},
    })
    out = tmp_path / "alice.zip"
    result = run_cli("export", "alice", "--out", str(out), config=config)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"wrote {out}")
    check_archive(out.read_bytes(), g)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".archive-")) == []

    for args, expected in (
        (("export", "nobody", "--out", str(tmp_path / "x.zip")), "no local account 'nobody'"),
        (("export", "alice", "--out", str(tmp_path / "missing" / "x.zip")), "cannot write"),
        (("export", "alice", "--out", str(tmp_path)), "is a folder"),
    ):
        result = run_cli(*args, config=config)
        lines = result.stderr.splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
        assert expected in lines[0]
    assert not (tmp_path / "x.zip").exists()


def test_archive_memory_stays_flat(tmp_path: Path) -> None:
    """Peak Python allocations while building archives of 200 and 2,000 posts (see README)."""
    import asyncio

    from tests.archive_memory import measure

    small, large = asyncio.run(measure(tmp_path / "small", 200)), asyncio.run(measure(tmp_path / "large", 2000))
    print(f"archive peak: 200 posts {small[0]} bytes traced ({small[1]} byte zip); "
          f"2000 posts {large[0]} bytes traced ({large[1]} byte zip)")
    assert large[1] > 5 * small[1]  # ten times the posts made a much bigger archive...
    assert large[0] < 2 * small[0] + 1_000_000  # ...but not ten times the memory
    assert large[0] < large[1]  # and far less than holding the archive in memory would
