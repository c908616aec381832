"""The SET SCHEDULE runner (spec 3.8): the beat tick that finds due schedules, and the job that runs one.

Failure modes this module prevents:

* Double runs. The tick claims due rows of the public index (tenants.ScheduleIndex) with
  `SELECT ... FOR UPDATE SKIP LOCKED` and moves their `next_run_at` past `now` in the same transaction,
  before anything is queued: a second tick (or a second beat) either skips the locked rows or, once the
  first commits, no longer sees them as due. The job then takes its JobRun row (`queued`, written by the tick;
  unique per (schedule, due time)) to `running` before the script starts: a redelivered task finds it taken and
  does nothing.
* A burst after downtime. A run due longer ago than the late cut-off (AUTOMATION_LATE_CUTOFF_S) is skipped
  and recorded as one `skipped_stale` run (with how many due times it covers); only the latest due time,
  when it is within the cut-off, runs. So after 10 minutes of downtime an every-minute schedule runs once
  (for the current minute), not ten times, and a daily 9:00 report is not sent at 14:00.
* One tenant crowding out the others. Each tick claims at most RUNS_PER_TENANT_PER_TICK due schedules of a
  tenant; its other due rows stay due, untouched, for the next tick, so another tenant's run due now is
  claimed (and queued) in the same tick as the first share of a tenant with thousands. And a tenant has at most
  AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX runs queued, running or waiting at once (counted from its JobRun rows:
  the tick writes each run `queued` as it queues it): past that its due schedules wait, still due, so one
  tenant's slow scripts cannot fill the queue every tenant's runs wait in (and then be dropped past the cut-off).
* Runs in the wrong tenant. The index row names its tenant; the job is a tenant task queued in that
  tenant's schema, and it reads the schedule, bot and script in that schema only.
* Jobs queued for a rolled-back tick: tasks are queued on commit only.

WAIT in a job suspends the run (status `waiting`, VM state saved) and a task delayed by the WAIT's seconds
resumes it, so a waiting job holds no worker. HEAR ends the run with an error: nobody can answer it.
"""

from __future__ import annotations

import logging
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from celery.exceptions import SoftTimeLimitExceeded
from croniter import croniter
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Min, Q
from django.utils import timezone
from django_tenants.utils import get_public_schema_name, schema_context

from apps.automation.host import NO_USER_TO_HEAR, JobHost
from apps.automation.models import JobRun
from apps.basic.compiler import Program
from apps.basic.errors import BasicError
from apps.basic.schedule import cron_step
from apps.basic.vm import VM, RunResult
from apps.bots.models import BotSchedule, BotScript
from apps.bots.runtime import ScriptUnavailable, program_for, script_start
from apps.tenants.models import ScheduleIndex, Tenant

logger = logging.getLogger(__name__)

# Due schedules one tick claims for one tenant (its transaction holds their row locks while next times are
# computed). The tick used to claim due rows oldest first over all tenants: a tenant with thousands of due
# schedules filled every batch, and its runs went onto the queue all tenants share ahead of everyone else's.
# A tenant's due rows beyond this stay due, untouched, for the next tick (AUTOMATION_TICK_INTERVAL_S later).
# 20 a tick every 10 s claims a tenant's SCHEDULES_MAX_PER_TENANT (500) schedules all due at 9:00 in 250 s,
# within the late cut-off (300 s).
RUNS_PER_TENANT_PER_TICK = 20
# Due schedules one tick claims in all; beyond, they wait for the next tick (seconds later), so one tick never
# holds a worker for long even with a huge backlog after an outage. Tenants are served oldest due row first.
TICK_MAX_ROWS = 10_000
# Due times counted in a stale-skip record (croniter steps cost ~25 us each, under the tick's row locks):
# after a long outage the record says "at least 100" rather than counting a month of minutes.
STALE_COUNT_LIMIT = 100
# Suspensions (WAITs) of one job: a job that WAITs in a loop forever is stopped with an error.
JOB_MAX_SLICES = 100
# A redelivered job whose run is still `running` after this long lost its worker (killed mid-run): it is
# recorded as an error instead of being run a second time (a job may have sent mail already).
JOB_LOST_AFTER = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
ERROR_MESSAGE_MAX_CHARS = 2000
# A run still `waiting` this long after its WAIT ended lost its resume message (queued on commit, it can fail
# on a broker hiccup, and nothing else ever resumes the run): the lost-run sweep queues it again. Twice the
# sweep's 5-minute period, so a resume that is merely queued behind others is rarely duplicated; a duplicate
# does nothing anyway (only a waiting run resumes).
JOB_RESUME_GRACE = timedelta(minutes=10)
# A run still `queued` this long past the late cut-off will never run: a worker taking it now would find it past
# the cut-off and skip it, or its message is lost (a broker restart). The lost-run sweep records it skipped, so it
# stops counting against the tenant's runs in flight (AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX). The minute past the
# cut-off leaves a worker taking it just within the cut-off to run it.
JOB_QUEUED_GRACE = timedelta(minutes=1)
RUN_NEVER_TAKEN_NOTE = ("queued, but no worker took it within the late cut-off (a queue backlog, workers down, or "
                        "its message lost): not run")


# --- the tick (public schema) --------------------------------------------------------------------------


@dataclass(frozen=True)
class FirePlan:
    """What a tick does with one due schedule."""

    run_at: datetime | None  # the due time that runs now; None when even the latest one is stale
    skipped_from: datetime | None  # the first due time skipped as stale (None: nothing skipped)
    skipped_count: int
    next_run_at: datetime


class CronCache:
    """Parsed crons, reused across the rows of one tick batch (parsing costs more than stepping)."""

    def __init__(self) -> None:
        self._parsed: dict[str, croniter] = {}

    def at(self, cron: str, start: datetime) -> croniter:
        it = self._parsed.get(cron)
        if it is None:
            it = self._parsed[cron] = croniter(cron, start)
        else:
            it.set_current(start, force=True)
        return it


def fire_plan(*, cron: str, tz: zoneinfo.ZoneInfo, due: datetime, now: datetime, late_cutoff: timedelta,
              crons: CronCache | None = None) -> FirePlan:
    """Which due time of `cron` runs at `now` (at most one), which are skipped as stale, and the next one.

    `due` is the index row's next_run_at (<= now). The latest due time <= now runs if it is at most
    `late_cutoff` old; every earlier due time since `due` is skipped. Times are read in the schedule's
    time zone (DST-aware) and returned in UTC.
    """
    crons = crons or CronCache()
    following = cron_step(crons.at(cron, due.astimezone(tz)), cron).astimezone(UTC)
    if following > now:  # the usual case, on time: `due` is the latest due time, `following` the next
        if now - due <= late_cutoff:
            return FirePlan(run_at=due, skipped_from=None, skipped_count=0, next_run_at=following)
        return FirePlan(run_at=None, skipped_from=due, skipped_count=1, next_run_at=following)
    # croniter's get_prev is strictly before its start: start a microsecond after now to include now.
    latest = cron_step(crons.at(cron, (now + timedelta(microseconds=1)).astimezone(tz)), cron, forward=False)
    latest = max(latest.astimezone(UTC), due)
    run_at = latest if now - latest <= late_cutoff else None
    skip_end = run_at  # skipped: due times in [due, run_at), or [due, latest] when nothing runs
    skipped_count = 0
    if run_at is None or due < run_at:
        skipped_count = 1
        it = crons.at(cron, due.astimezone(tz))
        while skipped_count < STALE_COUNT_LIMIT:
            t = cron_step(it, cron).astimezone(UTC)
            if (skip_end is not None and t >= skip_end) or (skip_end is None and t > latest):
                break
            skipped_count += 1
    next_run_at = cron_step(crons.at(cron, now.astimezone(tz)), cron).astimezone(UTC)
    return FirePlan(run_at=run_at, skipped_from=due if skipped_count else None, skipped_count=skipped_count,
                    next_run_at=next_run_at)


@dataclass
class TickReport:
    claimed: int = 0
    queued_runs: int = 0
    stale: int = 0
    fired: list[tuple[str, int]] = field(default_factory=list)  # (schema, schedule id) of the queued runs
    broken: list[str] = field(default_factory=list)
    held_back: dict[str, int] = field(default_factory=dict)  # schema -> due rows left for a later tick


def schedules_tick(*, now: datetime | None = None, late_cutoff: timedelta | None = None) -> TickReport:
    """Claim the due schedules of every ready tenant, at most RUNS_PER_TENANT_PER_TICK of each, move them to
    their next time and queue their jobs.

    Runs in the public schema, one transaction per tenant; jobs are queued when it commits. Tenants are taken
    oldest due row first. `now` and `late_cutoff` default to the clock and AUTOMATION_LATE_CUTOFF_S (tests pass
    their own).
    """
    now = now or timezone.now()
    cutoff = late_cutoff if late_cutoff is not None else timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S)
    report = TickReport()
    with schema_context(get_public_schema_name()):
        due_tenants = list(
            ScheduleIndex.objects.filter(enabled=True, next_run_at__lte=now, tenant__ready=True)
            .values("tenant_id", "tenant__schema_name")
            .annotate(due=Count("id"), oldest=Min("next_run_at"))
            .order_by("oldest", "tenant_id")
        )
        room = TICK_MAX_ROWS
        for due in due_tenants:
            schema_name = due["tenant__schema_name"]
            claimed = 0
            if room > 0:
                claimed = _tick_tenant(tenant_id=due["tenant_id"], schema_name=schema_name, now=now, cutoff=cutoff,
                                       limit=min(RUNS_PER_TENANT_PER_TICK, room), report=report)
                room -= claimed
            if due["due"] > claimed:
                report.held_back[schema_name] = due["due"] - claimed
    if report.held_back:
        logger.info("automation: due schedules left for the next tick", extra={"held_back": report.held_back})
    return report


def job_runs_in_flight(now: datetime) -> Q:
    """The runs that count against the tenant's AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX: those taking or about to take
    a worker. Queued within the late cut-off (an older queued row will never run: its message was lost, or a
    worker would skip it); running; waiting with its WAIT over (its resume is on the queue). A run suspended at a
    WAIT still running holds no worker and no message: counting it let two polling scripts (DO ... WAIT 60 ...
    LOOP) hold back every other schedule of the tenant, and a broker blip at the tick kept the tenant's room full
    until the sweep."""
    cutoff = now - timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S)
    return (Q(status=JobRun.Status.QUEUED, created_at__gte=cutoff) | Q(status=JobRun.Status.RUNNING)
            | Q(status=JobRun.Status.WAITING, resume_at__lte=now))


def _tick_tenant(*, tenant_id: int, schema_name: str, now: datetime, cutoff: timedelta, limit: int,
                 report: TickReport) -> int:
    """Claim at most `limit` of one tenant's due rows (oldest first), fewer when the tenant has runs in flight,
    in one transaction; how many."""
    with transaction.atomic(durable=True):
        # One tick at a time per tenant (a second beat, or a tick still running when the next starts, skips it):
        # two ticks counting the same runs in flight would both fill the room left. NO KEY: deploys inserting
        # the tenant's index rows (a foreign key share lock) do not wait for it, nor it for them.
        locked = (Tenant.objects.select_for_update(skip_locked=True, no_key=True).filter(pk=tenant_id, ready=True)
                  .values_list("pk", flat=True).first())
        if locked is None:
            return 0
        with schema_context(schema_name):
            in_flight = JobRun.objects.filter(job_runs_in_flight(now)).count()
        limit = min(limit, settings.AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX - in_flight)
        if limit <= 0:
            return 0
        rows = list(
            ScheduleIndex.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(tenant_id=tenant_id, tenant__ready=True, enabled=True, next_run_at__lte=now)
            .order_by("next_run_at", "pk")[:limit]
        )
        crons, moved, runs = CronCache(), defaultdict(list), {}
        for row in rows:
            try:
                plan = fire_plan(cron=row.cron, tz=zoneinfo.ZoneInfo(row.timezone), due=row.next_run_at, now=now,
                                 late_cutoff=cutoff, crons=crons)
            except (ValueError, KeyError, zoneinfo.ZoneInfoNotFoundError) as exc:
                # The compiler validated the cron; a row that still cannot be read must not block the tick.
                ScheduleIndex.objects.filter(pk=row.pk).update(enabled=False)
                report.broken.append(f"{schema_name}:{row.schedule_id}")
                logger.error("automation: schedule disabled, its cron cannot be read",
                             extra={"tenant": schema_name, "schedule": row.schedule_id, "error": str(exc)})
                continue
            moved[plan.next_run_at].append(row.pk)
            if plan.skipped_count:
                report.stale += 1
                logger.warning(
                    "automation: stale run skipped", extra={
                        "tenant": schema_name, "schedule": row.schedule_id,
                        "due": plan.skipped_from.isoformat(), "skipped": plan.skipped_count,
                    })
            if plan.run_at is not None:
                report.queued_runs += 1
                report.fired.append((schema_name, row.schedule_id))
                runs[row.schedule_id] = plan.run_at
            # A lambda, not a partial: a robust hook that fails is logged by its __qualname__, which a partial lacks
            # (the AttributeError escaped the tick and dropped the tenant's other hooks and the later tenants).
            transaction.on_commit(lambda s=schema_name, i=row.schedule_id, p=plan: _enqueue_run(s, i, p), robust=True)
        for next_run_at, ids in moved.items():  # most rows share a few next times
            ScheduleIndex.objects.filter(pk__in=ids).update(next_run_at=next_run_at)
        with schema_context(schema_name):
            _runs_queued(runs)
        report.claimed += len(rows)
    return len(rows)


def _runs_queued(runs: dict[int, datetime]) -> None:
    """Record the runs (schedule id -> due time) the tick is queueing as `queued` rows of the current tenant, in the
    tick's transaction: they count as in flight from now until they end. A schedule gone from the tenant (its bot
    deleted) gets no row: its job only drops the index row."""
    schedules = BotSchedule.objects.filter(pk__in=runs).values_list("pk", "bot_id", "script__name", "cron")
    # A due time that has a row already (never expected: the tick moved the index past it) keeps it; a conflict
    # must not roll back the tick's claims, which would then fail the same way at every tick.
    JobRun.objects.bulk_create([
        JobRun(schedule_id=pk, bot_id=bot_id, script_name=script_name, cron=cron, scheduled_for=runs[pk],
               status=JobRun.Status.QUEUED)
        for pk, bot_id, script_name, cron in schedules
    ], ignore_conflicts=True)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _enqueue_run(schema_name: str, schedule_id: int, plan: FirePlan) -> None:
    from apps.automation.tasks import schedule_run_task

    with schema_context(schema_name):
        schedule_run_task.apply_async(kwargs={
            "schedule_id": schedule_id, "scheduled_for": _iso(plan.run_at), "next_run_at": _iso(plan.next_run_at),
            "skipped_from": _iso(plan.skipped_from), "skipped_count": plan.skipped_count,
            "queued_at": _iso(timezone.now()),
        }, queue="jobs")


# --- the job (tenant schema) ----------------------------------------------------------------------------


def schedule_run(*, schedule_id: int, scheduled_for: datetime | None, next_run_at: datetime | None = None,
                 skipped_from: datetime | None = None, skipped_count: int = 0,
                 queued_at: datetime | None = None) -> JobRun | None:
    """Run one due time of a schedule in the current tenant (and record the stale skip the tick decided).
    `queued_at`: when the tick queued it (the tick judged its lateness then; the time in the queue is judged
    here against the same cut-off).

    Returns the run (or the skip record when nothing runs); None when the schedule is gone or this due
    time already has a run (a redelivered task).
    """
    schedule = BotSchedule.objects.select_related("bot", "script").filter(pk=schedule_id).first()
    if schedule is None:
        _index_row_drop(schedule_id)
        if scheduled_for is not None:  # the run the tick recorded for it (its schedule link cleared) never runs
            JobRun.objects.filter(schedule__isnull=True, scheduled_for=scheduled_for,
                                  status=JobRun.Status.QUEUED).delete()
        return None
    if next_run_at is not None:  # the console shows the tenant's row; the tick moved the index row
        BotSchedule.objects.filter(pk=schedule_id, next_run_at__lt=next_run_at).update(next_run_at=next_run_at)
    now = timezone.now()
    late = now - scheduled_for if scheduled_for is not None else None
    # Measured from when the tick queued it: one the tick claimed 298 s late is not dropped 2 s later.
    waited = now - (queued_at or scheduled_for) if scheduled_for is not None else None
    this_due = JobRun.objects.filter(schedule=schedule, scheduled_for=scheduled_for)
    if waited is not None and waited > timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S) and not (
            this_due.exclude(status=JobRun.Status.QUEUED).exists()):
        # The tick queued it on time, but it waited in the queue (a backlog, or workers down for hours: the
        # message stays queued under acks_late) past the cut-off: the 9:00 report is not sent at 14:00.
        # (A due time that has a run already goes on to _run_claim, which finds a run lost with its worker.)
        if skipped_from is None:
            skipped_from, skipped_count = scheduled_for, 0
        skipped_count, scheduled_for = min(skipped_count + 1, STALE_COUNT_LIMIT), None
    else:
        late = None
    record = None
    if skipped_from is not None:
        with transaction.atomic():
            if late is not None:  # the tick's `queued` row gives way to the one record of what was skipped
                this_due.filter(status=JobRun.Status.QUEUED).delete()
            record = _stale_record(schedule, skipped_from, skipped_count, run_at=scheduled_for, picked_up_late=late)
    if scheduled_for is None:
        return record
    run = _run_claim(schedule, scheduled_for)
    if run is None:
        return None
    return _run_slice(run, script=schedule.script, state=None)


def _index_row_drop(schedule_id: int) -> None:
    """The schedule no longer exists in this tenant (its bot was deleted): stop the tick from finding it."""
    deleted, _ = ScheduleIndex.objects.filter(tenant__schema_name=connection.schema_name,
                                              schedule_id=schedule_id).delete()
    logger.info("automation: schedule gone, index row dropped", extra={"schedule": schedule_id, "rows": deleted})


def _stale_record(schedule: BotSchedule, skipped_from: datetime, count: int, *, run_at: datetime | None,
                  picked_up_late: timedelta | None = None) -> JobRun:
    note = (f"skipped {'at least ' if count >= STALE_COUNT_LIMIT else ''}{count} run(s) due from "
            f"{skipped_from:%Y-%m-%d %H:%M} UTC: more than {settings.AUTOMATION_LATE_CUTOFF_S} s late")
    note += f"; the run due {run_at:%Y-%m-%d %H:%M} UTC runs instead" if run_at is not None else ""
    if picked_up_late is not None:
        note += (f"; queued on time, a worker picked it up {int(picked_up_late.total_seconds())} s after it was due "
                 f"(a queue backlog or workers down)")
    record, _ = JobRun.objects.get_or_create(
        schedule=schedule, scheduled_for=skipped_from,
        defaults={"bot": schedule.bot, "script_name": schedule.script.name, "cron": schedule.cron,
                  "status": JobRun.Status.SKIPPED_STALE, "skipped_count": count, "output": note,
                  "finished_at": timezone.now()},
    )
    return record


def _run_claim(schedule: BotSchedule, scheduled_for: datetime) -> JobRun | None:
    """The run row, `running` (and committed) before the script starts: the tick's `queued` row taken, or created
    (a job queued without one); None if this due time has a run already (a redelivered task)."""
    now = timezone.now()
    this_due = JobRun.objects.filter(schedule=schedule, scheduled_for=scheduled_for)
    if this_due.filter(status=JobRun.Status.QUEUED).update(status=JobRun.Status.RUNNING, started_at=now):
        return this_due.get()
    try:
        with transaction.atomic():
            return JobRun.objects.create(
                bot=schedule.bot, schedule=schedule, script_name=schedule.script.name, cron=schedule.cron,
                scheduled_for=scheduled_for, started_at=now, status=JobRun.Status.RUNNING,
            )
    except IntegrityError:
        pass
    if _lost(JobRun.objects.filter(schedule=schedule, scheduled_for=scheduled_for), now).update(
            status=JobRun.Status.ERROR, finished_at=now, error_message=RUN_LOST_MESSAGE):
        logger.warning("automation: run lost with its worker", extra={"schedule": schedule.pk})
    return None


RUN_LOST_MESSAGE = "the worker running this job stopped before it finished; not run again"


def _lost(runs, now: datetime):
    """The runs among `runs` still `running` longer than any slice can (JOB_LOST_AFTER) since they started or
    last resumed from a WAIT: their worker died mid-slice."""
    from django.db.models import Q

    cutoff = now - JOB_LOST_AFTER
    return runs.filter(status=JobRun.Status.RUNNING, started_at__lt=cutoff).filter(
        Q(resume_at__isnull=True) | Q(resume_at__lt=cutoff))


def job_runs_lost_sweep(*, now: datetime | None = None) -> int:
    """Record as errors the current tenant's runs lost with their worker, record as skipped its runs no worker
    took (JOB_QUEUED_GRACE past the cut-off), and queue again the resume of waiting runs whose resume message was
    lost (JOB_RESUME_GRACE past their WAIT); how many of all three. A killed worker's task is redelivered at once,
    before JOB_LOST_AFTER has passed, so the redelivery alone never marked it: the run showed `running` for ever;
    a waiting run whose message never reached the broker waited for ever; a queued one whose message was lost
    would count as in flight for ever."""
    now = now or timezone.now()
    lost = _lost(JobRun.objects.all(), now).update(status=JobRun.Status.ERROR, finished_at=now,
                                                    error_message=RUN_LOST_MESSAGE)
    if lost:
        logger.warning("automation: %d run(s) lost with their worker", lost)
    never_taken = JobRun.objects.filter(
        status=JobRun.Status.QUEUED,
        created_at__lt=now - timedelta(seconds=settings.AUTOMATION_LATE_CUTOFF_S) - JOB_QUEUED_GRACE,
    ).update(status=JobRun.Status.SKIPPED_STALE, skipped_count=1, finished_at=now, output=RUN_NEVER_TAKEN_NOTE)
    if never_taken:
        logger.warning("automation: %d queued run(s) no worker took within the cut-off; skipped", never_taken)
    with transaction.atomic():
        stuck = list(JobRun.objects.select_for_update(skip_locked=True)
                     .filter(status=JobRun.Status.WAITING, resume_at__lt=now - JOB_RESUME_GRACE)
                     .values_list("pk", "slices"))
        # Due again from now: the next sweep queues it once more only if this message is lost too.
        JobRun.objects.filter(pk__in=[run_id for run_id, _slices in stuck]).update(resume_at=now)
        for run_id, slices in stuck:
            transaction.on_commit(lambda r=run_id, n=slices: _enqueue_resume(r, 0, n), robust=True)
    if stuck:
        logger.warning("automation: %d waiting run(s) had lost their resume; queued again", len(stuck))
    return lost + never_taken + len(stuck)


def job_run_resume(*, run_id: int, slices: int | None = None) -> JobRun | None:
    """Continue a run suspended at a WAIT; None when it is not waiting (a redelivered or late task). `slices`:
    the run's slice count when that WAIT was saved (None: messages queued before it was sent): a resume meant for
    an earlier WAIT (the sweep's second message after the first one did arrive) must not cut a later WAIT short."""
    waiting = JobRun.objects.filter(pk=run_id, status=JobRun.Status.WAITING)
    if slices is not None:
        waiting = waiting.filter(slices=slices)
    # resume_at becomes when this slice started: the lost-run sweep counts a slice's time from it.
    if not waiting.update(status=JobRun.Status.RUNNING, resume_at=timezone.now()):
        return None
    run = JobRun.objects.select_related("bot").get(pk=run_id)
    script = BotScript.objects.filter(bot=run.bot, name=run.script_name).first()
    if script is None:
        return _finish(run, JobHost(run.bot, run_id=run.pk, output=run.output), None,
                       f"script '{run.script_name}' was removed while the job waited")
    return _run_slice(run, script=script, state=run.state)


def _run_slice(run: JobRun, *, script: BotScript, state: dict | None) -> JobRun:
    host = JobHost(run.bot, run_id=run.pk, output=run.output)
    program = None
    try:
        program = program_for(script)
        if state is None:
            result = script_start(bot=run.bot, name=script.name, host=host)
        else:
            result = VM(program, host).resume(state)
    except ScriptUnavailable as exc:
        return _finish(run, host, None, str(exc))
    except BasicError as exc:  # a saved state the (changed) script can no longer resume
        return _finish(run, host, None, f"cannot resume after WAIT: {exc}")
    except SoftTimeLimitExceeded:
        return _finish(run, host, None, "the job ran longer than the worker's time limit")
    except Exception as exc:  # noqa: BLE001 - the run must end recorded, whatever broke
        logger.exception("automation: job crashed", extra={"run": run.pk})
        return _finish(run, host, None, f"internal error: {type(exc).__name__}")
    return _finish(run, host, result, None, program=program)


def _finish(run: JobRun, host: JobHost, result: RunResult | None, failure: str | None, *,
            program: Program | None = None) -> JobRun:
    now = timezone.now()
    run.output, run.slices = host.output, run.slices + 1
    run.state, run.resume_at = None, None
    if result is None:
        run.status, run.error_line, run.error_message = JobRun.Status.ERROR, None, failure or ""
    elif result.status == "done":
        run.status = JobRun.Status.OK
    elif result.status == "error":
        error = result.error or {}
        run.status, run.error_line = JobRun.Status.ERROR, error.get("line") or None
        run.error_message = str(error.get("message") or "error")
    elif result.waiting_for == "hear":
        run.status, run.error_message = JobRun.Status.ERROR, f"HEAR: {NO_USER_TO_HEAR}"
        run.error_line = _waiting_line(program, result.state)
    elif run.slices >= JOB_MAX_SLICES:
        run.status, run.error_line = JobRun.Status.ERROR, _waiting_line(program, result.state)
        run.error_message = f"WAIT: a job may suspend at most {JOB_MAX_SLICES} times"
    else:
        run.status, run.state = JobRun.Status.WAITING, result.state
        run.resume_at = now + timedelta(seconds=result.wait_seconds)
    run.error_message = run.error_message[:ERROR_MESSAGE_MAX_CHARS]
    if run.status != JobRun.Status.WAITING:
        run.finished_at = now
    with transaction.atomic():
        run.save()
        if run.status == JobRun.Status.WAITING:
            # Robust: the run is saved waiting; a resume the broker did not take is queued again by the sweep.
            transaction.on_commit(lambda r=run.pk, s=result.wait_seconds, n=run.slices: _enqueue_resume(r, s, n),
                                  robust=True)
    if run.status == JobRun.Status.ERROR:
        logger.info("automation: job failed", extra={"run": run.pk, "line": run.error_line})
    return run


def _waiting_line(program: Program | None, state: dict | None) -> int | None:
    """The source line of the HEAR/WAIT a suspended state stopped at."""
    try:
        frame, waiting = state["frames"][-1], state["waiting"]
        lines = program.units[frame["unit"]].lines
        # A HEAR keeps its own position; a WAIT's frame already points past it.
        pc = waiting["pc"] if waiting.get("type") == "hear" else frame["pc"] - 1
        return lines[pc] if 0 <= pc < len(lines) else None
    except (AttributeError, KeyError, IndexError, TypeError):
        return None


def _enqueue_resume(run_id: int, seconds: float, slices: int) -> None:
    from apps.automation.tasks import job_run_resume_task

    job_run_resume_task.apply_async(args=[run_id], kwargs={"slices": slices}, countdown=max(0.0, seconds),
                                    queue="jobs")
