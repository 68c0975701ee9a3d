"""Media attachments: upload (v1 and v2), show and update, as Mastodon clients call them.

Uploads are processed at once (decode, strip, resize, thumbnail, blurhash in
fedi/images.py), so v2 answers 200 with the finished attachment rather than
Mastodon's 202-then-poll. An attachment is only ever visible to its owner
here; anyone else's id is simply not found (THREATS O5).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_request import FileField

from fedi import images, media_routes
from fedi.api import entities
from fedi.api.auth import require
from fedi.api.owned import NOT_FOUND, own_row
from fedi.api.params import close_files, read_params
from fedi.api.respond import json_response
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError

#: Room for the multipart envelope and the other fields beside a maximum-size file.
UPLOAD_BODY_BYTES = images.MAX_BYTES + 64 * 1024


async def upload(request: web.Request) -> web.Response:
    """POST /api/v1/media and /api/v2/media"""
    auth = await require(request, "write:media")
    ctx = request.app[CTX]
    # The app-wide body limit is sized for JSON and activities; uploads alone may be larger.
    params = await read_params(request.clone(client_max_size=UPLOAD_BODY_BYTES))
    try:
        field = params.get("file")
        if not isinstance(field, FileField):
            raise HttpError(422, "Validation failed: File can't be blank")
        row = await images.store_upload(
            ctx, field, params.str("description", max_length=images.MAX_DESCRIPTION * 4),
            params.str("focus", max_length=100), auth.account["id"],
        )
    finally:
        close_files(params)  # aiohttp closes upload temp files only for the original request, not a clone
    return json_response(entities.media_attachment(ctx, row))


async def _own(request: web.Request) -> tuple[Context, Row]:
    """The caller's attachment with the path's id; someone else's is simply not found."""
    auth = await require(request, "write:media")
    ctx = request.app[CTX]
    return ctx, await own_row(ctx, "media_attachments", request.match_info["id"], auth.account["id"])


async def show(request: web.Request) -> web.Response:
    """GET /api/v1/media/{id}: the caller's own attachment."""
    ctx, row = await _own(request)
    return json_response(entities.media_attachment(ctx, row))


async def update(request: web.Request) -> web.Response:
    """PUT /api/v1/media/{id}: description and focus, while the attachment is not yet posted (as Mastodon)."""
    ctx, row = await _own(request)
    if row["status_id"] is not None:
        raise HttpError(404, NOT_FOUND)
    params = await read_params(request)
    description = row["description"]
    if "description" in params:
        description = images.check_description(params.str("description", max_length=images.MAX_DESCRIPTION * 4))
    focus_x, focus_y = row["focus_x"], row["focus_y"]
    if "focus" in params:
        point = images.parse_focus(params.str("focus", max_length=100))
        focus_x, focus_y = point if point else (None, None)
    async with ctx.db.write() as tx:
        await tx.execute(
            "UPDATE media_attachments SET description = ?, focus_x = ?, focus_y = ? WHERE id = ? AND status_id IS NULL",
            (description, focus_x, focus_y, row["id"]),
        )
        fresh = await tx.fetchone("SELECT * FROM media_attachments WHERE id = ?", (row["id"],))
    assert fresh is not None
    return json_response(entities.media_attachment(ctx, fresh))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_post("/api/v1/media", upload)
    r.add_post("/api/v2/media", upload)
    r.add_get("/api/v1/media/{id}", show)
    r.add_put("/api/v1/media/{id}", update)
    media_routes.setup(app)
