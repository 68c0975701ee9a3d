"""Numbered schema migrations, applied in order at start-up.

Append new migrations; never edit one that has shipped. Times are Unix seconds
(REAL); ids come from `fedi.ids`.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: accounts, statuses, social graph, queues.
    """
    CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL,
        domain TEXT,                      -- NULL for local accounts
        uri TEXT NOT NULL UNIQUE,         -- the actor id
        url TEXT,
        actor_type TEXT NOT NULL DEFAULT 'Person',
        display_name TEXT NOT NULL DEFAULT '',
        summary TEXT NOT NULL DEFAULT '', -- sanitised HTML
        avatar_url TEXT,
        header_url TEXT,
        locked INTEGER NOT NULL DEFAULT 0,
        bot INTEGER NOT NULL DEFAULT 0,
        discoverable INTEGER NOT NULL DEFAULT 1,
        inbox_url TEXT,
        shared_inbox_url TEXT,
        outbox_url TEXT,
        followers_url TEXT,
        following_url TEXT,
        featured_url TEXT,
        public_key_id TEXT,
        public_key_pem TEXT,
        private_key_pem TEXT,             -- local accounts only
        fields_json TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        fetched_at REAL,
        suspended_at REAL,
        gone_at REAL                      -- remote actor deleted (Delete or 410)
    );
    CREATE UNIQUE INDEX accounts_local_username ON accounts (lower(username)) WHERE domain IS NULL;
    CREATE UNIQUE INDEX accounts_remote_acct ON accounts (lower(username), domain) WHERE domain IS NOT NULL;
    CREATE INDEX accounts_public_key_id ON accounts (public_key_id);
    CREATE INDEX accounts_inbox ON accounts (inbox_url);

    CREATE TABLE users (
        account_id INTEGER PRIMARY KEY REFERENCES accounts(id),
        email TEXT,
        password_hash TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        approved INTEGER NOT NULL DEFAULT 1,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );

    CREATE TABLE statuses (
        id INTEGER PRIMARY KEY,
        uri TEXT NOT NULL UNIQUE,
        url TEXT,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        local INTEGER NOT NULL,
        in_reply_to_id INTEGER,
        in_reply_to_uri TEXT,
        in_reply_to_account_id INTEGER,
        reblog_of_id INTEGER,             -- set for boosts (Announce)
        content TEXT NOT NULL DEFAULT '', -- sanitised HTML
        source_text TEXT,                 -- local posts: what the author typed
        summary TEXT NOT NULL DEFAULT '', -- content warning
        sensitive INTEGER NOT NULL DEFAULT 0,
        visibility TEXT NOT NULL,         -- public | unlisted | private | direct
        language TEXT,
        to_json TEXT NOT NULL DEFAULT '[]',
        cc_json TEXT NOT NULL DEFAULT '[]',
        published_at REAL NOT NULL,
        edited_at REAL,
        created_at REAL NOT NULL,
        deleted_at REAL
    );
    CREATE INDEX statuses_account ON statuses (account_id, id);
    CREATE INDEX statuses_reply ON statuses (in_reply_to_id);
    CREATE INDEX statuses_reply_uri ON statuses (in_reply_to_uri);
    CREATE INDEX statuses_reblog ON statuses (reblog_of_id);
    CREATE INDEX statuses_public ON statuses (visibility, local, id) WHERE deleted_at IS NULL;

    CREATE TABLE status_edits (
        id INTEGER PRIMARY KEY,
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        content TEXT NOT NULL,
        summary TEXT NOT NULL,
        sensitive INTEGER NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX status_edits_status ON status_edits (status_id, id);

    CREATE TABLE mentions (
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        PRIMARY KEY (status_id, account_id)
    );
    CREATE INDEX mentions_account ON mentions (account_id, status_id);

    CREATE TABLE tags (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE         -- lower-case, without '#'
    );
    CREATE TABLE status_tags (
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        tag_id INTEGER NOT NULL REFERENCES tags(id),
        PRIMARY KEY (status_id, tag_id)
    );
    CREATE INDEX status_tags_tag ON status_tags (tag_id, status_id);

    CREATE TABLE media_attachments (
        id INTEGER PRIMARY KEY,
        status_id INTEGER REFERENCES statuses(id),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        type TEXT NOT NULL DEFAULT 'unknown', -- image | video | gifv | audio | unknown
        media_type TEXT,
        remote_url TEXT,
        file_path TEXT,
        description TEXT,
        blurhash TEXT,
        width INTEGER,
        height INTEGER,
        focus_x REAL,
        focus_y REAL,
        position INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX media_status ON media_attachments (status_id, position);

    CREATE TABLE favourites (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        uri TEXT UNIQUE,                  -- the Like activity id
        created_at REAL NOT NULL,
        UNIQUE (account_id, status_id)
    );
    CREATE INDEX favourites_status ON favourites (status_id);

    CREATE TABLE follows (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),        -- the follower
        target_account_id INTEGER NOT NULL REFERENCES accounts(id), -- the followed
        uri TEXT UNIQUE,                                            -- the Follow activity id
        state TEXT NOT NULL,                                        -- pending | accepted
        created_at REAL NOT NULL,
        UNIQUE (account_id, target_account_id)
    );
    CREATE INDEX follows_target ON follows (target_account_id, state);

    CREATE TABLE blocks (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        target_account_id INTEGER NOT NULL REFERENCES accounts(id),
        uri TEXT UNIQUE,
        created_at REAL NOT NULL,
        UNIQUE (account_id, target_account_id)
    );
    CREATE INDEX blocks_target ON blocks (target_account_id);

    CREATE TABLE tombstones (
        uri TEXT PRIMARY KEY,
        account_id INTEGER,
        deleted_at REAL NOT NULL
    );

    CREATE TABLE notifications (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        type TEXT NOT NULL,  -- mention | follow | follow_request | favourite | reblog | update | status
        from_account_id INTEGER NOT NULL REFERENCES accounts(id),
        status_id INTEGER,
        created_at REAL NOT NULL,
        read INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX notifications_account ON notifications (account_id, id);

    -- Fan-out-on-write home timeline: one row per (local reader, status).
    CREATE TABLE home_feed (
        account_id INTEGER NOT NULL,
        status_id INTEGER NOT NULL,
        PRIMARY KEY (account_id, status_id)
    ) WITHOUT ROWID;

    -- Every activity received at an inbox, stored before it is answered.
    CREATE TABLE inbox_activities (
        id INTEGER PRIMARY KEY,
        activity_id TEXT NOT NULL UNIQUE,
        actor_uri TEXT NOT NULL,
        signer_key_id TEXT NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',  -- queued | processed | ignored | errored
        attempts INTEGER NOT NULL DEFAULT 0,
        locked_until REAL NOT NULL DEFAULT 0,
        result TEXT,
        received_at REAL NOT NULL,
        processed_at REAL
    );
    CREATE INDEX inbox_queue ON inbox_activities (state, locked_until) WHERE state = 'queued';

    -- Activities we published; `body` is frozen so a retry resends the same bytes.
    CREATE TABLE outbox_activities (
        id INTEGER PRIMARY KEY,
        uri TEXT NOT NULL UNIQUE,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        type TEXT NOT NULL,
        object_uri TEXT,
        public INTEGER NOT NULL DEFAULT 0,     -- listed in the outbox collection
        body TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX outbox_account ON outbox_activities (account_id, public, id);

    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        activity_id INTEGER NOT NULL REFERENCES outbox_activities(id),
        inbox_url TEXT NOT NULL,
        host TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', -- pending | delivered | failed | expired
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        locked_until REAL NOT NULL DEFAULT 0,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        UNIQUE (activity_id, inbox_url)
    );
    CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX deliveries_host ON deliveries (host, state);

    CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        failures INTEGER NOT NULL DEFAULT 0,
        first_failure_at REAL,
        unavailable_since REAL,
        last_success_at REAL
    );

    CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
]
