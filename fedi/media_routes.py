"""Serving stored images under /media/ and the default avatar at /static/missing.png.

Only names fedi itself minted are served (folder/aa/bb/<32 hex>[-small].ext), so
no request path can walk out of the media folder (`..`, encoded slashes,
absolute paths all fail the pattern); the resolved file must also lie inside it.
Responses carry the type from the extension and `nosniff`, so a browser never
second-guesses an image into HTML; names are never reused, so files cache forever.
"""

from __future__ import annotations

import io
import os
import re

from aiohttp import web

from fedi.context import CTX
from fedi.errors import HttpError
from fedi.images import EXTENSIONS

STORED = re.compile(r"^(attachments|avatars|headers)/([0-9a-f]{2})/([0-9a-f]{2})/\2\3[0-9a-f]{28}(-small)?\.(jpg|png|gif|webp)$")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
    "Cache-Control": "public, max-age=31536000, immutable",
    "Access-Control-Allow-Origin": "*",  # browser clients may draw images into a canvas (as Mastodon allows)
}
#: The generated avatar, made on first request and kept per application.
MISSING = web.AppKey("fedi_missing_avatar", dict)


async def media_file(request: web.Request) -> web.StreamResponse:
    """GET /media/{path}: a stored image, or 404."""
    rel = request.match_info["path"]
    match = STORED.match(rel)
    if match is None:
        raise HttpError(404, "Not found")
    root = os.path.realpath(request.app[CTX].config.media_path)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root or not os.path.isfile(path):
        raise HttpError(404, "Not found")
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": EXTENSIONS[match.group(5)]})


def _draw_missing() -> bytes:
    """A neutral silhouette: grey head and shoulders on a lighter square."""
    from PIL import Image, ImageDraw  # lazy: only drawn once, on the first request for it; Pillow costs ~2 MB

    img = Image.new("RGB", (400, 400), (206, 210, 216))
    draw = ImageDraw.Draw(img)
    draw.ellipse((130, 70, 270, 210), fill=(150, 156, 166))
    draw.ellipse((60, 240, 340, 520), fill=(150, 156, 166))
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


async def missing_avatar(request: web.Request) -> web.Response:
    """GET /static/missing.png: the avatar and header of accounts that have none."""
    cache = request.app[MISSING]
    if "png" not in cache:
        cache["png"] = _draw_missing()
    return web.Response(body=cache["png"], content_type="image/png",
                        headers={**HEADERS, "Cache-Control": "public, max-age=86400"})


def setup(app: web.Application) -> None:
    app[MISSING] = {}
    app.router.add_get("/media/{path:.+}", media_file)
    app.router.add_get("/static/missing.png", missing_avatar)
