"""DriveMonitor tasks end to end: beat's dispatch queues one scan per tenant and a real worker runs it."""

import time

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.cache import cache
from django_tenants.utils import schema_context

from apps.drive.models import DriveObject
from apps.drive.storage import tenant_drive
from apps.drive.tasks import SCAN_QUEUED_KEY, drive_dispatch_scans
from apps.tenants.services import tenant_create, tenant_delete
from gbplatform.celery import app

pytestmark = pytest.mark.django_db
WAIT_S = 20


@pytest.fixture(scope="module")
def drive_tenant(canary_tenants, django_db_blocker, tmp_path_factory):
    """A committed tenant of its own: the worker thread only sees committed rows."""
    from django.conf import settings

    previous = settings.MEDIA_ROOT, settings.S3_ACCESS_KEY
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY = tmp_path_factory.mktemp("media"), ""
    with django_db_blocker.unblock():
        tenant, _ = tenant_create(name="Drive Jobs", domain="drive-jobs.test.localhost", admin_username=None)
        yield tenant
        tenant_delete(schema_name=tenant.schema_name)
    settings.MEDIA_ROOT, settings.S3_ACCESS_KEY = previous


@pytest.fixture(scope="module")
def drive_worker(django_db_blocker):
    with django_db_blocker.unblock(), start_worker(
        app, pool="solo", perform_ping_check=False, queues=["drive"], shutdown_timeout=10
    ) as worker:
        yield worker


def _mark_scans_queued(tenants) -> None:
    for tenant in tenants:
        with schema_context(tenant.schema_name):
            cache.set(SCAN_QUEUED_KEY, "1", timeout=60)


def test_dispatch_queues_a_scan_once_and_the_worker_processes_the_drive(drive_tenant, drive_worker):
    from apps.tenants.selectors import tenant_list_ready

    schema = drive_tenant.schema_name
    # Only this tenant's scan is queued: the worker outlives this test, and a scan of another tenant still
    # queued would clear that tenant's mark (a scan clears it as it starts) under the next test.
    _mark_scans_queued(t for t in tenant_list_ready() if t.schema_name != schema)
    with schema_context(schema):
        cache.delete(SCAN_QUEUED_KEY)
        tenant_drive().write("shop.gbai/shop.gbdialog/start.bas", b'TALK "hi"\n')
    assert drive_dispatch_scans.apply().get() == 1
    deadline = time.monotonic() + WAIT_S
    with schema_context(schema):
        while time.monotonic() < deadline:
            row = DriveObject.objects.filter(key="shop.gbai/shop.gbdialog/start.bas").first()
            if row is not None and row.processed_etag:
                break
            time.sleep(0.2)
        assert row is not None and row.processed_etag == row.etag


def test_a_tenant_with_a_scan_queued_gets_no_second_one(drive_tenant, canary_tenants):
    from apps.tenants.selectors import tenant_list_ready

    # Every ready tenant of the run (other test modules create their own) has a scan queued.
    _mark_scans_queued(tenant_list_ready())
    assert drive_dispatch_scans.apply().get() == 0
    with schema_context(drive_tenant.schema_name):
        cache.delete(SCAN_QUEUED_KEY)
    assert drive_dispatch_scans.apply().get() == 1
