"""The import settings page: upload a relationships CSV as the API's `POST /api/v1/import` takes it, and follow
the account's import jobs (state, progress, the rows that failed with their line and error).

The form posts the API's fields (`data`, `type`, `mode`); a bad file is shown on
the page with its line and a 4xx status, and nothing of it is stored. The second
form, a post archive, goes to `/settings/import/archive` (the archive import's page).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from fedi.context import CTX
from fedi.portability.csv_import import MAX_BYTES, MODES, TYPES, ImportFileError
from fedi.portability.import_jobs import account_imports, queue_import, read_import
from fedi.web.session import Form, Session, see_other, user_get, user_post
from fedi.web.settings import settings_page

#: Room for the multipart envelope and the small fields beside a maximum-size file.
FORM_BYTES = MAX_BYTES + 64 * 1024


async def _page(request: web.Request, session: Session, *, status: int = 200, **context: Any) -> web.Response:
    jobs = await account_imports(request.app[CTX], session.account["id"])
    return settings_page(request, session, "settings/import.html",
                         {"title": "Import", "types": TYPES, "modes": MODES, "jobs": jobs,
                          "max_mib": MAX_BYTES // (1024 * 1024), **context}, status=status)


@user_get
async def import_page(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /settings/import"""
    queued = request.query.get("queued", "")
    return await _page(request, session, notice=f"Import {queued} queued." if queued.isdigit() else None)


async def import_upload(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /settings/import: parse the whole file, then queue it (or show the line at fault)."""
    field = form.get("data")
    kind = str(form.get("type") or "").strip().lower() or None
    mode = str(form.get("mode") or "merge").strip().lower()
    if not isinstance(field, FileField):
        return await _page(request, session, error="Choose a file to import.", status=400)
    if kind is not None and kind not in TYPES or mode not in MODES:
        return await _page(request, session, error="Choose a type and a mode from the lists.", status=400)
    try:
        parsed = await read_import(field.file.read(MAX_BYTES + 1), kind)
    except ImportFileError as exc:
        return await _page(request, session, error=f"Nothing was imported: {exc}.", status=exc.status)
    if session.account["moved_to_uri"]:
        return await _page(request, session, error="This account has moved; it imports nothing.", status=422)
    job_id = await queue_import(request.app[CTX], session.account, parsed, mode)
    return see_other(f"/settings/import?queued={job_id}")


def setup(app: web.Application) -> None:
    app.router.add_get("/settings/import", import_page)
    app.router.add_post("/settings/import", user_post(import_upload, FORM_BYTES))
