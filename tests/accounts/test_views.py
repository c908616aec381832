"""Console sign-in through the tenant's OIDC provider (a real oidc-provider on loopback), end to end through
Django's test client: authorization code + PKCE, roles from the token, RP-initiated logout, the login page."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ConsoleProfile
from apps.accounts.roles import Role
from apps.compliance.models import AuditEvent
from tests.accounts.conftest import CLIENT_ID, PUBLIC_CLIENT_ID, authorization_params, sign_in, sign_in_start

pytestmark = pytest.mark.django_db


def _profiles(schema: str) -> list[ConsoleProfile]:
    with schema_context(schema):
        return list(ConsoleProfile.objects.select_related("user").exclude(oidc_subject=""))


def _actions(schema: str, action: str) -> list[AuditEvent]:
    with schema_context(schema):
        return list(AuditEvent.objects.filter(action=action).order_by("id"))


def test_full_sign_in_reaches_the_console_as_the_provider_user(oidc_tenant, browser, provider):
    client = oidc_tenant.client()
    start = sign_in_start(client)
    params = authorization_params(start)
    assert start.startswith(provider.issuer + "/auth?")
    assert params["client_id"] == CLIENT_ID and params["response_type"] == "code"
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert len(params["state"]) >= 32 and len(params["nonce"]) >= 32
    assert params["redirect_uri"] == f"http://{oidc_tenant.host}/accounts/oidc/callback/"

    back = browser.authorize(start, sub="alice-admin")
    response = client.get(back)
    assert response.status_code == 302 and response["Location"] == "/console/"
    console = client.get("/console/")
    assert console.status_code == 200
    [profile] = _profiles(oidc_tenant.schema_name)
    assert (profile.oidc_issuer, profile.oidc_subject) == (provider.issuer, "alice-admin")
    assert profile.role == Role.ADMIN and profile.email == "alice@acme.test"
    assert profile.user.username.startswith("oidc-") and not profile.user.has_usable_password()
    assert not profile.user.is_staff and not profile.user.is_superuser
    [login] = _actions(oidc_tenant.schema_name, "auth.login")
    assert login.actor == profile.user.username


def test_second_sign_in_finds_the_same_user_by_subject(oidc_tenant, browser):
    first = oidc_tenant.client()
    assert sign_in(first, browser, "alice-admin").status_code == 302
    second = oidc_tenant.client()
    assert sign_in(second, browser, "alice-admin").status_code == 302
    assert len(_profiles(oidc_tenant.schema_name)) == 1


@pytest.mark.parametrize(
    ("sub", "role"),
    [("alice-admin", Role.ADMIN), ("eddie-editor", Role.EDITOR), ("vera-viewer", Role.VIEWER),
     ("multi-role", Role.EDITOR)],
)
def test_provider_roles_map_to_the_highest_console_role(oidc_tenant, browser, sub, role):
    client = oidc_tenant.client()
    assert sign_in(client, browser, sub).status_code == 302
    assert client.get("/console/").status_code == 200
    [profile] = _profiles(oidc_tenant.schema_name)
    assert profile.role == role


def test_a_user_without_a_mapped_role_gets_a_clear_page_and_no_account(oidc_tenant, browser):
    client = oidc_tenant.client()
    response = sign_in(client, browser, "nora-norole")
    assert response.status_code == 403
    assert "no console role for this tenant" in response.content.decode()
    assert _profiles(oidc_tenant.schema_name) == []
    with schema_context(oidc_tenant.schema_name):
        assert not get_user_model().objects.filter(username__startswith="oidc-").exists()
    assert client.get("/console/").status_code == 302
    [denied] = _actions(oidc_tenant.schema_name, "auth.role_denied")
    assert denied.object_id == "nora-norole"


def test_login_page_offers_only_the_provider_when_oidc_is_configured(oidc_tenant):
    response = oidc_tenant.client().get("/accounts/login/?next=/console/")
    body = response.content.decode()
    assert response.status_code == 200
    assert "/accounts/oidc/authenticate/?next=%2Fconsole%2F" in body
    assert 'name="password"' not in body and "Local password sign-in" not in body


def test_password_post_is_refused_when_oidc_is_configured(oidc_tenant):
    client = oidc_tenant.client()
    response = client.post("/accounts/login/", {"username": "admin", "password": oidc_tenant.admin_password})
    assert response.status_code == 403
    assert "Password sign-in is disabled" in response.content.decode()
    assert client.get("/console/").status_code == 302
    [event] = _actions(oidc_tenant.schema_name, "auth.login_failed")
    assert event.actor == "admin" and "OIDC" in event.summary


def test_local_password_login_exists_without_oidc_and_says_so(canary_tenants):
    client = Client(HTTP_HOST=canary_tenants.a.host)
    page = client.get("/accounts/login/").content.decode()
    assert "no OIDC provider is configured" in page and 'name="password"' in page
    assert client.post("/accounts/login/", {"username": "admin",
                                            "password": canary_tenants.a.admin_password}).status_code == 302
    assert client.get("/console/").status_code == 200


def test_rp_initiated_logout_ends_both_sessions(oidc_tenant, browser, provider):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    target = response["Location"]
    assert target.startswith(provider.issuer + "/session/end?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert query["post_logout_redirect_uri"] == f"http://{oidc_tenant.host}/"
    assert query["client_id"] == CLIENT_ID and query["id_token_hint"].count(".") == 2
    assert client.get("/console/").status_code == 302  # the console session is gone at once
    assert browser.end_session(target) == f"http://{oidc_tenant.host}/"
    logins = browser.logins
    sign_in(client, browser, "alice-admin")
    assert browser.logins == logins + 1, "the provider's session survived the sign-out"


def test_next_parameter_cannot_redirect_off_the_host(oidc_tenant, browser):
    client = oidc_tenant.client()
    response = sign_in(client, browser, "alice-admin", next_path="https://evil.test/steal")
    assert response.status_code == 302 and response["Location"] == "/console/"


def test_the_session_cookie_is_host_only_and_useless_on_another_tenant(oidc_tenant, browser, canary_tenants):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    cookie = client.cookies["sessionid"]
    assert cookie["domain"] == "" and cookie["httponly"]
    stolen = Client(HTTP_HOST=canary_tenants.b.host)
    stolen.cookies["sessionid"] = cookie.value
    response = stolen.get("/console/")
    assert response.status_code == 302 and canary_tenants.a.canary not in response.content.decode()


def test_a_public_client_signs_in_with_pkce_alone(db, canary_tenants, provider, browser):
    from apps.accounts.services import oidc_config_save

    with schema_context(canary_tenants.a.schema_name):
        oidc_config_save(issuer=provider.issuer, client_id=PUBLIC_CLIENT_ID, client_secret="")
    client = Client(HTTP_HOST=canary_tenants.a.host)
    assert sign_in(client, browser, "vera-viewer").status_code == 302
    assert client.get("/console/").status_code == 200
