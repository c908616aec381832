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
    """The value, stripped; `default` when unset or empty (compose passes unset variables on as empty)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return raw.strip()


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


# Redis serves databases 0-15 by default; the platform uses REDIS_DBS_USED of them from the URL's own.
REDIS_DATABASES = 16
REDIS_DBS_USED = 4  # broker, cache, channel layer, task results (tests)


def redis_url_for_db(url: str, db: int) -> str:
    """The same Redis server on logical database `db` counted from the URL's own (redis://h/4 -> 4, 5, ...).

    Broker, cache and channel layer get separate databases so that clearing the cache (FLUSHDB) can never
    drop queued Celery tasks or channel messages; counting from the URL's database lets two deployments share
    one Redis on /0 and /4. A URL that is not redis://, rediss:// or unix:// (a bare "host:6379"), or whose
    databases would run past the server's 16, is refused here, with the variable's name.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if not parts.path:
            raise ImproperEnvironment(f"REDIS_URL={url!r}: a unix:// URL needs the socket's path")
        fields = [p for p in parts.query.split("&") if p]
        base = _redis_db(url, next((p[3:] for p in fields if p.startswith("db=")), "0"))
        query = "&".join([*(p for p in fields if not p.startswith("db=")), f"db={base + db}"])
        return f"unix://{parts.netloc}{parts.path}?{query}"
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ImproperEnvironment(f"REDIS_URL={url!r}: expected redis://host:port/db, rediss://... or unix://path")
    base = _redis_db(url, parts.path.strip("/") or "0")
    return urlunsplit((parts.scheme, parts.netloc, f"/{base + db}", parts.query, ""))


def _redis_db(url: str, raw: str) -> int:
    if not raw.isascii() or not raw.isdigit() or int(raw) > REDIS_DATABASES - REDIS_DBS_USED:
        raise ImproperEnvironment(f"REDIS_URL={url!r}: the database must be a number from 0 to "
                                  f"{REDIS_DATABASES - REDIS_DBS_USED} (the platform uses {REDIS_DBS_USED} from it)")
    return int(raw)
