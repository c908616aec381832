"""Typed readers for environment variables: every setting comes from the environment (12-factor).

Each outside service is optional and switched on by its URL; these helpers keep the parsing in one place so
a malformed value fails at start-up with the variable's name, not deep inside a request.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit


class ImproperEnvironment(Exception):
    """An environment variable is present but cannot be used."""


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperEnvironment(f"{name}={raw!r}: expected true/false, 1/0, yes/no or on/off")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ImproperEnvironment(f"{name}={raw!r}: expected an integer") from exc


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return list(default or [])
    return [item.strip() for item in raw.split(",") if item.strip()]


def redis_url_for_db(url: str, db: int) -> str:
    """The same Redis server on another logical database.

    Broker, cache and channel layer get separate databases so that clearing the cache (FLUSHDB) can never
    drop queued Celery tasks or channel messages.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = "&".join(p for p in parts.query.split("&") if p and not p.startswith("db="))
        query = f"{query}&db={db}" if query else f"db={db}"
        return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))
