"""OIDC sessions are re-checked with the provider: silently for page views, by a 401 for anything else; a user
who lost their roles or their provider session loses the console."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.accounts.views import SESSION_EXPIRATION
from tests.accounts.conftest import ACCOUNTS, sign_in

pytestmark = pytest.mark.django_db


def _expire(client, tenant) -> None:
    with schema_context(tenant.schema_name):
        session = client.session
        session[SESSION_EXPIRATION] = 0
        session.save()


def _follow_silent_recheck(client, browser, response):
    """Our redirect to the authenticate view, its redirect to the provider (prompt=none), and back."""
    assert response.status_code == 302 and response["Location"].startswith("/accounts/oidc/authenticate/?prompt=none")
    to_provider = client.get(response["Location"])
    assert to_provider.status_code == 302 and "prompt=none" in to_provider["Location"]
    return client.get(browser.authorize(to_provider["Location"], sub=None))


def test_an_expired_check_is_renewed_silently_on_a_page_view(oidc_tenant, browser):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    _expire(client, oidc_tenant)
    logins = browser.logins
    back = _follow_silent_recheck(client, browser, client.get("/console/"))
    assert back.status_code == 302 and back["Location"] == "/console/"
    assert browser.logins == logins, "the re-check asked the user to sign in again"
    assert client.get("/console/").status_code == 200


def test_a_post_after_expiry_gets_401_and_is_not_executed(oidc_tenant, browser):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    _expire(client, oidc_tenant)
    response = client.post("/api/bots/deploy", {})
    assert response.status_code == 401
    assert response.json()["refresh_url"].startswith("/accounts/oidc/authenticate/?prompt=none")


def test_an_authorization_header_does_not_skip_the_recheck_of_a_session_view(oidc_tenant, browser):
    """Console pages authenticate by the session: any Authorization header beside the cookie must not let a user
    whose check expired (perhaps stripped of roles at the provider) keep using it."""
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    _expire(client, oidc_tenant)
    response = client.get("/console/", HTTP_AUTHORIZATION="x")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/oidc/authenticate/?prompt=none")
    assert client.post("/console/", HTTP_AUTHORIZATION="Bearer x").status_code == 401
    # An API view taking keys answers by the key alone (here: a bad one), not by the session.
    response = client.post("/api/bots/deploy", {}, HTTP_AUTHORIZATION="Bearer not-a-key")
    assert response.status_code == 401 and "refresh_url" not in response.json()


@pytest.mark.parametrize("header", ["", "   "])
def test_an_empty_authorization_header_does_not_skip_the_recheck_of_an_api_view(oidc_tenant, browser, header):
    """api_access falls back to the session for an empty header; the middlewares skipped their checks for any
    header at all, so a user whose OIDC check expired could still deploy with `Authorization:`."""
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    _expire(client, oidc_tenant)
    response = client.post("/api/bots/deploy", {}, HTTP_AUTHORIZATION=header)
    assert response.status_code == 401 and response.json()["refresh_url"].startswith("/accounts/oidc/authenticate/")


@pytest.mark.parametrize("header", ["", "   "])
def test_an_empty_authorization_header_does_not_skip_the_idle_timeout_of_an_api_view(canary_tenants, settings, header):
    import time

    from apps.accounts.middleware import LAST_SEEN_KEY
    from apps.accounts.roles import Role
    from tests.console.conftest import signed_in, user_with_role

    idle = signed_in(canary_tenants.a, user_with_role(canary_tenants.a, f"idle-api{len(header)}", Role.ADMIN))
    assert idle.get("/console/").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        session = idle.session
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 5
        session.save()
    assert idle.post("/api/bots/deploy", {}, HTTP_AUTHORIZATION=header).status_code == 401
    assert idle.get("/console/").status_code == 302  # signed out


def test_after_an_idle_timeout_the_provider_is_asked_for_the_password_again(oidc_tenant, browser, settings):
    """The provider's own session outlives ours: without prompt=login, whoever sat at the unattended browser
    was signed straight back in by it, and the idle timeout protected nothing. Starting the sign-in again, or
    removing the prompt from the URL, must not get around it: the callback wants a fresh auth_time."""
    import time
    from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

    from apps.accounts.middleware import LAST_SEEN_KEY
    from tests.accounts.conftest import sign_in_start

    def query_of(url: str) -> dict:
        return parse_qs(urlsplit(url).query)

    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    assert client.get("/console/").status_code == 200
    assert "prompt" not in query_of(sign_in_start(client))  # an active user: no prompt
    with schema_context(oidc_tenant.schema_name):
        session = client.session
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 5
        session.save()
    assert client.get("/console/").status_code == 302  # signed out
    first, second = sign_in_start(client), sign_in_start(client)
    for start in (first, second):  # started twice (the Back button): asked both times
        assert query_of(start)["prompt"] == ["login"] and query_of(start)["max_age"] == ["0"]
    # The prompt removed from the URL: the provider's live session answers at once, and the callback refuses.
    parts = urlsplit(second)
    tampered = urlunsplit(parts._replace(query=urlencode(
        {k: v[0] for k, v in query_of(second).items() if k not in ("prompt", "max_age")})))
    refused = client.get(browser.authorize(tampered, sub=None))
    assert refused.status_code == 401 and "password again" in refused.content.decode()
    assert client.get("/console/").status_code == 302
    # Signing in with the password again works, and the next sign-in is ordinary.
    assert sign_in(client, browser, "alice-admin").status_code == 302
    assert client.get("/console/").status_code == 200
    assert "prompt" not in query_of(sign_in_start(client))


def test_an_htmx_request_after_expiry_gets_hx_redirect_not_the_providers_page(oidc_tenant, browser):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    _expire(client, oidc_tenant)
    response = client.get("/console/", HTTP_HX_REQUEST="true",
                          HTTP_HX_CURRENT_URL=f"http://{oidc_tenant.host}/console/?tab=bots")
    assert response.status_code == 401
    assert response["HX-Redirect"] == "/accounts/oidc/authenticate/?prompt=none&next=%2Fconsole%2F%3Ftab%3Dbots"


def test_a_user_stripped_of_roles_at_the_provider_loses_access_at_the_recheck(oidc_tenant, browser, provider):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    provider.account_set("alice-admin", {**ACCOUNTS["alice-admin"], "urn:zitadel:iam:org:project:roles": {}})
    _expire(client, oidc_tenant)
    back = _follow_silent_recheck(client, browser, client.get("/console/"))
    assert back.status_code == 403 and "no console role" in back.content.decode()
    assert client.get("/console/").status_code == 302


def test_an_ended_provider_session_ends_the_console_session_at_the_recheck(oidc_tenant, browser, provider):
    client = oidc_tenant.client()
    assert sign_in(client, browser, "alice-admin").status_code == 302
    browser.session.cookies.clear()  # the provider no longer knows this browser
    _expire(client, oidc_tenant)
    back = _follow_silent_recheck(client, browser, client.get("/console/"))
    assert back.status_code == 302 and back["Location"].startswith("/accounts/login/")
    assert client.get("/console/").status_code == 302


def test_a_session_idle_past_the_timeout_is_signed_out(canary_tenants, settings):
    import time

    from apps.accounts.middleware import LAST_SEEN_KEY
    from apps.accounts.roles import Role
    from tests.console.conftest import signed_in, user_with_role

    client = signed_in(canary_tenants.a, user_with_role(canary_tenants.a, "idle-admin", Role.ADMIN))
    assert client.get("/console/").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        session = client.session
        assert session[LAST_SEEN_KEY] > time.time() - 60  # the request was seen
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 5
        session.save()
    answer = client.get("/console/bots/")
    assert answer.status_code == 302 and answer["Location"] == "/accounts/login/?next=%2Fconsole%2Fbots%2F"
    assert client.get("/console/").status_code == 302  # signed out: the session is gone, not just refused


def test_an_idle_session_cannot_post_and_an_active_one_stays(canary_tenants, settings):
    import time

    from apps.accounts.middleware import LAST_SEEN_KEY
    from apps.accounts.roles import Role
    from tests.console.conftest import signed_in, user_with_role

    client = signed_in(canary_tenants.a, user_with_role(canary_tenants.a, "busy-admin", Role.ADMIN))
    for _ in range(3):
        assert client.get("/console/").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        session = client.session
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 5
        session.save()
    refused = client.post("/console/api-keys/create/", {"name": "k", "confirmed": "yes"}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 401 and refused["HX-Redirect"].startswith("/accounts/login/")
    with schema_context(canary_tenants.a.schema_name):
        from apps.accounts.models import ApiKey

        assert not ApiKey.objects.exists()


def test_an_idle_session_on_a_public_page_is_signed_out_and_the_page_still_served(canary_tenants, settings):
    import time

    from apps.accounts.middleware import LAST_SEEN_KEY
    from apps.accounts.roles import Role
    from tests.console.conftest import signed_in, user_with_role

    client = signed_in(canary_tenants.a, user_with_role(canary_tenants.a, "idle-chatter", Role.ADMIN))
    assert client.get("/console/").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        session = client.session
        session[LAST_SEEN_KEY] = int(time.time()) - settings.SESSION_IDLE_TIMEOUT_S - 5
        session.save()
    assert client.get(f"/{canary_tenants.a.canary}/").status_code == 200  # the web chat, for a visitor
    assert client.get("/console/").status_code == 302  # signed out all the same


def test_the_absolute_session_limit_does_not_slide_with_activity(canary_tenants, settings):
    """Saving the last request once a minute must not move the session's expiry: SESSION_COOKIE_AGE counts
    from the sign-in, however busy the user is."""
    import time

    from apps.accounts.middleware import LAST_SEEN_KEY, SIGNED_IN_KEY
    from apps.accounts.roles import Role
    from tests.console.conftest import signed_in, user_with_role

    client = signed_in(canary_tenants.a, user_with_role(canary_tenants.a, "busy-all-day", Role.ADMIN))
    assert client.get("/console/").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        session = client.session
        started = session[SIGNED_IN_KEY]
        assert abs(session.get_expiry_date().timestamp() - (started + settings.SESSION_COOKIE_AGE)) < 2
        # Active a minute ago, but signed in longer ago than the absolute limit.
        session[SIGNED_IN_KEY] = int(time.time()) - settings.SESSION_COOKIE_AGE - 5
        session[LAST_SEEN_KEY] = int(time.time()) - 61
        session.save()
    answer = client.get("/console/")
    assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
