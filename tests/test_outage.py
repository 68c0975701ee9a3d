"""The week-long outage, shown: a peer that is down for days gets everything, in order, when it is back.

alpha sends; beta is a real fedi instance on 127.0.0.1 that verifies every signature.
beta is stopped for the outage (its port refuses connections) and started again on
the same port. Time moves by stepping alpha's delivery clock an hour at a time (as
tests/test_delivery.py does) instead of waiting a week; the requests themselves are
real and signed at the real time, so beta's signature window holds.

alpha allows one delivery per host in flight, so what beta stores is exactly the
order alpha sent in (with the default four, up to four overlap: README, Federation).
"""

from __future__ import annotations

import time
from typing import Any

from actors.local import create_local_account, get_local_account
from actors.remote import get_actor
from actors.webfinger import resolve_handle
from fedi.app import DELIVERY_WORKER
from fedi.db import Row
from outbox import actions
from outbox.actions import PostRequest
from outbox.delivery import DeliveryWorker
from outbox.queue import HELD
from tests.harness import Instance, Network

HOUR = 3600.0
DAY = 24 * HOUR


def worker(inst: Instance) -> DeliveryWorker:
    assert inst.app is not None
    return inst.app[DELIVERY_WORKER]


def set_clock(inst: Instance, t: float) -> None:
    worker(inst).clock = lambda: t


async def local(inst: Instance, name: str) -> Row:
    await create_local_account(inst.ctx.db, inst.base, name, "password123")
    row = await get_local_account(inst.ctx.db, name)
    assert row is not None
    return row


async def following(network: Network) -> tuple[Instance, Instance, Row, Row]:
    """alpha's alice, followed by beta's bob; alpha sends one delivery per host at a time."""
    alpha = await network.add("alpha.test", federation={"delivery_per_host_concurrency": 1})
    beta = await network.add("beta.test")
    alice, bob = await local(alpha, "alice"), await local(beta, "bob")
    uri = await resolve_handle(beta.ctx, f"@alice@{alpha.config.instance.domain}")
    assert await actions.follow(beta.ctx, bob, await get_actor(beta.ctx, uri)) == "requested"
    await network.drain()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM follows WHERE state = 'accepted'") == 1
    return alpha, beta, alice, bob


async def post(alpha: Instance, alice: Row, text: str) -> str:
    status = await actions.create_status(alpha.ctx, alice, PostRequest(text=text))
    return f"{status['uri']}/activity"


async def to_beta(alpha: Instance, beta: Instance) -> list[Row]:
    return await alpha.ctx.db.fetchall(
        "SELECT d.*, o.uri FROM deliveries d JOIN outbox_activities o ON o.id = d.activity_id"
        " WHERE d.host = ? AND o.type = 'Create' ORDER BY d.id", (beta.config.instance.domain,)
    )


async def creates_stored(beta: Instance) -> list[str]:
    """The Create activities beta accepted, in the order it stored them."""
    rows = await beta.ctx.db.fetchall("SELECT activity_id FROM inbox_activities WHERE type = 'Create' ORDER BY id")
    return [r["activity_id"] for r in rows]


async def host_state(alpha: Instance, beta: Instance) -> Row:
    row = await alpha.ctx.db.fetchone("SELECT * FROM hosts WHERE host = ?", (beta.config.instance.domain,))
    assert row is not None
    return row


async def hours(alpha: Instance, start: float, count: int, every_day: Any = None) -> float:
    """Step alpha's delivery clock `count` hours from `start`, delivering what is due at each;
    `every_day(day)` runs at the start of each day. Returns the clock at the end."""
    t = start
    for hour in range(count):
        if every_day is not None and hour % 24 == 0:
            await every_day(hour // 24)
        t = start + hour * HOUR
        set_clock(alpha, t)
        await worker(alpha).run_once()
    return t


async def test_six_days_down_then_every_delivery_in_order(network: Network) -> None:
    alpha, beta, alice, bob = await following(network)
    t0 = time.time()
    await beta.stop()  # nothing listens on beta's port now
    sent: list[str] = []

    async def daily(day: int) -> None:
        sent.append(await post(alpha, alice, f"day {day} of the outage"))

    end = await hours(alpha, t0, 6 * 24, daily)
    assert end - t0 >= 5.9 * DAY
    waiting = await to_beta(alpha, beta)
    assert [r["uri"] for r in waiting] == sent and len(sent) == 6
    assert {r["state"] for r in waiting} == {"pending"}
    assert all(r["last_status"] is None and r["last_error"] for r in waiting)  # refused: no answer
    assert max(r["attempts"] for r in waiting) >= 8  # retried all along, backing off
    # Every delivery to beta waits for the same retry: none can overtake an older one.
    assert len({r["next_attempt_at"] for r in waiting}) == 1
    host = await host_state(alpha, beta)
    assert host["failures"] > 0 and host["unavailable_since"] is None

    await beta.start()  # back on the same port, with its database
    assert await creates_stored(beta) == []
    retry = waiting[0]["next_attempt_at"]
    assert retry - end <= DAY  # backoff is capped at a day
    set_clock(alpha, retry)
    await network.drain()
    assert await creates_stored(beta) == sent  # all six, oldest first
    assert {r["state"] for r in await to_beta(alpha, beta)} == {"delivered"}
    home = await beta.ctx.db.fetchall(
        "SELECT s.uri FROM home_feed h JOIN statuses s ON s.id = h.status_id WHERE h.account_id = ? ORDER BY s.id",
        (bob["id"],),
    )
    assert [r["uri"] + "/activity" for r in home] == sent
    cleared = await host_state(alpha, beta)
    assert cleared["failures"] == 0 and cleared["last_success_at"] == retry


async def test_gone_past_the_horizon_is_held_until_seen_again(network: Network) -> None:
    alpha, beta, alice, bob = await following(network)
    horizon = alpha.config.federation.delivery_max_age_seconds
    assert horizon == 7 * DAY
    t0 = time.time()
    await beta.stop()
    first = await post(alpha, alice, "the day beta went away")
    second = await post(alpha, alice, "a minute later")
    end = await hours(alpha, t0, 8 * 24)

    host = await host_state(alpha, beta)
    assert host["unavailable_since"] is not None and host["unavailable_since"] - t0 >= horizon
    rows = {r["uri"]: r for r in await to_beta(alpha, beta)}
    assert rows[first]["state"] == "expired"  # tried once more when a week old: past the horizon
    assert (rows[second]["state"], rows[second]["next_attempt_at"]) == ("pending", HELD)
    # While unavailable nothing is tried, and new posts wait with the rest.
    third = await post(alpha, alice, "posted while beta is marked unavailable")
    tried = {r["id"]: r["attempts"] for r in await to_beta(alpha, beta)}
    await beta.start()  # back, but alpha does not know yet
    set_clock(alpha, end + 30 * DAY)
    assert await worker(alpha).run_once() == 0
    assert {r["id"]: r["attempts"] for r in await to_beta(alpha, beta)} == tried
    assert await creates_stored(beta) == []

    # beta is seen again: bob writes to alice, a signed POST to alpha's inbox releases what was held.
    await actions.create_status(beta.ctx, bob, PostRequest(text=f"@alice@{alpha.config.instance.domain} are you there?"))
    await network.drain()
    assert await alpha.ctx.db.fetchval(
        "SELECT count(*) FROM inbox_activities WHERE type = 'Create' AND actor_uri = ?", (bob["uri"],)
    ) == 1
    assert await creates_stored(beta) == [second, third]
    states = {r["uri"]: r["state"] for r in await to_beta(alpha, beta)}
    assert states == {first: "expired", second: "delivered", third: "delivered"}
    host = await host_state(alpha, beta)
    assert host["unavailable_since"] is None and host["failures"] == 0
