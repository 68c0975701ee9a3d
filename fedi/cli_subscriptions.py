"""`fedi blocklist …`: block-list subscriptions from a shell.

The same functions as the admin API make every change (fedi.moderation.subscriptions
and blocklist_drafts), so drafts, blocks and the audit log are the same. Errors are
one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fedi.cli_base import CliError, in_context
from fedi.moderation.blocklist_drafts import apply_draft, dismiss_draft
from fedi.moderation.blocklist_merge import Change
from fedi.moderation.blocks import RuleError
from fedi.moderation.domains import SEVERITIES
from fedi.moderation.subscriptions import (
    FORMATS, MODES, RETRACTIONS, SourceSpec, SubscriptionError, SyncResult, add_exclude, subscribe, sync, unsubscribe,
)

_command = in_context(SubscriptionError, RuleError)
T = TypeVar("T")


def _id(text: str) -> int | None:
    return int(text) if text.isdigit() and len(text) < 20 else None


async def _by_id(ctx: Any, action: Callable[[Any, None, int], Awaitable[T | None]], text: str, missing: str) -> T:
    """`action(ctx, None, id)` for the id typed; `missing` when that is no id or `action` finds nothing."""
    found = _id(text)
    result = await action(ctx, None, found) if found is not None else None
    if result is None:
        raise CliError(missing)
    return result


def _change(c: Change) -> str:
    what = "lift" if c.change == "remove" else f"{c.change} {c.severity}"
    flags = "".join(f" +{n}" for n, on in (("reject_media", c.reject_media), ("reject_reports", c.reject_reports)) if on)
    return f"{c.domain}\t{what}{flags}\t(from {c.sources[0].url})"


def _print_sync(result: SyncResult) -> None:
    for f in result.fetched:
        detail = f.error if f.state == "error" else f"{f.entries} entries, {len(f.dropped)} dropped"
        print(f"source {f.source_id} {f.url}: {f.state}" + ("" if f.state == "not_modified" else f" ({detail})"))
    for title, changes in (("applied", result.outcome.applied), ("drafted", result.outcome.drafted)):
        print(f"{title}: {len(changes)}")
        for c in changes:
            print(f"  {_change(c)}")
    for c, reason in result.outcome.failed:
        print(f"not applied: {c.domain}: {reason}")


@_command
async def cmd_subscribe(ctx: Any, args: argparse.Namespace) -> int:
    spec = SourceSpec(args.url, args.priority, args.max_severity, args.mode, args.retractions, args.format)
    row = await subscribe(ctx, None, spec)
    print(f"subscribed {row['url']} as source {row['id']} ({row['mode']} mode); run `fedi blocklist sync` to fetch it")
    return 0


@_command
async def cmd_unsubscribe(ctx: Any, args: argparse.Namespace) -> int:
    outcome = await _by_id(ctx, unsubscribe, args.id, f"no subscription {args.id}")
    print(f"unsubscribed; {len(outcome.applied)} blocks lifted, {len(outcome.drafted)} drafts")
    return 0


@_command
async def cmd_list(ctx: Any, args: argparse.Namespace) -> int:
    rows = await ctx.db.fetchall(
        "SELECT s.*, (SELECT count(*) FROM blocklist_entries e WHERE e.source_id = s.id) AS n"
        " FROM blocklist_sources s ORDER BY s.priority DESC, s.id")
    if not rows:
        print("no subscriptions")
    for r in rows:
        state = "enabled" if r["enabled"] else "disabled"
        error = f"\tlast error: {r['last_error']}" if r["last_error"] else ""
        print(f"{r['id']}\t{r['url']}\tpriority {r['priority']}\tmax {r['max_severity']}\t{r['mode']}"
              f"\tretractions {r['retractions']}\t{state}\t{r['n']} entries{error}")
    excludes = [r[0] for r in await ctx.db.fetchall("SELECT domain FROM blocklist_excludes ORDER BY domain")]
    if excludes:
        print("excluded: " + ", ".join(excludes))
    return 0


@_command
async def cmd_sync(ctx: Any, args: argparse.Namespace) -> int:
    result = await sync(ctx, force=True)
    if not result.fetched:
        print("no enabled subscriptions")
    _print_sync(result)
    return 0


@_command
async def cmd_drafts(ctx: Any, args: argparse.Namespace) -> int:
    rows = await ctx.db.fetchall("SELECT * FROM blocklist_drafts WHERE state = 'pending' ORDER BY id")
    if not rows:
        print("no pending drafts")
    for r in rows:
        what = "lift" if r["change"] == "remove" else f"{r['change']} {r['severity']}"
        print(f"{r['id']}\t{r['domain']}\t{what}")
    return 0


@_command
async def cmd_apply_draft(ctx: Any, args: argparse.Namespace) -> int:
    if args.all == (args.id is not None):
        raise CliError("give a draft id or --all")
    pending = [r[0] for r in await ctx.db.fetchall(
        "SELECT id FROM blocklist_drafts WHERE state = 'pending' ORDER BY id")]
    ids = pending if args.all else [i for i in pending if i == _id(args.id)]
    if not args.all and not ids:
        raise CliError(f"no pending draft {args.id}")
    failed = 0
    for draft_id in ids:
        try:
            row = await apply_draft(ctx, None, draft_id, via="cli")
        except RuleError as exc:
            print(f"draft {draft_id} not applied: {exc.message}")
            failed += 1
            continue
        if row is not None:
            print(f"applied draft {draft_id}: {row['domain']}")
    print(f"{len(ids) - failed} applied, {failed} not applied")
    return 1 if failed else 0


@_command
async def cmd_dismiss_draft(ctx: Any, args: argparse.Namespace) -> int:
    row = await _by_id(ctx, dismiss_draft, args.id, f"no pending draft {args.id}")
    print(f"dismissed draft {row['id']}: {row['domain']}")
    return 0


@_command
async def cmd_exclude(ctx: Any, args: argparse.Namespace) -> int:
    domain = await add_exclude(ctx, None, args.domain)
    print(f"lists will not block {domain} (or its subdomains)")
    return 0


def _priority(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("priority must be a whole number") from None


def register(sub: Any) -> None:
    """Add `fedi blocklist …` to `fedi`'s sub-command parser."""
    bl = sub.add_parser("blocklist", help="subscribe to block lists").add_subparsers(dest="action", required=True)
    add = bl.add_parser("subscribe", help="follow a block list URL (Mastodon CSV, JSON or one domain a line)")
    add.add_argument("url")
    add.add_argument("--priority", type=_priority, default=0, help="higher wins when lists disagree (default 0)")
    add.add_argument("--max-severity", default="suspend", choices=SEVERITIES, help="cap on this list's severity")
    add.add_argument("--mode", default="draft", choices=MODES, help="draft (default): an admin applies; apply: at once")
    add.add_argument("--retractions", default="remove", choices=RETRACTIONS,
                     help="when the list drops a domain: remove (default) or keep its block")
    add.add_argument("--format", default="auto", choices=FORMATS)
    add.set_defaults(func=cmd_subscribe)
    remove = bl.add_parser("unsubscribe", help="drop a subscription (its domains count as retracted)")
    remove.add_argument("id")
    remove.set_defaults(func=cmd_unsubscribe)
    bl.add_parser("list", help="list subscriptions and excludes").set_defaults(func=cmd_list)
    bl.add_parser("sync", help="fetch every list now and print what changed").set_defaults(func=cmd_sync)
    bl.add_parser("drafts", help="list pending drafts").set_defaults(func=cmd_drafts)
    apply = bl.add_parser("apply-draft", help="apply a pending draft, or all of them")
    apply.add_argument("id", nargs="?")
    apply.add_argument("--all", action="store_true")
    apply.set_defaults(func=cmd_apply_draft)
    dismiss = bl.add_parser("dismiss-draft", help="decline a pending draft")
    dismiss.add_argument("id")
    dismiss.set_defaults(func=cmd_dismiss_draft)
    exclude = bl.add_parser("exclude", help="never block DOMAIN (or its subdomains) because a list says so")
    exclude.add_argument("domain")
    exclude.set_defaults(func=cmd_exclude)
