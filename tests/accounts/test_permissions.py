"""Roles declared by views: HTML pages redirect to sign-in or show a 403 page, JSON endpoints answer 401/403
JSON; session requests must pass CSRF, API-key requests must carry the endpoint's scope."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ConsoleProfile
from apps.accounts.roles import Role
from apps.accounts.services import api_key_create
from apps.compliance.models import AuditEvent
from tests.accounts.conftest import oidc_configure, sign_in

pytestmark = pytest.mark.django_db
PASSWORD = "a-test-password-9f8e7d"  # noqa: S105


@pytest.fixture(autouse=True)
def _test_urls(settings):
    settings.ROOT_URLCONF = "tests.accounts.urls"


def _local_user(tenant, username: str, role: Role | None) -> None:
    with schema_context(tenant.schema_name):
        user = get_user_model().objects.create_user(username=username, password=PASSWORD)
        if role is not None:
            ConsoleProfile.objects.create(user=user, role=role.value)


def _signed_in(tenant, username: str, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(HTTP_HOST=tenant.host)
    password = tenant.admin_password if username == "admin" else PASSWORD
    assert client.post("/accounts/login/", {"username": username, "password": password}).status_code == 302
    client.handler.enforce_csrf_checks = enforce_csrf_checks  # from here on, as a browser is checked
    return client


@pytest.mark.parametrize(
    ("username", "role", "console", "editor", "admin"),
    [
        ("admin", None, 200, 200, 200),  # the tenant's superuser from tenant_create is an admin
        ("ed", Role.EDITOR, 200, 200, 403),
        ("vi", Role.VIEWER, 200, 403, 403),
        ("nobody", None, 403, 403, 403),
    ],
)
def test_local_users_reach_what_their_role_allows(canary_tenants, username, role, console, editor, admin):
    if username != "admin":
        _local_user(canary_tenants.a, username, role)
    client = _signed_in(canary_tenants.a, username)
    assert client.get("/console/").status_code == console
    assert client.get("/test/editor").status_code == editor
    assert client.get("/test/admin").status_code == admin
    assert client.get("/test/admin-page").status_code == admin


def test_forbidden_page_and_json_say_what_is_needed_and_are_audited(canary_tenants):
    _local_user(canary_tenants.a, "vi", Role.VIEWER)
    client = _signed_in(canary_tenants.a, "vi")
    page = client.get("/test/admin-page")
    assert page.status_code == 403 and "needs the Admin role" in page.content.decode()
    api = client.get("/test/editor")
    assert api.json() == {"error": "this needs the editor role or higher; you have viewer"}
    with schema_context(canary_tenants.a.schema_name):
        denied = list(AuditEvent.objects.filter(action="auth.role_denied").order_by("id")
                      .values_list("actor", "object_id"))
    assert denied == [("vi", "/test/admin-page"), ("vi", "/test/editor")]


def test_htmx_calls_refused_reload_their_page_instead_of_recording_a_denial_per_poll(canary_tenants):
    """The KB progress fragment polls every second: a user whose role was taken away got the 403 page on each
    poll (htmx swaps no error and keeps polling), one audit row a second; a signed-out one got the sign-in form
    swapped into the fragment. Both now get HX-Refresh: the page reloads and shows its refusal once."""
    _local_user(canary_tenants.a, "vi", Role.VIEWER)
    client = _signed_in(canary_tenants.a, "vi")
    for _ in range(3):
        poll = client.get("/test/admin-page", HTTP_HX_REQUEST="true")
        assert poll.status_code == 403 and poll["HX-Refresh"] == "true" and poll.content == b""
    with schema_context(canary_tenants.a.schema_name):
        assert not AuditEvent.objects.filter(action="auth.role_denied").exists()
    page = client.get("/test/admin-page")  # the reload
    assert page.status_code == 403 and "needs the Admin role" in page.content.decode()
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="auth.role_denied").count() == 1
    anonymous = Client(HTTP_HOST=canary_tenants.a.host).get("/console/", HTTP_HX_REQUEST="true")
    assert anonymous.status_code == 401 and anonymous["HX-Refresh"] == "true"
    # A form post keeps its page (and what was typed in it): the refusal is shown where its errors go.
    posted = client.post("/test/admin-page", HTTP_HX_REQUEST="true")
    assert posted.status_code in (403, 405) and "HX-Refresh" not in posted
    # Signed out, a form post opens the sign-in page (and comes back to the form's page) instead of having it
    # swapped into the form.
    signed_out = Client(HTTP_HOST=canary_tenants.a.host).post(
        "/console/api-keys/create/", {"name": "k"}, HTTP_HX_REQUEST="true",
        HTTP_HX_CURRENT_URL=f"http://{canary_tenants.a.host}/console/api-keys/")
    assert signed_out.status_code == 401
    assert signed_out["HX-Redirect"] == "/accounts/login/?next=/console/api-keys/"


def test_anonymous_pages_redirect_to_sign_in_and_apis_answer_401_json(canary_tenants):
    client = Client(HTTP_HOST=canary_tenants.a.host)
    page = client.get("/console/")
    assert page.status_code == 302 and page["Location"] == "/accounts/login/?next=/console/"
    api = client.get("/test/viewer")
    assert api.status_code == 401 and api["WWW-Authenticate"] == "Bearer"
    assert "Bearer <API key>" in api.json()["error"]
    assert canary_tenants.a.canary not in api.content.decode()


def test_session_posts_need_the_csrf_token_and_bearer_requests_do_not(canary_tenants):
    client = _signed_in(canary_tenants.a, "admin", enforce_csrf_checks=True)
    refused = client.post("/api/kb/search", data=b"{}", content_type="application/json")
    assert refused.status_code == 403 and refused.json()["error"].startswith("CSRF check failed")
    token = client.cookies["csrftoken"].value
    accepted = client.post("/api/kb/search", data=b'{"bot": "nope", "query": "x"}', content_type="application/json",
                           HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 404  # past authentication: the view itself answers
    with schema_context(canary_tenants.a.schema_name):
        secret = api_key_create(name="script", scopes=["kb:search"],
                                created_by=get_user_model().objects.get(username="admin")).secret
    bearer = Client(HTTP_HOST=canary_tenants.a.host, enforce_csrf_checks=True)
    response = bearer.post("/api/kb/search", data=b'{"bot": "nope", "query": "x"}', content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert response.status_code == 404 and "must name a bot" in response.json()["error"]


def test_a_bearer_header_never_falls_back_to_the_session(canary_tenants):
    client = _signed_in(canary_tenants.a, "admin")
    response = client.get("/test/viewer", HTTP_AUTHORIZATION="Bearer not-a-key")
    assert response.status_code == 401 and response.json() == {"error": "malformed API key"}
    basic = client.get("/test/viewer", HTTP_AUTHORIZATION="Basic YWRtaW46YWRtaW4=")
    assert basic.status_code == 401


def test_oidc_roles_gate_the_same_endpoints(oidc_tenant, browser):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "vera-viewer").status_code == 302
    assert client.get("/console/").status_code == 200
    assert client.get("/test/viewer").status_code == 200
    assert client.get("/test/editor").status_code == 403


def test_turning_oidc_on_ends_local_password_sessions(canary_tenants, provider, vault_server, vault_settings):
    client = _signed_in(canary_tenants.a, "admin")
    assert client.get("/console/").status_code == 200
    oidc_configure(canary_tenants.a, issuer=provider.issuer, vault_server=vault_server)
    assert client.get("/console/").status_code == 302
    assert client.get("/test/viewer").status_code == 401
