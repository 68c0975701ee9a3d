"""Reading accounts: get, lookup, search, an account's statuses, followers, following, lists, featured tags.

Profile editing lives in `fedi/api/profile.py`, the social graph verbs in
`fedi/api/relationships.py`, sign-up in `fedi/api/registration.py`.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.remote import ActorError, get_actor
from actors.webfinger import resolve_handle
from fedi.api import entities
from fedi.api.auth import Auth, optional, require
from fedi.api.paging import fetch_page, page_from, paged_json
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.api.visibility import parse_id
from fedi.clock import iso
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError

#: Accounts the API can show: never the instance actor, which is plumbing.
SHOWN = "actor_type != 'Application'"
MAX_IDS = 100


async def find_account(ctx: Context, raw_id: str | None) -> Row:
    """The account with this path id; 404 for anything else."""
    row = await ctx.db.fetchone(f"SELECT * FROM accounts WHERE id = ? AND {SHOWN}", (parse_id(raw_id),))
    if row is None:
        raise HttpError(404, "Record not found")
    return row


async def accounts_by_ids(ctx: Context, params: Params, *, with_suspended: bool = False) -> list[Row]:
    """The accounts named by `id[]`, in the order asked, unknown and malformed ids skipped."""
    wanted = list(dict.fromkeys(int(i) for i in params.list("id")
                                if isinstance(i, (str, int)) and str(i).isdigit() and len(str(i)) < 20))[:MAX_IDS]
    if not wanted:
        return []
    suspended = "" if with_suspended else " AND suspended_at IS NULL"
    rows = {r["id"]: r for r in await ctx.db.fetchall(
        f"SELECT * FROM accounts WHERE id IN ({','.join('?' for _ in wanted)}) AND {SHOWN}{suspended}", wanted)}
    return [rows[i] for i in wanted if i in rows]


async def account_list(request: web.Request, ctx: Context, rows: list[Row], key: str) -> web.Response:
    """Accounts answered in row order, paged by the `key` column (a follows/blocks/mutes row id)."""
    by_id = await entities.accounts(ctx, rows)
    return paged_json(request, [by_id[r["id"]] for r in rows], [r[key] for r in rows])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}"""
    await optional(request, "read:accounts")
    ctx = request.app[CTX]
    return json_response(await entities.account(ctx, await find_account(ctx, request.match_info["id"])))


async def many(request: web.Request) -> web.Response:
    """GET /api/v1/accounts?id[]=: several accounts at once, in the order asked."""
    await optional(request, "read:accounts")
    ctx = request.app[CTX]
    rows = await accounts_by_ids(ctx, await read_params(request), with_suspended=True)
    by_id = await entities.accounts(ctx, rows)
    return json_response([by_id[r["id"]] for r in rows])


async def lookup(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/lookup?acct=: a known account by handle, without WebFinger."""
    await optional(request, "read:accounts")
    ctx = request.app[CTX]
    params = await read_params(request)
    handle = (params.str("acct", max_length=500) or "").strip().removeprefix("@")
    user, sep, domain = handle.partition("@")
    if not sep or domain.lower() == ctx.domain.lower():
        row = await ctx.db.fetchone(
            f"SELECT * FROM accounts WHERE domain IS NULL AND lower(username) = lower(?) AND {SHOWN}", (user,)
        )
    else:
        row = await ctx.db.fetchone(
            "SELECT * FROM accounts WHERE lower(domain) = lower(?) AND lower(username) = lower(?)", (domain, user)
        )
    if row is None:
        raise HttpError(404, "Record not found")
    return json_response(await entities.account(ctx, row))


def _like(text: str) -> str:
    """A LIKE prefix pattern with the wildcards in `text` escaped."""
    return text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def _resolve(ctx: Context, handle: str) -> Row | None:
    """A remote account by user@domain over WebFinger and ActivityPub; None when it cannot be had."""
    try:
        row = await get_actor(ctx, await resolve_handle(ctx, handle))
    except ActorError:
        return None
    return row if row["actor_type"] != "Application" and row["suspended_at"] is None else None


async def search(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/search: local prefix search; `resolve` fetches a remote handle (token needed)."""
    params = await read_params(request)
    following = params.bool("following")
    auth: Auth | None = await require(request, "read:accounts") if following else await optional(request, "read:accounts")
    ctx = request.app[CTX]
    query = (params.str("q", max_length=500) or "").strip().removeprefix("@")
    limit = params.int("limit", 40, low=1, high=80) or 40
    offset = params.int("offset", 0, low=0, high=10_000) or 0
    if not query:
        return json_response([])
    viewer = auth.account if auth else None
    user, sep, domain = query.partition("@")
    if sep:
        where = ["lower(a.username) = lower(?)", "lower(coalesce(a.domain, ?)) LIKE ? ESCAPE '\\'"]
        args: list[Any] = [user, ctx.domain.lower(), _like(domain)]
    else:
        where = ["(lower(a.username) LIKE ? ESCAPE '\\' OR lower(a.display_name) LIKE ? ESCAPE '\\'"
                 " OR lower(a.display_name) LIKE ? ESCAPE '\\')"]
        args = [_like(query), _like(query), "% " + _like(query)]
    where += ["a.actor_type != 'Application'", "a.suspended_at IS NULL", "a.gone_at IS NULL"]
    if following and viewer is not None:
        where.append("EXISTS (SELECT 1 FROM follows f WHERE f.account_id = ? AND f.target_account_id = a.id"
                     " AND f.state = 'accepted')")
        args.append(viewer["id"])
    rows = await ctx.db.fetchall(
        f"SELECT a.* FROM accounts a WHERE {' AND '.join(where)}"
        " ORDER BY lower(a.username) = lower(?) DESC, a.domain IS NULL DESC, a.id LIMIT ? OFFSET ?",
        [*args, user, limit, offset],
    )
    if sep and params.bool("resolve") and viewer is not None and offset == 0 and not following:
        resolved = await _resolve(ctx, query)
        if resolved is not None:
            rows = [resolved, *(r for r in rows if r["id"] != resolved["id"])][:limit]
    by_id = await entities.accounts(ctx, rows)
    return json_response([by_id[r["id"]] for r in rows])


def _visible_to(viewer: Row | None, target: Row) -> tuple[str, list[Any]]:
    """SQL for the account's statuses this viewer may see — the rule of fedi/api/visibility.can_see."""
    if viewer is None:
        return "s.visibility IN ('public', 'unlisted')", []
    if viewer["id"] == target["id"]:
        return "1", []
    return (
        "(s.visibility IN ('public', 'unlisted')"
        " OR (s.visibility = 'private' AND EXISTS (SELECT 1 FROM follows f WHERE f.account_id = ?"
        "  AND f.target_account_id = s.account_id AND f.state = 'accepted'))"
        " OR EXISTS (SELECT 1 FROM mentions m WHERE m.status_id = s.id AND m.account_id = ?))",
        [viewer["id"], viewer["id"]],
    )


async def statuses(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}/statuses (only_media, exclude_replies, exclude_reblogs, pinned, tagged)."""
    auth = await optional(request, "read:statuses")
    ctx = request.app[CTX]
    target = await find_account(ctx, request.match_info["id"])
    params = await read_params(request)
    page = page_from(params)
    viewer = auth.account if auth else None
    if target["suspended_at"] is not None or (viewer is not None and await ctx.db.fetchone(
        "SELECT 1 FROM blocks WHERE account_id = ? AND target_account_id = ?", (target["id"], viewer["id"])
    )):
        return json_response([])
    seen, args = _visible_to(viewer, target)
    where = ["s.account_id = ?", "s.deleted_at IS NULL", seen]
    args = [target["id"], *args]
    if params.bool("only_media"):
        where.append("EXISTS (SELECT 1 FROM media_attachments m WHERE m.status_id = s.id)")
    if params.bool("exclude_replies"):
        where.append("((s.in_reply_to_id IS NULL AND s.in_reply_to_uri IS NULL) OR s.in_reply_to_account_id = s.account_id)")
    if params.bool("exclude_reblogs"):
        where.append("s.reblog_of_id IS NULL")
    if params.bool("pinned"):
        where.append("EXISTS (SELECT 1 FROM status_pins p WHERE p.status_id = s.id AND p.account_id = s.account_id)")
    tagged = params.str("tagged", max_length=200)
    if tagged:
        where.append("EXISTS (SELECT 1 FROM status_tags st JOIN tags t ON t.id = st.tag_id"
                     " WHERE st.status_id = s.id AND t.name = ?)")
        args.append(tagged.lower().removeprefix("#"))
    rows = await fetch_page(ctx, page, f"SELECT s.* FROM statuses s WHERE {' AND '.join(where)}", args, "s.id")
    body = await entities.statuses(ctx, rows, viewer)
    return paged_json(request, body, [r["id"] for r in rows])


async def _follow_page(request: web.Request, mine: str, theirs: str) -> web.Response:
    """Followers (`mine` = target side) or following, paged by the follows row id."""
    await optional(request, "read:accounts")
    ctx = request.app[CTX]
    target = await find_account(ctx, request.match_info["id"])
    page = page_from(await read_params(request), default=40, maximum=80)
    rows = await fetch_page(
        ctx, page, f"SELECT f.id AS follow_id, a.* FROM follows f JOIN accounts a ON a.id = f.{theirs}"
        f" WHERE f.{mine} = ? AND f.state = 'accepted' AND a.suspended_at IS NULL", [target["id"]], "f.id")
    return await account_list(request, ctx, rows, "follow_id")


async def followers(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}/followers"""
    return await _follow_page(request, "target_account_id", "account_id")


async def following(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}/following"""
    return await _follow_page(request, "account_id", "target_account_id")


async def lists(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}/lists: the caller's own lists holding this account (never anyone else's)."""
    auth = await require(request, "read:lists")
    ctx = request.app[CTX]
    target = await find_account(ctx, request.match_info["id"])
    rows = await ctx.db.fetchall(
        "SELECT l.* FROM lists l JOIN list_accounts la ON la.list_id = l.id"
        " WHERE l.account_id = ? AND la.account_id = ? ORDER BY l.id",
        (auth.account["id"], target["id"]),
    )
    return json_response([{"id": str(r["id"]), "title": r["title"], "replies_policy": r["replies_policy"],
                           "exclusive": bool(r["exclusive"])} for r in rows])


async def featured_tags(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/{id}/featured_tags"""
    await optional(request, "read:accounts")
    ctx = request.app[CTX]
    target = await find_account(ctx, request.match_info["id"])
    rows = await ctx.db.fetchall(
        "SELECT ft.id, t.name, count(s.id) AS uses, max(s.published_at) AS last FROM featured_tags ft"
        " JOIN tags t ON t.id = ft.tag_id"
        " LEFT JOIN status_tags st ON st.tag_id = ft.tag_id"
        " LEFT JOIN statuses s ON s.id = st.status_id AND s.account_id = ft.account_id AND s.deleted_at IS NULL"
        "  AND s.visibility IN ('public', 'unlisted')"
        " WHERE ft.account_id = ? GROUP BY ft.id ORDER BY ft.id",
        (target["id"],),
    )
    profile = target["url"] or target["uri"]
    return json_response([{
        "id": str(r["id"]), "name": r["name"], "url": f"{profile}/tagged/{r['name']}",
        "statuses_count": str(r["uses"]), "last_status_at": iso(r["last"])[:10] if r["last"] else None,
    } for r in rows])


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/accounts", many)
    r.add_get("/api/v1/accounts/lookup", lookup)
    r.add_get("/api/v1/accounts/search", search)
    r.add_get("/api/v1/accounts/{id:\\d+}", show)
    r.add_get("/api/v1/accounts/{id:\\d+}/statuses", statuses)
    r.add_get("/api/v1/accounts/{id:\\d+}/followers", followers)
    r.add_get("/api/v1/accounts/{id:\\d+}/following", following)
    r.add_get("/api/v1/accounts/{id:\\d+}/lists", lists)
    r.add_get("/api/v1/accounts/{id:\\d+}/featured_tags", featured_tags)
