"""GoToSocial's alias and move endpoints: POST /api/v1/accounts/alias and POST /api/v1/accounts/move.

Both call outbox.move, as the settings pages and the CLI do; a refusal is a 422
with the reason in `error`, and nothing is changed.
"""

from __future__ import annotations

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import require
from fedi.api.params import read_params
from fedi.api.respond import json_response
from fedi.context import CTX
from fedi.errors import HttpError, refusing
from outbox.actions import ActionError
from outbox.move import MAX_ALIASES, move_account, set_aliases


def _refused(exc: ActionError) -> HttpError:
    return HttpError(exc.status, str(exc))


@refusing(ActionError, _refused)
async def alias(request: web.Request) -> web.Response:
    """POST /api/v1/accounts/alias: `also_known_as_uris[]` (URIs or @user@host; empty clears) → the CredentialAccount."""
    auth = await require(request, "write:accounts")
    ctx = request.app[CTX]
    params = await read_params(request)
    refs = params.list("also_known_as_uris")
    if len(refs) > MAX_ALIASES * 4 or not all(isinstance(r, str) for r in refs):
        raise HttpError(422, f"also_known_as_uris must be a list of at most {MAX_ALIASES} URIs or handles")
    assert auth.account is not None  # require() insists on a user
    account = await set_aliases(ctx, auth.account, refs)
    return json_response(await entities.credential_account(ctx, account))


@refusing(ActionError, _refused)
async def move(request: web.Request) -> web.Response:
    """POST /api/v1/accounts/move: `password` and `moved_to_uri` (a URI or @user@host) → 202, as GoToSocial answers."""
    auth = await require(request, "write:accounts")
    params = await read_params(request)
    password = params.str("password", max_length=1024) or ""
    target = params.str("moved_to_uri", max_length=2000) or ""
    if not password or not target:
        raise HttpError(422, "password and moved_to_uri are required")
    assert auth.account is not None
    await move_account(request.app[CTX], auth.account, target, password)
    return json_response({"message": "accepted"}, status=202)


def setup(app: web.Application) -> None:
    app.router.add_post("/api/v1/accounts/alias", alias)
    app.router.add_post("/api/v1/accounts/move", move)
