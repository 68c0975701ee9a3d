"""What every scenario shares: sizes, cores, server subprocesses, percentiles, the OAuth flow."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
FEDI_HOST = "fedi.bench"


class BenchError(Exception):
    """A scenario that could not be measured; the message goes into the results."""


# ---------------------------------------------------------------- cores


@dataclass(frozen=True)
class Cores:
    load: int | None  # the benchmark process and its clients
    server: int | None  # every measured server subprocess
    all: tuple[int, ...]

    @property
    def separate(self) -> bool:
        return self.load is not None and self.server is not None and self.load != self.server


def pick_cores() -> Cores:
    """Two different cores when there are two; otherwise no pinning at all."""
    try:
        cpus = tuple(sorted(os.sched_getaffinity(0)))
    except AttributeError:
        return Cores(None, None, ())
    if len(cpus) >= 2:
        return Cores(cpus[0], cpus[1], cpus)
    return Cores(None, None, cpus)


def pin_self(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def unpin_self(cores: Cores) -> None:
    if cores.all:
        os.sched_setaffinity(0, set(cores.all))


# ---------------------------------------------------------------- machine


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import aiohttp
    import cryptography

    return {
        "nproc": os.cpu_count(),
        "cpu_model": model or platform.processor(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "cryptography": cryptography.__version__,
        "sqlite": __import__("sqlite3").sqlite_version,
        "platform": platform.platform(),
    }


# ---------------------------------------------------------------- numbers


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(q / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def summary_ms(latencies: list[float]) -> dict[str, float]:
    return {
        "p50_ms": ms(percentile(latencies, 50)),
        "p90_ms": ms(percentile(latencies, 90)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)) if latencies else float("nan"),
        "samples": len(latencies),
    }


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    if not n:
        return float("nan")
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------- subprocesses


def compile_sources() -> None:
    """Byte-compile this checkout as `pip install` does for an installed fedi.

    Every measured server is a fresh interpreter; without .pyc files (an editable
    install where PYTHONDONTWRITEBYTECODE=1 is set, as on this project's CI
    machines) each would compile fedi's ~110 modules from source first, ~0.2 s
    of CPU that no installed instance spends.
    """
    import compileall

    for package in ("fedi", "actors", "inbox", "outbox", "bench"):
        compileall.compile_dir(str(REPO / package), quiet=1)


def child_env() -> dict[str, str]:
    """The environment for subprocesses: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


LIVE: set["Server"] = set()  # started and not yet stopped; __main__ stops leftovers on the way out


@dataclass(eq=False)
class Server:
    """A server subprocess (`python -m bench.server …`), stopped by its own PID."""

    name: str
    args: list[str]
    log_path: Path
    cpu: int | None = None
    env: dict[str, str] = field(default_factory=dict)  # on top of child_env()
    proc: asyncio.subprocess.Process | None = None
    port: int = 0
    control_port: int = 0
    _log: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> "Server":
        self._log = open(self.log_path, "ab")
        argv = [sys.executable, "-m", "bench.server", *self.args]
        if self.cpu is not None:
            argv += ["--cpu", str(self.cpu)]
        self.proc = await asyncio.create_subprocess_exec(
            *argv, cwd=str(REPO), env={**child_env(), **self.env}, stdout=asyncio.subprocess.PIPE, stderr=self._log,
            stdin=asyncio.subprocess.DEVNULL,
        )
        LIVE.add(self)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop()
            raise BenchError(f"{self.name}: not ready after {timeout:.0f} s; {self.log_tail()}") from None
        parts = line.decode(errors="replace").split()
        if len(parts) != 3 or parts[0] != "READY":
            await self.stop()
            raise BenchError(f"{self.name}: failed to start; {self.log_tail()}")
        self.port, self.control_port = int(parts[1]), int(parts[2])
        return self

    def log_tail(self, chars: int = 600) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "log: " + " | ".join(text[-chars:].splitlines()) if text.strip() else "(empty log)"

    def rss_kb(self) -> int:
        from bench.server import rss_kb

        return rss_kb(self.pid)

    def cpu_s(self) -> float:
        """CPU seconds (user + system, all threads) the server and its running children have used so far.

        fedi's delivery processes are children of the server: their work is the server's.
        """
        return proc_cpu_s(self.pid) + sum(proc_cpu_s(pid) for pid in child_pids(self.pid))

    def children_rss_kb(self) -> int:
        """VmRSS of the server's children (fedi's delivery processes), summed."""
        from bench.server import rss_kb

        return sum(rss_kb(pid) for pid in child_pids(self.pid))

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
        """Signal our own child by PID; SIGKILL it if it has not exited in `timeout`."""
        proc, self.proc = self.proc, None
        LIVE.discard(self)
        if proc is not None:
            if proc.returncode is None:
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    await asyncio.wait_for(proc.wait(), timeout)
                except TimeoutError:
                    try:
                        os.kill(proc.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    await proc.wait()
            rc = proc.returncode
        else:
            rc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return rc


def child_pids(parent: int) -> list[int]:
    """PIDs whose parent is `parent` (from /proc; empty where there is none)."""
    found = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == parent:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def proc_cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_fedi_config(tmp: Path, port: int, db_path: Path, **federation: Any) -> Path:
    """The JSON config bench.server feeds to fedi.config.config_from_dict."""
    data = {
        "instance": {"domain": f"{FEDI_HOST}:{port}", "scheme": "http", "name": "bench"},
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"path": str(db_path)},
        "federation": {"allow_private_networks": ["127.0.0.0/8"], **federation},
    }
    path = tmp / "config.json"
    path.write_text(json.dumps(data))
    return path


def loopback_map(names: Any) -> dict[str, str]:
    """fedi's test resolver map: every seeded host name (and fedi's own) -> 127.0.0.1.

    Nothing the benchmark seeds resolves through DNS, so even an unexpected
    fetch by fedi stays on loopback (and is refused there).
    """
    mapping = {name: "127.0.0.1" for name in names}
    mapping[FEDI_HOST] = "127.0.0.1"
    return mapping


def fedi_server(tmp: Path, cores: Cores, config: Path, host_map: dict[str, str] | None = None,
                control: bool = True, delivery_cpus: tuple[int, ...] | None = None) -> Server:
    """fedi pinned to the server core; its delivery processes too unless `delivery_cpus` says otherwise."""
    args = ["--kind", "fedi", "--config", str(config)]
    if host_map is not None:
        hm = tmp / "host_map.json"
        hm.write_text(json.dumps(host_map))
        args += ["--host-map", str(hm)]
    if control:
        args += ["--control-port", "0"]
    env = {"FEDI_DELIVERY_CPUS": ",".join(map(str, delivery_cpus))} if delivery_cpus else {}
    return Server("fedi", args, tmp / "fedi.log", cores.server, env=env)


async def control(server: Server, method: str, path: str, payload: Any = None, timeout: float = 120.0) -> Any:
    import aiohttp

    url = f"http://127.0.0.1:{server.control_port}{path}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
        async with s.request(method, url, json=payload) as resp:
            body = await resp.json()
            if resp.status >= 400:
                raise BenchError(f"control {path}: HTTP {resp.status} {body}")
            return body


async def wait_inbox_drained(server: Server, limit_s: float) -> int:
    """Wait (bounded) until fedi's inbox worker has applied everything; returns what is left."""
    deadline = time.monotonic() + limit_s
    left = -1
    while time.monotonic() < deadline:
        left = (await control(server, "GET", "/stats"))["inbox_queued"]
        if not left:
            return 0
        await asyncio.sleep(0.25)
    return left


# ---------------------------------------------------------------- OAuth (the real flow)

REDIRECT = "https://app.example/callback"


async def register_app(base: str, scopes: str = "read write follow push") -> dict[str, Any]:
    import aiohttp

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/api/v1/apps", data={
            "client_name": "bench", "redirect_uris": REDIRECT, "scopes": scopes, "website": "https://app.example",
        }) as resp:
            if resp.status != 200:
                raise BenchError(f"POST /api/v1/apps: HTTP {resp.status}")
            return dict(await resp.json())


async def user_token(base: str, username: str, password: str, scopes: str = "read write follow push") -> str:
    """Register an app, sign in through /oauth/authorize, exchange the code: what a client app does."""
    import aiohttp

    app = await register_app(base, scopes)
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{base}/oauth/authorize", data={
            "client_id": app["client_id"], "redirect_uri": REDIRECT, "scope": scopes, "response_type": "code",
            "username": username, "password": password, "decision": "allow", "state": "bench",
        }, allow_redirects=False) as resp:
            if resp.status != 302:
                raise BenchError(f"POST /oauth/authorize: HTTP {resp.status}")
            code = parse_qs(urlsplit(resp.headers["Location"]).query)["code"][0]
        async with s.post(f"{base}/oauth/token", data={
            "grant_type": "authorization_code", "code": code, "client_id": app["client_id"],
            "client_secret": app["client_secret"], "redirect_uri": REDIRECT,
        }) as resp:
            if resp.status != 200:
                raise BenchError(f"POST /oauth/token: HTTP {resp.status}")
            return str((await resp.json())["access_token"])


# ---------------------------------------------------------------- run context


@dataclass
class Run:
    """What a scenario gets: mode, cores, a private temp dir, and what earlier scenarios left."""

    smoke: bool
    cores: Cores
    tmp: Path
    profile: bool = False
    results_dir: Path = RESULTS
    shared: dict[str, Any] = field(default_factory=dict)  # e.g. fanout leaves its RSS for footprint

    def log(self, message: str) -> None:
        print(f"  · {message}", flush=True)

    def size(self, full: Any, smoke: Any) -> Any:
        return smoke if self.smoke else full

    def scratch(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path
