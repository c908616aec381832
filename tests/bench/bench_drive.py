"""DriveMonitor scan time: 1 tenant x 10,000 unchanged objects (goal <= 2 s, no per-object query), and
a full round over 1,000 tenants with one bot each. Local file storage (the embedded default).

BENCH_DRIVE_OBJECTS and BENCH_DRIVE_TENANTS lower the sizes for a quick look.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from tests.bench.support import bench_platform

OBJECTS = int(os.environ.get("BENCH_DRIVE_OBJECTS", 10_000))
TENANTS = int(os.environ.get("BENCH_DRIVE_TENANTS", 1000))
START = b'TALK "hello"\n'


def _timed_scan():
    from django.db import connection, reset_queries
    from django.test.utils import CaptureQueriesContext

    from apps.drive.services import drive_scan

    reset_queries()  # Django keeps at most 9,000 queries; a full log would count as zero
    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        report = drive_scan()
        elapsed = time.perf_counter() - started
    return elapsed, len(queries), report


def main() -> int:
    media = Path(tempfile.mkdtemp(prefix="bench-drive-"))
    with bench_platform():
        from django.conf import settings
        from django_tenants.utils import schema_context

        from apps.drive.storage import tenant_drive
        from apps.tenants.services import tenant_create

        settings.MEDIA_ROOT = media
        tenant, _ = tenant_create(name="Big", domain="big.bench.localhost", admin_username=None)
        with schema_context(tenant.schema_name):
            drive = tenant_drive()
            drive.write("big.gbai/big.gbdialog/start.bas", START)
            for i in range(OBJECTS - 1):
                drive.write(f"big.gbai/big.gbdrive/files/{i // 100}/doc-{i}.txt", f"document {i}\n".encode())
            first, first_queries, report = _timed_scan()
            second, second_queries, again = _timed_scan()
        print(f"1 tenant x {OBJECTS} objects: first scan {first:.2f} s ({first_queries} queries, "
              f"{len(report.processed)} processed)")
        print(f"1 tenant x {OBJECTS} unchanged objects: scan {second:.3f} s ({second_queries} queries, "
              f"{len(again.processed)} processed)  goal <= 2 s")

        schemas = []
        for i in range(TENANTS):
            t, _ = tenant_create(name=f"T{i}", domain=f"d{i}.bench.localhost", admin_username=None)
            schemas.append(t.schema_name)
            with schema_context(t.schema_name):
                tenant_drive().write("shop.gbai/shop.gbdialog/start.bas", START)
                _timed_scan()
        started = time.perf_counter()
        total_queries = 0
        for schema in schemas:
            with schema_context(schema):
                _, queries, _ = _timed_scan()
                total_queries += queries
        elapsed = time.perf_counter() - started
        print(f"{TENANTS} tenants x 1 bot, unchanged: full round {elapsed:.2f} s "
              f"({elapsed / TENANTS * 1000:.1f} ms per tenant, {total_queries / TENANTS:.1f} queries per tenant; "
              f"spread over the drive workers in production)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
