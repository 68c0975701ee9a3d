"""`fedi account alias` and `fedi account move`: aliases and moving from a shell.

The same outbox.move functions as the API and the settings pages make each change,
with the same checks: `move` asks for the account's password too (standard input,
or a prompt on a terminal), so a shell user moves an account exactly as its owner would.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from fedi.cli_base import CliError, in_context
from outbox.actions import ActionError

_command = in_context(ActionError)


async def _account(ctx: Any, name: str) -> Any:
    from actors.local import get_local_account

    row = await get_local_account(ctx.db, name)
    if row is None or row["suspended_at"] is not None:
        raise CliError(f"no active local account named {name}")
    return row


def _password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise CliError("no password on standard input")
        return line.rstrip("\r\n")
    return getpass.getpass("Password: ")


@_command
async def cmd_alias(ctx: Any, args: argparse.Namespace) -> int:
    """Set NAME's aliases (alsoKnownAs) to these accounts; none clears them."""
    from actors.documents import also_known_as
    from outbox.move import set_aliases

    account = await set_aliases(ctx, await _account(ctx, args.name), args.accounts)
    aliases = also_known_as(account)
    print(f"{args.name}: " + (", ".join(aliases) if aliases else "no aliases"))
    return 0


@_command
async def cmd_move(ctx: Any, args: argparse.Namespace) -> int:
    """Move NAME to the account given (which must list NAME among its aliases)."""
    from outbox.move import move_account

    account = await _account(ctx, args.name)
    moved = await move_account(ctx, account, args.target, _password())
    print(f"{args.name} moved to {moved['moved_to_uri']}")
    return 0


def register(account: Any) -> None:
    """Add `alias` and `move` to the `fedi account` subcommands."""
    alias = account.add_parser("alias", help="set the accounts elsewhere that are also NAME (none: clear)")
    alias.add_argument("name")
    alias.add_argument("accounts", nargs="*", metavar="URI_OR_HANDLE")
    alias.set_defaults(func=cmd_alias)
    move = account.add_parser("move", help="move NAME and its followers to another account (password from stdin or prompted)")
    move.add_argument("name")
    move.add_argument("target", metavar="URI_OR_HANDLE")
    move.set_defaults(func=cmd_move)
