"""What a domain rule does to the accounts and follows it covers, applied in the changing transaction.

`reconcile` brings every known account under the changed rules to the state the
rules now ask for, so adding, changing and lifting a block are one code path:

* suspend: the domain's accounts get `suspended_at` = the rule's `created_at` (that
  value is the marker: only accounts whose flag is NULL or carries another rule's
  marker are touched, so a moderator's own suspension survives a lift — Mastodon does
  the same); their posts leave home feeds; follows both ways are cut — `Undo(Follow)`
  for ours, `Reject(Follow)` for theirs — and kept in `severed_follows`; each local
  user who lost someone gets a `severed_relationships` notification.
* silence: `silenced_at` = the rule's `created_at`, the same way.
* lifted or downgraded: markers cleared and severed follows restored. Ours are
  followed again with a fresh `Follow` (the peer answers as usual). Theirs are
  re-created here and confirmed with `Accept` of their original `Follow`: a peer
  that never processed our `Reject` still follows and sees a harmless repeat; a fedi
  peer that did process it kept the follow in its own `severed_follows` (state
  'rejected') and reinstates it on that `Accept` (inbox/handlers). Other software
  that dropped the follow ignores the `Accept`.

Only follows between a local and a remote account are cut. Pending requests from the
domain are rejected and not kept (a rejected request is not a relationship).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.jsonutil import dumps_str
from fedi.moderation.domains import Rules, host_of, rule_for, suffixes
from outbox.actions import new_activity, publish, send_follow_answer

IDS = "(SELECT value FROM json_each(?))"
LOCAL = "(SELECT id FROM accounts WHERE domain IS NULL)"


async def reports_rejected(ctx: Context, domain: str) -> bool:
    """Whether an inbound `Flag` from this domain is to be ignored (reject_reports, or suspended)."""
    rule = await rule_for(ctx, domain)
    return rule is not None and (bool(rule["reject_reports"]) or rule["severity"] == "suspend")


def _flag(current: float | None, wanted: float | None, markers: set[float]) -> float | None:
    """A suspended_at/silenced_at value under the rules: a moderator's own value (no marker) is kept."""
    if wanted is not None:
        return current if current is not None and current not in markers else wanted
    return None if current in markers else current


async def _covered_accounts(tx: Tx, changed: set[str]) -> list[Row]:
    netlocs = [r[0] for r in await tx.fetchall("SELECT DISTINCT domain FROM accounts WHERE domain IS NOT NULL")]
    hit = [d for d in netlocs if any(s in changed for s in suffixes(host_of(d)))]
    if not hit:
        return []
    return await tx.fetchall(
        "SELECT id, domain, suspended_at, silenced_at FROM accounts WHERE domain IN (SELECT value FROM json_each(?))",
        (dumps_str(hit),),
    )


async def reconcile(ctx: Context, tx: Tx, rules: Rules, changed: Iterable[str], removed_markers: set[float]) -> dict[str, int]:
    """Apply `rules` to every account under the `changed` rule domains; returns counts for the audit log.

    `removed_markers` are the `created_at` of rules deleted in this transaction (their
    markers must be recognised although the rules are gone).
    """
    accounts = await _covered_accounts(tx, set(changed))
    updates: list[tuple[float | None, float | None, int]] = []
    cut: list[int] = []
    reopened: list[int] = []
    for acc in accounts:
        covering = rules.covering(acc["domain"])
        rule = covering[0] if covering else None
        markers = removed_markers | {r["created_at"] for r in covering}
        severity = rule["severity"] if rule is not None else None
        suspended = _flag(acc["suspended_at"], rule["created_at"] if severity == "suspend" else None, markers)
        silenced = _flag(acc["silenced_at"], rule["created_at"] if severity == "silence" else None, markers)
        if (suspended, silenced) != (acc["suspended_at"], acc["silenced_at"]):
            updates.append((suspended, silenced, acc["id"]))
        if severity == "suspend":
            cut.append(acc["id"])
        elif not rules.suspended(acc["domain"]):
            reopened.append(acc["id"])
    await tx.executemany("UPDATE accounts SET suspended_at = ?, silenced_at = ? WHERE id = ?", updates)
    effects = {"accounts_changed": len(updates)}
    if cut:
        effects.update(await _sever(ctx, tx, rules, cut))
    if reopened:
        effects["follows_restored"] = await _restore(ctx, tx, reopened)
    return effects


async def _accounts_by_id(tx: Tx, ids: Iterable[int]) -> dict[int, Row]:
    return {r["id"]: r for r in await tx.fetchall(f"SELECT * FROM accounts WHERE id IN {IDS}", (dumps_str(list(set(ids))),))}


async def _sever(ctx: Context, tx: Tx, rules: Rules, remote_ids: list[int]) -> dict[str, int]:
    """Cut every follow between a local account and these remote accounts, telling the remote side."""
    ids = dumps_str(remote_ids)
    follows = await tx.fetchall(
        f"SELECT * FROM follows WHERE (account_id IN {IDS} AND target_account_id IN {LOCAL})"
        f" OR (target_account_id IN {IDS} AND account_id IN {LOCAL})",
        (ids, ids),
    )
    await tx.execute(  # their posts and boosts of them leave every home feed
        f"DELETE FROM home_feed WHERE status_id IN (SELECT id FROM statuses WHERE account_id IN {IDS}"
        f" UNION SELECT b.id FROM statuses b JOIN statuses o ON o.id = b.reblog_of_id WHERE o.account_id IN {IDS})",
        (ids, ids),
    )
    if not follows:
        return {"follows_severed": 0, "users_notified": 0}
    accounts = await _accounts_by_id(tx, [f["account_id"] for f in follows] + [f["target_account_id"] for f in follows])
    lost: dict[int, dict[str, int]] = {}
    ts = now()
    for f in follows:
        follower, target = accounts[f["account_id"]], accounts[f["target_account_id"]]
        remote, local = (follower, target) if follower["domain"] is not None else (target, follower)
        rule = rules.block_for(remote["domain"])
        keep = follower["domain"] is None or f["state"] == "accepted"
        if keep:
            await tx.execute(
                "INSERT INTO severed_follows (id, domain, account_id, target_account_id, uri, state, severed_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (tx.new_id(), rule["domain"] if rule else host_of(remote["domain"]), follower["id"], target["id"],
                 f["uri"], f["state"], ts),
            )
        await tx.execute("DELETE FROM follows WHERE id = ?", (f["id"],))
        if f["uri"] and remote["inbox_url"]:
            if follower is remote:
                await send_follow_answer(ctx, tx, local, remote, f["uri"], accept=False)
            else:
                undo = {"id": f["uri"], "type": "Follow", "actor": local["uri"], "object": remote["uri"]}
                row_id, activity = new_activity(ctx, tx, "Undo", local, undo)
                await publish(ctx, tx, local, activity, {remote["inbox_url"]}, row_id=row_id)
        side = "following" if follower is local else "followers"
        counts = lost.setdefault(local["id"], {"followers": 0, "following": 0})
        counts[side] += 1
    for account_id in lost:
        # From the user themselves, as Mastodon does: the event has no single other party.
        await tx.execute(
            "INSERT INTO notifications (id, account_id, type, from_account_id, status_id, created_at)"
            " VALUES (?, ?, 'severed_relationships', ?, NULL, ?)",
            (tx.new_id(), account_id, account_id, ts),
        )
    return {
        "follows_severed": len(follows),
        "users_notified": len(lost),
        "followers_lost": sum(c["followers"] for c in lost.values()),
        "following_lost": sum(c["following"] for c in lost.values()),
    }


async def _restore(ctx: Context, tx: Tx, remote_ids: list[int]) -> int:
    """Bring back follows cut by a rule that no longer suspends (see the module docstring)."""
    ids = dumps_str(remote_ids)
    severed = await tx.fetchall(
        f"SELECT * FROM severed_follows WHERE restored_at IS NULL AND state IN ('accepted', 'pending')"
        f" AND (account_id IN {IDS} OR target_account_id IN {IDS}) ORDER BY id",
        (ids, ids),
    )
    if not severed:
        return 0
    accounts = await _accounts_by_id(tx, [s["account_id"] for s in severed] + [s["target_account_id"] for s in severed])
    restored = 0
    ts = now()
    for s in severed:
        follower, target = accounts.get(s["account_id"]), accounts.get(s["target_account_id"])
        if follower is None or target is None or any(a["gone_at"] or a["suspended_at"] for a in (follower, target)):
            continue
        exists = await tx.fetchone(
            "SELECT 1 FROM follows WHERE account_id = ? AND target_account_id = ?", (follower["id"], target["id"])
        )
        if not exists and follower["domain"] is None:
            row_id, activity = new_activity(ctx, tx, "Follow", follower, target["uri"])
            await tx.execute(
                "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?)",
                (tx.new_id(), follower["id"], target["id"], activity["id"], ts),
            )
            await publish(ctx, tx, follower, activity, {target["inbox_url"]}, object_uri=target["uri"], row_id=row_id)
        elif not exists:
            await tx.execute(
                "INSERT INTO follows (id, account_id, target_account_id, uri, state, created_at)"
                " VALUES (?, ?, ?, ?, 'accepted', ?)",
                (tx.new_id(), follower["id"], target["id"], s["uri"], ts),
            )
            await send_follow_answer(ctx, tx, target, follower, s["uri"], accept=True)
        await tx.execute("UPDATE severed_follows SET restored_at = ? WHERE id = ?", (ts, s["id"]))
        restored += 1
    return restored


async def follow_counts(conn: Any) -> dict[str, int]:
    """Follows between local accounts and each remote `host[:port]`, both ways (for import previews)."""
    counts: dict[str, int] = {}
    for follower_side, local_side in (("account_id", "target_account_id"), ("target_account_id", "account_id")):
        for row in await conn.fetchall(
            f"SELECT r.domain, count(*) FROM follows f JOIN accounts r ON r.id = f.{follower_side}"
            f" JOIN accounts l ON l.id = f.{local_side} WHERE r.domain IS NOT NULL AND l.domain IS NULL GROUP BY r.domain"
        ):
            counts[row[0]] = counts.get(row[0], 0) + row[1]
    return counts
