"""Tenant creation time with 10, 100 and 1,000 tenants already present (goal: flat, under 1 s each).

BENCH_TENANTS_MAX lowers the top checkpoint for a quick look.
"""

import os
import statistics
import sys
import time

from tests.bench.support import bench_platform

CHECKPOINTS = [10, 100, 1000]
# Creations timed at each checkpoint; their mean and worst case are printed.
SAMPLES_PER_CHECKPOINT = 5


def main() -> int:
    top = int(os.environ.get("BENCH_TENANTS_MAX", CHECKPOINTS[-1]))
    checkpoints = [c for c in CHECKPOINTS if c <= top] or [top]
    with bench_platform():
        from apps.tenants.services import tenant_create

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
