"""Footprint: cold start to first answer, idle RSS, and RSS after a fan-out.

Cold start spawns `python -m fedi.cli --config … serve` exactly as an admin
would, with a fresh config and database each time (so it includes the
migrations; the instance actor's key pair is made on first need, see
`actors.local.instance_signer`), pinned to the server
core, and polls GET / until it answers 200. Idle RSS is VmRSS from
/proc/PID/status one second after that first answer. A restart on the now
existing database is timed and measured too, for information.

RSS after the fan-out comes from the fanout scenario when it ran in the same
invocation; otherwise a smaller fan-out is run here.

Baseline: a bare aiohttp app (`python -m bench.server --kind bare`) measured
the same way.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.common import BenchError, Run, child_env, free_port, median
from bench.load import build_request, fetch

GOAL_IDLE_MB = 50.0
GOAL_COLD_S = 0.5


async def _spawn_and_time(argv: list[str], port: int, cpu: int | None, cwd: Path, limit_s: float,
                          settle_s: float) -> tuple[float, int]:
    """Seconds from spawn to the first 200 on GET /, and VmRSS (kB) `settle_s` later."""
    from bench.server import rss_kb

    log = open(cwd / "stderr.log", "ab")
    request = build_request("GET", "/", f"127.0.0.1:{port}", {"Accept": "text/html"})
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=str(cwd), env={**child_env(), "FEDI_LOG": "WARNING"}, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=log,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None)
    try:
        answered = None
        deadline = t0 + limit_s
        while time.perf_counter() < deadline and proc.returncode is None:
            try:
                status, _, _ = await fetch(port, request, timeout=limit_s)
            except OSError:
                await asyncio.sleep(0.002)
                continue
            if status == 200:
                answered = time.perf_counter() - t0
                break
            await asyncio.sleep(0.002)
        if answered is None:
            raise BenchError(f"{' '.join(argv[-3:])}: no 200 on GET / within {limit_s} s "
                             f"(exit {proc.returncode}); see {cwd / 'stderr.log'}")
        await asyncio.sleep(settle_s)
        rss = rss_kb(proc.pid)
    finally:
        if proc.returncode is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                os.kill(proc.pid, signal.SIGKILL)
                await proc.wait()
        log.close()
    return answered, rss


def _fedi_config(folder: Path, port: int) -> Path:
    path = folder / "config.toml"
    path.write_text(
        "[instance]\n"
        f'domain = "fedi.bench:{port}"\nscheme = "http"\nname = "bench"\n\n'
        "[server]\n"
        f'host = "127.0.0.1"\nport = {port}\n\n'
        "[database]\n"
        'path = "fedi.sqlite3"\n'
    )
    return path


async def run(run: Run) -> dict[str, Any]:
    import sys

    repeats = run.size(3, 1)
    limit = run.size(20.0, 5.0)
    settle = run.size(1.0, 0.3)
    tmp = run.scratch("footprint")
    cpu = run.cores.server
    fedi_cold, fedi_rss, bare_cold, bare_rss = [], [], [], []
    restart_s = restart_kb = None
    for k in range(repeats):
        folder = tmp / f"fedi-{k}"
        folder.mkdir()
        port = free_port()
        cfg = _fedi_config(folder, port)
        argv = [sys.executable, "-m", "fedi.cli", "--config", str(cfg), "serve"]
        s, rss = await _spawn_and_time(argv, port, cpu, folder, limit, settle)
        fedi_cold.append(s)
        fedi_rss.append(rss)
        if k == 0 and not run.smoke:
            restart_s, restart_kb = await _spawn_and_time(argv, port, cpu, folder, limit, settle)
        bfolder = tmp / f"bare-{k}"
        bfolder.mkdir()
        bport = free_port()
        s, rss = await _spawn_and_time([sys.executable, "-m", "bench.server", "--kind", "bare", "--port", str(bport)],
                                       bport, cpu, bfolder, limit, settle)
        bare_cold.append(s)
        bare_rss.append(rss)

    if "fanout_rss_after_kb" in run.shared:
        after_kb = run.shared["fanout_rss_after_kb"]
        followers, hosts = run.shared["fanout_sizes"]
        source = "the fanout scenario of this run"
    else:
        from bench.fanout import measure

        followers, hosts = run.size((1_000, 100), (100, 10))
        m = await measure(run, n_followers=followers, n_hosts=hosts, label="footprint-fanout")
        after_kb = m["rss_after_kb"]
        source = "a smaller fan-out run here"

    cold = median(fedi_cold)
    idle_mb = median(fedi_rss) / 1024
    b_cold = median(bare_cold)
    b_idle_mb = median(bare_rss) / 1024
    checks = {f"idle RSS ≤ {GOAL_IDLE_MB:g} MB": idle_mb <= GOAL_IDLE_MB,
              f"cold start ≤ {GOAL_COLD_S:g} s": cold <= GOAL_COLD_S}
    return {
        "summary": f"idle {idle_mb:.1f} MB, after fan-out {after_kb / 1024:.1f} MB, cold start {cold:.2f} s",
        "baseline_summary": f"bare aiohttp: {b_idle_mb:.1f} MB, {b_cold:.2f} s",
        "idle_rss_mb": round(idle_mb, 1), "rss_after_fanout_mb": round(after_kb / 1024, 1),
        "cold_start_s": round(cold, 3), "restart_s": round(restart_s, 3) if restart_s is not None else None,
        "restart_idle_rss_mb": round(restart_kb / 1024, 1) if restart_kb is not None else None,
        "cold_start_runs_s": [round(x, 3) for x in fedi_cold], "idle_rss_runs_mb": [round(x / 1024, 1) for x in fedi_rss],
        "fanout_for_rss": {"followers": followers, "instances": hosts, "source": source},
        "baseline": {"what": "bare aiohttp app (python -m bench.server --kind bare)", "idle_rss_mb": round(b_idle_mb, 1),
                     "cold_start_s": round(b_cold, 3), "cold_start_runs_s": [round(x, 3) for x in bare_cold]},
        "ratio": round(idle_mb / b_idle_mb, 2) if b_idle_mb else None,
        "ratio_means": "idle RSS / bare idle RSS (lower is better)",
        "cold_start_ratio": round(cold / b_cold, 2) if b_cold else None,
        "goal": f"idle RSS ≤ {GOAL_IDLE_MB:g} MB; cold start (fresh config) ≤ {GOAL_COLD_S:g} s",
        "checks": checks,
        "met": all(checks.values()),
        "sizes": {"repeats": repeats, "settle_s": settle},
        "command": "python -m fedi.cli --config CONFIG serve",
    }
