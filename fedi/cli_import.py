"""`fedi import NAME FILE [--type T] [--mode merge|overwrite]`: queue an import for a local account.

A CSV goes through the same parser and job as `POST /api/v1/import`: the whole file
is checked first (a bad one is one `fedi:` line naming its line, and nothing is
stored), then the job is stored in the database, where a running `fedi serve`
picks it up within a second. The command prints the job's id. A zip archive
(a file starting with `PK\\x03\\x04`) is handed to the post archive import.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from fedi.cli_base import CliError, in_context
from fedi.portability.csv_import import MAX_BYTES, MODES, TYPES, ImportFileError

ZIP_MAGIC = b"PK\x03\x04"


async def _account(ctx: Any, name: str) -> Any:
    from actors.local import get_local_account

    row = await get_local_account(ctx.db, name)
    if row is None or row["suspended_at"] is not None:
        raise CliError(f"no active local account named {name}")
    return row


def _head(path: str) -> bytes:
    """The file's first bytes: all of a CSV that may be imported, and one more to tell a larger one."""
    with open(path, "rb") as fh:
        return fh.read(MAX_BYTES + 1)


@in_context(ImportFileError)
async def cmd_import(ctx: Any, args: argparse.Namespace) -> int:
    from fedi.portability.import_jobs import queue_import, read_import

    account = await _account(ctx, args.name)
    try:
        data = await asyncio.to_thread(_head, args.file)
    except OSError as exc:
        raise CliError(f"{args.file}: {exc.strerror or exc}") from None
    if data.startswith(ZIP_MAGIC):
        from fedi.portability.archive_import import queue_archive_import
        from fedi.portability.archive_read import ArchiveError

        try:
            job_id = await queue_archive_import(ctx, account, args.file)
        except ArchiveError as exc:
            raise CliError(str(exc)) from None
        print(f"queued archive import job {job_id}")
        return 0
    parsed = await read_import(data, args.type)
    job_id = await queue_import(ctx, account, parsed, args.mode)
    print(f"queued {parsed.type} import job {job_id}: {len(parsed.rows)} rows ({args.mode})")
    return 0


def register(sub: Any) -> None:
    cmd = sub.add_parser("import", help="import follows, blocks, mutes, domain blocks, bookmarks or lists (CSV),"
                                        " or posts (a zip archive), for NAME")
    cmd.add_argument("name")
    cmd.add_argument("file")
    cmd.add_argument("--type", choices=TYPES, help="what the CSV holds (may be left out when its header tells)")
    cmd.add_argument("--mode", choices=MODES, default="merge", help="overwrite removes what the file does not list")
    cmd.set_defaults(func=cmd_import)
