"""Background loops: a task that calls `run_once()` until the instance stops.

Workers are started and stopped from the app's lifecycle and expose
`run_once()` so tests can step them without sleeping. A pass that did work is
followed at once by another; an idle one waits for the wake-up event (when the
worker has one) or the polling interval, whichever comes first. The event is
cleared before each pass, so work queued during a pass is not left waiting.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("fedi.background")


class BackgroundLoop:
    #: Task name, for logs and debugging.
    name = "fedi-background"
    #: Longest wait between passes when idle (seconds).
    interval = 1.0

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> Any:
        raise NotImplementedError

    def wakeup(self) -> asyncio.Event | None:
        """An event that ends an idle wait early (set after a commit that queued work)."""
        return None

    def busy(self, result: Any) -> bool:
        """Whether a pass found work, so the next one should start at once."""
        return False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            event = self.wakeup()
            if event is not None:
                event.clear()
            try:
                result = await self.run_once()
            except Exception:
                log.exception("%s: pass failed", self.name)
                result = None
            if self.busy(result):
                await asyncio.sleep(0)
                continue
            if event is None:
                await asyncio.sleep(self.interval)
                continue
            try:
                async with asyncio.timeout(self.interval):
                    await event.wait()
            except TimeoutError:
                pass
