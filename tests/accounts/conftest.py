"""Fixtures of the sign-in tests: two real OpenID providers (npm oidc-provider, tests/support/oidc_provider.mjs)
on loopback, a Vault of our own holding the client secret, and tenant A configured to sign in through the
first provider. Provider 2 stands for another tenant's issuer: same client id, its own issuer URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts import oidc as oidc_module
from apps.core import secrets as secrets_module
from tests.conftest import HOST_A, HOST_B
from tests.support.oidc import ZITADEL_ROLES_CLAIM, OidcProvider, ProviderBrowser, node_binary, rsa_signing_key
from tests.support.vault_fake import FakeVault

CLIENT_ID = "console-a"
CLIENT_SECRET = "client-secret-a-0123456789abcdef"
OTHER_CLIENT_ID = "other-client"
OTHER_CLIENT_SECRET = "other-secret-0123456789abcdef"
PUBLIC_CLIENT_ID = "console-public"  # a public client: no secret, PKCE only
SECRET_KEY_NAME = "client_secret"


# Zitadel organisations of the shared provider: A's ("org-acme") and another tenant's ("org-other").
ORG_ACME = "org-acme"
ORG_OTHER = "org-other"


def _roles(*names: str, org: str = ORG_ACME) -> dict:
    """Zitadel's shape of the project roles claim: {role: {id of the organisation that granted it: its domain}}."""
    return {name: {org: f"{org}.zitadel.test"} for name in names}


ORG_CLAIM = "urn:zitadel:iam:user:resourceowner:id"
ACCOUNTS = {
    "alice-admin": {"email": "alice@acme.test", "email_verified": True, "name": "Alice",
                    ZITADEL_ROLES_CLAIM: _roles("admin"), ORG_CLAIM: ORG_ACME},
    "otto-otherorg": {"email": "otto@other.test", "email_verified": True,
                      ZITADEL_ROLES_CLAIM: _roles("admin", org=ORG_OTHER), ORG_CLAIM: ORG_OTHER},
    # A member of A's organisation who is a viewer there and an admin granted by the other organisation.
    "carl-crossgrant": {"email": "carl@acme.test", "email_verified": True, ORG_CLAIM: ORG_ACME,
                        ZITADEL_ROLES_CLAIM: {**_roles("viewer"), **_roles("admin", org=ORG_OTHER)}},
    "eddie-editor": {"email": "eddie@acme.test", "email_verified": True, ZITADEL_ROLES_CLAIM: _roles("editor"),
                     ORG_CLAIM: ORG_ACME},
    "vera-viewer": {"email": "vera@acme.test", "email_verified": True, ZITADEL_ROLES_CLAIM: _roles("viewer")},
    "multi-role": {"email": "multi@acme.test", "email_verified": True,
                   ZITADEL_ROLES_CLAIM: _roles("viewer", "editor", "unrelated")},
    "nora-norole": {"email": "nora@acme.test", "email_verified": True, ZITADEL_ROLES_CLAIM: _roles("billing")},
    "uma-unverified": {"email": "alice@acme.test", "email_verified": False, ZITADEL_ROLES_CLAIM: _roles("admin")},
}


def _client(client_id: str, secret: str, hosts: tuple[str, ...] = (HOST_A,)) -> dict:
    return {
        "client_id": client_id, **({"client_secret": secret} if secret else {}),
        "redirect_uris": [f"http://{host}/accounts/oidc/callback/" for host in hosts],
        "post_logout_redirect_uris": [f"http://{host}/" for host in hosts],
        "grant_types": ["authorization_code"], "response_types": ["code"],
        "token_endpoint_auth_method": "client_secret_basic", "id_token_signed_response_alg": "RS256",
    }


@pytest.fixture(scope="session")
def provider_key():
    return rsa_signing_key("key-provider-1")


@pytest.fixture(scope="session")
def provider_process(provider_key):
    if node_binary() is None:
        pytest.skip("Node.js is not installed: the OIDC tests run npm oidc-provider (make installs it)")
    started = OidcProvider.start(
        # CLIENT_ID knows both tenants' hosts, as the platform's default provider's client does (one client
        # for every tenant, tests/accounts/test_platform_provider.py).
        clients=[_client(CLIENT_ID, CLIENT_SECRET, (HOST_A, HOST_B)), _client(OTHER_CLIENT_ID, OTHER_CLIENT_SECRET),
                 {**_client(PUBLIC_CLIENT_ID, ""), "token_endpoint_auth_method": "none"}],
        accounts=ACCOUNTS, key=provider_key,
    )
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def _oidc_loopback_providers(settings):
    """The sign-in tests' providers listen on loopback over http: tenants may name them here
    (production's default refuses them; tests/accounts/test_oidc_ssrf.py switches it back off)."""
    settings.OIDC_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def provider(provider_process, settings):
    """The provider, with no queued token override and its original accounts for each test. It is on loopback,
    so tenants may name it (OIDC_ALLOW_PRIVATE_HOSTS; the attack suite uses this fixture too)."""
    settings.OIDC_ALLOW_PRIVATE_HOSTS = True
    provider_process.reset()
    yield provider_process
    provider_process.reset()


@pytest.fixture(scope="session")
def other_provider():
    """Tenant B's issuer: the same client id registered (so `aud` matches), its own issuer and key."""
    if node_binary() is None:
        pytest.skip("Node.js is not installed")
    started = OidcProvider.start(clients=[_client(CLIENT_ID, CLIENT_SECRET, (HOST_A, HOST_B))],
                                 accounts=ACCOUNTS, key=rsa_signing_key("key-provider-2"))
    yield started
    started.stop()


@pytest.fixture(scope="session")
def vault_server():
    with FakeVault() as fake:
        yield fake


@pytest.fixture
def vault_settings(settings, vault_server):
    settings.VAULT_ADDR = vault_server.url
    settings.VAULT_TOKEN = vault_server.create_token(0)
    settings.VAULT_REQUIRED = False
    settings.DEBUG = False
    secrets_module.secrets_reset()
    yield settings
    secrets_module.secrets_reset()


@pytest.fixture(autouse=True)
def _fresh_provider_cache():
    oidc_module.oidc_cache_clear()
    yield
    oidc_module.oidc_cache_clear()


@dataclass
class OidcTenant:
    schema_name: str
    host: str
    canary: str
    admin_password: str
    issuer: str

    def client(self) -> Client:
        return Client(HTTP_HOST=self.host)


def oidc_configure(tenant, *, issuer: str, vault_server: FakeVault, client_id: str = CLIENT_ID,
                   secret: str = CLIENT_SECRET, role_map: dict | None = None, organization_id: str = "") -> None:
    from apps.accounts.services import oidc_config_save

    path = f"gbo/tenants/{tenant.schema_name}/admin/oidc"
    vault_server.put_secret(path, {SECRET_KEY_NAME: secret})
    with schema_context(tenant.schema_name):
        oidc_config_save(issuer=issuer, client_id=client_id, client_secret=f"vault:{path}#{SECRET_KEY_NAME}",
                         role_map=role_map, organization_id=organization_id)


def tenant_organization_bind(schema_name: str, organization_id: str) -> None:
    """Bind a tenant to its organisation at the platform's provider, as support staff do (rolled back with the
    test's transaction)."""
    from apps.tenants.models import Tenant

    with schema_context("public"):
        assert Tenant.objects.filter(schema_name=schema_name).update(oidc_organization_id=organization_id) == 1


@pytest.fixture
def platform_provider(settings, provider):
    """`provider` as the platform's default provider (settings OIDC_*), for every tenant without its own."""
    settings.OIDC_ISSUER, settings.OIDC_CLIENT_ID, settings.OIDC_CLIENT_SECRET = (
        provider.issuer, CLIENT_ID, CLIENT_SECRET)
    return provider


@pytest.fixture
def oidc_tenant(db, canary_tenants, provider, vault_server, vault_settings) -> OidcTenant:
    """Tenant A signing in through `provider` (rolled back after the test with the test's transaction)."""
    a = canary_tenants.a
    oidc_configure(a, issuer=provider.issuer, vault_server=vault_server)
    return OidcTenant(a.schema_name, a.host, a.canary, a.admin_password, provider.issuer)


@pytest.fixture
def browser(provider) -> ProviderBrowser:
    return ProviderBrowser(provider)


def authorization_params(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def sign_in_start(client: Client, next_path: str = "/console/") -> str:
    """The authorization request URL our authenticate view redirects to."""
    response = client.get("/accounts/oidc/authenticate/", {"next": next_path})
    assert response.status_code == 302, response.content[:500]
    return response["Location"]


def sign_in(client: Client, browser: ProviderBrowser, sub: str, next_path: str = "/console/"):
    """A whole console sign-in: our redirect, the provider's login, our callback. Returns the callback's response."""
    back = browser.authorize(sign_in_start(client, next_path), sub=sub)
    return client.get(back)
