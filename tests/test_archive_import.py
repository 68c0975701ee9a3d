"""Importing the posts of a Mastodon account archive (a zip as Mastodon's BackupService writes it)."""

from __future__ import annotations

import io
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from PIL import Image

from fedi.clock import now
from fedi.jobs import JobRunner
from fedi.portability import job_handlers
from fedi.portability.archive_import import imports_dir, queue_archive_import
from fedi.portability.archive_read import ArchiveError
from tests.api_calls import api, count, user
from tests.harness import Instance, Network
from tests.peer import Peer, PeerActor
from tests.web_client import browser

PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
OLD = "https://old.example/users/alice"
FOLLOWERS = f"{OLD}/followers"
AS2 = "application/activity+json"
IMAGE = "media_attachments/files/000/000/001/original/abc.png"
PHOTO = "media_attachments/files/000/000/002/original/def.jpg"


def png(width: int = 12, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def note(n: int, day: int, text: str, **fields: Any) -> dict[str, Any]:
    """A Note as Mastodon's ActivityPub::NoteSerializer writes it into outbox.json."""
    return {
        "id": f"{OLD}/statuses/{n}", "type": "Note", "summary": None, "inReplyTo": None,
        "published": f"2019-03-{day:02d}T10:00:00Z", "url": f"https://old.example/@alice/{n}",
        "attributedTo": OLD, "to": [PUBLIC], "cc": [FOLLOWERS], "sensitive": False,
        "atomUri": f"{OLD}/statuses/{n}", "inReplyToAtomUri": None,
        "conversation": f"tag:old.example,2019-03-01:objectId={n}:objectType=Conversation",
        "content": f"<p>{text}</p>", "contentMap": {"en": f"<p>{text}</p>"}, "attachment": [], "tag": [],
        "replies": {"id": f"{OLD}/statuses/{n}/replies", "type": "Collection"},
        **fields,
    }


def create(obj: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"{obj['id']}/activity", "type": "Create", "actor": OLD, "published": obj["published"],
            "to": obj["to"], "cc": obj["cc"], "object": obj}


def image(url: str, alt: str, media_type: str = "image/png") -> dict[str, Any]:
    return {"type": "Document", "mediaType": media_type, "url": url, "name": alt, "blurhash": "UABC",
            "focalPoint": [0.0, 0.0], "width": 12, "height": 8}


def outbox(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"@context": "https://www.w3.org/ns/activitystreams", "id": "outbox.json", "type": "OrderedCollection",
            "totalItems": len(items), "orderedItems": items}


def actor() -> dict[str, Any]:
    return {"@context": ["https://www.w3.org/ns/activitystreams"], "id": OLD, "type": "Person",
            "preferredUsername": "alice", "followers": FOLLOWERS, "inbox": f"{OLD}/inbox",
            "outbox": "outbox.json", "likes": "likes.json", "bookmarks": "bookmarks.json"}


def collection(name: str, uris: list[str]) -> dict[str, Any]:
    return {"@context": "https://www.w3.org/ns/activitystreams", "id": name, "type": "OrderedCollection",
            "totalItems": len(uris), "orderedItems": uris}


def mastodon_posts() -> list[dict[str, Any]]:
    first = note(1, 1, "first post #archived", contentMap={"de": "<p>first post #archived</p>"},
                 attachment=[image(IMAGE, "a red square")],
                 tag=[{"type": "Hashtag", "href": "https://old.example/tags/archived", "name": "#archived"}])
    del first["content"]  # Mastodon writes content too; contentMap alone must do as well
    first["content"] = "<p>first post #archived</p><script>alert(1)</script>"
    reply = note(2, 2, "a reply under a warning", summary="spoiler", sensitive=True,
                 inReplyTo=f"{OLD}/statuses/1", to=[FOLLOWERS], cc=[PUBLIC],
                 attachment=[image("/" + PHOTO, "a blue square", "image/jpeg")])
    private = note(3, 3, "followers only", to=[FOLLOWERS], cc=[])
    direct = note(4, 4, "just for you", to=["https://elsewhere.example/users/bob"], cc=[])
    poll = note(5, 5, "tea or coffee?", type="Question", endTime="2019-03-06T10:00:00Z",
                closed="2019-03-06T10:00:00Z", votersCount=8,
                oneOf=[{"type": "Note", "name": "tea", "replies": {"type": "Collection", "totalItems": 3}},
                       {"type": "Note", "name": "coffee", "replies": {"type": "Collection", "totalItems": 5}}])
    orphan = note(6, 6, "replying to a post nobody here knows", inReplyTo="https://gone.example/notes/9")
    boost = {"id": f"{OLD}/statuses/7/activity", "type": "Announce", "actor": OLD,
             "published": "2019-03-07T10:00:00Z", "to": [PUBLIC], "cc": [FOLLOWERS],
             "object": "https://gone.example/notes/10"}
    return [create(first), create(reply), create(private), create(direct), create(poll), create(orphan), boost]


def write_archive(path: Path, items: list[dict[str, Any]] | None = None, *,
                  media: dict[str, bytes] | None = None, raw: dict[str, bytes] | None = None) -> str:
    """A zip in Mastodon's layout: actor.json, outbox.json, likes.json, bookmarks.json, media files."""
    from fedi.jsonutil import dumps

    members: dict[str, bytes] = {
        "actor.json": dumps(actor()),
        "outbox.json": dumps(outbox(mastodon_posts() if items is None else items)),
        "likes.json": dumps(collection("likes.json", ["https://elsewhere.example/notes/1"])),
        "bookmarks.json": dumps(collection("bookmarks.json", [])),
    }
    members.update({IMAGE: png(), PHOTO: jpeg()} if media is None else media)
    members.update(raw or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return str(path)


async def job_row(inst: Instance, job_id: int) -> Any:
    row = await inst.ctx.db.fetchone("SELECT * FROM jobs WHERE id = ?", (job_id,))
    assert row is not None
    return row


async def imported(inst: Instance) -> int:
    return await count(inst, "SELECT count(*) FROM statuses WHERE previous_uri IS NOT NULL")


def media_files(inst: Instance) -> list[str]:
    return [os.path.join(d, f) for d, _, files in os.walk(inst.ctx.config.media_path) for f in files]


@pytest.fixture
async def beta(network: Network) -> Instance:
    return await network.add("beta.test")


async def test_mastodon_archive_posts_keep_dates_media_polls_and_threads(
        beta: Instance, peer: Peer, mallory: PeerActor, tmp_path: Path) -> None:
    token, alice = await user(beta, "alice")
    bob_token, bob = await user(beta, "bob")
    status, _ = await api(beta, "POST", f"/api/v1/accounts/{alice['id']}/follow", bob_token)
    assert status == 200
    mallory.publish()
    assert (await mallory.post(beta, mallory.activity("Follow", alice["uri"]))).status == 202
    await beta.drain()
    assert await count(beta, "SELECT count(*) FROM follows WHERE target_account_id = ? AND state = 'accepted'",
                       alice["id"]) == 2
    deliveries = await count(beta, "SELECT count(*) FROM deliveries")
    notifications = await count(beta, "SELECT count(*) FROM notifications")

    job_id = await queue_archive_import(beta.ctx, alice, write_archive(tmp_path / "archive.zip"))
    job = await job_row(beta, job_id)
    assert (job["kind"], job["state"], job["total"]) == ("import_archive", "queued", 6)
    await beta.drain()
    job = await job_row(beta, job_id)
    assert (job["state"], job["progress"], job["error"]) == ("done", 6, None)
    assert not os.listdir(imports_dir(beta.ctx.config))  # the archive copy is gone once imported

    status, listed = await api(beta, "GET", f"/api/v1/accounts/{alice['id']}/statuses?limit=40", token)
    assert status == 200
    by_text = {s["content"]: s for s in listed}
    assert [s["created_at"][:10] for s in listed] == [f"2019-03-{d:02d}" for d in (6, 5, 4, 3, 2, 1)]
    assert all(s["created_at"].endswith("T10:00:00.000Z") for s in listed)
    assert [int(s["id"]) for s in listed] == sorted((int(s["id"]) for s in listed), reverse=True)

    first = next(s for s in listed if "first post" in s["content"])
    assert "<script>" not in first["content"] and first["language"] == "de"
    assert [t["name"] for t in first["tags"]] == ["archived"]
    assert first["visibility"] == "public" and first["sensitive"] is False
    [picture] = first["media_attachments"]
    assert picture["description"] == "a red square" and picture["type"] == "image"
    async with aiohttp.ClientSession() as http, http.get(beta.url(urlsplit(picture["url"]).path)) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert Image.open(io.BytesIO(await resp.read())).size == (12, 8)

    reply = next(s for s in listed if "a reply" in s["content"])
    assert (reply["spoiler_text"], reply["sensitive"], reply["visibility"]) == ("spoiler", True, "unlisted")
    assert reply["in_reply_to_id"] == first["id"]
    assert reply["media_attachments"][0]["description"] == "a blue square"
    assert next(s for s in listed if "followers only" in s["content"])["visibility"] == "private"
    assert next(s for s in listed if "just for you" in s["content"])["visibility"] == "direct"
    orphan = next(s for s in listed if "nobody here knows" in s["content"])
    assert orphan["in_reply_to_id"] is None
    assert await beta.ctx.db.fetchval("SELECT in_reply_to_uri FROM statuses WHERE id = ?",
                                      (int(orphan["id"]),)) == "https://gone.example/notes/9"

    poll = next(s for s in listed if "tea or coffee" in s["content"])["poll"]
    assert poll["expired"] is True and poll["expires_at"].startswith("2019-03-06T10:00:00")
    assert [(o["title"], o["votes_count"]) for o in poll["options"]] == [("tea", 3), ("coffee", 5)]
    assert poll["votes_count"] == 8
    assert by_text  # every post has its text

    # the Note dereferences at its new id and names the old one
    async with aiohttp.ClientSession(headers={"Accept": AS2}) as http:
        async with http.get(beta.url(f"/users/alice/statuses/{reply['id']}")) as resp:
            assert resp.status == 200
            doc = await resp.json(content_type=None)
        assert doc["id"] == reply["uri"] and doc["previously"] == f"{OLD}/statuses/2"
        assert doc["inReplyTo"] == first["uri"] and doc["published"] == "2019-03-02T10:00:00Z"
        assert FOLLOWERS not in doc["to"] + doc["cc"] and alice["followers_url"] in doc["to"]
        assert any(isinstance(c, dict) and "previously" in c for c in doc["@context"])
        async with http.get(beta.url("/users/alice/outbox?page=1")) as resp:
            page = await resp.json(content_type=None)
    # public and unlisted posts in the outbox, newest first, each the Create of its Note
    assert [i["object"]["previously"] for i in page["orderedItems"]] == [
        f"{OLD}/statuses/{n}" for n in (6, 5, 2, 1)]

    # nobody told: no notifications, no deliveries, no home-feed rows for the followers
    assert await count(beta, "SELECT count(*) FROM notifications") == notifications
    assert await count(beta, "SELECT count(*) FROM deliveries") == deliveries
    assert await count(beta, "SELECT count(*) FROM home_feed WHERE account_id = ?", bob["id"]) == 0

    # the same archive again adds nothing
    again = await queue_archive_import(beta.ctx, alice, write_archive(tmp_path / "again.zip"))
    await beta.drain()
    row = await job_row(beta, again)
    assert row["state"] == "done" and '"already_there":6' in row["result_json"]
    assert await imported(beta) == 6
    assert await count(beta, "SELECT count(*) FROM media_attachments") == 2
    assert await count(beta, "SELECT count(*) FROM outbox_activities WHERE type = 'Create'") == 6


async def test_a_job_stepped_once_resumes_in_a_fresh_runner_without_duplicates(beta: Instance, tmp_path: Path) -> None:
    _, alice = await user(beta, "alice")
    posts = [create(note(n, 1 + n % 27, f"post {n}")) for n in range(1, 151)]
    job_id = await queue_archive_import(beta.ctx, alice, write_archive(tmp_path / "big.zip", posts, media={}))
    first = JobRunner(beta.ctx, job_handlers())
    assert await first.run_once() == 1
    assert await imported(beta) == 100  # one bounded step, committed with its progress
    assert await count(beta, "SELECT progress FROM jobs WHERE id = ?", job_id) == 100
    # a runner leases the job again and is killed mid-step: nothing of that step is committed, and
    # no other runner takes the job while the lease holds
    async with beta.ctx.db.write() as tx:
        await tx.execute("UPDATE jobs SET state = 'running', locked_until = ? WHERE id = ?", (now() + 120, job_id))
        # and say the progress of some posts it did was lost: they are found again, not doubled
        await tx.execute("UPDATE import_rows SET state = 'pending' WHERE job_id = ? AND line >= 90", (job_id,))
    fresh = JobRunner(beta.ctx, job_handlers())
    assert await fresh.run_once() == 0
    async with beta.ctx.db.write() as tx:  # the lease lapses
        await tx.execute("UPDATE jobs SET locked_until = ? WHERE id = ?", (now() - 1, job_id))
    while await fresh.run_once():
        pass
    assert await imported(beta) == 150
    assert await count(beta, "SELECT count(*) FROM outbox_activities") == 150
    row = await job_row(beta, job_id)
    assert row["state"] == "done" and '"imported":150' in row["result_json"] and '"already_there":10' in row["result_json"]


def _bomb(path: Path) -> str:
    write_archive(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("media_attachments/files/bomb.bin", b"\0" * (50 * 1024 * 1024))
    return str(path)


def _lying(path: Path) -> str:
    """outbox.json declaring 100 bytes (so no ratio check fires) while it inflates to far more."""
    write_archive(path)
    with zipfile.ZipFile(path) as zf:
        local, start = zf.getinfo("outbox.json").header_offset, zf.start_dir
    data = bytearray(path.read_bytes())
    central = data.find(b"PK\x01\x02" + bytes(42)[:0], start)
    while data[central + 46:central + 57] != b"outbox.json":
        central = data.find(b"PK\x01\x02", central + 4)
    data[local + 22:local + 26] = (100).to_bytes(4, "little")
    data[central + 24:central + 28] = (100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return str(path)


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header claims a huge picture (a decompression bomb if decoded)."""
    data = bytearray(png())
    ihdr = data.find(b"IHDR")
    data[ihdr + 4:ihdr + 12] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[ihdr + 17:ihdr + 21] = zlib.crc32(bytes(data[ihdr:ihdr + 17])).to_bytes(4, "big")
    return bytes(data)


def _with_member(path: Path, name: str, data: bytes = b"{}", **info: Any) -> str:
    write_archive(path)
    member = zipfile.ZipInfo(name)
    for key, value in info.items():
        setattr(member, key, value)
    with zipfile.ZipFile(path, "a") as zf, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of the duplicate name it is asked to write
        zf.writestr(member, data)
    return str(path)


def _many(path: Path) -> str:
    write_archive(path)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_STORED) as zf:
        for n in range(20_001):
            zf.writestr(f"m/{n}", b"")
    return str(path)


def _outbox_text(path: Path, text: bytes) -> str:
    return write_archive(path, raw={"outbox.json": text})


HOSTILE: dict[str, tuple[Any, str]] = {
    "zip bomb": (_bomb, "inflates more than 100 times"),
    "declared size lie": (_lying, "outbox.json cannot be read"),
    "parent directory": (lambda p: _with_member(p, "../evil"), "leaves the archive"),
    "absolute name": (lambda p: _with_member(p, "/abs"), "is absolute"),
    "backslash": (lambda p: _with_member(p, "media\\..\\..\\x"), "is not allowed"),
    "duplicate name": (lambda p: _with_member(p, "likes.json"), "appears twice"),
    "symlink": (lambda p: _with_member(p, "link", b"/etc/passwd", external_attr=(0o120777 << 16)),
                "symbolic link"),
    "too many members": (_many, "too many members"),
    "malformed outbox": (lambda p: _outbox_text(p, b'{"type": "OrderedCollection", "orderedItems": [{"a": }]}'),
                         "malformed JSON"),
    "duplicate keys": (lambda p: _outbox_text(p, b'{"type": "OrderedCollection", "orderedItems": '
                                              b'[{"type": "Create", "type": "Announce"}]}'), "duplicate key"),
    "deep nesting": (lambda p: _outbox_text(p, b'{"orderedItems": [' + b"[" * 2000 + b"]" * 2000 + b"]}"),
                     "nested too deeply"),
    "wrong shape": (lambda p: _outbox_text(p, b'{"type": "Person", "orderedItems": []}'), "not an OrderedCollection"),
    "items not a list": (lambda p: _outbox_text(p, b'{"type": "OrderedCollection", "orderedItems": {}}'),
                         "expected '['"),
    "not an image": (lambda p: write_archive(p, media={IMAGE: b"<html><script>x</script></html>", PHOTO: jpeg()}),
                     "not a JPEG, PNG, GIF or WebP"),
    "decompression bomb png": (lambda p: write_archive(p, media={IMAGE: png_claiming(9000, 9000), PHOTO: jpeg()}),
                               "larger than 33,177,600 pixels"),
    "missing media": (lambda p: write_archive(p, media={IMAGE: png()}), "missing from the archive"),
    "no actor": (lambda p: _drop(p, "actor.json"), "no actor.json"),
}


def _drop(path: Path, name: str) -> str:
    src = Path(write_archive(path.with_suffix(".full.zip")))
    with zipfile.ZipFile(src) as full, zipfile.ZipFile(path, "w") as out:
        for info in full.infolist():
            if info.filename != name:
                out.writestr(info, full.read(info))
    return str(path)


async def _refused(inst: Instance, alice: Any, path: str, expected: str) -> None:
    with pytest.raises(ArchiveError) as refused:
        await queue_archive_import(inst.ctx, alice, path)
    assert expected in str(refused.value) and "\n" not in str(refused.value)
    assert await count(inst, "SELECT count(*) FROM jobs") == 0
    assert await count(inst, "SELECT count(*) FROM statuses") == 0
    assert await count(inst, "SELECT count(*) FROM import_rows") == 0
    assert media_files(inst) == []
    assert os.listdir(imports_dir(inst.ctx.config)) == []


async def test_an_outbox_over_its_cap_is_refused(beta: Instance, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from fedi.portability import archive_read

    _, alice = await user(beta, "alice")
    monkeypatch.setattr(archive_read, "MAX_OUTBOX_BYTES", 64 * 1024)  # 128 MB in earnest; the check is the same
    posts = [create(note(n, 1, f"post {n}")) for n in range(200)]
    await _refused(beta, alice, write_archive(tmp_path / "big.zip", posts, media={}), "outbox.json is larger than")


@pytest.mark.parametrize("case", list(HOSTILE))
async def test_hostile_archives_are_refused_and_nothing_is_stored(beta: Instance, tmp_path: Path, case: str) -> None:
    _, alice = await user(beta, "alice")
    build, expected = HOSTILE[case]
    await _refused(beta, alice, build(tmp_path / "hostile.zip"), expected)


async def test_an_attachment_on_another_server_is_refused_and_never_fetched(
        beta: Instance, peer: Peer, tmp_path: Path) -> None:
    _, alice = await user(beta, "alice")
    peer.serve("/files/cat.png", body=png(), content_type="image/png")
    remote = note(1, 1, "remote media", attachment=[image(peer.url("/files/cat.png"), "a cat")])
    await _refused(beta, alice, write_archive(tmp_path / "remote.zip", [create(remote)]), "never fetched")
    protocol_relative = note(2, 2, "remote media", attachment=[image("//evil.test/files/cat.png", "a cat")])
    await _refused(beta, alice, write_archive(tmp_path / "relative.zip", [create(protocol_relative)]),
                   "never fetched")
    assert peer.hits.get("/files/cat.png", 0) == 0


async def test_upload_through_the_settings_page(beta: Instance, tmp_path: Path) -> None:
    from actors.local import create_local_account

    await create_local_account(beta.ctx.db, beta.base, "alice", "password123")
    page = await browser(beta, "alice")
    try:
        status, body, _ = await page.get("/settings/import/archive")
        assert status == 200 and 'action="/settings/import/archive"' in body

        def form(path: str, csrf: str) -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("csrf", csrf)
            data.add_field("data", Path(path).read_bytes(), filename="archive.zip", content_type="application/zip")
            return data

        status, body, _ = await page.post("/settings/import/archive", form(write_archive(tmp_path / "a.zip"), "nope"))
        assert status == 403 and await count(beta, "SELECT count(*) FROM jobs") == 0
        bad = write_archive(tmp_path / "bad.zip", media={IMAGE: b"GIF89a not really", PHOTO: jpeg()})
        status, body, _ = await page.post("/settings/import/archive", form(bad, page.csrf))
        assert status == 422 and "The archive was refused" in body and "abc.png" in body
        assert await count(beta, "SELECT count(*) FROM jobs") == 0 and media_files(beta) == []

        status, _, headers = await page.post("/settings/import/archive",
                                             form(write_archive(tmp_path / "a.zip"), page.csrf))
        assert status == 303 and headers["Location"] == "/settings/import"
        await beta.drain()
        assert await imported(beta) == 6
        status, body, _ = await page.get("/settings/import/archive")
        assert status == 200 and "<td>done</td>" in body and "6 / 6" in body
        assert [f for f in os.listdir(imports_dir(beta.ctx.config))] == []
    finally:
        await page.close()


async def test_queued_from_a_command_line_context_and_run_by_the_server(beta: Instance, tmp_path: Path) -> None:
    """As `fedi import NAME FILE.zip` does: its own context on the same database, no server in it."""
    from actors.local import get_local_account
    from fedi.app import close_context, open_context

    await user(beta, "alice")
    cli = await open_context(beta.config)
    try:
        alice = await get_local_account(cli.db, "alice")
        assert alice is not None
        job_id = await queue_archive_import(cli, alice, write_archive(tmp_path / "cli.zip"))
    finally:
        await close_context(cli)
    assert await imported(beta) == 0  # queued, not done: the server's job runner does it
    await beta.drain()
    assert (await job_row(beta, job_id))["state"] == "done" and await imported(beta) == 6


async def test_an_upload_over_the_cap_is_a_413_page(beta: Instance, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from actors.local import create_local_account
    from fedi.web import settings_archive

    monkeypatch.setattr(settings_archive, "MAX_ARCHIVE_BYTES", 1024)  # 512 MB in earnest
    await create_local_account(beta.ctx.db, beta.base, "alice", "password123")
    page = await browser(beta, "alice")
    try:
        await page.get("/settings/import/archive")
        data = aiohttp.FormData()
        data.add_field("csrf", page.csrf)
        data.add_field("data", Path(write_archive(tmp_path / "a.zip")).read_bytes(), filename="a.zip")
        status, body, _ = await page.post("/settings/import/archive", data)
        assert status == 413 and "larger than" in body
        assert await count(beta, "SELECT count(*) FROM jobs") == 0
        assert os.listdir(imports_dir(beta.ctx.config)) == []
    finally:
        await page.close()
