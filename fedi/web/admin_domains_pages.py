"""Admin pages for domain rules: blocks (add, edit, lift), import with a preview, export, allows, federation mode.

Every change goes through `fedi.moderation.blocks` and `csv_io` with the admin's
account id — the functions the admin API and the CLI call — so the effects on
follows and the audit rows are the same whichever door an admin uses.

An import is previewed first; the preview page carries the list and a digest of
the plan it showed, and "apply" re-plans: if blocks or follows changed in the
meantime the admin sees the new preview instead of a surprise.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from fedi.context import CTX
from fedi.db import Row
from fedi.moderation.blocks import (
    BOOLEAN_FIELDS, BlockSpec, RuleError, add_allow, create_block, remove_allow, remove_block, set_setting, update_block,
)
from fedi.moderation.csv_io import ListError, ParsedList, Planned, apply_list, export_csv, export_json, parse_list, preview, summary
from fedi.moderation.domains import FETCH_MODES, MODES, SEVERITIES, current
from fedi.web.session import NO_STORE, Form, Session, admin_get, admin_post, message_page, not_found, page, see_other

VIA = {"via": "web"}
MAX_LIST_BYTES = 8 * 1024 * 1024
#: Rows a preview lists; a longer list shows only the rows that change something.
PREVIEW_ROWS = 1000
PAGE_SIZE = 200
MAX_COMMENT = 10_000
LIST_FORMATS = ("auto", "csv", "json", "text")
SEVERED_OPEN = "SELECT count(*) FROM severed_follows WHERE domain = ? AND restored_at IS NULL AND state IN ('accepted', 'pending')"


def _block_values(form: Form) -> dict[str, Any]:
    """The block fields of a form (an unticked box is false; an empty comment is none)."""
    values: dict[str, Any] = {"severity": form.get("severity"), **{f: f in form for f in BOOLEAN_FIELDS}}
    for name in ("private_comment", "public_comment"):
        text = form.get(name)
        text = text if isinstance(text, str) else ""
        if len(text) > MAX_COMMENT:
            raise RuleError(f"the {name.replace('_', ' ')} is longer than {MAX_COMMENT} characters")
        values[name] = text or None
    return values


def _id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def _blocks_page(request: web.Request, session: Session, *, error: str | None = None,
                       values: Form | None = None, status: int = 200) -> web.Response:
    ctx = request.app[CTX]
    q = request.query.get("q", "")[:300].strip().lower()
    after = request.query.get("after", "")[:300]
    rows = await ctx.db.fetchall(
        "SELECT * FROM domain_blocks WHERE instr(domain, ?) > 0 AND domain > ? ORDER BY domain LIMIT ?",
        (q, after, PAGE_SIZE + 1))
    total = await ctx.db.fetchval("SELECT count(*) FROM domain_blocks")
    more = rows[PAGE_SIZE - 1]["domain"] if len(rows) > PAGE_SIZE else None
    return page(request, session, "admin/domain_blocks.html", {
        "title": "Domain blocks", "blocks": rows[:PAGE_SIZE], "total": total, "q": q, "more": more,
        "severities": SEVERITIES, "error": error, "values": values or {}}, status=status)


async def blocks(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_blocks (?q=part of a domain, ?after=domain for the next page)"""
    return await _blocks_page(request, session)


async def add_block(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_blocks"""
    domain = form.get("domain")
    try:
        spec = BlockSpec(domain=domain if isinstance(domain, str) else "", **_block_values(form))
        await create_block(request.app[CTX], session.account["id"], spec, detail=VIA)
    except RuleError as exc:
        return await _blocks_page(request, session, error=exc.message, values=form, status=422)
    return see_other("/admin/domain_blocks")


async def _block_row(request: web.Request, session: Session) -> Row:
    row = await request.app[CTX].db.fetchone("SELECT * FROM domain_blocks WHERE id = ?", (_id(request),))
    if row is None:
        raise not_found(request, session, "There is no such domain block (any more).")
    return row


async def edit_block(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_blocks/{id}"""
    row = await _block_row(request, session)
    return page(request, session, "admin/domain_block_edit.html",
                {"title": f"Block of {row['domain']}", "block": row, "severities": SEVERITIES})


async def save_block(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_blocks/{id}: change severity, flags and comments (the domain stays)."""
    row = await _block_row(request, session)
    try:
        await update_block(request.app[CTX], session.account["id"], row["id"], _block_values(form), detail=VIA)
    except RuleError as exc:
        return page(request, session, "admin/domain_block_edit.html", {
            "title": f"Block of {row['domain']}", "block": row, "severities": SEVERITIES, "error": exc.message},
            status=exc.status)
    return see_other("/admin/domain_blocks")


async def confirm_remove(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_blocks/{id}/remove: what lifting the block will bring back."""
    row = await _block_row(request, session)
    severed = await request.app[CTX].db.fetchval(SEVERED_OPEN, (row["domain"],))
    return page(request, session, "admin/domain_block_remove.html",
                {"title": f"Lift the block of {row['domain']}", "block": row, "severed": severed})


async def remove(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_blocks/{id}/remove: lift it; follows it cut are followed again."""
    ctx = request.app[CTX]
    row = await _block_row(request, session)
    before = await ctx.db.fetchval(SEVERED_OPEN, (row["domain"],))
    try:
        await remove_block(ctx, session.account["id"], row["id"], detail=VIA)
    except RuleError as exc:
        return message_page(request, session, exc.status, "Not lifted", exc.message)
    restored = before - await ctx.db.fetchval(SEVERED_OPEN, (row["domain"],))
    return message_page(request, session, 200, "Block lifted",
                        f"The block of {row['domain']} is lifted; {restored} follows it had cut are being restored.")


def plan_digest(planned: list[Planned]) -> str:
    """Identifies a preview, so that "apply" applies what the admin saw."""
    rows = [(p.line, p.domain, p.change, p.values, p.severs) for p in planned]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def _import_page(request: web.Request, session: Session, *, status: int = 200, **context: Any) -> web.Response:
    planned: list[Planned] | None = context.get("planned")
    if planned is not None:
        shown = planned if len(planned) <= PREVIEW_ROWS else [p for p in planned if p.change != "unchanged"]
        context.update(rows=shown[:PREVIEW_ROWS], hidden=len(planned) - len(shown[:PREVIEW_ROWS]),
                       counts=summary(planned), digest=plan_digest(planned))
    return page(request, session, "admin/import.html",
                {"title": "Import domain blocks", "formats": LIST_FORMATS, "format": "auto", **context}, status=status)


def _list_source(form: Form) -> tuple[str, str]:
    """(the list's text, a name for the audit log) from an uploaded file or the text box."""
    upload = form.get("file")
    if isinstance(upload, FileField) and upload.filename:
        try:
            data = upload.file.read(MAX_LIST_BYTES + 1)
        finally:
            upload.file.close()
        if len(data) > MAX_LIST_BYTES:
            raise ListError(f"the file is larger than {MAX_LIST_BYTES // 1_048_576} MB")
        try:
            return data.decode("utf-8"), re.sub(r"[^\w.\- ]", "_", upload.filename)[:200]
        except UnicodeDecodeError:
            raise ListError("the file is not UTF-8 text") from None
    text = form.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ListError("paste a list or choose a file")
    name = form.get("name")
    return text, name[:200] if isinstance(name, str) and name else "pasted list"


def _parse(form: Form) -> tuple[str, str, str, ParsedList]:
    fmt = form.get("format")
    fmt = fmt if isinstance(fmt, str) and fmt in LIST_FORMATS else "auto"
    text, name = _list_source(form)
    return text, name, fmt, parse_list(text, fmt)


async def import_form(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_blocks/import"""
    return _import_page(request, session)


async def import_preview(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_blocks/import: parse (a bad row names its line) and show what would change."""
    try:
        text, name, fmt, parsed = _parse(form)
    except ListError as exc:
        pasted = form.get("text")
        return _import_page(request, session, error=str(exc), status=422,
                            pasted=pasted if isinstance(pasted, str) and len(pasted) <= MAX_LIST_BYTES else "")
    planned = await preview(request.app[CTX], parsed)
    return _import_page(request, session, planned=planned, text=text, name=name, format=fmt)


async def import_apply(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_blocks/import/apply: all or nothing, and only the plan that was previewed."""
    ctx = request.app[CTX]
    try:
        text, name, fmt, parsed = _parse(form)
    except ListError as exc:
        return _import_page(request, session, error=str(exc), status=422)
    planned = await preview(ctx, parsed)
    expected = form.get("digest")
    if not isinstance(expected, str) or expected != plan_digest(planned):
        return _import_page(request, session, planned=planned, text=text, name=name, format=fmt, status=409,
                            error="Blocks or follows changed since this preview was made, so nothing was applied. "
                                  "Check the new preview below and apply again.")
    done = await apply_list(ctx, session.account["id"], parsed, name)
    return _import_page(request, session, applied=summary(done), name=name)


async def export(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_blocks/export?format=csv|json: Mastodon's CSV (or JSON) as a download."""
    ctx = request.app[CTX]
    fmt = request.query.get("format", "csv")
    if fmt not in ("csv", "json"):
        return message_page(request, session, 404, "Not found", "Export formats are csv and json.")
    rows = await ctx.db.fetchall("SELECT * FROM domain_blocks ORDER BY domain")
    body, ctype = (export_csv(rows), "text/csv") if fmt == "csv" else (export_json(rows), "application/json")
    filename = re.sub(r"[^A-Za-z0-9.-]", "_", ctx.domain) + f"-domain_blocks.{fmt}"
    return web.Response(text=body, content_type=ctype, charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"', "X-Content-Type-Options": "nosniff", **NO_STORE})


async def _allows_page(request: web.Request, session: Session, *, error: str | None = None,
                       status: int = 200) -> web.Response:
    ctx = request.app[CTX]
    rules = await current(ctx)
    rows = await ctx.db.fetchall("SELECT * FROM domain_allows ORDER BY domain")
    return page(request, session, "admin/domain_allows.html", {
        "title": "Federation", "allows": rows, "mode": rules.mode, "authorized_fetch": rules.authorized_fetch,
        "modes": MODES, "fetch_modes": FETCH_MODES, "error": error}, status=status)


async def allows(request: web.Request, session: Session) -> web.StreamResponse:
    """GET /admin/domain_allows: allowed domains, the federation mode and authorized fetch."""
    return await _allows_page(request, session)


async def add_allow_page(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_allows"""
    domain = form.get("domain")
    try:
        await add_allow(request.app[CTX], session.account["id"], domain if isinstance(domain, str) else "")
    except RuleError as exc:
        return await _allows_page(request, session, error=exc.message, status=422)
    return see_other("/admin/domain_allows")


async def remove_allow_page(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/domain_allows/{id}/remove"""
    try:
        await remove_allow(request.app[CTX], session.account["id"], _id(request))
    except RuleError as exc:
        return await _allows_page(request, session, error=exc.message, status=exc.status)
    return see_other("/admin/domain_allows")


async def federation(request: web.Request, session: Session, form: Form) -> web.StreamResponse:
    """POST /admin/federation (setting = federation_mode | authorized_fetch, value): at once, no restart."""
    setting, value = form.get("setting"), form.get("value")
    try:
        await set_setting(request.app[CTX], session.account["id"], setting if isinstance(setting, str) else "",
                          value if isinstance(value, str) else "")
    except RuleError as exc:
        return await _allows_page(request, session, error=exc.message, status=422)
    return see_other("/admin/domain_allows")


def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/domain_blocks", admin_get(blocks))
    r.add_post("/admin/domain_blocks", admin_post(add_block))
    r.add_get("/admin/domain_blocks/import", admin_get(import_form))
    r.add_post("/admin/domain_blocks/import", admin_post(import_preview, MAX_LIST_BYTES * 2))
    r.add_post("/admin/domain_blocks/import/apply", admin_post(import_apply, MAX_LIST_BYTES * 2))
    r.add_get("/admin/domain_blocks/export", admin_get(export))
    r.add_get(r"/admin/domain_blocks/{id:\d{1,18}}", admin_get(edit_block))
    r.add_post(r"/admin/domain_blocks/{id:\d{1,18}}", admin_post(save_block))
    r.add_get(r"/admin/domain_blocks/{id:\d{1,18}}/remove", admin_get(confirm_remove))
    r.add_post(r"/admin/domain_blocks/{id:\d{1,18}}/remove", admin_post(remove))
    r.add_get("/admin/domain_allows", admin_get(allows))
    r.add_post("/admin/domain_allows", admin_post(add_allow_page))
    r.add_post(r"/admin/domain_allows/{id:\d{1,18}}/remove", admin_post(remove_allow_page))
    r.add_post("/admin/federation", admin_post(federation))
