"""Shared set-up for benchmarks that need the platform's database: a private embedded PostgreSQL.

It lives in var/bench-pg and is recreated on every run, so a benchmark never touches the data of
`make run` or `make test` and always starts from the same empty state.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def bench_platform() -> Iterator[None]:
    """Django set up on a fresh bench database with the public tenant and the template migrated."""
    from gbplatform import localservices

    pgdata = ROOT / "var" / "bench-pg"
    localservices.EmbeddedPostgres(pgdata=pgdata, socket_dir=str(pgdata), port=5432).stop()
    shutil.rmtree(pgdata, ignore_errors=True)
    server = localservices.postgres_start(pgdata)
    os.environ.update(DATABASE_URL=server.url, DJANGO_SETTINGS_MODULE="gbplatform.settings.dev", LOG_LEVEL="WARNING")
    os.environ.pop("REDIS_URL", None)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from apps.tenants.services import public_tenant_ensure, template_schema_ensure

        call_command("migrate_schemas", "--shared", verbosity=0)
        public_tenant_ensure()
        template_schema_ensure()
        yield
    finally:
        server.stop()
