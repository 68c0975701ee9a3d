"""Remote interaction, both ways: `/authorize_interaction` and the profile page's "follow from your instance" form.

Other servers send our users to `/authorize_interaction?uri=…` (the subscribe template in
our WebFinger answers) to follow an account or open a post seen elsewhere. The page needs
the browser session of the admin pages (`fedi.web.session`, which any local user can
sign in to), resolves `uri` with the search API's resolver, and follows through the
follow API's own step, so blocks and domain blocks refuse here exactly as there.

The profile form is the reverse: a visitor names their account on another server, we
read that server's WebFinger (through the guarded client) and send them to its template.
Anyone may submit it, so it is rate limited like a sign-in and stores nothing.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from actors.local import get_local_account
from actors.remote import ActorError
from actors.webfinger import BadHandle, BadResource, lookup, subscribe_template
from fedi.api.params import Params
from fedi.api.ratelimit import RATE_LIMITER
from fedi.api.relationships import follow_with_options
from fedi.api.search import HANDLE, lookup_address
from fedi.api.visibility import can_see
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.origin import is_valid_url, netloc
from fedi.web.render import render
from fedi.web.session import NO_STORE, Session, Stop, base_context, current_session, read_form, stops
from outbox.actions import ActionError

PATH = "/authorize_interaction"
MAX_URI = 2048
MAX_HANDLE = 320
FORM_BYTES = 16_384


def _page(ctx: Context, template: str, title: str, context: dict[str, Any], status: int = 200) -> web.Response:
    return render(template, {**base_context(ctx, title), **context}, status=status, headers=NO_STORE)


def _stop_page(request: web.Request, status: int, title: str, text: str, link: tuple[str, str] | None = None) -> Stop:
    """A short page for refusals and failures, as `Stop` so any handler step can end with it."""
    ctx = request.app[CTX]
    return Stop(_page(ctx, "interaction_message.html", title, {"message": text, "link": link}, status))


async def _signed_in(request: web.Request) -> Session:
    """The signed-in local user, or a 401 page pointing at the sign-in form (and back here)."""
    session = await current_session(request)
    if session is None:
        back = request.raw_path if request.method == "GET" else PATH
        raise _stop_page(request, 401, "Sign in first",
                         f"You need to be signed in to {request.app[CTX].config.instance.name} to do this. "
                         f"Once signed in, open this page again: {back}",
                         ("/admin/login?" + urlencode({"next": back}), "Sign in"))
    return session


def _handle_of(ctx: Context, account: Row) -> str:
    return f"@{account['username']}@{account['domain'] or ctx.domain}"


async def _resolve(request: web.Request, uri: str) -> tuple[Row | None, Row | None]:
    """(account, status) named by `uri`: an acct: handle or an http(s) URL; a 400 page for anything else."""
    ctx = request.app[CTX]
    query = uri[5:] if uri[:5].lower() == "acct:" else uri
    handle = HANDLE.match(query)
    if handle is None and not is_valid_url(query):
        raise _stop_page(request, 400, "Not an address", "This is neither a user@domain handle nor an http(s) URL.")
    if handle is not None and handle.group(2).lower() == ctx.domain.lower():
        try:  # the search resolver leaves our own handles to its local search
            return await lookup(ctx, "acct:" + query.lstrip("@")), None
        except BadResource:
            return None, None
    return await lookup_address(ctx, query, True) or (None, None)


async def _follow_state(ctx: Context, me: Row, target: Row) -> str | None:
    if me["id"] == target["id"]:
        return "self"
    state = await ctx.db.fetchval(
        "SELECT state FROM follows WHERE account_id = ? AND target_account_id = ?", (me["id"], target["id"]))
    return {"accepted": "following", "pending": "requested"}.get(state) if state else None


async def show(request: web.Request) -> web.StreamResponse:
    """GET /authorize_interaction?uri=: what `uri` names, with a Follow button for an account."""
    session = await _signed_in(request)
    ctx = request.app[CTX]
    uri = request.query.get("uri", "").strip()
    if not uri or len(uri) > MAX_URI:
        raise _stop_page(request, 400, "Nothing to open", "The link did not say which account or post to open.")
    account, status = await _resolve(request, uri)
    me = session.account
    if account is not None and account["suspended_at"] is None and account["id"] != ctx.instance_actor_id:
        return _page(ctx, "interaction.html", f"Follow {_handle_of(ctx, account)}", {
            "me": me, "csrf": session.csrf, "account": account, "handle": _handle_of(ctx, account),
            "display_name": account["display_name"] or account["username"],
            "state": await _follow_state(ctx, me, account),
        })
    if status is not None and await can_see(ctx, status, me):
        author = await ctx.db.fetchrow("SELECT * FROM accounts WHERE id = ?", (status["account_id"],))
        return _page(ctx, "interaction.html", f"Post by {_handle_of(ctx, author)}", {
            "me": me, "status": status, "author": author, "handle": _handle_of(ctx, author),
            "author_link": PATH + "?" + urlencode({"uri": author["uri"]}),
        })
    raise _stop_page(request, 404, "Not found",
                     f"Nothing could be found at {uri[:200]}: the address is unknown, unreachable or not allowed.")


async def follow(request: web.Request) -> web.StreamResponse:
    """POST /authorize_interaction (csrf, account_id): follow, then back to the page, which shows the new state."""
    session = await _signed_in(request)
    ctx = request.app[CTX]
    form = await read_form(request, FORM_BYTES)
    given = form.get("csrf")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), session.csrf.encode()):
        raise _stop_page(request, 403, "Form expired", "The form did not carry this session's token, so nothing "
                         "was changed. Go back, reload the page and try again.")
    raw = form.get("account_id")
    target = None
    if isinstance(raw, str) and raw.isdigit() and len(raw) < 19:
        target = await ctx.db.fetchone("SELECT * FROM accounts WHERE id = ? AND id != ? AND suspended_at IS NULL",
                                       (int(raw), ctx.instance_actor_id))
    if target is None:
        raise _stop_page(request, 404, "Not found", "There is no such account (any more).")
    try:  # a form sent again leaves an existing follow (and the options set for it elsewhere) alone
        if await _follow_state(ctx, session.account, target) in (None, "self"):
            await follow_with_options(ctx, session.account, target, Params())
    except ActionError as exc:
        raise _stop_page(request, exc.status, "Not followed", str(exc)) from None
    except HttpError as exc:
        raise _stop_page(request, exc.status, "Not followed", exc.message) from None
    return web.Response(status=303, headers={"Location": PATH + "?" + urlencode({"uri": target["uri"]}), **NO_STORE})


def _rate_limited(request: web.Request) -> bool:
    """Each form sends us to another server, so an address gets as many as it gets sign-in attempts."""
    limiter = request.app.get(RATE_LIMITER)
    if limiter is None:
        return False
    hit = limiter.hit("remote_follow", limiter.limits.login_ip, f"ip:{limiter.client_ip(request)}", now())
    return hit.count > hit.rule.limit


async def remote_follow(request: web.Request) -> web.StreamResponse:
    """POST /users/{username}/remote_follow (acct): 303 to the visitor's own server, filled in with our actor."""
    ctx = request.app[CTX]
    account = await get_local_account(ctx.db, request.match_info["username"])
    if account is None or account["suspended_at"] is not None:
        raise _stop_page(request, 404, "Not found", "There is no such account here.")
    back = (account["url"] or account["uri"], f"Back to {_handle_of(ctx, account)}")
    if _rate_limited(request):
        raise _stop_page(request, 429, "Too many requests", "Too many remote follows from your address; "
                         "wait a few minutes and try again.", back)
    handle = (await read_form(request, FORM_BYTES)).get("acct")
    handle = handle.strip() if isinstance(handle, str) else ""
    if not handle or len(handle) > MAX_HANDLE:
        raise _stop_page(request, 400, "Which account?", "Type your own handle, such as you@your.server.", back)
    try:
        template = await subscribe_template(ctx, handle)
    except BadHandle:
        raise _stop_page(request, 400, "Not a handle",
                         f"{handle} is not a user@domain handle; type it as you@your.server.", back) from None
    except ActorError as exc:
        raise _stop_page(request, 404, "Your server could not be asked",
                         f"Could not find where {handle} follows from: {exc.reason}. Instead, search for "
                         f"{_handle_of(ctx, account)} in your fediverse app.", back) from None
    location = template.replace("{uri}", quote(account["uri"], safe=""))
    if not is_valid_url(location):
        raise _stop_page(request, 404, "Your server could not be asked",
                         f"{netloc(template) or 'Your server'} gave an unusable remote follow address.", back)
    return web.Response(status=303, headers={"Location": location, **NO_STORE})


def setup(app: web.Application) -> None:
    app.router.add_get(PATH, stops(show))
    app.router.add_post(PATH, stops(follow))
    app.router.add_post("/users/{username}/remote_follow", stops(remote_follow))
