"""Celery: a task enqueued for tenant A runs in A's schema; a task without a tenant is refused.

A real worker (in a thread of this process) consumes from the real Redis broker started by the harness.
"""

import pytest
from celery.contrib.testing.worker import start_worker
from django_tenants.utils import schema_context

from apps.tenants.celery import TenantRequiredError, each_ready_tenant
from apps.tenants.models import Tenant
from apps.tenants.selectors import tenant_settings_forget
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


def test_a_suspended_tenants_queued_tasks_are_skipped_until_it_resumes(canary_tenants):
    """Suspending stopped new dispatches only: tasks already queued or retrying (mail, resumed scripts) ran."""
    a = canary_tenants.a
    Tenant.objects.filter(schema_name=a.schema_name).update(ready=False)
    tenant_settings_forget()
    try:
        with schema_context(a.schema_name):
            assert read_canary_bot.apply().get() is None
    finally:
        Tenant.objects.filter(schema_name=a.schema_name).update(ready=True)
    with schema_context(a.schema_name):  # the cached "not ready" is read again before it is believed
        assert read_canary_bot.apply().get() == {"bot": a.canary, "schema": a.schema_name}


def test_a_suspended_tenants_task_that_carries_work_is_postponed_not_lost(canary_tenants, settings):
    """A mail to send, a privacy request or a resume must not vanish because the tenant was suspended: such
    tasks are queued again later (here on a queue nobody consumes, to read it)."""
    import json

    import redis

    from tests.tenants.celery_probe import POSTPONED_QUEUE, postponed_probe

    a = canary_tenants.a
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete(POSTPONED_QUEUE)
    Tenant.objects.filter(schema_name=a.schema_name).update(ready=False)
    tenant_settings_forget()
    try:
        with schema_context(a.schema_name):
            assert postponed_probe.apply(args=["keep me"]).get() is None
    finally:
        Tenant.objects.filter(schema_name=a.schema_name).update(ready=True)
        tenant_settings_forget()
    [raw] = broker.lrange(POSTPONED_QUEUE, 0, -1)
    broker.delete(POSTPONED_QUEUE)
    message = json.loads(raw)
    assert message["headers"]["task"] == "tests.postponed_probe"
    assert message["headers"]["_schema_name"] == a.schema_name and "keep me" in json.dumps(message)
    assert message["headers"]["eta"] is not None  # later, not at once


def test_one_tenant_failing_in_a_dispatch_does_not_stop_the_others(canary_tenants, caplog):
    from django.db import connection

    visited: list[str] = []

    def work() -> int:
        visited.append(connection.schema_name)
        if connection.schema_name == canary_tenants.a.schema_name:
            raise RuntimeError("relation does not exist")
        return 1

    total = each_ready_tenant(work, what="test.dispatch")
    assert canary_tenants.a.schema_name in visited and canary_tenants.b.schema_name in visited
    assert total == len(visited) - 1
    assert f"tenant {canary_tenants.a.schema_name} failed" in caplog.text
