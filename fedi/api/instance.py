"""Instance information: v1 and v2, rules, peers, activity, custom emojis."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from actors.nodeinfo import LOCAL_POSTS
from fedi import __version__
from fedi.api import entities
from fedi.api.respond import json_response
from fedi.clock import now
from fedi.context import CTX, Context

MAX_CHARS = 5000
MAX_MEDIA = 4
POLL_OPTIONS = 4
MASTODON_COMPAT = "4.3.0"


def _version() -> str:
    """Clients parse the version to decide what the server supports: claim Mastodon's, name ours."""
    return f"{MASTODON_COMPAT} (compatible; fedi {__version__})"


async def _stats(ctx: Context) -> dict[str, int]:
    row = await ctx.db.fetchone(
        f"""SELECT (SELECT count(*) FROM users) AS users,
                  ({LOCAL_POSTS}) AS statuses,
                  (SELECT count(DISTINCT domain) FROM accounts WHERE domain IS NOT NULL) AS domains"""
    )
    assert row is not None
    return {"user_count": row["users"], "status_count": row["statuses"], "domain_count": row["domains"]}


def _configuration() -> dict[str, Any]:
    return {
        "urls": {"streaming": None, "status": None},
        "vapid": {"public_key": ""},
        "accounts": {"max_featured_tags": 10, "max_pinned_statuses": 5},
        "statuses": {"max_characters": MAX_CHARS, "max_media_attachments": MAX_MEDIA, "characters_reserved_per_url": 23},
        "media_attachments": {
            "supported_mime_types": ["image/jpeg", "image/png", "image/gif", "image/webp"],
            "description_limit": 1500,
            "image_size_limit": 16_777_216,
            "image_matrix_limit": 33_177_600,
            "video_size_limit": 0,
            "video_frame_rate_limit": 0,
            "video_matrix_limit": 0,
        },
        "polls": {"max_options": POLL_OPTIONS, "max_characters_per_option": 50,
                  "min_expiration": 300, "max_expiration": 2_629_746},
        "translation": {"enabled": False},
    }


async def _contact(ctx: Context) -> dict[str, Any]:
    from fedi.api.entities import account

    admin = await ctx.db.fetchone(
        "SELECT a.* FROM accounts a JOIN users u ON u.account_id = a.id WHERE u.admin = 1 ORDER BY a.id LIMIT 1"
    )
    return {"email": ctx.config.instance.contact_email, "account": await account(ctx, admin) if admin else None}


async def instance_v1(request: web.Request) -> web.Response:
    """GET /api/v1/instance"""
    ctx = request.app[CTX]
    inst = ctx.config.instance
    contact = await _contact(ctx)
    config = _configuration()
    config["urls"]["streaming"] = ctx.base_url.replace("http", "ws", 1)
    return json_response({
        "uri": inst.domain,
        "title": inst.name,
        "short_description": inst.description,
        "description": inst.description,
        "email": inst.contact_email,
        "version": _version(),
        "urls": {"streaming_api": ctx.base_url.replace("http", "ws", 1)},
        "stats": await _stats(ctx),
        "thumbnail": None,
        "languages": ["en"],
        "registrations": inst.registrations != "closed",
        "approval_required": inst.registrations == "approval",
        "invites_enabled": False,
        "configuration": {k: v for k, v in config.items() if k in ("accounts", "statuses", "media_attachments", "polls")},
        "contact_account": contact["account"],
        "rules": entities.rules(ctx),
    })


async def instance_v2(request: web.Request) -> web.Response:
    """GET /api/v2/instance"""
    ctx = request.app[CTX]
    inst = ctx.config.instance
    config = _configuration()
    config["urls"]["streaming"] = ctx.base_url.replace("http", "ws", 1)
    active = await ctx.db.fetchval(
        "SELECT count(DISTINCT account_id) FROM statuses WHERE local = 1 AND published_at > strftime('%s','now') - 2592000"
    )
    return json_response({
        "domain": inst.domain,
        "title": inst.name,
        "version": _version(),
        "source_url": f"{ctx.base_url}/",
        "description": inst.description,
        "usage": {"users": {"active_month": active or 0}},
        "thumbnail": {"url": f"{ctx.base_url}/static/missing.png", "blurhash": None, "versions": {}},
        "icon": [],
        "languages": ["en"],
        "configuration": config,
        "registrations": {"enabled": inst.registrations != "closed", "approval_required": inst.registrations == "approval",
                          "message": None, "url": None, "min_age": None, "reason_required": False},
        "api_versions": {"mastodon": 2},
        "contact": await _contact(ctx),
        "rules": entities.rules(ctx),
    })


async def instance_rules(request: web.Request) -> web.Response:
    """GET /api/v1/instance/rules"""
    return json_response(entities.rules(request.app[CTX]))


async def empty_list(request: web.Request) -> web.Response:
    """Endpoints fedi has nothing for yet (trends, announcements, suggestions, emojis): []."""
    return json_response([])


async def peers(request: web.Request) -> web.Response:
    rows = await request.app[CTX].db.fetchall(
        "SELECT DISTINCT domain FROM accounts WHERE domain IS NOT NULL AND gone_at IS NULL ORDER BY domain"
    )
    return json_response([r["domain"] for r in rows])


async def activity(request: web.Request) -> web.Response:
    """GET /api/v1/instance/activity: twelve weeks of statuses, logins, registrations."""
    ctx = request.app[CTX]
    week = int(now()) // 604800 * 604800  # the current week's start; a parameter, not SQL's clock
    rows = await ctx.db.fetchall(
        """WITH RECURSIVE weeks(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM weeks WHERE n < 11)
           SELECT n, :week - n * 604800 AS start,
             (SELECT count(*) FROM statuses WHERE local = 1 AND published_at >= :week - n * 604800
                AND published_at < :week - (n - 1) * 604800) AS statuses,
             (SELECT count(*) FROM users WHERE created_at >= :week - n * 604800
                AND created_at < :week - (n - 1) * 604800) AS registrations
           FROM weeks""",
        {"week": week},
    )
    return json_response([{"week": str(r["start"]), "statuses": str(r["statuses"]), "logins": "0",
                           "registrations": str(r["registrations"])} for r in rows])


def setup(app: web.Application) -> None:
    r = app.router
    # Mastodon.py asks for "/api/v1/instance/" and "/api/v2/instance/" (Rails ignores the trailing slash).
    for path in ("/api/v1/instance", "/api/v1/instance/"):
        r.add_get(path, instance_v1)
    for path in ("/api/v2/instance", "/api/v2/instance/"):
        r.add_get(path, instance_v2)
    r.add_get("/api/v1/instance/peers", peers)
    r.add_get("/api/v1/instance/activity", activity)
    r.add_get("/api/v1/instance/rules", instance_rules)
    for path in ("/api/v1/custom_emojis", "/api/v1/announcements", "/api/v1/trends",
                 "/api/v1/trends/tags", "/api/v1/trends/statuses", "/api/v1/trends/links", "/api/v2/suggestions",
                 "/api/v1/suggestions"):
        r.add_get(path, empty_list)
