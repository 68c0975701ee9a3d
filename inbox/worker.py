"""Applies stored inbox activities, at least once, in arrival order.

Rows are leased (`locked_until`) so a crash mid-handler leaves the row to be
retried once the lease lapses; handlers are idempotent, so a retry is safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from actors.remote import ActorError, get_actor
from fedi.background import BackgroundLoop
from fedi.context import Context
from fedi.jsonutil import loads_strict
from fedi.moderation.domains import is_suspended
from inbox.handlers import HANDLERS
from inbox.parse import ParseError, object_id

log = logging.getLogger("fedi.inbox")

LEASE_SECONDS = 60.0
BATCH = 100
MAX_ATTEMPTS = 5


class InboxWorker(BackgroundLoop):
    """Runs from the app's lifecycle; woken by `ctx.inbox_wakeup` after a commit that stored an activity."""

    name = "fedi-inbox-worker"

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        self.ctx = ctx
        self.clock: Callable[[], float] = time.time

    def wakeup(self) -> asyncio.Event:
        return self.ctx.inbox_wakeup

    def busy(self, result: int | None) -> bool:
        return bool(result)  # another batch at once, letting requests in between (same event loop)

    async def _lease(self) -> list[tuple[int, str, str, int]]:
        at = self.clock()
        async with self.ctx.db.write() as tx:
            rows = await tx.fetchall(
                "SELECT id, actor_uri, body, attempts FROM inbox_activities"
                " WHERE state = 'queued' AND locked_until <= ? ORDER BY id LIMIT ?",
                (at, BATCH),
            )
            await tx.executemany(
                "UPDATE inbox_activities SET locked_until = ?, attempts = attempts + 1 WHERE id = ?",
                [(at + LEASE_SECONDS, r["id"]) for r in rows],
            )
        return [(r["id"], r["actor_uri"], r["body"], r["attempts"] + 1) for r in rows]

    async def run_once(self) -> int:
        """Apply every queued activity once; returns how many were handled.

        The outcome of each activity goes through the database's group commit
        (`Database.enqueue`): no transaction of its own, it rides in the next group with
        whatever else is queued (the inbox's own inserts during a burst). The batch
        ends only once every outcome is committed, so the next lease cannot pick up a
        row whose outcome is still in flight.
        """
        rows = await self._lease()
        outcomes: list[asyncio.Future[list[int]]] = []
        for row_id, actor_uri, body, attempts in rows:
            state, result = await self._apply(actor_uri, body)
            if state == "errored" and attempts < MAX_ATTEMPTS:
                continue  # the lease lapses and the row is retried
            outcomes.append(self.ctx.db.enqueue([(
                "UPDATE inbox_activities SET state = ?, result = ?, processed_at = ? WHERE id = ?",
                (state, result[:500], self.clock(), row_id),
            )]))
        for failure in await asyncio.gather(*outcomes, return_exceptions=True):
            if isinstance(failure, BaseException):
                raise failure  # the row keeps its lease and is retried once it lapses
        return len(rows)

    async def _apply(self, actor_uri: str, body: str) -> tuple[str, str]:
        activity = loads_strict(body)
        handler = HANDLERS.get(activity.get("type"))
        if handler is None:
            return "ignored", f"ignored: unsupported type {str(activity.get('type'))[:40]}"
        if await is_suspended(self.ctx, *_involved(actor_uri, activity)):
            # Stored before the block, or carrying a blocked domain's content (relay, boost, reply: THREATS A11).
            return "ignored", "ignored: involves a blocked domain"
        try:
            actor = await get_actor(self.ctx, actor_uri)
            if actor["gone_at"] is not None:
                # Deleted (Delete of itself, or 410): a late or replayed activity must not bring content back.
                return "ignored", "ignored: the actor is gone"
            result = await handler(self.ctx, activity, actor)
        except (ActorError, ParseError) as exc:
            return "ignored", f"ignored: {exc}"
        except Exception as exc:
            log.exception("inbox handler failed for %s", activity.get("id"))
            return "errored", f"{type(exc).__name__}: {exc}"
        if result.startswith("held"):
            return "held", result  # kept for an admin to release or drop (keyword rules)
        return ("processed" if result.startswith("processed") else "ignored"), result


def _involved(actor_uri: str, activity: dict[str, Any]) -> list[str]:
    """The ids an activity brings in: its actor, its object, and an embedded object's author and parent."""
    obj = activity.get("object")
    ids = [actor_uri, object_id(obj)]
    if isinstance(obj, dict):
        ids += [object_id(obj.get("attributedTo")), object_id(obj.get("inReplyTo"))]
    return [i for i in ids if isinstance(i, str)]
