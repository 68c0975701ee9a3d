"""The `fedi` command: run an instance and administer it from a shell.

Every error is one line on stderr and a non-zero exit, so scripts can rely on it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sqlite3
import sys
from importlib import resources
from typing import Any

from fedi.cli_base import CliError, in_context
from fedi.config import Config, ConfigError, load_config, resolve_path


def _read_password(args: argparse.Namespace) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError("no password on standard input")
        return line.rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise CliError("passwords do not match")
    return first


async def cmd_init(config: Config, args: argparse.Namespace) -> int:
    from actors.local import instance_signer
    from fedi.app import close_context, open_context

    ctx = await open_context(config)
    try:
        await instance_signer(ctx)  # the instance actor's key pair now rather than at its first use
    finally:
        await close_context(ctx)
    print(f"database ready at {config.database_path}")
    print(f"instance domain {config.instance.domain} ({config.base_url})")
    return 0


async def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from aiohttp import web

    from fedi.app import create_app
    from fedi.config import delivery_process_count

    app = create_app(config, delivery_processes=delivery_process_count(config.federation))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot listen on {config.server.host}:{config.server.port}: {exc.strerror}") from None
    print(f"fedi listening on http://{config.server.host}:{config.server.port} as {config.base_url}", flush=True)
    print(f"database: {config.database_path}", flush=True)
    print("create the first account with: fedi account create NAME --admin", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


async def cmd_account_create(config: Config, args: argparse.Namespace) -> int:
    from actors.local import AccountError, create_local_account
    from fedi.db import Database

    password = _read_password(args)
    db = await Database.open(config.database_path)
    try:
        await create_local_account(
            db, config.base_url, args.name, password,
            admin=args.admin, email=args.email, locked=args.locked, bot=args.bot,
        )
    except AccountError as exc:
        raise CliError(str(exc)) from None
    finally:
        await db.close()
    role = "admin " if args.admin else ""
    print(f"created {role}account @{args.name}@{config.instance.domain}")
    return 0


async def cmd_account_list(config: Config, args: argparse.Namespace) -> int:
    from fedi.db import Database

    db = await Database.open(config.database_path)
    try:
        rows = await db.fetchall(
            """SELECT a.username, a.suspended_at, u.admin, a.locked, a.bot,
                      (SELECT count(*) FROM follows f WHERE f.target_account_id = a.id AND f.state = 'accepted') AS followers
               FROM accounts a JOIN users u ON u.account_id = a.id WHERE a.domain IS NULL ORDER BY a.id"""
        )
    finally:
        await db.close()
    for row in rows:
        flags = [name for name, on in (("admin", row["admin"]), ("locked", row["locked"]), ("bot", row["bot"]),
                                       ("suspended", row["suspended_at"])) if on]
        print(f"{row['username']}\t{row['followers']} followers\t{','.join(flags)}")
    return 0


async def cmd_account_suspend(config: Config, args: argparse.Namespace) -> int:
    from fedi.clock import now
    from fedi.db import Database

    db = await Database.open(config.database_path)
    try:
        async with db.write() as tx:
            cur = await tx.execute(
                "UPDATE accounts SET suspended_at = ? WHERE domain IS NULL AND actor_type != 'Application'"
                " AND lower(username) = lower(?) AND suspended_at IS NULL",
                (now(), args.name),
            )
            changed = cur.rowcount
    finally:
        await db.close()
    if not changed:
        raise CliError(f"no active local account named {args.name}")
    print(f"suspended @{args.name}")
    return 0


async def _local_account(ctx: Any, name: str) -> Any:
    from actors.local import get_local_account

    row = await get_local_account(ctx.db, name)
    if row is None or row["suspended_at"] is not None:
        raise CliError(f"no active local account named {name}")
    return row


@in_context()
async def cmd_post(ctx: Any, args: argparse.Namespace) -> int:
    from outbox.actions import ActionError, PostRequest, create_status

    account = await _local_account(ctx, args.name)
    try:
        status = await create_status(
            ctx, account, PostRequest(text=args.text, visibility=args.visibility, spoiler_text=args.cw or "")
        )
    except ActionError as exc:
        raise CliError(str(exc)) from None
    print(status["uri"])
    return 0


@in_context()
async def cmd_follow(ctx: Any, args: argparse.Namespace) -> int:
    from actors.remote import ActorError, get_actor
    from actors.webfinger import resolve_handle
    from outbox.actions import ActionError, follow

    account = await _local_account(ctx, args.name)
    try:
        uri = await resolve_handle(ctx, args.handle)
        target = await get_actor(ctx, uri)
        state = await follow(ctx, account, target)
    except (ActorError, ActionError) as exc:
        raise CliError(str(exc)) from None
    print(f"{args.name} -> {target['uri']}: {state}")
    return 0


async def cmd_queue(config: Config, args: argparse.Namespace) -> int:
    from fedi.db import Database

    db = await Database.open(config.database_path)
    try:
        deliveries = await db.fetchall(
            "SELECT host, state, count(*) AS n, max(attempts) AS attempts, max(last_error) AS err"
            " FROM deliveries GROUP BY host, state ORDER BY host, state"
        )
        inbox = await db.fetchall("SELECT state, count(*) AS n FROM inbox_activities GROUP BY state ORDER BY state")
        hosts = await db.fetchall("SELECT host FROM hosts WHERE unavailable_since IS NOT NULL ORDER BY host")
        jobs = await db.fetchall("SELECT kind, state, count(*) AS n FROM jobs GROUP BY kind, state ORDER BY kind, state")
    finally:
        await db.close()
    print("deliveries:")
    if not deliveries:
        print("  (none)")
    for row in deliveries:
        extra = f"  last error: {row['err']}" if row["err"] and row["state"] != "delivered" else ""
        print(f"  {row['host']}\t{row['state']}\t{row['n']}\tmax attempts {row['attempts']}{extra}")
    print("inbox:")
    if not inbox:
        print("  (none)")
    for row in inbox:
        print(f"  {row['state']}\t{row['n']}")
    print("jobs (exports, imports):")
    if not jobs:
        print("  (none)")
    for row in jobs:
        print(f"  {row['kind']}\t{row['state']}\t{row['n']}")
    if hosts:
        print("unavailable hosts: " + ", ".join(r["host"] for r in hosts))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedi", description="A self-hosted ActivityPub microblog server.")
    parser.add_argument("--config", help="path to config.toml (default: $FEDI_CONFIG or ./config.toml)")
    sub = parser.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="write config.toml if missing and create the database")
    init.add_argument("--domain", help="public host[:port] of this instance")
    init.add_argument("--scheme", choices=["https", "http"], help="http only for local testing")
    init.set_defaults(func=cmd_init)
    sub.add_parser("serve", help="run the instance").set_defaults(func=cmd_serve)
    account = sub.add_parser("account", help="manage local accounts").add_subparsers(dest="action", required=True)
    create = account.add_parser("create", help="create an account (password from stdin or prompted)")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true")
    create.add_argument("--email")
    create.add_argument("--locked", action="store_true", help="approve followers by hand")
    create.add_argument("--bot", action="store_true")
    create.set_defaults(func=cmd_account_create)
    account.add_parser("list", help="list local accounts").set_defaults(func=cmd_account_list)
    suspend = account.add_parser("suspend", help="suspend a local account")
    suspend.add_argument("name")
    suspend.set_defaults(func=cmd_account_suspend)
    from fedi.cli_move import register as register_move

    register_move(account)
    post = sub.add_parser("post", help="publish a post as NAME (Markdown)")
    post.add_argument("name")
    post.add_argument("text")
    post.add_argument("--visibility", default="public", choices=["public", "unlisted", "private", "direct"])
    post.add_argument("--cw", help="content warning")
    post.set_defaults(func=cmd_post)
    follow = sub.add_parser("follow", help="make NAME follow @user@domain")
    follow.add_argument("name")
    follow.add_argument("handle")
    follow.set_defaults(func=cmd_follow)
    sub.add_parser("queue", help="show the delivery and inbox queues").set_defaults(func=cmd_queue)
    from fedi.cli_moderation import register as register_moderation

    register_moderation(sub)
    from fedi.cli_subscriptions import register as register_subscriptions

    register_subscriptions(sub)
    from fedi.cli_export import register as register_export

    register_export(sub)
    from fedi.cli_import import register as register_import

    register_import(sub)
    from fedi.cli_backup import register as register_backup

    register_backup(sub)
    return parser


def _write_default_config(path: str, args: argparse.Namespace) -> None:
    """`fedi init` without a config file writes the documented defaults there."""
    text = resources.files("fedi").joinpath("default_config.toml").read_text()
    if args.domain:
        text = text.replace('domain = "localhost:8080"', f'domain = "{args.domain}"', 1)
    if args.scheme:
        text = text.replace('scheme = "http"', f'scheme = "{args.scheme}"', 1)
    with open(path, "x") as fh:
        fh.write(text)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = os.environ.get("FEDI_LOG", "INFO").upper()
    if not isinstance(logging.getLevelName(level), int):
        print(f"fedi: FEDI_LOG={level} is not DEBUG, INFO, WARNING or ERROR", file=sys.stderr)
        return 1
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(message)s")
    path = resolve_path(args.config)
    config: Config | None = None
    try:
        if hasattr(args, "with_config_path"):  # backup and restore read (or write) the config file themselves
            return int(args.with_config_path(path, args))
        if args.command == "init" and not os.path.exists(path):
            _write_default_config(path, args)
        config = load_config(path)
        if config.database_path != ":memory:":
            # Fail here, in one line, rather than inside aiosqlite, whose worker thread
            # can print "Event loop is closed" after a failed open.
            sqlite3.connect(config.database_path).close()
        return asyncio.run(args.func(config, args))
    except (ConfigError, CliError) as exc:
        print(f"fedi: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. init into a folder that does not exist
        print(f"fedi: {exc.filename or path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except sqlite3.OperationalError as exc:  # missing folder, no permission, disk full, locked
        print(f"fedi: database {config.database_path if config else path}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
