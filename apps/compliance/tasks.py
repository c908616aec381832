"""Compliance jobs: data-subject requests (tenant tasks; beat queues again those whose job was lost) and the
daily retention purge (beat dispatches one purge per ready tenant). Thin: each task calls one service."""

from __future__ import annotations

from apps.compliance.gdpr import subject_request_execute, subject_requests_requeue_stale
from apps.compliance.retention import retention_purge
from apps.tenants.celery import PlatformTask, each_ready_tenant
from gbplatform.celery import app


@app.task(name="compliance.subject_request_run")
def subject_request_run_task(request_id: str, requeued: bool = False) -> dict:
    """Carry out one export or erasure request of the tenant (idempotent: a done request is left alone; a copy
    queued again by the sweep leaves alone one that is no longer pending)."""
    row = subject_request_execute(request_id=request_id, requeued=requeued)
    return {"status": row.status, "report": row.report}


@app.task(name="compliance.requeue_stale", base=PlatformTask)
def subject_requests_requeue_stale_task() -> int:
    """Beat: in every ready tenant, queue again the data-subject requests whose job was lost."""
    return each_ready_tenant(subject_requests_requeue_stale, what="compliance.requeue_stale")


@app.task(name="compliance.retention_purge", when_not_ready="skip")
def retention_purge_task() -> dict:
    """Delete the tenant's data past its retention policies."""
    return retention_purge()


@app.task(name="compliance.dispatch_retention", base=PlatformTask)
def retention_dispatch_task() -> int:
    """Daily (beat): queue one retention purge per ready tenant."""
    def queue() -> bool:
        retention_purge_task.delay()
        return True

    return each_ready_tenant(queue, what="compliance.dispatch_retention")
