"""The platform's default provider (settings OIDC_*), shared by every tenant without a provider of its own: a
tenant is bound to its organisation there (Tenant.oidc_organization_id), only that organisation's users sign
in, only with the roles it granted, and a tenant bound to no organisation admits nobody. Real code flows at
the real provider of the sign-in tests (tests/support/oidc_provider.mjs)."""

from __future__ import annotations

import html
import io
import logging

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ConsoleProfile
from apps.accounts.oidc import ORGANIZATION_UNBOUND_REASON
from apps.accounts.roles import Role
from apps.compliance.models import AuditEvent
from apps.tenants.models import Tenant
from tests.accounts.conftest import (
    ORG_ACME,
    ORG_OTHER,
    authorization_params,
    sign_in,
    sign_in_start,
    tenant_organization_bind,
)
from tests.support.oidc import ProviderBrowser

pytestmark = pytest.mark.django_db
RESOURCE_OWNER_SCOPE = "urn:zitadel:iam:user:resourceowner"


def _profiles(schema: str) -> dict[str, str]:
    """{OIDC subject: console role} of the tenant's OIDC users."""
    with schema_context(schema):
        return dict(ConsoleProfile.objects.exclude(oidc_subject="").values_list("oidc_subject", "role"))


def _body(response) -> str:
    return html.unescape(response.content.decode())


def _failures(schema: str) -> list[str]:
    with schema_context(schema):
        return [str(event.summary) for event in AuditEvent.objects.filter(action="auth.login_failed")]


def test_a_user_of_the_bound_organisation_signs_in_with_its_roles(canary_tenants, platform_provider):
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=a.host)
    start = sign_in_start(client)
    assert start.startswith(platform_provider.issuer + "/auth?")
    # The organisation claim is only released for this scope: it must be asked for. The organisation scope
    # makes Zitadel keep the login inside that organisation (the provider stops other organisations' users).
    scopes = authorization_params(start)["scope"].split()
    assert RESOURCE_OWNER_SCOPE in scopes and f"urn:zitadel:iam:org:id:{ORG_ACME}" in scopes
    response = client.get(ProviderBrowser(platform_provider).authorize(start, sub="alice-admin"))
    assert response.status_code == 302, _body(response)[-600:]
    assert client.get("/console/").status_code == 200
    assert _profiles(a.schema_name) == {"alice-admin": Role.ADMIN}


def test_an_admin_of_another_organisation_is_refused(canary_tenants, platform_provider):
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=a.host)
    response = sign_in(client, ProviderBrowser(platform_provider), "otto-otherorg")
    assert response.status_code == 403
    assert "belongs to another organisation" in _body(response)
    assert client.get("/console/").status_code == 302
    assert _profiles(a.schema_name) == {}
    with schema_context(a.schema_name):
        assert get_user_model().objects.filter(username__startswith="oidc-").count() == 0
    # The same account is admitted where the tenant is bound to its organisation.
    tenant_organization_bind(a.schema_name, ORG_OTHER)
    client = Client(HTTP_HOST=a.host)
    assert sign_in(client, ProviderBrowser(platform_provider), "otto-otherorg").status_code == 302
    assert client.get("/console/").status_code == 200


def test_roles_granted_by_another_organisation_grant_nothing(canary_tenants, platform_provider):
    """carl belongs to A's organisation, is a viewer there, and holds an admin role the other organisation
    granted him: on A he is a viewer."""
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=a.host)
    assert sign_in(client, ProviderBrowser(platform_provider), "carl-crossgrant").status_code == 302
    assert _profiles(a.schema_name) == {"carl-crossgrant": Role.VIEWER}
    # With only the other organisation's grant left, he has no console role on A at all.
    platform_provider.account_set("carl-crossgrant", {
        "email": "carl@acme.test", "email_verified": True, "urn:zitadel:iam:user:resourceowner:id": ORG_ACME,
        "urn:zitadel:iam:org:project:roles": {"admin": {ORG_OTHER: "org-other.zitadel.test"}}})
    client = Client(HTTP_HOST=a.host)
    response = sign_in(client, ProviderBrowser(platform_provider), "carl-crossgrant")
    assert response.status_code == 403 and "no console role" in _body(response)
    assert _profiles(a.schema_name) == {"carl-crossgrant": ""}


def test_a_tenant_bound_to_no_organisation_admits_nobody(canary_tenants, platform_provider, caplog):
    a = canary_tenants.a
    client = Client(HTTP_HOST=a.host)
    with caplog.at_level(logging.ERROR, logger="apps.accounts.views"):
        response = client.get("/accounts/oidc/authenticate/", {"next": "/console/"})
    # Refused here, before anyone is sent to the provider, with what to do for the user and the operator.
    assert response.status_code == 403 and ORGANIZATION_UNBOUND_REASON in _body(response)
    assert any(ORGANIZATION_UNBOUND_REASON in summary for summary in _failures(a.schema_name))
    [record] = [r for r in caplog.records if r.name == "apps.accounts.views"]
    assert a.schema_name in record.getMessage() and "Tenant.oidc_organization_id" in record.getMessage()
    # The login page says so at once, with no button that could only fail.
    page = _body(client.get("/accounts/login/"))
    assert ORGANIZATION_UNBOUND_REASON in page and "/accounts/oidc/authenticate/" not in page
    # Local passwords stay off: the platform's provider still applies to the tenant.
    login = client.post("/accounts/login/", {"username": "admin", "password": a.admin_password})
    assert login.status_code == 403
    assert client.get("/console/").status_code == 302
    assert _profiles(a.schema_name) == {}


def test_a_sign_in_completed_after_the_tenant_was_unbound_is_refused_at_the_callback(canary_tenants,
                                                                                      platform_provider):
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=a.host)
    back = ProviderBrowser(platform_provider).authorize(sign_in_start(client), sub="alice-admin")
    tenant_organization_bind(a.schema_name, "")
    response = client.get(back)
    assert response.status_code == 403 and ORGANIZATION_UNBOUND_REASON in _body(response)
    assert client.get("/console/").status_code == 302
    assert _profiles(a.schema_name) == {}


def test_unbinding_a_tenant_ends_its_console_sessions(canary_tenants, platform_provider):
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=a.host)
    assert sign_in(client, ProviderBrowser(platform_provider), "alice-admin").status_code == 302
    assert client.get("/console/").status_code == 200
    tenant_organization_bind(a.schema_name, "")
    assert client.get("/console/").status_code == 302


def test_support_staff_bind_an_unbound_tenant_in_the_admin_and_its_users_sign_in(canary_tenants, platform_provider,
                                                                                 settings):
    """The operator's fix for a tenant refused as unbound: the field on the tenant's admin page."""
    a = canary_tenants.a
    with schema_context("public"):
        get_user_model().objects.create_superuser("support-staff", password="x-9f2c-long-password")
        tenant = Tenant.objects.get(schema_name=a.schema_name)
        domains = list(tenant.domains.all())
    staff = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    assert staff.post("/admin/login/?next=/admin/", {"username": "support-staff",
                                                     "password": "x-9f2c-long-password"}).status_code == 302
    form = {"name": tenant.name, "ready": "on", "oidc_organization_id": f" {ORG_ACME} ", "llm_daily_tokens": "",
            "domains-TOTAL_FORMS": str(len(domains)), "domains-INITIAL_FORMS": str(len(domains)),
            "domains-MIN_NUM_FORMS": "0", "domains-MAX_NUM_FORMS": "1000"}
    for index, domain in enumerate(domains):
        form.update({f"domains-{index}-id": str(domain.pk), f"domains-{index}-tenant": str(tenant.pk),
                     f"domains-{index}-domain": domain.domain, f"domains-{index}-is_primary": "on"})
    response = staff.post(f"/admin/tenants/tenant/{tenant.pk}/change/", form)
    assert response.status_code == 302, _body(response)[-2000:]
    with schema_context("public"):
        assert Tenant.objects.get(pk=tenant.pk).oidc_organization_id == ORG_ACME
    with schema_context(a.schema_name):
        [event] = AuditEvent.objects.filter(action="tenant.oidc_organization_set")
        assert event.actor == "support:support-staff" and ORG_ACME in str(event.summary)
    client = Client(HTTP_HOST=a.host)
    assert sign_in(client, ProviderBrowser(platform_provider), "alice-admin").status_code == 302
    assert client.get("/console/").status_code == 200


def test_the_organisation_is_set_at_provisioning(canary_tenants, platform_provider):
    call_command("tenant_create", "Tenant C", "tenant-c.test.localhost", "--oidc-organization", " org-c ",
                 stdout=io.StringIO())
    with schema_context("public"):
        assert Tenant.objects.get(schema_name="tenant_c").oidc_organization_id == "org-c"


def test_an_organisation_id_that_is_not_a_plain_token_never_reaches_the_scope_list(canary_tenants, platform_provider):
    a = canary_tenants.a
    tenant_organization_bind(a.schema_name, "acme openid offline_access")
    scopes = authorization_params(sign_in_start(Client(HTTP_HOST=a.host)))["scope"].split()
    assert RESOURCE_OWNER_SCOPE in scopes
    assert "offline_access" not in scopes and not any(s.startswith("urn:zitadel:iam:org:id:") for s in scopes)
