"""Automation tasks: beat's tick and lost-run sweep (platform-wide, queue `dispatch`: never behind a backlog of
jobs) and the tenant jobs the tick queues (queue `jobs`)."""

from datetime import datetime

from apps.automation.services import job_run_resume, job_runs_lost_sweep, schedule_run, schedules_tick
from apps.tenants.celery import PlatformTask, each_ready_tenant
from gbplatform.celery import app


def _when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


@app.task(name="automation.tick", base=PlatformTask)
def schedules_tick_task() -> dict:
    """Beat, every AUTOMATION_TICK_INTERVAL_S: claim due schedules of every tenant and queue their jobs."""
    report = schedules_tick()
    return {"claimed": report.claimed, "queued_runs": report.queued_runs, "stale": report.stale,
            "broken": report.broken}


@app.task(name="automation.run_schedule", when_not_ready="skip")
def schedule_run_task(schedule_id: int, scheduled_for: str | None = None, next_run_at: str | None = None,
                      skipped_from: str | None = None, skipped_count: int = 0, queued_at: str | None = None) -> str:
    """One due time of a schedule, in its tenant (idempotent: a due time runs once)."""
    run = schedule_run(schedule_id=schedule_id, scheduled_for=_when(scheduled_for), next_run_at=_when(next_run_at),
                       skipped_from=_when(skipped_from), skipped_count=skipped_count, queued_at=_when(queued_at))
    return run.status if run is not None else "none"


@app.task(name="automation.resume_run")
def job_run_resume_task(run_id: int, slices: int | None = None) -> str:
    """A job that WAITed, resumed when its WAIT is over (idempotent: only a run waiting at that WAIT resumes)."""
    run = job_run_resume(run_id=run_id, slices=slices)
    return run.status if run is not None else "none"


@app.task(name="automation.sweep_lost_runs", base=PlatformTask)
def job_runs_lost_sweep_task() -> int:
    """Beat: in every ready tenant, record the runs whose worker died mid-run as errors."""
    return each_ready_tenant(job_runs_lost_sweep, what="automation.sweep_lost_runs")
