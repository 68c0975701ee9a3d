"""Aliases and Move: an account names the accounts that are also it, and moves its followers to one of them.

The API (GoToSocial's /api/v1/accounts/alias and /move), the settings pages and
the CLI call these. A move is checked against the target as its own server
serves it now (never a cached copy), against the password, and against the
cooldown (`[accounts] move_cooldown_days`). Local followers are moved here; remote
ones by their servers, on the signed Move sent to them (inbox/move.py is the
other side, and moves this instance's followers of a remote account the same way).
"""

from __future__ import annotations

from typing import Any

from actors.documents import actor_document, also_known_as
from actors.passwords import check_password
from actors.remote import ActorError, get_actor
from actors.webfinger import resolve_handle
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.feeds import notify
from fedi.jsonutil import dumps_str, loads_strict
from fedi.origin import is_valid_url, netloc
from outbox.actions import (
    ActionError,
    FollowOptions,
    _follower_inboxes,
    block,
    follow,
    new_activity,
    publish,
    unfollow,
)
from outbox.serialize import PUBLIC

MAX_ALIASES = 5
MAX_REF_CHARS = 2000


def _cooldown(ctx: Context) -> float:
    return ctx.config.accounts.move_cooldown_days * 86400.0


def _within_cooldown(ctx: Context, at: float | None) -> bool:
    return at is not None and now() - at < _cooldown(ctx)


async def resolve_account(ctx: Context, ref: str, *, fresh: bool = False) -> Row:
    """The account an actor URI or `@user@host` handle names, fetched through actors.remote (`fresh`: from
    its origin now, never from the cache); ActionError (422) when it cannot be had."""
    ref = ref.strip()
    if not ref or len(ref) > MAX_REF_CHARS:
        raise ActionError("an account must be given as an actor URI or @user@host")
    try:
        if is_valid_url(ref):
            uri = ref
        elif "@" in ref.removeprefix("@"):
            uri = await resolve_handle(ctx, ref)
        else:
            raise ActionError(f"{ref[:200]} is neither an actor URI nor a @user@host handle")
        if netloc(uri).lower() == ctx.domain.lower():
            row = await ctx.db.fetchone(
                "SELECT * FROM accounts WHERE uri = ? AND domain IS NULL AND actor_type != 'Application'", (uri,)
            )
            if row is None:
                raise ActionError(f"there is no local account {uri[:200]}")
        else:
            row = await get_actor(ctx, uri, refresh=fresh)
    except ActorError as exc:
        raise ActionError(f"could not reach {ref[:200]}: {exc.reason}") from None
    if row["gone_at"] is not None or row["suspended_at"] is not None:
        raise ActionError(f"{ref[:200]} is gone or suspended")
    return row


async def set_aliases(ctx: Context, account: Row, refs: list[str]) -> Row:
    """Set the account's `alsoKnownAs` to these accounts (each one fetched, so it exists); [] clears it."""
    wanted = [r for r in (ref.strip() for ref in refs) if r]
    if len(wanted) > MAX_ALIASES:
        raise ActionError(f"at most {MAX_ALIASES} aliases")
    uris: list[str] = []
    for ref in wanted:
        row = await resolve_account(ctx, ref)
        if row["id"] == account["id"]:
            raise ActionError("an account can't be an alias of itself")
        if row["uri"] not in uris:
            uris.append(row["uri"])
    async with ctx.db.write() as tx:
        await tx.execute("UPDATE accounts SET also_known_as_json = ?, updated_at = ? WHERE id = ?",
                         (dumps_str(uris), now(), account["id"]))
        updated = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (account["id"],))
        assert updated is not None
        await _publish_update(ctx, tx, updated)
    return updated


async def _publish_update(ctx: Context, tx: Any, account: Row) -> None:
    """Update(Person) to the followers, so their servers refetch the actor (aliases, movedTo)."""
    doc = actor_document(ctx.config, account)
    doc.pop("@context", None)
    row_id, activity = new_activity(ctx, tx, "Update", account, doc, to=[PUBLIC])
    await publish(ctx, tx, account, activity, await _follower_inboxes(tx, account["id"]), row_id=row_id)


async def _arrived_recently(ctx: Context, account: Row) -> bool:
    """Whether another account moved to this one within the cooldown."""
    since = now() - _cooldown(ctx)
    return await ctx.db.fetchone(
        "SELECT 1 FROM accounts WHERE moved_to_account_id = ? AND moved_at > ?", (account["id"], since)
    ) is not None


async def _password_ok(ctx: Context, account: Row, password: str) -> bool:
    user = await ctx.db.fetchone("SELECT password_hash FROM users WHERE account_id = ?", (account["id"],))
    return user is not None and bool(password) and check_password(password[:1024], user["password_hash"])


async def move_account(ctx: Context, account: Row, target_ref: str, password: str) -> Row:
    """Move a local account to the target: record it, send Move (and Update) to every follower inbox, and move
    local followers at once. Refused (ActionError 422, nothing changed) unless the password is right, neither
    account moved within the cooldown, and the target as its server serves it now lists this account."""
    if not await _password_ok(ctx, account, password):
        raise ActionError("the password is wrong")
    days = ctx.config.accounts.move_cooldown_days
    if _within_cooldown(ctx, account["moved_at"]) or await _arrived_recently(ctx, account):
        raise ActionError(f"this account moved within the last {days} days; try again later")
    target = await resolve_account(ctx, target_ref, fresh=True)
    if target["id"] == account["id"]:
        raise ActionError("an account can't move to itself")
    if account["uri"] not in also_known_as(target):
        raise ActionError(f"{target['uri']} does not list {account['uri']} among its aliases (alsoKnownAs);"
                          " add this account as an alias there first")
    if target["moved_to_uri"] or _within_cooldown(ctx, target["moved_at"]):
        raise ActionError(f"{target['uri']} has itself moved; move to where it went instead")
    async with ctx.db.write() as tx:
        ts = now()
        await tx.execute(
            "UPDATE accounts SET moved_to_uri = ?, moved_to_account_id = ?, moved_at = ?, updated_at = ? WHERE id = ?",
            (target["uri"], target["id"], ts, ts, account["id"]),
        )
        moved = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (account["id"],))
        assert moved is not None
        inboxes = await _follower_inboxes(tx, account["id"])
        row_id, activity = new_activity(ctx, tx, "Move", moved, moved["uri"], target=target["uri"],
                                        to=[moved["followers_url"]])
        await publish(ctx, tx, moved, activity, inboxes, object_uri=moved["uri"], row_id=row_id)
        await _publish_update(ctx, tx, moved)
    await move_followers(ctx, moved, target)
    return moved


async def move_followers(ctx: Context, old: Row, new: Row) -> int:
    """This instance's side of a move from `old` to `new` (either may be local or remote), as Mastodon does it:
    each local follower of `old` follows `new` (a locked one gets a request), keeps its lists and follow options,
    unfollows `old` and is notified (`move`); local blocks and mutes of `old` are carried to `new`.
    Followers who block `new` are left as they are. Returns how many followers moved."""
    followers = await ctx.db.fetchall(
        "SELECT a.*, f.show_reblogs AS f_reblogs, f.notify AS f_notify, f.languages_json AS f_languages"
        " FROM follows f JOIN accounts a ON a.id = f.account_id"
        " WHERE f.target_account_id = ? AND f.state = 'accepted' AND a.domain IS NULL AND a.suspended_at IS NULL"
        " AND a.id != ? AND NOT EXISTS (SELECT 1 FROM blocks b WHERE b.account_id = a.id AND b.target_account_id = ?)",
        (old["id"], new["id"], new["id"]),
    )
    for follower in followers:
        await _move_follower(ctx, follower, old, new)
    for blocker in await ctx.db.fetchall(
        "SELECT a.* FROM blocks b JOIN accounts a ON a.id = b.account_id"
        " WHERE b.target_account_id = ? AND a.domain IS NULL AND a.id != ?", (old["id"], new["id"])
    ):
        await block(ctx, blocker, new)
    async with ctx.db.write() as tx:
        for mute in await tx.fetchall(
            "SELECT m.* FROM mutes m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.target_account_id = ? AND a.domain IS NULL AND m.account_id != ?", (old["id"], new["id"])
        ):
            await tx.execute(
                "INSERT INTO mutes (id, account_id, target_account_id, notifications, expires_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, target_account_id) DO NOTHING",
                (tx.new_id(), mute["account_id"], new["id"], mute["notifications"], mute["expires_at"], now()),
            )
    return len(followers)


async def _move_follower(ctx: Context, follower: Row, old: Row, new: Row) -> None:
    languages = loads_strict(follower["f_languages"]) if follower["f_languages"] else []
    options = FollowOptions(reblogs=bool(follower["f_reblogs"]), notify=bool(follower["f_notify"]),
                            languages=tuple(languages) if isinstance(languages, list) else ())
    async with ctx.db.write() as tx:
        await tx.execute(
            "INSERT INTO list_accounts (list_id, account_id) SELECT la.list_id, ? FROM list_accounts la"
            " JOIN lists l ON l.id = la.list_id WHERE l.account_id = ? AND la.account_id = ?"
            " ON CONFLICT (list_id, account_id) DO NOTHING",
            (new["id"], follower["id"], old["id"]),
        )
    await follow(ctx, follower, new, options)
    await unfollow(ctx, follower, old)
    async with ctx.db.write() as tx:
        await notify(tx, follower["id"], "move", old["id"])
