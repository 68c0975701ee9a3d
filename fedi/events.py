"""In-process events for live listeners (the streaming API), published after commit.

Publishers (local actions, inbox handlers) know nothing about who listens; the
streaming layer subscribes. Events for a transaction are published only once it
has committed, so a listener never sees a row that was rolled back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Listener = Callable[["Event"], None]


@dataclass(frozen=True)
class Event:
    kind: str  # "status.created" | "status.updated" | "status.deleted" | "notification" | "token.revoked"
    data: dict[str, Any]


class EventBus:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def publish(self, kind: str, **data: Any) -> None:
        event = Event(kind, data)
        for listener in list(self._listeners):
            listener(event)
