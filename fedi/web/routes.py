"""HTML pages that belong to no single actor or object: the instance front page."""

from __future__ import annotations

from aiohttp import web

import fedi.web.admin
import fedi.web.interaction
import fedi.web.settings
from fedi.context import CTX
from fedi.web.render import render

INDEX_ACCOUNTS = 200


async def index(request: web.Request) -> web.Response:
    """GET /: what this instance is, who is on it, and how to follow them."""
    ctx = request.app[CTX]
    accounts = await ctx.db.fetchall(
        """SELECT username, display_name, url, uri FROM accounts
           WHERE domain IS NULL AND actor_type != 'Application' AND suspended_at IS NULL AND discoverable = 1
           ORDER BY lower(username) LIMIT ?""",
        (INDEX_ACCOUNTS,),
    )
    context = {
        "instance": ctx.config.instance,
        "base_url": ctx.base_url,
        "domain": ctx.domain,
        "accounts": accounts,
        "title": ctx.config.instance.name,
    }
    return render("index.html", context)


def setup(app: web.Application) -> None:
    app.router.add_get("/", index)
    fedi.web.admin.setup(app)
    fedi.web.interaction.setup(app)
    fedi.web.settings.setup(app)
