"""Data-subject requests from the console: recorded after confirmation (audited by apps.compliance), bad
identifiers refused with the reason, finished exports downloaded (each download audited), admins only,
another tenant's requests unreachable."""

from __future__ import annotations

import uuid

import pytest
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.compliance.gdpr import subject_request_create, subject_request_execute
from apps.compliance.models import AuditEvent, DataSubjectRequest

pytestmark = pytest.mark.django_db


def test_request_is_recorded_after_confirmation(console_client, canary_tenants):
    client = console_client(Role.ADMIN, username="dpo")
    asked = client.post("/console/compliance/requests/create/", {"kind": "erasure", "subject": "ana@example.com"})
    assert asked.status_code == 200 and "cannot be undone" in asked.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert not DataSubjectRequest.objects.exists()
    done = client.post("/console/compliance/requests/create/", {"kind": "erasure", "subject": "Ana@Example.com",
                                                                 "confirmed": "yes"})
    assert done.status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        row = DataSubjectRequest.objects.get()
        assert (row.kind, row.subject, row.requested_by) == ("erasure", "ana@example.com", "dpo")
        assert AuditEvent.objects.filter(action="dsr.requested", object_id=str(row.pk)).exists()
    assert "ana@example.com" in client.get("/console/compliance/requests/").content.decode()


def test_a_bad_identifier_is_refused_and_kept_in_the_form(console_client, canary_tenants):
    answer = console_client(Role.ADMIN).post("/console/compliance/requests/create/",
                                             {"kind": "export", "subject": "not a person", "confirmed": "yes"})
    html = answer.content.decode()
    assert answer.status_code == 400 and "neither a chat user id" in html and 'value="not a person"' in html
    with schema_context(canary_tenants.a.schema_name):
        assert not DataSubjectRequest.objects.exists()


def test_a_finished_export_downloads_and_the_download_is_audited(console_client, canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        row = subject_request_create(kind="export", subject="rui@example.com", requested_by="dpo")
        subject_request_execute(request_id=str(row.pk))  # what the job does
    client = console_client(Role.ADMIN)
    assert "Download archive" in client.get("/console/compliance/requests/").content.decode()
    download = client.get(f"/console/compliance/requests/{row.pk}/export.zip")
    assert download.status_code == 200 and download.content[:2] == b"PK"
    assert download["Cache-Control"] == "no-store"
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="dsr.download", object_id=str(row.pk)).count() == 1


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_only_admins_reach_data_subject_requests(console_client, canary_tenants, role):
    client = console_client(role)
    assert client.get("/console/compliance/requests/").status_code == 403
    assert client.post("/console/compliance/requests/create/", {"kind": "export", "subject": "a@b.example",
                                                                 "confirmed": "yes"}).status_code == 403
    assert client.get(f"/console/compliance/requests/{uuid.uuid4()}/export.zip").status_code == 403
    with schema_context(canary_tenants.a.schema_name):
        assert not DataSubjectRequest.objects.exists()


def test_another_tenants_export_is_not_found(console_client, canary_tenants, local_storage):
    with schema_context(canary_tenants.b.schema_name):
        row = subject_request_create(kind="export", subject="b@example.com", requested_by="dpo-b")
        subject_request_execute(request_id=str(row.pk))
    client = console_client(Role.ADMIN)
    assert client.get(f"/console/compliance/requests/{row.pk}/export.zip").status_code == 404
    assert "b@example.com" not in client.get("/console/compliance/requests/").content.decode()


def test_retention_is_set_after_confirmation_and_cleared_with_an_empty_value(console_client, canary_tenants):
    from apps.compliance.models import RetentionPolicy

    client = console_client(Role.ADMIN)
    asked = client.post("/console/compliance/retention/set/", {"data_class": "messages", "days": "90"})
    assert asked.status_code == 200 and "older than 90 days" in asked.content.decode()
    assert client.post("/console/compliance/retention/set/", {"data_class": "messages", "days": "90",
                                                               "confirmed": "yes"}).status_code == 302
    assert "90 days" in client.get("/console/compliance/retention/").content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert RetentionPolicy.objects.get(data_class="messages").days == 90
        [event] = AuditEvent.objects.filter(action="retention.policy_set", object_id="messages")
        assert event.ip == "127.0.0.1"  # who changed a policy that deletes data daily, and from where
    bad = client.post("/console/compliance/retention/set/", {"data_class": "messages", "days": "0",
                                                              "confirmed": "yes"})
    assert bad.status_code == 400 and "whole number from 1" in bad.content.decode()
    odd = client.post("/console/compliance/retention/set/", {"data_class": "messages", "days": "³",
                                                              "confirmed": "yes"})
    assert odd.status_code == 400 and "whole number from 1" in odd.content.decode()
    client.post("/console/compliance/retention/set/", {"data_class": "messages", "days": "", "confirmed": "yes"})
    with schema_context(canary_tenants.a.schema_name):
        assert not RetentionPolicy.objects.exists()
    assert console_client(Role.EDITOR).post("/console/compliance/retention/set/", {
        "data_class": "logs", "days": "1", "confirmed": "yes"}).status_code == 403


def test_an_erasure_lists_the_drive_files_still_naming_the_person(console_client, canary_tenants, local_storage):
    from apps.bots.models import Bot
    from apps.drive.storage import tenant_drive

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=1)
        key = f"{bot.name}.gbai/{bot.name}.gbdata/customers.csv"
        tenant_drive().write(key, b"email\nana@example.com\n")
        row = subject_request_create(kind="erasure", subject="ana@example.com", requested_by="dpo")
        subject_request_execute(request_id=str(row.pk))
    page = console_client(Role.ADMIN).get("/console/compliance/requests/").content.decode()
    assert "still name the person" in page and key in page
