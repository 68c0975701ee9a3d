"""The Mastodon client API: every resource module registers its routes here."""

from __future__ import annotations

from aiohttp import web

from fedi.api import (
    accounts,
    lists,
    media,
    notifications,
    oauth,
    instance,
    search,
    status_actions,
    statuses,
    streaming,
    timelines,
    user_data,
)


def setup(app: web.Application) -> None:
    for module in (oauth, instance, accounts, statuses, status_actions, timelines, notifications, search, media,
                   lists, user_data, streaming):
        module.setup(app)
