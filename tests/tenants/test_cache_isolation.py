"""Cache keys are per tenant: the same key in two tenants holds two values, on the real Redis cache."""

import pytest
from django.core.cache import cache
from django_tenants.utils import schema_context

pytestmark = pytest.mark.django_db


def test_cache_reads_never_cross_tenants(canary_tenants, settings):
    assert "django_redis" in settings.CACHES["default"]["BACKEND"]
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(a.schema_name):
        cache.set("shared-key", a.canary)
    with schema_context(b.schema_name):
        assert cache.get("shared-key") is None
        cache.set("shared-key", b.canary)
    with schema_context(a.schema_name):
        assert cache.get("shared-key") == a.canary
    with schema_context(b.schema_name):
        assert cache.get("shared-key") == b.canary
    with schema_context("public"):
        assert cache.get("shared-key") is None


def test_cached_value_set_during_a_request_is_not_visible_to_the_other_tenant(canary_tenants):
    from django.test import Client

    a, b = canary_tenants.a, canary_tenants.b
    Client(HTTP_HOST=a.host).get("/api/health")  # the health probe writes and deletes its own key
    with schema_context(a.schema_name):
        cache.set("greeting", a.canary)
    with schema_context(b.schema_name):
        assert cache.get("greeting") is None
