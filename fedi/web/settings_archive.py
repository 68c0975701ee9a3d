"""The archive upload of the import settings: POST /settings/import/archive, and its jobs' progress.

The form is read as a stream (an archive may be far larger than any other form): the
`data` file goes to a temporary file in the imports folder, capped at
`MAX_ARCHIVE_BYTES` (a 413 page beyond it), and the `csrf` field is checked before the
archive is looked at. Then `queue_archive_import` validates it whole; a refused archive
is a 422 page with the reason and nothing kept.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets

from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from fedi.context import CTX
from fedi.portability.archive_import import (
    ArchiveError,
    archive_jobs,
    imports_dir,
    queue_archive_import,
)
from fedi.portability.archive_read import MAX_ARCHIVE_BYTES
from fedi.web.session import (
    Session,
    Stop,
    current_session,
    login_redirect,
    see_other,
    stops,
    user_get,
)
from fedi.web.settings import settings_page

TITLE = "Import posts"
MAX_FIELD = 256


class _TooLarge(Exception):
    pass


@user_get
async def status_page(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/import/archive: the upload form and the account's archive imports."""
    return await _page(request, session)


async def _page(request: web.Request, session: Session, *, error: str | None = None,
                status: int = 200) -> web.Response:
    jobs = await archive_jobs(request.app[CTX], session.account["id"])
    return settings_page(request, session, "settings/archive.html",
                         {"title": TITLE, "jobs": jobs, "error": error}, status=status)


async def _save(part: BodyPartReader, path: str) -> None:
    """Stream the file part to `path` (disk writes off the event loop), refusing it past the cap."""
    size = 0
    fh = await asyncio.to_thread(open, path, "xb")
    try:
        while chunk := await part.read_chunk(1024 * 1024):
            size += len(chunk)
            if size > MAX_ARCHIVE_BYTES:
                raise _TooLarge
            await asyncio.to_thread(fh.write, chunk)
    finally:
        fh.close()


async def _field(part: BodyPartReader) -> str:
    data = b""
    while chunk := await part.read_chunk(MAX_FIELD):
        data += chunk
        if len(data) > MAX_FIELD:
            return ""
    return data.decode("utf-8", "replace")


async def _upload(request: web.Request) -> web.StreamResponse:
    session = await current_session(request)
    if session is None:
        raise Stop(login_redirect(request))
    ctx = request.app[CTX]
    if request.content_type != "multipart/form-data":
        return await _page(request, session, error="Send the archive as a file upload.", status=400)
    folder = imports_dir(ctx.config)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"upload-{secrets.token_hex(12)}.part")
    csrf, got = "", False
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                return await _page(request, session, error="The form could not be read.", status=400)
            if part.name == "csrf":
                csrf = await _field(part)
            elif part.name == "data" and not got:
                await _save(part, path)
                got = True
            else:
                await part.release()
        if not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
            return await _page(request, session, status=403, error="The form did not carry this session's token,"
                               " so nothing was changed. Reload the page and try again.")
        if not got:
            return await _page(request, session, error="Choose an archive to upload.", status=422)
        await queue_archive_import(ctx, session.account, path)
    except _TooLarge:
        return await _page(request, session, status=413,
                           error=f"The archive is larger than {MAX_ARCHIVE_BYTES // 2**20} MB.")
    except ArchiveError as exc:
        return await _page(request, session, error=f"The archive was refused: {exc}", status=422)
    except (ValueError, HttpProcessingError):
        return await _page(request, session, error="The form could not be read.", status=400)
    finally:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
    return see_other("/settings/import")


upload = stops(_upload)


def setup(app: web.Application) -> None:
    app.router.add_get("/settings/import/archive", status_page)
    app.router.add_post("/settings/import/archive", upload)
