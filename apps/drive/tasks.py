"""DriveMonitor tasks: beat asks every interval, each ready tenant gets at most one queued scan."""

from django.conf import settings
from django.core.cache import cache

from apps.drive.services import drive_scan
from apps.tenants.celery import PlatformTask, each_ready_tenant, queue_unless_queued
from gbplatform.celery import app

# Set (in the tenant's cache namespace) while a scan is queued; a dispatch skips such a tenant, so a slow
# tenant never accumulates a backlog of identical scans. Expires by itself if a worker died mid-scan.
SCAN_QUEUED_KEY = "drive:scan-queued"
SCAN_QUEUED_TTL_INTERVALS = 30


@app.task(name="drive.scan", when_not_ready="skip")
def drive_scan_task() -> dict:
    """Scan the tenant's drive (runs in the tenant's schema; idempotent: an unchanged drive does nothing).

    A drive found unavailable ends the scan early with nothing blamed on any file (`unavailable` says why); it is
    not retried here: the next dispatch, one DRIVE_SCAN_INTERVAL_S later, queues the next scan, which picks up
    every file left."""
    cache.delete(SCAN_QUEUED_KEY)
    report = drive_scan()
    return {"skipped": report.skipped, "listed": report.listed, "processed": len(report.processed),
            "failed": len(report.failed), "removed": len(report.removed), "unavailable": report.unavailable,
            "waiting": len(report.waiting)}


@app.task(name="drive.dispatch_scans", base=PlatformTask)
def drive_dispatch_scans() -> int:
    """Queue one scan per ready tenant that has none queued; scans spread over the drive workers."""
    ttl = settings.DRIVE_SCAN_INTERVAL_S * SCAN_QUEUED_TTL_INTERVALS
    return each_ready_tenant(
        lambda: queue_unless_queued(drive_scan_task, mark=SCAN_QUEUED_KEY, ttl=ttl, queue="drive"),
        what="drive.dispatch_scans")
