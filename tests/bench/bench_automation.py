"""The SET SCHEDULE tick: time to claim, plan and queue N due schedules (on time, and after an outage when
every row also gets its stale runs counted). A tick claims at most RUNS_PER_TENANT_PER_TICK rows of a tenant, so
the N rows belong to N / RUNS_PER_TENANT_PER_TICK tenants. The tick holds one tenant's row locks at a time.

BENCH_AUTOMATION_ROWS changes N (default 2,000). Jobs are queued to the in-memory broker (no worker).
"""

import logging
import os
import sys
import time
from datetime import timedelta

from tests.bench.support import bench_platform

ROWS = int(os.environ.get("BENCH_AUTOMATION_ROWS", "2000"))


def main() -> int:
    with bench_platform():
        from django.utils import timezone
        from django_tenants.utils import schema_context

        from apps.automation.models import JobRun
        from apps.automation.services import RUNS_PER_TENANT_PER_TICK, schedules_tick
        from apps.bots.models import Bot, BotSchedule, BotScript
        from apps.tenants.models import ScheduleIndex
        from apps.tenants.services import tenant_create

        logging.getLogger("apps.automation").setLevel(logging.ERROR)  # one stale warning per row otherwise
        due = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        per_tenant = min(ROWS, RUNS_PER_TENANT_PER_TICK)
        schedules = []  # (tenant, schedule)
        for t in range(max(1, ROWS // per_tenant)):
            tenant, _ = tenant_create(name=f"Bench {t}", domain=f"automation-{t}.bench.localhost", admin_username=None)
            with schema_context(tenant.schema_name):
                bot = Bot.objects.create(name="bench")
                script = BotScript.objects.create(bot=bot, name="job", path="bench.gbai/bench.gbdialog/job.bas",
                                                  source='TALK "x"\n', source_hash="x")
                schedules += [(tenant, s) for s in BotSchedule.objects.bulk_create(
                    BotSchedule(bot=bot, script=script, expression="every minute", cron="* * * * *", line=1,
                                next_run_at=due) for _ in range(per_tenant))]
        crons = ["* * * * *", "*/5 9-17 * * 1-5", "0 9 * * *", "30 18 * * 1"]

        def reset() -> None:
            ScheduleIndex.objects.all().delete()
            ScheduleIndex.objects.bulk_create(
                ScheduleIndex(tenant=tenant, schedule_id=s.pk, cron=crons[i % len(crons)], next_run_at=due)
                for i, (tenant, s) in enumerate(schedules))
            for tenant in {tenant for tenant, _ in schedules}:
                with schema_context(tenant.schema_name):
                    JobRun.objects.all().delete()

        print(f"{'case':>28} {'tenants':>7} {'rows':>6} {'total s':>8} {'ms/row':>7}")
        for label, late in (("on time", timedelta(seconds=2)), ("after a 2-hour outage", timedelta(hours=2))):
            reset()
            started = time.perf_counter()
            report = schedules_tick(now=due + late)
            elapsed = time.perf_counter() - started
            tenants = len({tenant for tenant, _ in schedules})
            print(f"{label:>28} {tenants:>7} {report.claimed:>6} {elapsed:>8.2f} "
                  f"{elapsed / max(1, report.claimed) * 1000:>7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
