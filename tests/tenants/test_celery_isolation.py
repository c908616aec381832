"""Celery: a task enqueued for tenant A runs in A's schema; a task without a tenant is refused.

A real worker (in a thread of this process) consumes from the real Redis broker started by the harness.
"""

import pytest
from celery.contrib.testing.worker import start_worker
from django_tenants.utils import schema_context

from apps.tenants.celery import TenantRequiredError
from gbplatform.celery import app
from tests.tenants.celery_probe import read_canary_bot

pytestmark = pytest.mark.django_db
RESULT_TIMEOUT_S = 20


@pytest.fixture(scope="module")
def worker(django_db_blocker):
    with django_db_blocker.unblock(), start_worker(
        app, pool="solo", perform_ping_check=False, queues=["jobs"], shutdown_timeout=10
    ) as running:
        yield running


def test_task_enqueued_for_each_tenant_runs_in_that_schema(canary_tenants, worker):
    a, b = canary_tenants.a, canary_tenants.b
    with schema_context(a.schema_name):
        result_a = read_canary_bot.delay()
    with schema_context(b.schema_name):
        result_b = read_canary_bot.delay()
    assert result_b.get(timeout=RESULT_TIMEOUT_S) == {"bot": b.canary, "schema": b.schema_name}
    assert result_a.get(timeout=RESULT_TIMEOUT_S) == {"bot": a.canary, "schema": a.schema_name}


def test_enqueueing_a_tenant_task_outside_a_tenant_is_refused(canary_tenants):
    with schema_context("public"), pytest.raises(TenantRequiredError):
        read_canary_bot.delay()


@pytest.mark.parametrize("headers", [{}, {"_schema_name": "public"}, {"_schema_name": "tenant_template"}])
def test_worker_refuses_a_message_without_a_tenant(canary_tenants, worker, headers):
    # send_task bypasses the enqueue check, as a foreign producer or a hand-made message would.
    with schema_context("public"):
        result = app.send_task("tests.read_canary_bot", headers=headers or None, queue="jobs")
    with pytest.raises(TenantRequiredError):
        result.get(timeout=RESULT_TIMEOUT_S)
