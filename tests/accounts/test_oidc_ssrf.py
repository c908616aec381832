"""SSRF through a tenant's own OIDC provider: the tenant admin chooses the issuer, and the issuer's discovery
document chooses the JWKS, token and userinfo URLs the platform then requests. With OIDC_ALLOW_PRIVATE_HOSTS
off (production's default) none of them may reach a private, loopback or link-local address: the issuer is
refused when saved, and every request connects only to an address checked in its own resolution (DNS
rebinding). A loopback honeypot stands for cloud metadata, Vault and internal services: it must get no
connection at all. The positive path (a "public" provider, routed to a loopback TLS server) still signs in, and
the other sign-in tests run their loopback providers with the setting on (tests/accounts/conftest.py).
"""

from __future__ import annotations

import html
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django_tenants.utils import schema_context

from tests.support.oidc import mint, rsa_signing_key
from tests.support.rebinding import LOOPBACK, PUBLIC_ADDRESS, Honeypot, Resolver, Route, tls_files

pytestmark = pytest.mark.django_db

CLIENT_ID = "console-ssrf"
IDP_NAME = "idp.public.test"  # resolves to PUBLIC_ADDRESS, routed to our TLS server on loopback


@pytest.fixture
def guarded(settings):
    """Production's default: tenants' providers must be public https hosts; a short timeout for the tests."""
    settings.OIDC_ALLOW_PRIVATE_HOSTS = False
    settings.OIDC_TIMEOUT = 3
    settings.OIDC_ISSUER = settings.OIDC_CLIENT_ID = ""
    return settings


@pytest.fixture
def honeypot():
    with Honeypot("http") as pot:
        yield pot


class _ProviderServer:
    """An https provider for IDP_NAME on loopback, answering discovery, token, JWKS and userinfo with JSON the
    test sets (`documents[path]`); records the paths asked for."""

    def __init__(self, directory) -> None:
        self.ca_file, cert_file, key_file = tls_files(directory, IDP_NAME)
        self.documents: dict[str, object] = {}
        self.paths: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                path = urlsplit(self.path).path
                server.paths.append(path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                document = server.documents.get(path)
                body = json.dumps(document).encode() if document is not None else b"{}"
                self.send_response(200 if document is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.issuer = f"https://{IDP_NAME}:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def public_provider(tmp_path, monkeypatch):
    server = _ProviderServer(tmp_path)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_file))
    yield server
    server.close()


def _configure(tenant, issuer: str) -> None:
    from apps.accounts.services import oidc_config_save

    with schema_context(tenant.schema_name):
        oidc_config_save(issuer=issuer, client_id=CLIENT_ID, client_secret="")


def _text(response) -> str:
    return html.unescape(response.content.decode())


# --- save time ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("issuer", "answers", "reason"), [
    ("https://idp.private.test", ["10.0.0.5"], "address 10.0.0.5 of 'idp.private.test' is not a public address"),
    ("https://metadata.evil.test", ["169.254.169.254"], "address 169.254.169.254 of 'metadata.evil.test'"),
    ("https://169.254.169.254/latest", [], "address 169.254.169.254 of '169.254.169.254' is not a public address"),
    ("http://127.0.0.1:8200", [], "only https URLs are allowed"),
])
def test_an_issuer_on_a_private_address_is_refused_when_saved(canary_tenants, guarded, monkeypatch, issuer,
                                                              answers, reason):
    from apps.accounts.models import OidcConfig

    Resolver(monkeypatch, {urlsplit(issuer).hostname: answers} if answers else {})
    with pytest.raises(ValidationError) as raised:
        _configure(canary_tenants.a, issuer)
    message = " ".join(raised.value.message_dict["issuer"])
    assert f"the issuer {issuer} cannot be used" in message and reason in message
    with schema_context(canary_tenants.a.schema_name):
        assert not OidcConfig.objects.exists()


def test_the_allow_setting_lets_a_tenant_name_a_private_issuer(canary_tenants, settings, monkeypatch):
    from apps.accounts.models import OidcConfig

    settings.OIDC_ALLOW_PRIVATE_HOSTS = True
    Resolver(monkeypatch, {"idp.private.test": ["10.0.0.5"]})
    _configure(canary_tenants.a, "https://idp.private.test")
    with schema_context(canary_tenants.a.schema_name):
        assert OidcConfig.objects.filter(enabled=True).count() == 1


# --- request time -------------------------------------------------------------------------------------------


def test_an_issuer_rebinding_to_loopback_after_the_save_never_reaches_it(canary_tenants, guarded, monkeypatch,
                                                                         honeypot):
    resolver = Resolver(monkeypatch, {"idp.rebind.test": [PUBLIC_ADDRESS, LOOPBACK]})
    issuer = f"https://idp.rebind.test:{honeypot.port}"
    _configure(canary_tenants.a, issuer)  # the save's check saw the public address
    response = Client(HTTP_HOST=canary_tenants.a.host).get("/accounts/oidc/authenticate/")
    assert response.status_code == 502
    assert ("discovery document URL is not allowed: address 127.0.0.1 of 'idp.rebind.test' is not a public "
            "address") in _text(response)
    assert honeypot.hits == []
    assert resolver.lookups == ["idp.rebind.test", "idp.rebind.test"]


def _discovery(provider: _ProviderServer, **endpoints: str) -> dict:
    issuer = provider.issuer
    return {"issuer": issuer, "authorization_endpoint": f"{issuer}/auth", "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks", "userinfo_endpoint": f"{issuer}/userinfo", **endpoints}


def _sign_in(tenant, provider: _ProviderServer, key, *, sub: str = "alice") -> tuple[Client, object]:
    """Start the sign-in at our view, then come back with a code as the provider would: the provider's token
    endpoint answers an ID token for this very sign-in (its nonce), signed with `key`."""
    client = Client(HTTP_HOST=tenant.host)
    start = client.get("/accounts/oidc/authenticate/")
    assert start.status_code == 302, _text(start)[:500]
    params = {k: v[0] for k, v in parse_qs(urlsplit(start["Location"]).query).items()}
    now = int(time.time())
    claims = {"iss": provider.issuer, "sub": sub, "aud": CLIENT_ID, "iat": now, "exp": now + 300,
              "nonce": params["nonce"], "email": "alice@acme.test", "email_verified": True,
              "urn:zitadel:iam:org:project:roles": {"admin": {"org": "org.test"}}}
    provider.documents["/token"] = {"id_token": mint(claims, key=key), "access_token": "at", "token_type": "Bearer"}
    provider.documents["/userinfo"] = {"sub": sub}
    provider.documents["/jwks"] = {"keys": [{k: v for k, v in key.private_jwk().items()
                                             if k in ("kty", "n", "e", "kid", "alg", "use")}]}
    return client, client.get("/accounts/oidc/callback/", {"code": "the-code", "state": params["state"]})


@pytest.fixture
def routed(monkeypatch, public_provider):
    """IDP_NAME resolves to a public address, and connections to it reach our loopback TLS server."""
    return (Resolver(monkeypatch, {IDP_NAME: [PUBLIC_ADDRESS], "internal.evil.test": [LOOPBACK]}),
            Route(monkeypatch, {(PUBLIC_ADDRESS, public_provider.port): (LOOPBACK, public_provider.port)}))


def test_a_public_provider_still_signs_in_with_the_guard_on(canary_tenants, guarded, routed, public_provider):
    key = rsa_signing_key("k1")
    public_provider.documents["/.well-known/openid-configuration"] = _discovery(public_provider)
    _configure(canary_tenants.a, public_provider.issuer)
    client, response = _sign_in(canary_tenants.a, public_provider, key)
    assert response.status_code == 302, _text(response)[:800]
    assert client.get("/console/").status_code == 200
    assert public_provider.paths == ["/.well-known/openid-configuration", "/token", "/jwks", "/userinfo"]
    assert (PUBLIC_ADDRESS, public_provider.port) in routed[1].connects


@pytest.mark.parametrize(("endpoint", "what", "served"), [
    ("token_endpoint", "token endpoint", ["/.well-known/openid-configuration"]),
    ("jwks_uri", "key set", ["/.well-known/openid-configuration", "/token"]),
    ("userinfo_endpoint", "userinfo", ["/.well-known/openid-configuration", "/token", "/jwks"]),
])
@pytest.mark.parametrize("host", ["internal.evil.test", LOOPBACK])
def test_a_discovery_document_naming_an_internal_endpoint_is_refused(canary_tenants, guarded, routed,
                                                                    public_provider, honeypot, endpoint, what,
                                                                    served, host):
    public_provider.documents["/.well-known/openid-configuration"] = _discovery(
        public_provider, **{endpoint: f"https://{host}:{honeypot.port}/latest/meta-data/iam"})
    _configure(canary_tenants.a, public_provider.issuer)
    client, response = _sign_in(canary_tenants.a, public_provider, rsa_signing_key("k1"))
    assert response.status_code == 502, _text(response)[:800]
    assert (f"the sign-in provider's {what} URL is not allowed: address 127.0.0.1 of '{host}' is not a public "
            "address") in _text(response)
    assert client.get("/console/").status_code == 302  # not signed in
    assert honeypot.hits == []
    assert public_provider.paths == served


def test_a_discovery_document_naming_a_plain_http_endpoint_is_refused(canary_tenants, guarded, routed,
                                                                      public_provider):
    public_provider.documents["/.well-known/openid-configuration"] = _discovery(
        public_provider, token_endpoint=f"http://{IDP_NAME}:{public_provider.port}/token")
    _configure(canary_tenants.a, public_provider.issuer)
    _client, response = _sign_in(canary_tenants.a, public_provider, rsa_signing_key("k1"))
    assert response.status_code == 502
    assert "token endpoint URL is not allowed: only https URLs are allowed" in _text(response)
    assert public_provider.paths == ["/.well-known/openid-configuration"]


def test_the_platform_provider_is_trusted_like_llm_url(canary_tenants, guarded, honeypot):
    """The operator's own OIDC_ISSUER is not checked (as LLM_URL is not): here it is on loopback and reached."""
    from tests.accounts.conftest import tenant_organization_bind

    guarded.OIDC_ISSUER, guarded.OIDC_CLIENT_ID = f"http://{LOOPBACK}:{honeypot.port}", CLIENT_ID
    tenant_organization_bind(canary_tenants.a.schema_name, "org-acme")
    response = Client(HTTP_HOST=canary_tenants.a.host).get("/accounts/oidc/authenticate/")
    assert response.status_code == 502  # the honeypot's answer is no discovery document of this issuer
    assert "not allowed" not in _text(response)
    assert len(honeypot.hits) == 1
