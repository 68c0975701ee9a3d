"""Relationship imports (CSV): GoToSocial's POST /api/v1/import, the settings page and `fedi import`.

Real instances on 127.0.0.1: alice on alpha imports accounts that live on beta (a
second fedi instance, reached through WebFinger and real signed federation) and
on alpha itself. Jobs are stepped by the harness's job runner; "time passing" for
pacing and retries is shown by making the stored rows due again.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import actors.local
from actors.local import create_local_account
from fedi.app import JOB_RUNNER
from fedi.jobs import JobRunner
from fedi.portability import job_handlers
from fedi.portability.csv_import import MAX_ROWS
from fedi.portability.import_jobs import BATCH, HOST_BURST
from outbox import actions
from outbox.actions import PostRequest
from tests.api_calls import api, count, user
from tests.test_archive_import import write_archive
from tests.harness import Instance, Network
from tests.processes import FediProcesses
from tests.web_client import browser


def form(data: bytes | str, kind: str | None = None, mode: str | None = None,
         filename: str = "import.csv") -> aiohttp.FormData:
    body = aiohttp.FormData()
    body.add_field("data", data.encode() if isinstance(data, str) else data, filename=filename, content_type="text/csv")
    if kind is not None:
        body.add_field("type", kind)
    if mode is not None:
        body.add_field("mode", mode)
    return body


async def upload(inst: Instance, token: str, data: bytes | str, kind: str | None = None,
                 mode: str | None = None) -> tuple[int, Any]:
    return await api(inst, "POST", "/api/v1/import", token, data=form(data, kind, mode))


async def time_passes(inst: Instance) -> None:
    """Pacing windows close and retry delays lapse (the clock is stepped, not waited out)."""
    await inst.ctx.db.submit("UPDATE import_rows SET next_attempt_at = 0 WHERE state = 'pending'")
    await inst.ctx.db.submit("UPDATE jobs SET next_attempt_at = 0, result_json = NULL WHERE state IN ('queued', 'running')")


async def finish(network: Network, inst: Instance, rounds: int = 60) -> None:
    """Step everything until the instance's import jobs are finished (bounded)."""
    for _ in range(rounds):
        await network.drain()
        if not await count(inst, "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running')"):
            await network.drain()
            return
        await time_passes(inst)
    raise AssertionError("import jobs still running")


def runner(inst: Instance) -> JobRunner:
    assert inst.app is not None
    return inst.app[JOB_RUNNER]


async def job(inst: Instance, job_id: str | int) -> Any:
    return await inst.ctx.db.fetchone("SELECT * FROM jobs WHERE id = ?", (int(job_id),))


async def accounts_without_login(inst: Instance, *names: str) -> None:
    """Accounts no one signs in to (scrypt skipped, keys from the test pool)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(actors.local, "hash_password", lambda password: "unusable")
        for name in names:
            await create_local_account(inst.ctx.db, inst.base, name, "password123")


@pytest.fixture
async def two(network: Network) -> tuple[Instance, Instance]:
    alpha = await network.add("alpha.test")
    beta = await network.add("beta.test")
    await accounts_without_login(beta, "bob", "carol", "erin")
    await accounts_without_login(alpha, "dave", "frank")
    return alpha, beta


@pytest.fixture
async def solo(network: Network) -> Instance:
    return await network.add("alpha.test")


async def followed(inst: Instance, account_id: int) -> dict[str, Any]:
    rows = await inst.ctx.db.fetchall(
        "SELECT a.username, a.domain, f.* FROM follows f JOIN accounts a ON a.id = f.target_account_id"
        " WHERE f.account_id = ?", (account_id,))
    return {r["username"]: r for r in rows}


async def test_following_merge_then_overwrite_reaches_the_remote(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, alice = await user(alpha, "alice")
    b = beta.ctx.domain
    csv_text = ("\ufeffAccount address,Show boosts,Notify on new posts,Languages\r\n"
                f"bob@{b},false,true,\"en, de\"\r\n\r\n"
                f"@carol@{b},true,false,\r\n"
                f"dave@{alpha.ctx.domain},true,false,\r\n")
    status, body = await upload(alpha, token, csv_text)  # the header tells the type
    assert status == 202 and body["status"] == "accepted", body
    assert (await job(alpha, body["id"]))["total"] == 3
    await finish(network, alpha)

    rows = await followed(alpha, alice["id"])
    assert set(rows) == {"bob", "carol", "dave"}
    assert (rows["bob"]["show_reblogs"], rows["bob"]["notify"]) == (0, 1)
    assert json.loads(rows["bob"]["languages_json"]) == ["en", "de"]
    assert rows["bob"]["state"] == "accepted"  # beta answered the Follow with Accept
    beta_followers = await beta.ctx.db.fetchall(
        "SELECT t.username FROM follows f JOIN accounts a ON a.id = f.account_id JOIN accounts t"
        " ON t.id = f.target_account_id WHERE a.username = 'alice'")
    assert {r[0] for r in beta_followers} == {"bob", "carol"}
    done = await job(alpha, body["id"])
    assert (done["state"], done["progress"]) == ("done", 3)

    # A headerless one-column list, overwrite: bob and dave are no longer followed, on both sides.
    status, body = await upload(alpha, token, f"carol@{b}\n", "following", "overwrite")
    assert status == 202, body
    await finish(network, alpha)
    assert set(await followed(alpha, alice["id"])) == {"carol"}
    left = await beta.ctx.db.fetchall(
        "SELECT t.username FROM follows f JOIN accounts a ON a.id = f.account_id JOIN accounts t"
        " ON t.id = f.target_account_id WHERE a.username = 'alice'")
    assert [r[0] for r in left] == ["carol"]


async def test_blocks_mutes_and_domain_blocks(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, alice = await user(alpha, "alice")
    b, a = beta.ctx.domain, alpha.ctx.domain

    status, body = await upload(alpha, token, f"bob@{b}\n@dave@{a}\n", "blocks")  # Mastodon's headerless file
    assert status == 202, body
    status, body = await upload(alpha, token, f"Account address,Hide notifications\nerin@{b},false\nfrank@{a},true\n")
    assert status == 202, body
    status, body = await upload(alpha, token, "spam.example\nBad.Example\n", "domain_blocks")
    assert status == 202, body
    await finish(network, alpha)
    blocked = await alpha.ctx.db.fetchall(
        "SELECT a.username FROM blocks x JOIN accounts a ON a.id = x.target_account_id WHERE x.account_id = ?",
        (alice["id"],))
    assert {r[0] for r in blocked} == {"bob", "dave"}
    assert await count(beta, "SELECT count(*) FROM inbox_activities WHERE type = 'Block'") == 1
    mutes = await alpha.ctx.db.fetchall(
        "SELECT a.username, m.notifications FROM mutes m JOIN accounts a ON a.id = m.target_account_id"
        " WHERE m.account_id = ?", (alice["id"],))
    assert {r[0]: r[1] for r in mutes} == {"erin": 0, "frank": 1}
    status, domains = await api(alpha, "GET", "/api/v1/domain_blocks", token)
    assert sorted(domains) == ["bad.example", "spam.example"]

    for data, kind in ((f"dave@{a}\n", "blocks"), (f"Account address,Hide notifications\nfrank@{a},true\n", "mutes"),
                       ("spam.example\n", "domain_blocks")):
        status, body = await upload(alpha, token, data, kind, "overwrite")
        assert status == 202, body
    await finish(network, alpha)
    assert await count(alpha, "SELECT count(*) FROM blocks WHERE account_id = ?", alice["id"]) == 1
    assert await count(alpha, "SELECT count(*) FROM mutes WHERE account_id = ?", alice["id"]) == 1
    status, domains = await api(alpha, "GET", "/api/v1/domain_blocks", token)
    assert domains == ["spam.example"]
    assert await count(beta, "SELECT count(*) FROM inbox_activities WHERE type = 'Undo'") == 1  # bob unblocked


async def test_bookmarks_and_lists(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, alice = await user(alpha, "alice")
    b, a = beta.ctx.domain, alpha.ctx.domain
    dave = await alpha.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'dave'")
    bob = await beta.ctx.db.fetchone("SELECT * FROM accounts WHERE username = 'bob'")
    assert dave is not None and bob is not None
    local = await actions.create_status(alpha.ctx, dave, PostRequest(text="dave's post"))
    remote = await actions.create_status(beta.ctx, bob, PostRequest(text="bob's post"))
    hidden = await actions.create_status(alpha.ctx, dave, PostRequest(text="for followers", visibility="private"))

    status, body = await upload(alpha, token, f"{local['uri']}\n{remote['uri']}\n{hidden['uri']}\n", "bookmarks")
    assert status == 202, body
    await finish(network, alpha)
    status, marks = await api(alpha, "GET", "/api/v1/bookmarks", token)
    assert {m["uri"] for m in marks} == {local["uri"], remote["uri"]}  # the remote post was fetched from beta
    failed = await alpha.ctx.db.fetchall("SELECT line, error FROM import_rows WHERE job_id = ? AND state = 'failed'",
                                         (int(body["id"]),))
    assert [(r[0], r[1]) for r in failed] == [(3, "that post is not visible to you")]

    lists_csv = f"Friends,bob@{b}\nFriends,carol@{b}\nWork,dave@{a}\n"  # Mastodon's headerless lists.csv
    status, body = await upload(alpha, token, lists_csv, "lists")
    assert status == 202, body
    await finish(network, alpha)
    status, lists = await api(alpha, "GET", "/api/v1/lists", token)
    by_title = {item["title"]: item["id"] for item in lists}
    assert set(by_title) == {"Friends", "Work"}
    status, members = await api(alpha, "GET", f"/api/v1/lists/{by_title['Friends']}/accounts", token)
    assert {m["username"] for m in members} == {"bob", "carol"}
    assert set(await followed(alpha, alice["id"])) == {"bob", "carol", "dave"}  # members are followed first

    status, body = await upload(alpha, token, f"List name,Account address\nFriends,bob@{b}\n", "lists", "overwrite")
    assert status == 202, body
    status, body = await upload(alpha, token, f"{remote['uri']}\n", "bookmarks", "overwrite")
    assert status == 202, body
    await finish(network, alpha)
    status, lists = await api(alpha, "GET", "/api/v1/lists", token)
    assert [item["title"] for item in lists] == ["Friends"]
    status, members = await api(alpha, "GET", f"/api/v1/lists/{lists[0]['id']}/accounts", token)
    assert [m["username"] for m in members] == ["bob"]
    status, marks = await api(alpha, "GET", "/api/v1/bookmarks", token)
    assert [m["uri"] for m in marks] == [remote["uri"]]


BAD_FILES = [
    ("Account address,Show boosts\nbob@b.example,maybe\n", None, 422, 'line 2: "maybe" is not true or false'),
    ("a@b.example\n@c@d.example\ne@f.example\ng@h.example\ni@j.example\nk@l.example\nfoo\n", "following", 422,
     'line 7: "foo" is not an account address'),
    ("a@b.example\nnot an address\n", "blocks", 422, 'line 2: "not an address" is not an account address'),
    ("good.example\nnot a domain!\n", "domain_blocks", 422, 'line 2: "not a domain!" is not a domain name'),
    ("ftp://files.example/1\n", "bookmarks", 422, 'line 1: "ftp://files.example/1" is not an http(s) URI'),
    ("Friends\n", "lists", 422, 'line 1: "" is not an account address'),
    ("a@b.example,true,false,en,extra\n", "following", 422, "line 1: 5 columns where a following file has 4"),
    ("Account address,Hide notifications\na@b.example,true\n", "following", 422,
     'line 1: column "Hide notifications" does not belong in a following file'),
    ('a@b.example\n"unterminated\n', "blocks", 422, "not valid CSV"),
    (b"a@b.example\n\x00\x01\x02\x03", "blocks", 422, "line 2: the file is binary"),
    (b"a@b.example\nc@d.ex\xe9mple\n", "blocks", 422, "line 2: the file is not UTF-8"),
    (b"PK\x03\x04rest of a zip", "following", 422, "zip archive"),
    ("a@b.example\n", None, 422, "choose a type"),
    ("\n\n", "blocks", 422, "the file has no rows"),
    ("".join(f"u{i}@b.example\n" for i in range(MAX_ROWS + 1)), "following", 422, f"more than {MAX_ROWS} rows"),
    (b"a" * (2 * 1024 * 1024 + 1), "blocks", 413, "larger than 2 MiB"),
    ("a@b.example\n", "friends", 400, "type friends not recognized"),
]


@pytest.mark.parametrize(("data", "kind", "status", "message"), BAD_FILES)
async def test_bad_files_are_refused_and_nothing_is_stored(solo: Instance, data: bytes | str, kind: str | None,
                                                          status: int, message: str) -> None:
    token, _ = await user(solo, "bob")
    got, body = await upload(solo, token, data, kind)
    assert got == status and message in body["error"], body
    for table in ("jobs", "import_rows", "follows", "blocks", "mutes", "user_domain_blocks", "bookmarks", "lists"):
        assert await count(solo, f"SELECT count(*) FROM {table}") == 0, table


async def test_scope_and_mode_are_checked(solo: Instance) -> None:
    alpha = solo
    read_only, _ = await user(alpha, "bob", "read")
    got, body = await upload(alpha, read_only, "a@b.example\n", "following")
    assert got == 403, body
    follows_only, _ = await user(alpha, "carol", "write:follows")
    got, body = await upload(alpha, follows_only, "a@b.example\n", "blocks")
    assert got == 403, body
    got, body = await upload(alpha, follows_only, "a@b.example\n", "following", "replace")
    assert got == 400 and "mode replace not recognized" in body["error"]
    assert await count(alpha, "SELECT count(*) FROM jobs") == 0
    got, body = await upload(alpha, follows_only, "a@b.example\n", "following")
    assert got == 202, body


async def _many_on_beta(beta: Instance, n: int) -> str:
    await accounts_without_login(beta, *(f"u{i}" for i in range(n)))
    return "".join(f"u{i}@{beta.ctx.domain}\n" for i in range(n))


async def test_follows_are_paced_per_host(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, alice = await user(alpha, "alice")
    n = HOST_BURST + 5
    csv_text = await _many_on_beta(beta, n) + f"dave@{alpha.ctx.domain}\nfrank@{alpha.ctx.domain}\n"
    status, body = await upload(alpha, token, csv_text, "following")
    assert status == 202, body
    assert await runner(alpha).run_once() == 1
    # One step: beta gets HOST_BURST follows, the local ones are not held back by beta's pace.
    assert await count(alpha, "SELECT count(*) FROM follows WHERE account_id = ?", alice["id"]) == HOST_BURST + 2
    row = await job(alpha, body["id"])
    assert row["state"] == "running" and row["next_attempt_at"] > time.time() + 0.5  # waits for beta's next window
    assert await runner(alpha).run_once() == 0  # not due yet: nothing more is sent
    held = await alpha.ctx.db.fetchval(
        "SELECT min(next_attempt_at) FROM import_rows WHERE job_id = ? AND state = 'pending'", (row["id"],))
    assert held > time.time()
    await finish(network, alpha)
    assert await count(alpha, "SELECT count(*) FROM follows WHERE account_id = ?", alice["id"]) == n + 2


async def test_a_job_resumes_after_its_runner_dies_without_duplicates(network: Network,
                                                                     two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, alice = await user(alpha, "alice")
    n = HOST_BURST + 3
    status, body = await upload(alpha, token, await _many_on_beta(beta, n), "following")
    assert status == 202, body
    job_id = int(body["id"])
    await runner(alpha).run_once()
    assert (await job(alpha, job_id))["progress"] == HOST_BURST
    # The runner dies: in its next step it had sent one Follow but not recorded the row, and it holds the lease.
    last_done = await alpha.ctx.db.fetchval(
        "SELECT max(line) FROM import_rows WHERE job_id = ? AND state = 'done'", (job_id,))
    await alpha.ctx.db.submit("UPDATE import_rows SET state = 'pending' WHERE job_id = ? AND line = ?", (job_id, last_done))
    await alpha.ctx.db.submit("UPDATE jobs SET progress = progress - 1, locked_until = ? WHERE id = ?",
                              (time.time() + 120, job_id))
    await time_passes(alpha)
    fresh = JobRunner(alpha.ctx, job_handlers())  # a restarted server's runner
    assert await fresh.run_once() == 0  # the dead runner's lease still holds
    await alpha.ctx.db.submit("UPDATE jobs SET locked_until = 0 WHERE id = ?", (job_id,))  # the lease lapses
    for _ in range(10):
        await fresh.run_once()
        await time_passes(alpha)
    await network.drain()
    row = await job(alpha, job_id)
    assert (row["state"], row["progress"], row["total"]) == ("done", n, n)
    assert await count(alpha, "SELECT count(*) FROM follows WHERE account_id = ?", alice["id"]) == n
    assert await count(alpha, "SELECT count(*) FROM outbox_activities WHERE type = 'Follow'") == n  # none sent twice
    assert await count(beta, "SELECT count(*) FROM follows") == n


async def test_failed_lookups_are_retried_then_shown(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    token, _ = await user(alpha, "alice")
    b = beta.ctx.domain
    await beta.stop()  # beta is down: its lookups fail in a way that may heal
    status, body = await upload(alpha, token, f"bob@{b}\nnobody@{alpha.ctx.domain}\n", "following")
    assert status == 202, body
    await finish(network, alpha)
    rows = await alpha.ctx.db.fetchall("SELECT line, attempts, state, error FROM import_rows WHERE job_id = ? ORDER BY line",
                                       (int(body["id"]),))
    assert rows[0]["state"] == "failed" and rows[0]["attempts"] == 3 and "WebFinger" in rows[0]["error"]
    assert (rows[1]["state"], rows[1]["attempts"]) == ("failed", 1)  # no such account: not retried
    assert "no account nobody@" in rows[1]["error"]


async def test_ten_thousand_follows_are_accepted_quickly_and_stepped_in_bounded_batches(
        network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, _ = two
    token, _ = await user(alpha, "alice")
    hosts = [f"host{i}.test" for i in range(200)]
    for host in hosts:
        network.host_map[host] = "127.0.0.1"  # nothing listens on port 80 there: each lookup is refused at once
    csv_text = "Account address,Show boosts,Notify on new posts,Languages\n" + "".join(
        f"user{i}@{hosts[i % len(hosts)]},true,false,\n" for i in range(10_000))
    started = time.perf_counter()
    status, body = await upload(alpha, token, csv_text)
    accepted = time.perf_counter() - started
    assert status == 202, body
    assert await count(alpha, "SELECT count(*) FROM import_rows WHERE job_id = ?", int(body["id"])) == 10_000
    started = time.perf_counter()
    await runner(alpha).run_once()
    stepped = time.perf_counter() - started
    tried = await count(alpha, "SELECT count(*) FROM import_rows WHERE job_id = ? AND attempts > 0", int(body["id"]))
    assert 0 < tried <= BATCH  # no host answers: each row tried once, kept for a retry
    row = await job(alpha, body["id"])
    assert row["state"] == "running" and row["total"] == 10_000
    print(f"\n10,000-row follow list: accepted in {accepted * 1000:.0f} ms; first step ({tried} rows tried)"
          f" {stepped * 1000:.0f} ms")


async def test_settings_page_uploads_and_shows_progress(network: Network, two: tuple[Instance, Instance]) -> None:
    alpha, beta = two
    await create_local_account(alpha.ctx.db, alpha.base, "alice", "password123")
    page = await browser(alpha, "alice")
    try:
        status, body, _ = await page.get("/settings/import")
        assert status == 200 and 'name="data"' in body and 'action="/settings/import/archive"' in body
        assert "Posts from an archive (.zip)" in body
        bad = form(f"bob@{beta.ctx.domain}\nfoo\n", "blocks", "merge")
        bad.add_field("csrf", page.csrf)
        status, body, _ = await page.post("/settings/import", bad)
        assert status == 422 and "line 2: &#34;foo&#34; is not an account address" in body, body
        assert await count(alpha, "SELECT count(*) FROM jobs") == 0
        no_csrf = form(f"bob@{beta.ctx.domain}\n", "blocks")
        status, _, _ = await page.post("/settings/import", no_csrf)
        assert status == 403 and await count(alpha, "SELECT count(*) FROM jobs") == 0
        good = form(f"bob@{beta.ctx.domain}\nnobody@{alpha.ctx.domain}\n", "blocks", "merge")
        good.add_field("csrf", page.csrf)
        status, _, headers = await page.post("/settings/import", good)
        assert status == 303 and headers["Location"].startswith("/settings/import?queued=")
        await finish(network, alpha)
        status, body, _ = await page.get(headers["Location"])
        assert status == 200 and "queued" in body
        assert "2 / 2" in body and "done" in body
        assert "line 2: no account nobody@" in body
    finally:
        await page.close()


def test_cli_queues_an_import_and_refuses_a_bad_file(tmp_path: Path) -> None:
    with FediProcesses(tmp_path) as procs:
        inst = procs.add("alpha")
        inst.ok("init")
        inst.create_account("alice")
        good = tmp_path / "following_accounts.csv"
        good.write_text("Account address,Show boosts,Notify on new posts,Languages\nbob@remote.example,true,false,\n")
        out = inst.ok("import", "alice", str(good))
        job_id = int(out.split("job ")[1].split(":")[0])
        rows = inst.query("SELECT kind, state, total FROM jobs WHERE id = ?", (job_id,))
        assert [tuple(r) for r in rows] == [("import_csv", "queued", 1)]
        assert len(inst.query("SELECT * FROM import_rows WHERE job_id = ?", (job_id,))) == 1

        bad = tmp_path / "blocks.csv"
        bad.write_text("a@b.example\nfoo\n")
        for args, message in ((("import", "alice", str(bad), "--type", "blocks"),
                               'line 2: "foo" is not an account address'),
                              (("import", "alice", str(bad)), "choose a type"),
                              (("import", "nobody", str(good)), "no active local account named nobody")):
            result = inst.cli(*args)
            lines = result.stderr.splitlines()
            assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
            assert message in lines[0]
        assert len(inst.query("SELECT * FROM jobs")) == 1 and len(inst.query("SELECT * FROM import_rows")) == 1

        archive = tmp_path / "archive.zip"
        archive.write_bytes(b"PK\x03\x04" + b"\x00" * 40)  # a zip goes to the post importer, which refuses this one
        result = inst.cli("import", "alice", str(archive))
        lines = result.stderr.splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("fedi: "), result.stderr
        assert len(inst.query("SELECT * FROM jobs")) == 1
        write_archive(archive)
        result = inst.cli("import", "alice", str(archive))
        assert result.returncode == 0 and result.stdout.startswith("queued archive import job "), result.stderr
        assert [r["kind"] for r in inst.query("SELECT kind FROM jobs ORDER BY id")] == ["import_csv", "import_archive"]
        queue = inst.ok("queue")  # the admin sees them waiting
        assert "  import_archive\tqueued\t1" in queue and "  import_csv\tqueued\t1" in queue, queue
