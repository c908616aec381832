"""Celery tasks that carry their tenant, and refuse to run without one.

tenant-schemas-celery stamps the sender's schema on each message and switches to it on the worker, but a
message without that header (or sent from the public schema) would silently run in `public`. A tenant task
here fails closed instead: it is refused when enqueued outside a tenant, and refused on the worker when it
arrives without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name
from tenant_schemas_celery.task import TenantTask

from apps.core.logging import request_context_clear, request_context_set

logger = logging.getLogger(__name__)


class TenantRequiredError(RuntimeError):
    """A tenant task was enqueued or received without a tenant."""


def _in_tenant_schema() -> bool:
    schema = connection.schema_name
    return schema not in {get_public_schema_name(), settings.TENANT_BASE_SCHEMA}


# What a tenant task does while its tenant is not ready (suspended, or being deleted): the suspend action
# promises that the tenant's jobs stop, not only new dispatches. Set per task (`@app.task(when_not_ready=...)`).
NOT_READY_POSTPONE = "postpone"  # queued again later: what it carries (a mail, a privacy request, a resume)
#                                  must not be lost; the default
NOT_READY_SKIP = "skip"  # dropped: beat queues such work again once the tenant serves (scans, polls, refreshes,
#                          scheduled runs, indexing picked up by the stale sweep)
NOT_READY_RUN = "run"  # runs anyway (key rotation must reach every schema, a compromised key cannot wait)
# A postponed task is looked at again this much later (while the tenant stays suspended, again and again).
NOT_READY_POSTPONE_S = 300


class TenantScopedTask(TenantTask):
    abstract = True
    when_not_ready = NOT_READY_POSTPONE
    # Messages are acked after the task ran (settings); a task refused for lack of a tenant must not be
    # redelivered forever, so refusals are plain failures, not retries.

    def apply_async(self, args=None, kwargs=None, **options):
        headers = options.get("headers") or {}
        if "_schema_name" not in headers and not _in_tenant_schema():
            raise TenantRequiredError(f"task {self.name} must be enqueued inside a tenant (schema_context)")
        return super().apply_async(args=args, kwargs=kwargs, **options)

    def _not_ready(self, args: tuple, kwargs: dict) -> None:
        schema = connection.schema_name
        if self.when_not_ready == NOT_READY_SKIP:
            logger.warning("task %s skipped: tenant %s is not ready (suspended or deleted)", self.name, schema)
            return None
        queue = (getattr(self.request, "delivery_info", None) or {}).get("routing_key")
        options = {"queue": queue} if queue else {}  # the queue it came from; else its routing
        self.apply_async(args=args, kwargs=kwargs, countdown=NOT_READY_POSTPONE_S, **options)
        logger.warning("task %s postponed %d s: tenant %s is not ready (suspended or deleted)", self.name,
                       NOT_READY_POSTPONE_S, schema)
        return None

    def __call__(self, *args, **kwargs):
        # task_prerun (tenant-schemas-celery) has already switched to the message's schema, or left public.
        if not _in_tenant_schema():
            raise TenantRequiredError(f"task {self.name} received without a tenant: refused")
        from apps.tenants.selectors import tenant_is_ready

        if self.when_not_ready != NOT_READY_RUN and not tenant_is_ready(connection.schema_name):
            return self._not_ready(args, kwargs)
        # Log lines of the task carry its tenant and, as request id, the task id.
        request_context_set(request_id=self.request.id or "", tenant=connection.schema_name)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            request_context_clear()


class PlatformTask(TenantTask):
    """A task for the whole platform (e.g. a dispatcher that fans out per tenant): runs in `public`."""

    abstract = True

    def __call__(self, *args, **kwargs):
        if connection.schema_name != get_public_schema_name():
            connection.set_schema_to_public()
        return super().__call__(*args, **kwargs)


def each_ready_tenant(work: Callable[[], int | bool | None], *, what: str) -> int:
    """A beat dispatcher's loop: `work` in each ready tenant's schema, its results summed. One tenant failing (a
    schema left half-migrated, a tenant deleted since the list was read) is logged, and every tenant after it
    still gets its turn."""
    from django_tenants.utils import schema_context

    from apps.tenants.selectors import tenant_list_ready

    total = 0
    for tenant in tenant_list_ready():
        try:
            with schema_context(tenant.schema_name):
                total += int(work() or 0)
        except Exception:  # noqa: BLE001 - one tenant's failure must not starve the others
            logger.exception("%s: tenant %s failed; the other tenants go on", what, tenant.schema_name)
    return total


def queue_unless_queued(task, *, mark: str, ttl: float, queue: str) -> bool:
    """Queue `task` in the current tenant unless its `mark` (a cache key the task deletes as it starts) says one
    is already queued; the mark expires after `ttl` by itself if a worker died. True when queued."""
    from django.core.cache import cache

    if cache.add(mark, "1", timeout=ttl):
        task.apply_async(queue=queue)
        return True
    return False
