"""Console reads: a bot's runs newest first, one page at a time, in the current tenant only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django_tenants.utils import schema_context

from apps.automation.models import JobRun
from apps.automation.selectors import JOB_RUNS_PAGE_SIZE_MAX, job_run_list, schedule_list
from apps.bots.models import Bot
from tests.automation.conftest import deploy, outside_test_transaction, schedule_of

pytestmark = pytest.mark.django_db
START = datetime(2026, 5, 1, 8, 0, tzinfo=UTC)


def _record(schema: str, name: str, count: int, status: str = JobRun.Status.OK) -> None:
    schedule = schedule_of(schema, deploy(schema, name, 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    with schema_context(schema):
        JobRun.objects.bulk_create(
            JobRun(bot=schedule.bot, schedule=schedule, script_name=name, cron=schedule.cron, status=status,
                   scheduled_for=START + timedelta(minutes=i), output=f"{name} {i}")
            for i in range(count)
        )


@outside_test_transaction
def test_runs_come_newest_first_a_page_at_a_time(canary_tenants):
    a = canary_tenants.a.schema_name
    _record(a, "at-pages", 7)
    with schema_context(a):
        bot = Bot.objects.get()
        first = job_run_list(bot=bot, page=1, page_size=3)
        last = job_run_list(bot=bot, page=3, page_size=3)
        beyond = job_run_list(bot=bot, page=99, page_size=3)
    assert (first.total, first.pages, first.has_next) == (7, 3, True)
    assert [r.output for r in first.runs] == ["at-pages 6", "at-pages 5", "at-pages 4"]
    assert [r.output for r in last.runs] == ["at-pages 0"] and not last.has_next
    assert beyond.page == 3  # clamped to the last page


@outside_test_transaction
def test_runs_filter_by_status_and_script_and_cap_the_page_size(canary_tenants):
    a = canary_tenants.a.schema_name
    _record(a, "at-good", 2)
    _record(a, "at-bad", 1, status=JobRun.Status.ERROR)
    with schema_context(a):
        bot = Bot.objects.get()
        errors = job_run_list(bot=bot, status=JobRun.Status.ERROR)
        good = job_run_list(bot=bot, script_name="AT-GOOD")
        huge = job_run_list(bot=bot, page_size=10_000)
        schedules = [s.script.name for s in schedule_list(bot=bot)]
    assert [r.script_name for r in errors.runs] == ["at-bad"]
    assert {r.script_name for r in good.runs} == {"at-good"} and good.total == 2
    assert huge.page_size == JOB_RUNS_PAGE_SIZE_MAX
    assert sorted(schedules) == ["at-bad", "at-good"]


@outside_test_transaction
def test_another_tenants_runs_are_not_listed(canary_tenants):
    _record(canary_tenants.b.schema_name, "at-other", 2)
    with schema_context(canary_tenants.a.schema_name):
        listed = job_run_list(bot=Bot.objects.get())
    assert listed.total == 0 and listed.runs == []
