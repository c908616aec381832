"""Every ID token and flow that must not sign anyone in, against the real provider on loopback.

Where the provider can be made to issue the bad token, it does (a tampered nonce or PKCE challenge in the
authorization request, a second client, another provider instance as another tenant's issuer, an account
with an unverified email). Where no correct provider would (alg none, HS256, expired, foreign iss, too
old, several audiences), the test mints it with the provider's own signing key and the provider's token
endpoint hands it out in place of the real one: the flow around it stays real.
"""

from __future__ import annotations

import html
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.models import ConsoleProfile
from apps.compliance.models import AuditEvent
from tests.accounts.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    OTHER_CLIENT_ID,
    OTHER_CLIENT_SECRET,
    OidcTenant,
    authorization_params,
    sign_in_start,
)
from tests.support.oidc import ProviderBrowser, mint

pytestmark = pytest.mark.django_db


def _tamper(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {**authorization_params(url), **params}
    return parts._replace(query=urlencode(query)).geturl()


def _assert_refused(response, tenant, reason: str, status: int = 403) -> None:
    body = html.unescape(response.content.decode())
    assert response.status_code == status, body[:500]
    assert reason in body, body[:500]
    with schema_context(tenant.schema_name):
        assert not ConsoleProfile.objects.exclude(oidc_subject="").exists()
        [event] = AuditEvent.objects.filter(action="auth.login_failed")
        assert reason in event.summary
    assert tenant.client().get("/console/").status_code == 302


def _claims(provider, nonce: str, **overrides) -> dict:
    now = int(time.time())
    return {"iss": provider.issuer, "aud": CLIENT_ID, "sub": "alice-admin", "nonce": nonce, "iat": now,
            "exp": now + 300, "email": "alice@acme.test", "email_verified": True, **overrides}


def _with_token(oidc_tenant, browser, provider, make_token):
    """A real sign-in whose token response carries `make_token(nonce)` as its ID token."""
    client = oidc_tenant.client()
    start = sign_in_start(client)
    provider.id_token_override(make_token(authorization_params(start)["nonce"]))
    response = client.get(browser.authorize(start, sub="alice-admin"))
    return client, response


def test_wrong_nonce_is_refused(oidc_tenant, browser):
    client = oidc_tenant.client()
    start = _tamper(sign_in_start(client), nonce="a-nonce-this-browser-never-sent-0123456789")
    response = client.get(browser.authorize(start, sub="alice-admin"))
    _assert_refused(response, oidc_tenant, "nonce does not match")


def test_pkce_mismatch_is_refused_by_the_provider(oidc_tenant, browser):
    client = oidc_tenant.client()
    start = _tamper(sign_in_start(client), code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    response = client.get(browser.authorize(start, sub="alice-admin"))
    _assert_refused(response, oidc_tenant, "the provider refused the sign-in code (invalid_grant)")


def test_token_for_another_client_is_refused(oidc_tenant, browser, provider):
    def other_clients_token(nonce: str) -> str:
        return browser.id_token_for(client_id=OTHER_CLIENT_ID, client_secret=OTHER_CLIENT_SECRET, nonce=nonce,
                                    redirect_uri=f"http://{oidc_tenant.host}/accounts/oidc/callback/",
                                    sub="alice-admin")

    _client, response = _with_token(oidc_tenant, browser, provider, other_clients_token)
    _assert_refused(response, oidc_tenant, "issued for another client (aud)")


def test_token_from_another_tenants_issuer_is_refused(oidc_tenant, browser, provider, other_provider):
    other_browser = ProviderBrowser(other_provider)

    def other_issuers_token(nonce: str) -> str:
        return other_browser.id_token_for(client_id=CLIENT_ID, client_secret=CLIENT_SECRET, nonce=nonce,
                                          redirect_uri=f"http://{oidc_tenant.host}/accounts/oidc/callback/",
                                          sub="alice-admin")

    _client, response = _with_token(oidc_tenant, browser, provider, other_issuers_token)
    _assert_refused(response, oidc_tenant, "signed with a key that is not in the issuer's key set")


def test_wrong_issuer_is_refused_even_with_the_right_key(oidc_tenant, browser, provider):
    _client, response = _with_token(oidc_tenant, browser, provider, lambda nonce: mint(
        _claims(provider, nonce, iss="https://evil-issuer.test"), key=provider.key))
    _assert_refused(response, oidc_tenant, "comes from another issuer (iss)")


def test_alg_none_is_refused(oidc_tenant, browser, provider):
    _client, response = _with_token(oidc_tenant, browser, provider,
                                    lambda nonce: mint(_claims(provider, nonce), key=None, alg="none"))
    _assert_refused(response, oidc_tenant, "algorithm 'none' refused")


def test_hs256_signed_with_the_client_secret_is_refused(oidc_tenant, browser, provider):
    _client, response = _with_token(oidc_tenant, browser, provider, lambda nonce: mint(
        _claims(provider, nonce), key=None, alg="HS256", secret=CLIENT_SECRET))
    _assert_refused(response, oidc_tenant, "algorithm 'HS256' refused")


def test_expired_token_is_refused(oidc_tenant, browser, provider):
    now = int(time.time())
    _client, response = _with_token(oidc_tenant, browser, provider, lambda nonce: mint(
        _claims(provider, nonce, iat=now - 400, exp=now - 200), key=provider.key))
    _assert_refused(response, oidc_tenant, "has expired")


def test_token_issued_long_ago_is_refused(oidc_tenant, browser, provider):
    now = int(time.time())
    _client, response = _with_token(oidc_tenant, browser, provider, lambda nonce: mint(
        _claims(provider, nonce, iat=now - 3600, exp=now + 3600), key=provider.key))
    _assert_refused(response, oidc_tenant, "too old")


def test_several_audiences_without_our_azp_are_refused(oidc_tenant, browser, provider):
    _client, response = _with_token(oidc_tenant, browser, provider, lambda nonce: mint(
        _claims(provider, nonce, aud=[CLIENT_ID, OTHER_CLIENT_ID], azp=OTHER_CLIENT_ID), key=provider.key))
    _assert_refused(response, oidc_tenant, "issued for another client (azp)")


def test_unverified_email_is_refused(oidc_tenant, browser):
    client = oidc_tenant.client()
    response = client.get(browser.authorize(sign_in_start(client), sub="uma-unverified"))
    _assert_refused(response, oidc_tenant, "not verified this account's email address")


def test_an_authorization_response_naming_another_issuer_is_refused(oidc_tenant, browser, other_provider):
    client = oidc_tenant.client()
    back = browser.authorize(sign_in_start(client), sub="alice-admin")
    parts = urlsplit(back)
    query = {**authorization_params(back), "iss": other_provider.issuer}
    response = client.get(parts._replace(query=urlencode(query)).geturl())
    _assert_refused(response, oidc_tenant, "another provider than this sign-in's (iss)", status=400)


def test_with_an_organisation_set_only_its_users_sign_in(db, canary_tenants, provider, vault_server, vault_settings,
                                                       browser):
    from tests.accounts.conftest import oidc_configure

    oidc_configure(canary_tenants.a, issuer=provider.issuer, vault_server=vault_server, organization_id="org-acme")
    tenant = OidcTenant(canary_tenants.a.schema_name, canary_tenants.a.host, canary_tenants.a.canary,
                        canary_tenants.a.admin_password, provider.issuer)
    outsider = tenant.client()
    start = sign_in_start(outsider)
    assert "urn:zitadel:iam:user:resourceowner" in authorization_params(start)["scope"].split()
    response = outsider.get(browser.authorize(start, sub="otto-otherorg"))
    _assert_refused(response, tenant, "belongs to another organisation")
    member, member_browser = tenant.client(), ProviderBrowser(provider)
    assert member.get(member_browser.authorize(sign_in_start(member), sub="alice-admin")).status_code == 302
    assert member.get("/console/").status_code == 200


def test_a_replayed_callback_is_refused(oidc_tenant, browser):
    client = oidc_tenant.client()
    back = browser.authorize(sign_in_start(client), sub="alice-admin")
    assert client.get(back).status_code == 302
    client.post("/accounts/logout/")
    replay = client.get(back)
    assert replay.status_code == 400 and "already used" in replay.content.decode()
    assert client.get("/console/").status_code == 302


def test_a_callback_started_in_another_browser_is_refused(oidc_tenant, browser):
    victim_url = browser.authorize(sign_in_start(oidc_tenant.client()), sub="alice-admin")
    attacker = oidc_tenant.client()
    response = attacker.get(victim_url)
    assert response.status_code == 400 and "not started in this browser" in response.content.decode()
    assert attacker.get("/console/").status_code == 302


def test_a_client_secret_reference_outside_the_tenant_is_not_resolved(db, canary_tenants, provider, vault_server,
                                                                      vault_settings, browser):
    from apps.accounts.models import OidcConfig

    b_path = f"gbo/tenants/{canary_tenants.b.schema_name}/admin/oidc"
    vault_server.put_secret(b_path, {"client_secret": CLIENT_SECRET})
    with schema_context(canary_tenants.a.schema_name):
        OidcConfig.objects.create(issuer=provider.issuer, client_id=CLIENT_ID,
                                  client_secret=f"vault:{b_path}#client_secret")
    client = Client(HTTP_HOST=canary_tenants.a.host)
    response = client.get(browser.authorize(sign_in_start(client), sub="alice-admin"))
    assert response.status_code == 502
    assert "client secret is unavailable" in response.content.decode()
    assert client.get("/console/").status_code == 302


class _SilentServer:
    """Accepts connections and never answers: a hung provider."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def _configure_issuer(tenant, issuer: str) -> None:
    from apps.accounts.models import OidcConfig

    with schema_context(tenant.schema_name):
        OidcConfig.objects.create(issuer=issuer, client_id=CLIENT_ID, client_secret="")


def test_a_hung_provider_fails_the_sign_in_within_the_timeout(db, canary_tenants, settings):
    settings.OIDC_TIMEOUT = 1
    server = _SilentServer()
    try:
        _configure_issuer(canary_tenants.a, server.url)
        client = Client(HTTP_HOST=canary_tenants.a.host)
        started = time.monotonic()
        response = client.get("/accounts/oidc/authenticate/")
        elapsed = time.monotonic() - started
    finally:
        server.close()
    assert response.status_code == 502 and "did not answer" in response.content.decode()
    assert elapsed < 10, f"the sign-in waited {elapsed:.1f} s on a hung provider"


def test_an_unreachable_provider_gives_a_clear_error_and_pages_keep_working(db, canary_tenants):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    closed_port = listener.getsockname()[1]
    listener.close()
    _configure_issuer(canary_tenants.a, f"http://127.0.0.1:{closed_port}")
    client = Client(HTTP_HOST=canary_tenants.a.host)
    response = client.get("/accounts/oidc/authenticate/")
    assert response.status_code == 502 and "did not answer" in response.content.decode()
    assert client.get("/").status_code == 200
    assert client.get("/accounts/login/").status_code == 200


class _DiscoveryServer:
    """Serves one discovery document (our own bad provider): too big, or naming another issuer."""

    def __init__(self, body_for) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                body = body_for(f"http://127.0.0.1:{self.server.server_address[1]}")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(
    ("body_for", "reason"),
    [
        (lambda url: b'{"issuer": "' + url.encode() + b'", "pad": "' + b"x" * 600_000 + b'"}', "is over"),
        (lambda url: b'{"issuer": "https://evil-issuer.test", "authorization_endpoint": "https://evil-issuer.test/a",'
                     b' "token_endpoint": "x", "jwks_uri": "x"}', "names a different issuer"),
        (lambda url: b"<html>not json</html>", "is not JSON"),
    ],
    ids=["oversized", "other-issuer", "not-json"],
)
def test_a_bad_discovery_document_stops_the_sign_in(db, canary_tenants, body_for, reason):
    server = _DiscoveryServer(body_for)
    try:
        _configure_issuer(canary_tenants.a, server.url)
        response = Client(HTTP_HOST=canary_tenants.a.host).get("/accounts/oidc/authenticate/")
    finally:
        server.close()
    assert response.status_code == 502 and reason in html.unescape(response.content.decode())
