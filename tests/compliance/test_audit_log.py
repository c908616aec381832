"""The audit log: sign-in events and deploys are recorded per tenant, the database refuses to change them,
and the CSV export neutralises formulas."""

import csv
import io
import zipfile

import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client, RequestFactory
from django_tenants.utils import schema_context

from apps.compliance.models import AuditEvent, AuditLogImmutable
from apps.compliance.selectors import audit_event_export_csv, audit_event_search
from apps.compliance.services import AuditLogUnavailable, audit_record, request_client_ip

pytestmark = pytest.mark.django_db

START = b'TALK "hello"\n'


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _events(schema: str, action: str) -> list[AuditEvent]:
    with schema_context(schema):
        return list(audit_event_search(action=action))


def _login(tenant, password: str | None = None) -> tuple[Client, int]:
    client = Client(HTTP_HOST=tenant.host, HTTP_X_REQUEST_ID="audit-test-request-0001")
    response = client.post("/accounts/login/", {"username": "admin", "password": password or tenant.admin_password})
    return client, response.status_code


def _package() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("shop.gbai/shop.gbdialog/start.bas", START)
    return buffer.getvalue()


def test_login_is_recorded_with_actor_ip_and_request_id(canary_tenants):
    tenant = canary_tenants.a
    _client, status = _login(tenant)
    assert status == 302
    [event] = _events(tenant.schema_name, "auth.login")
    assert event.actor == "admin" and event.actor_id is not None
    assert event.ip == "127.0.0.1"
    assert event.request_id == "audit-test-request-0001"


def test_failed_login_is_recorded_with_the_typed_username_and_no_password(canary_tenants):
    tenant = canary_tenants.a
    _client, status = _login(tenant, password="wrong-password-xyz")
    assert status == 200
    [event] = _events(tenant.schema_name, "auth.login_failed")
    assert event.actor == "admin" and event.actor_id is None
    assert "wrong-password-xyz" not in f"{event.summary}{event.object_id}{event.actor}"
    assert _events(tenant.schema_name, "auth.login") == []


def test_logout_is_recorded(canary_tenants):
    tenant = canary_tenants.a
    client, _status = _login(tenant)
    # With `next`: without it (and without LOGOUT_REDIRECT_URL) LogoutView renders the admin's
    # logged_out.html, which cannot reverse "admin:" on a tenant host (a 500 outside this app).
    assert client.post("/accounts/logout/?next=/").status_code == 302
    [event] = _events(tenant.schema_name, "auth.logout")
    assert event.actor == "admin"


def test_deploy_through_the_api_is_recorded_with_counts(canary_tenants):
    tenant = canary_tenants.a
    client, _status = _login(tenant)
    response = client.post("/api/bots/deploy", {"package": io.BytesIO(_package())}, format="multipart")
    assert response.status_code == 200
    [event] = _events(tenant.schema_name, "bot.deploy")
    assert (event.actor, event.object_type, event.object_id) == ("admin", "bot", "shop")
    assert event.summary == '{"errors": 0, "files_removed": 0, "files_written": 1}'


def test_events_are_per_tenant(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        audit_record(action="secret.read", object_type="secret", object_id=canary_tenants.a.canary)
    with schema_context(canary_tenants.b.schema_name):
        assert not AuditEvent.objects.filter(object_id=canary_tenants.a.canary).exists()
        assert AuditEvent.objects.count() == 0
    assert [e.object_id for e in _events(canary_tenants.a.schema_name, "secret.read")] == [canary_tenants.a.canary]


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE compliance_auditevent SET actor = 'mallory'",
        "DELETE FROM compliance_auditevent",
        "DELETE FROM compliance_auditevent WHERE false",
        "TRUNCATE compliance_auditevent",
    ],
    ids=["update", "delete", "delete-no-rows", "truncate"],
)
def test_the_database_refuses_to_change_or_remove_events(canary_tenants, statement):
    with schema_context(canary_tenants.a.schema_name):
        event = audit_record(action="dsr.export", summary="before")
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
        event_again = AuditEvent.objects.get(pk=event.pk)
        assert (event_again.actor, event_again.summary) == ("system", "before")


def test_the_orm_refuses_to_change_or_remove_events(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        event = audit_record(action="dsr.export")
        event.summary = "changed"
        with pytest.raises(AuditLogImmutable):
            event.save()
        with pytest.raises(AuditLogImmutable):
            event.delete()
        with pytest.raises(AuditLogImmutable):
            AuditEvent.objects.all().update(summary="x")
        with pytest.raises(AuditLogImmutable):
            AuditEvent.objects.all().delete()


def test_the_trigger_exists_in_every_tenant_and_the_template(canary_tenants):
    from django.conf import settings

    schemas = [canary_tenants.a.schema_name, canary_tenants.b.schema_name, settings.TENANT_BASE_SCHEMA]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relnamespace::regnamespace::text, count(*) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relname = 'compliance_auditevent' AND NOT t.tgisinternal "
            "AND c.relnamespace::regnamespace::text = ANY(%s) GROUP BY 1",
            [schemas],
        )
        assert dict(cursor.fetchall()) == dict.fromkeys(schemas, 2)


def test_public_schema_has_no_audit_log_and_says_so(canary_tenants):
    with schema_context("public"), pytest.raises(AuditLogUnavailable):
        audit_record(action="bot.deploy")


def test_csv_export_has_every_column_and_neutralises_formulas(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        audit_record(action="auth.login_failed", actor="=HYPERLINK(\"http://evil\")", summary="+1\nforged line")
        text = audit_event_export_csv(audit_event_search(action="auth."))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0][:5] == ["id", "at", "actor", "actor_id", "action"]
    [row] = rows[1:]
    assert row[2] == "'=HYPERLINK(\"http://evil\")"
    assert row[7] == "'+1 forged line"


def test_client_ip_ignores_forwarded_for_unless_the_peer_is_a_trusted_proxy(settings):
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.5", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.9")
    settings.TRUSTED_PROXY_IPS = []
    assert request_client_ip(request) == "10.0.0.5"
    settings.TRUSTED_PROXY_IPS = ["10.0.0.5"]
    assert request_client_ip(request) == "203.0.113.9"


def test_an_action_that_is_not_a_dotted_name_is_refused(canary_tenants):
    with schema_context(canary_tenants.a.schema_name), pytest.raises(ValueError, match="dotted"):
        audit_record(action="Deploy Bot")


class _RollBack(Exception):
    pass


def _trigger_names(schema: str) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relname = 'compliance_auditevent' AND c.relnamespace = %s::regnamespace AND NOT t.tgisinternal",
            [schema],
        )
        return {row[0] for row in cursor.fetchall()}


def _function_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regprocedure('public.audit_event_immutable()') IS NOT NULL")
        return cursor.fetchone()[0]


def test_the_migration_reverses_and_keeps_the_function_other_tenants_use(canary_tenants):
    from django.db.migrations.executor import MigrationExecutor

    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        assert _trigger_names(schema) == {"audit_event_no_update_delete", "audit_event_no_truncate"}
        with pytest.raises(_RollBack), transaction.atomic():
            MigrationExecutor(connection).migrate([("compliance", None)])
            assert "compliance_auditevent" not in connection.introspection.table_names()
            # Tenant B's (and the template's) triggers still use it.
            assert _function_exists()
            MigrationExecutor(connection).migrate([("compliance", "0001_initial")])
            assert _trigger_names(schema) == {"audit_event_no_update_delete", "audit_event_no_truncate"}
            raise _RollBack
        assert _trigger_names(schema) == {"audit_event_no_update_delete", "audit_event_no_truncate"}


def test_public_admin_sign_in_works_without_an_audit_table(canary_tenants):
    from django.conf import settings
    from django.contrib.auth import get_user_model

    with schema_context("public"):
        get_user_model().objects.create_superuser(username="support", email="", password="support-pass-1")
    client = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    failed = client.post("/admin/login/", {"username": "support", "password": "wrong"})
    assert failed.status_code == 200
    signed_in = client.post("/admin/login/?next=/admin/", {"username": "support", "password": "support-pass-1"})
    assert signed_in.status_code == 302 and signed_in["Location"] == "/admin/"


def test_an_anonymous_request_is_recorded_as_anonymous_and_no_request_as_system(canary_tenants):
    from django.contrib.auth.models import AnonymousUser

    request = RequestFactory().post("/", REMOTE_ADDR="192.0.2.7")
    request.user = AnonymousUser()
    with schema_context(canary_tenants.a.schema_name):
        anonymous = audit_record(action="dsr.request", request=request)
        platform = audit_record(action="dsr.export")
    assert (anonymous.actor, anonymous.actor_id, anonymous.ip) == ("anonymous", None, "192.0.2.7")
    assert (platform.actor, platform.ip) == ("system", None)
