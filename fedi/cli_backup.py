"""`fedi backup DIR` and `fedi restore DIR`: the work is in fedi/backup.py.

Both take the config file's path rather than a loaded config: a backup copies that file,
and a restore may have to write it before anything can be loaded from it.
"""

from __future__ import annotations

import argparse
from typing import Any

from fedi.backup import BackupError, backup, restore
from fedi.cli_base import CliError
from fedi.config import load_config


def cmd_backup(config_path: str, args: argparse.Namespace) -> int:
    config = load_config(config_path)
    try:
        done = backup(config, config_path, args.dir)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"backed up {done.domain} (schema {done.schema_version}) into {done.directory}: {done.files} files,"
          f" {done.bytes} bytes (database {done.database_bytes}) in {done.seconds:.2f} s")
    print("it holds every account's private key: keep it where only you can read it")
    return 0


def cmd_restore(config_path: str, args: argparse.Namespace) -> int:
    try:
        done = restore(args.dir, config_path)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"restored {done.domain} (schema {done.schema_version}) from {args.dir}")
    print(f"config: {done.config_path}{' (from the backup)' if done.config_restored else ''}")
    print(f"database: {done.database_path}")
    print(f"media: {done.media_path} ({done.media_files} files)")
    print("start it with: fedi serve")
    return 0


def register(sub: Any) -> None:
    """`fedi backup` and `fedi restore`; they run with the config file's path (`with_config_path`)."""
    made = sub.add_parser("backup", help="copy the database, media, config and keys into a new folder, while serving")
    made.add_argument("dir", help="a new or empty folder")
    made.set_defaults(with_config_path=cmd_backup)
    back = sub.add_parser("restore", help="restore a backup into the empty instance that --config names"
                          " (writing the backup's config there first if it does not exist)")
    back.add_argument("dir", help="a folder made by fedi backup")
    back.set_defaults(with_config_path=cmd_restore)
