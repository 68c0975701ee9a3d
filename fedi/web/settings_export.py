"""The signed-in user's export page: the relationship CSVs (Mastodon's `/settings/exports/NAME.csv`)
and the archive of their posts (requested here, built by a job, downloaded here).

The CSVs answer the web session or, as on GoToSocial's export API, a bearer token with the
matching read scope, so scripts can fetch them too.
"""

from __future__ import annotations

from aiohttp import web

from fedi.api.auth import bearer
from fedi.api.exports import csv_response, owner_id
from fedi.clock import iso_seconds
from fedi.context import CTX
from fedi.errors import Handler
from fedi.jsonutil import loads_strict
from fedi.portability import archive_export, exports
from fedi.web.session import Form, Session, not_found, see_other, user_get, user_post
from fedi.web.settings import settings_page

#: The read scope a token needs for each Mastodon file.
SCOPES = {"follows": "read:follows", "blocks": "read:blocks", "mutes": "read:mutes",
          "domain_blocks": "read:blocks", "bookmarks": "read:bookmarks", "lists": "read:lists"}


async def _page(request: web.Request, session: Session, *, error: str | None = None,
                status: int = 200) -> web.Response:
    ctx = request.app[CTX]
    account_id = session.account["id"]
    job = await archive_export.latest_job(ctx, account_id)
    archive = None if job is None else {
        "state": job["state"], "progress": job["progress"], "total": job["total"], "error": job["error"],
        "created": iso_seconds(job["created_at"])}
    found = await archive_export.archive_file(ctx, account_id)
    ready = None
    if found is not None:
        _, filename, done = found
        result = loads_strict(done["result_json"])
        ready = {"filename": filename, "size": result.get("size"), "items": result.get("items"),
                 "finished": iso_seconds(done["finished_at"] or done["updated_at"])}
    return settings_page(request, session, "settings/export.html", {
        "title": "Export", "error": error, "stats": await exports.stats(ctx, account_id),
        "archive": archive, "ready": ready}, status=status)


@user_get
async def export_page(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/export"""
    return await _page(request, session)


async def request_archive(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /settings/export/archive: queue the archive (refused within a day of the last)."""
    try:
        await archive_export.request_archive(request.app[CTX], session.account)
    except archive_export.ArchiveRefused as exc:
        return await _page(request, session, error=str(exc), status=429)
    return see_other("/settings/export")


@user_get
async def download_archive(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/export/archive: the signed-in user's newest archive, and only theirs."""
    ready = await archive_export.archive_file(request.app[CTX], session.account["id"])
    if ready is None:
        raise not_found(request, session, "There is no archive to download; request one on the export page.")
    path, filename, _ = ready
    return web.FileResponse(path, headers={"Content-Type": "application/zip", "Cache-Control": "no-store",
                                           "Content-Disposition": f'attachment; filename="{filename}"'})


def _mastodon_csv(name: str) -> Handler:
    async def rows(request: web.Request, account_id: int) -> web.Response:
        body = exports.to_csv(await exports.MASTODON[name](request.app[CTX], account_id))
        return csv_response(body, exports.MASTODON_FILENAMES[name])

    @user_get
    async def signed_in(request: web.Request, session: Session) -> web.StreamResponse:
        return await rows(request, session.account["id"])

    async def handler(request: web.Request) -> web.StreamResponse:
        if bearer(request) is not None:
            return await rows(request, await owner_id(request, SCOPES[name]))
        return await signed_in(request)

    handler.__doc__ = f"GET /settings/exports/{name}.csv"
    return handler


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/settings/export", export_page)
    r.add_post("/settings/export/archive", user_post(request_archive))
    r.add_get("/settings/export/archive", download_archive)
    for name in exports.MASTODON:
        r.add_get(f"/settings/exports/{name}.csv", _mastodon_csv(name))
