"""`fedi backup` while the instance serves signed inbox POSTs, `fedi restore` into a fresh folder, and serving again.

The instance is a real `fedi serve` subprocess; a scripted peer on 127.0.0.1 serves its
actor and key and signs every POST for real (tests/peer.py). alice's one remote follower
lives on a receiver (tests/receivers.py) that is down while the backup is taken, so her
posts sit in the delivery queue; it comes back on the same port for the restored copy,
which must deliver them signed with alice's restored key.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from fedi.signatures import digest_header, http_date
from tests.harness import Network
from tests.peer import (
    AS2,
    GOOD_NAMES,
    Peer,
    PeerActor,
    body_of,
    rsa_sign,
    signature_value,
)
from tests.test_archive_import import write_archive
from tests.processes import FediProcess, FediProcesses, run_cli, wait_for_async
from tests.receivers import Receiver, add_remote_followers

PASSWORD = "correct horse battery"
# Paths relative to the config file, so the backed-up config places a restored copy in its own folder.
SECTIONS: dict[str, dict[str, Any]] = {
    "database": {"path": "fedi.sqlite3"},
    "media": {"path": "media"},
    "federation": {"delivery_processes": 0, "delivery_first_retry_seconds": 1},
    "oauth": {"password_grant": True},
}


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[FediProcesses]:
    with FediProcesses(tmp_path) as p:
        yield p


@dataclass
class Sent:
    activity_id: str
    status: int
    sent: float  # monotonic
    answered: float


def signed(actor: PeerActor, inst: FediProcess, path: str, body: bytes) -> dict[str, str]:
    values = {"host": inst.domain, "date": http_date(), "digest": digest_header(body), "content-type": AS2}
    signature = signature_value(actor.key_id, GOOD_NAMES, values, rsa_sign(actor.key), target=path)
    return {"Host": inst.domain, "Date": values["date"], "Digest": values["digest"], "Content-Type": AS2,
            "Signature": signature}


async def post_signed(session: aiohttp.ClientSession, actor: PeerActor, inst: FediProcess, n: int) -> Sent:
    activity = actor.create(f"load {n}")
    body = body_of(activity)
    started = time.monotonic()
    async with session.post(f"{inst.base}/inbox", data=body, headers=signed(actor, inst, "/inbox", body)) as resp:
        await resp.read()
        return Sent(activity["id"], resp.status, started, time.monotonic())


async def token(session: aiohttp.ClientSession, inst: FediProcess) -> str:
    async with session.post(f"{inst.base}/api/v1/apps", data={
        "client_name": "t", "redirect_uris": "urn:ietf:wg:oauth:2.0:oob", "scopes": "read write",
    }) as resp:
        app = await resp.json()
    async with session.post(f"{inst.base}/oauth/token", data={
        "grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "read write",
        "client_id": app["client_id"], "client_secret": app["client_secret"],
    }) as resp:
        assert resp.status == 200, await resp.text()
        return str((await resp.json())["access_token"])


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 24), (20, 160, 90)).save(out, format="PNG")
    return out.getvalue()


async def post_with_picture(session: aiohttp.ClientSession, inst: FediProcess, bearer: str) -> str:
    """A post with an uploaded image (a real media file), queued to alice's followers; returns the media URL."""
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="p.png", content_type="image/png")
    headers = {"Authorization": f"Bearer {bearer}"}
    async with session.post(f"{inst.base}/api/v2/media", data=form, headers=headers) as resp:
        assert resp.status in (200, 202), await resp.text()
        media = await resp.json()
    async with session.post(f"{inst.base}/api/v1/statuses", headers=headers,
                            data={"status": "with a picture", "media_ids[]": media["id"]}) as resp:
        assert resp.status == 200, await resp.text()
    return str(media["url"])


def one_line_refusal(result: Any, *needles: str) -> None:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with its sha256 (what 'nothing written' is checked against)."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()} if path.exists() else {}


async def test_backup_under_load_restores_every_accepted_activity(
        procs: FediProcesses, tmp_path: Path, record_property: Any) -> None:
    origin = procs.add("origin", **SECTIONS)
    origin.create_account("alice", password=PASSWORD)
    ((key_id, public_pem),) = origin.query(
        "SELECT public_key_id, public_key_pem FROM accounts WHERE domain IS NULL AND username = 'alice'")
    follower = Receiver()
    follower.expect_key(key_id, public_pem)
    await follower.start()
    add_remote_followers(origin, "alice", [follower])
    await follower.stop()  # alice's follower is down: her posts stay queued
    peer = await Peer(Network(tmp_path), "127.0.0.1").start()
    mallory = peer.actor("mallory")
    backup_dir = tmp_path / "backup"
    try:
        await asyncio.to_thread(origin.start)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            bearer = await token(session, origin)
            sent: list[Sent] = []
            stop = asyncio.Event()

            async def load(worker: int) -> None:
                n = 0
                while not stop.is_set() and n < 2000:  # bounded
                    sent.append(await post_signed(session, mallory, origin, worker * 10_000 + n))
                    n += 1

            loaders = [asyncio.create_task(load(w)) for w in range(2)]
            await wait_for_async(lambda: len(sent) >= 40, 20, "the first signed POSTs")
            # Posted just before the backup, so their retries are still close together when the copy serves.
            media_url = await post_with_picture(session, origin, bearer)
            for n in range(2):
                await asyncio.to_thread(origin.ok, "post", "alice", f"queued post {n}")
            began = time.monotonic()
            result = await asyncio.to_thread(origin.cli, "backup", str(backup_dir))
            ended = time.monotonic()
            await asyncio.sleep(0.2)
            stop.set()
            await asyncio.gather(*loaders)
        assert result.returncode == 0, result.stderr
        assert {s.status for s in sent} == {202}, {s.status for s in sent}
        before = {s.activity_id for s in sent if s.answered < began}
        during = [s for s in sent if s.sent >= began and s.answered <= ended]
        after = {s.activity_id for s in sent if s.sent > ended}
        assert before and during and after, (len(before), len(during), len(after))
        pending = origin.query(
            "SELECT d.id, d.inbox_url, o.uri FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id"
            " WHERE d.state = 'pending' ORDER BY d.id")
        assert len(pending) == 3 and all(r["inbox_url"] == f"http://{follower.netloc}/inbox" for r in pending)
        origin.stop()

        # What the backup holds, private to its owner.
        manifest = json.loads((backup_dir / "manifest.json").read_text())
        assert manifest["domain"] == origin.domain and manifest["schema_version"] >= 6
        assert manifest["fedi_version"] and manifest["created_at"].endswith("Z")
        media_name = "media/" + media_url.split("/media/", 1)[1]
        assert {"config.toml", "fedi.sqlite3", media_name} <= set(manifest["files"])
        for name, entry in manifest["files"].items():
            data = (backup_dir / name).read_bytes()
            assert (len(data), hashlib.sha256(data).hexdigest()) == (entry["size"], entry["sha256"])
        for path in [backup_dir, *backup_dir.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
        assert (backup_dir / media_name).read_bytes() == (origin.dir / media_name).read_bytes()

        # Restore on "another machine": a fresh folder with no config yet, the same domain and port.
        restored = FediProcess(procs.root, "restored", origin.port, **SECTIONS)
        procs.instances.append(restored)  # stopped at the end like the others
        restored.config_path.unlink()
        out = run_cli("restore", str(backup_dir), config=restored.config_path, cwd=restored.dir)
        assert out.returncode == 0, out.stderr
        assert restored.config_path.read_bytes() == (origin.dir / "config.toml").read_bytes()
        assert stat.S_IMODE(restored.config_path.stat().st_mode) == 0o600
        assert stat.S_IMODE(restored.db_path.stat().st_mode) == 0o600
        stored = {r["activity_id"] for r in restored.query("SELECT activity_id FROM inbox_activities")}
        assert before <= stored, f"{len(before - stored)} accepted activities missing"
        assert not after & stored
        assert [(r["id"], r["inbox_url"], r["uri"]) for r in restored.query(
            "SELECT d.id, d.inbox_url, o.uri FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id"
            " WHERE d.state = 'pending' ORDER BY d.id")] == [(r["id"], r["inbox_url"], r["uri"]) for r in pending]

        # It serves again: the queued posts reach the follower signed with alice's restored key,
        # the stored inbox rows are worked, the media file is served, new POSTs are accepted.
        await follower.start(port=follower.port)
        await asyncio.to_thread(restored.start)
        expected = {r["uri"] for r in pending}
        await wait_for_async(lambda: expected <= set(follower.received), 30, "the queued deliveries",
                             detail=lambda: f"{[dict(r) for r in restored.query('SELECT * FROM deliveries')]}"
                                            f"\n{restored.logs()}")
        assert follower.rejected == []
        await wait_for_async(lambda: not restored.query(
            "SELECT 1 FROM inbox_activities WHERE state = 'queued' LIMIT 1"), 20, "the inbox rows to be worked")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.get(media_url) as resp:
                assert resp.status == 200 and await resp.read() == (backup_dir / media_name).read_bytes()
            assert (await post_signed(session, mallory, restored, 99_999)).status == 202

        seconds = ended - began
        pause = max(s.answered - s.sent for s in during)
        usual = sorted(s.answered - s.sent for s in sent if s.answered < began)[len(before) // 2]
        size = sum(entry["size"] for entry in manifest["files"].values())
        record_property("backup_seconds", round(seconds, 3))
        record_property("backup_bytes", size)
        record_property("slowest_post_during_backup_ms", round(pause * 1000, 1))
        print(f"\nbackup: {size} bytes, `fedi backup` took {seconds:.2f} s ({result.stdout.splitlines()[0]});"
              f" {len(during)} POSTs answered during it, slowest {pause * 1000:.0f} ms (median before {usual * 1000:.0f} ms);"
              f" {len(before)} accepted before it, all restored")
    finally:
        await peer.close()
        await follower.stop()


# --- refusals: one line, nothing written ---------------------------------------------------------


@pytest.fixture
def made(procs: FediProcesses, tmp_path: Path) -> tuple[FediProcess, Path]:
    """A stopped instance with an account and a media file, and its backup."""
    inst = procs.add("made", **SECTIONS)
    inst.create_account("alice", password=PASSWORD)
    (inst.dir / "media" / "avatars" / "ab").mkdir(parents=True)
    (inst.dir / "media" / "avatars" / "ab" / "x.png").write_bytes(png())
    archive = tmp_path / "posts.zip"  # a post import waits for the server in imports/, beside the database
    write_archive(archive)
    queued = inst.cli("import", "alice", str(archive))
    assert queued.returncode == 0, queued.stderr
    out = inst.cli("backup", str(tmp_path / "backup"))
    assert out.returncode == 0, out.stderr
    return inst, tmp_path / "backup"


def fresh(tmp_path: Path, name: str = "target") -> Path:
    target = tmp_path / name
    target.mkdir()
    return target / "config.toml"


def test_backup_refuses_a_folder_with_anything_in_it(made: tuple[FediProcess, Path], tmp_path: Path) -> None:
    inst, _ = made
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    one_line_refusal(inst.cli("backup", str(busy)), str(busy), "not empty")
    assert tree(busy) == {"notes.txt": hashlib.sha256(b"mine").hexdigest()}


def test_restore_refuses_a_target_with_data(made: tuple[FediProcess, Path], tmp_path: Path) -> None:
    inst, backup_dir = made
    before = tree(inst.dir)
    one_line_refusal(run_cli("restore", str(backup_dir), config=inst.config_path), "fedi.sqlite3", "already exists")
    assert tree(inst.dir) == before

    config = fresh(tmp_path)  # no database, but something in the media folder
    (config.parent / "media").mkdir()
    (config.parent / "media" / "left.png").write_bytes(b"x")
    one_line_refusal(run_cli("restore", str(backup_dir), config=config), "media", "not an empty folder")
    assert tree(config.parent) == {"media/left.png": hashlib.sha256(b"x").hexdigest()}


def test_restore_refuses_another_domain(made: tuple[FediProcess, Path], tmp_path: Path) -> None:
    _, backup_dir = made
    config = fresh(tmp_path)
    config.write_text('[instance]\ndomain = "elsewhere.example"\n')
    one_line_refusal(run_cli("restore", str(backup_dir), config=config), "elsewhere.example", "keeps its domain")
    assert set(tree(config.parent)) == {"config.toml"}


@pytest.mark.parametrize("damage, needle", [
    ("tamper", "checksum mismatch"),
    ("missing", "missing from the backup"),
    ("extra", "not in the manifest"),
    ("no manifest", "manifest.json is missing"),
])
def test_restore_refuses_a_damaged_backup(made: tuple[FediProcess, Path], tmp_path: Path,
                                          damage: str, needle: str) -> None:
    _, original = made
    backup_dir = tmp_path / "copy"
    shutil.copytree(original, backup_dir)
    victim = backup_dir / "media" / "avatars" / "ab" / "x.png"
    if damage == "tamper":  # same size, one byte changed
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "missing":
        victim.unlink()
    elif damage == "extra":
        victim = backup_dir / "media" / "avatars" / "ab" / "planted.png"
        victim.write_bytes(b"not from the instance")
    else:
        victim = backup_dir / "manifest.json"
        victim.unlink()
    config = fresh(tmp_path)
    one_line_refusal(run_cli("restore", str(backup_dir), config=config), str(victim), needle)
    assert tree(config.parent) == {}  # not even the config file
    assert os.listdir(config.parent) == []

    # The undamaged backup restores into the same empty place.
    ok = run_cli("restore", str(original), config=config)
    assert ok.returncode == 0, ok.stderr
    restored = tree(config.parent)
    assert {"config.toml", "fedi.sqlite3", "media/avatars/ab/x.png"} <= set(restored)
    waiting = [name for name in restored if name.startswith("imports/archive-") and name.endswith(".zip")]
    assert len(waiting) == 1 and restored[waiting[0]] == tree(original)[waiting[0]]
