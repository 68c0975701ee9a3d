"""An inbound Move: a remote account says it moved; this instance's followers of it follow the new account.

Accepted only from the moving actor about itself (inbox/verify.py: 403 otherwise).
The target is fetched from its own origin now, never taken from the payload, and
must list the old actor in `alsoKnownAs`. A repeat inside the cooldown
(`[accounts] move_cooldown_days`) is ignored, so the same Move twice changes nothing.
"""

from __future__ import annotations

from typing import Any

from actors.documents import also_known_as
from actors.remote import ActorError, get_actor
from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from inbox.parse import object_id
from outbox.move import move_followers


async def on_move(ctx: Context, activity: dict[str, Any], actor: Row) -> str:
    if object_id(activity.get("object")) != actor["uri"]:
        return "ignored: a Move must move its own actor"
    target_uri = object_id(activity.get("target"))
    if target_uri is None or target_uri == actor["uri"]:
        return "ignored: no usable target"
    moved_at = actor["moved_at"]
    if moved_at is not None and now() - moved_at < ctx.config.accounts.move_cooldown_days * 86400:
        return "ignored: the actor moved within the cooldown"
    try:
        target = await get_actor(ctx, target_uri, refresh=True)
    except ActorError as exc:
        return f"ignored: target unavailable: {exc.reason}"
    if target["gone_at"] is not None or target["suspended_at"] is not None:
        return "ignored: the target is gone or suspended"
    if actor["uri"] not in also_known_as(target):
        return "ignored: the target does not list the actor in alsoKnownAs"
    count = await move_followers(ctx, actor, target)
    async with ctx.db.write() as tx:
        await tx.execute(
            "UPDATE accounts SET moved_to_uri = ?, moved_to_account_id = ?, moved_at = ? WHERE id = ?",
            (target["uri"], target["id"], now(), actor["id"]),
        )
    return f"processed: {count} followers moved"
