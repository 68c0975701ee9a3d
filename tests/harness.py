"""Real fedi instances on 127.0.0.1 for tests.

Each instance gets its own name (`alpha.test`, `beta.test`, …) and port; the
names resolve to 127.0.0.1 only through the outgoing client's test host map, so
ids live on different hosts and origin checks mean something. Loopback is
reachable only because the test config allows 127.0.0.0/8 — 169.254.169.254 and
everything else private stays refused.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from fedi.app import DELIVERY_WORKER, INBOX_WORKER, JOB_RUNNER, create_app
from fedi.config import Config, config_from_dict
from fedi.context import CTX, Context


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config(tmp: Path, name: str, port: int, **sections: dict[str, Any]) -> Config:
    data: dict[str, Any] = {
        "instance": {"domain": f"{name}:{port}", "scheme": "http", "name": name},
        "server": {"host": "127.0.0.1", "port": port},
        "database": {"path": str(tmp / f"{name}.sqlite3")},
        "media": {"path": str(tmp / f"{name}-media")},
        "federation": {"allow_private_networks": ["127.0.0.0/8"], "request_timeout_seconds": 5.0},
    }
    for section, values in sections.items():
        data.setdefault(section, {}).update(values)
    return config_from_dict(data)


@dataclass
class Instance:
    name: str
    config: Config
    host_map: dict[str, str]
    workers: bool = True
    runner: web.AppRunner | None = None
    app: web.Application | None = None
    session: aiohttp.ClientSession | None = field(default=None, repr=False)

    @property
    def port(self) -> int:
        return self.config.server.port

    @property
    def base(self) -> str:
        return self.config.base_url

    @property
    def ctx(self) -> Context:
        assert self.app is not None
        return self.app[CTX]

    def url(self, path: str) -> str:
        """A URL for this instance that a plain client (no host map) can reach."""
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> None:
        self.app = create_app(self.config, host_map=self.host_map, workers=self.workers)
        self.runner = web.AppRunner(self.app, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.session = aiohttp.ClientSession()

    async def stop(self) -> None:
        if self.session:
            await self.session.close()
        if self.runner:
            await self.runner.cleanup()
        self.runner = self.app = self.session = None

    async def drain(self, rounds: int = 50) -> None:
        """Step this instance's inbox and delivery queues until both are idle (bounded)."""
        assert self.app is not None
        for _ in range(rounds):
            worked = await self.app[INBOX_WORKER].run_once()
            worked += await self.app[DELIVERY_WORKER].run_once()
            worked += await self.app[JOB_RUNNER].run_once()
            if not worked:
                return
        raise AssertionError(f"{self.name}: queues still busy after {rounds} rounds")


class Network:
    """A set of instances that can reach each other by name."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host_map: dict[str, str] = {}
        self.instances: list[Instance] = []

    async def add(self, name: str, *, workers: bool = False, **sections: dict[str, Any]) -> Instance:
        port = free_port()
        self.host_map[name] = "127.0.0.1"
        inst = Instance(name, test_config(self.tmp, name, port, **sections), self.host_map, workers=workers)
        await inst.start()
        self.instances.append(inst)
        return inst

    async def drain(self, rounds: int = 20) -> None:
        """Step every instance until a whole pass does no work."""
        for _ in range(rounds):
            busy = 0
            for inst in self.instances:
                if inst.app is None:
                    continue
                busy += await inst.app[INBOX_WORKER].run_once()
                busy += await inst.app[DELIVERY_WORKER].run_once()
                busy += await inst.app[JOB_RUNNER].run_once()
            if not busy:
                return
        raise AssertionError("network still busy")

    async def close(self) -> None:
        for inst in self.instances:
            await inst.stop()
        await asyncio.sleep(0)
