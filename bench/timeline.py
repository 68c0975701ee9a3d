"""Home timeline: GET /api/v1/timelines/home on a big database, against the bare indexed query.

Seeded with `statuses` statuses from `authors` remote accounts; a local user
(created by fedi, password and keys) follows `followed` of them and has a
home_feed row for each of their statuses (what fan-out-on-write would have
written). The token comes through the real OAuth authorization-code flow.
Requests are sequential (one connection), so the figures are service times.

Baseline: the same `SELECT s.* FROM home_feed h JOIN statuses s … ORDER BY
h.status_id DESC LIMIT 20` the endpoint runs, timed with sqlite3 on the same file.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any

from bench import seed
from bench.common import FEDI_HOST, BenchError, Run, control, fedi_server, free_port, loopback_map, summary_ms, \
    user_token, write_fedi_config
from bench.load import build_request, fetch, run_closed

GOAL_P99_MS = 10.0
GOAL_RATIO = 3.0

HOME_SQL = ("SELECT s.* FROM home_feed h JOIN statuses s ON s.id = h.status_id WHERE h.account_id = ?"
            " AND s.deleted_at IS NULL AND 1 ORDER BY h.status_id DESC LIMIT ?")


def seed_home(db_path: Any, base: str, *, n_statuses: int, n_authors: int, n_followed: int,
              log: list[str]) -> int:
    """Build the database; returns the reader's account id."""
    now = time.time()
    with seed.timed("migrations + local user (scrypt, RSA)", log):
        seed.init_db(db_path)
        reader = seed.create_users(db_path, base, [("reader", "benchpassword1")])["reader"]
    bulk = seed.Bulk(db_path)
    ids = seed.Ids()
    with seed.timed(f"{n_authors} remote accounts", log):
        authors = seed.remote_accounts(bulk, ids, n_authors, lambda i: f"r{i % 500}.remote.bench", now=now)
    with seed.timed(f"{n_statuses} statuses (executemany, indexes rebuilt after)", log):
        bulk.drop_indexes("statuses")
        uris = bulk.one("SELECT id, uri FROM accounts WHERE domain IS NOT NULL ORDER BY id")
        uri_of = dict(uris)
        seed.statuses(bulk, seed.Ids(), n_statuses, [(a, uri_of[a], False) for a in authors], now=now)
        bulk.rebuild_indexes()
    followed = authors[:: max(1, n_authors // n_followed)][:n_followed]
    with seed.timed(f"follows + home_feed for {len(followed)} followed accounts", log):
        seed.follows(bulk, ids, ((reader, a) for a in followed), now=now, uri_prefix=base)
        bulk.conn.execute("CREATE TEMP TABLE followed (id INTEGER PRIMARY KEY)")
        bulk.many("INSERT INTO followed (id) VALUES (?)", ((a,) for a in followed))
        bulk.conn.execute(
            "INSERT INTO home_feed (account_id, status_id) SELECT ?, s.id FROM statuses s"
            " JOIN followed f ON f.id = s.account_id", (reader,))
    with seed.timed("commit, rebuild indexes, back to WAL", log):
        bulk.close()
    return reader


def bare_query(db_path: Any, sql: str, params: tuple[Any, ...], n: int, warmup: int) -> list[float]:
    """The baseline: one prepared query through sqlite3 (rows as sqlite3.Row, like fedi)."""
    conn = sqlite3.connect(str(db_path))
    conn.row_factory = sqlite3.Row
    out = []
    try:
        for i in range(warmup + n):
            t0 = time.perf_counter()
            rows = conn.execute(sql, params).fetchall()
            dt = time.perf_counter() - t0
            if i >= warmup:
                out.append(dt)
        if not rows:
            raise BenchError("baseline query returned no rows")
    finally:
        conn.close()
    return out


async def run(run: Run) -> dict[str, Any]:
    n_statuses = run.size(1_000_000, 10_000)
    n_authors = run.size(10_000, 1_000)
    n_followed = run.size(500, 50)
    n_requests = run.size(1_000, 100)
    tmp = run.scratch("timeline")
    port = free_port()
    base = f"http://{FEDI_HOST}:{port}"
    db_path = tmp / "fedi.sqlite3"
    log: list[str] = []
    t0 = time.perf_counter()
    reader = await asyncio.to_thread(seed_home, db_path, base, n_statuses=n_statuses, n_authors=n_authors,
                                     n_followed=n_followed, log=log)
    seed_s = time.perf_counter() - t0
    run.log(f"seeded in {seed_s:.1f} s ({'; '.join(log)})")
    feed_rows = sqlite3.connect(str(db_path)).execute(
        "SELECT count(*) FROM home_feed WHERE account_id = ?", (reader,)).fetchone()[0]

    server = fedi_server(tmp, run.cores, write_fedi_config(tmp, port, db_path),
                         loopback_map(f"r{h}.remote.bench" for h in range(500)))
    await server.start()
    try:
        token = await user_token(f"http://127.0.0.1:{port}", "reader", "benchpassword1", "read")
        request = build_request("GET", "/api/v1/timelines/home", f"{FEDI_HOST}:{port}",
                                {"Authorization": f"Bearer {token}", "Accept": "application/json"})
        status, _, body = await fetch(port, request)
        if status != 200:
            raise BenchError(f"home timeline answered HTTP {status}: {body[:200]!r}")
        page = json.loads(body)
        if len(page) != 20:
            raise BenchError(f"home timeline returned {len(page)} statuses, expected 20")
        await run_closed(port, [request] * min(200, n_requests), concurrency=1, time_limit=30)  # warm-up
        if run.profile:
            await control(server, "POST", "/profile/start")
        c0 = server.cpu_s()
        result = await run_closed(port, [request] * n_requests, concurrency=1, time_limit=run.size(90, 20))
        cpu_us = (server.cpu_s() - c0) / max(result.completed, 1) * 1e6
        if run.profile:
            await control(server, "POST", "/profile/stop", {"path": str(run.results_dir / "profile-timeline.txt")})
        rss_kb = server.rss_kb()
    finally:
        await server.stop()
    bad = {k: v for k, v in result.status_counts().items() if k != "200"}
    if bad or result.errors:
        raise BenchError(f"non-200 answers {bad} errors {dict(result.errors)}")

    baseline = await asyncio.to_thread(bare_query, db_path, HOME_SQL, (reader, 20), n_requests, 200)
    fig = result.summary()
    base_fig = summary_ms(baseline)
    ratio = fig["p99_ms"] / base_fig["p99_ms"] if base_fig["p99_ms"] else float("inf")
    checks = {"p99 ≤ 10 ms": fig["p99_ms"] <= GOAL_P99_MS, "p99 ≤ 3 × baseline p99": ratio <= GOAL_RATIO}
    return {
        "summary": f"p50 {fig['p50_ms']:.2f} ms, p99 {fig['p99_ms']:.2f} ms",
        "baseline_summary": f"bare query p99 {base_fig['p99_ms']:.3f} ms",
        "p50_ms": fig["p50_ms"], "p99_ms": fig["p99_ms"], "max_ms": fig["max_ms"], "req_per_s": fig["req_per_s"],
        "requests": fig["requests"], "rss_mb": round(rss_kb / 1024, 1),
        "server_cpu_us_per_request": round(cpu_us, 1),
        "baseline": {"what": "the endpoint's SELECT through sqlite3 on the same file", **base_fig},
        "ratio": round(ratio, 2),
        "ratio_means": "p99 / baseline p99 (lower is better)",
        "goal": f"p99 ≤ {GOAL_P99_MS:g} ms and ≤ {GOAL_RATIO:g} × baseline p99",
        "checks": checks,
        "met": all(checks.values()),
        "sizes": {"statuses": n_statuses, "authors": n_authors, "followed": n_followed,
                  "home_feed_rows": feed_rows, "requests": n_requests},
        "seed_s": round(seed_s, 1),
        "seed_steps": log,
        "latencies_ms": {"fedi GET /timelines/home": [round(x * 1000, 4) for x in result.latencies],
                         "bare SELECT (sqlite3)": [round(x * 1000, 4) for x in baseline]},
    }
