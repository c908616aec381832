"""Admin pages: audit log search and CSV export (itself audited), API keys shown once and revoked, users'
roles (local users only), and that editors and viewers reach none of it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, ConsoleProfile
from apps.accounts.roles import Role
from apps.accounts.selectors import user_console_role
from apps.accounts.services import ApiKeyRejected, api_key_authenticate
from apps.compliance.models import AuditEvent
from apps.compliance.services import audit_record
from tests.console.conftest import user_with_role

pytestmark = pytest.mark.django_db


def test_audit_log_search_filters_and_paginates(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        for i in range(55):
            audit_record(action="bot.deploy", actor="deployer", object_type="bot", object_id=f"bot-{i:02}")
        audit_record(action="auth.login_failed", actor="mallory", summary={"reason": "bad password"})
    client = console_client(Role.ADMIN)
    failed = client.get("/console/compliance/?action=auth.").content.decode()
    assert "mallory" in failed and "deployer" not in failed
    deploys = client.get("/console/compliance/?action=bot.deploy").content.decode()
    assert "bot-54" in deploys and "bot-00" not in deploys and "Page 1 of 2" in deploys
    bad = client.get("/console/compliance/?since=yesterday")
    assert bad.status_code == 400 and "is not a date" in bad.content.decode()


def test_audit_export_streams_csv_and_is_itself_audited(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        audit_record(action="bot.deploy", actor="=HYPERLINK(1)", object_type="bot", object_id="shop")
    response = console_client(Role.ADMIN, username="auditor").get("/console/compliance/export.csv?action=bot.")
    body = b"".join(response.streaming_content).decode()
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert body.splitlines()[0].startswith("id,at,actor") and "'=HYPERLINK(1)" in body
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="compliance.audit_export", actor="auditor").count() == 1


def test_api_key_is_shown_once_works_and_is_revoked(console_client, canary_tenants):
    client = console_client(Role.ADMIN)
    created = client.post("/console/api-keys/create/", {"name": "ci", "scopes": ["kb:search"], "days": "30",
                                                        "confirmed": "yes"})
    html = created.content.decode()
    assert created.status_code == 200 and created["Cache-Control"] == "no-store"
    secret = html.split('id="api-key-once">', 1)[1].split("<", 1)[0]
    assert secret.startswith("gbk_")
    with schema_context(canary_tenants.a.schema_name):
        assert api_key_authenticate(secret).scopes == ["kb:search"]
    assert secret not in client.get("/console/api-keys/").content.decode()  # never shown again
    with schema_context(canary_tenants.a.schema_name):
        prefix = ApiKey.objects.get(name="ci").prefix
    assert client.post(f"/console/api-keys/{prefix}/revoke/", {"confirmed": "yes"}).status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(ApiKeyRejected, match="revoked"):
            api_key_authenticate(secret)
        assert set(AuditEvent.objects.filter(object_id=prefix).values_list("action", flat=True)) == {
            "apikey.created", "apikey.revoked"}


def test_api_key_errors_are_specific_and_create_nothing(console_client, canary_tenants):
    client = console_client(Role.ADMIN)
    no_scope = client.post("/console/api-keys/create/", {"name": "ci", "confirmed": "yes"})
    assert no_scope.status_code == 400 and "give at least one scope" in no_scope.content.decode()
    bad_days = client.post("/console/api-keys/create/", {"name": "ci", "scopes": ["kb:search"], "days": "-3",
                                                         "confirmed": "yes"})
    assert bad_days.status_code == 400 and "number of days" in bad_days.content.decode()
    for days in ("²", "9" * 5000):  # str.isdigit() takes both; int() refused them with a 500
        odd = client.post("/console/api-keys/create/", {"name": "ci", "scopes": ["kb:search"], "days": days,
                                                        "confirmed": "yes"})
        assert odd.status_code == 400 and "number of days" in odd.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert not ApiKey.objects.exists()


def test_another_tenants_key_cannot_be_revoked_here(console_client, canary_tenants):
    from apps.accounts.services import api_key_create

    with schema_context(canary_tenants.b.schema_name):
        key = api_key_create(name="b-key", scopes=["kb:search"],
                             created_by=get_user_model().objects.get(username="admin")).key
    assert console_client(Role.ADMIN).post(f"/console/api-keys/{key.prefix}/revoke/",
                                           {"confirmed": "yes"}).status_code == 404
    with schema_context(canary_tenants.b.schema_name):
        assert ApiKey.objects.get(pk=key.pk).revoked_at is None


def test_local_users_roles_are_set_by_admins(console_client, canary_tenants):
    target = user_with_role(canary_tenants.a, "newcomer", None)
    client = console_client(Role.ADMIN)
    assert "newcomer" in client.get("/console/users/").content.decode()
    assert client.post(f"/console/users/{target.pk}/role/", {"role": "editor", "confirmed": "yes"}).status_code == 302
    with schema_context(canary_tenants.a.schema_name):
        assert user_console_role(get_user_model().objects.get(pk=target.pk)) == Role.EDITOR
        event = AuditEvent.objects.get(action="accounts.role_set", object_id="newcomer")
    assert '"after": "editor"' in event.summary


def test_oidc_users_and_superusers_keep_their_roles(console_client, canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        oidc_user = get_user_model().objects.create_user(username="oidc-abc")
        ConsoleProfile.objects.create(user=oidc_user, role="viewer", oidc_issuer="https://id.example",
                                      oidc_subject="abc")
        admin = get_user_model().objects.get(username="admin")
    client = console_client(Role.ADMIN)
    answer = client.post(f"/console/users/{oidc_user.pk}/role/", {"role": "admin", "confirmed": "yes"}, follow=True)
    assert "change the role there" in answer.content.decode()
    answer = client.post(f"/console/users/{admin.pk}/role/", {"role": "viewer", "confirmed": "yes"}, follow=True)
    assert "cannot be lowered here" in answer.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert ConsoleProfile.objects.get(user=oidc_user).role == "viewer"
        assert user_console_role(get_user_model().objects.get(pk=admin.pk)) == Role.ADMIN


@pytest.mark.parametrize("role", [Role.VIEWER, Role.EDITOR])
def test_non_admins_reach_no_admin_action(console_client, canary_tenants, role):
    target = user_with_role(canary_tenants.a, "target", None)
    client = console_client(role)
    assert client.post("/console/api-keys/create/", {"name": "x", "scopes": ["kb:search"],
                                                     "confirmed": "yes"}).status_code == 403
    assert client.post(f"/console/users/{target.pk}/role/", {"role": "admin", "confirmed": "yes"}).status_code == 403
    assert client.get("/console/compliance/export.csv").status_code == 403
    with schema_context(canary_tenants.a.schema_name):
        assert not ApiKey.objects.exists() and not ConsoleProfile.objects.filter(user_id=target.pk).exists()


def test_another_tenants_user_is_not_found(console_client, canary_tenants):
    other = user_with_role(canary_tenants.b, "b-only-user", None)
    with schema_context(canary_tenants.a.schema_name):
        assert not get_user_model().objects.filter(pk=other.pk).exists()
    assert console_client(Role.ADMIN).post(f"/console/users/{other.pk}/role/",
                                           {"role": "admin", "confirmed": "yes"}).status_code == 404
