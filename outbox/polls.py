"""Poll votes: one place that records them (local and remote voters alike) and the local verb `vote`.

A vote on a remote poll is also sent to the poll's author the way Mastodon does
it: one Create(Note) per choice, `name` = the option's title, `inReplyTo` = the
poll, addressed to the author only (it is never listed publicly).
"""

from __future__ import annotations

from collections.abc import Sequence

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row, Tx
from fedi.jsonutil import dumps_str, loads_strict
from outbox.actions import ActionError, new_activity, publish


def vote_problem(poll: Row, voter_id: int, author_id: int, choices: Sequence[int], voted_before: bool,
                 at: float) -> str | None:
    """Why these choices can't be counted (Mastodon's rules), or None."""
    if poll["expires_at"] is not None and poll["expires_at"] <= at:
        return "The poll has already ended"
    if voter_id == author_id:
        return "You cannot vote on your own poll"
    if voted_before:
        return "You have already voted on this poll"
    if not choices:
        return "Choose at least one option"
    if len(set(choices)) != len(choices):
        return "Each option can be chosen only once"
    if len(choices) > 1 and not poll["multiple"]:
        return "This poll allows only one choice"
    count = len(loads_strict(poll["options_json"]))
    if any(not 0 <= c < count for c in choices):
        return "Choice is not an option of this poll"
    return None


async def add_vote(tx: Tx, poll_id: int, voter_id: int, choice: int, uri: str | None, vote_id: int) -> bool:
    """Store one choice and bump the counts it changes; False if that exact vote was already stored."""
    poll = await tx.fetchone("SELECT * FROM polls WHERE id = ?", (poll_id,))
    assert poll is not None
    first = await tx.fetchone("SELECT 1 FROM poll_votes WHERE poll_id = ? AND account_id = ?", (poll_id, voter_id)) is None
    cur = await tx.execute(
        "INSERT OR IGNORE INTO poll_votes (id, poll_id, account_id, choice, uri, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (vote_id, poll_id, voter_id, choice, uri, now()),
    )
    if not cur.rowcount:
        return False
    options = loads_strict(poll["options_json"])
    options[choice]["votes_count"] = int(options[choice].get("votes_count") or 0) + 1
    await tx.execute(
        "UPDATE polls SET options_json = ?, voters_count = voters_count + ?, updated_at = ? WHERE id = ?",
        (dumps_str(options), int(first), now(), poll_id),
    )
    return True


async def vote(ctx: Context, account: Row, poll_id: int, choices: Sequence[int]) -> None:
    """Vote on a poll the caller may see (the API checks that); remote polls hear of it by delivery."""
    async with ctx.db.write() as tx:
        poll = await tx.fetchone(
            "SELECT p.*, s.uri AS status_uri, s.account_id AS author_id FROM polls p"
            " JOIN statuses s ON s.id = p.status_id WHERE p.id = ? AND s.deleted_at IS NULL", (poll_id,)
        )
        if poll is None:
            raise ActionError("poll not found", 404)
        voted = await tx.fetchone("SELECT 1 FROM poll_votes WHERE poll_id = ? AND account_id = ?", (poll_id, account["id"]))
        problem = vote_problem(poll, account["id"], poll["author_id"], choices, voted is not None, now())
        if problem:
            raise ActionError(problem)
        author = await tx.fetchone("SELECT * FROM accounts WHERE id = ?", (poll["author_id"],))
        assert author is not None
        titles = [o["title"] for o in loads_strict(poll["options_json"])]
        for choice in choices:
            vote_id = tx.new_id()
            uri = f"{account['uri']}#votes/{vote_id}" if author["domain"] is not None else None
            await add_vote(tx, poll_id, account["id"], choice, uri, vote_id)
            if uri is not None and author["inbox_url"]:
                note = {"id": uri, "type": "Note", "name": titles[choice], "attributedTo": account["uri"],
                        "to": [author["uri"]], "inReplyTo": poll["status_uri"]}
                row_id, activity = new_activity(ctx, tx, "Create", account, note, to=[author["uri"]])
                await publish(ctx, tx, account, activity, {author["inbox_url"]}, object_uri=poll["status_uri"],
                               row_id=row_id)
