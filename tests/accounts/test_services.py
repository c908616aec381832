"""API keys: shown once and stored hashed, scoped, revocable, expiring, and bound to their tenant; OIDC
configuration; signing OIDC users in by (issuer, sub) only."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.accounts.models import ApiKey, ConsoleProfile, OidcConfig
from apps.accounts.roles import Role
from apps.accounts.services import (
    ApiKeyRejected,
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
    oidc_config_save,
    oidc_user_sign_in,
)
from apps.compliance.models import AuditEvent

pytestmark = pytest.mark.django_db
ISSUER = "https://id.acme.test"


@pytest.fixture(autouse=True)
def _test_urls(settings):
    settings.ROOT_URLCONF = "tests.accounts.urls"


def _admin():
    """The tenant's admin (a superuser) in the current schema: every key acts for a user of its tenant."""
    return get_user_model().objects.get(username="admin")


def _key(tenant, scopes: list[str], **kwargs) -> str:
    with schema_context(tenant.schema_name):
        return api_key_create(name="script", scopes=scopes, created_by=_admin(), **kwargs).secret


def _bots(host: str, secret: str):
    return Client(HTTP_HOST=host).get("/test/viewer", HTTP_AUTHORIZATION=f"Bearer {secret}")


def test_a_key_is_shown_once_and_only_its_hash_is_stored(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        created = api_key_create(name="deploy script", scopes=["kb:search", "bots:deploy"], created_by=_admin())
        row = ApiKey.objects.get(pk=created.key.pk)
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM accounts_api_key WHERE id = %s", [row.pk])
            stored = " ".join(map(str, cursor.fetchone()))
    assert created.secret.startswith(f"gbk_{row.prefix}_") and len(created.secret) == 60
    assert created.secret.split("_", 2)[2] not in stored
    assert row.secret_hash != created.secret and len(row.secret_hash) == 64
    assert row.scopes == ["bots:deploy", "kb:search"]


def test_a_key_with_the_scope_reads_its_own_tenant_only(canary_tenants):
    secret = _key(canary_tenants.a, ["kb:search"])
    response = _bots(canary_tenants.a.host, secret)
    assert response.status_code == 200
    assert canary_tenants.a.canary in response.content.decode()
    assert canary_tenants.b.canary not in response.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert ApiKey.objects.get().last_used_at is not None


def test_a_key_of_tenant_a_fails_on_tenant_b(canary_tenants):
    secret = _key(canary_tenants.a, ["kb:search"])
    response = _bots(canary_tenants.b.host, secret)
    body = response.content.decode()
    assert response.status_code == 401 and response.json() == {"error": "unknown API key for this tenant"}
    assert canary_tenants.a.canary not in body and canary_tenants.b.canary not in body
    with schema_context(canary_tenants.b.schema_name):
        assert not ApiKey.objects.exists()
        [denied] = AuditEvent.objects.filter(action="apikey.denied")
        assert "unknown API key" in denied.summary


def test_junk_keys_are_limited_like_wrong_passwords_and_stop_adding_audit_rows(canary_tenants, settings):
    settings.RATE_LIMIT_API_AUTH, settings.RATE_LIMIT_BURST = 3, 0
    statuses = [_bots(canary_tenants.a.host, f"gbk_junk{n}").status_code for n in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="apikey.denied").count() == 3


def test_a_key_without_the_endpoints_scope_is_refused(canary_tenants):
    secret = _key(canary_tenants.a, ["bots:deploy"])
    response = _bots(canary_tenants.a.host, secret)
    assert response.status_code == 403 and response.json() == {"error": "this API key lacks the scope 'kb:search'"}
    assert canary_tenants.a.canary not in response.content.decode()


def test_a_revoked_key_stops_working_and_the_revocation_is_audited(canary_tenants):
    secret = _key(canary_tenants.a, ["kb:search"])
    assert _bots(canary_tenants.a.host, secret).status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        api_key_revoke(prefix=secret.split("_")[1], revoked_by="ops")
        actions = list(AuditEvent.objects.filter(action__startswith="apikey.").order_by("id")
                       .values_list("action", "actor"))
    response = _bots(canary_tenants.a.host, secret)
    assert response.status_code == 401 and response.json() == {"error": "this API key has been revoked"}
    assert actions == [("apikey.created", "admin"), ("apikey.revoked", "ops")]


def test_an_expired_key_stops_working(canary_tenants):
    secret = _key(canary_tenants.a, ["kb:search"], expires_at=timezone.now() + dt.timedelta(days=1))
    assert _bots(canary_tenants.a.host, secret).status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        ApiKey.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    response = _bots(canary_tenants.a.host, secret)
    assert response.status_code == 401 and response.json() == {"error": "this API key has expired"}


@pytest.mark.parametrize("mangle", [lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), lambda s: s + "x",
                                    lambda s: s.replace("gbk_", "gbx_"), lambda s: ""])
def test_a_tampered_key_is_refused(canary_tenants, mangle):
    secret = _key(canary_tenants.a, ["kb:search"])
    with schema_context(canary_tenants.a.schema_name), pytest.raises(ApiKeyRejected):
        api_key_authenticate(mangle(secret))


def test_key_creation_validates_its_input(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(ValueError, match="unknown scope"):
            api_key_create(name="x", scopes=["kb:search", "admin:everything"], created_by=_admin())
        with pytest.raises(ValueError, match="at least one scope"):
            api_key_create(name="x", scopes=[], created_by=_admin())
        with pytest.raises(ValueError, match="1 to 100 characters"):
            api_key_create(name=" ", scopes=["kb:search"], created_by=_admin())
        with pytest.raises(ValueError, match="in the past"):
            api_key_create(name="x", scopes=["kb:search"], expires_at=timezone.now() - dt.timedelta(days=1),
                           created_by=_admin())
        assert not ApiKey.objects.exists()


def test_the_command_prints_a_working_key(canary_tenants, capsys):
    call_command("api_key_create", "--tenant", canary_tenants.a.schema_name, "--user", "admin", "--name", "ci",
                 "--scope", "kb:search", "--expires-in-days", "30")
    out, err = capsys.readouterr()
    secret = out.strip()
    assert "not shown again" in err and secret not in err
    assert _bots(canary_tenants.a.host, secret).status_code == 200
    with pytest.raises(CommandError, match="no ready tenant"):
        call_command("api_key_create", "--tenant", "nope", "--user", "admin", "--name", "ci", "--scope", "kb:search")


def test_oidc_config_refuses_plain_secrets_plain_http_and_bad_role_maps(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(ValidationError, match="Vault reference"):
            oidc_config_save(issuer=ISSUER, client_id="c", client_secret="hunter2")
        with pytest.raises(ValidationError, match="must use https"):
            oidc_config_save(issuer="http://id.acme.test", client_id="c")
        with pytest.raises(ValidationError, match="maps to 'owner'"):
            oidc_config_save(issuer=ISSUER, client_id="c", role_map={"boss": "owner"})
        with pytest.raises(ValidationError, match="must include 'openid'"):
            oidc_config_save(issuer=ISSUER, client_id="c", scopes="email")
        # Anywhere else under the tenant's path, bot configuration (written by editors) could name it.
        with pytest.raises(ValidationError, match=f"under gbo/tenants/{canary_tenants.a.schema_name}/admin/"):
            oidc_config_save(issuer=ISSUER, client_id="c",
                             client_secret=f"vault:gbo/tenants/{canary_tenants.a.schema_name}/oidc#s")
        with pytest.raises(ValidationError, match="admin/"):
            oidc_config_save(issuer=ISSUER, client_id="c",
                             client_secret=f"vault:gbo/tenants/{canary_tenants.a.schema_name}/administrators#s")
        assert not OidcConfig.objects.exists()


def test_saving_a_provider_replaces_the_enabled_one(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        oidc_config_save(issuer=ISSUER, client_id="first")
        oidc_config_save(issuer=ISSUER, client_id="second",
                         client_secret=f"vault:gbo/tenants/{canary_tenants.a.schema_name}/admin/oidc#s")
        assert list(OidcConfig.objects.filter(enabled=True).values_list("client_id", flat=True)) == ["second"]
        assert AuditEvent.objects.filter(action="accounts.oidc_configured").count() == 2


def test_oidc_users_are_matched_by_subject_never_by_email(canary_tenants):
    claims = {"sub": "s-1", "email": "shared@acme.test"}
    with schema_context(canary_tenants.a.schema_name):
        first = oidc_user_sign_in(issuer=ISSUER, claims=claims, email="shared@acme.test", role=Role.ADMIN)
        other = oidc_user_sign_in(issuer=ISSUER, claims={**claims, "sub": "s-2"}, email="shared@acme.test",
                                  role=Role.VIEWER)
        other_issuer = oidc_user_sign_in(issuer="https://other.test", claims=claims, email="shared@acme.test",
                                         role=Role.VIEWER)
        again = oidc_user_sign_in(issuer=ISSUER, claims={**claims, "email": "new@acme.test"},
                                  email="new@acme.test", role=Role.EDITOR)
        assert len({first.pk, other.pk, other_issuer.pk}) == 3
        assert again.pk == first.pk and again.email == "new@acme.test"
        assert ConsoleProfile.objects.get(user=first).role == Role.EDITOR


def test_losing_every_role_clears_an_existing_users_role(canary_tenants):
    claims = {"sub": "s-1"}
    with schema_context(canary_tenants.a.schema_name):
        user = oidc_user_sign_in(issuer=ISSUER, claims=claims, email="", role=Role.ADMIN)
        assert oidc_user_sign_in(issuer=ISSUER, claims=claims, email="", role=None) is None
        assert ConsoleProfile.objects.get(user=user).role == ""
