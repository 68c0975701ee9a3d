"""Real receiving hosts on 127.0.0.1 for delivery tests of `fedi serve` subprocesses.

Each receiver is its own origin (its own port), checks every HTTP signature against the
sender's key, and records the activity ids it accepted.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from contextlib import closing
from typing import Any

from aiohttp import web

from fedi.ids import IdGenerator
from fedi.signatures import SignatureError, check_request, load_public_key, parse_signature, verify_signature
from tests.processes import FediProcess


class Receiver:
    """One remote host: checks every signature, counts activity ids, tracks requests in flight."""

    def __init__(self, delay: float = 0.0) -> None:
        self.key_id = ""  # the sender's, set with expect_key() once the instance exists
        self.public_key: Any = None
        self.delay = delay
        self.received: list[str] = []
        self.rejected: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.runner: web.AppRunner | None = None
        self.port = 0

    def expect_key(self, key_id: str, public_pem: str) -> None:
        self.key_id, self.public_key = key_id, load_public_key(public_pem)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def inbox(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = await request.read()
            try:
                if request.headers.get("Host") != self.netloc:
                    raise SignatureError(f"sent to the wrong host: {request.headers.get('Host')}")
                parsed = parse_signature(request.headers.get("Signature", ""))
                if parsed.key_id != self.key_id:
                    raise SignatureError(f"signed with {parsed.key_id}")
                check_request(parsed, "POST", request.headers, body, time.time(), 300)
                verify_signature(parsed, "POST", request.rel_url.raw_path, request.query_string, request.headers,
                                 self.public_key)
            except SignatureError as exc:
                self.rejected.append(exc.reason)
                return web.json_response({"error": exc.reason}, status=401)
            # Recorded before the slow answer: a sender killed mid-request still delivered it.
            self.received.append(json.loads(body)["id"])
            if self.delay:
                await asyncio.sleep(self.delay)
            return web.json_response({}, status=202)
        finally:
            self.in_flight -= 1

    async def start(self, port: int = 0) -> None:
        """Listen on `port` (a free one by default; the same one again to come back after an outage)."""
        app = web.Application()
        app.router.add_post("/inbox", self.inbox)
        self.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", port)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def add_remote_followers(inst: FediProcess, username: str, receivers: list[Receiver]) -> None:
    """One remote follower per receiver host, written as rows into the instance's database.

    Inserted directly (the instance is not running yet) because what is tested is that
    queued deliveries survive, not how the follows came about; the rows are what fedi
    itself stores for an accepted remote follower (fedi/schema.py, inbox/handlers.py).
    """
    ids = IdGenerator()
    now = time.time()
    with closing(sqlite3.connect(inst.db_path, timeout=10)) as conn, conn:
        (local_id,) = conn.execute(
            "SELECT id FROM accounts WHERE domain IS NULL AND username = ?", (username,)
        ).fetchone()
        for n, receiver in enumerate(receivers):
            uri = f"http://{receiver.netloc}/users/follower{n}"
            account_id = ids.next()
            conn.execute(
                """INSERT INTO accounts (id, username, domain, uri, url, inbox_url, shared_inbox_url,
                       followers_url, public_key_id, created_at, updated_at, fetched_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (account_id, f"follower{n}", receiver.netloc, uri, uri, f"{uri}/inbox",
                 f"http://{receiver.netloc}/inbox", f"{uri}/followers", f"{uri}#main-key", now, now, now),
            )
            conn.execute(
                "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at)"
                " VALUES (?, ?, ?, ?, 'accepted', ?)",
                (ids.next(), account_id, local_id, f"http://{receiver.netloc}/follows/{n}", now),
            )
