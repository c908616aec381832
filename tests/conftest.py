"""Test harness: real PostgreSQL and Redis (started by gbplatform.settings.test), two canary tenants.

Tenants A and B are created once per run by cloning the template schema, each with a bot whose primary
key is the same in both schemas and whose name carries a canary string: code that reads the wrong schema
returns the other tenant's canary instead of failing, and the isolation tests look for exactly that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

from gbplatform import localservices

HOST_A = "tenant-a.test.localhost"
HOST_B = "tenant-b.test.localhost"
CANARY_A = "canary-alpha-7f3a"
CANARY_B = "canary-bravo-91c2"


@dataclass(frozen=True)
class CanaryTenant:
    schema_name: str
    host: str
    canary: str
    bot_pk: int
    admin_password: str


@dataclass(frozen=True)
class CanaryTenants:
    a: CanaryTenant
    b: CanaryTenant


@pytest.fixture
def local_storage(settings, tmp_path):
    """An empty drive of local files for the test, and no outside S3 or Qdrant."""
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY, settings.QDRANT_URL = tmp_path / "media", "", ""
    return settings.MEDIA_ROOT


@pytest.fixture(autouse=True)
def _public_schema_first():
    """Each test starts on the public schema, whatever schema an earlier test left the connection on."""
    from django.db import connection

    if hasattr(connection, "set_schema_to_public"):
        connection.set_schema_to_public()
    yield


@pytest.fixture(autouse=True)
def _rate_limit_counters_reset():
    """Each test starts with empty rate-limit counters: every test client comes from 127.0.0.1, so sign-ins
    and messages of earlier tests would otherwise use up the next test's allowance."""
    yield
    from django.conf import settings

    if not settings.REDIS_URL:
        return
    from django_redis import get_redis_connection

    client = get_redis_connection("default")
    # And the knowledge bases' circuit breakers, keyed by service URL: a loopback port one test's fake used
    # (and a failure it recorded) may be another's later.
    keys = [*client.scan_iter(match="rl:*", count=1000), *client.scan_iter(match="kb:breaker:*", count=1000)]
    if keys:
        client.delete(*keys)


def pytest_unconfigure(config):
    localservices.stop_started()


# With GB_REQUIRE_SYSTEM_DEPS=1 (.ci/run sets it: `make test` installs Chromium, dovecot, docker-compose, the
# SeaweedFS and Node packages), a test skipped for a missing server or tool fails instead: a CI machine where an
# install failed would otherwise pass with the browser, IMAP, S3 or OIDC tests silently not run. Skips whose
# reason names one of these are still skips (the upstream corpus is not ours to ship).
REQUIRED_SKIPS_ALLOWED = ("GB_CORPUS_DIR",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or os.environ.get("GB_REQUIRE_SYSTEM_DEPS") != "1" or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in REQUIRED_SKIPS_ALLOWED):
        return
    report.outcome = "failed"
    report.longrepr = f"skipped, but GB_REQUIRE_SYSTEM_DEPS=1 requires it to run: {reason}"


def _canary_tenant(name: str, host: str, canary: str) -> CanaryTenant:
    from django_tenants.utils import schema_context

    from apps.bots.models import Bot
    from apps.tenants.services import tenant_create

    tenant, password = tenant_create(name=name, domain=host)
    with schema_context(tenant.schema_name):
        bot = Bot.objects.create(name=canary, display_name=f"{name} {canary}")
    return CanaryTenant(tenant.schema_name, host, canary, bot.pk, password)


def _close_other_connections() -> None:
    """Threads of the run (the Channels database thread, the in-thread Celery worker) keep connections
    open; end them so the test database can be dropped at the end of the run."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(scope="session")
def canary_tenants(django_db_setup, django_db_blocker):
    from apps.tenants.services import public_tenant_ensure, template_schema_ensure

    with django_db_blocker.unblock():
        public_tenant_ensure()
        template_schema_ensure()
        tenants = CanaryTenants(
            a=_canary_tenant("Tenant A", HOST_A, CANARY_A),
            b=_canary_tenant("Tenant B", HOST_B, CANARY_B),
        )
    assert tenants.a.bot_pk == tenants.b.bot_pk, "the canary bots must share a primary key"
    yield tenants
    with django_db_blocker.unblock():
        _close_other_connections()
