"""`fedi export NAME --out FILE.zip`: an account's archive (Mastodon's layout) from a shell.

It runs the archive job's builder in this process (fedi.portability.archive_export), so it
needs no running server and takes no turn in the settings page's once-a-day limit.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fedi.cli_base import CliError, in_context


@in_context()
async def cmd_export(ctx: Any, args: argparse.Namespace) -> int:
    """Write NAME's archive to --out, through a temporary file beside it."""
    from actors.local import get_local_account
    from fedi.portability.archive_export import build_archive

    account = await get_local_account(ctx.db, args.name)
    if account is None:
        raise CliError(f"no local account {args.name!r}")
    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        raise CliError(f"{args.out} is a folder; name the zip file to write")
    try:
        items = await build_archive(ctx, account, out)
    except OSError as exc:
        raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {out} ({items} posts and boosts of @{account['username']}@{ctx.domain})")
    return 0


def register(sub: Any) -> None:
    export = sub.add_parser("export", help="write an account's archive (posts, media, likes, bookmarks) as a zip")
    export.add_argument("name")
    export.add_argument("--out", required=True, help="the zip file to write")
    export.set_defaults(func=cmd_export)
