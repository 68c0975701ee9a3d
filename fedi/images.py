"""Uploaded images: checked from their header, decoded under limits, re-encoded, stored under server names.

Uploads are hostile input (THREATS M1, M2). Before any pixel is decoded the
header must name a JPEG, PNG, GIF or WebP (by its bytes, never the client's
filename or Content-Type) no larger than 33,177,600 pixels; animations are
bounded per frame and in total. Every image is then decoded and written anew,
which drops EXIF (after applying its orientation), other metadata and anything
appended to the file, so a polyglot cannot survive. Files get random names in
the media folder; the client's filename is never used.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import math
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp.web_request import FileField

from fedi.clock import now
from fedi.context import Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.jsonutil import dumps_str

# Pillow is imported inside the functions that decode or encode (all of them run in a worker thread
# for an upload): a server that never receives an image does not carry its ~2 MB or its import time.
if TYPE_CHECKING:
    from PIL import Image

MAX_BYTES = 16 * 1024 * 1024
MAX_PIXELS = 33_177_600        # Mastodon's MAX_MATRIX_LIMIT (7680×4320)
ANIMATION_PIXELS = 921_600     # Mastodon's GIF_MATRIX_LIMIT (1280×720) per frame
MAX_FRAMES = 1_000
MAX_SIDE = 1920
SMALL_SIDE = 400
MAX_DESCRIPTION = 1500
#: Decoded format → (media type, extension, format written back).
FORMATS = {
    "JPEG": ("image/jpeg", "jpg", "JPEG"),
    "PNG": ("image/png", "png", "PNG"),
    "GIF": ("image/gif", "gif", "GIF"),
    "WEBP": ("image/webp", "webp", "WEBP"),
}
PROFILE_SIZES = {"avatar": (400, 400), "header": (1500, 500)}
EXTENSIONS = {"jpg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
NOT_AN_IMAGE = "Validation failed: File is not a JPEG, PNG, GIF or WebP image"
TOO_LARGE = f"Validation failed: Image is larger than {MAX_PIXELS:,} pixels"


@dataclass(frozen=True)
class Encoded:
    """One processed image: the re-encoded file, its small version and what clients are told about it."""

    data: bytes
    ext: str
    width: int
    height: int
    small: bytes
    small_ext: str
    small_width: int
    small_height: int
    blurhash: str


def check_description(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if len(value) > MAX_DESCRIPTION:
        raise HttpError(422, f"Validation failed: Description is too long (maximum is {MAX_DESCRIPTION} characters)")
    return value


def parse_focus(value: str | None) -> tuple[float, float] | None:
    """Mastodon's focal point "x,y", each in [-1, 1]."""
    if value is None or value == "":
        return None
    try:
        x, y = (float(part) for part in value.split(","))
    except ValueError:
        raise HttpError(422, "Validation failed: focus must be \"x,y\"") from None
    if not (-1.0 <= x <= 1.0 and -1.0 <= y <= 1.0):
        raise HttpError(422, "Validation failed: focus values must be between -1 and 1")
    return x, y


def _gif_frames(data: bytes, cap: int) -> int:
    """Count a GIF's image blocks from its structure alone, stopping at `cap` (no LZW decoding)."""
    if len(data) < 13:
        return 0
    pos = 13 + ((3 << ((data[10] & 7) + 1)) if data[10] & 0x80 else 0)
    frames = 0
    while pos < len(data) and frames < cap:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, optional local colour table, LZW code size, sub-blocks
            if pos + 10 > len(data):
                break
            flags = data[pos + 9]
            pos += 10 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0) + 1
            frames += 1
        else:
            break
        while pos < len(data) and data[pos]:
            pos += data[pos] + 1
        pos += 1
    return frames


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """A WebP canvas size from its first chunk: libwebp allocates the canvas as soon as it parses the file."""
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _open(data: bytes) -> tuple[Image.Image, int]:
    """The lazily opened image and its frame count, refused (422) before decoding if too large."""
    from PIL import Image, UnidentifiedImageError  # lazy: see the note at the imports

    Image.MAX_IMAGE_PIXELS = MAX_PIXELS  # PIL's own guard, in case our check is ever bypassed
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        size = _webp_size(data)
        if size is not None and size[0] * size[1] > MAX_PIXELS:
            raise HttpError(422, TOO_LARGE)
    try:
        img = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except Image.DecompressionBombError:
        raise HttpError(422, TOO_LARGE) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise HttpError(422, NOT_AN_IMAGE) from None
    width, height = img.size
    if width < 1 or height < 1:
        raise HttpError(422, NOT_AN_IMAGE)
    if width * height > MAX_PIXELS:
        raise HttpError(422, TOO_LARGE)
    frames = _gif_frames(data, MAX_FRAMES + 1) if img.format == "GIF" else int(getattr(img, "n_frames", 1))
    if frames > 1 and (width * height > ANIMATION_PIXELS or frames > MAX_FRAMES or width * height * frames > MAX_PIXELS):
        raise HttpError(422, f"Validation failed: Animations may have at most {ANIMATION_PIXELS:,} pixels per frame,"
                             f" {MAX_FRAMES} frames and {MAX_PIXELS:,} pixels in all")
    return img, max(frames, 1)


def _clean(frame: Image.Image) -> Image.Image:
    """RGB or RGBA pixels only: no palette, no EXIF, no text chunks, no ICC profile."""
    alpha = frame.mode in ("RGBA", "LA", "PA") or (frame.mode == "P" and "transparency" in frame.info)
    out = frame.convert("RGBA" if alpha else "RGB")
    out.info = {}
    return out


def _fit(img: Image.Image, side: int) -> Image.Image:
    from PIL import Image  # lazy: see the note at the imports

    if img.width > side or img.height > side:
        img = img.copy()
        img.thumbnail((side, side), Image.Resampling.LANCZOS)
    return img


def _still_bytes(img: Image.Image, fmt: str | None = None) -> tuple[bytes, str]:
    """Encode one frame: JPEG for opaque pictures unless a format is asked for, PNG when there is alpha."""
    out = io.BytesIO()
    if fmt is None:
        fmt = "PNG" if img.mode == "RGBA" else "JPEG"
    if fmt == "JPEG" and img.mode == "RGBA":
        fmt = "PNG"
    if fmt == "JPEG":
        img.save(out, format="JPEG", quality=85, optimize=True)
    elif fmt == "WEBP":
        img.save(out, format="WEBP", quality=85)
    else:
        img.save(out, format="PNG", optimize=True)
    return out.getvalue(), FORMATS[fmt][1]


@contextmanager
def _hostile() -> Iterator[None]:
    """Any failure while parsing or decoding an upload is the file's fault: a 422, never a 500."""
    from PIL import Image  # lazy: see the note at the imports

    try:
        yield
    except HttpError:
        raise
    except Image.DecompressionBombError:
        raise HttpError(422, TOO_LARGE) from None
    except Exception:  # on malformed files Pillow also raises IndexError, struct.error, TypeError…
        raise HttpError(422, NOT_AN_IMAGE) from None


def _decode(data: bytes) -> Encoded:
    """Decode within limits and write the image anew (runs in a worker thread)."""
    from PIL import ImageOps, ImageSequence  # lazy: see the note at the imports

    with _hostile():
        img, frames = _open(data)
        source = img.format or ""
        if frames > 1:
            durations, parts = [], []
            for frame in itertools.islice(ImageSequence.Iterator(img), frames):
                parts.append(_fit(_clean(frame), MAX_SIDE))
                durations.append(int(frame.info.get("duration", 100)))
            out = io.BytesIO()
            extra = {"disposal": 2} if source == "GIF" else {}  # frames come whole: clear before each
            parts[0].save(out, format=FORMATS[source][2], save_all=True, append_images=parts[1:], duration=durations,
                          loop=int(img.info.get("loop", 0)), **extra)
            full, ext, first = out.getvalue(), FORMATS[source][1], parts[0]
        else:
            img.load()
            first = _fit(_clean(ImageOps.exif_transpose(img)), MAX_SIDE)
            keep = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP"}.get(source, "PNG")  # a still GIF becomes PNG
            full, ext = _still_bytes(first, keep)
        small = _fit(first, SMALL_SIDE)
        small_bytes, small_ext = _still_bytes(small)
        return Encoded(full, ext, first.width, first.height, small_bytes, small_ext, small.width, small.height,
                       blurhash(small))


def _profile(data: bytes, kind: str) -> tuple[bytes, str]:
    """Avatar or header: first frame, orientation applied, cropped to fill the profile size."""
    from PIL import Image, ImageOps  # lazy: see the note at the imports

    with _hostile():
        img, _ = _open(data)
        img.seek(0)
        img.load()
        still = _clean(ImageOps.exif_transpose(img))
        return _still_bytes(ImageOps.fit(still, PROFILE_SIZES[kind], Image.Resampling.LANCZOS))


# --- blurhash (https://blurha.sh): a 4×3 DCT of the picture in 28 base-83 characters ---------------------------

_B83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~"


def _base83(value: int, length: int) -> str:
    return "".join(_B83[(value // 83 ** (length - i - 1)) % 83] for i in range(length))


def _to_linear(v: int) -> float:
    c = v / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def _to_srgb(v: float) -> int:
    c = min(max(v, 0.0), 1.0)
    return int(c * 12.92 * 255 + 0.5) if c <= 0.0031308 else int((1.055 * c ** (1 / 2.4) - 0.055) * 255 + 0.5)


def blurhash(img: Image.Image, x_components: int = 4, y_components: int = 3) -> str:
    """The blurhash clients paint while the image loads (computed on a ≤32 px copy: it is a blur anyway)."""
    from PIL import Image  # lazy: see the note at the imports

    small = img.convert("RGB")
    small.thumbnail((32, 32), Image.Resampling.BILINEAR)
    w, h = small.size
    raw = small.tobytes()
    pixels = [(_to_linear(raw[i]), _to_linear(raw[i + 1]), _to_linear(raw[i + 2])) for i in range(0, len(raw), 3)]
    factors: list[tuple[float, float, float]] = []
    for j in range(y_components):
        cos_y = [math.cos(math.pi * j * y / h) for y in range(h)]
        for i in range(x_components):
            cos_x = [math.cos(math.pi * i * x / w) for x in range(w)]
            norm = (1 if i == 0 and j == 0 else 2) / (w * h)
            r = g = b = 0.0
            for y in range(h):
                for x in range(w):
                    basis = cos_x[x] * cos_y[y]
                    pr, pg, pb = pixels[y * w + x]
                    r, g, b = r + basis * pr, g + basis * pg, b + basis * pb
            factors.append((r * norm, g * norm, b * norm))
    dc, ac = factors[0], factors[1:]
    out = _base83(x_components - 1 + (y_components - 1) * 9, 1)
    peak = max((abs(v) for f in ac for v in f), default=0.0)
    quantised = max(0, min(82, int(peak * 166 - 0.5))) if ac else 0
    scale = (quantised + 1) / 166 if ac else 1.0
    out += _base83(quantised, 1)
    out += _base83((_to_srgb(dc[0]) << 16) + (_to_srgb(dc[1]) << 8) + _to_srgb(dc[2]), 4)

    def quant(v: float) -> int:
        return max(0, min(18, int(math.copysign(abs(v / scale) ** 0.5, v) * 9 + 9.5)))

    for f in ac:
        out += _base83(quant(f[0]) * 361 + quant(f[1]) * 19 + quant(f[2]), 2)
    return out


# --- storage --------------------------------------------------------------------------------------------------------


def _read(field: FileField) -> bytes:
    fh = field.file
    fh.seek(0, os.SEEK_END)
    if fh.tell() > MAX_BYTES:
        raise HttpError(422, f"Validation failed: File is larger than {MAX_BYTES // (1024 * 1024)} MB")
    fh.seek(0)
    return fh.read()


def _write(media_dir: str, folder: str, files: list[tuple[str, bytes]]) -> list[str]:
    """Write files under one random name (suffixes differ); returns their paths relative to the media folder."""
    name = secrets.token_hex(16)
    rel_dir = f"{folder}/{name[:2]}/{name[2:4]}"
    os.makedirs(os.path.join(media_dir, rel_dir), exist_ok=True)
    paths = []
    for suffix, data in files:
        rel = f"{rel_dir}/{name}{suffix}"
        with open(os.path.join(media_dir, rel), "xb") as fh:
            fh.write(data)
        paths.append(rel)
    return paths


def remove_files(ctx: Context, paths: list[str]) -> None:
    for rel in paths:
        try:
            os.remove(os.path.join(ctx.config.media_path, rel))
        except FileNotFoundError:
            pass


def _meta(width: int, height: int) -> dict[str, Any]:
    return {"width": width, "height": height, "size": f"{width}x{height}", "aspect": width / height}


def encode_image(data: bytes) -> Encoded:
    """Check and re-encode image bytes that did not come as an upload (an archive's media), exactly as uploads are.

    Blocking: run it in a worker thread. Raises HttpError(422) for what an upload would be refused for.
    """
    if len(data) > MAX_BYTES:
        raise HttpError(422, f"Validation failed: File is larger than {MAX_BYTES // (1024 * 1024)} MB")
    return _decode(data)


def write_attachment(media_dir: str, encoded: Encoded) -> list[str]:
    """Write an encoded attachment and its small version under a random name: [file path, thumbnail path]."""
    return _write(media_dir, "attachments",
                  [(f".{encoded.ext}", encoded.data), (f"-small.{encoded.small_ext}", encoded.small)])


def attachment_meta(encoded: Encoded) -> dict[str, Any]:
    """The meta_json Mastodon clients read for an attachment."""
    return {"original": _meta(encoded.width, encoded.height), "small": _meta(encoded.small_width, encoded.small_height)}


async def store_upload(
    ctx: Context, field: FileField, description: str | None, focus: str | None, account_id: int
) -> Row:
    """Process an upload and record it as an unattached media_attachments row (status_id NULL)."""
    description = check_description(description)
    point = parse_focus(focus)

    def work() -> tuple[Encoded, list[str]]:
        encoded = _decode(_read(field))
        return encoded, write_attachment(ctx.config.media_path, encoded)

    encoded, paths = await asyncio.to_thread(work)
    meta = attachment_meta(encoded)
    try:
        async with ctx.db.write() as tx:
            media_id = tx.new_id()
            await tx.execute(
                "INSERT INTO media_attachments (id, status_id, account_id, type, media_type, file_path, thumbnail_path,"
                " description, blurhash, width, height, focus_x, focus_y, meta_json, file_size, created_at)"
                " VALUES (?, NULL, ?, 'image', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (media_id, account_id, EXTENSIONS[encoded.ext], paths[0], paths[1], description, encoded.blurhash,
                 encoded.width, encoded.height, point[0] if point else None, point[1] if point else None,
                 dumps_str(meta), len(encoded.data), now()),
            )
            row = await tx.fetchone("SELECT * FROM media_attachments WHERE id = ?", (media_id,))
    except BaseException:
        remove_files(ctx, paths)
        raise
    assert row is not None
    return row


async def store_profile_image(ctx: Context, field: FileField, kind: str) -> str:
    """Process an avatar (400×400) or header (1500×500); returns the stored path for accounts.avatar_path/header_path."""
    if kind not in PROFILE_SIZES:
        raise ValueError(f"unknown profile image kind {kind!r}")

    def work() -> str:
        data, ext = _profile(_read(field), kind)
        return _write(ctx.config.media_path, f"{kind}s", [(f".{ext}", data)])[0]

    return await asyncio.to_thread(work)
