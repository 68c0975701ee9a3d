"""The signed-in user's own profile: verify_credentials and update_credentials.

Every parameter is checked before anything is written, so a bad request stores
nothing. Columns `outbox.actions.update_profile` does not take (bot,
discoverable, fields, images) are written first; then `update_profile` renders
the bio, sets name and lock, and sends one Update(Person) with the whole new
profile to the followers.
"""

from __future__ import annotations

import re
from html import escape
from typing import Any

from aiohttp import web

from fedi.api import entities
from fedi.api.auth import authenticate, require
from fedi.api.params import Params, close_files, is_file, read_params
from fedi.api.respond import json_response
from fedi.clock import now
from fedi.context import CTX, Context
from fedi.db import Row
from fedi.errors import HttpError
from fedi.images import MAX_BYTES, remove_files, store_profile_image
from fedi.jsonutil import dumps_str, loads_strict
from outbox.actions import ActionError, update_profile

MAX_DISPLAY_NAME = 30
MAX_NOTE = 500
MAX_FIELDS = 4
MAX_FIELD_CHARS = 255
PRIVACY = ("public", "unlisted", "private")
LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_URL = re.compile(r"https?://[^\s<>\"'`]+")


async def verify_credentials(request: web.Request) -> web.Response:
    """GET /api/v1/accounts/verify_credentials (scope `profile` or `read:accounts`)."""
    auth = await authenticate(request)
    scope = "profile" if auth is not None and "profile" in auth.scopes else "read:accounts"
    account = (await require(request, scope)).account
    return json_response(await entities.credential_account(request.app[CTX], account))


def field_html(text: str) -> str:
    """A profile field value as Mastodon shows it: escaped text, http(s) links made clickable."""
    out, pos = [], 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?)")
        out.append(escape(text[pos:match.start()]))
        scheme, _, rest = url.partition("://")
        out.append(f'<a href="{escape(url)}" target="_blank" rel="nofollow noopener noreferrer me" translate="no">'
                   f'<span class="invisible">{escape(scheme)}://</span><span class="">{escape(rest)}</span>'
                   '<span class="invisible"></span></a>')
        pos = match.start() + len(url)
    out.append(escape(text[pos:]))
    return "".join(out)


def _fields(params: Params) -> list[dict[str, str]] | None:
    """`fields_attributes[i][name]/[value]` (hash or array); blank pairs dropped, at most four."""
    if "fields_attributes" not in params:
        return None
    fields = []
    for item in params.list("fields_attributes"):
        if not isinstance(item, dict):
            raise HttpError(422, "Validation failed: fields_attributes must hold name and value pairs")
        pair = Params(item)
        name = (pair.str("name", "", max_length=MAX_FIELD_CHARS) or "").strip()
        value = (pair.str("value", "", max_length=MAX_FIELD_CHARS) or "").strip()
        if name or value:
            fields.append({"name": name, "value": field_html(value), "source_value": value})
    if len(fields) > MAX_FIELDS:
        raise HttpError(422, f"Validation failed: Fields can be at most {MAX_FIELDS}")
    return fields


def _flag(params: Params, name: str) -> bool | None:
    return params.bool(name) if name in params else None


def _source(params: Params) -> dict[str, Any]:
    """Posting defaults from `source[...]`, validated."""
    source = params.sub("source")
    out: dict[str, Any] = {}
    if "privacy" in source:
        privacy = source.str("privacy", max_length=20)
        if privacy not in PRIVACY:
            raise HttpError(422, "Validation failed: source[privacy] must be public, unlisted or private")
        out["privacy"] = privacy
    if "sensitive" in source:
        out["sensitive"] = source.bool("sensitive")
    if "language" in source:
        language = (source.str("language", max_length=10) or "").lower()
        if language and not LANGUAGE.match(language):
            raise HttpError(422, "Validation failed: source[language] must be an ISO 639-1 code")
        out["language"] = language or None
    return out


def _image(params: Params, name: str) -> Any:
    value = params.get(name)
    if value is None:
        return None
    if not is_file(value):
        raise HttpError(422, f"Validation failed: {name} must be an uploaded file")
    return value


async def _store_images(ctx: Context, params: Params) -> dict[str, str]:
    """Process avatar/header uploads; a failure leaves no file behind."""
    stored: dict[str, str] = {}
    try:
        for kind in ("avatar", "header"):
            upload = _image(params, kind)
            if upload is not None:
                stored[kind] = await store_profile_image(ctx, upload, kind)
    except BaseException:
        remove_files(ctx, list(stored.values()))
        raise
    return stored


async def _write_local(ctx: Context, account: Row, sets: dict[str, Any], settings: dict[str, Any]) -> None:
    async with ctx.db.write() as tx:
        if sets:
            await tx.execute(
                f"UPDATE accounts SET {', '.join(k + ' = ?' for k in sets)}, updated_at = ? WHERE id = ?",
                [*sets.values(), now(), account["id"]],
            )
        if settings:
            user = await tx.fetchone("SELECT settings_json FROM users WHERE account_id = ?", (account["id"],))
            merged = {**(loads_strict(user["settings_json"]) if user else {}), **settings}
            await tx.execute("UPDATE users SET settings_json = ? WHERE account_id = ?", (dumps_str(merged), account["id"]))


async def update_credentials(request: web.Request) -> web.Response:
    """PATCH /api/v1/accounts/update_credentials"""
    auth = await require(request, "write:accounts")
    # Avatar and header uploads are bigger than the app-wide body limit.
    params = await read_params(request.clone(client_max_size=MAX_BYTES + 64 * 1024))
    try:
        return await _update_credentials(request.app[CTX], auth.account, params)
    finally:
        close_files(params)


async def _update_credentials(ctx: Context, account: Row, params: Params) -> web.Response:
    display_name = params.str("display_name", max_length=10_000)
    if display_name is not None and len(display_name.strip()) > MAX_DISPLAY_NAME:
        raise HttpError(422, f"Validation failed: Display name is too long (maximum is {MAX_DISPLAY_NAME} characters)")
    note = params.str("note", max_length=10_000)
    if note is not None and len(note) > MAX_NOTE:
        raise HttpError(422, f"Validation failed: Note is too long (maximum is {MAX_NOTE} characters)")
    locked, bot, discoverable = _flag(params, "locked"), _flag(params, "bot"), _flag(params, "discoverable")
    for ignored in ("hide_collections", "indexable"):
        _flag(params, ignored)
    fields = _fields(params)
    settings = _source(params)
    for kind in ("avatar", "header"):
        _image(params, kind)
    if note is not None:
        settings["note_source"] = note
    sets: dict[str, Any] = {}
    if bot is not None:
        sets["bot"] = int(bot)
        if account["actor_type"] in ("Person", "Service"):
            sets["actor_type"] = "Service" if bot else "Person"
    if discoverable is not None:
        sets["discoverable"] = int(discoverable)
    if fields is not None:
        sets["fields_json"] = dumps_str(fields)
    images = await _store_images(ctx, params)
    for kind, path in images.items():
        sets[f"{kind}_path"] = path
        sets[f"{kind}_url"] = f"{ctx.base_url}/media/{path}"
    try:
        await _write_local(ctx, account, sets, settings)
    except BaseException:
        remove_files(ctx, list(images.values()))
        raise
    remove_files(ctx, [account[f"{kind}_path"] for kind in images if account[f"{kind}_path"]])
    if sets or display_name is not None or note is not None or locked is not None:
        try:
            account = await update_profile(ctx, account, display_name=display_name.strip() if display_name is not None else None,
                                           summary=note, locked=locked)
        except ActionError as exc:
            raise HttpError(exc.status, f"Validation failed: {exc}") from None
    else:
        account = await ctx.db.fetchrow("SELECT * FROM accounts WHERE id = ?", (account["id"],))
    return json_response(await entities.credential_account(ctx, account))


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/api/v1/accounts/verify_credentials", verify_credentials)
    r.add_patch("/api/v1/accounts/update_credentials", update_credentials)
