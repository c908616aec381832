"""Which backend signs whom in: the public host's Django admin takes passwords of the platform's staff only;
a tenant's OIDC users stay signed in only while the tenant uses the provider they came from."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import OidcConfig
from tests.accounts.conftest import sign_in

pytestmark = pytest.mark.django_db
PASSWORD = "a-public-password-5c4b3a"  # noqa: S105


def _public_user(username: str, *, staff: bool) -> None:
    with schema_context("public"):
        get_user_model().objects.create_user(username=username, password=PASSWORD, is_staff=staff)


def _admin_login(settings, username: str, password: str):
    client = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    response = client.post("/admin/login/?next=/admin/", {"username": username, "password": password})
    return client, response


def test_public_admin_admits_staff_users(canary_tenants, settings):
    _public_user("support", staff=True)
    client, response = _admin_login(settings, "support", PASSWORD)
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200


def test_public_admin_refuses_non_staff_users(canary_tenants, settings):
    _public_user("customer", staff=False)
    client, response = _admin_login(settings, "customer", PASSWORD)
    assert response.status_code == 200 and "staff account" in response.content.decode()
    assert client.get("/admin/").status_code == 302


def test_a_tenant_admin_cannot_sign_in_to_the_public_admin(canary_tenants, settings):
    client, response = _admin_login(settings, "admin", canary_tenants.a.admin_password)
    assert response.status_code == 200
    assert client.get("/admin/").status_code == 302


def test_the_public_host_has_no_oidc_sign_in(canary_tenants, settings):
    assert Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN).get("/accounts/oidc/authenticate/").status_code == 404


def test_changing_the_tenants_provider_ends_its_oidc_sessions(oidc_tenant, browser):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    assert client.get("/console/").status_code == 200
    with schema_context(oidc_tenant.schema_name):
        OidcConfig.objects.update(issuer="https://another-provider.test")
    assert client.get("/console/").status_code == 302


def test_the_platform_default_provider_applies_to_tenants_without_their_own(db, canary_tenants, platform_provider,
                                                                          browser):
    from tests.accounts.conftest import ORG_ACME, tenant_organization_bind

    tenant_organization_bind(canary_tenants.a.schema_name, ORG_ACME)
    client = Client(HTTP_HOST=canary_tenants.a.host)
    assert 'name="password"' not in client.get("/accounts/login/").content.decode()
    assert sign_in(client, browser, "eddie-editor").status_code == 302
    assert client.get("/console/").status_code == 200
