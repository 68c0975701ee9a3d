"""The account's archive in Mastodon's layout, built by a durable job and streamed to disk.

The zip holds what Mastodon's BackupService writes, so Mastodon-archive tools and importers
(fedi's own among them) read it:

    outbox.json      OrderedCollection of every post's Create (its Note or Question, any visibility)
                     and every boost's Announce, oldest first; attachments name their file by a
                     relative path under media_attachments/
    media_attachments/files/...   the files of those attachments
    likes.json       OrderedCollection of the URIs of the posts the account favourited
    bookmarks.json   the same for its bookmarks
    avatar.EXT, header.EXT        when set
    actor.json       the actor document; icon/image point at avatar.EXT/header.EXT, and
                     outbox/likes/bookmarks at the files above

Memory stays flat whatever the account's size: posts are read a page at a time (keyset on id)
and their JSON written as it is made, media copied in 1 MiB chunks. The job does it in
bounded steps: each step appends up to `STEP_POSTS` posts to a part file and records how far
it got (the part file's length among them) in the job's result, so a step cut short is
repeated from there; the last step writes the zip to a temporary file (renewing the job's
lease while it copies media, however long that takes), fsyncs and renames it. Archives live
in `exports/` next to the database, never under the public media folder, and only the newest
of each account is kept.

An account may ask for one archive a day, and not while one is being made (Mastodon allows
one a week; a day is enough to keep a server from building archives back to back).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import IO, Any

from actors.documents import actor_document
from fedi.clock import iso_seconds, now
from fedi.config import Config
from fedi.context import Context
from fedi.db import Row
from fedi.jobs import LEASE_SECONDS, JobError, queue_job, renew_lease, set_progress, set_result
from fedi.jsonutil import dumps, loads_strict
from outbox.serialize import CONTEXT, PUBLIC, note

log = logging.getLogger("fedi.portability.archive_export")

KIND = "export_archive"
#: One archive per account per this many seconds (and never two at once).
INTERVAL = 86400.0
PAGE = 100
STEP_POSTS = 1000
CHUNK = 1 << 20
MEDIA_DIR = "media_attachments/files/"
AS_CONTEXT = "https://www.w3.org/ns/activitystreams"


class ArchiveRefused(Exception):
    """A request for an archive that is not allowed now; the message says why and when."""


def exports_dir(config: Config) -> str:
    """Where archives are kept: beside the database, outside anything the server publishes."""
    return os.path.join(os.path.dirname(os.path.abspath(config.database_path)), "exports")


# Requests and their state


async def request_archive(ctx: Context, account: Row) -> int:
    """Queue an archive of `account`; ArchiveRefused while one is in the making or within a day of the last."""
    async with ctx.db.write() as tx:
        last = await tx.fetchone(
            "SELECT state, created_at FROM jobs WHERE account_id = ? AND kind = ? AND state != 'failed'"
            " ORDER BY id DESC LIMIT 1", (account["id"], KIND))
        if last is not None and last["state"] in ("queued", "running"):
            raise ArchiveRefused("An archive is already being prepared.")
        if last is not None and now() - last["created_at"] < INTERVAL:
            hours = max(1, round((last["created_at"] + INTERVAL - now()) / 3600))
            raise ArchiveRefused(f"You can request one archive a day; try again in about {hours} hours.")
        job_id = await queue_job(tx, KIND, account["id"], {})
        tx.after_commit.append(ctx.wake_jobs)
    return job_id


async def latest_job(ctx: Context, account_id: int) -> Row | None:
    """The account's newest archive job, whatever its state (for the settings page)."""
    return await ctx.db.fetchone(
        "SELECT * FROM jobs WHERE account_id = ? AND kind = ? ORDER BY id DESC LIMIT 1", (account_id, KIND))


async def archive_file(ctx: Context, account_id: int) -> tuple[str, str, Row] | None:
    """(path, download name, job) of the account's newest finished archive, if its file is there."""
    job = await ctx.db.fetchone(
        "SELECT * FROM jobs WHERE account_id = ? AND kind = ? AND state = 'done' AND result_json IS NOT NULL"
        " ORDER BY id DESC LIMIT 1", (account_id, KIND))
    if job is None:
        return None
    result = loads_strict(job["result_json"])
    path = result.get("path") if isinstance(result, dict) else None
    if not isinstance(path, str) or not os.path.isfile(path):
        return None
    return path, str(result.get("filename") or "archive.zip"), job


# The posts, as Mastodon's outbox items


async def _page(ctx: Context, account_id: int, after_id: int, until_id: int) -> list[Row]:
    return await ctx.db.fetchall(
        "SELECT s.*, o.uri AS reblog_uri, oa.uri AS reblog_author_uri FROM statuses s"
        " LEFT JOIN statuses o ON o.id = s.reblog_of_id LEFT JOIN accounts oa ON oa.id = o.account_id"
        " WHERE s.account_id = ? AND s.deleted_at IS NULL AND s.id > ? AND s.id <= ? ORDER BY s.id LIMIT ?",
        (account_id, after_id, until_id, PAGE))


async def _item(ctx: Context, account: Row, status: Row) -> dict[str, Any]:
    published = iso_seconds(status["published_at"])
    if status["reblog_of_id"] is not None:
        return {"id": status["uri"], "type": "Announce", "actor": account["uri"], "published": published,
                "to": [PUBLIC], "cc": [u for u in (status["reblog_author_uri"], account["followers_url"]) if u],
                "object": status["reblog_uri"]}
    obj = await note(ctx.db, ctx.base_url, status, account)
    media_prefix = f"{ctx.base_url}/media/"
    for attachment in obj["attachment"]:
        if attachment["url"].startswith(media_prefix):
            attachment["url"] = MEDIA_DIR + attachment["url"][len(media_prefix):]
    if obj["type"] == "Question" and obj.get("endTime") and obj["endTime"] <= iso_seconds(now()):
        obj["closed"] = obj["endTime"]
    return {"id": f"{status['uri']}/activity", "type": "Create", "actor": account["uri"], "published": published,
            "to": obj["to"], "cc": obj["cc"], "object": obj}


async def write_posts(ctx: Context, account: Row, out: IO[bytes], after_id: int, until_id: int,
                      limit: int, first: bool) -> tuple[int, int, bool]:
    """Append up to `limit` outbox items after `after_id` to `out`, comma-separated (a comma first unless
    `first`). Returns (last id written, items written, whether the posts are exhausted)."""
    written = 0
    while written < limit:
        rows = await _page(ctx, account["id"], after_id, until_id)
        for row in rows:
            item = await _item(ctx, account, row)
            out.write((b"" if first and not written else b",") + dumps(item))
            written += 1
            after_id = row["id"]
        if len(rows) < PAGE:
            return after_id, written, True
    return after_id, written, False


def _collection_head(skeleton: dict[str, Any]) -> bytes:
    """The collection's JSON up to the opening `[` of orderedItems (which must be its last key)."""
    head = dumps({**skeleton, "orderedItems": []})
    assert head.endswith(b"[]}")
    return head[:-2]


# Writing the zip


def _copy_into(zf: zipfile.ZipFile, name: str, source: str, *, compress: bool) -> bool:
    """Copy a file into the zip in chunks; False (and nothing added) if it is missing."""
    info = zipfile.ZipInfo(name, time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    try:
        with open(source, "rb") as src, zf.open(info, "w", force_zip64=True) as dest:
            while chunk := src.read(CHUNK):
                dest.write(chunk)
    except FileNotFoundError:  # raised by open(), before the entry is begun
        log.warning("archive: %s is missing, left out", source)
        return False
    return True


def _entry(zf: zipfile.ZipFile, name: str) -> IO[bytes]:
    info = zipfile.ZipInfo(name, time.gmtime()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    return zf.open(info, "w", force_zip64=True)


async def _keyset(ctx: Context, sql: str, account_id: int) -> AsyncIterator[Row]:
    """Rows of `sql` (`WHERE <table>.account_id = ? AND <key> > ? ... ORDER BY key LIMIT ?`, key selected as k)."""
    after = 0
    while True:
        rows = await ctx.db.fetchall(sql, (account_id, after, PAGE))
        for row in rows:
            yield row
        if len(rows) < PAGE:
            return
        after = rows[-1]["k"]


async def _write_uris(ctx: Context, zf: zipfile.ZipFile, name: str, sql: str, account_id: int) -> None:
    with _entry(zf, name) as out:
        out.write(_collection_head({"@context": AS_CONTEXT, "id": name, "type": "OrderedCollection"}))
        first = True
        async for row in _keyset(ctx, sql, account_id):
            out.write((b"" if first else b",") + dumps(row["uri"]))
            first = False
        out.write(b"]}")


LIKES = ("SELECT f.id AS k, s.uri FROM favourites f JOIN statuses s ON s.id = f.status_id"
         " WHERE f.account_id = ? AND f.id > ? AND s.deleted_at IS NULL ORDER BY f.id LIMIT ?")
BOOKMARKS = ("SELECT b.id AS k, s.uri FROM bookmarks b JOIN statuses s ON s.id = b.status_id"
             " WHERE b.account_id = ? AND b.id > ? AND s.deleted_at IS NULL ORDER BY b.id LIMIT ?")
MEDIA = ("SELECT m.id AS k, m.file_path FROM media_attachments m JOIN statuses s ON s.id = m.status_id"
         " WHERE m.account_id = ? AND m.id > ? AND m.file_path IS NOT NULL AND s.deleted_at IS NULL"
         " ORDER BY m.id LIMIT ?")


KeepAlive = Callable[[], Awaitable[None]]


async def _write_zip(ctx: Context, account: Row, zf: zipfile.ZipFile, posts_path: str, items: int,
                     keep_alive: KeepAlive | None) -> None:
    media_root = ctx.config.media_path
    skeleton = {"@context": CONTEXT, "id": "outbox.json", "type": "OrderedCollection", "totalItems": items}

    def outbox() -> None:
        with _entry(zf, "outbox.json") as out, open(posts_path, "rb") as posts:
            out.write(_collection_head(skeleton))
            while chunk := posts.read(CHUNK):
                out.write(chunk)
            out.write(b"]}")

    await asyncio.to_thread(outbox)
    async for row in _keyset(ctx, MEDIA, account["id"]):
        path = row["file_path"]
        await asyncio.to_thread(_copy_into, zf, MEDIA_DIR + path, os.path.join(media_root, path), compress=False)
        if keep_alive is not None:
            await keep_alive()
    await _write_uris(ctx, zf, "likes.json", LIKES, account["id"])
    await _write_uris(ctx, zf, "bookmarks.json", BOOKMARKS, account["id"])
    actor = actor_document(ctx.config, account)
    for kind, key in (("avatar", "icon"), ("header", "image")):
        path = account[f"{kind}_path"]
        if path:
            name = kind + os.path.splitext(path)[1]
            if await asyncio.to_thread(_copy_into, zf, name, os.path.join(media_root, path), compress=False):
                actor[key] = {**actor.get(key, {"type": "Image"}), "url": name}
    actor.update({"outbox": "outbox.json", "likes": "likes.json", "bookmarks": "bookmarks.json"})
    with _entry(zf, "actor.json") as out:
        out.write(dumps(actor))


async def write_archive(ctx: Context, account: Row, posts_path: str, items: int, dest: str,
                        keep_alive: KeepAlive | None = None) -> int:
    """Write the zip to `dest` through a temporary file beside it (fsynced, then renamed); returns its size."""
    folder = os.path.dirname(os.path.abspath(dest))
    fd, tmp = tempfile.mkstemp(prefix=".archive-", suffix=".zip.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED) as zf:
                await _write_zip(ctx, account, zf, posts_path, items, keep_alive)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    return os.path.getsize(dest)


async def build_archive(ctx: Context, account: Row, dest: str) -> int:
    """The whole archive at once (the CLI): posts to a temporary part file, then the zip; returns the item count."""
    folder = os.path.dirname(os.path.abspath(dest))
    until = await _newest_status(ctx, account["id"])
    fd, part = tempfile.mkstemp(prefix=".archive-", suffix=".posts", dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            _, items, _ = await write_posts(ctx, account, out, 0, until, 1 << 62, True)
        await write_archive(ctx, account, part, items, dest)
    finally:
        os.remove(part)
    return items


async def _newest_status(ctx: Context, account_id: int) -> int:
    return int(await ctx.db.fetchval("SELECT coalesce(max(id), 0) FROM statuses WHERE account_id = ?", (account_id,)))


# The job


def _lease_keeper(ctx: Context, job_id: int) -> KeepAlive:
    """Renew the job's lease while a long zip is written, so no other runner takes the job meanwhile."""
    renewed = time.monotonic()

    async def keep_alive() -> None:
        nonlocal renewed
        if time.monotonic() - renewed > LEASE_SECONDS / 4:
            renewed = time.monotonic()
            await renew_lease(ctx, job_id)

    return keep_alive


def _drop_older(folder: str, account_id: int, keep: str) -> None:
    for name in os.listdir(folder):
        path = os.path.join(folder, name)
        if name.startswith(f"{account_id}-") and name.endswith(".zip") and path != keep:
            os.remove(path)


async def run_job(ctx: Context, job: Row) -> float | None:
    """One step of an `export_archive` job: the next posts into the part file, or the zip at the end."""
    account = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ? AND domain IS NULL", (job["account_id"],))
    if account is None:
        raise JobError("the account no longer exists")
    folder = exports_dir(ctx.config)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    part = os.path.join(folder, f"{account['id']}-{job['id']}.posts")
    state = loads_strict(job["result_json"]) if job["result_json"] else None
    if (not isinstance(state, dict) or "until_id" not in state
            or not os.path.exists(part) or os.path.getsize(part) < state["offset"]):
        state = {"until_id": await _newest_status(ctx, account["id"]), "after_id": 0, "offset": 0, "items": 0}
        total = int(await ctx.db.fetchval(
            "SELECT count(*) FROM statuses WHERE account_id = ? AND deleted_at IS NULL AND id <= ?",
            (account["id"], state["until_id"])))
        async with ctx.db.write() as tx:
            await set_progress(tx, job["id"], 0, total)
    out = await asyncio.to_thread(open, part, "r+b" if state["offset"] else "wb")
    with out:
        out.seek(state["offset"])
        out.truncate()  # what a step cut short left behind goes
        after, written, done = await write_posts(ctx, account, out, state["after_id"], state["until_id"],
                                                 STEP_POSTS, state["items"] == 0)
        out.flush()
        await asyncio.to_thread(os.fsync, out.fileno())
        offset = out.tell()
    items = state["items"] + written
    if not done:
        async with ctx.db.write() as tx:
            await set_result(tx, job["id"], {**state, "after_id": after, "offset": offset, "items": items})
            await set_progress(tx, job["id"], items)
        return 0.0
    dest = os.path.join(folder, f"{account['id']}-{job['id']}.zip")
    size = await write_archive(ctx, account, part, items, dest, _lease_keeper(ctx, job["id"]))
    filename = f"archive-{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{account['username']}.zip"
    async with ctx.db.write() as tx:
        await set_result(tx, job["id"], {"path": dest, "filename": filename, "size": size, "items": items})
        await set_progress(tx, job["id"], items, items)
    os.remove(part)  # only now: until the result is committed a repeated step needs it
    _drop_older(folder, account["id"], dest)
    return None
