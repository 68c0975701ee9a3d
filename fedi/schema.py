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
    -- Covers the per-author post count and last-post time every Account entity shows.
    CREATE INDEX statuses_account_stats ON statuses (account_id, deleted_at, published_at);
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

    -- One row per (id, deleter): an actor's own tombstone must count even if another
    -- actor tombstoned the same id first.
    CREATE TABLE tombstones (
        uri TEXT NOT NULL,
        account_id INTEGER,
        deleted_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX tombstones_uri_account ON tombstones (uri, account_id);

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
    # 2: the Mastodon client API: OAuth, per-user lists, bookmarks, pins, mutes, filters, polls, markers.
    """
    CREATE TABLE oauth_apps (
        id INTEGER PRIMARY KEY,
        client_id TEXT NOT NULL UNIQUE,
        client_secret TEXT NOT NULL,
        name TEXT NOT NULL,
        website TEXT,
        redirect_uris TEXT NOT NULL,      -- newline separated, matched exactly
        scopes TEXT NOT NULL,             -- space separated
        created_at REAL NOT NULL
    );
    CREATE TABLE oauth_codes (
        code_hash TEXT PRIMARY KEY,       -- sha256 of the code; the code itself is never stored
        app_id INTEGER NOT NULL REFERENCES oauth_apps(id),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        redirect_uri TEXT NOT NULL,
        scopes TEXT NOT NULL,
        code_challenge TEXT,              -- PKCE S256 only
        expires_at REAL NOT NULL,
        used_at REAL
    );
    CREATE TABLE oauth_tokens (
        id INTEGER PRIMARY KEY,
        token_hash TEXT NOT NULL UNIQUE,
        refresh_hash TEXT UNIQUE,
        app_id INTEGER NOT NULL REFERENCES oauth_apps(id),
        account_id INTEGER REFERENCES accounts(id),  -- NULL for client_credentials
        scopes TEXT NOT NULL,
        created_at REAL NOT NULL,
        revoked_at REAL,
        last_used_at REAL
    );
    CREATE INDEX oauth_tokens_account ON oauth_tokens (account_id);

    CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL;
    ALTER TABLE follows ADD COLUMN show_reblogs INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE follows ADD COLUMN notify INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE follows ADD COLUMN languages_json TEXT;
    ALTER TABLE users ADD COLUMN locale TEXT;
    ALTER TABLE users ADD COLUMN reason TEXT;
    ALTER TABLE users ADD COLUMN settings_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE statuses ADD COLUMN app_id INTEGER;
    ALTER TABLE statuses ADD COLUMN conversation_uri TEXT;
    ALTER TABLE media_attachments ADD COLUMN thumbnail_path TEXT;
    ALTER TABLE media_attachments ADD COLUMN meta_json TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE media_attachments ADD COLUMN file_size INTEGER;
    ALTER TABLE accounts ADD COLUMN avatar_path TEXT;
    ALTER TABLE accounts ADD COLUMN header_path TEXT;
    ALTER TABLE accounts ADD COLUMN language TEXT;
    CREATE INDEX media_account ON media_attachments (account_id, id);
    CREATE INDEX statuses_conversation ON statuses (conversation_uri);

    CREATE TABLE bookmarks (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        created_at REAL NOT NULL,
        UNIQUE (account_id, status_id)
    );
    CREATE TABLE status_pins (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        status_id INTEGER NOT NULL REFERENCES statuses(id),
        created_at REAL NOT NULL,
        UNIQUE (account_id, status_id)
    );
    CREATE TABLE mutes (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        target_account_id INTEGER NOT NULL REFERENCES accounts(id),
        notifications INTEGER NOT NULL DEFAULT 1,
        expires_at REAL,
        created_at REAL NOT NULL,
        UNIQUE (account_id, target_account_id)
    );
    CREATE TABLE account_notes (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        target_account_id INTEGER NOT NULL REFERENCES accounts(id),
        comment TEXT NOT NULL,
        PRIMARY KEY (account_id, target_account_id)
    );
    CREATE TABLE user_domain_blocks (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        domain TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (account_id, domain)
    );
    CREATE TABLE lists (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        title TEXT NOT NULL,
        replies_policy TEXT NOT NULL DEFAULT 'list',
        exclusive INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE INDEX lists_account ON lists (account_id);
    CREATE TABLE list_accounts (
        list_id INTEGER NOT NULL REFERENCES lists(id) ON DELETE CASCADE,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        PRIMARY KEY (list_id, account_id)
    );
    CREATE INDEX list_accounts_account ON list_accounts (account_id);
    CREATE TABLE markers (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        timeline TEXT NOT NULL,           -- home | notifications
        last_read_id TEXT NOT NULL,
        version INTEGER NOT NULL DEFAULT 1,
        updated_at REAL NOT NULL,
        PRIMARY KEY (account_id, timeline)
    );
    CREATE TABLE filters (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        title TEXT NOT NULL,
        context_json TEXT NOT NULL,       -- ["home", "notifications", "public", "thread", "account"]
        filter_action TEXT NOT NULL DEFAULT 'warn',
        expires_at REAL,
        created_at REAL NOT NULL
    );
    CREATE INDEX filters_account ON filters (account_id);
    CREATE TABLE filter_keywords (
        id INTEGER PRIMARY KEY,
        filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
        keyword TEXT NOT NULL,
        whole_word INTEGER NOT NULL DEFAULT 1
    );
    CREATE TABLE filter_statuses (
        id INTEGER PRIMARY KEY,
        filter_id INTEGER NOT NULL REFERENCES filters(id) ON DELETE CASCADE,
        status_id INTEGER NOT NULL REFERENCES statuses(id)
    );
    CREATE TABLE polls (
        id INTEGER PRIMARY KEY,
        status_id INTEGER NOT NULL UNIQUE REFERENCES statuses(id),
        options_json TEXT NOT NULL,       -- [{"title": ..., "votes_count": n}]
        multiple INTEGER NOT NULL DEFAULT 0,
        hide_totals INTEGER NOT NULL DEFAULT 0,
        expires_at REAL,
        voters_count INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    CREATE TABLE poll_votes (
        id INTEGER PRIMARY KEY,
        poll_id INTEGER NOT NULL REFERENCES polls(id),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        choice INTEGER NOT NULL,
        uri TEXT,
        created_at REAL NOT NULL,
        UNIQUE (poll_id, account_id, choice)
    );
    CREATE TABLE followed_tags (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        tag_id INTEGER NOT NULL REFERENCES tags(id),
        created_at REAL NOT NULL,
        PRIMARY KEY (account_id, tag_id)
    );
    CREATE TABLE featured_tags (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        tag_id INTEGER NOT NULL REFERENCES tags(id),
        created_at REAL NOT NULL,
        UNIQUE (account_id, tag_id)
    );
    CREATE TABLE scheduled_statuses (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        scheduled_at REAL NOT NULL,
        params_json TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX scheduled_due ON scheduled_statuses (scheduled_at);
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        conversation_uri TEXT NOT NULL,
        last_status_id INTEGER NOT NULL,
        unread INTEGER NOT NULL DEFAULT 1,
        UNIQUE (account_id, conversation_uri)
    );
    """,
    # 3: instance moderation: domain blocks and allows, severed follows, block-list subscriptions,
    #    reports, keyword rules, and the audit log.
    """
    CREATE TABLE domain_blocks (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL UNIQUE,      -- normalised: lower-case, IDNA (punycode), no trailing dot
        severity TEXT NOT NULL,           -- noop | silence | suspend
        reject_media INTEGER NOT NULL DEFAULT 0,
        reject_reports INTEGER NOT NULL DEFAULT 0,
        private_comment TEXT,
        public_comment TEXT,
        obfuscate INTEGER NOT NULL DEFAULT 0,
        source TEXT NOT NULL DEFAULT 'manual', -- manual | subscription
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE domain_allows (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );
    -- Follows cut by a suspension, kept so that lifting the block restores them.
    CREATE TABLE severed_follows (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL,             -- the blocked domain rule that cut it
        account_id INTEGER NOT NULL,
        target_account_id INTEGER NOT NULL,
        uri TEXT,
        state TEXT NOT NULL,
        severed_at REAL NOT NULL,
        restored_at REAL
    );
    CREATE INDEX severed_domain ON severed_follows (domain, restored_at);

    CREATE TABLE blocklist_sources (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL UNIQUE,
        format TEXT NOT NULL DEFAULT 'auto',   -- auto | csv | json | text
        priority INTEGER NOT NULL DEFAULT 0,
        max_severity TEXT NOT NULL DEFAULT 'suspend',
        mode TEXT NOT NULL DEFAULT 'draft',    -- draft | apply
        retractions TEXT NOT NULL DEFAULT 'remove', -- remove | keep
        enabled INTEGER NOT NULL DEFAULT 1,
        etag TEXT,
        last_modified TEXT,
        last_fetched_at REAL,
        last_ok_at REAL,
        last_error TEXT,
        created_at REAL NOT NULL
    );
    -- The last good copy of each source, one row per listed domain.
    CREATE TABLE blocklist_entries (
        source_id INTEGER NOT NULL REFERENCES blocklist_sources(id) ON DELETE CASCADE,
        domain TEXT NOT NULL,
        severity TEXT NOT NULL,
        reject_media INTEGER NOT NULL DEFAULT 0,
        reject_reports INTEGER NOT NULL DEFAULT 0,
        public_comment TEXT,
        PRIMARY KEY (source_id, domain)
    );
    CREATE TABLE blocklist_drafts (
        id INTEGER PRIMARY KEY,
        domain TEXT NOT NULL,
        change TEXT NOT NULL,                  -- add | update | remove
        severity TEXT,
        reject_media INTEGER NOT NULL DEFAULT 0,
        reject_reports INTEGER NOT NULL DEFAULT 0,
        public_comment TEXT,
        sources_json TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending', -- pending | applied | dismissed
        created_at REAL NOT NULL
    );
    CREATE INDEX blocklist_drafts_state ON blocklist_drafts (state, domain);
    CREATE TABLE blocklist_excludes (
        domain TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    );

    CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),        -- who reported (remote: the actor)
        target_account_id INTEGER NOT NULL REFERENCES accounts(id),
        status_ids_json TEXT NOT NULL DEFAULT '[]',
        rule_ids_json TEXT NOT NULL DEFAULT '[]',
        category TEXT NOT NULL DEFAULT 'other',
        comment TEXT NOT NULL DEFAULT '',
        forwarded INTEGER NOT NULL DEFAULT 0,
        uri TEXT UNIQUE,                                            -- the Flag activity id
        assigned_account_id INTEGER,
        action_taken_at REAL,
        action_taken_by_account_id INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX reports_open ON reports (action_taken_at, id);

    CREATE TABLE keyword_rules (
        id INTEGER PRIMARY KEY,
        pattern TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'keyword',  -- keyword | hashtag
        action TEXT NOT NULL DEFAULT 'reject', -- reject | review
        whole_word INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL
    );
    CREATE TABLE keyword_rule_hits (
        id INTEGER PRIMARY KEY,
        rule_id INTEGER NOT NULL REFERENCES keyword_rules(id) ON DELETE CASCADE,
        activity_id TEXT NOT NULL,
        actor_uri TEXT NOT NULL,
        excerpt TEXT NOT NULL,
        created_at REAL NOT NULL
    );

    -- Every moderation action, by whom (an admin account, or NULL for a subscription sync).
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        account_id INTEGER,
        action TEXT NOT NULL,
        target_type TEXT NOT NULL,
        target TEXT NOT NULL,
        detail_json TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );

    ALTER TABLE accounts ADD COLUMN silenced_at REAL;
    ALTER TABLE accounts ADD COLUMN sensitized_at REAL;
    """,
    # 4: counters that Account and Status entities show, kept by triggers so that no write path can miss
    #    them (a page of 20 statuses otherwise counts every post of every author on it). Backfilled here.
    #    Keep them honest: never `INSERT OR REPLACE` into statuses, follows or favourites — the rows that
    #    REPLACE deletes fire no delete trigger (recursive_triggers is off). Use UPSERT or UPDATE.
    """
    CREATE TABLE account_stats (
        account_id INTEGER PRIMARY KEY,
        statuses_count INTEGER NOT NULL DEFAULT 0,   -- statuses (boosts included) not deleted
        last_status_at REAL,                         -- newest published_at among them
        followers_count INTEGER NOT NULL DEFAULT 0,  -- accepted follows of the account
        following_count INTEGER NOT NULL DEFAULT 0   -- accepted follows by the account
    );
    CREATE TABLE status_stats (
        status_id INTEGER PRIMARY KEY,
        replies_count INTEGER NOT NULL DEFAULT 0,    -- replies not deleted
        reblogs_count INTEGER NOT NULL DEFAULT 0,    -- boosts not deleted
        favourites_count INTEGER NOT NULL DEFAULT 0
    );
    -- Recomputing last_status_at after a delete is one step down this index (databases made
    -- before it joined migration 1 lack it).
    CREATE INDEX IF NOT EXISTS statuses_account_stats ON statuses (account_id, deleted_at, published_at);
    -- The viewer's own boosts among a page of statuses, without visiting every boost of a popular post.
    CREATE INDEX statuses_reblog_account ON statuses (reblog_of_id, account_id) WHERE reblog_of_id IS NOT NULL;

    INSERT INTO account_stats (account_id, statuses_count, last_status_at)
        SELECT account_id, count(*), max(published_at) FROM statuses WHERE deleted_at IS NULL GROUP BY account_id;
    INSERT INTO account_stats (account_id, followers_count)
        SELECT target_account_id, count(*) FROM follows WHERE state = 'accepted' GROUP BY target_account_id
        ON CONFLICT (account_id) DO UPDATE SET followers_count = excluded.followers_count;
    INSERT INTO account_stats (account_id, following_count)
        SELECT account_id, count(*) FROM follows WHERE state = 'accepted' GROUP BY account_id
        ON CONFLICT (account_id) DO UPDATE SET following_count = excluded.following_count;
    INSERT INTO status_stats (status_id, replies_count)
        SELECT in_reply_to_id, count(*) FROM statuses WHERE deleted_at IS NULL AND in_reply_to_id IS NOT NULL
        GROUP BY in_reply_to_id;
    INSERT INTO status_stats (status_id, reblogs_count)
        SELECT reblog_of_id, count(*) FROM statuses WHERE deleted_at IS NULL AND reblog_of_id IS NOT NULL
        GROUP BY reblog_of_id
        ON CONFLICT (status_id) DO UPDATE SET reblogs_count = excluded.reblogs_count;
    INSERT INTO status_stats (status_id, favourites_count)
        SELECT status_id, count(*) FROM favourites GROUP BY status_id
        ON CONFLICT (status_id) DO UPDATE SET favourites_count = excluded.favourites_count;

    -- A status counts while deleted_at IS NULL: for its author, and for what it replies to or boosts.
    -- (Three triggers rather than one, so that a post that is no reply and no boost runs one statement.)
    CREATE TRIGGER statuses_stats_insert AFTER INSERT ON statuses WHEN NEW.deleted_at IS NULL
    BEGIN
        INSERT INTO account_stats (account_id, statuses_count, last_status_at) VALUES (NEW.account_id, 1, NEW.published_at)
            ON CONFLICT (account_id) DO UPDATE SET statuses_count = statuses_count + 1,
                last_status_at = max(coalesce(last_status_at, excluded.last_status_at), excluded.last_status_at);
    END;
    CREATE TRIGGER statuses_stats_insert_reply AFTER INSERT ON statuses
    WHEN NEW.deleted_at IS NULL AND NEW.in_reply_to_id IS NOT NULL
    BEGIN
        INSERT INTO status_stats (status_id, replies_count) VALUES (NEW.in_reply_to_id, 1)
            ON CONFLICT (status_id) DO UPDATE SET replies_count = replies_count + 1;
    END;
    CREATE TRIGGER statuses_stats_insert_reblog AFTER INSERT ON statuses
    WHEN NEW.deleted_at IS NULL AND NEW.reblog_of_id IS NOT NULL
    BEGIN
        INSERT INTO status_stats (status_id, reblogs_count) VALUES (NEW.reblog_of_id, 1)
            ON CONFLICT (status_id) DO UPDATE SET reblogs_count = reblogs_count + 1;
    END;
    -- Deleting (deleted_at set) or restoring a status, or moving what it counts for: take the old
    -- contribution away, add the new one, and find the author's newest remaining post again.
    CREATE TRIGGER statuses_stats_update
    AFTER UPDATE OF deleted_at, account_id, published_at, in_reply_to_id, reblog_of_id ON statuses
    WHEN (OLD.deleted_at IS NULL) <> (NEW.deleted_at IS NULL)
        OR (NEW.deleted_at IS NULL AND (OLD.account_id IS NOT NEW.account_id OR OLD.published_at IS NOT NEW.published_at
            OR OLD.in_reply_to_id IS NOT NEW.in_reply_to_id OR OLD.reblog_of_id IS NOT NEW.reblog_of_id))
    BEGIN
        UPDATE account_stats SET statuses_count = statuses_count - 1
            WHERE OLD.deleted_at IS NULL AND account_id = OLD.account_id;
        UPDATE status_stats SET replies_count = replies_count - 1
            WHERE OLD.deleted_at IS NULL AND status_id = OLD.in_reply_to_id;
        UPDATE status_stats SET reblogs_count = reblogs_count - 1
            WHERE OLD.deleted_at IS NULL AND status_id = OLD.reblog_of_id;
        INSERT INTO account_stats (account_id, statuses_count) SELECT NEW.account_id, 1 WHERE NEW.deleted_at IS NULL
            ON CONFLICT (account_id) DO UPDATE SET statuses_count = statuses_count + 1;
        INSERT INTO status_stats (status_id, replies_count) SELECT NEW.in_reply_to_id, 1
            WHERE NEW.deleted_at IS NULL AND NEW.in_reply_to_id IS NOT NULL
            ON CONFLICT (status_id) DO UPDATE SET replies_count = replies_count + 1;
        INSERT INTO status_stats (status_id, reblogs_count) SELECT NEW.reblog_of_id, 1
            WHERE NEW.deleted_at IS NULL AND NEW.reblog_of_id IS NOT NULL
            ON CONFLICT (status_id) DO UPDATE SET reblogs_count = reblogs_count + 1;
        UPDATE account_stats SET last_status_at = (
            SELECT s.published_at FROM statuses s WHERE s.account_id = account_stats.account_id AND s.deleted_at IS NULL
            ORDER BY s.published_at DESC LIMIT 1)
            WHERE account_id IN (OLD.account_id, NEW.account_id);
    END;
    CREATE TRIGGER statuses_stats_delete AFTER DELETE ON statuses WHEN OLD.deleted_at IS NULL
    BEGIN
        UPDATE account_stats SET statuses_count = statuses_count - 1, last_status_at = (
            SELECT s.published_at FROM statuses s WHERE s.account_id = OLD.account_id AND s.deleted_at IS NULL
            ORDER BY s.published_at DESC LIMIT 1)
            WHERE account_id = OLD.account_id;
        UPDATE status_stats SET replies_count = replies_count - 1 WHERE status_id = OLD.in_reply_to_id;
        UPDATE status_stats SET reblogs_count = reblogs_count - 1 WHERE status_id = OLD.reblog_of_id;
    END;

    -- Only accepted follows count (a pending request is neither a follower nor a following).
    CREATE TRIGGER follows_stats_insert AFTER INSERT ON follows WHEN NEW.state = 'accepted'
    BEGIN
        INSERT INTO account_stats (account_id, followers_count) VALUES (NEW.target_account_id, 1)
            ON CONFLICT (account_id) DO UPDATE SET followers_count = followers_count + 1;
        INSERT INTO account_stats (account_id, following_count) VALUES (NEW.account_id, 1)
            ON CONFLICT (account_id) DO UPDATE SET following_count = following_count + 1;
    END;
    CREATE TRIGGER follows_stats_update AFTER UPDATE OF state, account_id, target_account_id ON follows
    WHEN (OLD.state = 'accepted') <> (NEW.state = 'accepted')
        OR (NEW.state = 'accepted' AND (OLD.account_id <> NEW.account_id OR OLD.target_account_id <> NEW.target_account_id))
    BEGIN
        UPDATE account_stats SET followers_count = followers_count - 1
            WHERE OLD.state = 'accepted' AND account_id = OLD.target_account_id;
        UPDATE account_stats SET following_count = following_count - 1
            WHERE OLD.state = 'accepted' AND account_id = OLD.account_id;
        INSERT INTO account_stats (account_id, followers_count) SELECT NEW.target_account_id, 1 WHERE NEW.state = 'accepted'
            ON CONFLICT (account_id) DO UPDATE SET followers_count = followers_count + 1;
        INSERT INTO account_stats (account_id, following_count) SELECT NEW.account_id, 1 WHERE NEW.state = 'accepted'
            ON CONFLICT (account_id) DO UPDATE SET following_count = following_count + 1;
    END;
    CREATE TRIGGER follows_stats_delete AFTER DELETE ON follows WHEN OLD.state = 'accepted'
    BEGIN
        UPDATE account_stats SET followers_count = followers_count - 1 WHERE account_id = OLD.target_account_id;
        UPDATE account_stats SET following_count = following_count - 1 WHERE account_id = OLD.account_id;
    END;

    CREATE TRIGGER favourites_stats_insert AFTER INSERT ON favourites
    BEGIN
        INSERT INTO status_stats (status_id, favourites_count) VALUES (NEW.status_id, 1)
            ON CONFLICT (status_id) DO UPDATE SET favourites_count = favourites_count + 1;
    END;
    CREATE TRIGGER favourites_stats_update AFTER UPDATE OF status_id ON favourites WHEN OLD.status_id <> NEW.status_id
    BEGIN
        UPDATE status_stats SET favourites_count = favourites_count - 1 WHERE status_id = OLD.status_id;
        INSERT INTO status_stats (status_id, favourites_count) VALUES (NEW.status_id, 1)
            ON CONFLICT (status_id) DO UPDATE SET favourites_count = favourites_count + 1;
    END;
    CREATE TRIGGER favourites_stats_delete AFTER DELETE ON favourites
    BEGIN
        UPDATE status_stats SET favourites_count = favourites_count - 1 WHERE status_id = OLD.status_id;
    END;
    -- The inbox asks every few seconds which hosts are failing; keep that off a full scan.
    CREATE INDEX hosts_troubled ON hosts (host) WHERE failures > 0 OR unavailable_since IS NOT NULL;
    """,
    # 5: conversation mutes, and the followers who asked to hear of an account's every post.
    """
    -- POST /api/v1/statuses/:id/mute: the thread is named by its root's URI (fedi.threads).
    CREATE TABLE conversation_mutes (
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        conversation_uri TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (account_id, conversation_uri)
    ) WITHOUT ROWID;
    -- Follows with notify = 1 are few: finding them for each new post must not walk every follower.
    CREATE INDEX follows_notify ON follows (target_account_id) WHERE notify = 1;
    """,
    # 6: account portability: aliases and moves, background jobs (exports, imports), imported posts.
    """
    -- alsoKnownAs of the actor (local: set by its owner; remote: as last fetched), a JSON list of URIs.
    ALTER TABLE accounts ADD COLUMN also_known_as_json TEXT NOT NULL DEFAULT '[]';
    -- Set once the account has moved (local: by its Move; remote: a verified inbound Move or movedTo).
    ALTER TABLE accounts ADD COLUMN moved_to_uri TEXT;
    ALTER TABLE accounts ADD COLUMN moved_to_account_id INTEGER REFERENCES accounts(id);
    ALTER TABLE accounts ADD COLUMN moved_at REAL;

    -- Slow work for one account (exports, imports) as leased rows (fedi.jobs).
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        account_id INTEGER REFERENCES accounts(id),
        kind TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'queued',  -- queued | running | done | failed
        params_json TEXT NOT NULL DEFAULT '{}',
        progress INTEGER NOT NULL DEFAULT 0,
        total INTEGER,
        result_json TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        locked_until REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX jobs_due ON jobs (next_attempt_at) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_account ON jobs (account_id, kind, id);

    -- The rows of an import job, stored whole before any is applied, worked through in order.
    CREATE TABLE import_rows (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        line INTEGER NOT NULL,
        data_json TEXT NOT NULL,
        host TEXT,
        state TEXT NOT NULL DEFAULT 'pending', -- pending | done | failed | skipped
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        error TEXT,
        PRIMARY KEY (job_id, line)
    );
    CREATE INDEX import_rows_pending ON import_rows (job_id, next_attempt_at) WHERE state = 'pending';

    -- An imported post: the id it had on its old server (its `previously`), unique per account so
    -- importing the same archive twice adds nothing.
    ALTER TABLE statuses ADD COLUMN previous_uri TEXT;
    CREATE UNIQUE INDEX statuses_previous ON statuses (account_id, previous_uri) WHERE previous_uri IS NOT NULL;
    """,
]
