"""The social graph seen from the signed-in user: Relationship entities and the verbs that change them.

Every verb answers the new Relationship, as Mastodon does. Follow, unfollow,
block and follow-request answers go through `outbox.actions` (they federate);
mutes, notes and removing followers through `outbox.social`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.accounts import account_list, accounts_by_ids, find_account
from fedi.api.auth import require
from fedi.api.paging import fetch_page, page_from
from fedi.api.params import Params, read_params
from fedi.api.respond import json_response
from fedi.clock import iso, now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import Handler, HttpError, refusing
from fedi.jsonutil import loads_strict
from outbox import actions, social
from outbox.actions import ActionError

LANGUAGE = re.compile(r"^[a-z]{2,3}$")
MAX_LANGUAGES = 100


def _ph(values: Sequence[Any]) -> str:
    return ",".join("?" for _ in values)


async def relationships(ctx: Context, viewer: Row, targets: Sequence[Row]) -> list[dict[str, Any]]:
    """Relationship entities from `viewer` to each target, in a fixed number of queries."""
    if not targets:
        return []
    ids = [t["id"] for t in targets]
    v = viewer["id"]

    async def outgoing(table: str, columns: str, extra: str = "", *args: Any) -> dict[int, Row]:
        """Rows of `table` from the viewer to the targets, by target id."""
        sql = (f"SELECT target_account_id, {columns} FROM {table}"
               f" WHERE account_id = ? AND target_account_id IN ({_ph(ids)}){extra}")
        return {r[0]: r for r in await ctx.db.fetchall(sql, [v, *ids, *args])}

    async def incoming(table: str, columns: str) -> dict[int, Row]:
        """Rows of `table` from the targets to the viewer, by target id."""
        sql = f"SELECT account_id, {columns} FROM {table} WHERE target_account_id = ? AND account_id IN ({_ph(ids)})"
        return {r[0]: r for r in await ctx.db.fetchall(sql, [v, *ids])}

    out_follows = await outgoing("follows", "state, show_reblogs, notify, languages_json")
    in_follows = await incoming("follows", "state")
    blocking, blocked_by = await outgoing("blocks", "1"), await incoming("blocks", "1")
    mutes = await outgoing("mutes", "notifications, expires_at", " AND (expires_at IS NULL OR expires_at > ?)", now())
    notes = await outgoing("account_notes", "comment")
    domains = {r[0] for r in await ctx.db.fetchall("SELECT domain FROM user_domain_blocks WHERE account_id = ?", (v,))}
    result = []
    for t in targets:
        out, back, muted = out_follows.get(t["id"]), in_follows.get(t["id"]), mutes.get(t["id"])
        result.append({
            "id": str(t["id"]),
            "following": out is not None and out["state"] == "accepted",
            "showing_reblogs": out is not None and bool(out["show_reblogs"]),
            "notifying": out is not None and bool(out["notify"]),
            "languages": loads_strict(out["languages_json"]) if out is not None and out["languages_json"] else None,
            "followed_by": back is not None and back["state"] == "accepted",
            "blocking": t["id"] in blocking,
            "blocked_by": t["id"] in blocked_by,
            "muting": muted is not None,
            "muting_notifications": bool(muted and muted["notifications"]),
            "muting_expires_at": iso(muted["expires_at"]) if muted and muted["expires_at"] else None,
            "requested": out is not None and out["state"] == "pending",
            "requested_by": back is not None and back["state"] == "pending",
            "domain_blocking": t["domain"] is not None and t["domain"].lower() in domains,
            "endorsed": False,
            "note": notes[t["id"]]["comment"] if t["id"] in notes else "",
        })
    return result


async def _relationship(ctx: Context, viewer: Row, target: Row) -> web.Response:
    return json_response((await relationships(ctx, viewer, [target]))[0])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/relationships?id[]="""
    auth = await require(request, "read:follows")
    ctx = request.app[CTX]
    params = await read_params(request)
    targets = await accounts_by_ids(ctx, params, with_suspended=params.bool("with_suspended"))
    return json_response(await relationships(ctx, auth.account, targets))


async def familiar_followers(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/familiar_followers?id[]=: who among the people I follow follows each account."""
    auth = await require(request, "read:follows")
    ctx = request.app[CTX]
    result = []
    for target in await accounts_by_ids(ctx, await read_params(request)):
        rows = await ctx.db.fetchall(
            "SELECT a.* FROM follows f JOIN follows mine ON mine.target_account_id = f.account_id"
            " JOIN accounts a ON a.id = f.account_id"
            " WHERE f.target_account_id = ? AND f.state = 'accepted' AND mine.account_id = ? AND mine.state = 'accepted'"
            " AND a.suspended_at IS NULL ORDER BY f.id DESC LIMIT 40",
            (target["id"], auth.account["id"]),
        )
        by_id = await entities.accounts(ctx, rows)
        result.append({"id": str(target["id"]), "accounts": [by_id[r["id"]] for r in rows]})
    return json_response(result)


Verb = Callable[[Context, Row, Row, Params], Awaitable[None]]


def _refused(exc: ActionError) -> HttpError:
    """The action's own status and message, without the `Validation failed:` prefix statuses' verbs add."""
    return HttpError(exc.status, str(exc))


def _verb(scope: str, action: Verb) -> Handler:
    """A POST /api/v1/accounts/{id}/<verb> handler: scope check, target, action, new Relationship."""

    @refusing(ActionError, _refused)
    async def handler(request: web.Request) -> web.Response:
        auth = await require(request, scope)
        ctx = request.app[CTX]
        target = await find_account(ctx, request.match_info["id"])
        params = await read_params(request)
        await action(ctx, auth.account, target, params)
        return await _relationship(ctx, auth.account, target)

    handler.__doc__ = action.__doc__
    return handler


def _follow_options(params: Params) -> actions.FollowOptions:
    """reblogs, notify and languages[] as given; an absent one stays as it was (a new follow takes the default)."""
    def flag(name: str) -> bool | None:
        return None if params.get(name) is None else params.bool(name)

    languages: tuple[str, ...] | None = None
    if params.get("languages") is not None or params.get("languages[]") is not None:
        given = params.list("languages")
        if not all(isinstance(lang, str) and (lang == "" or LANGUAGE.match(lang)) for lang in given):
            raise HttpError(422, "Validation failed: languages must be ISO 639-1 codes")
        languages = tuple(dict.fromkeys(lang for lang in given if lang))  # blanks dropped: [""] means every language
        if len(languages) > MAX_LANGUAGES:
            raise HttpError(422, f"Validation failed: at most {MAX_LANGUAGES} languages")
    return actions.FollowOptions(reblogs=flag("reblogs"), notify=flag("notify"), languages=languages)


async def follow_with_options(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/follow (reblogs, notify, languages[]; again on a follow: changes them)"""
    options = _follow_options(params)
    refused = await ctx.db.fetchone(
        "SELECT 1 FROM blocks WHERE (account_id = ? AND target_account_id = ?) OR (account_id = ? AND target_account_id = ?)"
        " UNION ALL SELECT 1 FROM user_domain_blocks WHERE account_id = ? AND domain = lower(?)",
        (me["id"], target["id"], target["id"], me["id"], me["id"], target["domain"] or ""),
    )
    if refused:
        raise HttpError(403, "This action is not allowed")
    await actions.follow(ctx, me, target, options)


async def _unfollow(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/unfollow (also withdraws a pending request)"""
    await actions.unfollow(ctx, me, target)


async def _block(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/block"""
    if target["id"] == me["id"]:
        raise ActionError("you can't block yourself")
    await actions.block(ctx, me, target)


async def _unblock(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/unblock"""
    await actions.unblock(ctx, me, target)


async def _mute(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/mute (notifications, duration in seconds; 0 = indefinite)"""
    duration = params.int("duration", 0, low=0, high=10 * 365 * 86400) or 0
    await social.mute(ctx, me, target, notifications=params.bool("notifications", True), duration=duration)


async def _unmute(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/unmute"""
    await social.unmute(ctx, me, target)


async def _note(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/note (comment; empty clears it)"""
    await social.set_note(ctx, me, target, params.str("comment", "", max_length=social.MAX_NOTE_CHARS) or "")


async def _remove_from_followers(ctx: Context, me: Row, target: Row, params: Params) -> None:
    """POST /api/v1/accounts/{id}/remove_from_followers"""
    await social.remove_from_followers(ctx, me, target)


async def _authorize(ctx: Context, me: Row, follower: Row, params: Params) -> None:
    """POST /api/v1/follow_requests/{id}/authorize"""
    await actions.answer_follow_request(ctx, me, follower, True)


async def _reject(ctx: Context, me: Row, follower: Row, params: Params) -> None:
    """POST /api/v1/follow_requests/{id}/reject"""
    await actions.answer_follow_request(ctx, me, follower, False)


async def follow_requests(request: web.Request) -> web.Response:
    """GET /api/v1/follow_requests: accounts waiting for my answer, paged by the follows row."""
    auth = await require(request, "read:follows")
    ctx = request.app[CTX]
    page = page_from(await read_params(request), default=40, maximum=80)
    rows = await fetch_page(
        ctx, page, "SELECT f.id AS follow_id, a.* FROM follows f JOIN accounts a ON a.id = f.account_id"
        " WHERE f.target_account_id = ? AND f.state = 'pending'", [auth.account["id"]], "f.id")
    return await account_list(request, ctx, rows, "follow_id")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/accounts/relationships", show)
    r.add_get("/api/v1/accounts/familiar_followers", familiar_followers)
    for verb, scope, action in (
        ("follow", "write:follows", follow_with_options), ("unfollow", "write:follows", _unfollow),
        ("remove_from_followers", "write:follows", _remove_from_followers),
        ("block", "write:blocks", _block), ("unblock", "write:blocks", _unblock),
        ("mute", "write:mutes", _mute), ("unmute", "write:mutes", _unmute),
        ("note", "write:accounts", _note),
    ):
        r.add_post(f"/api/v1/accounts/{{id:\\d+}}/{verb}", _verb(scope, action))
    r.add_get("/api/v1/follow_requests", follow_requests)
    r.add_post("/api/v1/follow_requests/{id:\\d+}/authorize", _verb("write:follows", _authorize))
    r.add_post("/api/v1/follow_requests/{id:\\d+}/reject", _verb("write:follows", _reject))
