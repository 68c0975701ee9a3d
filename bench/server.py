"""Subprocess entry for every server the benchmark starts.

    python -m bench.server --kind fedi --config cfg.json --host-map hosts.json --cpu 1 --control-port 0
    python -m bench.server --kind bare --port 0 --cpu 1
    python -m bench.server --kind receiver --expect 1000 --cpu 0

The process pins itself to `--cpu` before importing anything heavy, listens on
127.0.0.1 only, prints one line `READY <port> <control_port>` on stdout once it
answers, and exits cleanly on SIGTERM (the benchmark stops it by its PID).

Kinds:
  fedi      fedi's real application from `fedi.app.create_app(config, host_map=…)`, workers running
            (delivery in `[federation] delivery_processes` children, as `fedi serve` runs it).
            With `--control-port` a second, loopback-only aiohttp app drives it from inside the
            process: POST /post (create_status), POST /tokens (issue_token), GET /stats
            (RSS, queue depths), POST /profile/start|stop (cProfile of the event-loop thread).
  bare      the baseline: POST /inbox reads the body and answers 202 `{}`; GET / answers 200.
  receiver  the fan-out target: POST anything, counted per Host header, answered 202;
            GET /_stats and POST /_reset on the same port.
"""

from __future__ import annotations

import argparse
import os
import sys


def _pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def rss_kb(pid: int | str = "self") -> int:
    """VmRSS of a process in kB, from /proc (0 if unavailable)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.server")
    p.add_argument("--kind", choices=["fedi", "bare", "receiver"], required=True)
    p.add_argument("--cpu", type=int)
    p.add_argument("--port", type=int, default=0, help="bare/receiver: 0 picks a free port")
    p.add_argument("--config", help="fedi: JSON file with the sections config_from_dict takes")
    p.add_argument("--host-map", help="fedi: JSON file {name: ip} for outgoing requests")
    p.add_argument("--control-port", type=int, help="fedi: loopback control app port (0 picks one)")
    p.add_argument("--expect", type=int, default=0, help="receiver: distinct hosts that complete a round")
    return p.parse_args(argv)


async def _listen(app, port: int):  # type: ignore[no-untyped-def]
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    server = site._server  # noqa: SLF001 - the only way to learn the port chosen for 0
    actual = server.sockets[0].getsockname()[1] if server is not None and server.sockets else port
    return runner, actual


def _bare_app():  # type: ignore[no-untyped-def]
    from aiohttp import web

    async def inbox(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({}, status=202)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/inbox", inbox)
    app.router.add_get("/", index)
    return app


def _receiver_app(expect: int):  # type: ignore[no-untyped-def]
    import time

    from aiohttp import web

    state: dict = {}

    def reset() -> None:
        state.update(counts={}, total=0, first_at=None, last_at=None, complete_at=None, arrivals=[])

    reset()

    async def stats(request: web.Request) -> web.Response:
        counts = state["counts"]
        return web.json_response({
            "total": state["total"], "distinct": len(counts), "expect": expect,
            "max_per_host": max(counts.values(), default=0),
            "duplicates": sum(c - 1 for c in counts.values()),
            "first_at": state["first_at"], "last_at": state["last_at"], "complete_at": state["complete_at"],
            "arrivals": state["arrivals"] if request.query.get("arrivals") else None,
        })

    async def do_reset(request: web.Request) -> web.Response:
        reset()
        return web.json_response({})

    async def receive(request: web.Request) -> web.Response:
        await request.read()
        at = time.monotonic()
        host = request.headers.get("Host", "")
        counts = state["counts"]
        counts[host] = counts.get(host, 0) + 1
        state["total"] += 1
        if state["first_at"] is None:
            state["first_at"] = at
        state["last_at"] = at
        if counts[host] == 1:
            state["arrivals"].append(at)
            if expect and len(counts) == expect:
                state["complete_at"] = at
        return web.json_response({}, status=202)

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", do_reset)
    app.router.add_post("/{tail:.*}", receive)
    return app


def _lift_rate_limits(app) -> None:  # type: ignore[no-untyped-def]
    """Mastodon-style API limits (300 calls / 5 min per account) would turn a load test into 429s.

    The limiter still runs and counts every request (its cost is measured); only
    its ceilings are raised out of reach.
    """
    try:
        from dataclasses import fields, replace

        from fedi.api.ratelimit import RATE_LIMITER, Rule
    except ImportError:
        return
    limiter = app.get(RATE_LIMITER)
    if limiter is None:
        return
    lifted = {f.name: Rule(10**12, getattr(limiter.limits, f.name).period)
              for f in fields(limiter.limits) if isinstance(getattr(limiter.limits, f.name), Rule)}
    limiter.limits = replace(limiter.limits, **lifted)


def _control_app(fedi_app):  # type: ignore[no-untyped-def]
    """Drives the fedi instance from inside its own process (loopback only)."""
    import cProfile
    import io
    import pstats
    import time

    from aiohttp import web

    from actors.local import get_local_account
    from fedi.api.auth import issue_token
    from fedi.context import CTX
    from outbox.actions import PostRequest, create_status

    prof: dict = {"p": None}

    async def stats(request: web.Request) -> web.Response:
        ctx = fedi_app[CTX]
        queued = await ctx.db.fetchval("SELECT count(*) FROM inbox_activities WHERE state = 'queued'")
        rows = await ctx.db.fetchall("SELECT state, count(*) AS n FROM deliveries GROUP BY state")
        return web.json_response({
            "rss_kb": rss_kb(), "inbox_queued": queued,
            "deliveries": {r["state"]: r["n"] for r in rows},
            "monotonic": time.monotonic(),
        })

    async def post(request: web.Request) -> web.Response:
        ctx = fedi_app[CTX]
        data = await request.json()
        account = await get_local_account(ctx.db, data["username"])
        if account is None:
            return web.json_response({"error": "no such account"}, status=404)
        t_start = time.monotonic()
        row = await create_status(ctx, account, PostRequest(text=data["text"], visibility=data.get("visibility", "public")))
        t_end = time.monotonic()
        return web.json_response({"status_id": str(row["id"]), "t_start": t_start, "t_committed": t_end})

    async def tokens(request: web.Request) -> web.Response:
        ctx = fedi_app[CTX]
        data = await request.json()
        app_row = await ctx.db.fetchone("SELECT id FROM oauth_apps WHERE client_id = ?", (data["client_id"],))
        account = await get_local_account(ctx.db, data["username"])
        if app_row is None or account is None:
            return web.json_response({"error": "unknown app or account"}, status=404)
        scopes = frozenset(data.get("scopes", "read").split())
        out = []
        for _ in range(min(int(data.get("count", 1)), 5000)):
            token, _refresh, _row = await issue_token(ctx, app_row["id"], account["id"], scopes)
            out.append(token)
        return web.json_response({"tokens": out})

    async def profile_start(request: web.Request) -> web.Response:
        prof["p"] = cProfile.Profile()
        prof["p"].enable()
        return web.json_response({})

    async def profile_stop(request: web.Request) -> web.Response:
        data = await request.json()
        p = prof["p"]
        if p is None:
            return web.json_response({"error": "not profiling"}, status=409)
        p.disable()
        prof["p"] = None
        path = data["path"]
        p.dump_stats(path + ".prof")
        buf = io.StringIO()
        buf.write("# cProfile of the fedi server's event-loop thread (aiosqlite worker threads not included)\n")
        for key in ("tottime", "cumulative"):
            buf.write(f"\n## sorted by {key}\n")
            pstats.Stats(p, stream=buf).strip_dirs().sort_stats(key).print_stats(int(data.get("top", 35)))
        with open(path, "w") as fh:
            fh.write(buf.getvalue())
        return web.json_response({"path": path})

    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_post("/post", post)
    app.router.add_post("/tokens", tokens)
    app.router.add_post("/profile/start", profile_start)
    app.router.add_post("/profile/stop", profile_stop)
    return app


async def _main(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import logging
    import signal

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    runners = []
    control_port = 0
    if args.kind == "fedi":
        from fedi.app import create_app
        from fedi.config import config_from_dict, delivery_process_count

        with open(args.config) as fh:
            config = config_from_dict(json.load(fh))
        host_map = None
        if args.host_map:
            with open(args.host_map) as fh:
                host_map = json.load(fh)
        # delivery as `fedi serve` runs it: [federation] delivery_processes children
        app = create_app(config, host_map=host_map, workers=True,
                         delivery_processes=delivery_process_count(config.federation))
        _lift_rate_limits(app)
        runner, port = await _listen(app, config.server.port)
        runners.append(runner)
        if args.control_port is not None:
            crunner, control_port = await _listen(_control_app(app), args.control_port)
            runners.append(crunner)
    elif args.kind == "bare":
        runner, port = await _listen(_bare_app(), args.port)
        runners.append(runner)
    else:
        runner, port = await _listen(_receiver_app(args.expect), args.port)
        runners.append(runner)
    print(f"READY {port} {control_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for runner in reversed(runners):
        await runner.cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    _pin(args.cpu)
    import asyncio

    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
