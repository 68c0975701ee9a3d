"""CSV imports as durable jobs: the rows stored whole, then applied a bounded batch per step.

`queue_import` parses the upload first (fedi/portability/csv_import.py) and stores
the job and every row in one transaction, so a bad file leaves nothing behind.
Each step of the `import_csv` job applies due `pending` rows through the same
action functions the client API calls (follow, block, mute, domain block,
bookmark, list membership), and commits each row's outcome with the job's
progress, so a killed server resumes where it stopped; every action is
idempotent, so a row applied just before a crash is not doubled.

Rows that reach a remote host are paced per host: at most `HOST_BURST` rows per
host in any `HOST_WINDOW` seconds (the window is kept in the job's result, so it
holds across steps); a host's further rows wait for its next window, and the
step answers the delay until the next row is due. A failed lookup that may heal
(a host down, a timeout) is retried `MAX_ROW_ATTEMPTS` times with backoff, then
the row is `failed` with its error, as is one that cannot succeed (no such
account). `overwrite` then removes what the file does not name, as GoToSocial
and Mastodon do: follows and follow requests, blocks, mutes, domain blocks,
bookmarks, and lists (with their members) missing from the file.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from actors.local import get_local_account
from actors.remote import ActorError, get_actor
from actors.webfinger import BadHandle, resolve_handle
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.jobs import JobError, queue_job, set_progress, set_result
from fedi.jsonutil import dumps_str, loads_strict
from fedi.portability.csv_import import (
    MODES,
    ImportFileError,
    ParsedImport,
    parse_import,
)
from inbox.handlers import _fetch_remote_note, _store_note
from outbox import actions, lists, social
from outbox.actions import ActionError, FollowOptions

KIND = "import_csv"
#: Rows one step applies at most, and the wall time after which it starts no further row.
BATCH = 50
STEP_SECONDS = 10.0
#: Pacing: rows (follows, blocks, lookups) to one remote host per window.
HOST_BURST = 10
HOST_WINDOW = 2.0
MAX_ROW_ATTEMPTS = 3
RETRY_SECONDS = 60.0
#: Relationships removed per step in overwrite mode.
PRUNE_BATCH = 50
#: Lookup failures worth another try (no answer, timeouts, rate limits, server errors).
_TRANSIENT = {None, 408, 429, 500, 502, 503, 504}


class RowFailed(Exception):
    """A row that cannot be applied; the message is shown on the import page."""


class RowRetry(Exception):
    """A row whose lookup failed in a way that may heal; tried again later."""


# --- queueing ------------------------------------------------------------------------------------------------------


async def read_import(data: bytes, kind: str | None) -> ParsedImport:
    """Parse an upload off the event loop (a 20,000-row file must not stall the server); raises ImportFileError."""
    return await asyncio.to_thread(parse_import, data, kind)


async def queue_import(ctx: Context, account: Row, parsed: ParsedImport, mode: str = "merge") -> int:
    """Store the job with all its rows in one transaction and wake the runner; returns the job id."""
    if mode not in MODES:
        raise ImportFileError("mode must be merge or overwrite")
    async with ctx.db.write() as tx:
        job_id = await queue_job(tx, KIND, account["id"], {"type": parsed.type, "mode": mode}, total=len(parsed.rows))
        await tx.executemany(
            "INSERT INTO import_rows (job_id, line, data_json, host) VALUES (?, ?, ?, ?)",
            [(job_id, row.line, dumps_str(row.data), row.host) for row in parsed.rows],
        )
        tx.after_commit.append(ctx.wake_jobs)
    return job_id


# --- resolving -----------------------------------------------------------------------------------------------------


def _lookup_error(exc: ActorError) -> Exception:
    if isinstance(exc, BadHandle) or exc.status not in _TRANSIENT:
        return RowFailed(str(exc))
    return RowRetry(str(exc))


async def _account(ctx: Context, acct: str) -> Row:
    """The account for `user@domain`: local, already known, or found through WebFinger and its actor."""
    user, _, domain = acct.rpartition("@")
    if domain == ctx.domain.lower():
        row = await get_local_account(ctx.db, user)
        if row is None or row["suspended_at"] is not None:
            raise RowFailed(f"no account {acct} here")
        return row
    known = await ctx.db.fetchone(
        "SELECT uri FROM accounts WHERE lower(username) = lower(?) AND lower(domain) = ?", (user, domain)
    )
    try:
        uri = known["uri"] if known else await resolve_handle(ctx, acct)
        target = await get_actor(ctx, uri)
    except ActorError as exc:
        raise _lookup_error(exc) from None
    if target["gone_at"] is not None or target["suspended_at"] is not None:
        raise RowFailed(f"{acct} is gone or suspended")
    return target


async def _may_see(ctx: Context, account: Row, status: Row) -> bool:
    """Whether the importer may see (and so bookmark) a post: public, their own, or addressed to them."""
    if status["deleted_at"] is not None:
        return False
    if status["visibility"] in ("public", "unlisted") or status["account_id"] == account["id"]:
        return True
    if await ctx.db.fetchone("SELECT 1 FROM mentions WHERE status_id = ? AND account_id = ?",
                             (status["id"], account["id"])):
        return True
    return status["visibility"] == "private" and await ctx.db.fetchone(
        "SELECT 1 FROM follows WHERE account_id = ? AND target_account_id = ? AND state = 'accepted'",
        (account["id"], status["account_id"]),
    ) is not None


async def _status(ctx: Context, uri: str) -> Row:
    """A post by its id or URL: stored already, else fetched from its origin as the inbox stores fetched notes."""
    sql = "SELECT * FROM statuses WHERE uri = ? OR url = ? ORDER BY local DESC LIMIT 1"
    row = await ctx.db.fetchone(sql, (uri, uri))
    if row is not None:
        return row
    if uri.split("/", 3)[2].lower() == ctx.domain.lower():
        raise RowFailed("no such post here")
    fetched = await _fetch_remote_note(ctx, uri)
    if fetched is None:
        raise RowRetry(f"could not fetch the post {uri[:200]}")
    note, author = fetched
    async with ctx.db.write() as tx:
        await _store_note(ctx, tx, note, author)
    row = await ctx.db.fetchone(sql, (uri, uri))
    if row is None:
        raise RowFailed("the post was deleted")
    return row


# --- applying one row ----------------------------------------------------------------------------------------------


async def _apply(ctx: Context, account: Row, kind: str, data: dict[str, Any]) -> None:
    """Apply one row; raises RowFailed or RowRetry. Safe to repeat (every action is idempotent)."""
    try:
        if kind == "domain_blocks":
            if data["domain"] == ctx.domain.lower():
                raise RowFailed("you can't block your own domain")
            await social.block_domain(ctx, account, data["domain"])
        elif kind == "bookmarks":
            status = await _status(ctx, data["uri"])
            if not await _may_see(ctx, account, status):
                raise RowFailed("that post is not visible to you")
            await lists.bookmark(ctx, account, status["id"])
        else:
            target = await _account(ctx, data["acct"])
            if target["id"] == account["id"]:
                raise RowFailed("that is this account")
            if kind == "following":
                languages = data.get("languages")
                await actions.follow(ctx, account, target, FollowOptions(
                    reblogs=data.get("reblogs"), notify=data.get("notify"),
                    languages=tuple(languages) if languages is not None else None,
                ))
            elif kind == "blocks":
                await actions.block(ctx, account, target)
            elif kind == "mutes":
                hide = data.get("notifications")
                await social.mute(ctx, account, target, notifications=True if hide is None else hide)
            elif kind == "lists":
                await _list_member(ctx, account, data["list"], target)
    except ActionError as exc:
        raise RowFailed(str(exc)) from None


async def _list_member(ctx: Context, account: Row, title: str, target: Row) -> None:
    """Add to the list of that title (made if missing), following the account first, as Mastodon's import does."""
    list_row = await lists.list_named(ctx, account, title) or await lists.create_list(ctx, account, title)
    await actions.follow(ctx, account, target)
    await lists.add_members(ctx, account, list_row, [target["id"]], requested_too=True)


# --- the job -------------------------------------------------------------------------------------------------------


def _pace(state: dict[str, Any], ts: float) -> dict[str, list[float]]:
    """Host -> [window start, rows in it], only windows still open."""
    pace = state.get("pace")
    if not isinstance(pace, dict):
        return {}
    return {h: w for h, w in pace.items() if isinstance(w, list) and len(w) == 2 and ts - w[0] < HOST_WINDOW}


def _host_full(pace: dict[str, list[float]], host: str | None, ts: float) -> bool:
    window = pace.get(host or "")
    return host is not None and window is not None and ts - window[0] < HOST_WINDOW and window[1] >= HOST_BURST


def _count_host(pace: dict[str, list[float]], host: str | None, ts: float) -> None:
    if host is None:
        return
    window = pace.get(host)
    if window is None or ts - window[0] >= HOST_WINDOW:
        pace[host] = [ts, 1]
    else:
        window[1] += 1


async def _defer_full_hosts(ctx: Context, job_id: int, pace: dict[str, list[float]], ts: float) -> None:
    """Rows of hosts whose window is full wait until it closes (so a batch is never taken up by them)."""
    full = [(w[0] + HOST_WINDOW, h) for h, w in pace.items() if w[1] >= HOST_BURST and ts - w[0] < HOST_WINDOW]
    if not full:
        return
    async with ctx.db.write() as tx:
        await tx.executemany(
            "UPDATE import_rows SET next_attempt_at = ? WHERE job_id = ? AND host = ? AND state = 'pending'"
            " AND next_attempt_at < ?",
            [(until, job_id, host, until) for until, host in full],
        )


async def _record(ctx: Context, job: Row, line: int, state: str, error: str | None, retry_at: float,
                  pace: dict[str, list[float]], progress: int) -> None:
    """One row's outcome, the job's progress and the pacing windows, committed together."""
    async with ctx.db.write() as tx:
        await tx.execute(
            "UPDATE import_rows SET state = ?, error = ?, attempts = attempts + 1, next_attempt_at = ?"
            " WHERE job_id = ? AND line = ?",
            (state, error, retry_at, job["id"], line),
        )
        await set_progress(tx, job["id"], progress)
        await set_result(tx, job["id"], {"pace": pace})


async def _apply_batch(ctx: Context, job: Row, account: Row, kind: str) -> None:
    started = time.monotonic()
    ts = now()
    state = loads_strict(job["result_json"]) if job["result_json"] else {}
    pace = _pace(state if isinstance(state, dict) else {}, ts)
    await _defer_full_hosts(ctx, job["id"], pace, ts)
    rows = await ctx.db.fetchall(
        "SELECT line, data_json, host, attempts FROM import_rows WHERE job_id = ? AND state = 'pending'"
        " AND next_attempt_at <= ? ORDER BY next_attempt_at, line LIMIT ?",
        (job["id"], ts, BATCH),
    )
    progress = await ctx.db.fetchval(
        "SELECT count(*) FROM import_rows WHERE job_id = ? AND state != 'pending'", (job["id"],)
    )
    for row in rows:
        if time.monotonic() - started > STEP_SECONDS:
            break
        ts = now()
        host = None if row["host"] == ctx.domain.lower() else row["host"]  # local rows reach no other server
        if _host_full(pace, host, ts):
            continue
        _count_host(pace, host, ts)
        outcome, error, retry_at = "done", None, 0.0
        try:
            await _apply(ctx, account, kind, loads_strict(row["data_json"]))
        except RowFailed as exc:
            outcome, error = "failed", str(exc)
        except RowRetry as exc:
            if row["attempts"] + 1 >= MAX_ROW_ATTEMPTS:
                outcome, error = "failed", str(exc)
            else:
                outcome, error, retry_at = "pending", str(exc), now() + RETRY_SECONDS * 2 ** row["attempts"]
        if outcome != "pending":
            progress += 1
        await _record(ctx, job, row["line"], outcome, error, retry_at, pace, progress)
    await _defer_full_hosts(ctx, job["id"], pace, now())


async def _wanted(ctx: Context, job_id: int) -> set[tuple[str, ...]]:
    """What the file names (failed rows too: a lookup that failed today must not undo a relationship)."""
    out: set[tuple[str, ...]] = set()
    for row in await ctx.db.fetchall("SELECT data_json FROM import_rows WHERE job_id = ?", (job_id,)):
        data = loads_strict(row["data_json"])
        if "acct" in data:
            out.add((data["acct"].lower(),))
            if "list" in data:
                out.add((data["list"], data["acct"].lower()))
                out.add(("list", data["list"], ""))
        else:
            out.add((data.get("domain") or data.get("uri"),))
    return out


#: An account's `user@domain` as files name it (the local domain for local accounts); its `?` is that domain.
_ACCT = "lower(a.username) || '@' || lower(coalesce(a.domain, ?))"


async def _prune(ctx: Context, account: Row, kind: str, job_id: int) -> bool:
    """Remove up to PRUNE_BATCH relationships the file does not name; True when none are left."""
    wanted = await _wanted(ctx, job_id)
    me, here = account["id"], ctx.domain.lower()
    acct = _ACCT
    removed = 0
    if kind in ("following", "blocks", "mutes"):
        table = {"following": "follows", "blocks": "blocks", "mutes": "mutes"}[kind]
        rows = await ctx.db.fetchall(
            f"SELECT a.*, {acct} AS acct FROM {table} r JOIN accounts a ON a.id = r.target_account_id"
            " WHERE r.account_id = ? ORDER BY r.id", (here, me))
        undo = {"following": actions.unfollow, "blocks": actions.unblock, "mutes": social.unmute}[kind]
        for row in rows:
            if (row["acct"],) not in wanted:
                await undo(ctx, account, row)
                removed += 1
                if removed >= PRUNE_BATCH:
                    return False
    elif kind == "domain_blocks":
        for row in await ctx.db.fetchall("SELECT domain FROM user_domain_blocks WHERE account_id = ?", (me,)):
            if (row["domain"],) not in wanted:
                await social.unblock_domain(ctx, account, row["domain"])
                removed += 1
                if removed >= PRUNE_BATCH:
                    return False
    elif kind == "bookmarks":
        for row in await ctx.db.fetchall("SELECT s.id, s.uri, s.url FROM bookmarks b JOIN statuses s"
                                         " ON s.id = b.status_id WHERE b.account_id = ? ORDER BY b.id", (me,)):
            if (row["uri"],) not in wanted and (row["url"],) not in wanted:
                await lists.unbookmark(ctx, account, row["id"])
                removed += 1
                if removed >= PRUNE_BATCH:
                    return False
    elif kind == "lists":
        for row in await ctx.db.fetchall("SELECT * FROM lists WHERE account_id = ? ORDER BY id", (me,)):
            if ("list", row["title"], "") not in wanted:
                await lists.delete_list(ctx, row)
                continue
            members = await ctx.db.fetchall(
                f"SELECT a.id, {acct} AS acct FROM list_accounts la JOIN accounts a ON a.id = la.account_id"
                " WHERE la.list_id = ?", (here, row["id"]))
            gone = [m["id"] for m in members if (row["title"], m["acct"]) not in wanted]
            if gone:
                await lists.remove_members(ctx, row, gone)
    return True


async def _summary(ctx: Context, job_id: int) -> dict[str, int]:
    rows = await ctx.db.fetchall(
        "SELECT state, count(*) AS n FROM import_rows WHERE job_id = ? GROUP BY state", (job_id,)
    )
    return {row["state"]: row["n"] for row in rows}


async def run_import_step(ctx: Context, job: Row) -> float | None:
    """One bounded step of an `import_csv` job (fedi.jobs handler)."""
    account = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ? AND domain IS NULL", (job["account_id"],))
    if account is None or account["suspended_at"] is not None:
        raise JobError("the account is gone")
    params = loads_strict(job["params_json"])
    kind, mode = params["type"], params["mode"]
    await _apply_batch(ctx, job, account, kind)
    due = await ctx.db.fetchval(
        "SELECT min(next_attempt_at) FROM import_rows WHERE job_id = ? AND state = 'pending'", (job["id"],)
    )
    if due is not None:
        return max(0.0, float(due) - now())
    if mode == "overwrite" and not await _prune(ctx, account, kind, job["id"]):
        return 0.0
    async with ctx.db.write() as tx:
        await set_result(tx, job["id"], await _summary(ctx, job["id"]))
    return None


async def account_imports(ctx: Context, account_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The account's recent import jobs, newest first, each with its failed rows (line and error)."""
    jobs = await ctx.db.fetchall(
        "SELECT * FROM jobs WHERE account_id = ? AND kind = ? ORDER BY id DESC LIMIT ?", (account_id, KIND, limit)
    )
    out = []
    for job in jobs:
        failed = await ctx.db.fetchall(
            "SELECT line, data_json, error FROM import_rows WHERE job_id = ? AND state = 'failed' ORDER BY line LIMIT 100",
            (job["id"],),
        )
        params = loads_strict(job["params_json"])
        out.append({
            "id": job["id"], "type": params.get("type"), "mode": params.get("mode"), "state": job["state"],
            "progress": job["progress"], "total": job["total"], "error": job["error"], "created_at": job["created_at"],
            "failed": [{"line": r["line"], "error": r["error"]} for r in failed],
        })
    return out
