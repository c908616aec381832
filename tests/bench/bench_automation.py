"""The SET SCHEDULE tick: time to claim, plan and queue N due schedules (on time, and after an outage when
every row also gets its stale runs counted). The tick holds its rows' locks for this long.

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

        from apps.automation.services import schedules_tick
        from apps.bots.models import Bot, BotSchedule, BotScript
        from apps.tenants.models import ScheduleIndex
        from apps.tenants.services import tenant_create

        logging.getLogger("apps.automation").setLevel(logging.ERROR)  # one stale warning per row otherwise
        tenant, _ = tenant_create(name="Bench", domain="automation.bench.localhost", admin_username=None)
        due = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
        with schema_context(tenant.schema_name):
            bot = Bot.objects.create(name="bench")
            script = BotScript.objects.create(bot=bot, name="job", path="bench.gbai/bench.gbdialog/job.bas",
                                              source='TALK "x"\n', source_hash="x")
            schedules = BotSchedule.objects.bulk_create(
                BotSchedule(bot=bot, script=script, expression="every minute", cron="* * * * *", line=1,
                            next_run_at=due) for _ in range(ROWS))
        crons = ["* * * * *", "*/5 9-17 * * 1-5", "0 9 * * *", "30 18 * * 1"]

        def reset() -> None:
            ScheduleIndex.objects.all().delete()
            ScheduleIndex.objects.bulk_create(
                ScheduleIndex(tenant=tenant, schedule_id=s.pk, cron=crons[i % len(crons)], next_run_at=due)
                for i, s in enumerate(schedules))

        print(f"{'case':>28} {'rows':>6} {'total s':>8} {'ms/row':>7}")
        for label, late in (("on time", timedelta(seconds=2)), ("after a 2-hour outage", timedelta(hours=2))):
            reset()
            started = time.perf_counter()
            report = schedules_tick(now=due + late)
            elapsed = time.perf_counter() - started
            print(f"{label:>28} {report.claimed:>6} {elapsed:>8.2f} {elapsed / max(1, report.claimed) * 1000:>7.2f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
