"""Fan-out: one post by an account with many followers on many instances, until every shared inbox has it.

Followers are remote accounts seeded on `hosts` instances named host0.bench …
hostN.bench (fedi's test host map sends every one of them to 127.0.0.1), each
with the shared inbox http://hostN.bench:PORT/inbox. All of them are served by
ONE receiver process (bench.server --kind receiver) on the load generator's
core: it counts POSTs per Host header and verifies nothing else. The post is
made inside the fedi process by `outbox.actions.create_status` (through the
control app), so the clock starts right before the local action and stops
when the receiver has seen the last distinct host; both use CLOCK_MONOTONIC.

fedi runs as `fedi serve` would with `[federation] delivery_processes` = the
number of cores: the web server (which makes the post and queues the rows) is
pinned to the server core, its delivery processes may run on every core
(`FEDI_DELIVERY_CPUS`), next to the receiver on the load core. CPU and RSS
figures count the server and its delivery processes.

Baseline: the time to make the same number of RSA-2048 PKCS#1 v1.5 SHA-256
signatures with `cryptography` on this machine — the ceiling for signed
delivery on one core. Goal: wall ≤ baseline / 0.7, i.e. ≥ 0.7 × the ceiling,
and exactly one POST per shared inbox. Three rounds (baseline, then a fresh
server and post), the median round reported; every round must be exactly-once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp

from bench import seed
from bench.common import FEDI_HOST, BenchError, Run, Server, control, fedi_server, free_port, loopback_map, \
    median, write_fedi_config

GOAL_RATIO = 0.7


def signing_ceiling(n: int, repeats: int = 3) -> tuple[float, list[float], float]:
    """Seconds to make n RSA-2048 signatures of request-sized strings (median of `repeats`), and CPU seconds."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    from fedi.signatures import generate_private_key

    key = generate_private_key()
    data = [(f"(request-target): post /inbox\nhost: host{i}.bench:8080\ndate: Sat, 21 Nov 2026 20:00:00 GMT\n"
             f"digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU={i}").encode() for i in range(n)]
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        for d in data:
            key.sign(d, padding.PKCS1v15(), hashes.SHA256())
        times.append(time.perf_counter() - t0)
        cpu.append(time.thread_time() - c0)
    return median(times), times, median(cpu)


def seed_followers(db_path: Any, base: str, receiver_port: int, n_followers: int, n_hosts: int) -> int:
    seed.init_db(db_path)
    star = seed.create_users(db_path, base, [("star", "benchpassword1")])["star"]
    bulk = seed.Bulk(db_path)
    ids = seed.Ids()
    now = time.time()
    followers = seed.remote_accounts(
        bulk, ids, n_followers, lambda i: f"host{i % n_hosts}.bench:{receiver_port}", now=now, prefix="f",
        shared_inbox=lambda i, host: f"http://{host}/inbox")
    seed.follows(bulk, ids, ((f, star) for f in followers), now=now, uri_prefix=base)
    bulk.close()
    return star


async def receiver_stats(port: int, arrivals: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{port}/_stats", params={"arrivals": "1"} if arrivals else None) as r:
            return dict(await r.json())


async def _wait_delivery_processes(fedi: Server, count: int, limit_s: float = 15.0) -> None:
    """Until the server's delivery children have started and gone idle (they start after the server)."""
    from bench.common import child_pids, proc_cpu_s

    deadline = time.monotonic() + limit_s
    before: dict[int, float] = {}
    while time.monotonic() < deadline:
        now = {pid: proc_cpu_s(pid) for pid in child_pids(fedi.pid)}
        if len(now) >= count and all(0 < cpu == before.get(pid) for pid, cpu in now.items()):
            return  # no CPU used by any of them for the last interval
        before = now
        await asyncio.sleep(0.2)
    raise BenchError(f"fedi: {count} delivery processes not idle after {limit_s:.0f} s; {fedi.log_tail()}")


def _append_delivery_profiles(path: str, files: list[Any]) -> None:
    """Add the delivery processes' profiles (whole life, start-up included) to the server's report."""
    import io
    import pstats

    if not files:
        return
    buf = io.StringIO()
    buf.write(f"\n\n# cProfile of the {len(files)} delivery processes together (their whole life: start-up, "
              "the warm-up and the fan-out)\n")
    stats = pstats.Stats(*(str(f) for f in files), stream=buf)
    for key in ("tottime", "cumulative"):
        buf.write(f"\n## sorted by {key}\n")
        stats.strip_dirs().sort_stats(key).print_stats(35)
    with open(path, "a") as fh:
        fh.write(buf.getvalue())


async def measure(run: Run, *, n_followers: int, n_hosts: int, label: str = "fanout",
                  profile_path: str | None = None) -> dict[str, Any]:
    """One post to n_followers on n_hosts; returns the raw figures (shared with the footprint scenario)."""
    tmp = run.scratch(label)
    receiver = Server("receiver", ["--kind", "receiver", "--expect", str(n_hosts)], tmp / "receiver.log",
                      run.cores.load)
    fedi: Server | None = None
    try:
        await receiver.start()
        port = free_port()
        base = f"http://{FEDI_HOST}:{port}"
        db_path = tmp / "fedi.sqlite3"
        t0 = time.perf_counter()
        await asyncio.to_thread(seed_followers, db_path, base, receiver.port, n_followers, n_hosts)
        seed_s = time.perf_counter() - t0
        host_map = loopback_map(f"host{h}.bench" for h in range(n_hosts))
        # One delivery process per core, free to run on every core; the web server (which only
        # makes the post and queues the rows) stays pinned to the server core.
        processes = max(1, len(run.cores.all))
        fedi = fedi_server(tmp, run.cores, write_fedi_config(tmp, port, db_path, delivery_processes=processes),
                           host_map, delivery_cpus=run.cores.all or None)
        if profile_path:  # each delivery process profiles itself and writes the file when it exits
            fedi.env["FEDI_DELIVERY_PROFILE"] = str(tmp / "delivery")
        await fedi.start()
        await _wait_delivery_processes(fedi, processes)
        rss_idle_kb = fedi.rss_kb()
        rss_children_idle_kb = fedi.children_rss_kb()
        # warm-up: the same local action with nobody to deliver to
        await control(fedi, "POST", "/post", {"username": "star", "text": "warm-up", "visibility": "direct"})
        if profile_path:
            await control(fedi, "POST", "/profile/start")
        cpu0 = fedi.cpu_s()
        posted = await control(fedi, "POST", "/post", {"username": "star", "text": "Hello, **followers**! #bench"})
        deadline = time.monotonic() + run.size(60, 8)
        stats = await receiver_stats(receiver.port)
        while stats["complete_at"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            stats = await receiver_stats(receiver.port)
        cpu_s = fedi.cpu_s() - cpu0
        if profile_path:
            await control(fedi, "POST", "/profile/stop", {"path": profile_path})
        # let anything else still queued arrive (duplicates would show here), bounded
        settle_until = time.monotonic() + 3
        fstats = await control(fedi, "GET", "/stats")
        while fstats["deliveries"].get("pending") and time.monotonic() < settle_until:
            await asyncio.sleep(0.05)
            fstats = await control(fedi, "GET", "/stats")
        await asyncio.sleep(0.2)
        rss_after_kb = fedi.rss_kb()
        rss_children_after_kb = fedi.children_rss_kb()
        stats = await receiver_stats(receiver.port, arrivals=True)
    finally:
        if fedi is not None:
            await fedi.stop()
        await receiver.stop()
    if profile_path:
        _append_delivery_profiles(profile_path, sorted(tmp.glob("delivery.*.prof")))
    complete = stats["complete_at"]
    wall = (complete - posted["t_start"]) if complete is not None else None
    return {
        "wall_s": wall, "posts_total": stats["total"], "distinct_hosts": stats["distinct"],
        "duplicates": stats["duplicates"], "max_per_host": stats["max_per_host"],
        "create_status_s": posted["t_committed"] - posted["t_start"],
        "first_post_s": (stats["first_at"] - posted["t_start"]) if stats["first_at"] else None,
        "deliveries": fstats["deliveries"], "rss_idle_kb": rss_idle_kb, "rss_after_kb": rss_after_kb,
        "rss_children_idle_kb": rss_children_idle_kb, "rss_children_after_kb": rss_children_after_kb,
        "delivery_processes": processes,
        "arrivals_ms": [round((a - posted["t_start"]) * 1000, 3) for a in (stats["arrivals"] or [])],
        "seed_s": seed_s, "server_cpu_s": cpu_s,
    }


async def run(run: Run) -> dict[str, Any]:
    n_followers = run.size(10_000, 500)
    n_hosts = run.size(1_000, 50)
    # One post takes about half a second, so a single run moves with the machine (on a shared VM by
    # ±20 %): each round pairs a signing baseline with a fresh server, database and post, and the
    # round with the median ratio is reported.
    rounds = 1 if run.profile else run.size(3, 1)
    pairs = []
    for k in range(rounds):
        b = await asyncio.to_thread(signing_ceiling, n_hosts, 1)
        m = await measure(run, n_followers=n_followers, n_hosts=n_hosts, label=f"fanout-{k}",
                          profile_path=str(run.results_dir / "profile-fanout.txt") if run.profile else None)
        if m["wall_s"] is None:
            raise BenchError(f"only {m['distinct_hosts']} of {n_hosts} shared inboxes got the post "
                             f"({m['posts_total']} POSTs; deliveries {m['deliveries']})")
        pairs.append((b[0] / m["wall_s"], b, m))
    exactly_once = all(m["posts_total"] == n_hosts and m["distinct_hosts"] == n_hosts and m["duplicates"] == 0
                       for _, _, m in pairs)
    ratio, (baseline_s, _, baseline_cpu), m = sorted(pairs, key=lambda p: p[0])[len(pairs) // 2]
    baseline_all = [b[0] for _, b, _ in pairs]
    run.shared["fanout_rss_after_kb"] = m["rss_after_kb"]
    run.shared["fanout_sizes"] = (n_followers, n_hosts)
    wall = m["wall_s"]
    checks = {f"≥ {GOAL_RATIO} × signing ceiling (wall ≤ {baseline_s / GOAL_RATIO:.3f} s)": ratio >= GOAL_RATIO,
              f"exactly {n_hosts} POSTs, one per shared inbox": exactly_once}
    return {
        "summary": f"{wall:.3f} s to {n_hosts} inboxes ({n_hosts / wall:,.0f}/s), {m['posts_total']} POSTs, "
                   f"{m['server_cpu_s']:.2f} s CPU (server + {m['delivery_processes']} delivery processes)",
        "baseline_summary": f"{n_hosts} RSA signatures: {baseline_s:.3f} s ({baseline_cpu:.2f} s CPU)",
        "wall_s": round(wall, 4), "deliveries_per_s": round(n_hosts / wall, 1),
        "posts_total": m["posts_total"], "distinct_hosts": m["distinct_hosts"], "duplicates": m["duplicates"],
        "exactly_once": exactly_once,
        "create_status_ms": round(m["create_status_s"] * 1000, 2),
        "server_cpu_s": round(m["server_cpu_s"], 3),
        "server_cpu_us_per_delivery": round(m["server_cpu_s"] / n_hosts * 1e6, 1),
        "first_delivery_ms": round(m["first_post_s"] * 1000, 2) if m["first_post_s"] is not None else None,
        "rss_mb_idle": round(m["rss_idle_kb"] / 1024, 1), "rss_mb_after": round(m["rss_after_kb"] / 1024, 1),
        "delivery_processes": m["delivery_processes"],
        "rss_mb_delivery_processes_idle": round(m["rss_children_idle_kb"] / 1024, 1),
        "rss_mb_delivery_processes_after": round(m["rss_children_after_kb"] / 1024, 1),
        "delivery_states": m["deliveries"],
        "baseline": {"what": f"{n_hosts} RSA-2048 signatures with cryptography, one core (the median round's)",
                     "seconds": round(baseline_s, 4), "rounds_s": [round(x, 4) for x in baseline_all],
                     "cpu_seconds": round(baseline_cpu, 4),
                     "signatures_per_s": round(n_hosts / baseline_s, 1)},
        "ratio": round(ratio, 3),
        "rounds": [{"baseline_s": round(b[0], 4), "wall_s": round(mm["wall_s"], 4), "ratio": round(r, 3),
                    "create_status_ms": round(mm["create_status_s"] * 1000, 1), "server_cpu_s": round(mm["server_cpu_s"], 3)}
                   for r, b, mm in pairs],
        "ratio_means": "baseline seconds / fedi wall seconds = share of the signing ceiling reached (higher is better)",
        "ratio_by_cpu": round(baseline_cpu / m["server_cpu_s"], 3) if m["server_cpu_s"] else None,
        "goal": f"≥ {GOAL_RATIO} × signing ceiling; exactly one POST per shared inbox",
        "checks": checks,
        "met": all(checks.values()),
        "sizes": {"followers": n_followers, "instances": n_hosts, "receiver_processes": 1,
                  "delivery_processes": m["delivery_processes"]},
        "seed_s": round(m["seed_s"], 1),
        "latencies_ms": {"post -> shared inbox POST": m["arrivals_ms"]},
    }
