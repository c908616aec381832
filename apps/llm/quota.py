"""Tokens per tenant per UTC day (LLM_TENANT_DAILY_TOKENS; 0 = unlimited), counted in Redis.

`quota_check` runs before a model call and raises `LLMQuotaExceeded` once the day's count has reached the
limit; `quota_add` adds a call's prompt + completion tokens after it. The counter key names the tenant and
the UTC date (`llm:quota:<tenant>:<YYYYMMDD>`) and expires after `COUNTER_TTL_S`.

Failure modes this module prevents:

* One tenant's runaway bot (a loop of `LLM` calls, a flood of chats) spending the platform's provider
  budget: the limit is per tenant and shared by all of its processes.
* A counter that never resets: the date is part of the key, so a new day starts at zero, and old keys
  expire.
* Redis down stopping every chat: a failed read or write is logged and the call goes ahead (the quota is a
  budget guard, not a security boundary).

The check is "before the call, with what was counted so far", so the last call of a day may overshoot the
limit by its own size: the alternative (reserving an unknown number of tokens up front) would refuse calls
that fit.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading

from apps.llm.errors import LLMQuotaExceeded
from apps.llm.store import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "llm:quota"
# A day's counter is kept two days: long enough to read yesterday's figure, then it goes.
COUNTER_TTL_S = 2 * 24 * 3600

_local_lock = threading.Lock()
_local: dict[str, int] = {}  # development without Redis: this process only


def _today() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d")


def quota_key(tenant: str, day: str | None = None) -> str:
    return f"{KEY_PREFIX}:{tenant}:{day or _today()}"


def quota_used(tenant: str) -> int:
    """Tokens the tenant has used today (UTC)."""
    client = redis_client()
    if client is None:
        with _local_lock:
            return _local.get(quota_key(tenant), 0)
    return int(client.get(quota_key(tenant)) or 0)


def quota_check(tenant: str, limit: int) -> None:
    """Raise LLMQuotaExceeded when the tenant has used `limit` tokens today; `limit` 0 means unlimited."""
    if limit <= 0:
        return
    try:
        used = quota_used(tenant)
    except Exception as exc:  # noqa: BLE001 - see the module docstring
        logger.warning("llm: quota of tenant %s unreadable (%s); allowing the call", tenant, exc)
        return
    if used >= limit:
        logger.warning("llm: tenant %s is over its daily token quota (%d of %d)", tenant, used, limit)
        raise LLMQuotaExceeded(tenant, used, limit)


def quota_add(tenant: str, tokens: int) -> int:
    """Count `tokens` for the tenant today; returns the new total (0 when it could not be counted)."""
    if tokens <= 0:
        return 0
    key = quota_key(tenant)
    client = redis_client()
    if client is None:
        with _local_lock:
            _local[key] = _local.get(key, 0) + tokens
            return _local[key]
    try:
        pipe = client.pipeline()
        pipe.incrby(key, tokens)
        pipe.expire(key, COUNTER_TTL_S)
        total, _ = pipe.execute()
        return int(total)
    except Exception as exc:  # noqa: BLE001
        logger.warning("llm: could not count %d tokens for tenant %s: %s", tokens, tenant, exc)
        return 0
