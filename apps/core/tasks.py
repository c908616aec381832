"""Platform housekeeping tasks run by beat, and the re-encryption after an encryption key rotation."""

import time

from django.core.cache import cache
from django.utils import timezone

from apps.tenants.celery import PlatformTask
from gbplatform.celery import app

BEAT_HEARTBEAT_KEY = "platform:beat-heartbeat"
# Three missed 30 s beats and the heartbeat is gone: beat or the worker is down.
BEAT_HEARTBEAT_TTL_S = 90


@app.task(name="core.beat_heartbeat", base=PlatformTask)
def beat_heartbeat() -> str:
    """Proves beat schedules and a worker consumes (queue `dispatch`); idempotent (it overwrites one key)."""
    stamp = timezone.now().isoformat()
    cache.set(BEAT_HEARTBEAT_KEY, stamp, timeout=BEAT_HEARTBEAT_TTL_S)
    return stamp


# --- encryption key rotation (apps.core.fields) -------------------------------------------------------------

# One run of core.reencrypt works this long, then queues its own continuation: well under the task soft
# time limit (CELERY_TASK_SOFT_TIME_LIMIT_S), so a large tenant is never killed half-way through a batch.
REENCRYPT_RUN_BUDGET_S = 240


@app.task(name="core.reencrypt", when_not_ready="run")
def reencrypt(resume_at: list | None = None) -> dict:
    """Re-encrypt this tenant's encrypted columns under the active key; idempotent, resumable."""
    from apps.core.fields import schema_reencrypt

    report = schema_reencrypt(
        resume_at=tuple(resume_at) if resume_at else None, deadline=time.monotonic() + REENCRYPT_RUN_BUDGET_S
    )
    if not report.done:
        reencrypt.apply_async(kwargs={"resume_at": list(report.resume_at)})
    return report.as_dict()


@app.task(name="core.reencrypt_public", base=PlatformTask)
def reencrypt_public(resume_at: list | None = None) -> dict:
    """The same for encrypted columns of public-schema models (apps in SHARED_APPS only)."""
    from apps.core.fields import schema_reencrypt

    report = schema_reencrypt(
        resume_at=tuple(resume_at) if resume_at else None, deadline=time.monotonic() + REENCRYPT_RUN_BUDGET_S
    )
    if not report.done:
        reencrypt_public.apply_async(kwargs={"resume_at": list(report.resume_at)})
    return report.as_dict()


@app.task(name="core.reencrypt_dispatch", base=PlatformTask)
def reencrypt_dispatch() -> int:
    """Queue core.reencrypt for every tenant (ready or not) and the public schema; returns the tenants."""
    from django_tenants.utils import schema_context

    from apps.core.fields import iter_tenant_schemas

    queued = 0
    for schema in iter_tenant_schemas():
        with schema_context(schema):
            reencrypt.apply_async()
        queued += 1
    reencrypt_public.apply_async()
    return queued
