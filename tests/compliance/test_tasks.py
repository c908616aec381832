"""The data-subject job end to end: a request recorded (committed) in a tenant is carried out by a real
Celery worker consuming the real Redis broker, in that tenant's schema, and its archive lands in that
tenant's drive. A tenant of its own is created for it (and dropped after), because audit events it writes
are append-only and would otherwise stay in a shared canary tenant for the rest of the run."""

from __future__ import annotations

import io
import json
import time
import uuid
import zipfile

import pytest
from django_tenants.utils import schema_context

from tests.security.probes import _in_own_connection
from tests.tenants.test_celery_isolation import worker  # noqa: F401 - the shared in-thread worker

pytestmark = pytest.mark.django_db
# The worker picks a job up within a second; the export itself takes milliseconds.
WAIT_S = 30
SCHEMA = "gdpr_e2e"


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _setup() -> str:
    from apps.bots.models import Bot
    from apps.compliance.gdpr import subject_request_create
    from apps.sessions.models import ChatSession, ChatUser, Message, Role
    from apps.tenants.services import tenant_create

    tenant, _ = tenant_create(name="GDPR e2e", domain="gdpr-e2e.test.localhost", schema_name=SCHEMA)
    with schema_context(tenant.schema_name):
        bot = Bot.objects.create(name="helpdesk")
        user = ChatUser.objects.create(username="ana", email="ana@example.com", is_anonymous=False)
        session = ChatSession.objects.create(user=user, bot=bot)
        Message.objects.create(session=session, index=0, role=Role.USER, content="E2E-CANARY hello")
        return str(subject_request_create(kind="export", subject="ana@example.com", requested_by="dpo").pk)


def _status(request_id: str) -> tuple[str, dict]:
    from apps.compliance.models import DataSubjectRequest

    with schema_context(SCHEMA):
        row = DataSubjectRequest.objects.get(pk=request_id)
        return row.status, row.report


def _archive(request_id: str) -> bytes:
    from apps.compliance.gdpr import subject_export_read

    with schema_context(SCHEMA):
        return subject_export_read(request_id=request_id)


def _drop() -> None:
    from apps.tenants.services import tenant_delete

    tenant_delete(schema_name=SCHEMA)


def test_a_recorded_request_is_carried_out_by_the_worker_in_its_tenant(canary_tenants, worker):  # noqa: F811
    from apps.drive.storage import tenant_drive

    try:
        request_id = _in_own_connection(_setup)
        deadline = time.monotonic() + WAIT_S
        status, report = _in_own_connection(_status, request_id)
        while status in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            status, report = _in_own_connection(_status, request_id)
        assert status == "done", report
        archive = zipfile.ZipFile(io.BytesIO(_in_own_connection(_archive, request_id)))
        assert json.loads(archive.read("manifest.json"))["tenant"] == SCHEMA
        assert "E2E-CANARY hello" in archive.read("messages.json").decode()
        assert not tenant_drive(canary_tenants.a.schema_name).exists(report["archive"])
    finally:
        _in_own_connection(_drop)


LOST_SCHEMA = "gdpr_lost"


def _lost_setup() -> dict[str, str]:
    """Three requests as they stand when the sweep looks: one filed while the broker was down (its job never
    queued), one filed a moment ago (its job may be waiting its turn), one done."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.compliance import tasks
    from apps.compliance.gdpr import DSR_REQUEUE_AFTER, subject_request_create
    from apps.compliance.models import DataSubjectRequest
    from apps.tenants.services import tenant_create

    tenant, _ = tenant_create(name="GDPR lost", domain="gdpr-lost.test.localhost", schema_name=LOST_SCHEMA)
    long_ago = timezone.now() - DSR_REQUEUE_AFTER - timedelta(minutes=1)
    with schema_context(tenant.schema_name):
        real_delay = tasks.subject_request_run_task.delay

        def broker_down(*args, **kwargs):
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

        tasks.subject_request_run_task.delay = broker_down
        try:  # filing still succeeds: the request is recorded and shown pending
            lost = subject_request_create(kind="export", subject="ana@example.com", requested_by="dpo")
        finally:
            tasks.subject_request_run_task.delay = real_delay
        DataSubjectRequest.objects.filter(pk=lost.pk).update(queued_at=long_ago, requested_at=long_ago)
        waiting = DataSubjectRequest.objects.create(
            id=uuid.uuid4(), kind="export", subject_kind="email", subject="bia@example.com",
            subject_digest="0" * 64, requested_by="dpo")
        done = DataSubjectRequest.objects.create(
            id=uuid.uuid4(), kind="export", subject_kind="email", subject="", subject_digest="1" * 64,
            requested_by="dpo", status="done", queued_at=long_ago, requested_at=long_ago)
        return {"lost": str(lost.pk), "waiting": str(waiting.pk), "done": str(done.pk)}


def _lost_status(request_id: str) -> tuple[str, dict]:
    from apps.compliance.models import DataSubjectRequest

    with schema_context(LOST_SCHEMA):
        row = DataSubjectRequest.objects.get(pk=request_id)
        return row.status, row.report


def test_a_request_whose_job_was_lost_is_queued_again_by_beat_and_carried_out(canary_tenants, worker):  # noqa: F811
    """A request filed while the broker was down (or whose job a restarted Redis lost) stayed pending for ever,
    and filing it failed after it was recorded; a request has a legal deadline."""
    from django.conf import settings

    from apps.compliance.tasks import subject_requests_requeue_stale_task
    from apps.tenants.services import tenant_delete

    def _sweep() -> int:
        return subject_requests_requeue_stale_task.apply().get()

    assert settings.CELERY_BEAT_SCHEDULE["compliance-requeue-stale"]["task"] == "compliance.requeue_stale"
    try:
        ids = _in_own_connection(_lost_setup)
        assert _in_own_connection(_lost_status, ids["lost"])[0] == "pending"
        assert _in_own_connection(_sweep) == 1
        deadline = time.monotonic() + WAIT_S
        status, report = _in_own_connection(_lost_status, ids["lost"])
        while status in ("pending", "running") and time.monotonic() < deadline:
            time.sleep(0.2)
            status, report = _in_own_connection(_lost_status, ids["lost"])
        assert status == "done", report
        assert report["counts"]
        # Queued recently (its job may be waiting its turn) or done: left alone, now and at the next sweep.
        assert _in_own_connection(_sweep) == 0
        assert _in_own_connection(_lost_status, ids["waiting"])[0] == "pending"
        assert _in_own_connection(_lost_status, ids["done"]) == ("done", {})
    finally:
        _in_own_connection(lambda: tenant_delete(schema_name=LOST_SCHEMA))
