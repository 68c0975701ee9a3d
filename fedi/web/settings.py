"""The signed-in user's settings pages: the index that links the account's own tools.

Every page here is for any signed-in local user (the same sign-in as the admin pages),
built on `fedi.web.session.user_get` / `user_post`; each tool registers its own pages.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from fedi.context import CTX
from fedi.web.session import Session, page, user_get


def settings_page(request: web.Request, session: Session, template: str, context: dict[str, Any], *,
                  status: int = 200) -> web.Response:
    """A settings page: `page()` plus what the settings layout shows (the user's handle, the admin link)."""
    ctx = request.app[CTX]
    return page(request, session, template, {"domain": ctx.domain, "me_admin": session.admin, **context}, status=status)


@user_get
async def index(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings"""
    return settings_page(request, session, "settings/index.html", {"title": "Settings"})


def setup(app: web.Application) -> None:
    app.router.add_get("/settings", index)
    # Imported here: the pages' modules use settings_page above.
    from fedi.web import settings_archive, settings_export, settings_import, settings_move

    settings_move.setup(app)
    settings_export.setup(app)
    settings_import.setup(app)
    settings_archive.setup(app)
