"""Tenant creation time with 10, 100 and 1,000 tenants already present (goal: flat, under 1 s each).

Runs on its own embedded PostgreSQL in var/bench-pg, recreated each run, so it never touches the data of
`make run` or `make test`. BENCH_TENANTS_MAX lowers the top checkpoint for a quick look.
"""

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTS = [10, 100, 1000]
# Creations timed at each checkpoint; their mean and worst case are printed.
SAMPLES_PER_CHECKPOINT = 5


def main() -> int:
    from gbplatform import localservices

    top = int(os.environ.get("BENCH_TENANTS_MAX", CHECKPOINTS[-1]))
    checkpoints = [c for c in CHECKPOINTS if c <= top] or [top]
    pgdata = ROOT / "var" / "bench-pg"
    if pgdata.exists():
        stale = localservices.EmbeddedPostgres(pgdata=pgdata, socket_dir=str(pgdata), port=5432)
        stale.stop()
        shutil.rmtree(pgdata)
    server = localservices.postgres_start(pgdata)
    os.environ.update(DATABASE_URL=server.url, DJANGO_SETTINGS_MODULE="gbplatform.settings.dev", LOG_LEVEL="WARNING")
    os.environ.pop("REDIS_URL", None)
    try:
        import django

        django.setup()
        from django.core.management import call_command

        from apps.tenants.services import public_tenant_ensure, template_schema_ensure, tenant_create

        call_command("migrate_schemas", "--shared", verbosity=0)
        public_tenant_ensure()
        template_schema_ensure()

        created = 0

        def create() -> float:
            nonlocal created
            started = time.perf_counter()
            tenant_create(name=f"Bench {created}", domain=f"t{created}.bench.localhost", admin_username=None)
            created += 1
            return time.perf_counter() - started

        print(f"{'existing tenants':>16} {'mean s':>8} {'max s':>8}")
        for checkpoint in checkpoints:
            while created < checkpoint:
                create()
            samples = [create() for _ in range(SAMPLES_PER_CHECKPOINT)]
            print(f"{checkpoint:>16} {statistics.mean(samples):>8.3f} {max(samples):>8.3f}", flush=True)
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
