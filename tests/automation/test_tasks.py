"""SET SCHEDULE end to end: the tick (driven with a chosen `now`, as beat would call it minutes apart), the
real Redis broker, two real worker processes on queue `jobs`, and runs recorded in each tenant's schema."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django_tenants.utils import schema_context

from apps.automation.models import JobRun
from apps.automation.services import schedules_tick
from apps.automation.tasks import schedule_run_task
from tests.automation.conftest import (
    deploy,
    outside_test_transaction,
    runs,
    schedule_of,
    schedules_align_ids,
    wait_for,
)

pytestmark = pytest.mark.django_db
# After the expected runs are there, how long to keep watching for a duplicate that should never come.
SETTLE_S = 1.5
EVERY_MINUTE = 'SET SCHEDULE "every minute"\n'


@outside_test_transaction
def test_every_minute_runs_exactly_once_per_minute_across_two_ticks_and_two_workers(canary_tenants, job_workers):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-minutely", EVERY_MINUTE + 'SAVE "at_minutely", NOW()\n'))
    due = schedule.next_run_at
    for minute in range(3):
        at = due + timedelta(minutes=minute)
        schedules_tick(now=at + timedelta(seconds=1))
        schedules_tick(now=at + timedelta(seconds=31))  # a second tick (or a second beat) in the same minute
    with schema_context(schema):  # and the first minute's job delivered twice, to both workers at once
        for _ in range(2):
            schedule_run_task.apply_async(kwargs={"schedule_id": schedule.pk, "scheduled_for": due.isoformat()},
                                          queue="jobs")
    done = wait_for(lambda: len(runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK)) >= 3)
    assert done, runs(schema, schedule_id=schedule.pk)
    time.sleep(SETTLE_S)
    recorded = runs(schema, schedule_id=schedule.pk)
    assert [(r.scheduled_for, r.status) for r in recorded] == [
        (due + timedelta(minutes=m), JobRun.Status.OK) for m in range(3)
    ]
    with schema_context(schema):
        from apps.bots.models import BotTableRow

        assert BotTableRow.objects.filter(table="at_minutely").count() == 3  # the script itself ran 3 times
        BotTableRow.objects.filter(table="at_minutely").delete()


@outside_test_transaction
def test_a_schedule_runs_in_its_own_tenant_only(canary_tenants, job_workers):
    a, b = canary_tenants.a, canary_tenants.b
    schedules_align_ids(a.schema_name, b.schema_name)
    source = EVERY_MINUTE + 'TALK "I am " + BOT.name\n'
    in_a = schedule_of(a.schema_name, deploy(a.schema_name, "at-whoami", source))
    in_b = schedule_of(b.schema_name, deploy(b.schema_name, "at-whoami", source))
    assert in_a.pk == in_b.pk  # the same schedule id in both schemas: only the tenant tells them apart
    schedules_tick(now=max(in_a.next_run_at, in_b.next_run_at) + timedelta(seconds=1))
    assert wait_for(lambda: runs(a.schema_name, script_name="at-whoami", status=JobRun.Status.OK)
                    and runs(b.schema_name, script_name="at-whoami", status=JobRun.Status.OK))
    time.sleep(SETTLE_S)
    [run_a], [run_b] = runs(a.schema_name, script_name="at-whoami"), runs(b.schema_name, script_name="at-whoami")
    assert run_a.output == f"I am {a.canary}" and b.canary not in run_a.output
    assert run_b.output == f"I am {b.canary}" and a.canary not in run_b.output


@outside_test_transaction
def test_after_ten_minutes_of_downtime_a_schedule_runs_once_not_ten_times(canary_tenants, job_workers):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-downtime", EVERY_MINUTE + 'TALK "ran"\n'))
    due = schedule.next_run_at
    schedules_tick(now=due + timedelta(seconds=2))  # minute 0 runs; then beat and workers are down
    assert wait_for(lambda: runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK))
    back = due + timedelta(minutes=11, seconds=5)  # minutes 1..10 were missed; minute 11 is now
    schedules_tick(now=back)
    schedules_tick(now=back + timedelta(seconds=20))
    assert wait_for(lambda: len(runs(schema, schedule_id=schedule.pk)) >= 3)
    time.sleep(SETTLE_S)
    recorded = [(r.scheduled_for, r.status, r.skipped_count) for r in runs(schema, schedule_id=schedule.pk)]
    assert recorded == [
        (due, JobRun.Status.OK, 0),
        (due + timedelta(minutes=1), JobRun.Status.SKIPPED_STALE, 10),
        (due + timedelta(minutes=11), JobRun.Status.OK, 0),
    ]
    with schema_context(schema):
        schedule.refresh_from_db()
    assert schedule.next_run_at == due + timedelta(minutes=12)


@outside_test_transaction
def test_a_job_that_waits_is_resumed_by_a_worker_after_the_wait(canary_tenants, job_workers):
    schema = canary_tenants.b.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-wait", EVERY_MINUTE + 'TALK "before"\nWAIT 1\nTALK "after"\n'))
    schedules_tick(now=schedule.next_run_at + timedelta(seconds=1))
    assert wait_for(lambda: runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK))
    [run] = runs(schema, schedule_id=schedule.pk)
    assert run.output == "before\nafter" and run.slices == 2 and run.state is None
    assert run.finished_at - run.started_at >= timedelta(seconds=1)


@outside_test_transaction
def test_a_waiting_run_whose_resume_message_was_lost_is_resumed_by_the_sweep(canary_tenants, job_workers):
    # The resume is queued on commit; when that failed (a broker hiccup) the run stayed `waiting` for ever: the
    # lost-run sweep looked at `running` runs only.
    from django.utils import timezone

    from apps.automation.services import JOB_RESUME_GRACE, job_runs_lost_sweep
    from apps.basic.host import InMemoryHost
    from apps.basic.vm import VM
    from apps.bots.runtime import program_for

    schema = canary_tenants.b.schema_name
    script = deploy(schema, "at-orphan", EVERY_MINUTE + 'TALK "before"\nWAIT 1\nTALK "after"\n')
    schedule = schedule_of(schema, script)
    with schema_context(schema):
        suspended = VM(program_for(script), InMemoryHost()).start({})  # a run at its WAIT, as a job saves it
        assert suspended.status == "waiting"
        long_ago = timezone.now() - JOB_RESUME_GRACE - timedelta(minutes=1)
        orphan = JobRun.objects.create(  # saved waiting, its resume message never queued
            bot_id=schedule.bot_id, schedule=schedule, script_name="at-orphan", cron=schedule.cron,
            scheduled_for=long_ago, started_at=long_ago, status=JobRun.Status.WAITING, state=suspended.state,
            resume_at=long_ago + timedelta(seconds=1), output="before", slices=1)
        recent = JobRun.objects.create(  # its WAIT just ended: its own message is on the way, left alone
            bot_id=schedule.bot_id, schedule=schedule, script_name="at-orphan", cron=schedule.cron,
            scheduled_for=timezone.now(), started_at=timezone.now(), status=JobRun.Status.WAITING,
            state=suspended.state, resume_at=timezone.now(), output="before", slices=1)
        assert job_runs_lost_sweep() == 1
    assert wait_for(lambda: runs(schema, pk=orphan.pk, status=JobRun.Status.OK))
    [run] = runs(schema, pk=orphan.pk)
    assert run.output == "before\nafter" and run.slices == 2 and run.state is None
    time.sleep(SETTLE_S)
    assert runs(schema, pk=recent.pk)[0].status == JobRun.Status.WAITING


@outside_test_transaction
def test_the_beat_task_on_a_worker_fires_what_is_due_now(canary_tenants, job_workers):
    from django.utils import timezone
    from django_tenants.utils import get_public_schema_name

    from apps.automation.tasks import schedules_tick_task
    from apps.tenants.models import ScheduleIndex

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-beat", EVERY_MINUTE + 'TALK "from beat"\n'))
    due = timezone.now().replace(second=0, microsecond=0)  # this minute: due, and within the cut-off
    with schema_context(get_public_schema_name()):
        ScheduleIndex.objects.filter(tenant__schema_name=schema, schedule_id=schedule.pk).update(next_run_at=due)
        schedules_tick_task.apply_async()  # what beat sends: a platform task, routed to `jobs`
    assert wait_for(lambda: runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK))
    [run] = runs(schema, schedule_id=schedule.pk, status=JobRun.Status.OK)
    # The minute may have turned between setting `due` and the worker's tick: then that minute runs.
    assert run.scheduled_for in (due, due + timedelta(minutes=1)) and run.output == "from beat"


def _daily_far_from_now(count: int) -> str:
    """`count` SET SCHEDULE lines of different daily times twelve hours from now: none of them falls due by
    itself during the test (its due time is set in the index)."""
    from django.utils import timezone

    hour = (timezone.now().hour + 12) % 24
    return "".join(f'SET SCHEDULE "{m} {hour} * * *"\n' for m in range(count))


@outside_test_transaction
def test_a_tenant_with_a_backlog_of_due_schedules_does_not_crowd_out_another_tenants_run(canary_tenants,
                                                                                        job_workers):
    # Due rows were claimed oldest first over all tenants: a tenant with a backlog had all of it queued (up to
    # 10,000 a tick) ahead of every other tenant's run on the queue they share.
    from django_tenants.utils import get_public_schema_name

    from apps.automation.services import RUNS_PER_TENANT_PER_TICK
    from apps.bots.models import BotSchedule
    from apps.tenants.models import ScheduleIndex

    a, b = canary_tenants.a.schema_name, canary_tenants.b.schema_name
    backlog = RUNS_PER_TENANT_PER_TICK + 5
    flood = deploy(a, "at-flood", _daily_far_from_now(backlog) + 'TALK "flood"\n')
    mine = schedule_of(b, deploy(b, "at-mine", EVERY_MINUTE + 'TALK "mine"\n'))
    due = mine.next_run_at
    with schema_context(a):
        flood_ids = list(BotSchedule.objects.filter(script=flood).values_list("pk", flat=True))
    with schema_context(get_public_schema_name()):  # A's are all due, and longer than B's
        flood_rows = ScheduleIndex.objects.filter(tenant__schema_name=a, schedule_id__in=flood_ids)
        assert flood_rows.update(next_run_at=due - timedelta(seconds=30)) == backlog

    first = schedules_tick(now=due + timedelta(seconds=1))
    assert (b, mine.pk) in first.fired
    assert sum(1 for schema, _ in first.fired if schema == a) == RUNS_PER_TENANT_PER_TICK
    assert first.held_back == {a: 5}
    with schema_context(get_public_schema_name()):  # the rest stay due, for the next tick
        assert flood_rows.filter(next_run_at=due - timedelta(seconds=30)).count() == 5
    assert wait_for(lambda: runs(b, schedule_id=mine.pk, status=JobRun.Status.OK))
    assert wait_for(lambda: len(runs(a, script_name="at-flood", status=JobRun.Status.OK)) == RUNS_PER_TENANT_PER_TICK)

    second = schedules_tick(now=due + timedelta(seconds=11))  # beat's next tick
    assert sorted(s for schema, s in second.fired if schema == a) == sorted(
        set(flood_ids) - {s for schema, s in first.fired if schema == a})
    assert not second.held_back
    assert wait_for(lambda: len(runs(a, script_name="at-flood", status=JobRun.Status.OK)) == backlog)
    time.sleep(SETTLE_S)
    recorded = runs(a, script_name="at-flood")
    assert [r.status for r in recorded] == [JobRun.Status.OK] * backlog  # late by a tick, none skipped
    assert {r.output for r in recorded} == {"flood"}
    assert [r.status for r in runs(b, script_name="at-mine")] == [JobRun.Status.OK]


@outside_test_transaction
def test_a_tenant_at_its_runs_in_flight_limit_waits_for_a_later_tick_and_others_still_run(canary_tenants,
                                                                                         job_workers, settings):
    # A tenant's runs were limited by nothing but its schedules: scripts running (or WAITing) for minutes piled
    # up on the queue every tenant shares, and everyone's runs behind them were dropped past the cut-off.
    from django_tenants.utils import get_public_schema_name

    from apps.bots.models import BotSchedule
    from apps.tenants.models import ScheduleIndex

    settings.AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX = 3
    a, b = canary_tenants.a.schema_name, canary_tenants.b.schema_name
    slow = deploy(a, "at-slow", _daily_far_from_now(5) + 'TALK "start"\nWAIT 4\nTALK "end"\n')
    mine = schedule_of(b, deploy(b, "at-mine", EVERY_MINUTE + 'TALK "mine"\n'))
    due = mine.next_run_at
    with schema_context(a):
        slow_ids = set(BotSchedule.objects.filter(script=slow).values_list("pk", flat=True))
    with schema_context(get_public_schema_name()):
        ScheduleIndex.objects.filter(tenant__schema_name=a, schedule_id__in=slow_ids).update(next_run_at=due)

    def fired(report, schema: str) -> set[int]:
        return {schedule for s, schedule in report.fired if s == schema}

    first = schedules_tick(now=due + timedelta(seconds=1))
    assert len(fired(first, a)) == 3 and first.held_back == {a: 2} and (b, mine.pk) in first.fired
    with schema_context(a):  # queued as they were claimed: in flight before any worker took them
        assert JobRun.objects.filter(script_name="at-slow", status__in=JobRun.IN_FLIGHT).count() == 3
    assert wait_for(lambda: len(runs(a, script_name="at-slow", status=JobRun.Status.WAITING)) == 3)
    assert wait_for(lambda: runs(b, schedule_id=mine.pk, status=JobRun.Status.OK))

    second = schedules_tick(now=due + timedelta(seconds=11))  # A's three are still waiting: none more
    assert fired(second, a) == set() and second.held_back == {a: 2}

    assert wait_for(lambda: len(runs(a, script_name="at-slow", status=JobRun.Status.OK)) == 3)
    third = schedules_tick(now=due + timedelta(seconds=21))
    assert fired(third, a) == slow_ids - fired(first, a) and not third.held_back
    assert wait_for(lambda: len(runs(a, script_name="at-slow", status=JobRun.Status.OK)) == 5)
    time.sleep(SETTLE_S)
    assert {(r.status, r.output) for r in runs(a, script_name="at-slow")} == {(JobRun.Status.OK, "start\nend")}


@outside_test_transaction
def test_beats_tick_is_not_held_up_behind_a_backlog_on_the_jobs_queue(canary_tenants, job_workers):
    # The tick went to `jobs`, expiring after one interval: behind a backlog of runs it expired there, tick after
    # tick, and no tenant's schedules were claimed at all.
    from django.conf import settings
    from django.utils import timezone
    from django_tenants.utils import get_public_schema_name

    from apps.automation.tasks import job_run_resume_task, schedules_tick_task
    from apps.tenants.models import ScheduleIndex
    from gbplatform.celery import app

    b, backlog = canary_tenants.b.schema_name, 2000
    mine = schedule_of(b, deploy(b, "at-ontime", EVERY_MINUTE + 'TALK "on time"\n'))
    assert wait_for(lambda: len(app.control.ping(timeout=0.5)) == len(job_workers))
    # The workers leave `jobs` alone while the backlog is queued: it is all there, however fast they are.
    assert len(app.control.cancel_consumer("jobs", reply=True, timeout=5)) == len(job_workers)
    try:
        with schema_context(b), app.producer_or_acquire() as producer:
            for _ in range(backlog):
                job_run_resume_task.apply_async(args=[0], producer=producer)  # no such run: does nothing
        due = timezone.now().replace(second=0, microsecond=0)  # this minute: due, within the cut-off
        with schema_context(get_public_schema_name()):
            index = ScheduleIndex.objects.filter(tenant__schema_name=b, schedule_id=mine.pk)
            index.update(next_run_at=due)
            app.control.add_consumer("jobs", reply=True, timeout=5)
            tick = settings.CELERY_BEAT_SCHEDULE["automation-tick"]
            schedules_tick_task.apply_async(**tick["options"])  # as beat sends it
            assert wait_for(lambda: index.filter(next_run_at__gt=due).exists(), timeout=tick["options"]["expires"])
        with app.connection_for_read() as conn:  # claimed while most of the backlog still waits
            assert conn.default_channel.client.llen("jobs") > backlog // 2
    finally:
        app.control.add_consumer("jobs", reply=True, timeout=5)
        with app.connection_for_write() as conn:
            conn.default_channel.queue_purge("jobs")
