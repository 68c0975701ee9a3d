"""The Mastodon client API: every resource module registers its routes here."""

from __future__ import annotations

from aiohttp import web

from fedi.api import (
    account_moves,
    accounts,
    admin_domains,
    admin_accounts,
    admin_blocklists,
    admin_measures,
    admin_moderation,
    admin_reports,
    blocks,
    conversations,
    exports,
    filters,
    imports,
    profile,
    registration,
    reports,
    relationships,
    lists,
    media,
    notifications,
    oauth,
    instance,
    polls,
    scheduled,
    search,
    status_actions,
    statuses,
    streaming,
    tags,
    timelines,
    user_data,
)


def setup(app: web.Application) -> None:
    for module in (oauth, instance, accounts, profile, registration, relationships, blocks, statuses, status_actions,
                   timelines, notifications, search, media,
                   lists, user_data, streaming, polls, scheduled, filters, tags, conversations,
                   reports, exports, admin_reports, admin_accounts, admin_measures, admin_moderation, admin_domains,
                   admin_blocklists, imports, account_moves):
        module.setup(app)
