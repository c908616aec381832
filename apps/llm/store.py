"""The Redis connection the LLM layer shares across processes (breaker, cache, quota).

It is the Django cache's own Redis (django-redis), used raw: the cache's key function prefixes the
current tenant's schema, which is right for the semantic cache and the quota (and their keys carry the
tenant explicitly anyway) but wrong for a provider's breaker, which every tenant of a shared endpoint must
see. Keys written here all start with `llm:` and never collide with the cache's `<schema>:<version>:` keys.
"""

from __future__ import annotations

from typing import Any


def redis_client() -> Any | None:
    """The raw redis-py client of the default cache, or None when the cache is not Redis (development)."""
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except (ImportError, NotImplementedError):
        return None
