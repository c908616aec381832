"""HTTP tenant resolution: each host sees only its own rows; nothing else reaches a tenant or public."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def _get(host: str, path: str = "/api/bots", **headers):
    return Client(HTTP_HOST=host, **headers).get(path)


def test_each_host_sees_only_its_own_rows(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    body_a = _get(a.host).content.decode()
    body_b = _get(b.host).content.decode()
    assert a.canary in body_a and b.canary not in body_a
    assert b.canary in body_b and a.canary not in body_b


@pytest.mark.parametrize(
    "host", ["unknown.test.localhost", "test.localhost", "a.tenant-a.test.localhost", "testserver", "127.0.0.1"]
)
def test_unknown_host_gets_404_without_any_content(canary_tenants, host):
    response = _get(host)
    assert response.status_code == 404
    assert response.json() == {"error": "not found"}


def test_uppercase_host_and_trailing_dot_and_port_reach_only_the_same_tenant(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    for host in (a.host.upper(), a.host + ".", a.host + ":8000", a.host.upper() + ".:8000"):
        body = _get(host).content.decode()
        assert a.canary in body, host
        assert b.canary not in body, host


def test_forwarded_host_header_cannot_switch_tenant(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    body = _get(a.host, HTTP_X_FORWARDED_HOST=b.host).content.decode()
    assert a.canary in body and b.canary not in body
    response = _get("unknown.test.localhost", HTTP_X_FORWARDED_HOST=a.host)
    assert response.status_code == 404


@pytest.mark.parametrize(
    "host",
    [
        "tenant-a.test.localhost@tenant-b.test.localhost",
        "tenant-b.test.localhost/tenant-a.test.localhost",
        "tenant-a.test.localhost tenant-b.test.localhost",
        "tenant-a.test.localhost%00",
        "tenant-a.test.localhost..",
    ],
)
def test_malformed_hosts_are_404(canary_tenants, host):
    response = _get(host)
    assert response.status_code == 404
    assert canary_tenants.a.canary not in response.content.decode()
    assert canary_tenants.b.canary not in response.content.decode()


def test_public_host_serves_the_admin_and_no_tenant_routes(canary_tenants, settings):
    public = settings.PLATFORM_PUBLIC_DOMAIN
    assert _get(public, "/api/bots").status_code == 404
    assert _get(public, "/admin/login/").status_code == 200


def test_tenant_host_does_not_serve_the_django_admin(canary_tenants):
    assert _get(canary_tenants.a.host, "/admin/login/").status_code == 404


def test_tenant_that_is_not_ready_serves_nothing(canary_tenants):
    from django_tenants.utils import schema_context

    from apps.tenants.models import Tenant

    with schema_context("public"):
        Tenant.objects.filter(schema_name=canary_tenants.a.schema_name).update(ready=False)
    response = _get(canary_tenants.a.host)
    assert response.status_code == 503
    assert canary_tenants.a.canary not in response.content.decode()
    assert response["Retry-After"]


def test_console_session_of_one_tenant_is_not_valid_on_another(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    client = Client(HTTP_HOST=a.host)
    login = client.post("/accounts/login/", {"username": "admin", "password": a.admin_password})
    assert login.status_code == 302
    assert client.get("/console/").status_code == 200
    # Replay tenant A's session cookie against tenant B: B's schema holds no such session.
    stolen = Client(HTTP_HOST=b.host)
    stolen.cookies = client.cookies
    response = stolen.get("/console/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_support_staff_manage_tenants_in_the_public_admin(canary_tenants, settings):
    from django.contrib.auth import get_user_model
    from django_tenants.utils import schema_context

    with schema_context("public"):
        get_user_model().objects.create_superuser(username="support", email="", password="support-pass-1")
    client = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    assert (
        client.post("/admin/login/?next=/admin/", {"username": "support", "password": "support-pass-1"}).status_code
        == 302
    )
    listing = client.get("/admin/tenants/tenant/").content.decode()
    assert canary_tenants.a.schema_name in listing and canary_tenants.b.schema_name in listing
    assert client.get("/admin/auth/user/").status_code == 200
    # A tenant's own admin user is a row of that tenant, unknown to the platform admin.
    denied = Client(HTTP_HOST=settings.PLATFORM_PUBLIC_DOMAIN)
    assert (
        denied.post("/admin/login/", {"username": "admin", "password": canary_tenants.a.admin_password}).status_code
        == 200
    )


def test_signing_out_of_the_console_ends_the_session(canary_tenants):
    a = canary_tenants.a
    client = Client(HTTP_HOST=a.host)
    client.post("/accounts/login/", {"username": "admin", "password": a.admin_password})
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/console/").status_code == 302
