"""GoToSocial's `POST /api/v1/import`: a relationships CSV queued as an import job (202).

Multipart fields `data` (the file), `type` (following, blocks, mutes, domain_blocks,
bookmarks, lists; may be left out when the file's header tells) and `mode` (merge,
the default, or overwrite). The file is parsed whole before anything is stored; a
bad one is refused with the line at fault. The token needs the write scope of the
type (`write` covers them all, as GoToSocial asks for).
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_request import FileField

from fedi.api.auth import authenticate, require
from fedi.api.params import close_files, read_params
from fedi.api.respond import json_response
from fedi.context import CTX
from fedi.errors import HttpError
from fedi.portability.csv_import import MAX_BYTES, MODES, TYPES, ImportFileError
from fedi.portability.import_jobs import queue_import, read_import

#: The scope each type needs (lists also follow their members, as Mastodon's import does).
SCOPES = {"following": ("write:follows",), "blocks": ("write:blocks",), "mutes": ("write:mutes",),
          "domain_blocks": ("write:blocks",), "bookmarks": ("write:bookmarks",),
          "lists": ("write:lists", "write:follows")}
#: Room for the multipart envelope and the small fields beside a maximum-size file.
BODY_BYTES = MAX_BYTES + 64 * 1024


async def upload_import(request: web.Request) -> web.Response:
    """POST /api/v1/import"""
    if await authenticate(request) is None:
        raise HttpError(401, "The access token is invalid")
    params = await read_params(request.clone(client_max_size=BODY_BYTES))
    try:
        field = params.get("data")
        if not isinstance(field, FileField):
            raise HttpError(400, "no data file provided")
        data = field.file.read(MAX_BYTES + 1)
    finally:
        close_files(params)  # aiohttp closes upload temp files only for the original request, not a clone
    kind = (params.str("type", max_length=40) or "").strip().lower() or None
    if kind is not None and kind not in TYPES:
        raise HttpError(400, f"type {kind} not recognized, valid types are: {', '.join(TYPES)}")
    mode = (params.str("mode", max_length=40) or "merge").strip().lower()
    if mode not in MODES:
        raise HttpError(400, f"mode {mode} not recognized, valid modes are: {', '.join(MODES)}")
    try:
        parsed = await read_import(data, kind)
    except ImportFileError as exc:
        raise HttpError(exc.status, str(exc)) from None
    needed = SCOPES[parsed.type]
    auth = await require(request, needed[0])
    for scope in needed[1:]:
        await require(request, scope)
    if auth.account is None or auth.account["moved_to_uri"]:
        raise HttpError(422, "this account has moved; it imports nothing")
    job_id = await queue_import(request.app[CTX], auth.account, parsed, mode)
    return json_response({"status": "accepted", "id": str(job_id)}, status=202)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/import", upload_import)
