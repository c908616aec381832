"""Beat's dispatch: one analytics refresh queued per ready tenant, none while one is still queued."""

from __future__ import annotations

import pytest
from django.core.cache import cache
from django_tenants.utils import schema_context

from apps.analytics.tasks import REFRESH_QUEUED_KEY, analytics_dispatch_refresh
from apps.tenants.celery import TenantRequiredError
from apps.tenants.selectors import tenant_list_ready

pytestmark = pytest.mark.django_db


def test_dispatch_queues_once_per_tenant_without_a_queued_refresh(canary_tenants):
    schemas = [t.schema_name for t in tenant_list_ready()]
    assert canary_tenants.a.schema_name in schemas
    for schema in schemas:
        with schema_context(schema):
            cache.set(REFRESH_QUEUED_KEY, "1", timeout=60)
    with schema_context(canary_tenants.a.schema_name):
        cache.delete(REFRESH_QUEUED_KEY)
    try:
        assert analytics_dispatch_refresh.apply().get() == 1
        assert analytics_dispatch_refresh.apply().get() == 0  # A's refresh is still queued
    finally:
        for schema in schemas:
            with schema_context(schema):
                cache.delete(REFRESH_QUEUED_KEY)


def test_refresh_refuses_to_run_outside_a_tenant():
    from apps.analytics.tasks import analytics_refresh_task

    with pytest.raises(TenantRequiredError):
        analytics_refresh_task.apply_async()
