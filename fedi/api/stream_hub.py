"""The streaming hub: one EventBus listener per instance feeds every live connection.

Connections (WebSocket or server-sent events) register stream keys such as
`("user", 42)` or `("hashtag", "cats")`. The hub's one worker task takes
committed events in order, asks the database once per event which keys should
see it (`fedi.api.stream_audience`), builds the status JSON once with no viewer
state (as Mastodon renders streamed statuses), and appends one frame per key to
each connection's small bounded queue. Only listeners who block or mute the
author are skipped, and only listeners who have filters get a copy judged for
them. A client too slow to keep up is dropped, never buffered without end;
revoking a token closes its connections at once (THREATS O4).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

from fedi.api import conversations, entities, notifications
from fedi.api.auth import Auth
from fedi.api.stream_audience import (
    DIRECT, HASHTAG, HASHTAG_LOCAL, LIST, USER, Key, audience, excluded, with_filters,
)
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.events import Event
from fedi.filtering import active_filters, match
from fedi.jsonutil import dumps_str

log = logging.getLogger("fedi.streaming")

NOTIFICATIONS = "user:notification"
#: Which of the listener's filters apply on each stream (Mastodon's filter contexts).
FILTER_CONTEXTS = {USER: "home", LIST: "home", DIRECT: "thread"}
CLOSE_REVOKED, CLOSE_GOING_AWAY, CLOSE_TOO_SLOW = 1008, 1001, 1013
#: Events waiting for the worker; past this the oldest are dropped (and logged).
MAX_BACKLOG = 10_000


@dataclass(frozen=True)
class StreamSettings:
    """Timing and size knobs; tests replace `hub.settings` on a running instance."""

    sse_heartbeat: float = 15.0  # seconds between `:thump` comments on idle SSE streams
    ws_heartbeat: float = 30.0  # seconds between WebSocket pings
    queue_limit: int = 200  # frames waiting for one client before it is dropped
    send_timeout: float = 10.0  # a write to a client taking longer than this drops it
    max_subscriptions: int = 100  # streams one WebSocket may listen to


class Frame:
    """One event on one stream, rendered lazily for whichever transports receive it."""

    __slots__ = ("stream", "event", "payload", "_ws", "_sse")

    def __init__(self, stream: list[str], event: str, payload: str) -> None:
        self.stream, self.event, self.payload = stream, event, payload
        self._ws: str | None = None
        self._sse: bytes | None = None

    @classmethod
    def error(cls, status: int, message: str) -> "Frame":
        """A refused WebSocket message, answered as Mastodon does: `{"error": ..., "status": ...}`."""
        frame = cls([], "error", message)
        frame._ws = dumps_str({"error": message, "status": status})
        return frame

    @property
    def ws_text(self) -> str:
        if self._ws is None:
            self._ws = dumps_str({"stream": self.stream, "event": self.event, "payload": self.payload})
        return self._ws

    @property
    def sse_bytes(self) -> bytes:
        if self._sse is None:
            self._sse = f"event: {self.event}\ndata: {self.payload}\n\n".encode()
        return self._sse


def stream_name(key: Key) -> list[str]:
    """The `stream` array Mastodon sends: the name, plus the tag or list id for those streams."""
    name, arg = key
    if name in (HASHTAG, HASHTAG_LOCAL, LIST):
        return [name, str(arg)]
    return [name]


class Connection:
    """One client's stream: who it is, what it listens to, and frames not yet written."""

    __slots__ = ("token_id", "account", "account_id", "notifications", "keys", "pending", "wake", "closed", "close_code")

    def __init__(self, auth: Auth, notifications: bool) -> None:
        self.token_id = auth.token_id
        self.account: Row | None = auth.account
        #: Read several times per listener per event, so kept rather than looked up in the row each time.
        self.account_id: int | None = None if auth.account is None else auth.account["id"]
        #: Whether the token may see notifications on the `user` stream (read:notifications).
        self.notifications = notifications
        self.keys: set[Key] = set()
        self.pending: deque[Frame] = deque()
        self.wake = asyncio.Event()
        self.closed = False
        self.close_code = CLOSE_GOING_AWAY

    def push(self, frame: Frame, limit: int) -> bool:
        """Queue a frame (a closed connection drops it); False when the client has fallen too far behind."""
        if self.closed:
            return True
        if len(self.pending) >= limit:
            return False
        self.pending.append(frame)
        self.wake.set()
        return True

    def take(self) -> list[Frame]:
        frames = list(self.pending)
        self.pending.clear()
        self.wake.clear()
        return frames

    def close(self, code: int) -> None:
        if not self.closed:
            self.closed = True
            self.close_code = code
            self.pending.clear()
            self.wake.set()


class Hub:
    """The registry of live connections and the worker that routes events to them."""

    def __init__(self, settings: StreamSettings | None = None) -> None:
        self.settings = settings or StreamSettings()
        self.subs: dict[str, dict[Any, set[Connection]]] = {}
        self.by_token: dict[int, set[Connection]] = {}
        self._ctx: Context | None = None
        self._backlog: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Any = None

    # lifecycle ---------------------------------------------------------------

    def start(self, ctx: Context) -> None:
        self._ctx = ctx
        self._unsubscribe = ctx.events.subscribe(self._on_event)
        self._task = asyncio.create_task(self._run(), name="fedi-streaming-hub")

    def close_all(self, code: int = CLOSE_GOING_AWAY) -> None:
        for conns in list(self.by_token.values()):
            for conn in list(conns):
                self.remove(conn)
                conn.close(code)

    async def stop(self) -> None:
        self.close_all()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # registry ----------------------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.by_token.setdefault(conn.token_id, set()).add(conn)

    def remove(self, conn: Connection) -> None:
        for key in list(conn.keys):
            self.unsubscribe(conn, key)
        conns = self.by_token.get(conn.token_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.by_token[conn.token_id]

    def subscribe(self, conn: Connection, key: Key) -> None:
        self.subs.setdefault(key[0], {}).setdefault(key[1], set()).add(conn)
        conn.keys.add(key)

    def unsubscribe(self, conn: Connection, key: Key) -> None:
        conn.keys.discard(key)
        by_arg = self.subs.get(key[0])
        if by_arg is None or key[1] not in by_arg:
            return
        by_arg[key[1]].discard(conn)
        if not by_arg[key[1]]:
            del by_arg[key[1]]
            if not by_arg:
                del self.subs[key[0]]

    def connections(self, key: Key) -> set[Connection]:
        return self.subs.get(key[0], {}).get(key[1], set())

    def revoke(self, token_id: int) -> None:
        for conn in list(self.by_token.get(token_id, ())):
            self.remove(conn)
            conn.close(CLOSE_REVOKED)

    # events ------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """Runs inside the publisher's after-commit step: only cheap bookkeeping here."""
        if event.kind == "token.revoked":
            self.revoke(event.data["token_id"])
            return
        if not self.subs:
            return
        if len(self._backlog) >= MAX_BACKLOG:
            log.warning("streaming backlog full; dropping %s", self._backlog.popleft().kind)
        self._backlog.append(event)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._backlog:
                event = self._backlog.popleft()
                try:
                    await self._route(event)
                except Exception:
                    log.exception("streaming: routing %s failed", event.kind)

    async def _route(self, event: Event) -> None:
        ctx = self._ctx
        assert ctx is not None
        if event.kind == "notification":
            await self._route_notification(ctx, event.data["notification_id"], event.data["account_id"])
        elif event.kind in ("status.created", "status.updated", "status.deleted"):
            await self._route_status(ctx, event.kind, event.data["status_id"])

    def _push(self, conn: Connection, frame: Frame) -> None:
        if not conn.push(frame, self.settings.queue_limit):
            log.info("streaming: dropping a client %d frames behind", self.settings.queue_limit)
            self.remove(conn)
            conn.close(CLOSE_TOO_SLOW)

    async def _route_notification(self, ctx: Context, notification_id: int, account_id: int) -> None:
        keys = [k for k in ((USER, account_id), (NOTIFICATIONS, account_id)) if self.connections(k)]
        if not keys:
            return
        viewer = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (account_id,))
        # The notifications API's own rule: nothing from blocked or muted senders, nothing on deleted statuses.
        row = await ctx.db.fetchone(notifications.VISIBLE + " AND n.id = ?",
                                    (account_id, account_id, account_id, now(), notification_id))
        if viewer is None or row is None:
            return
        rendered = await notifications.render(ctx, [row], viewer)
        if not rendered:
            return  # hidden by one of the viewer's filters
        payload = dumps_str(rendered[0])
        for key in keys:
            frame = Frame(stream_name(key), "notification", payload)
            for conn in list(self.connections(key)):
                if key[0] == NOTIFICATIONS or conn.notifications:
                    self._push(conn, frame)

    async def _route_status(self, ctx: Context, kind: str, status_id: int) -> None:
        status = await ctx.db.fetchone("SELECT * FROM statuses WHERE id = ?", (status_id,))
        deleted = kind == "status.deleted"
        if status is None or (not deleted and status["deleted_at"] is not None):
            return
        listening = {name: list(args) for name, args in self.subs.items()}
        keys = [k for k in await audience(ctx, listening, status, deleted) if self.connections(k)]
        if deleted:
            for key in keys:
                frame = Frame(stream_name(key), "delete", str(status_id))
                for conn in list(self.connections(key)):
                    self._push(conn, frame)
            return
        listeners = {c.account_id for k in keys for c in self.connections(k) if c.account_id is not None}
        skip = await excluded(ctx, status, listeners)
        judged = await with_filters(ctx, listeners - skip)
        entity = await entities.status(ctx, status, None)
        shared = dumps_str(entity)
        event = "update" if kind == "status.created" else "status.update"
        views: dict[tuple[int, str], str | None] = {}
        for key in keys:
            if key[0] == DIRECT and kind == "status.created":
                if key[1] not in skip:
                    await self._send_conversation(ctx, key, status_id)
                continue
            frame = Frame(stream_name(key), event, shared)
            context = FILTER_CONTEXTS.get(key[0], "public")
            for conn in list(self.connections(key)):
                if conn.account_id in skip:
                    continue
                payload = shared
                if conn.account is not None and conn.account_id in judged:
                    payload = await _judged(ctx, conn.account, entity, shared, context, views)
                if payload is shared:
                    self._push(conn, frame)
                elif payload is not None:
                    self._push(conn, Frame(frame.stream, event, payload))

    async def _send_conversation(self, ctx: Context, key: Key, status_id: int) -> None:
        """A direct message reaches the `direct` stream as the listener's Conversation."""
        viewer = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ?", (key[1],))
        await conversations.sync(ctx, key[1])
        row = await ctx.db.fetchone(
            "SELECT * FROM conversations WHERE account_id = ? AND last_status_id = ?", (key[1], status_id)
        )
        if viewer is None or row is None:
            return
        rendered = await conversations.render(ctx, [row], viewer)
        frame = Frame(stream_name(key), "conversation", dumps_str(rendered[0]))
        for conn in list(self.connections(key)):
            self._push(conn, frame)


async def _judged(
    ctx: Context, viewer: Row, entity: dict[str, Any], shared: str, context: str,
    views: dict[tuple[int, str], str | None],
) -> str | None:
    """The payload for a listener with filters: None if hidden, or with its `filtered` results."""
    cache_key = (viewer["id"], context)
    if cache_key not in views:
        hide, results = match(await active_filters(ctx, viewer["id"], context), entity, viewer["id"])
        if hide:
            views[cache_key] = None
        elif not results:
            views[cache_key] = shared
        else:
            own = {**entity, "filtered": results}
            if own["reblog"] is not None:
                own["reblog"] = {**own["reblog"], "filtered": results}
            views[cache_key] = dumps_str(own)
    return views[cache_key]
