"""Real `fedi` processes for tests: the CLI as a user runs it, and `fedi serve` on 127.0.0.1.

Each instance gets its own port and so its own domain (`127.0.0.1:PORT`): ids
live on different origins, and peers that cannot use the harness's host map
(another process, fediverse-pasture) still reach it. Loopback is reachable
only because the generated config allows 127.0.0.0/8.

Processes are stopped by the PID we started — SIGTERM, then SIGKILL after a
bounded wait — and `FediProcesses` stops every one it started on exit, so a
failing test leaves nothing running. Output goes to files (never pipes, which
block a chatty server once full) and is attached to assertion messages.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
CLI_TIMEOUT = 30.0

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fedi_env(**extra: str) -> dict[str, str]:
    """The environment for a `fedi` child: no inherited FEDI_CONFIG, this checkout importable."""
    env = {k: v for k, v in os.environ.items() if k != "FEDI_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def run_cli(*args: str, config: Path | None = None, stdin: str | None = None, cwd: Path | None = None,
            env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """Run `fedi [--config PATH] ARGS...` to completion (bounded) and return its result."""
    argv = [sys.executable, "-m", "fedi.cli"]
    if config is not None:
        argv += ["--config", str(config)]
    return subprocess.run(
        [*argv, *args], input=stdin if stdin is not None else "", capture_output=True, text=True,
        cwd=cwd, env=env or fedi_env(), timeout=timeout, check=False,
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.1,
             detail: Callable[[], str] | None = None) -> T:
    """Poll `check` until it returns something truthy; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


async def wait_for_async(check: Callable[[], T | Awaitable[T]], timeout: float, what: str, interval: float = 0.1,
                         detail: Callable[[], str] | None = None) -> T:
    """`wait_for` for async tests: the event loop (and in-process peers) keep running while we wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            extra = f"\n{detail()}" if detail else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        await asyncio.sleep(interval)


class FediProcess:
    """One instance: its config and database in a directory, and its `fedi serve` child (if running)."""

    def __init__(self, root: Path, name: str, port: int | None = None, **sections: dict[str, Any]) -> None:
        self.name = name
        self.port = port or free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.dir / "fedi.sqlite3"
        data: dict[str, dict[str, Any]] = {
            "instance": {"domain": self.domain, "scheme": "http", "name": name},
            "server": {"host": "127.0.0.1", "port": self.port},
            "database": {"path": str(self.db_path)},
            "federation": {"allow_private_networks": ["127.0.0.0/8"], "request_timeout_seconds": 5.0},
        }
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        self.config_path = write_config(self.dir / "config.toml", data)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base(self) -> str:
        return f"http://{self.domain}"

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def _out(self, stream: str, start: int | None = None) -> Path:
        return self.dir / f"serve{self.starts if start is None else start}.{stream}"

    def stdout(self) -> str:
        return self._out("stdout").read_text(errors="replace") if self.starts else ""

    def logs(self, limit: int = 6000) -> str:
        """The server's stderr from every start, for failure messages (the tail, if long)."""
        text = "".join(
            f"--- {self.name} serve #{n} stderr ---\n" + self._out("stderr", n).read_text(errors="replace")
            for n in range(1, self.starts + 1) if self._out("stderr", n).exists()
        )
        return text[-limit:]

    def cli(self, *args: str, stdin: str | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, config=self.config_path, stdin=stdin, cwd=self.dir, timeout=timeout)

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a CLI command that must succeed; returns its stdout."""
        result = self.cli(*args, stdin=stdin)
        assert result.returncode == 0, f"fedi {' '.join(args)} -> {result.returncode}\n{result.stderr}"
        return result.stdout

    def create_account(self, name: str, *flags: str, password: str = "correct horse battery") -> None:
        self.ok("account", "create", name, *flags, stdin=password + "\n")

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start `fedi serve` and wait (bounded) until its port accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        self.starts += 1
        with self._out("stdout").open("wb") as out, self._out("stderr").open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fedi.cli", "--config", str(self.config_path), "serve"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.dir, env=fedi_env(),
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name}: fedi serve exited with {self.proc.returncode}\n{self.logs()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() >= deadline:
                self.stop()
                raise AssertionError(f"{self.name}: port {self.port} not answering after {timeout:.0f}s\n{self.logs()}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM our child, SIGKILL it if it does not exit in time; returns its exit code."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(STOP_TIMEOUT)

    def kill(self) -> None:
        """SIGKILL our child at once (a crash: no cleanup, no final commit)."""
        proc, self.proc = self.proc, None
        assert proc is not None and proc.poll() is None, f"{self.name} is not running"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)

    @contextmanager
    def db(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection to this instance's SQLite file (safe while the server writes)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
        conn.row_factory = sqlite3.Row
        with closing(conn):
            yield conn

    def query(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        with self.db() as conn:
            return conn.execute(sql, params).fetchall()


class FediProcesses:
    """Instances under one directory; every server started is stopped on exit, even after a failure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.instances: list[FediProcess] = []

    def add(self, name: str, **sections: dict[str, Any]) -> FediProcess:
        inst = FediProcess(self.root, name, **sections)
        self.instances.append(inst)
        return inst

    def close(self) -> None:
        for inst in self.instances:
            inst.stop()

    def __enter__(self) -> "FediProcesses":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def logs(self) -> str:
        return "\n".join(inst.logs(3000) for inst in self.instances)
