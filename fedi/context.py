"""The per-instance services every handler reaches through `request.app[CTX]`.

One `Context` per running instance (never module-level state), so several
instances can live in one process — the federation tests rely on that.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from fedi.config import Config
from fedi.db import Database
from fedi.events import EventBus
from fedi.http_client import HttpClient, Signer

if TYPE_CHECKING:
    from actors.keys import KeyCache


@dataclass
class Context:
    config: Config
    db: Database
    http: HttpClient
    keys: "KeyCache"
    #: The instance actor signs every outgoing GET (avoids signed-fetch deadlocks). None until its
    #: key pair exists: use `actors.local.instance_signer(ctx)`, which makes it on first need.
    instance_signer: Signer | None
    instance_actor_id: int
    #: Set after a commit that queued work; the workers wait on these.
    delivery_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    inbox_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    jobs_wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    #: (rules, checked at) cached by fedi.moderation.domains; None until first used or after a change.
    domain_rules: Any = None

    @property
    def events(self) -> EventBus:
        """Published after commit (`Tx.publish`); the streaming API listens."""
        return self.db.events

    @property
    def base_url(self) -> str:
        return self.config.base_url

    @property
    def domain(self) -> str:
        return self.config.instance.domain

    def wake_delivery(self) -> None:
        self.delivery_wakeup.set()

    def wake_inbox(self) -> None:
        self.inbox_wakeup.set()

    def wake_jobs(self) -> None:
        """After a commit that queued a job (fedi.jobs)."""
        self.jobs_wakeup.set()


CTX = web.AppKey("fedi_context", Context)
