"""`fedi domain-block …`, `fedi domain-allow …` and `fedi federation …`: instance moderation from a shell.

The same functions as the admin API make every change (fedi.moderation.blocks),
so effects and the audit log are the same; changes made while `fedi serve` runs
reach it within a second. Errors are one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fedi.cli_base import in_context
from fedi.moderation.blocks import (
    BlockSpec, RuleError, add_allow, block_id_for, check_domain, create_block, remove_allow, remove_block, set_setting,
    update_block,
)
from fedi.moderation.csv_io import ListError, apply_list, export_csv, export_json, parse_list, preview, summary
from fedi.moderation.domains import FETCH_MODES, MODES, SEVERITIES, current

VIA = {"via": "cli"}

_command = in_context(RuleError, ListError)


def _flags(row: Any) -> str:
    return ",".join(n for n in ("reject_media", "reject_reports", "obfuscate") if row[n]) or "-"


@_command
async def cmd_block_add(ctx: Any, args: argparse.Namespace) -> int:
    if args.severity is not None and args.severity not in SEVERITIES:
        raise RuleError(f"severity must be one of {', '.join(SEVERITIES)}")
    given = {k: v for k, v in (
        ("severity", args.severity), ("reject_media", args.reject_media), ("reject_reports", args.reject_reports),
        ("public_comment", args.public_comment), ("private_comment", args.private_comment),
        ("obfuscate", args.obfuscate)) if v is not None}
    domain = check_domain(ctx, args.domain)
    block_id = await ctx.db.fetchval("SELECT id FROM domain_blocks WHERE domain = ?", (domain,))
    if block_id is None:
        row = await create_block(ctx, None, BlockSpec(domain=domain, **{"severity": "suspend", **given}), detail=VIA)
        verb = "blocked"
    else:
        row = await update_block(ctx, None, block_id, given, detail=VIA)
        verb = "updated block on"
    print(f"{verb} {row['domain']}: {row['severity']} ({_flags(row)})")
    return 0


@_command
async def cmd_block_remove(ctx: Any, args: argparse.Namespace) -> int:
    row = await remove_block(ctx, None, await block_id_for(ctx, args.domain), detail=VIA)
    restored = await ctx.db.fetchval(
        "SELECT count(*) FROM severed_follows WHERE domain = ? AND restored_at IS NOT NULL", (row["domain"],)
    )
    print(f"lifted the block on {row['domain']} ({restored} severed follows restored in all)")
    return 0


@_command
async def cmd_block_list(ctx: Any, args: argparse.Namespace) -> int:
    rows = await ctx.db.fetchall("SELECT * FROM domain_blocks ORDER BY domain")
    for r in rows:
        print(f"{r['domain']}\t{r['severity']}\t{_flags(r)}\t{r['public_comment'] or ''}")
    if not rows:
        print("(no domain blocks)")
    return 0


@_command
async def cmd_block_import(ctx: Any, args: argparse.Namespace) -> int:
    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ListError(f"{args.file}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        parsed = parse_list(text, args.format)
    except ListError as exc:
        raise ListError(f"{args.file}: {exc}") from None
    planned = await preview(ctx, parsed) if args.preview else await apply_list(ctx, None, parsed, Path(args.file).name)
    for p in planned:
        if p.change != "unchanged":
            extra = f" ({p.reason})" if p.reason else (f" — cuts {p.severs} local follows" if p.severs else "")
            severity = f" {p.values['severity']}" if p.values else ""
            print(f"line {p.line}: {p.change} {p.domain}{severity}{extra}")
    counts = summary(planned)
    head = "would" if args.preview else "did"
    print(f"{head}: {counts['add']} add, {counts['update']} update, {counts['unchanged']} unchanged, "
          f"{counts['skip']} skip; {counts['severs']} local follows cut")
    return 0


@_command
async def cmd_block_export(ctx: Any, args: argparse.Namespace) -> int:
    rows = await ctx.db.fetchall("SELECT * FROM domain_blocks ORDER BY domain")
    sys.stdout.write(export_json(rows) if args.format == "json" else export_csv(rows))
    return 0


@_command
async def cmd_setting(ctx: Any, args: argparse.Namespace) -> int:
    if args.value is not None:
        await set_setting(ctx, None, args.setting, args.value)
    rules = await current(ctx)
    print(f"{args.setting}: {rules.mode if args.setting == 'federation_mode' else rules.authorized_fetch}")
    return 0


@_command
async def cmd_allow(ctx: Any, args: argparse.Namespace) -> int:
    if args.action == "add":
        row = await add_allow(ctx, None, args.domain)
        print(f"allowed {row['domain']}")
    elif args.action == "remove":
        domain = check_domain(ctx, args.domain)
        allow_id = await ctx.db.fetchval("SELECT id FROM domain_allows WHERE domain = ?", (domain,))
        if allow_id is None:
            raise RuleError(f"{domain} is not allowed")
        await remove_allow(ctx, None, allow_id)
        print(f"no longer allowed: {domain}")
    else:
        rows = await ctx.db.fetchall("SELECT domain FROM domain_allows ORDER BY domain")
        print("\n".join(r["domain"] for r in rows) or "(no allowed domains)")
    return 0


def register(sub: Any) -> None:
    """Add the moderation commands to `fedi`'s sub-command parser."""
    block = sub.add_parser("domain-block", help="limit or cut off other instances").add_subparsers(
        dest="action", required=True)
    add = block.add_parser("add", help="block a domain (and its subdomains), or change its block")
    add.add_argument("domain")
    add.add_argument("--severity", help="noop, silence or suspend (default for a new block: suspend)")
    add.add_argument("--reject-media", action=argparse.BooleanOptionalAction, default=None)
    add.add_argument("--reject-reports", action=argparse.BooleanOptionalAction, default=None)
    add.add_argument("--public-comment")
    add.add_argument("--private-comment")
    add.add_argument("--obfuscate", action=argparse.BooleanOptionalAction, default=None)
    add.set_defaults(func=cmd_block_add)
    remove = block.add_parser("remove", help="lift a block (follows it cut are restored)")
    remove.add_argument("domain")
    remove.set_defaults(func=cmd_block_remove)
    block.add_parser("list", help="list domain blocks").set_defaults(func=cmd_block_list)
    imp = block.add_parser("import", help="apply a block list (Mastodon CSV, JSON, or one domain a line)")
    imp.add_argument("file", help="the list, or - for standard input")
    imp.add_argument("--preview", action="store_true", help="only show what would change")
    imp.add_argument("--format", default="auto", choices=["auto", "csv", "json", "text"])
    imp.set_defaults(func=cmd_block_import)
    exp = block.add_parser("export", help="write the blocks to standard output")
    exp.add_argument("--format", default="csv", choices=["csv", "json"])
    exp.set_defaults(func=cmd_block_export)

    federation = sub.add_parser("federation", help="federation-wide settings").add_subparsers(
        dest="setting_name", required=True)
    mode = federation.add_parser("mode", help="blocklist (default) or allowlist: only allowed domains federate")
    mode.add_argument("value", nargs="?", choices=MODES)
    mode.set_defaults(func=cmd_setting, setting="federation_mode")
    fetch = federation.add_parser("authorized-fetch", help="off, blocked or all: who must sign GETs of our documents")
    fetch.add_argument("value", nargs="?", choices=FETCH_MODES)
    fetch.set_defaults(func=cmd_setting, setting="authorized_fetch")

    allow = sub.add_parser("domain-allow", help="domains allowed in allow-list mode").add_subparsers(
        dest="action", required=True)
    for action in ("add", "remove"):
        p = allow.add_parser(action, help=f"{action} an allowed domain")
        p.add_argument("domain")
        p.set_defaults(func=cmd_allow)
    allow.add_parser("list", help="list allowed domains").set_defaults(func=cmd_allow)
