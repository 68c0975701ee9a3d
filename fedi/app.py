"""The application factory: the one place that wires every layer together."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator

from aiohttp import web

import actors.routes
import fedi.api
import fedi.web.routes
import inbox.routes
import outbox.routes
from actors.keys import KeyCache
from actors.local import ensure_instance_actor
from fedi import __version__
from fedi.config import Config
from fedi.context import CTX, Context
from fedi.db import Database
from fedi.api.cors import cors_middleware
from fedi.api.ratelimit import rate_limit_middleware, setup as setup_rate_limits
from fedi.errors import error_middleware
from fedi.moderation.fetch_auth import authorized_fetch_middleware
from fedi.http_client import HttpClient, Signer
from fedi.api.scheduled import ScheduledPublisher
from fedi.moderation.subscriptions import BlocklistSyncer
from fedi.jobs import JobRunner
from fedi.portability import job_handlers
from inbox.worker import InboxWorker
from outbox.delivery import DeliveryWorker
from outbox.delivery_process import DeliveryProcesses

log = logging.getLogger("fedi")

DELIVERY_WORKER = web.AppKey("fedi_delivery_worker", DeliveryWorker)
DELIVERY_PROCESSES = web.AppKey("fedi_delivery_processes", DeliveryProcesses)
SCHEDULED_PUBLISHER = web.AppKey("fedi_scheduled_publisher", ScheduledPublisher)
BLOCKLIST_SYNCER = web.AppKey("fedi_blocklist_syncer", BlocklistSyncer)
INBOX_WORKER = web.AppKey("fedi_inbox_worker", InboxWorker)
JOB_RUNNER = web.AppKey("fedi_job_runner", JobRunner)


def user_agent(config: Config) -> str:
    return f"fedi/{__version__} (+{config.base_url}/)"


async def open_context(config: Config, host_map: dict[str, str] | None = None) -> Context:
    """Open the database and the HTTP client; used by the server and by CLI commands that federate."""
    db = await Database.open(config.database_path)
    actor_id = await ensure_instance_actor(db, config.base_url, config.instance.domain)
    row = await db.fetchone("SELECT public_key_id, private_key_pem FROM accounts WHERE id = ?", (actor_id,))
    assert row is not None
    http = HttpClient(config.federation, user_agent(config), host_map=host_map)
    await http.start()
    return Context(
        config=config,
        db=db,
        http=http,
        keys=KeyCache(config.federation.key_cache_seconds),
        instance_signer=Signer(row["public_key_id"], row["private_key_pem"]) if row["private_key_pem"] else None,
        instance_actor_id=actor_id,
    )


async def close_context(ctx: Context) -> None:
    await ctx.http.close()
    await ctx.db.close()


async def _freeze_gc(app: web.Application) -> None:
    """Move start-up objects out of the collector's reach: a full collection over them
    otherwise pauses the loop 40-130 ms (measured as the streaming latency tail).
    No gc.collect() first: it would find ~30 unreachable objects for ~27 ms of cold start."""
    gc.freeze()


def create_app(config: Config, *, host_map: dict[str, str] | None = None, workers: bool = True,
               delivery_processes: int = 0) -> web.Application:
    """Build the aiohttp application for one instance.

    `host_map` maps test hostnames to loopback addresses for outgoing requests;
    `workers=False` leaves the queues to be stepped by hand (tests call run_once()).
    `delivery_processes` > 0 (with workers) sends deliveries from that many child
    processes (`outbox.delivery_process`) instead of this one; `fedi serve` passes
    `[federation] delivery_processes`, everything else delivers in-process.
    """
    # Rate limiting sits inside CORS (a 429 still carries CORS headers) and outside the error
    # renderer (every error answer gets X-RateLimit-* headers).
    app = web.Application(
        middlewares=[cors_middleware, rate_limit_middleware, error_middleware, authorized_fetch_middleware],
        client_max_size=config.server.max_body_bytes,
    )
    setup_rate_limits(app, config.server.trusted_proxies)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        ctx = await open_context(config, host_map)
        app[CTX] = ctx
        inbox_worker = InboxWorker(ctx)
        delivery_worker = DeliveryWorker(ctx)
        app[INBOX_WORKER] = inbox_worker
        app[DELIVERY_WORKER] = delivery_worker
        publisher = ScheduledPublisher(ctx)
        app[SCHEDULED_PUBLISHER] = publisher
        syncer = BlocklistSyncer(ctx)
        app[BLOCKLIST_SYNCER] = syncer
        jobs = JobRunner(ctx, job_handlers())
        app[JOB_RUNNER] = jobs
        processes: DeliveryProcesses | None = None
        if workers:
            inbox_worker.start()
            if delivery_processes > 0 and config.database_path == ":memory:":
                log.warning("delivery_processes needs a database file; delivering in the server process")
                delivery_worker.start()
            elif delivery_processes > 0:
                processes = DeliveryProcesses(config, delivery_processes, host_map)
                app[DELIVERY_PROCESSES] = processes
                await processes.start(ctx.delivery_wakeup)
            else:
                delivery_worker.start()
            publisher.start()
            syncer.start()
            jobs.start()
        yield
        await jobs.stop()
        await syncer.stop()
        await publisher.stop()
        await inbox_worker.stop()
        if processes is not None:
            await processes.stop()
        await delivery_worker.stop()
        await close_context(ctx)

    app.cleanup_ctx.append(lifecycle)
    app.on_startup.append(_freeze_gc)
    actors.routes.setup(app)
    inbox.routes.setup(app)
    outbox.routes.setup(app)
    fedi.web.routes.setup(app)
    fedi.api.setup(app)
    return app
