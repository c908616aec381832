"""The runner's decisions: which due time runs, what is skipped as stale, what a job records."""

from __future__ import annotations

import re
import threading
import zoneinfo
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django_tenants.utils import get_public_schema_name, schema_context

from apps.automation.host import JOB_OUTPUT_MAX_CHARS, NO_USER_TO_HEAR, OUTPUT_TRUNCATED
from apps.automation.models import JobRun
from apps.automation.services import CronCache, fire_plan, schedule_run, schedules_tick
from apps.tenants.models import ScheduleIndex
from tests.automation.conftest import deploy, outside_test_transaction, schedule_of

pytestmark = pytest.mark.django_db
UTC_TZ = zoneinfo.ZoneInfo("UTC")
CUTOFF = timedelta(minutes=5)


def at(hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(2026, 3, 10, hh, mm, ss, tzinfo=UTC)


# --- fire_plan: pure decisions --------------------------------------------------------------------


def test_an_every_minute_schedule_on_time_runs_its_due_minute_and_moves_to_the_next():
    plan = fire_plan(cron="* * * * *", tz=UTC_TZ, due=at(9, 0), now=at(9, 0, 5), late_cutoff=CUTOFF)
    assert plan.run_at == at(9, 0)
    assert plan.skipped_count == 0 and plan.skipped_from is None
    assert plan.next_run_at == at(9, 1)


def test_after_ten_minutes_of_downtime_one_run_fires_and_the_ten_missed_minutes_are_skipped():
    # Last run 9:00; workers down until 9:10:05. The 9:01 ... 9:10 due times were missed.
    plan = fire_plan(cron="* * * * *", tz=UTC_TZ, due=at(9, 1), now=at(9, 11, 5), late_cutoff=CUTOFF)
    assert plan.run_at == at(9, 11)  # the current minute runs, once
    assert plan.skipped_from == at(9, 1) and plan.skipped_count == 10
    assert plan.next_run_at == at(9, 12)


def test_a_daily_report_found_hours_late_is_skipped_not_sent():
    plan = fire_plan(cron="0 9 * * *", tz=UTC_TZ, due=at(9, 0), now=at(14, 0), late_cutoff=CUTOFF)
    assert plan.run_at is None
    assert plan.skipped_from == at(9, 0) and plan.skipped_count == 1
    assert plan.next_run_at == at(9, 0) + timedelta(days=1)


def test_a_run_late_but_within_the_cut_off_still_runs():
    plan = fire_plan(cron="0 9 * * *", tz=UTC_TZ, due=at(9, 0), now=at(9, 4, 59), late_cutoff=CUTOFF)
    assert plan.run_at == at(9, 0) and plan.skipped_count == 0


def test_next_runs_are_read_in_the_schedule_time_zone():
    sao_paulo = zoneinfo.ZoneInfo("America/Sao_Paulo")  # UTC-3
    plan = fire_plan(cron="0 9 * * *", tz=sao_paulo, due=at(12, 0), now=at(12, 0, 30), late_cutoff=CUTOFF)
    assert plan.run_at == at(12, 0)
    assert plan.next_run_at == at(12, 0) + timedelta(days=1)


def _fires(cron: str, tz: zoneinfo.ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every run a tick each 10 s from `start` to `end` would fire (the tick loop in miniature)."""
    from apps.bots.services import schedule_next_run

    due, fired, now = schedule_next_run(cron, tz, start), [], start
    while now < end:
        if due <= now:
            plan = fire_plan(cron=cron, tz=tz, due=due, now=now, late_cutoff=CUTOFF)
            fired += [plan.run_at] if plan.run_at else []
            due = plan.next_run_at
        now += timedelta(seconds=10)
    return fired


@pytest.mark.parametrize(("zone", "cron", "day"), [
    ("America/New_York", "30 1 * * *", datetime(2025, 11, 2, 3, 0, tzinfo=UTC)),  # 01:00-02:00 happens twice
    ("Europe/Berlin", "30 2 * * *", datetime(2025, 10, 26, 0, 0, tzinfo=UTC)),  # 02:00-03:00 happens twice
])
def test_a_daily_job_in_the_hour_repeated_when_clocks_go_back_runs_once(zone, cron, day):
    """croniter gives the repeated wall time twice (summer time, then winter time an hour later): the job ran
    twice that night (its run key is the UTC time, an hour apart). Classic cron runs it once."""
    fired = _fires(cron, zoneinfo.ZoneInfo(zone), day, day + timedelta(hours=6))
    assert len(fired) == 1 and fired[0].astimezone(zoneinfo.ZoneInfo(zone)).fold == 0


def test_a_job_with_a_wildcard_hour_keeps_following_real_time_through_the_repeated_hour():
    new_york = zoneinfo.ZoneInfo("America/New_York")
    start = datetime(2025, 11, 2, 4, 0, 5, tzinfo=UTC)  # 00:00 EDT; the next four hours are five real hours
    assert len(_fires("0 * * * *", new_york, start, start + timedelta(hours=4, minutes=1))) == 4


def test_one_parsed_cron_serves_schedules_in_different_time_zones():
    crons = CronCache()  # the tick parses each cron once per batch
    sao_paulo, new_york = zoneinfo.ZoneInfo("America/Sao_Paulo"), zoneinfo.ZoneInfo("America/New_York")
    first = fire_plan(cron="0 9 * * *", tz=sao_paulo, due=at(12, 0), now=at(12, 0, 1), late_cutoff=CUTOFF,
                      crons=crons)
    second = fire_plan(cron="0 9 * * *", tz=new_york, due=at(13, 0), now=at(13, 0, 1), late_cutoff=CUTOFF,
                       crons=crons)
    assert first.next_run_at == at(12, 0) + timedelta(days=1)  # 9:00 in Sao Paulo (UTC-3)
    assert second.next_run_at == at(13, 0) + timedelta(days=1)  # 9:00 in New York (UTC-4 in March)


# --- the tick against the public index ------------------------------------------------------------


def _index_row(schema: str, schedule_id: int) -> ScheduleIndex | None:
    with schema_context(get_public_schema_name()):
        return ScheduleIndex.objects.filter(tenant__schema_name=schema, schedule_id=schedule_id).first()


@outside_test_transaction
def test_a_second_tick_in_the_same_minute_finds_the_schedule_already_moved(canary_tenants):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-tick", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    due = schedule.next_run_at
    first = schedules_tick(now=due + timedelta(seconds=3))
    assert (schema, schedule.pk) in first.fired
    assert _index_row(schema, schedule.pk).next_run_at == due + timedelta(minutes=1)
    second = schedules_tick(now=due + timedelta(seconds=40))
    assert (schema, schedule.pk) not in second.fired
    assert _index_row(schema, schedule.pk).next_run_at == due + timedelta(minutes=1)
    third = schedules_tick(now=due + timedelta(minutes=1, seconds=1))
    assert (schema, schedule.pk) in third.fired


@outside_test_transaction
def test_two_ticks_at_once_claim_a_due_schedule_once(canary_tenants):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-race", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    now = schedule.next_run_at + timedelta(seconds=2)
    start, reports = threading.Barrier(2), []

    def tick() -> None:
        start.wait()
        try:
            reports.append(schedules_tick(now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(reports) == 2
    assert [r.fired.count((schema, schedule.pk)) for r in reports] in ([1, 0], [0, 1])
    assert _index_row(schema, schedule.pk).next_run_at == schedule.next_run_at + timedelta(minutes=1)


@outside_test_transaction
def test_a_provisioning_tenant_runs_no_jobs(canary_tenants):
    from apps.tenants.models import Tenant

    schema = canary_tenants.b.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-notready", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    with schema_context(get_public_schema_name()):
        Tenant.objects.filter(schema_name=schema).update(ready=False)
    try:
        assert (schema, schedule.pk) not in schedules_tick(now=schedule.next_run_at + timedelta(seconds=1)).fired
        assert _index_row(schema, schedule.pk).next_run_at == schedule.next_run_at
    finally:
        with schema_context(get_public_schema_name()):
            Tenant.objects.filter(schema_name=schema).update(ready=True)


# --- the job, run in-process (the tasks are thin wrappers over schedule_run) ------------------------


def _run(schema: str, name: str, source: str) -> JobRun:
    schedule = schedule_of(schema, deploy(schema, name, 'SET SCHEDULE "every minute"\n' + source))
    with schema_context(schema):
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
        assert run is not None
        run.refresh_from_db()
        return run


@outside_test_transaction
def test_a_job_records_its_talk_output_and_ends_ok(canary_tenants):
    run = _run(canary_tenants.a.schema_name, "at-ok", 'TALK "report for " + BOT.name\nPRINT "done"\n')
    assert run.status == JobRun.Status.OK
    assert run.output == f"report for {canary_tenants.a.canary}\nPRINT: done"
    assert run.started_at is not None and run.finished_at >= run.started_at


@outside_test_transaction
def test_a_failing_job_records_the_line_and_the_message(canary_tenants):
    run = _run(canary_tenants.a.schema_name, "at-fail", 'TALK "start"\nx = 1\ny = NOSUCH(x)\nTALK "never"\n')
    assert run.status == JobRun.Status.ERROR
    assert run.error_line == 4  # line 1 is the SET SCHEDULE
    assert "NOSUCH" in run.error_message
    assert run.output == "start"


@outside_test_transaction
def test_hear_in_a_job_is_an_error_at_its_line(canary_tenants):
    run = _run(canary_tenants.a.schema_name, "at-hear", 'TALK "name?"\nHEAR name AS "a", "b"\nTALK name\n')
    assert run.status == JobRun.Status.ERROR
    assert run.error_line == 3
    assert NO_USER_TO_HEAR in run.error_message


@outside_test_transaction
def test_job_output_is_bounded_and_says_it_was_cut(canary_tenants):
    line = "x" * 100
    run = _run(canary_tenants.a.schema_name, "at-loud", f'FOR i = 1 TO 1000\n  TALK "{line}"\nNEXT\nTALK "end"\n')
    assert run.status == JobRun.Status.OK
    assert len(run.output) <= JOB_OUTPUT_MAX_CHARS
    assert run.output.endswith(OUTPUT_TRUNCATED.format(limit=JOB_OUTPUT_MAX_CHARS))
    assert run.output.startswith(line + "\n" + line)


@outside_test_transaction
def test_talk_to_a_chat_channel_from_a_job_is_a_clear_error(canary_tenants):
    run = _run(canary_tenants.a.schema_name, "at-talkto", 'TALK TO "whatsapp:+5511999999999", "hi"\n')
    assert run.status == JobRun.Status.ERROR and run.error_line == 2
    assert "only send to an email address" in run.error_message


@outside_test_transaction
def test_the_same_due_time_delivered_twice_runs_once(canary_tenants):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-twice", 'SET SCHEDULE "every minute"\nSAVE "at_runs", "ran"\n'))
    with schema_context(schema):
        from apps.bots.models import BotTableRow

        BotTableRow.objects.filter(table="at_runs").delete()
        first = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
        again = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
        assert first is not None and first.status == JobRun.Status.OK
        assert again is None
        assert BotTableRow.objects.filter(table="at_runs").count() == 1
        BotTableRow.objects.filter(table="at_runs").delete()


@outside_test_transaction
def test_a_stale_skip_is_recorded_with_what_it_covers(canary_tenants):
    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-stale", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    due = schedule.next_run_at
    with schema_context(schema):
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=due + timedelta(minutes=10),
                           next_run_at=due + timedelta(minutes=11), skipped_from=due, skipped_count=10)
        skipped = JobRun.objects.get(schedule_id=schedule.pk, status=JobRun.Status.SKIPPED_STALE)
        assert run.status == JobRun.Status.OK and run.scheduled_for == due + timedelta(minutes=10)
        assert skipped.scheduled_for == due and skipped.skipped_count == 10
        assert "skipped 10 run(s)" in skipped.output
        schedule.refresh_from_db()
        assert schedule.next_run_at == due + timedelta(minutes=11)  # the console sees the index's next time


@outside_test_transaction
def test_a_job_picked_up_after_the_cut_off_is_skipped_not_run(canary_tenants):
    # The tick queued the 9:00 report on time; the workers were down until 14:00 and the message waited in the
    # queue (acks_late). It ran at 14:00: the cut-off was checked only when the tick claimed it.
    from django.conf import settings
    from django.utils import timezone

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-backlog", 'SET SCHEDULE "every minute"\nTALK "sent"\n'))
    due = timezone.now().replace(microsecond=0) - timedelta(hours=5)
    with schema_context(schema):
        record = schedule_run(schedule_id=schedule.pk, scheduled_for=due)
        assert schedule_run(schedule_id=schedule.pk, scheduled_for=due) is None  # redelivered: nothing more
        [run] = JobRun.objects.filter(schedule=schedule)
        assert run.pk == record.pk and run.status == JobRun.Status.SKIPPED_STALE
        assert (run.scheduled_for, run.skipped_count, run.started_at) == (due, 1, None)
        assert f"more than {settings.AUTOMATION_LATE_CUTOFF_S} s late" in run.output
        assert re.search(r"queued on time, a worker picked it up 1800\d s after it was due", run.output)
        # The tick had already skipped earlier due times: one record covers them and the late one.
        record = schedule_run(schedule_id=schedule.pk, scheduled_for=due + timedelta(minutes=10),
                              skipped_from=due + timedelta(minutes=1), skipped_count=9)
        assert record.status == JobRun.Status.SKIPPED_STALE and record.skipped_count == 10
        assert record.scheduled_for == due + timedelta(minutes=1)
        # Within the cut-off it still runs.
        within = timezone.now() - timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S - 30)
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=within)
        assert run.status == JobRun.Status.OK and run.output == "sent"
        assert JobRun.objects.filter(schedule=schedule, status=JobRun.Status.OK).count() == 1
        # The tick claimed a due time just within the cut-off; a worker takes it a few seconds later, past the
        # cut-off counted from the due time: its wait in the queue is what counts here, and it runs.
        claimed_late = timezone.now() - timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S + 5)
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=claimed_late,
                           queued_at=timezone.now() - timedelta(seconds=6))
        assert run.status == JobRun.Status.OK


@outside_test_transaction
def test_a_job_for_a_schedule_that_is_gone_drops_its_index_row(canary_tenants):
    from apps.bots.models import BotSchedule

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-gone", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    with schema_context(schema):
        BotSchedule.objects.filter(pk=schedule.pk).delete()  # as a bot deletion does, bypassing the services
    assert _index_row(schema, schedule.pk) is not None
    with schema_context(schema):
        assert schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at) is None
    assert _index_row(schema, schedule.pk) is None


@outside_test_transaction
def test_a_waiting_job_whose_script_changed_ends_with_a_clear_error(canary_tenants):
    from apps.automation.services import job_run_resume

    schema = canary_tenants.b.schema_name
    run = _run(schema, "at-changed", 'TALK "before"\nWAIT 60\nTALK "after"\n')
    assert run.status == JobRun.Status.WAITING and run.state is not None and run.resume_at > run.started_at
    deploy(schema, "at-changed", 'SET SCHEDULE "every minute"\nTALK "before"\nWAIT 60\nTALK "changed"\n')
    with schema_context(schema):
        resumed = job_run_resume(run_id=run.pk)
        assert job_run_resume(run_id=run.pk) is None  # only a waiting run resumes (a redelivered task)
    assert resumed.status == JobRun.Status.ERROR
    assert resumed.error_message.startswith("cannot resume after WAIT") and resumed.output == "before"


@outside_test_transaction
def test_a_resume_meant_for_an_earlier_wait_does_not_cut_the_next_one_short(canary_tenants):
    """The sweep queues a lost resume again; when the first message arrives after all, the run goes on to its
    next WAIT, and the sweep's copy, arriving then, resumed that WAIT at once."""
    from apps.automation.services import job_run_resume

    schema = canary_tenants.a.schema_name
    run = _run(schema, "at-two-waits", 'TALK "one"\nWAIT 60\nTALK "two"\nWAIT 3600\nTALK "three"\n')
    first_wait = run.slices
    with schema_context(schema):
        at_second = job_run_resume(run_id=run.pk, slices=first_wait)
        assert at_second.status == JobRun.Status.WAITING and at_second.output == "one\ntwo"
        assert job_run_resume(run_id=run.pk, slices=first_wait) is None  # the duplicate: nothing
        assert JobRun.objects.get(pk=run.pk).status == JobRun.Status.WAITING  # still at the second WAIT
        done = job_run_resume(run_id=run.pk, slices=at_second.slices)
    assert done.status == JobRun.Status.OK and done.output == "one\ntwo\nthree"


@outside_test_transaction
def test_a_redelivered_job_whose_worker_died_is_marked_lost_not_run_again(canary_tenants):
    from apps.automation.services import JOB_LOST_AFTER

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-lost", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    with schema_context(schema):
        JobRun.objects.create(bot_id=schedule.bot_id, schedule=schedule, script_name="at-lost", cron=schedule.cron,
                              scheduled_for=schedule.next_run_at, status=JobRun.Status.RUNNING,
                              started_at=schedule.next_run_at - JOB_LOST_AFTER - timedelta(minutes=1))
        assert schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at) is None
        [run] = JobRun.objects.filter(schedule=schedule)
    assert run.status == JobRun.Status.ERROR and "stopped before it finished" in run.error_message
    assert run.output == ""  # the script did not run a second time


@outside_test_transaction
def test_the_sweep_records_runs_lost_with_their_worker_and_leaves_live_ones(canary_tenants):
    """A killed worker's task is redelivered at once, before JOB_LOST_AFTER: the redelivery alone never marked
    the run, which showed `running` for ever."""
    from apps.automation.services import JOB_LOST_AFTER, job_runs_lost_sweep

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-sweep", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    now = schedule.next_run_at
    long_ago = now - JOB_LOST_AFTER - timedelta(minutes=1)
    with schema_context(schema):
        def run(minutes: int, **fields) -> JobRun:
            return JobRun.objects.create(bot_id=schedule.bot_id, schedule=schedule, script_name="at-sweep",
                                         cron=schedule.cron, scheduled_for=now - timedelta(minutes=minutes),
                                         status=JobRun.Status.RUNNING, **fields)

        lost = run(1, started_at=long_ago)
        resumed = run(2, started_at=long_ago, resume_at=now - timedelta(seconds=30))  # a slice after a WAIT
        fresh = run(3, started_at=now - timedelta(seconds=30))
        assert job_runs_lost_sweep(now=now) == 1
        statuses = {r.pk: (r.status, r.error_message) for r in JobRun.objects.filter(schedule=schedule)}
    assert statuses[lost.pk][0] == JobRun.Status.ERROR and "stopped before it finished" in statuses[lost.pk][1]
    assert statuses[resumed.pk][0] == statuses[fresh.pk][0] == JobRun.Status.RUNNING


@outside_test_transaction
def test_a_job_can_call_another_script_of_its_bot(canary_tenants):
    """CALL "other" in a scheduled job was "Undefined procedure/script": only chat sessions had it."""
    schema = canary_tenants.a.schema_name
    deploy(schema, "at-double", 'PARAM n AS INTEGER LIKE "1" DESCRIPTION "n"\nDESCRIPTION "double"\nRETURN n * 2\n')
    deploy(schema, "at-loop",
           'PARAM n AS INTEGER LIKE "1" DESCRIPTION "n"\nDESCRIPTION "loop"\nx = CALL "at-loop", n\n')
    deploy(schema, "at-asks", 'HEAR answer\n')
    source = ('SET SCHEDULE "every minute"\nx = CALL "at-double", 21\nTALK "got " + x\n'
              'ON ERROR RESUME NEXT\nCALL "at-loop", 1\nTALK ERR.DESCRIPTION\nCALL "at-asks"\nTALK ERR.DESCRIPTION\n')
    schedule = schedule_of(schema, deploy(schema, "at-caller", source))
    with schema_context(schema):
        run = schedule_run(schedule_id=schedule.pk, scheduled_for=schedule.next_run_at)
    assert run.status == JobRun.Status.OK, run.error_message
    lines = run.output.splitlines()
    assert lines[0] == "got 42"
    assert "nested deeper than" in lines[1] and "waits for input" in lines[2]



@outside_test_transaction
def test_a_slice_resumed_late_counts_its_time_from_when_it_resumed(canary_tenants, monkeypatch):
    """resume_at kept the planned time: a resume that started late (a queue backlog) was swept as lost while
    its slice ran."""
    from apps.automation import services as automation

    schema = canary_tenants.a.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-late", 'SET SCHEDULE "every minute"\nWAIT 1\nTALK "x"\n'))
    planned = schedule.next_run_at - automation.JOB_LOST_AFTER - timedelta(minutes=5)
    swept: list[int] = []

    def a_slice(run, *, script, state):
        swept.append(automation.job_runs_lost_sweep())  # the beat sweep runs while this slice works
        return run

    monkeypatch.setattr(automation, "_run_slice", a_slice)
    with schema_context(schema):
        waiting = JobRun.objects.create(bot_id=schedule.bot_id, schedule=schedule, script_name="at-late",
                                        cron=schedule.cron, scheduled_for=planned, started_at=planned,
                                        status=JobRun.Status.WAITING, resume_at=planned)
        automation.job_run_resume(run_id=waiting.pk)
        assert swept == [0] and JobRun.objects.get(pk=waiting.pk).status == JobRun.Status.RUNNING


@outside_test_transaction
def test_the_tick_records_each_run_queued_and_one_no_worker_takes_ends_skipped(canary_tenants):
    # The tenant's runs in flight are counted from these rows: a queued run that never ends would hold the
    # tenant's room for ever (its message lost in a broker restart), one taken past the cut-off must not run.
    from django.conf import settings
    from django.utils import timezone

    from apps.automation.services import JOB_QUEUED_GRACE, RUN_NEVER_TAKEN_NOTE, job_runs_lost_sweep

    schema = canary_tenants.b.schema_name
    schedule = schedule_of(schema, deploy(schema, "at-queued", 'SET SCHEDULE "every minute"\nTALK "ran"\n'))
    due, cutoff = schedule.next_run_at, timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S)
    schedules_tick(now=due + timedelta(seconds=1))  # no worker in these tests: its message stays queued
    schedules_tick(now=due + timedelta(minutes=1, seconds=1))
    with schema_context(schema):
        first, second = JobRun.objects.filter(schedule=schedule).order_by("scheduled_for")
        assert [(r.scheduled_for, r.status, r.started_at) for r in (first, second)] == [
            (due, JobRun.Status.QUEUED, None), (due + timedelta(minutes=1), JobRun.Status.QUEUED, None)]
        # A worker takes the first past the cut-off: one skip record in its place, the script does not run.
        record = schedule_run(schedule_id=schedule.pk, scheduled_for=due, queued_at=timezone.now() - cutoff * 2)
        assert (record.scheduled_for, record.status, record.output.startswith("skipped 1 run(s)")) == (
            due, JobRun.Status.SKIPPED_STALE, True)
        assert JobRun.objects.filter(schedule=schedule, scheduled_for=due).count() == 1
        # The second's message is lost: the sweep ends it once past the cut-off, and no longer before.
        assert job_runs_lost_sweep() == 0
        JobRun.objects.filter(pk=second.pk).update(created_at=timezone.now() - cutoff - JOB_QUEUED_GRACE)
        assert job_runs_lost_sweep() == 1
        second.refresh_from_db()
        assert (second.status, second.output, second.skipped_count) == (
            JobRun.Status.SKIPPED_STALE, RUN_NEVER_TAKEN_NOTE, 1)
        assert not JobRun.objects.filter(schedule=schedule, status__in=JobRun.IN_FLIGHT).exists()
        # Its message arriving after all does not run it either.
        assert schedule_run(schedule_id=schedule.pk, scheduled_for=second.scheduled_for) is None
        assert not JobRun.objects.filter(schedule=schedule, output="ran").exists()


@outside_test_transaction
def test_runs_that_hold_no_worker_leave_the_tenants_room_and_a_broker_blip_does_not_stop_the_tick(
        canary_tenants, monkeypatch, settings):
    """Counting every queued or waiting run: a broker blip at the tick left queued rows that could never run
    holding the tenant's room until the sweep, and two polling scripts (DO ... WAIT 60 ... LOOP) suspended at
    their WAITs held back every other schedule of the tenant. And the tick's robust hooks were partials, whose
    failure Django logs by a __qualname__ they lack: the AttributeError escaped the tick."""
    from django.utils import timezone
    from kombu.exceptions import OperationalError

    from apps.automation.tasks import schedule_run_task

    def broker_down(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    settings.AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX = 1
    schema = canary_tenants.b.schema_name
    first = schedule_of(schema, deploy(schema, "at-blip", 'SET SCHEDULE "every minute"\nTALK "x"\n'))
    due = first.next_run_at
    monkeypatch.setattr(schedule_run_task, "apply_async", broker_down)
    report = schedules_tick(now=due + timedelta(seconds=1))  # the broker refuses the run: logged, not raised
    assert (schema, first.pk) in report.fired
    monkeypatch.undo()  # the broker is back (no worker in these tests: the messages stay queued)
    with schema_context(schema):
        lost = JobRun.objects.get(schedule=first)
        assert lost.status == JobRun.Status.QUEUED
        # Its message never reached the broker: once it is past the cut-off it can never run, and holds no room.
        cutoff = timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S)
        JobRun.objects.filter(pk=lost.pk).update(created_at=timezone.now() - cutoff - timedelta(seconds=1))
        # A run suspended at a WAIT still running holds no worker either.
        JobRun.objects.create(bot=lost.bot, schedule=first, script_name="at-blip", cron=lost.cron,
                              scheduled_for=due - timedelta(days=1), status=JobRun.Status.WAITING,
                              resume_at=timezone.now() + timedelta(minutes=30))
    later = schedules_tick(now=due + timedelta(minutes=1, seconds=1))
    assert (schema, first.pk) in later.fired and not later.held_back
    with schema_context(schema):  # a waiting run whose WAIT is over is on the queue again: it counts
        JobRun.objects.filter(schedule=first, status=JobRun.Status.WAITING).update(resume_at=timezone.now())
        JobRun.objects.filter(schedule=first, status=JobRun.Status.QUEUED).update(status=JobRun.Status.OK)
    held = schedules_tick(now=due + timedelta(minutes=2, seconds=1))
    assert (schema, first.pk) not in held.fired and held.held_back == {schema: 1}
