"""python -m bench [SCENARIO …] [--smoke] [--profile]

Exit status 0 when every scenario was measured (whether or not it met its goal),
1 when one could not be (an error or its time budget ran out).

Runs the scenarios (default: all), prints a table, writes
bench/results/latest.json (keyed by scenario), bench/results/meta.json (machine,
mode, other load seen during each scenario), bench/results/latest.md (the table
as Markdown) and bench/results/latency.png (latency distributions).
With --profile the timed phase of each scenario runs under cProfile inside the
server and the results go to bench/results/profiled.json and profile-*.txt
instead (profiling slows the server, so those figures are not the benchmark's).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench import chart
from bench.common import LIVE, RESULTS, BenchError, Run, compile_sources, machine, pick_cores, pin_self

SCENARIOS = ("inbox", "fanout", "timeline", "streaming", "footprint")
# Hard caps (seconds) per scenario; the sizes are chosen to finish well inside them.
BUDGET = {
    False: {"inbox": 150, "fanout": 100, "timeline": 160, "streaming": 110, "footprint": 60},
    # smoke: typically 3-8 s each on a quiet 2-core machine; the caps leave room for a busy CI box
    True: {"inbox": 30, "fanout": 25, "timeline": 25, "streaming": 25, "footprint": 25},
}
def _goals(name: str, r: dict[str, Any]) -> list[tuple[float, str]]:
    """Goal lines for the chart, in ms."""
    if name == "timeline":
        return [(10.0, "goal p99")]
    if name == "streaming":
        return [(20.0, "page goal p99"), (100.0, "event goal p99")]
    if name == "fanout" and isinstance(r.get("baseline"), dict) and r["baseline"].get("seconds"):
        return [(r["baseline"]["seconds"] / 0.7 * 1000, "goal: all by")]
    return []


def _proc_stat() -> list[int]:
    try:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:]]
    except OSError:
        return []


def _cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine so far (all cores), from /proc/stat; steal included."""
    fields = _proc_stat()
    if not fields:
        return float("nan")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests while this VM wanted them (field 8 of /proc/stat)."""
    fields = _proc_stat()
    return fields[7] / os.sysconf("SC_CLK_TCK") if len(fields) > 7 else float("nan")


def _own_cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


async def _wait_quiet(limit_s: float, threshold: float = 0.15) -> float:
    """Wait (at most limit_s) until other processes use under `threshold` of the CPUs; returns their share."""
    ncpu = os.cpu_count() or 1
    deadline = time.monotonic() + limit_s
    while True:
        busy0, own0, t0 = _cpu_busy_s(), _own_cpu_s(), time.monotonic()
        await asyncio.sleep(0.5)
        dt = time.monotonic() - t0
        share = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s() - own0)) / (dt * ncpu)
        if share < threshold or time.monotonic() >= deadline:
            return share


async def _run_one(name: str, run: Run, quiet_s: float) -> tuple[dict[str, Any], dict[str, Any]]:
    module = importlib.import_module(f"bench.{name}")
    budget = BUDGET[run.smoke][name]
    if quiet_s > 0:
        share = await _wait_quiet(quiet_s)
        if share >= 0.15:
            print(f"  · other processes still use {share:.0%} of the CPU; measuring anyway", flush=True)
    t0, busy0, own0, steal0 = time.monotonic(), _cpu_busy_s(), _own_cpu_s(), _steal_s()
    load0 = os.getloadavg()[0]
    try:
        result = await asyncio.wait_for(module.run(run), budget)
    except TimeoutError:
        result = {"met": False, "error": f"stopped after its {budget} s budget"}
    except BenchError as exc:  # could not be measured: say why; the other scenarios still run
        result = {"met": False, "error": str(exc)}
    except Exception as exc:
        traceback.print_exc()
        result = {"met": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        for server in list(LIVE):
            await server.stop()
    wall = time.monotonic() - t0
    other = max(0.0, (_cpu_busy_s() - busy0) - (_own_cpu_s() - own0))
    ncpu = len(run.cores.all) or os.cpu_count() or 1
    steal = _steal_s() - steal0
    env = {"wall_s": round(wall, 1), "other_cpu_share": round(other / (wall * ncpu), 3) if wall > 0 else None,
           "steal_share": round(steal / (wall * ncpu), 3) if wall > 0 and not math.isnan(steal) else None,
           "loadavg_1m_start": round(load0, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2)}
    result.setdefault("met", False)
    result["mode"] = "smoke" if run.smoke else "full"
    result["scenario_wall_s"] = env["wall_s"]
    result["other_cpu_share"] = env["other_cpu_share"]  # CPU used by processes not ours during the scenario
    result["steal_share"] = env["steal_share"]  # of which taken by the hypervisor for other VMs (part of the above)
    result["noisy"] = bool(env["other_cpu_share"] and env["other_cpu_share"] > 0.10)
    return result, env


def _fmt_ratio(r: Any) -> str:
    if not isinstance(r, (int, float)) or (isinstance(r, float) and math.isnan(r)):
        return "—"
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def table(results: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for name, r in results.items():
        measured = r.get("summary") or r.get("error") or ""
        if r.get("error") and r.get("summary"):
            measured += f" [{r['error']}]"
        ratio = _fmt_ratio(r.get("ratio"))
        if isinstance(r.get("ratio_by_cpu"), (int, float)):
            ratio += f" (CPU {_fmt_ratio(r['ratio_by_cpu'])})"
        other, steal = r.get("other_cpu_share"), r.get("steal_share")
        noise = f"{other:.0%}" if isinstance(other, (int, float)) else "—"
        if isinstance(steal, (int, float)) and steal >= 0.005:
            noise += f" ({steal:.0%} steal)"
        rows.append((name, measured, r.get("baseline_summary", "—"), ratio,
                     r.get("goal", "—"), "yes" if r.get("met") else "NO", noise))
    return rows


def print_table(rows: list[tuple[str, ...]]) -> None:
    head = ("scenario", "measured", "baseline (same run)", "ratio", "goal", "met", "other CPU")
    widths = [min(max(len(str(x[i])) for x in [head, *rows]), 80) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(str(c)[:80].ljust(w) for c, w in zip(row, widths)))


def markdown(rows: list[tuple[str, ...]]) -> str:
    out = ["| scenario | measured | baseline (same run) | ratio | goal | met | other CPU |",
           "|---|---|---|---|---|---|---|"]
    for row in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(out) + "\n"


def _panels(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    titles = {
        "inbox": "inbox: signed Create(Note) POST at fixed concurrency (closed loop)",
        "fanout": "fanout: time from the post to each shared inbox's POST",
        "timeline": "home timeline: GET /api/v1/timelines/home (sequential)",
        "streaming": "public local timeline page (sequential), and post -> update event on every listener",
    }
    panels = []
    for name, r in results.items():
        series = r.get("latencies_ms")
        if series:
            panels.append({"title": titles.get(name, name), "series": series, "goals": _goals(name, r)})
    return panels


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=str(RESULTS.parent.parent),
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


async def main_async(args: argparse.Namespace) -> int:
    cores = pick_cores()
    pin_self(cores.load)
    compile_sources()
    names = args.scenarios or list(SCENARIOS)
    out_dir = Path(args.out) if args.out else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fedi-bench-"))
    run = Run(smoke=args.smoke, cores=cores, tmp=tmp, profile=args.profile, results_dir=out_dir)
    info = machine()
    print(f"fedi bench ({'smoke' if args.smoke else 'full'}): {', '.join(names)} — {info['nproc']} × "
          f"{info['cpu_model']}, Python {info['python']}; load generator on core {cores.load}, "
          f"servers on core {cores.server}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    envs: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    try:
        for name in names:
            print(f"\n▶ {name}", flush=True)
            results[name], envs[name] = await _run_one(name, run, args.wait_quiet)
            r = results[name]
            print(f"  {'met' if r.get('met') else 'NOT met'}: {r.get('summary') or r.get('error')} "
                  f"({envs[name]['wall_s']} s, other processes used {envs[name]['other_cpu_share']:.0%} of the CPU, "
                  f"the hypervisor stole {envs[name]['steal_share'] or 0:.0%})",
                  flush=True)
    finally:
        for server in list(LIVE):
            await server.stop()
        if not args.keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - t0
    rows = table(results)
    print()
    print_table(rows)
    print(f"\ntotal {total:.0f} s")

    stem = "profiled" if args.profile else "latest"
    clean = {k: {kk: vv for kk, vv in v.items() if kk != "latencies_ms"} for k, v in results.items()}
    (out_dir / f"{stem}.json").write_text(json.dumps(clean, indent=2, ensure_ascii=False) + "\n")
    meta = {"machine": info, "mode": "smoke" if args.smoke else "full", "profiled": args.profile,
            "scenarios": names, "cores": {"load": cores.load, "server": cores.server},
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "total_s": round(total, 1),
            "git_commit": _git_commit(), "environment": envs}
    (out_dir / ("profiled-meta.json" if args.profile else "meta.json")).write_text(json.dumps(meta, indent=2) + "\n")
    (out_dir / f"{stem}.md").write_text(markdown(rows))
    try:
        png = chart.draw(out_dir / ("profiled-latency.png" if args.profile else "latency.png"), _panels(results))
        if png:
            print(f"wrote {out_dir / (stem + '.json')} and {png}")
    except ImportError:
        print("Pillow is not installed: no chart (pip install pillow)", file=sys.stderr)
    # Exit status: 1 when a scenario could not be measured (error, timeout); missed goals are results, not failures.
    failed = [n for n, r in results.items() if r.get("error")]
    if failed:
        print(f"not measured: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                   help=f"any of {', '.join(SCENARIOS)} (default: all)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (< 60 s in total); CI runs this")
    p.add_argument("--profile", action="store_true", help="cProfile the server during each timed phase")
    p.add_argument("--out", help="results directory (default bench/results)")
    p.add_argument("--keep-tmp", action="store_true", help="keep the scratch databases and server logs")
    p.add_argument("--wait-quiet", type=float, default=None, metavar="S",
                   help="before each scenario wait up to S seconds for other processes to leave the CPU "
                        "(default 15 s, 0 with --smoke)")
    args = p.parse_args(argv)
    if args.wait_quiet is None:
        args.wait_quiet = 0.0 if args.smoke else 15.0
    bad = [s for s in args.scenarios if s not in SCENARIOS]
    if bad:
        p.error(f"unknown scenario {bad[0]!r}; choose from {', '.join(SCENARIOS)}")
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
