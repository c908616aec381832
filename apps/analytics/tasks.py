"""Analytics tasks: thin wrappers over apps.analytics.services.

* `analytics.refresh` (tenant, queue `jobs`): recompute today's and yesterday's aggregates (yesterday too, so messages
  written just before midnight and late tool results are counted once the day is over), and delete stored
  question texts older than the tenant's message retention.
* `analytics.dispatch_refresh` (platform, queue `dispatch`, beat every ANALYTICS_REFRESH_INTERVAL_S): one
  `analytics.refresh` per ready tenant, and none while one is still queued for it.
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from apps.analytics.services import daily_questions_retention_apply, daily_stats_refresh_recent
from apps.tenants.celery import PlatformTask, each_ready_tenant, queue_unless_queued
from gbplatform.celery import app

# Days a periodic refresh recomputes: today and yesterday.
REFRESH_DAYS = 2
# Set (in the tenant's cache namespace) while a refresh is queued; expires by itself after this many
# intervals if a worker died holding it.
REFRESH_QUEUED_KEY = "analytics:refresh-queued"
REFRESH_QUEUED_TTL_INTERVALS = 5


@app.task(name="analytics.refresh", when_not_ready="skip")
def analytics_refresh_task() -> dict:
    cache.delete(REFRESH_QUEUED_KEY)
    report = daily_stats_refresh_recent(days=REFRESH_DAYS)
    purged = daily_questions_retention_apply()
    return {"from": report.day_from.isoformat(), "to": report.day_to.isoformat(), "stats": report.stats,
            "questions": report.questions, "questions_purged": purged}


@app.task(name="analytics.dispatch_refresh", base=PlatformTask)
def analytics_dispatch_refresh() -> int:
    ttl = settings.ANALYTICS_REFRESH_INTERVAL_S * REFRESH_QUEUED_TTL_INTERVALS
    return each_ready_tenant(
        lambda: queue_unless_queued(analytics_refresh_task, mark=REFRESH_QUEUED_KEY, ttl=ttl, queue="jobs"),
        what="analytics.dispatch_refresh")
