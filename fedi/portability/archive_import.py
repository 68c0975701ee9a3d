"""Recreating an archive's posts on a local account: the queue step and the durable job.

`queue_archive_import` validates the archive whole (`archive_read.check_archive`) and
only then keeps anything: a copy of the archive in the imports folder beside the
database (never under the public media path), one `import_rows` row per post, in
order of publication, and an `import_archive` job, all in one transaction.

Each step of the job imports up to `STEP_POSTS` posts (fewer when they carry many
images) in one transaction that also marks their rows done and records progress, so
a job killed mid-way resumes where it stopped. A post whose old id is already on the
account (`statuses.previous_uri`, unique per account) is skipped, so a repeated step
or a second import of the same archive adds nothing.

An imported post keeps its `published` date, and its status and outbox ids are minted
from that date, so it sits at its place in the profile, the API and the outbox. It gets
a new local id (that dereferences here) and keeps its old one as LOLA's `previously`.
Deliberately nothing is federated and nobody is told: no deliveries, no home-feed
fan-out, no notifications (mentions and tags are still recorded). Followers see the
posts on the profile and in the outbox; re-announcing years of posts would flood them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import zipfile
from typing import Any

from actors import urls
from fedi import images
from fedi.clock import now
from fedi.config import Config
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.jobs import JobError, queue_job, set_progress, set_result
from fedi.jsonutil import dumps_str, loads_strict
from fedi.portability.archive_read import (
    ArchiveError,
    ArchiveSummary,
    check_archive,
    check_image,
)
from fedi.statuses import insert_status, set_mentions, set_tags
from outbox.serialize import note, with_context

KIND = "import_archive"
STEP_POSTS = 100
#: Images re-encoded in one step (each takes a decode and an encode).
STEP_MEDIA = 20
#: Spooled posts read at once while their rows are written.
SPOOL_READ = 500


def imports_dir(config: Config) -> str:
    """Where uploaded archives wait for their job: beside the database, never under the public media path."""
    return config.imports_path


def _spool_and_check(path: str, spool_path: str) -> tuple[ArchiveSummary, list[tuple[float, int]]]:
    """Validate into the spool file; also (published, offset) of every spooled post, to order them."""
    with open(spool_path, "w+b") as spool:
        summary = check_archive(path, spool)
        spool.seek(0)
        order: list[tuple[float, int]] = []
        offset = 0
        for line in spool:
            order.append((float(loads_strict(line)["published"]), offset))
            offset += len(line)
    order.sort()
    return summary, order


async def queue_archive_import(ctx: Context, account: Row, archive_path: str) -> int:
    """Validate the archive, keep a copy, and queue the job that imports its posts onto `account`; the job id.

    Raises ArchiveError (nothing kept) if any part of the archive is refused.
    """
    folder = imports_dir(ctx.config)
    os.makedirs(folder, exist_ok=True)
    name = f"archive-{secrets.token_hex(12)}"
    copy = os.path.join(folder, name + ".zip")
    spool_path = os.path.join(folder, name + ".posts")
    try:
        # The copy is what gets checked, so the file cannot change between the check and the import.
        await asyncio.to_thread(shutil.copyfile, archive_path, copy)
    except OSError as exc:
        raise ArchiveError(f"the archive cannot be read: {exc.strerror or exc}") from None
    try:
        summary, order = await asyncio.to_thread(_spool_and_check, copy, spool_path)
        # The file's name, not its path: a restored backup puts the imports folder elsewhere.
        params = {"file": name + ".zip", "followers": summary.followers_uri, "actor": summary.actor_uri}
        async with ctx.db.write() as tx:
            job_id = await queue_job(tx, KIND, account["id"], params, total=summary.posts)
            for start in range(0, len(order), SPOOL_READ):
                lines = await asyncio.to_thread(_spooled, spool_path, order[start:start + SPOOL_READ])
                await tx.executemany(
                    "INSERT INTO import_rows (job_id, line, data_json) VALUES (?, ?, ?)",
                    [(job_id, start + i, text) for i, text in enumerate(lines)],
                )
                await set_result(tx, job_id, {"imported": 0, "skipped": summary.skipped,
                                              "media_skipped": summary.media_skipped})
                tx.after_commit.append(ctx.wake_jobs)
    except BaseException:
        _remove(copy)
        raise
    finally:
        _remove(spool_path)
    return job_id


def _spooled(spool_path: str, order: list[tuple[float, int]]) -> list[str]:
    """The spooled posts at these offsets, in this order (blocking)."""
    with open(spool_path, "rb") as spool:
        out = []
        for _, offset in order:
            spool.seek(offset)
            out.append(spool.readline().decode())
        return out


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


# --- the job -------------------------------------------------------------------------------------------------------


async def _id_at(tx: Tx, table: str, published: float) -> int:
    """An id minted at the post's date, free in `table` (ms << 16 | sequence, as fedi.ids mints them).

    The id generator only moves forward, so a past date takes the next free sequence in its
    millisecond; a date not in the past gets an ordinary new id.
    """
    ms = int(published * 1000)
    if ms <= 0 or ms >= int(now() * 1000) - 1000:
        return tx.new_id()
    low, high = ms << 16, (ms + 1) << 16
    row = await tx.fetchone(f"SELECT max(id) FROM {table} WHERE id >= ? AND id < ?", (low, high))
    value = low if row is None or row[0] is None else int(row[0]) + 1
    if value >= high:
        return tx.new_id()
    return value


def _encode(zf: zipfile.ZipFile, media_dir: str, media: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Re-encode and write a post's images (blocking); their rows' values."""
    out = []
    for m in media:
        encoded = check_image(zf, zf.getinfo(m["member"]))
        paths = images.write_attachment(media_dir, encoded)
        out.append({**m, "paths": paths, "encoded": encoded})
    return out


def _prepare(path: str, media_dir: str, posts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Every post's images written under the media path (blocking); removed again if one fails."""
    done: list[list[dict[str, Any]]] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for post in posts:
                done.append(_encode(zf, media_dir, post["media"]))
    except BaseException:
        for media in done:
            for m in media:
                _remove_media(media_dir, m["paths"])
        raise
    return done


def _remove_media(media_dir: str, paths: list[str]) -> None:
    for rel in paths:
        _remove(os.path.join(media_dir, rel))


async def _parent(tx: Tx, account_id: int, uri: str | None) -> Row | None:
    """The status replied to: imported earlier onto this account (by its old id), or known here by its id."""
    if uri is None:
        return None
    row = await tx.fetchone("SELECT id, uri, account_id FROM statuses WHERE account_id = ? AND previous_uri = ?",
                            (account_id, uri))
    return row or await tx.fetchone("SELECT id, uri, account_id FROM statuses WHERE uri = ?", (uri,))


async def _insert_post(ctx: Context, tx: Tx, account: Row, params: dict[str, Any], post: dict[str, Any],
                       media: list[dict[str, Any]]) -> int:
    published = float(post["published"])
    status_id = await _id_at(tx, "statuses", published)
    uri = urls.status(ctx.base_url, account["username"], status_id)
    parent = await _parent(tx, account["id"], post["in_reply_to"])
    old_followers = params["followers"]

    def readdress(audience: list[str]) -> list[str]:
        return [account["followers_url"] if a == old_followers else a for a in audience]

    to, cc = readdress(post["to"]), readdress(post["cc"])
    ts = now()
    await insert_status(tx, status_id, {
        "uri": uri, "url": urls.status_url(ctx.base_url, account["username"], status_id),
        "account_id": account["id"], "local": 1,
        "in_reply_to_id": parent["id"] if parent else None,
        "in_reply_to_uri": parent["uri"] if parent else post["in_reply_to"],
        "in_reply_to_account_id": parent["account_id"] if parent else None,
        "content": post["content"], "source_text": None, "summary": post["summary"],
        "sensitive": int(post["sensitive"]), "visibility": post["visibility"], "language": post["language"],
        "to_json": dumps_str(to), "cc_json": dumps_str(cc), "published_at": published, "created_at": ts,
    })
    await tx.execute("UPDATE statuses SET previous_uri = ? WHERE id = ?", (post["uri"], status_id))
    for position, m in enumerate(media):
        encoded = m["encoded"]
        focus = m["focus"] or (None, None)
        await tx.execute(
            "INSERT INTO media_attachments (id, status_id, account_id, type, media_type, file_path, thumbnail_path,"
            " description, blurhash, width, height, focus_x, focus_y, meta_json, file_size, position, created_at)"
            " VALUES (?, ?, ?, 'image', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (tx.new_id(), status_id, account["id"], images.EXTENSIONS[encoded.ext], m["paths"][0], m["paths"][1],
             m["description"], encoded.blurhash, encoded.width, encoded.height, focus[0], focus[1],
             dumps_str(images.attachment_meta(encoded)), len(encoded.data), position, ts),
        )
    poll = post["poll"]
    if poll is not None:
        await tx.execute(
            "INSERT INTO polls (id, status_id, options_json, multiple, hide_totals, expires_at, voters_count, updated_at)"
            " VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
            (tx.new_id(), status_id, dumps_str(poll["options"]), int(poll["multiple"]), poll["expires_at"],
             poll["voters_count"], ts),
        )
    mentioned = [r["id"] for uri_ in post["mentions"][:50]
                 if (r := await tx.fetchone("SELECT id FROM accounts WHERE uri = ?", (uri_,))) is not None]
    await set_mentions(tx, status_id, mentioned)
    await set_tags(tx, status_id, post["hashtags"])
    status = await tx.fetchone("SELECT * FROM statuses WHERE id = ?", (status_id,))
    assert status is not None
    obj = await note(tx, ctx.base_url, status, account)  # type: ignore[arg-type]
    activity = {"id": f"{uri}/activity", "type": "Create", "actor": account["uri"], "published": obj["published"],
                "to": to, "cc": cc, "object": obj}
    # The outbox row only: no deliveries (the import is deliberately not federated).
    await tx.execute(
        "INSERT INTO outbox_activities (id, uri, account_id, type, object_uri, public, body, created_at)"
        " VALUES (?, ?, ?, 'Create', ?, ?, ?, ?)",
        (await _id_at(tx, "outbox_activities", published), activity["id"], account["id"], uri,
         int(post["visibility"] in ("public", "unlisted")), dumps_str(with_context(activity)), ts),
    )
    return status_id


async def _batch(ctx: Context, job: Row) -> list[tuple[Row, dict[str, Any]]]:
    rows = await ctx.db.fetchall(
        "SELECT line, data_json FROM import_rows WHERE job_id = ? AND state = 'pending' ORDER BY line LIMIT ?",
        (job["id"], STEP_POSTS),
    )
    batch: list[tuple[Row, dict[str, Any]]] = []
    media = 0
    for row in rows:
        post = loads_strict(row["data_json"])
        media += len(post["media"])
        if batch and media > STEP_MEDIA:
            break
        batch.append((row, post))
    return batch


async def import_archive_step(ctx: Context, job: Row) -> float | None:
    """One step of an archive import: the next posts in order of publication, committed together."""
    params = loads_strict(job["params_json"])
    archive = os.path.join(imports_dir(ctx.config), os.path.basename(params["file"]))
    account = await ctx.db.fetchone(
        "SELECT * FROM accounts WHERE id = ? AND domain IS NULL AND suspended_at IS NULL", (job["account_id"],)
    )
    if account is None:
        _remove(archive)
        raise JobError("the account no longer exists")
    batch = await _batch(ctx, job)
    if not batch:
        _remove(archive)
        return None
    known = {r["previous_uri"] for r in await ctx.db.fetchall(
        f"SELECT previous_uri FROM statuses WHERE account_id = ? AND previous_uri IN ({', '.join('?' for _ in batch)})",
        (account["id"], *(post["uri"] for _, post in batch)),
    )}
    fresh = [post for _, post in batch if post["uri"] not in known]
    media_dir = ctx.config.media_path
    try:
        prepared = await asyncio.to_thread(_prepare, archive, media_dir, fresh)
    except (OSError, zipfile.BadZipFile, ArchiveError) as exc:
        raise JobError(f"the stored archive can no longer be read: {str(exc)[:200]}") from None
    written = dict(zip((p["uri"] for p in fresh), prepared))
    imported = skipped = 0
    try:
        async with ctx.db.write() as tx:
            for row, post in batch:
                exists = await tx.fetchone("SELECT 1 FROM statuses WHERE account_id = ? AND previous_uri = ?",
                                           (account["id"], post["uri"]))
                if exists:  # imported meanwhile (another runner): its images here are not needed
                    _remove_media(media_dir, [p for m in written.get(post["uri"], []) for p in m["paths"]])
                    state = "skipped"
                    skipped += 1
                else:
                    await _insert_post(ctx, tx, account, params, post, written.get(post["uri"], []))
                    state = "done"
                    imported += 1
                await tx.execute("UPDATE import_rows SET state = ? WHERE job_id = ? AND line = ?",
                                 (state, job["id"], row["line"]))
            await set_progress(tx, job["id"], job["progress"] + len(batch))
            result = loads_strict(job["result_json"] or "{}")
            result["imported"] = result.get("imported", 0) + imported
            result["already_there"] = result.get("already_there", 0) + skipped
            await set_result(tx, job["id"], result)
    except BaseException:
        for media in prepared:
            for m in media:
                _remove_media(media_dir, m["paths"])
        raise
    return 0.0


async def archive_jobs(ctx: Context, account_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The account's archive imports, newest first, with their progress and outcome (for the settings page)."""
    rows = await ctx.db.fetchall(
        "SELECT id, state, progress, total, result_json, error, created_at, finished_at FROM jobs"
        " WHERE account_id = ? AND kind = ? ORDER BY id DESC LIMIT ?",
        (account_id, KIND, limit),
    )
    return [{**dict(r), "result": loads_strict(r["result_json"] or "{}")} for r in rows]
