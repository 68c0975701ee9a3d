"""A person moves house: every export re-imported elsewhere gives the same relationships, the
archive brings the posts, and the Move brings the followers.

Real instances on 127.0.0.1: alice lives on alpha (with followers on alpha and beta, follows,
lists, blocks, mutes, domain blocks and bookmarks from tests/test_exports.social_graph) and
moves to gamma. Mastodon's CSVs are re-imported on gamma and GoToSocial's on delta, both
through GoToSocial's import API; the archive goes through `fedi.portability`'s job on gamma.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp

from fedi.portability.archive_export import build_archive
from fedi.portability.archive_import import queue_archive_import
from outbox import actions
from outbox.actions import PollRequest, PostRequest
from tests.api_calls import api, user
from tests.api_client import bearer
from tests.harness import Instance, Network
from tests.test_exports import raw_get, social_graph, upload

#: Mastodon's export file -> the import type it is read back as.
MASTODON = {"follows": "following", "blocks": "blocks", "mutes": "mutes", "domain_blocks": "domain_blocks",
            "bookmarks": "bookmarks", "lists": "lists"}
GOTOSOCIAL = ("following", "blocks", "mutes", "lists")


async def relationships(inst: Instance, account_id: int) -> dict[str, Any]:
    """What the account follows, blocks, mutes, lists and bookmarks, by URI (comparable across instances)."""
    db = inst.ctx.db
    follows = await db.fetchall(
        "SELECT a.uri, f.state, f.show_reblogs, f.notify, f.languages_json FROM follows f"
        " JOIN accounts a ON a.id = f.target_account_id WHERE f.account_id = ? ORDER BY a.uri", (account_id,))
    lists: dict[str, list[str]] = {}
    for row in await db.fetchall(
            "SELECT l.title, a.uri FROM lists l LEFT JOIN list_accounts la ON la.list_id = l.id"
            " LEFT JOIN accounts a ON a.id = la.account_id WHERE l.account_id = ? ORDER BY l.title, a.uri", (account_id,)):
        lists.setdefault(row["title"], []).extend([row["uri"]] if row["uri"] else [])

    async def uris(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in await db.fetchall(sql, (account_id,))]

    return {
        "follows": [tuple(r) for r in follows],
        "blocks": await uris("SELECT a.uri FROM blocks b JOIN accounts a ON a.id = b.target_account_id"
                             " WHERE b.account_id = ? ORDER BY a.uri"),
        "mutes": await uris("SELECT a.uri, m.notifications FROM mutes m JOIN accounts a ON a.id = m.target_account_id"
                            " WHERE m.account_id = ? ORDER BY a.uri"),
        "domain_blocks": await uris("SELECT domain FROM user_domain_blocks WHERE account_id = ? ORDER BY domain"),
        "bookmarks": await uris("SELECT s.uri FROM bookmarks b JOIN statuses s ON s.id = b.status_id"
                                " WHERE b.account_id = ? ORDER BY s.uri"),
        "lists": lists,
    }


async def import_csv(inst: Instance, token: str, kind: str, data: bytes) -> None:
    assert inst.session is not None
    form = aiohttp.FormData()
    form.add_field("data", data, filename=f"{kind}.csv", content_type="text/csv")
    form.add_field("type", kind)
    form.add_field("mode", "merge")
    async with inst.session.post(inst.url("/api/v1/import"), data=form, headers=bearer(token)) as resp:
        assert resp.status == 202, await resp.text()


async def download(inst: Instance, token: str, path: str) -> bytes:
    status, body, _ = await raw_get(inst, path, bearer(token))
    assert status == 200, body
    return body


async def test_a_person_moves_with_relationships_posts_and_followers(network: Network, tmp_path: Path) -> None:
    g = await social_graph(network)
    alpha, beta, token, alice = g["alpha"], g["beta"], g["token"], g["alice"]
    gamma, delta = await network.add("gamma.test"), await network.add("delta.test")
    new_token, new_alice = await user(gamma, "alice")
    gts_token, gts_alice = await user(delta, "alice")
    before = await relationships(alpha, alice["id"])
    assert before["follows"] and before["blocks"] and before["mutes"] and before["domain_blocks"]
    assert before["bookmarks"] and len(before["lists"]) == 2

    # Relationships: Mastodon's files onto gamma, GoToSocial's onto delta, both through POST /api/v1/import.
    for name, kind in MASTODON.items():
        await import_csv(gamma, new_token, kind, await download(alpha, token, f"/settings/exports/{name}.csv"))
    for kind in GOTOSOCIAL:
        await import_csv(delta, gts_token, kind, await download(alpha, token, f"/api/v1/exports/{kind}.csv"))
    for _ in range(5):  # lists follow their members first; remote follows wait for the Accept
        await network.drain()
    after = await relationships(gamma, new_alice["id"])
    assert after == before
    on_delta = await relationships(delta, gts_alice["id"])
    assert {k: on_delta[k] for k in ("blocks", "mutes", "lists")} == {k: before[k] for k in ("blocks", "mutes", "lists")}
    # GoToSocial's following.csv has no languages (its follows have none): everything else comes back.
    assert [f[:4] for f in on_delta["follows"]] == [f[:4] for f in before["follows"]]

    # Posts: the archive alpha builds is imported on gamma, keeping dates, media, the poll and the thread.
    media = await upload(alpha, token, "a heron at dawn")
    first = await actions.create_status(alpha.ctx, alice, PostRequest(text="first post #hello", language="en"))
    reply = await actions.create_status(alpha.ctx, alice, PostRequest(text="and a reply", in_reply_to_id=first["id"]))
    photo = await actions.create_status(alpha.ctx, alice, PostRequest(text="look", visibility="private",
                                                                       media_ids=(int(media),), spoiler_text="bird"))
    poll = await actions.create_status(alpha.ctx, alice, PostRequest(
        text="tea or coffee?", poll=PollRequest(options=("tea", "coffee"), expires_in=300)))
    archive = str(tmp_path / "alice.zip")
    await build_archive(alpha.ctx, alice, archive)
    job_id = await queue_archive_import(gamma.ctx, new_alice, archive)
    await network.drain()
    job = await gamma.ctx.db.fetchone("SELECT state, error FROM jobs WHERE id = ?", (job_id,))
    assert job is not None and tuple(job) == ("done", None)
    imported = {r["previous_uri"]: r for r in await gamma.ctx.db.fetchall(
        "SELECT * FROM statuses WHERE account_id = ? AND previous_uri IS NOT NULL", (new_alice["id"],))}
    assert set(imported) >= {first["uri"], reply["uri"], photo["uri"], poll["uri"]}
    for old in (first, reply, photo, poll):
        assert imported[old["uri"]]["published_at"] == int(old["published_at"])  # archives keep whole seconds
    assert imported[reply["uri"]]["in_reply_to_id"] == imported[first["uri"]]["id"]
    assert (imported[photo["uri"]]["visibility"], imported[photo["uri"]]["summary"]) == ("private", "bird")
    assert imported[first["uri"]]["language"] == "en"
    described = await gamma.ctx.db.fetchval("SELECT description FROM media_attachments WHERE status_id = ?",
                                            (imported[photo["uri"]]["id"],))
    assert described == "a heron at dawn"
    assert await gamma.ctx.db.fetchval("SELECT count(*) FROM polls WHERE status_id = ?", (imported[poll["uri"]]["id"],)) == 1
    assert gamma.session is not None
    async with gamma.session.get(imported[first["uri"]]["uri"].replace(gamma.base, gamma.url("")),
                                 headers={"Accept": "application/activity+json"}) as resp:
        assert resp.status == 200
        assert json.loads(await resp.text())["previously"] == first["uri"]
    again = await queue_archive_import(gamma.ctx, new_alice, archive)
    await network.drain()
    assert again != job_id
    assert await gamma.ctx.db.fetchval("SELECT count(*) FROM statuses WHERE account_id = ?", (new_alice["id"],)) \
        == len(imported)

    # Followers: gamma's alice names alpha's as an alias, alpha's moves; bob (alpha) and carol (beta) follow gamma's.
    status, body = await api(gamma, "POST", "/api/v1/accounts/alias", new_token,
                             data={"also_known_as_uris[]": alice["uri"]})
    assert status == 200, body
    status, body = await api(alpha, "POST", "/api/v1/accounts/move", token,
                             data={"password": "password123", "moved_to_uri": new_alice["uri"]})
    assert status == 202, body
    for _ in range(3):
        await network.drain()
    followers = await gamma.ctx.db.fetchall(
        "SELECT a.uri FROM follows f JOIN accounts a ON a.id = f.account_id"
        " WHERE f.target_account_id = ? AND f.state = 'accepted' ORDER BY a.uri", (new_alice["id"],))
    assert {r["uri"] for r in followers} == {g["bob"]["uri"], f"{beta.base}/users/carol"}
    assert alpha.session is not None
    async with alpha.session.get(alpha.url("/@alice"), allow_redirects=False, headers={"Accept": "text/html"}) as resp:
        assert resp.status in (301, 302) and resp.headers["Location"].startswith(gamma.base)
