"""Rate limits on a real instance: headers, 429, and what X-Forwarded-For may change (THREATS O8, R1)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from typing import Any

from fedi.api.ratelimit import RATE_LIMITER, Limits, RateLimiter, Rule
from tests.api_client import REDIRECT, bearer, register_app, user_token
from tests.harness import Instance, Network


def _limit(inst: Instance, **rules: Rule) -> None:
    limiter = inst.app[RATE_LIMITER]
    limiter.limits = replace(limiter.limits, **rules)


async def _get(inst: Instance, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    assert inst.session is not None
    async with inst.session.get(inst.url(path), headers=headers or {}) as resp:
        return resp.status, resp.headers, await resp.json(content_type=None)


async def _post(inst: Instance, path: str, data: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    assert inst.session is not None
    async with inst.session.post(inst.url(path), data=data, headers=headers or {}) as resp:
        return resp.status, resp.headers


def _reset(headers: Any) -> float:
    return datetime.fromisoformat(headers["X-RateLimit-Reset"].replace("Z", "+00:00")).timestamp()


async def test_sixth_call_is_refused_with_headers_and_json(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    _limit(alpha, api=Rule(5, 300))
    for remaining in (3, 2, 1, 0):  # registering the app (POST /api/v1/apps) was this address's first call
        status, headers, _ = await _get(alpha, "/api/v1/instance")
        assert status == 200
        assert headers["X-RateLimit-Limit"] == "5" and headers["X-RateLimit-Remaining"] == str(remaining)
        assert time.time() < _reset(headers) <= time.time() + 300
    status, headers, body = await _get(alpha, "/api/v1/instance")
    assert status == 429 and body == {"error": "Too many requests"}
    assert headers["X-RateLimit-Remaining"] == "0" and 1 <= int(headers["Retry-After"]) <= 300
    assert headers["Access-Control-Allow-Origin"] == "*" and headers["Content-Type"].startswith("application/json")

    # A signed-in user counts against their own account, not the address.
    for remaining in (4, 3, 2, 1, 0):
        status, headers, _ = await _get(alpha, "/api/v1/accounts/verify_credentials", bearer(token))
        assert status == 200 and headers["X-RateLimit-Remaining"] == str(remaining)
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/api/v1/statuses"), data={"status": "over the limit"},
                                  headers=bearer(token)) as resp:
        assert resp.status == 429 and await resp.json() == {"error": "Too many requests"}
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses") == 0, "a refused call stored something"


async def test_error_answers_carry_headers_too(network: Network) -> None:
    alpha = await network.add("alpha.test")
    status, headers, body = await _get(alpha, "/api/v1/statuses/123")
    assert status == 404 and "error" in body and headers["X-RateLimit-Limit"] == "300"
    status, headers, _ = await _get(alpha, "/api/v1/accounts/verify_credentials", bearer("wrong"))
    assert status == 401 and headers["X-RateLimit-Remaining"] == "298"


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(network: Network) -> None:
    alpha = await network.add("alpha.test")
    _limit(alpha, api=Rule(3, 300))
    statuses = [(await _get(alpha, "/api/v1/instance", {"X-Forwarded-For": f"203.0.113.{i}"}))[0] for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(network: Network) -> None:
    alpha = await network.add("alpha.test", server={"trusted_proxies": ["127.0.0.1/32"]})
    _limit(alpha, api=Rule(2, 300))
    for i in range(4):
        status, _, _ = await _get(alpha, "/api/v1/instance", {"X-Forwarded-For": f"203.0.113.{i}"})
        assert status == 200
    # Only the hop the proxy appended counts: what the client wrote to the left of it is ignored.
    spoofed = [(await _get(alpha, "/api/v1/instance", {"X-Forwarded-For": f"10.9.9.{i}, 198.51.100.7"}))[0]
               for i in range(3)]
    assert spoofed == [200, 200, 429]
    # One IPv6 /64 is one client.
    ipv6 = [(await _get(alpha, "/api/v1/instance", {"X-Forwarded-For": f"2001:db8:1:2::{i}"}))[0] for i in range(1, 4)]
    assert ipv6 == [200, 200, 429]


async def _sign_in(inst: Instance, app: dict[str, Any], username: str, forwarded: str | None = None) -> int:
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    status, _ = await _post(inst, "/oauth/authorize", {
        "client_id": app["client_id"], "redirect_uri": REDIRECT, "scope": "read", "response_type": "code",
        "username": username, "password": "wrong password", "decision": "allow",
    }, headers)
    return status


async def test_sign_in_attempts_are_limited_per_address_and_per_account(network: Network) -> None:
    alpha = await network.add("alpha.test", server={"trusted_proxies": ["127.0.0.1/32"]})
    await user_token(alpha, "alice")
    app = await register_app(alpha)
    _limit(alpha, login_ip=Rule(3, 300), login_name=Rule(100, 300))
    assert [await _sign_in(alpha, app, "alice", "192.0.2.1") for _ in range(4)] == [401, 401, 401, 429]
    assert await _sign_in(alpha, app, "alice", "192.0.2.2") == 401

    # Rotating addresses does not buy more guesses at one account, known or not (O6: same answers).
    _limit(alpha, login_ip=Rule(100, 300), login_name=Rule(3, 300))
    for name in ("bob-does-not-exist", "ALICE"):
        results = [await _sign_in(alpha, app, name, f"198.51.100.{i}") for i in range(4)]
        assert results[-1] == 429
    assert await _sign_in(alpha, app, "carol", "198.51.100.99") == 401

    # The password grant is a sign-in too; other grants are not counted as one.
    _limit(alpha, login_ip=Rule(1, 300))
    password_grant = {"grant_type": "password", "username": "dave", "password": "x", "client_id": app["client_id"],
                      "client_secret": app["client_secret"]}
    statuses = [(await _post(alpha, "/oauth/token", password_grant, {"X-Forwarded-For": "192.0.2.50"}))[0]
                for _ in range(2)]
    assert statuses[0] != 429 and statuses[1] == 429
    status, _ = await _post(alpha, "/oauth/token", {
        "grant_type": "client_credentials", "client_id": app["client_id"], "client_secret": app["client_secret"],
    }, {"X-Forwarded-For": "192.0.2.50"})
    assert status == 200


async def test_media_deletes_and_sign_up_have_their_own_limits(network: Network) -> None:
    alpha = await network.add("alpha.test")
    token = await user_token(alpha, "alice")
    _limit(alpha, media=Rule(2, 1800), sign_up=Rule(1, 1800), status_deletes=Rule(1, 1800))
    media = [(await _post(alpha, "/api/v2/media", {}, bearer(token)))[0] for _ in range(3)]
    assert media[:2] != [429, 429] and media[2] == 429
    status, headers = await _post(alpha, "/api/v1/statuses/1/unreblog", {}, bearer(token))
    assert status != 429 and headers["X-RateLimit-Limit"] == "1" and headers["X-RateLimit-Remaining"] == "0"
    assert alpha.session is not None
    async with alpha.session.delete(alpha.url("/api/v1/statuses/1"), headers=bearer(token)) as resp:
        assert resp.status == 429
    signup = {"username": "newbie", "email": "n@example.com", "password": "password123", "agreement": "true"}
    assert (await _post(alpha, "/api/v1/accounts", signup))[0] != 429
    assert (await _post(alpha, "/api/v1/accounts", signup))[0] == 429
    status, headers, _ = await _get(alpha, "/api/v1/instance")
    assert status == 200 and headers["X-RateLimit-Limit"] == "300"


def test_counters_stay_bounded() -> None:
    limiter = RateLimiter(limits=Limits(max_keys=50))
    for i in range(1000):
        limiter.hit("api", Rule(300, 300), f"ip:{i}", 1_000_000.0)
    assert len(limiter._counters) <= 50
    latest = limiter.hit("api", Rule(300, 300), "ip:999", 1_000_000.0)
    assert latest.count == 2, "the most recent client was evicted"
    assert limiter.hit("api", Rule(300, 300), "ip:999", 1_000_300.0).count == 1  # a new window starts afresh
