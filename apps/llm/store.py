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


# Keys deleted per round trip by redis_delete_matching.
DELETE_BATCH = 1000


def redis_delete_matching(client: Any, pattern: str) -> int:
    """Delete every key matching `pattern` (SCAN, then DELETE in batches of DELETE_BATCH); how many went."""
    deleted, batch = 0, []
    for key in client.scan_iter(match=pattern, count=DELETE_BATCH):
        batch.append(key)
        if len(batch) >= DELETE_BATCH:
            deleted += client.delete(*batch)
            batch = []
    if batch:
        deleted += client.delete(*batch)
    return deleted
