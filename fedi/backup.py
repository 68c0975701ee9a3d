"""Instance backup and restore: one folder with a consistent copy of everything an instance is.

A backup folder holds

    manifest.json   fedi version, schema version, creation time, domain, and the sha256 and
                    size of every other file; written last, so a folder without it is unfinished
    config.toml     the config file
    fedi.sqlite3    the database, copied while the instance serves. It holds the key material:
                    every local account's private key and the instance actor's are rows
                    (`accounts.private_key_pem`); fedi keeps no key or secret in any other file
    media/...       every regular file under the media folder (uploads, avatars, headers, and
                    whatever else fedi keeps there), symlinks and special files left out

The folder and its files are made 0700/0600: whoever reads a backup can sign as every
account. The checksums find damage and missing or extra files, not a forger (who could
rewrite the manifest too).

Restore verifies the whole backup, and that the target is empty, before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fedi import __version__
from fedi.clock import iso
from fedi.config import Config, ConfigError, config_from_dict, load_config
from fedi.schema import MIGRATIONS

MANIFEST = "manifest.json"
CONFIG = "config.toml"
DATABASE = "fedi.sqlite3"
MEDIA = "media"
#: Folders copied whole, by their name in a backup: uploads, and archives waiting for their import
#: job (their rows are in the database). Finished exports are left out: they can be made again.
FOLDERS: tuple[tuple[str, Callable[[Config], str]], ...] = (
    (MEDIA, lambda config: config.media_path),
    ("imports", lambda config: config.imports_path),
)
FORMAT = "fedi-backup"
FORMAT_VERSION = 1
CHUNK = 1 << 20
MAX_MANIFEST_BYTES = 256 << 20  # a million media files fit many times over
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


class BackupError(Exception):
    """Why a backup or restore was refused or failed: one line for the admin."""


@dataclass(frozen=True)
class BackupSummary:
    directory: str
    domain: str
    schema_version: int
    files: int
    bytes: int
    database_bytes: int
    seconds: float


@dataclass(frozen=True)
class RestoreSummary:
    domain: str
    schema_version: int
    config_path: str
    config_restored: bool
    database_path: str
    media_path: str
    media_files: int


# --- backup ---------------------------------------------------------------------------------------


def backup(config: Config, config_path: str, directory: str) -> BackupSummary:
    """Copy the instance named by `config` (read from `config_path`) into the new or empty `directory`.

    The database comes first and the media folder after it: every file a row of the copied
    database names was written before that row was committed, so it is there when the
    folder is copied (files added later are copied too, harmlessly unreferenced).
    """
    started = time.monotonic()
    out = _new_folder(directory)
    if not os.path.isfile(config.database_path):
        raise BackupError(f"no database at {config.database_path}")
    files: dict[str, dict[str, Any]] = {}
    schema_version = _copy_database(config.database_path, out / DATABASE)
    files[DATABASE] = _describe(out / DATABASE)
    entry = _copy_file(Path(config_path), out / CONFIG)
    if entry is None:
        raise BackupError(f"{config_path} is gone")
    files[CONFIG] = entry
    for folder, where in FOLDERS:
        for rel, source in _media_files(Path(where(config))):
            entry = _copy_file(source, out / folder / rel)
            if entry is not None:  # a file deleted while we copy (its post deleted) is left out
                files[f"{folder}/{rel}"] = entry
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fedi_version": __version__,
        "schema_version": schema_version,
        "created_at": iso(time.time()),
        "domain": config.instance.domain,
        "files": dict(sorted(files.items())),
    }
    _write_private(out / MANIFEST, json.dumps(manifest, indent=1).encode() + b"\n")
    _fsync(out)  # the manifest's name is durable too
    return BackupSummary(str(out), config.instance.domain, schema_version, len(files),
                         sum(f["size"] for f in files.values()), files[DATABASE]["size"],
                         time.monotonic() - started)


def _new_folder(directory: str) -> Path:
    path = Path(directory)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink():
            raise BackupError(f"{directory} exists and is not a folder")
        if any(path.iterdir()):
            raise BackupError(f"{directory} is not empty: back up into a new or empty folder")
        os.chmod(path, PRIVATE_DIR)
    else:
        if not path.parent.is_dir():
            raise BackupError(f"{path.parent} does not exist")
        os.mkdir(path, PRIVATE_DIR)
        os.chmod(path, PRIVATE_DIR)  # mkdir's mode is filtered by the umask
    return path


def _copy_database(source: str, target: Path) -> int:
    """A consistent copy of the live database through SQLite's online backup API; returns its schema version.

    One `backup()` step copies every page inside one read transaction. In WAL mode a reader
    never blocks the server's writer nor its readers, so the instance goes on answering
    while the copy runs (only its WAL checkpoints cannot pass the copy's snapshot, so the
    WAL grows for that long). Copying in several steps would not help and cannot finish under
    load: SQLite restarts a stepped backup whenever another connection writes to the source,
    which a serving instance does every few milliseconds. `VACUUM INTO` would also make a
    consistent copy, but it rebuilds every table and index, so it takes longer (and keeps
    the WAL growing longer) for a smaller file that the next `fedi serve` does not need.
    """
    try:
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, timeout=30)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open the database {source}: {exc}") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    os.close(fd)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
        _release_leases(dst)
        dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file: no -wal beside it
        (check,) = dst.execute("PRAGMA quick_check").fetchone()
        if check != "ok":
            raise BackupError(f"the copied database fails its check: {check}")
        (version,) = dst.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"copying the database {source}: {exc}") from None
    finally:
        dst.close()
        src.close()
    _fsync(target)
    return int(version)


#: Queues whose rows a worker leases (`locked_until`): deliveries, stored inbox activities, jobs.
LEASED = ("deliveries", "inbox_activities", "jobs")


def _release_leases(conn: sqlite3.Connection) -> None:
    """Clear the copy's leases: the workers that held them live on in the original, never in the copy,
    so a restored instance would otherwise wait out each lease (a minute for inbox rows) before
    working those rows. Every queue is at-least-once with idempotent steps, so working them again is safe."""
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    with conn:
        for table in LEASED:
            if table in tables:
                conn.execute(f"UPDATE {table} SET locked_until = 0 WHERE locked_until > 0")


def _media_files(root: Path) -> Iterator[tuple[str, Path]]:
    """(relative posix name, path) of every regular file under `root`, in a stable order."""
    if not root.is_dir():
        return
    for folder, dirs, names in os.walk(root):  # does not follow symlinked folders
        dirs.sort()
        for name in sorted(names):
            path = Path(folder) / name
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
            except FileNotFoundError:  # deleted while we walk
                continue
            yield path.relative_to(root).as_posix(), path


def _copy_file(source: Path, target: Path) -> dict[str, Any] | None:
    """Copy with 0600 (folders 0700), hashing as it goes; returns the manifest entry (None: it is gone)."""
    for parent in reversed(target.parents):
        if not parent.exists():
            os.mkdir(parent, PRIVATE_DIR)
            os.chmod(parent, PRIVATE_DIR)
    digest, size = hashlib.sha256(), 0
    try:
        with open(source, "rb") as src, \
                open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as dst:
            while chunk := src.read(CHUNK):
                digest.update(chunk)
                dst.write(chunk)
                size += len(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    except FileNotFoundError:
        if target.exists():
            raise BackupError(f"cannot copy {source}: it vanished") from None
        return None  # deleted since the folder was listed (source opens first: nothing was written)
    except OSError as exc:
        raise BackupError(f"cannot copy {source}: {exc.strerror}") from None
    return {"sha256": digest.hexdigest(), "size": size}


def _describe(path: Path) -> dict[str, Any]:
    digest, size = _hash(path)
    return {"sha256": digest, "size": size}


def _hash(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _write_private(path: Path, data: bytes) -> None:
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --- restore --------------------------------------------------------------------------------------


def restore(directory: str, config_path: str) -> RestoreSummary:
    """Restore the backup in `directory` into the instance that `config_path` names.

    If no file exists at `config_path`, the backup's config file is written there first and
    its paths, relative ones resolved against `config_path`'s folder, say where the database
    and media folder go. Refused, with nothing written: a damaged, incomplete or padded
    backup; a schema newer than this fedi; a config whose domain is not the backup's; an
    existing non-empty database file (or its WAL); a media folder with anything in it.
    """
    root = Path(directory)
    manifest = _read_manifest(root)
    files: dict[str, dict[str, Any]] = manifest["files"]
    _verify_files(root, files)
    schema_version = _check_database(root / DATABASE, manifest)
    config_exists = os.path.exists(config_path)
    config = _target_config(root, config_path, config_exists)
    if config.instance.domain != manifest["domain"]:
        raise BackupError(f"{config_path} is for {config.instance.domain}, the backup is of {manifest['domain']}:"
                          " an instance keeps its domain")
    _check_empty(config)
    if not config_exists and not Path(config_path).resolve().parent.is_dir():
        raise BackupError(f"{Path(config_path).parent} does not exist: make the folder for the config first")

    if not config_exists:
        _place(root / CONFIG, Path(config_path), PRIVATE_FILE)
    database = Path(config.database_path)
    partial = database.with_name(database.name + ".restoring")
    partial.unlink(missing_ok=True)
    _place(root / DATABASE, partial, PRIVATE_FILE)
    os.replace(partial, database)
    _fsync(database.parent)
    for folder, where in FOLDERS:
        target = Path(where(config))
        target.mkdir(parents=True, exist_ok=True)
        for rel in sorted(name[len(folder) + 1:] for name in files if name.startswith(folder + "/")):
            _place(root / folder / rel, target / rel, 0o644 if folder == MEDIA else PRIVATE_FILE)
    media = Path(config.media_path)
    restored = sum(1 for name in files if name.startswith(MEDIA + "/"))
    return RestoreSummary(manifest["domain"], schema_version, os.path.abspath(config_path), not config_exists,
                          str(database), str(media), restored)


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not root.is_dir():
        raise BackupError(f"{root} is not a folder")
    try:
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise BackupError(f"{path}: too large for a manifest")
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise BackupError(f"{path} is missing: not a backup, or an unfinished one") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BackupError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: not a fedi backup manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{path}: backup format {manifest.get('format_version')!r} is not one this fedi reads")
    files = manifest.get("files")
    if not isinstance(files, dict) or not isinstance(manifest.get("domain"), str) \
            or type(manifest.get("schema_version")) is not int:
        raise BackupError(f"{path}: domain, schema_version or files missing or malformed")
    for name, entry in files.items():
        if not _allowed_name(name):
            raise BackupError(f"{path}: {name!r} is not a name a backup holds")
        if not (isinstance(entry, dict) and isinstance(entry.get("sha256"), str) and type(entry.get("size")) is int):
            raise BackupError(f"{path}: the entry for {name} is malformed")
    for required in (CONFIG, DATABASE):
        if required not in files:
            raise BackupError(f"{path}: lists no {required}")
    return manifest


def _allowed_name(name: str) -> bool:
    """config.toml, fedi.sqlite3, media/<relative path> or imports/<relative path>: nothing absolute,
    no `..`, no backslash."""
    if name in (CONFIG, DATABASE):
        return True
    parts = PurePosixPath(name).parts
    return (any(name.startswith(folder + "/") for folder, _ in FOLDERS) and "\\" not in name and "\0" not in name and len(parts) >= 2
            and all(part not in ("", ".", "..") for part in parts) and PurePosixPath(name).as_posix() == name)


def _verify_files(root: Path, files: dict[str, dict[str, Any]]) -> None:
    """Every listed file present with its size and sha256, and nothing else in the folder."""
    present: set[str] = set()
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names) + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if rel == MANIFEST:
                continue
            if rel not in files:
                raise BackupError(f"{path}: not in the manifest")
            if not stat.S_ISREG(os.lstat(path).st_mode):
                raise BackupError(f"{path}: not a regular file")
            present.add(rel)
    for name, entry in files.items():
        path = root / name
        if name not in present:
            raise BackupError(f"{path}: missing from the backup")
        if path.stat().st_size != entry["size"]:
            raise BackupError(f"{path}: size {path.stat().st_size} bytes, the manifest says {entry['size']}")
        digest, _ = _hash(path)
        if digest != entry["sha256"]:
            raise BackupError(f"{path}: checksum mismatch (damaged or changed since the backup)")


def _check_database(path: Path, manifest: dict[str, Any]) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            conn.execute("SELECT count(*) FROM accounts").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise BackupError(f"{path}: not a fedi database ({exc})") from None
    if version != manifest["schema_version"]:
        raise BackupError(f"{path}: schema version {version}, the manifest says {manifest['schema_version']}")
    if version > len(MIGRATIONS):
        raise BackupError(f"{path}: schema version {version} is newer than this fedi's ({len(MIGRATIONS)}):"
                          " restore with the fedi that made the backup")
    return int(version)


def _target_config(root: Path, config_path: str, exists: bool) -> Config:
    """The config at `config_path`, or the backup's as if it were already written there."""
    if exists:
        return load_config(config_path)
    try:
        data = tomllib.loads((root / CONFIG).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BackupError(f"{root / CONFIG}: {exc}") from None
    try:
        return config_from_dict(data, base_dir=str(Path(config_path).resolve().parent))
    except ConfigError as exc:
        raise BackupError(f"{root / CONFIG}: {exc}") from None


def _check_empty(config: Config) -> None:
    database = Path(config.database_path)
    for path in (database, database.with_name(database.name + "-wal")):
        if path.exists() and (not path.is_file() or path.stat().st_size > 0):
            raise BackupError(f"{path} already exists with data: restore only into an empty instance")
    if not database.parent.is_dir():
        raise BackupError(f"{database.parent} does not exist: make the folder for the database first")
    for _, where in FOLDERS:
        folder = Path(where(config))
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise BackupError(f"{folder} is not an empty folder: restore only into an empty instance")


def _place(source: Path, target: Path, mode: int) -> None:
    """Copy one verified file into place (new files only, except the database's temporary name)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())
