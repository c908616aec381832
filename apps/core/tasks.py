"""Platform housekeeping tasks run by beat."""

from django.core.cache import cache
from django.utils import timezone

from apps.tenants.celery import PlatformTask
from gbplatform.celery import app

BEAT_HEARTBEAT_KEY = "platform:beat-heartbeat"
# Three missed 30 s beats and the heartbeat is gone: beat or the worker is down.
BEAT_HEARTBEAT_TTL_S = 90


@app.task(name="core.beat_heartbeat", base=PlatformTask)
def beat_heartbeat() -> str:
    """Proves beat schedules and a worker consumes; idempotent (it overwrites one key)."""
    stamp = timezone.now().isoformat()
    cache.set(BEAT_HEARTBEAT_KEY, stamp, timeout=BEAT_HEARTBEAT_TTL_S)
    return stamp
