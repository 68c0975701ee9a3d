"""Home-feed fan-out and notifications, shared by local actions and inbox handlers.

Home timelines are materialised on write (one `home_feed` row per local reader),
which keeps reading a timeline a single indexed range scan (PERFORMANCE.md).
Each follow carries Mastodon's options, applied here as posts arrive: boosts
left out (`show_reblogs = 0`), only some languages (`languages_json`), and a
`status` notification for every new post (`notify = 1`).
"""

from __future__ import annotations

from collections.abc import Iterable

from fedi.clock import now
from fedi.db import Tx
from fedi.threads import muted_thread, root_of

#: A follow's language list lets a status in when it names none, names no language, or names the status's
#: primary language subtag ("en" for "en-GB"); `{lang}` is that subtag, from `language_key`.
_LANGUAGES = " AND (f.languages_json IS NULL OR {lang} IS NULL OR {lang} IN (SELECT value FROM json_each(f.languages_json)))"
_FOLLOWERS = (
    "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
    " SELECT f.account_id, ? FROM follows f JOIN accounts a ON a.id = f.account_id"
    " WHERE f.target_account_id = ? AND f.state = 'accepted' AND a.domain IS NULL"
)
_NOTIFIED = (
    "SELECT f.account_id FROM follows f INDEXED BY follows_notify JOIN accounts a ON a.id = f.account_id"
    " WHERE f.target_account_id = ? AND f.notify = 1 AND f.state = 'accepted' AND a.domain IS NULL"
)


def language_key(language: str | None) -> str | None:
    """The part of a language tag that follow language lists name: "pt-BR" → "pt"."""
    key = (language or "").split("-", 1)[0].strip().lower()
    return key or None


async def fan_out(tx: Tx, status_id: int, author_id: int, visibility: str, mentioned: Iterable[int] = ()) -> None:
    """Put a status into the home feeds of its local author, local followers and local mentions.

    Followers get it as their follow's options say (one statement, whatever the number of followers);
    those who asked to be notified get a `status` notification for an original post or a self-reply.
    The options are judged from the stored row, so every caller gets them alike.
    """
    facts = await tx.fetchone(
        "SELECT language, reblog_of_id IS NOT NULL, in_reply_to_uri IS NOT NULL AND in_reply_to_account_id IS NOT account_id"
        " FROM statuses WHERE id = ?", (status_id,),
    )
    assert facts is not None, "fan_out runs after the status row is written"
    lang, boost, reply_to_other = language_key(facts[0]), facts[1], facts[2]
    await tx.execute(
        "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
        " SELECT id, ? FROM accounts WHERE id = ? AND domain IS NULL",
        (status_id, author_id),
    )
    if visibility != "direct":
        sql = _FOLLOWERS + (" AND f.show_reblogs = 1" if boost else "") + (_LANGUAGES.format(lang="?3") if lang else "")
        await tx.execute(sql, (status_id, author_id, lang) if lang else (status_id, author_id))
        if not boost and not reply_to_other:
            await _notify_followers(tx, status_id, author_id, lang)
    if visibility == "public":
        await tx.execute(
            "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
            " SELECT DISTINCT ft.account_id, ? FROM status_tags st JOIN followed_tags ft ON ft.tag_id = st.tag_id"
            " WHERE st.status_id = ?",
            (status_id, status_id),
        )
    ids = list(mentioned)
    if ids:
        await tx.executemany(
            "INSERT OR IGNORE INTO home_feed (account_id, status_id)"
            " SELECT id, ? FROM accounts WHERE id = ? AND domain IS NULL",
            [(status_id, i) for i in ids],
        )
    tx.publish("status.created", status_id=status_id, author_id=author_id, visibility=visibility, mentioned=ids)


async def _notify_followers(tx: Tx, status_id: int, author_id: int, lang: str | None) -> None:
    """`status` notifications for followers with notify on (a partial index finds them), except muted threads."""
    sql = _NOTIFIED + (_LANGUAGES.format(lang="?2") if lang else "")
    rows = await tx.fetchall(sql, (author_id, lang) if lang else (author_id,))
    if not rows:
        return
    readers = [r[0] for r in rows]
    root = await root_of(tx, status_id)
    muting = {r[0] for r in await tx.fetchall(
        "SELECT account_id FROM conversation_mutes WHERE conversation_uri = ?"
        f" AND account_id IN ({','.join('?' for _ in readers)})", (root, *readers),
    )}
    for reader in readers:
        if reader not in muting:
            await _insert_notification(tx, reader, "status", author_id, status_id)


async def backfill(tx: Tx, reader_id: int, author_id: int) -> None:
    """A new follow shows the followed account's recent posts at once, as Mastodon does, with its options applied."""
    await tx.execute(
        "INSERT OR IGNORE INTO home_feed (account_id, status_id) SELECT f.account_id, s.id"
        " FROM follows f JOIN statuses s ON s.account_id = f.target_account_id"
        " WHERE f.account_id = ? AND f.target_account_id = ? AND s.deleted_at IS NULL"
        " AND s.visibility IN ('public', 'unlisted', 'private') AND (f.show_reblogs = 1 OR s.reblog_of_id IS NULL)"
        + _LANGUAGES.format(lang="nullif(lower(substr(s.language, 1, instr(s.language || '-', '-') - 1)), '')")
        + " ORDER BY s.id DESC LIMIT 40",
        (reader_id, author_id),
    )


async def notify(tx: Tx, account_id: int, kind: str, from_account_id: int, status_id: int | None = None) -> None:
    """Record a notification for a local account (remote accounts, self-actions and muted threads get none)."""
    if account_id == from_account_id:
        return
    local = await tx.fetchone(
        "SELECT EXISTS (SELECT 1 FROM conversation_mutes WHERE account_id = a.id) FROM accounts a"
        " WHERE a.id = ? AND a.domain IS NULL",
        (account_id,),
    )
    if not local:
        return
    if local[0] and status_id is not None and await muted_thread(tx, account_id, status_id):
        return
    await _insert_notification(tx, account_id, kind, from_account_id, status_id)


async def _insert_notification(tx: Tx, account_id: int, kind: str, from_account_id: int, status_id: int | None) -> None:
    notification_id = tx.new_id()
    await tx.execute(
        "INSERT INTO notifications (id, account_id, type, from_account_id, status_id, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (notification_id, account_id, kind, from_account_id, status_id, now()),
    )
    tx.publish("notification", notification_id=notification_id, account_id=account_id)
