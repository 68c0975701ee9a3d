"""POST /api/v1/admin/measures: Mastodon's Admin::Measure, one bucket per day.

Dashboards (and tools that only want `instance_follows[domain]`) often send no
or odd dates, so missing or unreadable `start_at`/`end_at` mean the last 30
days rather than an error; the span is capped at a year. Values are strings,
as Mastodon sends them. Unknown keys are left out of the answer, as Mastodon does.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from fedi.api.auth import require
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.context import CTX, Context

DAY = 86400
DEFAULT_DAYS = 30
MAX_DAYS = 366

_FOLLOWS = ("SELECT f.created_at AS ts, f.id AS who FROM follows f JOIN accounts a ON a.id = f.account_id"
            " JOIN accounts t ON t.id = f.target_account_id WHERE f.state = 'accepted' AND {side}")
#: key → (events SQL with columns ts and who, whether the measure compares with the previous period)
EVENTS: dict[str, tuple[str, bool]] = {
    "new_users": ("SELECT created_at AS ts, account_id AS who FROM users", True),
    "active_users": ("SELECT created_at AS ts, account_id AS who FROM statuses WHERE local = 1"
                     " UNION ALL SELECT created_at, account_id FROM users", True),
    "interactions": ("SELECT f.created_at AS ts, f.id AS who FROM favourites f JOIN statuses s ON s.id = f.status_id"
                     " WHERE s.local = 1"
                     " UNION ALL SELECT r.created_at, r.id FROM statuses r JOIN statuses s ON s.id = r.reblog_of_id"
                     " WHERE s.local = 1"
                     " UNION ALL SELECT r.created_at, r.id FROM statuses r JOIN statuses s ON s.id = r.in_reply_to_id"
                     " WHERE s.local = 1 AND r.account_id != s.account_id", True),
    "opened_reports": ("SELECT created_at AS ts, id AS who FROM reports", True),
    "resolved_reports": ("SELECT action_taken_at AS ts, id AS who FROM reports WHERE action_taken_at IS NOT NULL", True),
    "instance_follows": (_FOLLOWS.format(side="a.domain IS NULL AND t.domain = ?"), False),
    "instance_followers": (_FOLLOWS.format(side="t.domain IS NULL AND a.domain = ?"), False),
}


def _day(value: Any) -> date | None:
    """A date from `YYYY-MM-DD` or an ISO datetime; None for anything else."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def date_range(params: Params, today: date) -> tuple[date, date]:
    """(first day, last day) inclusive; missing or invalid dates fall back to the last 30 days."""
    end = _day(params.get("end_at")) or today
    start = _day(params.get("start_at")) or end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        start, end = end - timedelta(days=DEFAULT_DAYS - 1), end
    if (end - start).days >= MAX_DAYS:
        start = end - timedelta(days=MAX_DAYS - 1)
    return start, end


def _ts(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=timezone.utc).timestamp()


async def _count(ctx: Context, sql: str, args: list[Any], start: float, end: float) -> int:
    return int(await ctx.db.fetchval(
        f"SELECT count(DISTINCT who) FROM ({sql}) WHERE ts >= ? AND ts < ?", [*args, start, end]) or 0)


async def measure(ctx: Context, key: str, args: list[Any], first: date, last: date) -> dict[str, Any]:
    sql, compare = EVENTS[key]
    start, end = _ts(first), _ts(last) + DAY
    rows = await ctx.db.fetchall(
        f"SELECT CAST((ts - ?) / {DAY} AS INTEGER) AS d, count(DISTINCT who) AS n FROM ({sql})"
        " WHERE ts >= ? AND ts < ? GROUP BY d", [start, *args, start, end],
    )
    per_day = {r["d"]: r["n"] for r in rows}
    days = (last - first).days + 1
    body: dict[str, Any] = {"key": key, "unit": None}
    if compare:
        body["total"] = str(await _count(ctx, sql, args, start, end))
        body["previous_total"] = str(await _count(ctx, sql, args, start - days * DAY, start))
    else:  # Mastodon's instance measures total every follow, not just the period's
        body["total"] = str(await _count(ctx, sql, args, 0, float("inf")))
    body["data"] = [{"date": (first + timedelta(days=i)).strftime("%Y-%m-%dT00:00:00Z"), "value": str(per_day.get(i, 0))}
                    for i in range(days)]
    return body


async def measures(request: web.Request) -> web.Response:
    """POST /api/v1/admin/measures (keys[], start_at, end_at, instance_follows[domain], instance_followers[domain])"""
    await require(request, "admin:read")
    ctx = request.app[CTX]
    params = await read_params(request)
    first, last = date_range(params, datetime.now(timezone.utc).date())
    out = []
    for key in dict.fromkeys(k for k in params.list("keys") if isinstance(k, str)):
        if key not in EVENTS:
            continue
        args: list[Any] = []
        if key.startswith("instance_"):
            domain = params.sub(key).str("domain", "", max_length=300) or ""
            args = [domain.strip().lower().rstrip(".")]
        out.append(await measure(ctx, key, args, first, last))
    return json_response(out)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/admin/measures", measures)
