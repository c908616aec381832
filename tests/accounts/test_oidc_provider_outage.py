"""F8 (test plan §3.2): the tenant's OpenID provider goes down or hangs, with console users signed in.

Each test runs a provider process of its own (npm oidc-provider, tests/support/oidc_provider.mjs, as the other
sign-in tests), signs in through it for real, and then takes it away: stopped (connections refused) or hung
(SIGSTOP: the kernel still accepts connections, nothing ever answers). What must hold:

- a signed-in console keeps working: its pages never ask the provider until the session's re-check is due
  (OIDC_SESSION_RECHECK_S, shortened here so the test waits seconds);
- then a page view is redirected to the silent re-check, and HTMX, POST and API requests get 401 with the
  re-check's URL (nothing executed); no page answers 5xx; the re-check itself, which does ask the provider,
  fails within OIDC_TIMEOUT with the sign-in's "did not answer" page when it has no cached discovery document;
- a sign-in whose token endpoint stops answering after the login (the provider hung or gone between the
  authorization and our callback) fails within OIDC_TIMEOUT, signs nobody in, and is audited.
"""

from __future__ import annotations

import html
import os
import re
import signal
import time
from contextlib import contextmanager

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts import oidc as oidc_module
from apps.accounts import views as account_views
from apps.accounts.views import SESSION_EXPIRATION
from apps.compliance.models import AuditEvent
from tests.accounts.conftest import ACCOUNTS, CLIENT_ID, CLIENT_SECRET, _client, oidc_configure, sign_in, sign_in_start
from tests.conftest import HOST_A
from tests.support.oidc import OidcProvider, ProviderBrowser

pytestmark = pytest.mark.django_db

# Per provider call (settings.OIDC_TIMEOUT): short, so a hung provider costs the test seconds.
OIDC_TIMEOUT_S = 2
# The console session's re-check interval for these tests (15 minutes in production).
RECHECK_S = 4
# What a loaded machine may add to a bounded wait before the answer is seen (one provider call may also have
# connected before it hung: connect and read each have the timeout).
SLACK_S = 3.0
OUTAGES = ["stopped", "hung"]


@pytest.fixture
def own_provider(provider_key):
    """A provider process for this test alone (the test stops or freezes it)."""
    started = OidcProvider.start(clients=[_client(CLIENT_ID, CLIENT_SECRET)], accounts=ACCOUNTS, key=provider_key)
    yield started
    _resume(started)
    started.stop()


@pytest.fixture
def tenant_client(canary_tenants, own_provider, vault_server, vault_settings, settings, monkeypatch) -> Client:
    settings.OIDC_TIMEOUT = OIDC_TIMEOUT_S
    monkeypatch.setattr(account_views, "OIDC_SESSION_RECHECK_S", RECHECK_S)
    oidc_configure(canary_tenants.a, issuer=own_provider.issuer, vault_server=vault_server)
    return Client(HTTP_HOST=HOST_A)


def _resume(provider: OidcProvider) -> None:
    if provider.process.poll() is None:
        os.kill(provider.process.pid, signal.SIGCONT)


@contextmanager
def _outage(provider: OidcProvider, kind: str):
    """The provider stopped (its port refuses connections) or hung (accepts, never answers) for the block."""
    if kind == "stopped":
        provider.process.kill()  # gone at once, as a crash (SIGTERM waits for its kept-alive connections)
        provider.process.wait(timeout=10)
    else:
        os.kill(provider.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        _resume(provider)


def _timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _check_due_at(client: Client, schema: str) -> float:
    with schema_context(schema):
        return float(client.session[SESSION_EXPIRATION])


PUBLIC_PATHS = ("/", "/api/bots", "/health")
CONSOLE_PATHS = ("/console/", "/console/bots/", "/console/kb/")


@pytest.mark.parametrize("kind", OUTAGES)
def test_a_signed_in_console_works_until_its_recheck_then_is_sent_to_it_cleanly(
        canary_tenants, own_provider, tenant_client, kind):
    client, browser = tenant_client, ProviderBrowser(own_provider)
    assert sign_in(client, browser, "alice-admin").status_code == 302
    due = _check_due_at(client, canary_tenants.a.schema_name)
    with _outage(own_provider, kind):
        # Before the re-check is due, the console does not need the provider.
        for path in CONSOLE_PATHS:
            response, elapsed = _timed(lambda path=path: client.get(path))
            assert response.status_code == 200, (path, response.status_code)
            assert elapsed < OIDC_TIMEOUT_S, f"{path} waited {elapsed:.1f} s: it asked the provider"
        htmx = client.get("/console/bots/", HTTP_HX_REQUEST="true")
        assert htmx.status_code == 200
        for path in PUBLIC_PATHS:
            assert client.get(path).status_code < 500, path
        assert time.time() < due, f"the pages took longer than the {RECHECK_S} s re-check interval: test inconclusive"

        time.sleep(max(0.0, due - time.time()) + 0.2)
        # Due: pages go to the silent re-check, everything else gets 401 with its URL; nothing waits on the
        # provider and nothing answers 5xx.
        page = client.get("/console/bots/")
        assert page.status_code == 302
        assert page["Location"].startswith("/accounts/oidc/authenticate/?prompt=none&next=%2Fconsole%2Fbots%2F")
        htmx = client.get("/console/bots/", HTTP_HX_REQUEST="true",
                          HTTP_HX_CURRENT_URL=f"http://{HOST_A}/console/bots/")
        assert htmx.status_code == 401 and htmx["HX-Redirect"].startswith("/accounts/oidc/authenticate/?prompt=none")
        post = client.post("/console/bots/deploy/", {"confirmed": "yes"})
        assert post.status_code == 401 and post.json()["refresh_url"].startswith("/accounts/oidc/authenticate/")
        api = client.post("/api/bots/deploy", {})
        assert api.status_code == 401 and "refresh_url" in api.json()
        for path in PUBLIC_PATHS:
            assert client.get(path).status_code < 500, path

        # The re-check starts at the provider: with its discovery document cached (five minutes) the browser is
        # sent there (and finds it down); without (a restarted web process) our start of the sign-in asks it
        # and answers "did not answer" within the timeout, never hanging.
        to_provider = client.get(page["Location"])
        assert to_provider.status_code == 302 and to_provider["Location"].startswith(own_provider.issuer + "/")
        oidc_module.oidc_cache_clear()
        refused, elapsed = _timed(lambda: client.get(page["Location"]))
    assert refused.status_code == 502 and "did not answer" in html.unescape(refused.content.decode())
    assert elapsed < OIDC_TIMEOUT_S + SLACK_S, f"the re-check waited {elapsed:.1f} s on the provider"
    if kind == "hung":  # the provider answers again: the silent re-check goes through, the console is back
        start = client.get(page["Location"])
        assert start.status_code == 302 and "prompt=none" in start["Location"]
        returned = client.get(browser.authorize(start["Location"], sub=None))
        assert returned.status_code == 302 and returned["Location"] == "/console/bots/"
        assert client.get("/console/bots/").status_code == 200


@pytest.mark.parametrize("kind", OUTAGES)
def test_a_token_endpoint_that_stops_answering_fails_the_sign_in_within_the_timeout(
        canary_tenants, own_provider, tenant_client, kind):
    client = tenant_client
    browser = ProviderBrowser(own_provider)
    back = browser.authorize(sign_in_start(client), sub="alice-admin")  # the login at the provider went through
    with _outage(own_provider, kind):
        response, elapsed = _timed(lambda: client.get(back))  # our callback: the code exchange at /token
    body = html.unescape(response.content.decode())
    # "did not answer (token endpoint)", or "did not answer within 2 s (token endpoint)" when the call's deadline
    # ended it.
    assert response.status_code == 502, body[:300]
    assert re.search(r"did not answer( within [\d.]+ s)? \(token endpoint\)", body), body[:300]
    assert elapsed < OIDC_TIMEOUT_S + SLACK_S, f"the sign-in waited {elapsed:.1f} s on the token endpoint"
    assert client.get("/console/").status_code == 302  # nobody signed in
    with schema_context(canary_tenants.a.schema_name):
        [event] = AuditEvent.objects.filter(action="auth.login_failed")
        assert "did not answer" in str(event.summary) and "(token endpoint)" in str(event.summary)


# A byte this often keeps a per-read timeout from ever firing (requests' own `timeout` is one).
TRICKLE_BYTE_DELAY_S = OIDC_TIMEOUT_S * 0.4


@pytest.mark.parametrize("path", ["/.well-known/openid-configuration", "/token", "/jwks"],
                         ids=["discovery", "token", "key-set"])
def test_a_provider_trickling_its_answer_fails_the_sign_in_within_the_timeout(
        canary_tenants, own_provider, tenant_client, path):
    """Slow, not silent: the answer comes a byte at a time (a few KB: half an hour). OIDC_TIMEOUT bounds each
    call to the provider as a whole, or a provider (a tenant may name its own) holds the sign-in request for as
    long as it likes."""
    client = tenant_client
    own_provider.slow_next(path, byte_delay_s=TRICKLE_BYTE_DELAY_S)
    if path == "/.well-known/openid-configuration":
        response, elapsed = _timed(lambda: client.get("/accounts/oidc/authenticate/"))
    else:
        back = ProviderBrowser(own_provider).authorize(sign_in_start(client), sub="alice-admin")
        response, elapsed = _timed(lambda: client.get(back))
    body = html.unescape(response.content.decode())
    assert response.status_code == 502 and "did not answer" in body, body[:300]
    assert elapsed < OIDC_TIMEOUT_S + SLACK_S, f"the sign-in waited {elapsed:.1f} s on a trickling provider"
    assert client.get("/console/").status_code == 302  # nobody signed in
