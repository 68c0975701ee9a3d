"""Delivery in separate worker processes (PERFORMANCE.md, lesson 1).

RSA signing is most of a delivery's CPU and a thread cannot take it off the
event loop (the GIL), so `fedi serve` runs `[federation] delivery_processes`
children, each `python -m outbox.delivery_process` with its own database
connections (`SyncDatabase`), HttpClient and signer cache running an
`outbox.delivery.DeliveryWorker`. They lease from the one SQLite file (WAL; a
lease is a write transaction, so no row is leased twice) and scale with cores;
the web server only queues rows and wakes them.

The parent (`DeliveryProcesses`, started by `fedi.app.create_app`):

* spawns the children (a second after its own start, so as not to slow it)
  and hands each its configuration as one JSON line on its stdin, which then
  stays open as the *wake-up pipe*: a commit that queued
  deliveries (`ctx.wake_delivery()`) writes one byte to every child, so a new
  post leaves at once instead of at the next poll (children still poll every
  `POLL_SECONDS` for rows queued by the CLI and for retries coming due);
* splits `delivery_concurrency` among them; the per-host limit needs no
  splitting because it is counted on the table, across processes
  (`outbox.delivery._DUE`);
* restarts a child that died (with a growing pause), and on shutdown closes
  the pipes, waits, then SIGTERMs and finally SIGKILLs stragglers by PID.

A child never outlives its parent: end of file on the pipe (the parent closed
it, or died and the kernel closed it — SIGKILL included) stops it, and so does
a change of `os.getppid()` (checked every second, in case the pipe leaked).
Unfinished sends keep their lease and are retried when it runs out
(at-least-once, as after any crash).

`FEDI_DELIVERY_CPUS` (Linux), e.g. "0,1", sets the children's CPU affinity;
without it they inherit the server's. The benchmark uses it to pin only the
web server to one core. `FEDI_DELIVERY_PROFILE=PREFIX` makes each child write
a cProfile of its whole life to PREFIX.INDEX.prof when it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

log = logging.getLogger("fedi.delivery")

START_DELAY = 1.0  # after the server's start, before the children's
STOP_SECONDS = 5.0  # a child's graceful stop after its pipe closes, before SIGTERM (then SIGKILL)
WRITE_LOCK_SECONDS = 10.0  # a child gives up waiting for the write lock (the round fails, is retried) after this
RESTART_FIRST, RESTART_MAX = 1.0, 60.0  # pause before restarting a child that died, doubling
PARENT_CHECK_SECONDS = 1.0
CPUS_ENV = "FEDI_DELIVERY_CPUS"
PROFILE_ENV = "FEDI_DELIVERY_PROFILE"  # a path prefix: each child writes PREFIX.INDEX.prof (cProfile) on exit
WAKE = b"\x01"
_MAX_BUFFERED = 64  # wake-up bytes pending to a child that is not reading: more add nothing


def shares(total: int, count: int) -> list[int]:
    """`total` concurrency split into `count` shares that differ by at most one (each at least 1)."""
    base, extra = divmod(max(total, count), count)
    return [base + (1 if i < extra else 0) for i in range(count)]


def parse_cpus(text: str) -> set[int]:
    """"0,2-3" -> {0, 2, 3}; ValueError on anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if lo < 0 or hi < lo:
            raise ValueError(f"bad CPU range {part!r}")
        cpus.update(range(lo, hi + 1))
    if not cpus:
        raise ValueError("no CPUs")
    return cpus


# ------------------------------------------------------------------ parent side


class _Child:
    def __init__(self, index: int, concurrency: int) -> None:
        self.index = index
        self.concurrency = concurrency
        self.proc: asyncio.subprocess.Process | None = None
        self.task: asyncio.Task[None] | None = None
        self.starts = 0


class DeliveryProcesses:
    """The delivery children of one server process; `start()` inside its event loop, `stop()` on the way out."""

    def __init__(self, config: Any, count: int, host_map: dict[str, str] | None = None) -> None:
        if count < 1:
            raise ValueError("at least one delivery process")
        self.config = config
        self.host_map = host_map
        self._children = [_Child(i, c) for i, c in enumerate(shares(config.federation.delivery_concurrency, count))]
        self._stopping = False
        self._forward: asyncio.Task[None] | None = None

    @property
    def pids(self) -> list[int]:
        """PIDs of the children running now."""
        return [c.proc.pid for c in self._children if c.proc is not None and c.proc.returncode is None]

    def _spec(self, child: _Child) -> bytes:
        sections = dataclasses.asdict(self.config)
        base_dir = sections.pop("base_dir")
        from fedi.app import user_agent

        spec = {
            "config": sections, "base_dir": base_dir, "host_map": self.host_map,
            "user_agent": user_agent(self.config),
            "concurrency": child.concurrency, "index": child.index, "parent": os.getpid(),
        }
        return json.dumps(spec).encode("utf-8") + b"\n"

    async def start(self, wakeup: asyncio.Event | None = None, delay: float = START_DELAY) -> None:
        """Spawn every child after `delay` seconds; with `wakeup` (the context's delivery event) forward its sets.

        The delay keeps the children's start (imports: a few hundred ms of CPU) from
        competing with the server's own; rows queued meanwhile wait for them.
        """
        for child in self._children:
            child.task = asyncio.create_task(self._supervise(child, delay), name=f"fedi-delivery-process-{child.index}")
        if wakeup is not None:
            self._forward = asyncio.create_task(self._forward_wakeups(wakeup), name="fedi-delivery-wakeups")

    async def _spawn(self, child: _Child) -> None:
        child.starts += 1
        # This very checkout first on the child's path, however the server found it.
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "outbox.delivery_process", env=env,
            stdin=asyncio.subprocess.PIPE, stdout=None, stderr=None,  # logs go where the server's go
        )
        assert proc.stdin is not None
        proc.stdin.write(self._spec(child))
        child.proc = proc
        log.info("delivery process %d started (pid %d, %d concurrent)", child.index, proc.pid, child.concurrency)

    async def _supervise(self, child: _Child, delay: float) -> None:
        """Start the child, and restart it (after a pause that grows while it keeps dying) when it exits."""
        await asyncio.sleep(delay)
        pause = RESTART_FIRST
        while not self._stopping:
            try:
                await self._spawn(child)
            except OSError:
                log.exception("cannot start delivery process %d; retrying in %.0f s", child.index, pause)
            else:
                assert child.proc is not None
                started = time.monotonic()
                code = await child.proc.wait()
                if self._stopping:
                    return
                if time.monotonic() - started > 10 * RESTART_MAX:  # it had been running fine
                    pause = RESTART_FIRST
                log.error("delivery process %d (pid %d) exited with %s; restarting in %.0f s",
                          child.index, child.proc.pid, code, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, RESTART_MAX)

    def wake(self) -> None:
        """Tell every child that deliveries were committed (one byte down each pipe)."""
        for child in self._children:
            proc = child.proc
            if proc is None or proc.returncode is not None or proc.stdin is None:
                continue
            transport = proc.stdin.transport
            if transport.is_closing() or transport.get_write_buffer_size() >= _MAX_BUFFERED:
                continue
            with contextlib.suppress(OSError, RuntimeError):
                proc.stdin.write(WAKE)

    async def _forward_wakeups(self, wakeup: asyncio.Event) -> None:
        while True:
            await wakeup.wait()
            wakeup.clear()
            self.wake()

    async def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Close every pipe (the children finish and exit), then SIGTERM, then SIGKILL by PID."""
        self._stopping = True
        if self._forward is not None:
            self._forward.cancel()
            await asyncio.gather(self._forward, return_exceptions=True)
        for child in self._children:
            if child.task is not None:
                child.task.cancel()
        await asyncio.gather(*(c.task for c in self._children if c.task is not None), return_exceptions=True)
        procs = [c.proc for c in self._children if c.proc is not None]
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
        for sig, wait in ((None, timeout), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            alive = [p for p in procs if p.returncode is None]
            if not alive:
                break
            if sig is not None:
                for proc in alive:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in alive)), wait)
        for child in self._children:
            if child.proc is not None and child.proc.returncode not in (0, None):
                log.warning("delivery process %d exited with %s", child.index, child.proc.returncode)


# ------------------------------------------------------------------ child side


class _SyncTx:
    """`fedi.db.Tx`'s interface (what delivery uses of it) over a plain sqlite3 connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.after_commit: list[Any] = []

    async def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        return self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Any) -> None:
        self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return self._conn.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self._conn.execute(sql, params).fetchall()


class SyncDatabase:
    """`fedi.db.Database`'s interface (what delivery uses of it), run synchronously on the event loop.

    A delivery process holds the GIL for a whole RSA signature at a time, so with
    aiosqlite every statement of a transaction would wait for its thread to get
    the GIL back — and the SQLite write lock, which the server and the other
    delivery processes want, would be held across those waits (one writer kept
    the lock so busy that another barely got it). Here a transaction runs from
    BEGIN to COMMIT without yielding: the lock is held only for the SQL itself
    (about a millisecond for a lease or a batch of outcomes). Taking the lock
    never blocks the loop: BEGIN IMMEDIATE fails at once when another process
    writes, and is retried after a short async sleep. Reads (WAL) do not wait
    for writers; a separate connection with a busy timeout covers the rare
    moments they must.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._writer = self._connect(path, busy_ms=0)
        self._reader = self._connect(path, busy_ms=5000)
        self._lock = asyncio.Lock()

    @staticmethod
    def _connect(path: str, busy_ms: int) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", f"busy_timeout={busy_ms}"):
            conn.execute(f"PRAGMA {pragma}")
        return conn

    async def close(self) -> None:
        self._reader.close()
        self._writer.close()

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[_SyncTx]:
        async with self._lock:
            deadline = time.monotonic() + WRITE_LOCK_SECONDS
            pause = 0.0005
            while True:
                try:
                    self._writer.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                        raise
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.01)
            tx = _SyncTx(self._writer)
            try:
                yield tx
                self._writer.execute("COMMIT")
            except BaseException:
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise
        for callback in tx.after_commit:
            callback()

    async def fetchone(self, sql: str, params: Any = ()) -> sqlite3.Row | None:
        return self._reader.execute(sql, params).fetchone()  # type: ignore[no-any-return]

    async def fetchall(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return self._reader.execute(sql, params).fetchall()

    async def fetchval(self, sql: str, params: Any = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


def _read_spec(fd: int = 0) -> tuple[dict[str, Any], bytes]:
    """The JSON line the parent writes first, and whatever followed it (wake-ups)."""
    buf = bytearray()
    while b"\n" not in buf:
        chunk = os.read(fd, 65536)
        if not chunk:
            raise SystemExit("delivery process: no configuration on stdin")
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    return json.loads(line), rest


class _WakePipe(asyncio.Protocol):
    def __init__(self, wake: Any, closed: asyncio.Event) -> None:
        self.wake = wake
        self.closed = closed

    def data_received(self, data: bytes) -> None:
        self.wake()

    def eof_received(self) -> bool:
        self.closed.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_SECONDS)
    log.warning("delivery process %d: parent %d is gone", os.getpid(), parent)
    stop.set()


async def run_child(spec: dict[str, Any], leftover: bytes = b"") -> int:
    from actors.keys import KeyCache
    from fedi.config import config_from_dict
    from fedi.context import Context
    from fedi.http_client import HttpClient, Signer
    from fedi.signatures import preload_crypto
    from outbox.delivery import DeliveryWorker

    config = config_from_dict(spec["config"], base_dir=spec["base_dir"])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(_watch_parent(spec["parent"], stop))
    db = SyncDatabase(config.database_path)  # the server created and migrated it before starting us
    http = HttpClient(config.federation, spec["user_agent"], host_map=spec.get("host_map"))
    await http.start()
    # Delivery signs as each activity's sender; the instance actor (created by the parent
    # before it started us) only completes the Context.
    row = await db.fetchone(
        "SELECT id, public_key_id, private_key_pem FROM accounts"
        " WHERE actor_type = 'Application' AND domain IS NULL ORDER BY id LIMIT 1"
    )
    if row is None:
        raise SystemExit("delivery process: the database has no instance actor")
    ctx = Context(
        config=config, db=db, http=http, keys=KeyCache(config.federation.key_cache_seconds),  # type: ignore[arg-type]
        instance_signer=Signer(row["public_key_id"], row["private_key_pem"]) if row["private_key_pem"] else None,
        instance_actor_id=row["id"],
    )
    preload_crypto()  # signing is this process's work: load `cryptography` now (tens of ms), not at the first delivery
    await loop.connect_read_pipe(lambda: _WakePipe(ctx.wake_delivery, stop), os.fdopen(0, "rb", buffering=0))
    if leftover:
        ctx.wake_delivery()
    worker = DeliveryWorker(ctx, concurrency=int(spec["concurrency"]))
    worker.start()
    log.debug("delivery process %d (pid %d) running", spec["index"], os.getpid())
    try:
        await stop.wait()
    finally:
        watcher.cancel()
        await worker.stop()
        await http.close()
        await db.close()
    return 0


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    spec, leftover = _read_spec()
    cpus = os.environ.get(CPUS_ENV)
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, parse_cpus(cpus))
    level = os.environ.get("FEDI_LOG", "INFO").upper()
    logging.basicConfig(level=level if isinstance(logging.getLevelName(level), int) else "INFO",
                        format="%(asctime)s %(name)s %(message)s")
    if os.getppid() != spec["parent"]:  # the parent died before we got here
        return 0
    profile = os.environ.get(PROFILE_ENV)
    if not profile:
        return _run(run_child(spec, leftover))
    import cProfile

    profiler = cProfile.Profile()
    try:
        return profiler.runcall(_run, run_child(spec, leftover))
    finally:
        profiler.dump_stats(f"{profile}.{spec['index']}.prof")


def _run(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop where it is installed (not on Windows): connecting, sending and reading a
    delivery costs ~40 % less CPU there than on asyncio's own loop (bench/README.md)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


if __name__ == "__main__":
    sys.exit(main())
