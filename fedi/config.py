"""Instance configuration: frozen dataclasses loaded from `config.toml`.

Every key has a safe default so an empty file (or none at all) gives a working
local instance; `config.toml` in the repository documents each one.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_PATH = "config.toml"


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is one line for the admin."""


@dataclass(frozen=True)
class InstanceConfig:
    domain: str = "localhost:8080"
    scheme: str = "https"
    name: str = "fedi"
    description: str = "A fedi instance"
    contact_email: str = ""
    registrations: str = "closed"
    #: The server's rules, in order; rule N (from 1) is the one reports name as rule_ids N.
    rules: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1_048_576
    trusted_proxies: tuple[str, ...] = ()


@dataclass(frozen=True)
class DatabaseConfig:
    path: str = "fedi.sqlite3"


@dataclass(frozen=True)
class MediaConfig:
    path: str = "media"


@dataclass(frozen=True)
class FederationConfig:
    allow_private_networks: tuple[str, ...] = ()
    signature_window_seconds: int = 3600
    request_timeout_seconds: float = 10.0
    max_response_bytes: int = 2_097_152
    max_redirects: int = 3
    key_cache_seconds: int = 86_400
    actor_refresh_seconds: int = 86_400
    delivery_per_host_concurrency: int = 4
    delivery_concurrency: int = 64
    #: Separate delivery worker processes `fedi serve` starts: a whole number, or "auto"
    #: (one per usable CPU core, at most MAX_AUTO_DELIVERY_PROCESSES); 0 delivers
    #: inside the server process. See `delivery_process_count`.
    delivery_processes: int | str = 1
    delivery_max_age_seconds: int = 7 * 86_400
    delivery_first_retry_seconds: int = 60


MAX_RULES, MAX_RULE_CHARS = 100, 1000

#: "auto" never starts more delivery processes than this, however many cores there are.
MAX_AUTO_DELIVERY_PROCESSES = 8
#: An explicit number above this is refused as a typo.
MAX_DELIVERY_PROCESSES = 64


def delivery_process_count(config: FederationConfig) -> int:
    """How many delivery processes `fedi serve` runs: the configured number, "auto" resolved."""
    value = config.delivery_processes
    if value == "auto":
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cores = os.cpu_count() or 1
        return max(1, min(cores, MAX_AUTO_DELIVERY_PROCESSES))
    assert isinstance(value, int)
    return value


@dataclass(frozen=True)
class OAuthConfig:
    password_grant: bool = False


@dataclass(frozen=True)
class ModerationConfig:
    #: Who may read GET /api/v1/instance/domain_blocks: "all", "users" (signed in) or "admins".
    domain_blocks_visibility: str = "all"


@dataclass(frozen=True)
class AccountsConfig:
    #: Days after a move (an account's own, or the one it arrived by) before that account may move
    #: again; inbound Moves inside it are ignored too (GoToSocial waits 7 days, Mastodon 30).
    move_cooldown_days: int = 7


@dataclass(frozen=True)
class Config:
    instance: InstanceConfig = field(default_factory=InstanceConfig)
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    oauth: OAuthConfig = field(default_factory=OAuthConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    moderation: ModerationConfig = field(default_factory=ModerationConfig)
    accounts: AccountsConfig = field(default_factory=AccountsConfig)
    #: Directory the config file was read from; relative paths resolve against it.
    base_dir: str = "."

    @property
    def base_url(self) -> str:
        return f"{self.instance.scheme}://{self.instance.domain}"

    @property
    def database_path(self) -> str:
        path = self.database.path
        if path == ":memory:" or os.path.isabs(path):
            return path
        return os.path.join(self.base_dir, path)

    @property
    def imports_path(self) -> str:
        """Uploaded archives waiting for their import job: beside the database, never under the public media folder."""
        return os.path.join(os.path.dirname(os.path.abspath(self.database_path)), "imports")

    @property
    def media_path(self) -> str:
        """Folder for uploaded images; a relative path resolves against the config file's folder."""
        path = self.media.path
        return path if os.path.isabs(path) else os.path.join(self.base_dir, path)


_SECTIONS = {
    "instance": InstanceConfig,
    "server": ServerConfig,
    "database": DatabaseConfig,
    "federation": FederationConfig,
    "oauth": OAuthConfig,
    "media": MediaConfig,
    "moderation": ModerationConfig,
    "accounts": AccountsConfig,
}


def _coerce(section: str, cls: type, raw: dict[str, Any]) -> Any:
    known = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    defaults = cls()
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown key [{section}] {key}")
        default = getattr(defaults, key)
        if (section, key) == ("federation", "delivery_processes"):
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int)
                                    or not 0 <= value <= MAX_DELIVERY_PROCESSES):
                raise ConfigError(f"[federation] delivery_processes must be \"auto\" or a whole number "
                                  f"from 0 to {MAX_DELIVERY_PROCESSES}")
        elif isinstance(default, tuple):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"[{section}] {key} must be a list of strings")
            value = tuple(value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"[{section}] {key} must be true or false")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"[{section}] {key} must be a number")
            if isinstance(default, int) and not isinstance(value, int):
                raise ConfigError(f"[{section}] {key} must be a whole number")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ConfigError(f"[{section}] {key} must be a string")
        values[key] = value
    return replace(defaults, **values)


def _validate(config: Config) -> None:
    inst = config.instance
    if inst.scheme not in ("https", "http"):
        raise ConfigError("[instance] scheme must be \"https\" or \"http\"")
    if not inst.domain or "/" in inst.domain or "@" in inst.domain or inst.domain != inst.domain.strip():
        raise ConfigError(f"[instance] domain {inst.domain!r} is not a host[:port]")
    if inst.registrations not in ("open", "approval", "closed"):
        raise ConfigError("[instance] registrations must be \"open\", \"approval\" or \"closed\"")
    if len(inst.rules) > MAX_RULES or not all(rule.strip() and len(rule) <= MAX_RULE_CHARS for rule in inst.rules):
        raise ConfigError(f"[instance] rules: at most {MAX_RULES}, each a non-empty text of at most {MAX_RULE_CHARS} characters")
    if config.moderation.domain_blocks_visibility not in ("all", "users", "admins"):
        raise ConfigError("[moderation] domain_blocks_visibility must be \"all\", \"users\" or \"admins\"")
    if not 0 <= config.accounts.move_cooldown_days <= 3650:
        raise ConfigError("[accounts] move_cooldown_days must be between 0 and 3650")
    if not config.media.path.strip():
        raise ConfigError("[media] path must name a folder")
    if not 0 < config.server.port < 65536:
        raise ConfigError("[server] port must be between 1 and 65535")
    for net in config.federation.allow_private_networks:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"[federation] allow_private_networks: {net!r} is not a network") from None
    for net in config.server.trusted_proxies:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(f"[server] trusted_proxies: {net!r} is not a network") from None


def config_from_dict(data: dict[str, Any], base_dir: str = ".") -> Config:
    """Build a validated Config from parsed TOML (also used by tests)."""
    sections: dict[str, Any] = {}
    for name, value in data.items():
        if name not in _SECTIONS:
            raise ConfigError(f"unknown section [{name}]")
        if not isinstance(value, dict):
            raise ConfigError(f"[{name}] must be a table")
        sections[name] = _coerce(name, _SECTIONS[name], value)
    config = Config(**sections, base_dir=base_dir)
    _validate(config)
    return config


def resolve_path(cli_path: str | None) -> str:
    """The config path: --config, then $FEDI_CONFIG, then ./config.toml."""
    return cli_path or os.environ.get("FEDI_CONFIG") or DEFAULT_PATH


def load_config(path: str) -> Config:
    p = Path(path)
    try:
        with p.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found (run `fedi init` to create one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config_from_dict(data, base_dir=str(p.resolve().parent))
