"""Media uploads as clients send them, and the files they must refuse (THREATS M1–M3, O5)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.web_request import FileField
from multidict import CIMultiDict
from PIL import Image
from yarl import URL

from fedi import images
from fedi.errors import HttpError
from tests.api_client import bearer, user_token
from tests.harness import Instance, Network

ATTACHMENT_KEYS = {"id", "type", "url", "preview_url", "remote_url", "preview_remote_url", "text_url", "meta",
                   "description", "blurhash"}
#: Computed for a 20×20 pure red picture by the reference encoder (blurhash-python 1.2.2).
RED_BLURHASH = "LGTI:j|cfQ|c|co1fQo1fQfQfQfQ"


async def _instance(network: Network, name: str = "alpha.test") -> Instance:
    return await network.add(name, media={"path": str(network.tmp / f"{name}-media")})


def _image(mode: str, size: tuple[int, int], fmt: str, color: Any = None, **save: Any) -> bytes:
    img = Image.new(mode, size, color)
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int, idat: bytes = b"") -> bytes:
    """A PNG that declares its size in IHDR; pixel data optional (the size check must come first)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


async def _upload(inst: Instance, token: str | None, data: bytes, filename: str = "photo.png",
                  content_type: str = "image/png", path: str = "/api/v2/media", **fields: str) -> tuple[int, Any]:
    assert inst.session is not None
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type=content_type)
    for key, value in fields.items():
        form.add_field(key, value)
    async with inst.session.post(inst.url(path), data=form, headers=bearer(token) if token else {}) as resp:
        return resp.status, await resp.json()


async def _fetch(inst: Instance, url: str) -> tuple[int, dict[str, str], bytes]:
    """GET an entity URL (or a raw path, sent byte for byte) from the instance."""
    assert inst.session is not None
    path = url if url.startswith("/") else URL(url).raw_path
    async with inst.session.get(URL(inst.url(path), encoded=True)) as resp:
        return resp.status, dict(resp.headers), await resp.read()


async def _media_state(inst: Instance) -> tuple[int, list[str]]:
    count = await inst.ctx.db.fetchval("SELECT count(*) FROM media_attachments")
    root = inst.ctx.config.media_path
    files = [str(p) for p in Path(root).rglob("*") if p.is_file()] if os.path.isdir(root) else []
    return count, files


async def test_png_upload_is_resized_with_thumbnail_meta_and_served(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    png = _image("RGBA", (3000, 1000), "PNG", (0, 120, 255, 128))
    status, body = await _upload(alpha, token, png, filename="../../x" + "y" * 2_000 + ".png",
                                 description="a blue band", focus="0.5,-0.25")
    assert status == 200, body
    assert set(body) == ATTACHMENT_KEYS
    assert body["type"] == "image" and body["description"] == "a blue band" and body["remote_url"] is None
    assert isinstance(body["id"], str) and body["id"].isdigit()
    assert body["meta"]["original"] == {"width": 1920, "height": 640, "size": "1920x640", "aspect": 3.0}
    assert body["meta"]["small"]["width"] == 400 and body["meta"]["small"]["height"] == 133
    assert body["meta"]["focus"] == {"x": 0.5, "y": -0.25}
    assert isinstance(body["blurhash"], str) and len(body["blurhash"]) == 28
    row = await alpha.ctx.db.fetchone("SELECT * FROM media_attachments WHERE id = ?", (int(body["id"]),))
    assert row["status_id"] is None and "yyy" not in row["file_path"] and ".." not in row["file_path"]

    status, headers, data = await _fetch(alpha, body["url"])
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Access-Control-Allow-Origin"] == "*"
    served = Image.open(io.BytesIO(data))
    assert served.format == "PNG" and served.size == (1920, 640) and served.mode == "RGBA"
    status, headers, data = await _fetch(alpha, body["preview_url"])
    assert status == 200 and Image.open(io.BytesIO(data)).size == (400, 133)

    # v1 answers the same entity; GET shows it to its owner
    status, v1 = await _upload(alpha, token, _image("RGB", (20, 20), "PNG", (255, 0, 0)), path="/api/v1/media")
    assert status == 200 and set(v1) == ATTACHMENT_KEYS
    assert v1["blurhash"] == RED_BLURHASH
    async with alpha.session.get(alpha.url(f"/api/v1/media/{v1['id']}"), headers=bearer(token)) as resp:
        assert resp.status == 200 and (await resp.json())["id"] == v1["id"]


async def test_jpeg_exif_is_applied_then_stripped(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    exif = Image.Exif()
    exif[0x010F] = "SECRETCAM"  # Make
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 24.0)
    jpeg = _image("RGB", (300, 200), "JPEG", (200, 30, 30), exif=exif)
    assert b"SECRETCAM" in jpeg and Image.open(io.BytesIO(jpeg)).getexif().get_ifd(0x8825)
    status, body = await _upload(alpha, token, jpeg, filename="IMG_0001.JPG", content_type="image/jpeg")
    assert status == 200, body
    assert body["meta"]["original"]["width"] == 200 and body["meta"]["original"]["height"] == 300
    status, headers, data = await _fetch(alpha, body["url"])
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    served = Image.open(io.BytesIO(data))
    assert served.format == "JPEG" and served.size == (200, 300)
    assert dict(served.getexif()) == {} and not served.getexif().get_ifd(0x8825)
    assert b"SECRETCAM" not in data and b"Exif" not in data


async def test_animated_gif_keeps_its_frames(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    frames = [Image.new("RGB", (60, 40), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    status, body = await _upload(alpha, token, out.getvalue(), filename="a.gif", content_type="image/gif")
    assert status == 200, body
    status, headers, data = await _fetch(alpha, body["url"])
    served = Image.open(io.BytesIO(data))
    assert headers["Content-Type"] == "image/gif" and served.format == "GIF" and served.n_frames == 3


async def test_webp_stays_webp(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    status, body = await _upload(alpha, token, _image("RGB", (120, 90), "WEBP", (10, 20, 30)), filename="w.webp",
                                 content_type="image/webp")
    assert status == 200, body
    status, headers, data = await _fetch(alpha, body["url"])
    assert headers["Content-Type"] == "image/webp" and Image.open(io.BytesIO(data)).size == (120, 90)


async def test_attach_own_media_to_status_and_update_rules(network: Network) -> None:
    alpha = await _instance(network)
    alice, bob = await user_token(alpha, "alice"), await user_token(alpha, "bob")
    _, mine = await _upload(alpha, alice, _image("RGB", (64, 48), "PNG", (1, 2, 3)))
    _, other = await _upload(alpha, alice, _image("RGB", (64, 48), "PNG", (3, 2, 1)))
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/api/v1/statuses"), headers=bearer(alice),
                                  data={"status": "with a picture", "media_ids[]": mine["id"]}) as resp:
        assert resp.status == 200, await resp.text()
        posted = await resp.json()
    assert [m["id"] for m in posted["media_attachments"]] == [mine["id"]]
    assert set(posted["media_attachments"][0]) == ATTACHMENT_KEYS

    # attached media can no longer be edited here (as Mastodon); unattached can, within limits
    async with alpha.session.put(alpha.url(f"/api/v1/media/{mine['id']}"), headers=bearer(alice),
                                 data={"description": "late"}) as resp:
        assert resp.status == 404 and "error" in await resp.json()
    async with alpha.session.put(alpha.url(f"/api/v1/media/{other['id']}"), headers=bearer(alice),
                                 data={"description": "now described", "focus": "-1,1"}) as resp:
        assert resp.status == 200
        updated = await resp.json()
    assert updated["description"] == "now described" and updated["meta"]["focus"] == {"x": -1.0, "y": 1.0}
    for bad in ({"description": "x" * 1501}, {"focus": "2,0"}, {"focus": "nan,0"}, {"focus": "zero"}):
        async with alpha.session.put(alpha.url(f"/api/v1/media/{other['id']}"), headers=bearer(alice),
                                     data=bad) as resp:
            assert resp.status == 422 and "error" in await resp.json()
    row = await alpha.ctx.db.fetchone("SELECT description, focus_x FROM media_attachments WHERE id = ?",
                                      (int(other["id"]),))
    assert (row["description"], row["focus_x"]) == ("now described", -1.0)

    # someone else's attachment: not found to show, to edit, or to post (M3, O5); nothing stored
    for method in ("get", "put"):
        async with alpha.session.request(method, alpha.url(f"/api/v1/media/{other['id']}"), headers=bearer(bob),
                                         data={"description": "mine now"}) as resp:
            assert resp.status == 404
    before = await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses")
    async with alpha.session.post(alpha.url("/api/v1/statuses"), headers=bearer(bob),
                                  data={"status": "stolen", "media_ids[]": other["id"]}) as resp:
        assert resp.status == 422 and "error" in await resp.json()
    assert await alpha.ctx.db.fetchval("SELECT count(*) FROM statuses") == before
    row = await alpha.ctx.db.fetchone("SELECT status_id, description FROM media_attachments WHERE id = ?",
                                      (int(other["id"]),))
    assert row["status_id"] is None and row["description"] == "now described"


async def test_ten_kilobyte_filename_is_refused(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    status, body = await _upload(alpha, token, _image("RGB", (4, 4), "PNG", (0, 0, 0)), filename="n" * 10_240 + ".png")
    assert status == 400 and "error" in body  # a part header over the parser's line limit: malformed body
    assert await _media_state(alpha) == (0, [])


async def test_upload_needs_token_scope_and_a_file(network: Network) -> None:
    alpha = await _instance(network)
    reader = await user_token(alpha, "alice", scopes="read")
    png = _image("RGB", (10, 10), "PNG", (0, 0, 0))
    assert (await _upload(alpha, None, png))[0] == 401
    assert (await _upload(alpha, reader, png))[0] == 403
    writer = await user_token(alpha, "alice", create=False)
    assert alpha.session is not None
    async with alpha.session.post(alpha.url("/api/v2/media"), headers=bearer(writer), data={"description": "x"}) as resp:
        assert resp.status == 422 and "error" in await resp.json()
    status, body = await _upload(alpha, writer, png, description="d" * 1501)
    assert status == 422 and "Description" in body["error"]
    assert await _media_state(alpha) == (0, [])


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("case", ["header_100mp", "zeros_100mp", "warning_zone", "webp_50k", "gif_10k_frames",
                                  "oversized_file"])
async def test_oversized_images_are_refused_before_decoding(network: Network, case: str) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    if case == "header_100mp":  # IHDR says 10000×10000; there are no pixels to decode at all
        data = _png_header(10_000, 10_000)
    elif case == "zeros_100mp":  # a real, complete 100-megapixel PNG: all zeros compress to ~100 KB
        comp = zlib.compressobj(1)
        row = b"\x00" * 10_001
        idat = b"".join(comp.compress(row) for _ in range(10_000)) + comp.flush()
        data = _png_header(10_000, 10_000, idat)
        assert len(data) < 1_000_000
    elif case == "warning_zone":  # over the cap but under PIL's own 2× bomb error
        data = _png_header(7_000, 5_000)
    elif case == "webp_50k":  # a VP8X header declaring a 50000×50000 canvas
        dims = (50_000 - 1).to_bytes(3, "little") * 2
        data = b"RIFF" + struct.pack("<I", 22) + b"WEBP" + b"VP8X" + struct.pack("<I", 10) + b"\0" * 4 + dims
    elif case == "gif_10k_frames":
        one = _image("P", (10, 10), "GIF", 0)
        start = one.index(b"\x2c")
        data = one[:start] + one[start:-1] * 10_000 + b"\x3b"
    else:
        data = _png_header(10, 10) + b"\x00" * (images.MAX_BYTES + 1)
    status, body = await _upload(alpha, token, data)
    assert status == 422, body
    expected = {"header_100mp": "33,177,600 pixels", "zeros_100mp": "33,177,600 pixels",
                "warning_zone": "33,177,600 pixels", "webp_50k": "33,177,600 pixels", "gif_10k_frames": "frames",
                "oversized_file": "16 MB"}[case]
    assert expected in body["error"]
    assert await _media_state(alpha) == (0, [])


@pytest.mark.parametrize("payload", [
    b"<!doctype html><script>alert(1)</script>" + _png_header(1, 1),
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="10" height="10"/></svg>',
    b"GIF89a<script>alert(1)</script>",
    b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n",
])
async def test_polyglots_and_other_formats_are_refused(network: Network, payload: bytes) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    status, body = await _upload(alpha, token, payload, filename="x.png", content_type="image/png")
    assert status == 422 and "JPEG, PNG, GIF or WebP" in body["error"]
    assert await _media_state(alpha) == (0, [])


async def test_trailing_payload_is_dropped_by_reencoding(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    png = _image("RGB", (16, 16), "PNG", (9, 9, 9)) + b"<html><script>alert(document.cookie)</script></html>"
    status, body = await _upload(alpha, token, png, filename="x.html", content_type="text/html")
    assert status == 200, body
    status, headers, data = await _fetch(alpha, body["url"])
    assert status == 200 and headers["Content-Type"] == "image/png" and b"<script" not in data


async def test_media_paths_cannot_escape_the_media_folder(network: Network) -> None:
    alpha = await _instance(network)
    token = await user_token(alpha, "alice")
    _, body = await _upload(alpha, token, _image("RGB", (8, 8), "PNG", (5, 5, 5)))
    stored = URL(body["url"]).path[len("/media/"):]
    db_name = Path(alpha.ctx.config.database_path).name
    for path in ("/media/../../etc/passwd", "/media/..%2F..%2Fetc%2Fpasswd", "/media/%2e%2e/%2e%2e/etc/passwd",
                 "/media//etc/passwd", f"/media/../{db_name}", f"/media/{stored}/../../../../{db_name}",
                 "/media/attachments/00/00/0000" + "0" * 28 + ".png", f"/media/{stored}%00.html"):
        status, _, data = await _fetch(alpha, path)
        assert status == 404, path
        assert b"root:" not in data and b"SQLite" not in data
    status, _, _ = await _fetch(alpha, body["url"])
    assert status == 200


async def test_default_avatar_and_profile_images(network: Network) -> None:
    alpha = await _instance(network)
    status, headers, data = await _fetch(alpha, "/static/missing.png")
    assert status == 200 and headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(data)).size == (400, 400)

    for kind, size in (("avatar", (400, 400)), ("header", (1500, 500))):
        upload = _image("RGB", (900, 700), "JPEG", (40, 80, 120))
        field = FileField("file", "me.jpg", io.BytesIO(upload), "image/jpeg", CIMultiDict())
        rel = await images.store_profile_image(alpha.ctx, field, kind)
        assert rel.startswith(f"{kind}s/")
        status, headers, data = await _fetch(alpha, f"{alpha.base}/media/{rel}")
        assert status == 200 and Image.open(io.BytesIO(data)).size == size
    bad = FileField("file", "x.png", io.BytesIO(_png_header(10_000, 10_000)), "image/png", CIMultiDict())
    with pytest.raises(HttpError) as err:
        await images.store_profile_image(alpha.ctx, bad, "avatar")
    assert err.value.status == 422
