"""Mastodon's paging: `max_id`, `since_id`, `min_id`, `limit`, and the `Link` header.

`max_id`/`since_id` page newest-first; `min_id` pages forward from a point
(oldest-first in the query, newest-first in the answer). The Link header names
`next` (older) then `prev` (newer), with absolute URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from fedi.api.params import Params
from fedi.api.respond import json_response
from fedi.context import CTX, Context
from fedi.db import Row


@dataclass(frozen=True)
class Page:
    max_id: int | None
    since_id: int | None
    min_id: int | None
    limit: int

    def clause(self, column: str = "id") -> tuple[str, list[Any], str]:
        """(SQL condition, its parameters, ORDER BY) for this page on `column`."""
        conds, args = [], []
        if self.max_id is not None:
            conds.append(f"{column} < ?")
            args.append(self.max_id)
        if self.since_id is not None:
            conds.append(f"{column} > ?")
            args.append(self.since_id)
        if self.min_id is not None:
            conds.append(f"{column} > ?")
            args.append(self.min_id)
        order = f"{column} ASC" if self.min_id is not None else f"{column} DESC"
        return (" AND ".join(conds) or "1"), args, order

    def arrange(self, rows: list[Any]) -> list[Any]:
        """Rows fetched for a min_id page come oldest-first; answer newest-first."""
        return list(reversed(rows)) if self.min_id is not None else rows


def _id(params: Params, name: str) -> int | None:
    value = params.get(name)
    if value in (None, ""):
        return None
    if not isinstance(value, (str, int)) or not str(value).isdigit() or len(str(value)) > 19:
        return 0 if name != "max_id" else None
    return int(value)


def page_from(params: Params, default: int = 20, maximum: int = 40) -> Page:
    return Page(
        max_id=_id(params, "max_id"),
        since_id=_id(params, "since_id"),
        min_id=_id(params, "min_id"),
        limit=params.int("limit", default, low=1, high=maximum) or default,
    )


async def fetch_page(ctx: Context, page: Page, sql: str, args: Sequence[Any] = (), column: str = "id") -> list[Row]:
    """The rows of `sql` on this page of `column`, newest first.

    `sql` ends in its WHERE conditions (whose `?` are `args`), so the page's own
    conditions, order and limit can follow it.
    """
    cond, cond_args, order = page.clause(column)
    return page.arrange(await ctx.db.fetchall(f"{sql} AND {cond} ORDER BY {order} LIMIT ?",
                                              [*args, *cond_args, page.limit]))


def link_header(request: web.Request, ids: Sequence[int]) -> str | None:
    """`Link: <…max_id=oldest>; rel="next", <…min_id=newest>; rel="prev"` for a non-empty page."""
    if not ids:
        return None
    base = request.app[CTX].base_url + request.path
    keep = {k: v for k, v in request.query.items() if k not in ("max_id", "min_id", "since_id")}
    nxt = urlencode({**keep, "max_id": str(min(ids))})
    prev = urlencode({**keep, "min_id": str(max(ids))})
    return f'<{base}?{nxt}>; rel="next", <{base}?{prev}>; rel="prev"'


def paged_json(request: web.Request, body: Any, ids: Sequence[int]) -> web.Response:
    link = link_header(request, ids)
    return json_response(body, headers={"Link": link} if link else None)
