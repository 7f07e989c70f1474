"""Configuration: ``config.json`` overridden by ``ILINKBOT_*`` environment variables."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from ilinkbot.cdn import DEFAULT_CDN_DOMAINS
from ilinkbot.ilink import (
    DEFAULT_BASE_URL,
    DEFAULT_CDN_BASE_URL,
    DEFAULT_CHANNEL_VERSION,
    __version__,
)

__all__ = ["LOG_LEVELS", "Config", "ConfigError", "load_config"]

LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """The configuration file or an environment variable is unusable (one-line message)."""


@dataclass(frozen=True)
class Config:
    """Every setting, with its default. See the README's configuration table."""

    home: Path
    base_url: str = DEFAULT_BASE_URL
    cdn_base_url: str = DEFAULT_CDN_BASE_URL
    cdn_download_domains: tuple[str, ...] = DEFAULT_CDN_DOMAINS
    database_url: str | None = None
    bot_agent: str = f"ilinkbot/{__version__}"
    channel_version: str = DEFAULT_CHANNEL_VERSION
    route_tag: str | None = None
    log_level: str | None = None
    reply_quota: int = 10
    reply_window_seconds: int = 86400
    chunk_size: int = 2000
    held_digest: bool = False
    send_max_attempts: int = 5
    #: A push to many users keeps this many sends in flight (one user's messages in order).
    send_concurrency: int = 16
    #: ... and sends at most this many messages a second from one account (see bot/pacing.py).
    fanout_per_second: int = 5
    handler_max_attempts: int = 5
    media_max_bytes: int = 100 * 1024 * 1024
    login_timeout_seconds: int = 480
    poll_lease_seconds: int = 30
    send_lease_seconds: int = 60
    shutdown_grace_seconds: int = 10
    skip_backlog: bool = False
    config_path: Path | None = None

    def with_overrides(self, **changes: Any) -> Config:
        return replace(self, **changes)


_FILE_KEYS = {f.name: f for f in fields(Config) if f.name not in ("home", "config_path")}
_ENV = {
    "ILINKBOT_BASE_URL": "base_url",
    "ILINKBOT_CDN_BASE_URL": "cdn_base_url",
    "ILINKBOT_DATABASE_URL": "database_url",
}


_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$")


def _check_domains(value: Any, source: str) -> tuple[str, ...]:
    """A list of DNS domains (``qq.com``), never IP addresses: hosts allowed by family."""
    if not isinstance(value, list):
        raise ConfigError(f"{source}: cdn_download_domains must be a list of domains")
    domains = []
    for item in value:
        domain = item.strip().strip(".").lower() if isinstance(item, str) else ""
        is_ip = True
        try:
            ipaddress.ip_address(domain)
        except ValueError:
            is_ip = False
        if is_ip or not _DOMAIN.match(domain):
            raise ConfigError(
                f"{source}: cdn_download_domains: {item!r} is not a domain name like qq.com"
            )
        domains.append(domain)
    return tuple(domains)


def _check_type(key: str, value: Any, source: str) -> Any:
    if key == "cdn_download_domains":
        return _check_domains(value, source)
    default = _FILE_KEYS[key].default
    if value is None:
        if key in ("database_url", "route_tag", "log_level"):
            return None
        raise ConfigError(f"{source}: {key} must not be null")
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
    else:
        ok = isinstance(value, str) and bool(value.strip())
    if not ok:
        kind = type(default).__name__ if default is not None else "str"
        extra = " (> 0)" if isinstance(default, int) and not isinstance(default, bool) else ""
        raise ConfigError(f"{source}: {key} must be a {kind}{extra}, got {value!r}")
    if key == "log_level" and str(value).lower() not in LOG_LEVELS:
        raise ConfigError(f"{source}: log_level must be one of {', '.join(LOG_LEVELS)}")
    if key in ("base_url", "cdn_base_url") and not str(value).startswith(("http://", "https://")):
        raise ConfigError(f"{source}: {key} must start with http:// or https://, got {value!r}")
    return value


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the configuration: defaults < ``config.json`` < environment variables.

    The file is ``path``, else ``$ILINKBOT_CONFIG``, else ``$ILINKBOT_HOME/config.json``
    if it exists. A named file that is missing is an error; so is an unknown key.
    """
    env = os.environ if env is None else env
    home = Path(env.get("ILINKBOT_HOME") or Path.home() / ".ilinkbot").expanduser()
    named = path or env.get("ILINKBOT_CONFIG")
    file = Path(named).expanduser() if named else home / "config.json"
    values: dict[str, Any] = {}
    if named or file.exists():
        try:
            raw = json.loads(file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {file}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config file {file}: {exc}") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{file}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
        except ValueError as exc:  # an integer past Python's 4300 digits
            raise ConfigError(f"{file}: invalid JSON: {exc}") from None
        except RecursionError:
            raise ConfigError(f"{file}: invalid JSON: nested too deep") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{file}: expected a JSON object")
        for key, value in raw.items():
            if key.startswith("_"):  # "_comment" keys are allowed
                continue
            if key not in _FILE_KEYS:
                raise ConfigError(f"{file}: unknown key {key!r}")
            values[key] = _check_type(key, value, str(file))
    for var, key in _ENV.items():
        if env.get(var):
            values[key] = _check_type(key, env[var], var)
    return Config(home=home, config_path=file if file.exists() else None, **values)
