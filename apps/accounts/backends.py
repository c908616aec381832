"""Authentication backends (settings.AUTHENTICATION_BACKENDS): the tenant's OIDC provider, and local
passwords only where no OIDC is configured.

Failure modes prevented:
- A password sign-in (or an old password session) on a tenant that signs in through OIDC: the local
  backend refuses to authenticate and to load users there, so turning OIDC on ends local sessions.
- A session surviving a provider change: an OIDC user is loaded only while the tenant still signs in with
  the issuer that user came from (and, on the platform's default provider, while the tenant is bound to an
  organisation there).
- Schema confusion on the public host: no tenant table is read there; its admin uses passwords of the
  public schema's own (staff) users.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.http import HttpRequest
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from apps.accounts import oidc
from apps.accounts.models import ConsoleProfile, OidcConfig
from apps.accounts.roles import ZITADEL_RESOURCE_OWNER_CLAIM, Role, console_role_from_claims
from apps.accounts.selectors import oidc_config_effective, oidc_provider_settings
from apps.accounts.services import oidc_user_sign_in

OIDC_BACKEND_PATH = "apps.accounts.backends.TenantOIDCBackend"
LOCAL_BACKEND_PATH = "apps.accounts.backends.LocalPasswordBackend"


class LocalPasswordBackend(ModelBackend):
    """Django's username/password backend, switched off on tenants that sign in through OIDC."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any):
        if oidc_config_effective() is not None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)

    def get_user(self, user_id: Any):
        if oidc_config_effective() is not None:
            return None
        return super().get_user(user_id)


@dataclass(frozen=True)
class OidcSignIn:
    """The outcome of a completed code flow: `user` is None when the token maps to no console role."""

    user: Any
    role: Role | None
    subject: str
    display: str
    id_token: str
    auth_time: float | None = None  # when the provider last asked the user for credentials (the ID token's claim)


class TenantOIDCBackend(OIDCAuthenticationBackend):
    """mozilla-django-oidc's backend with the provider taken from the tenant at request time.

    The library's settings-driven constructor and its email-matching user lookup are replaced: users are
    keyed by (issuer, sub) and the ID token is checked by `apps.accounts.oidc.id_token_verify`. It stays a
    subclass so the library's parts that test for an OIDC session (SessionRefresh) still recognise it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.UserModel = get_user_model()

    def authenticate(self, request: HttpRequest | None, **kwargs: Any):
        """Only the callback view signs in through OIDC (it calls `sign_in`); password attempts get None."""
        return None

    def sign_in(self, request: HttpRequest, *, config: OidcConfig, code: str, nonce: str, code_verifier: str,
                redirect_uri: str) -> OidcSignIn:
        """Exchange the code, check every token and claim, and find or create the user. Raises OidcError."""
        try:
            provider = oidc_provider_settings(config)
        except Exception as exc:  # a Vault outage or a bad reference: the tenant's config, not the user
            raise oidc.OidcProviderUnavailable(f"the provider's client secret is unavailable ({type(exc).__name__})") \
                from None
        metadata = oidc.provider_metadata(provider.issuer, trusted=provider.trusted)
        tokens = oidc.code_exchange(provider=provider, metadata=metadata, code=code, redirect_uri=redirect_uri,
                                    code_verifier=code_verifier)
        id_token = tokens["id_token"]
        id_claims = oidc.id_token_verify(id_token, metadata=metadata, client_id=provider.client_id, nonce=nonce)
        userinfo = oidc.userinfo_fetch(metadata=metadata, access_token=str(tokens.get("access_token") or ""),
                                       subject=id_claims["sub"])
        claims = oidc.claims_merge(id_claims, userinfo)
        oidc.organization_check(claims, organization_id=provider.organization_id, claim=ZITADEL_RESOURCE_OWNER_CLAIM,
                                required=provider.organization_required)
        email = oidc.email_verified_or_refuse(claims)
        role = console_role_from_claims(claims, roles_claim=provider.roles_claim, role_map=provider.role_map,
                                        organization_id=provider.organization_id)
        user = oidc_user_sign_in(issuer=provider.issuer, claims=claims, email=email, role=role)
        if user is not None:
            user.backend = OIDC_BACKEND_PATH
        display = email or str(claims.get("preferred_username") or claims["sub"])
        auth_time = id_claims.get("auth_time")
        return OidcSignIn(user=user, role=role, subject=claims["sub"], display=display, id_token=id_token,
                          auth_time=float(auth_time) if isinstance(auth_time, int | float) else None)

    def get_user(self, user_id: Any):
        config = oidc_config_effective()
        if config is None or config.organization_unbound:
            return None  # unbinding a tenant from its organisation ends its sessions at once
        profile = (ConsoleProfile.objects.select_related("user")
                   .filter(user_id=user_id, oidc_issuer=config.issuer).exclude(oidc_subject="").first())
        if profile is None or not profile.user.is_active:
            return None
        return profile.user
