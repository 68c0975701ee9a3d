"""The counters behind Account and Status entities (migration 4's triggers) stay right on every write path.

After each step the `account_stats` and `status_stats` tables are compared with a
count over the underlying rows, so a write path the triggers miss shows up here.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from actors.remote import mark_gone
from fedi.api import entities
from fedi.db import Database
from fedi.schema import MIGRATIONS
from outbox import actions
from outbox.actions import PostRequest
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network
from tests.test_federation import account, follow, remote_row, three_instances

ACCOUNT_TRUTH = """
    SELECT a.id,
        (SELECT count(*) FROM statuses s WHERE s.account_id = a.id AND s.deleted_at IS NULL),
        (SELECT max(published_at) FROM statuses s WHERE s.account_id = a.id AND s.deleted_at IS NULL),
        (SELECT count(*) FROM follows f WHERE f.target_account_id = a.id AND f.state = 'accepted'),
        (SELECT count(*) FROM follows f WHERE f.account_id = a.id AND f.state = 'accepted')
    FROM accounts a ORDER BY a.id"""
STATUS_TRUTH = """
    SELECT s.id,
        (SELECT count(*) FROM statuses r WHERE r.in_reply_to_id = s.id AND r.deleted_at IS NULL),
        (SELECT count(*) FROM statuses b WHERE b.reblog_of_id = s.id AND b.deleted_at IS NULL),
        (SELECT count(*) FROM favourites f WHERE f.status_id = s.id)
    FROM statuses s ORDER BY s.id"""


async def assert_consistent(db: Database) -> None:
    """Every counter equals the count it stands for (a missing row means all zero)."""
    stats = {r[0]: tuple(r[1:]) for r in await db.fetchall(
        "SELECT account_id, statuses_count, last_status_at, followers_count, following_count FROM account_stats")}
    for row in await db.fetchall(ACCOUNT_TRUTH):
        assert stats.get(row[0], (0, None, 0, 0)) == tuple(row[1:]), f"account {row[0]}"
    counts = {r[0]: tuple(r[1:]) for r in await db.fetchall(
        "SELECT status_id, replies_count, reblogs_count, favourites_count FROM status_stats")}
    for row in await db.fetchall(STATUS_TRUTH):
        assert counts.get(row[0], (0, 0, 0)) == tuple(row[1:]), f"status {row[0]}"


async def shown(inst: Instance, account_id: int) -> dict[str, Any]:
    row = await inst.ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
    return await entities.account(inst.ctx, row)


async def status_counts(inst: Instance, status_id: int) -> tuple[int, int, int]:
    row = await inst.ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (status_id,))
    entity = await entities.status(inst.ctx, row, None)
    return entity["replies_count"], entity["reblogs_count"], entity["favourites_count"]


async def check_all(network: Network) -> None:
    for inst in network.instances:
        await assert_consistent(inst.ctx.db)


async def test_local_post_reply_delete(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice = await account(alpha, "alice")
    bob = await account(alpha, "bob")
    assert (await shown(alpha, alice["id"]))["statuses_count"] == 0
    assert (await shown(alpha, alice["id"]))["last_status_at"] is None

    post = await actions.create_status(alpha.ctx, alice, PostRequest(text="first"))
    later = await actions.create_status(alpha.ctx, alice, PostRequest(text="second"))
    entity = await shown(alpha, alice["id"])
    assert entity["statuses_count"] == 2 and entity["last_status_at"] is not None
    reply = await actions.create_status(alpha.ctx, bob, PostRequest(text="a reply", in_reply_to_id=post["id"]))
    assert await status_counts(alpha, post["id"]) == (1, 0, 0)
    await assert_consistent(alpha.ctx.db)

    await actions.favourite(alpha.ctx, bob, post["id"])
    boost = await actions.reblog(alpha.ctx, bob, post["id"])
    assert await status_counts(alpha, post["id"]) == (1, 1, 1)
    assert (await shown(alpha, bob["id"]))["statuses_count"] == 2  # the reply and the boost
    await assert_consistent(alpha.ctx.db)
    # the viewer's own boost is found among a page of statuses
    row = await alpha.ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (post["id"],))
    seen_by_bob = await entities.status(alpha.ctx, row, bob)
    assert seen_by_bob["reblogged"] is True and seen_by_bob["favourited"] is True
    seen_by_alice = await entities.status(alpha.ctx, row, alice)
    assert seen_by_alice["reblogged"] is False and seen_by_alice["favourited"] is False
    assert boost["reblog_of_id"] == post["id"]

    await actions.unreblog(alpha.ctx, bob, post["id"])
    await actions.unfavourite(alpha.ctx, bob, post["id"])
    await actions.delete_status(alpha.ctx, bob, reply["id"])
    assert await status_counts(alpha, post["id"]) == (0, 0, 0)
    assert (await shown(alpha, bob["id"]))["statuses_count"] == 0
    await assert_consistent(alpha.ctx.db)

    # deleting the newest post moves last_status_at back to the one before it
    await actions.delete_status(alpha.ctx, alice, later["id"])
    stats = await alpha.ctx.db.fetchone("SELECT * FROM account_stats WHERE account_id = ?", (alice["id"],))
    assert stats["statuses_count"] == 1 and stats["last_status_at"] == post["published_at"]
    await actions.delete_status(alpha.ctx, alice, post["id"])
    entity = await shown(alpha, alice["id"])
    assert entity["statuses_count"] == 0 and entity["last_status_at"] is None
    await assert_consistent(alpha.ctx.db)


async def test_local_follow_unfollow_and_locked_accept(network: Network) -> None:
    alpha = await network.add("alpha.test")
    alice = await account(alpha, "alice")
    bob = await account(alpha, "bob")
    erin = await account(alpha, "erin", locked=True)

    assert await actions.follow(alpha.ctx, bob, alice) == "following"
    assert (await shown(alpha, alice["id"]))["followers_count"] == 1
    assert (await shown(alpha, bob["id"]))["following_count"] == 1
    await assert_consistent(alpha.ctx.db)

    # a pending request counts for neither side until accepted
    assert await actions.follow(alpha.ctx, bob, erin) == "requested"
    assert (await shown(alpha, erin["id"]))["followers_count"] == 0
    assert (await shown(alpha, bob["id"]))["following_count"] == 1
    await actions.answer_follow_request(alpha.ctx, erin, bob, accept=True)
    assert (await shown(alpha, erin["id"]))["followers_count"] == 1
    assert (await shown(alpha, bob["id"]))["following_count"] == 2
    await assert_consistent(alpha.ctx.db)

    # rejected request: nothing counted
    assert await actions.follow(alpha.ctx, alice, erin) == "requested"
    await actions.answer_follow_request(alpha.ctx, erin, alice, accept=False)
    assert (await shown(alpha, erin["id"]))["followers_count"] == 1
    assert (await shown(alpha, alice["id"]))["following_count"] == 0

    await actions.unfollow(alpha.ctx, bob, alice)
    assert (await shown(alpha, alice["id"]))["followers_count"] == 0
    assert (await shown(alpha, bob["id"]))["following_count"] == 1
    await assert_consistent(alpha.ctx.db)

    # blocking severs the follow both ways
    assert await actions.follow(alpha.ctx, erin, bob) == "following"
    await actions.block(alpha.ctx, bob, erin)
    for who in (bob, erin):
        entity = await shown(alpha, who["id"])
        assert (entity["followers_count"], entity["following_count"]) == (0, 0)
    await assert_consistent(alpha.ctx.db)


async def test_federated_counts(network: Network) -> None:
    alpha, beta, gamma = await three_instances(network)
    alice = await account(alpha, "alice")
    erin = await account(alpha, "erin", locked=True)
    bob = await account(beta, "bob")
    dave = await account(gamma, "dave")

    # remote follow: counted on both sides once accepted
    await follow(beta, bob, alpha, "alice")
    await follow(gamma, dave, alpha, "erin")
    await network.drain()
    bob_on_alpha = await remote_row(alpha, bob["uri"])
    alice_on_beta = await remote_row(beta, alice["uri"])
    assert (await shown(alpha, alice["id"]))["followers_count"] == 1
    assert (await shown(alpha, bob_on_alpha["id"]))["following_count"] == 1
    assert (await shown(beta, bob["id"]))["following_count"] == 1
    assert (await shown(beta, alice_on_beta["id"]))["followers_count"] == 1
    # locked: pending on both sides until the Accept arrives
    assert (await shown(alpha, erin["id"]))["followers_count"] == 0
    assert (await shown(gamma, dave["id"]))["following_count"] == 0
    dave_on_alpha = await remote_row(alpha, dave["uri"])
    await actions.answer_follow_request(alpha.ctx, erin, dave_on_alpha, accept=True)
    await network.drain()
    assert (await shown(alpha, erin["id"]))["followers_count"] == 1
    assert (await shown(gamma, dave["id"]))["following_count"] == 1
    await check_all(network)

    # remote Create, reply, Like, Announce and their undoing
    post = await actions.create_status(alpha.ctx, alice, PostRequest(text="hello"))
    await network.drain()
    on_beta = await beta.ctx.db.fetchone("SELECT * FROM statuses WHERE uri = ?", (post["uri"],))
    assert (await shown(beta, alice_on_beta["id"]))["statuses_count"] == 1
    reply = await actions.create_status(beta.ctx, bob, PostRequest(text="hi", in_reply_to_id=on_beta["id"]))
    await actions.favourite(beta.ctx, bob, on_beta["id"])
    await actions.reblog(beta.ctx, bob, on_beta["id"])
    await network.drain()
    assert await status_counts(alpha, post["id"]) == (1, 1, 1)
    assert await status_counts(beta, on_beta["id"]) == (1, 1, 1)
    assert (await shown(alpha, bob_on_alpha["id"]))["statuses_count"] == 2
    await check_all(network)

    await actions.unreblog(beta.ctx, bob, on_beta["id"])
    await actions.unfavourite(beta.ctx, bob, on_beta["id"])
    await actions.delete_status(beta.ctx, bob, reply["id"])
    await network.drain()
    assert await status_counts(alpha, post["id"]) == (0, 0, 0)
    assert (await shown(alpha, bob_on_alpha["id"]))["statuses_count"] == 0
    await check_all(network)

    # remote Delete of the post
    await actions.delete_status(alpha.ctx, alice, post["id"])
    await network.drain()
    entity = await shown(beta, alice_on_beta["id"])
    assert entity["statuses_count"] == 0 and entity["last_status_at"] is None
    await check_all(network)

    # remote Undo(Follow), and a remote Block severing the follow
    await actions.unfollow(beta.ctx, bob, alice_on_beta)
    await network.drain()
    assert (await shown(alpha, alice["id"]))["followers_count"] == 0
    assert (await shown(beta, bob["id"]))["following_count"] == 0
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    assert (await shown(alpha, alice["id"]))["followers_count"] == 1
    await actions.block(beta.ctx, bob, alice_on_beta)
    await network.drain()
    assert (await shown(alpha, alice["id"]))["followers_count"] == 0
    assert (await shown(beta, bob["id"]))["following_count"] == 0
    await check_all(network)


async def test_gone_actor(network: Network) -> None:
    alpha, beta, _ = await three_instances(network)
    alice = await account(alpha, "alice")
    bob = await account(beta, "bob")
    await follow(beta, bob, alpha, "alice")
    await network.drain()
    await actions.create_status(beta.ctx, bob, PostRequest(text="one"))
    await actions.create_status(beta.ctx, bob, PostRequest(text="two"))
    await network.drain()
    bob_on_alpha = await remote_row(alpha, bob["uri"])
    assert (await shown(alpha, bob_on_alpha["id"]))["following_count"] == 1
    await mark_gone(alpha.ctx, bob["uri"])
    entity = await shown(alpha, bob_on_alpha["id"])
    assert (entity["statuses_count"], entity["following_count"], entity["last_status_at"]) == (0, 0, None)
    assert (await shown(alpha, alice["id"]))["followers_count"] == 0
    await assert_consistent(alpha.ctx.db)


async def test_migration_backfills_existing_rows(tmp_path: Path) -> None:
    """A database from before migration 4 gets its counters filled in when it is opened."""
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:3], start=1):
        conn.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    conn.execute("BEGIN")
    for i in (1, 2, 3):
        conn.execute("INSERT INTO accounts (id, username, uri, created_at, updated_at) VALUES (?, ?, ?, 0, 0)",
                     (i, f"u{i}", f"https://x.test/u{i}"))
    status = ("INSERT INTO statuses (id, uri, account_id, local, in_reply_to_id, reblog_of_id, visibility,"
              " published_at, created_at, deleted_at) VALUES (?, ?, ?, 1, ?, ?, 'public', ?, 0, ?)")
    conn.executemany(status, [
        (10, "s10", 1, None, None, 100.0, None),
        (11, "s11", 1, None, None, 200.0, 250.0),  # deleted: counts for nothing
        (12, "s12", 2, 10, None, 300.0, None),
        (13, "s13", 3, None, 10, 400.0, None),
        (14, "s14", 3, 10, None, 500.0, 600.0),
    ])
    conn.executemany("INSERT INTO follows (id, account_id, target_account_id, state, created_at)"
                     " VALUES (?, ?, ?, ?, 0)", [(20, 2, 1, "accepted"), (21, 3, 1, "accepted"), (22, 1, 2, "pending")])
    conn.executemany("INSERT INTO favourites (id, account_id, status_id, created_at) VALUES (?, ?, ?, 0)",
                     [(30, 2, 10), (31, 3, 10), (32, 1, 12)])
    conn.execute("COMMIT")
    conn.close()

    db = await Database.open(str(path))
    try:
        await assert_consistent(db)
        assert tuple(await db.fetchone(
            "SELECT statuses_count, last_status_at, followers_count, following_count FROM account_stats"
            " WHERE account_id = 1")) == (1, 100.0, 2, 0)
        assert tuple(await db.fetchone(
            "SELECT replies_count, reblogs_count, favourites_count FROM status_stats WHERE status_id = 10")) == (1, 1, 2)
        # and the triggers keep them from here on
        async with db.write() as tx:
            await tx.execute("UPDATE statuses SET deleted_at = 700 WHERE id = 10")
            await tx.execute("UPDATE follows SET state = 'accepted' WHERE id = 22")
            await tx.execute("DELETE FROM favourites WHERE id = 32")
            await tx.execute("UPDATE statuses SET deleted_at = NULL WHERE id = 11")
        await assert_consistent(db)
        assert tuple(await db.fetchone(
            "SELECT statuses_count, last_status_at, following_count FROM account_stats WHERE account_id = 1")) \
            == (1, 200.0, 1)
    finally:
        await db.close()


async def test_page_queries_keep_their_indexes_after_analyze(network: Network, monkeypatch: Any) -> None:
    """Statistics from ANALYZE must not turn a page's queries into walks over `statuses`.

    With statistics from data in which most statuses are no replies, no boosts and not local,
    SQLite would otherwise count replies and boosts by full scans, look for the viewer's boosts
    among everything the viewer wrote, and find the local page through the NULL group of
    `statuses_reblog`. Every query the pages run is checked with EXPLAIN QUERY PLAN.
    """
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "reader")
    reader = await alpha.ctx.db.fetchval("SELECT id FROM accounts WHERE username = 'reader' AND domain IS NULL")
    conn = sqlite3.connect(alpha.config.database.path, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    authors = [reader] + list(range(1000, 1300))
    conn.executemany("INSERT INTO accounts (id, username, domain, uri, created_at, updated_at) VALUES (?, ?, ?, ?, 0, 0)",
                     [(a, f"u{a}", None if a < 1010 else "remote.test", f"https://remote.test/u{a}") for a in authors[1:]])
    rows = []
    for i in range(1, 6001):
        author = reader if i % 3 == 0 else authors[1 + i % 300]
        reply = i - 7 if i % 20 == 0 else None
        boost = i - 11 if i % 50 == 0 else None
        rows.append((10_000 + i, f"https://remote.test/s{i}", author, int(author < 1010 or author == reader),
                     reply and 10_000 + reply, boost and 10_000 + boost, float(i)))
    conn.executemany("INSERT INTO statuses (id, uri, account_id, local, in_reply_to_id, reblog_of_id, visibility,"
                     " published_at, created_at) VALUES (?, ?, ?, ?, ?, ?, 'public', ?, 0)", rows)
    conn.executemany("INSERT INTO home_feed (account_id, status_id) VALUES (?, ?)",
                     [(reader, r[0]) for r in rows[::5]])
    conn.executemany("INSERT INTO favourites (id, account_id, status_id, created_at) VALUES (?, ?, ?, 0)",
                     [(50_000 + i, reader, r[0]) for i, r in enumerate(rows[::40])])
    conn.execute("COMMIT")

    seen: list[tuple[str, Any]] = []
    for name in ("fetchall", "fetchone", "fetchval"):
        original = getattr(alpha.ctx.db, name)

        def traced(sql: str, params: Any = (), _original: Any = original) -> Any:
            seen.append((sql, params))
            return _original(sql, params)

        monkeypatch.setattr(alpha.ctx.db, name, traced)

    async def check_pages() -> None:
        seen.clear()
        assert alpha.session is not None
        for path in ("/api/v1/timelines/home", "/api/v1/timelines/public?local=true",
                     "/api/v1/timelines/public?remote=true", "/api/v1/timelines/public",
                     "/api/v1/timelines/home?max_id=12000", "/api/v1/timelines/public?local=true&max_id=12000"):
            async with alpha.session.get(alpha.url(path), headers=bearer(token)) as resp:
                assert resp.status == 200, await resp.text()
                assert len(await resp.json()) == 20, path
        plans = {sql: " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
                 for sql, params in seen if "statuses" in sql or "_stats" in sql}
        for sql, plan in plans.items():
            if "NOT INDEXED" in sql:
                continue  # the federated page walks statuses newest-first on purpose
            scans = [step for step in plan.split(" | ") if step.startswith("SCAN")
                     and step != "SCAN page" and not step.endswith("CONSTANT ROWS")]  # the page's own ids
            assert not scans, f"{sql}\n{plan}"
            assert "statuses_reblog (" not in plan, f"{sql}\n{plan}"
            assert "TEMP B-TREE" not in plan or "media_attachments" in sql, f"{sql}\n{plan}"
            if "reblog_of_id = page.id" in sql:
                assert "statuses_reblog_account" in plan, f"{sql}\n{plan}"
                assert plan.count("SEARCH") == 4, f"{sql}\n{plan}"  # favourites, boosts, bookmarks, pins
        assert sum("statuses_public" in plan for plan in plans.values()) == 3

    await check_pages()
    conn.execute("ANALYZE")
    await check_pages()
    conn.close()
    await assert_consistent(alpha.ctx.db)
