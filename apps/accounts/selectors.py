"""Reads: which OIDC provider a tenant signs in with, a user's console role, the tenant's API keys."""

from __future__ import annotations

import contextlib

from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django_tenants.utils import get_public_schema_name

from apps.accounts.models import DEFAULT_SCOPES, ApiKey, ConsoleProfile, OidcConfig
from apps.accounts.oidc import ProviderSettings
from apps.accounts.roles import DEFAULT_ROLE_MAP, ZITADEL_ROLES_CLAIM, Role


def _in_tenant_schema() -> bool:
    schema = getattr(connection, "schema_name", "")
    return bool(schema) and schema != get_public_schema_name()


def platform_organization_id() -> str:
    """The current tenant's organisation at the platform's default provider (Tenant.oidc_organization_id,
    set by support staff or provisioning), "" when it is bound to none."""
    from apps.tenants.models import Tenant

    tenant = getattr(connection, "tenant", None)
    if isinstance(tenant, Tenant) and tenant.schema_name == connection.schema_name:
        return tenant.oidc_organization_id  # the request's tenant, read by the host middleware
    # A schema_context (tasks, shells, tests): the tenants table is in `public`, on every search path.
    found = Tenant.objects.filter(schema_name=connection.schema_name).values_list("oidc_organization_id", flat=True)
    return found.first() or ""


def oidc_config_effective() -> OidcConfig | None:
    """The provider this tenant signs in with: its enabled OidcConfig row, else the platform default from
    settings (OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET), else None (local passwords). Never a
    provider on the public host, whose admin is for the platform's staff and their passwords.

    The platform default is one provider shared by every tenant (Zitadel, an organisation per tenant): it
    carries the tenant's own organisation there, and with none (`organization_unbound`) admits nobody."""
    if not _in_tenant_schema():
        return None
    config = OidcConfig.objects.filter(enabled=True).first()
    if config is not None:
        return config
    if getattr(settings, "OIDC_ISSUER", "") and getattr(settings, "OIDC_CLIENT_ID", ""):
        return OidcConfig(
            issuer=settings.OIDC_ISSUER, client_id=settings.OIDC_CLIENT_ID,
            client_secret=getattr(settings, "OIDC_CLIENT_SECRET", ""), scopes=DEFAULT_SCOPES,
            roles_claim=ZITADEL_ROLES_CLAIM, role_map=dict(DEFAULT_ROLE_MAP),
            organization_id=platform_organization_id(), enabled=True,
        )
    return None


def oidc_provider_settings(config: OidcConfig) -> ProviderSettings:
    """The config with its client secret resolved from Vault. A tenant's own row may only name its own
    secrets (gbo/tenants/<schema>/...); the platform default (not saved) may name any path.

    Raises ValueError (malformed or out-of-scope reference), or SecretNotFound / SecretUnavailable.
    """
    from apps.core.secrets import config_secret_value, secret_scope_prefixes

    allowed = None
    if config.pk is not None:
        allowed = secret_scope_prefixes(tenant=connection.schema_name, org=None, bot=None)
    secret = config_secret_value(config.client_secret, allowed_prefixes=allowed) if config.client_secret else ""
    return ProviderSettings(
        issuer=config.issuer, client_id=config.client_id, client_secret=secret, scopes=config.scopes,
        roles_claim=config.roles_claim, role_map=dict(config.role_map), organization_id=config.organization_id,
        organization_required=config.is_platform_default, trusted=config.is_platform_default,
    )


def console_profile_of(user) -> ConsoleProfile | None:
    if not getattr(user, "is_authenticated", False) or getattr(user, "pk", None) is None:
        return None
    try:
        return user.console_profile
    except ConsoleProfile.DoesNotExist:
        return None


def user_console_role(user) -> Role | None:
    """The console role of a signed-in user, or None (no console access).

    OIDC users hold exactly what their last token mapped to. Local users (no OIDC): the tenant's superusers
    and staff (the admin `tenant_create` makes) are admins; others hold their profile's role, if any.
    """
    if not getattr(user, "is_authenticated", False):
        return None
    profile = console_profile_of(user)
    if profile is not None and profile.oidc_subject:
        return Role(profile.role) if profile.role else None
    if user.is_active and (user.is_superuser or user.is_staff):
        return Role.ADMIN
    if profile is not None and profile.role:
        return Role(profile.role)
    return None


def api_key_list(*, include_revoked: bool = False) -> QuerySet[ApiKey]:
    keys = ApiKey.objects.all()
    return keys if include_revoked else keys.filter(revoked_at__isnull=True)


def admin_secret_references() -> frozenset[tuple[str, str]]:
    """The (path, key) of the Vault secrets the current tenant's admin configuration names (its OIDC client
    secrets): bot configuration, which editors write, must never resolve them (apps.core.secrets.
    bot_config_secret_value). Those kept under gbo/tenants/<tenant>/admin are refused by their path anyway; this
    covers secrets saved before that path existed."""
    from apps.bots.config_csv import config_is_secret_reference
    from apps.core.secrets import config_secret_reference_parse

    found = set()
    for reference in OidcConfig.objects.exclude(client_secret="").values_list("client_secret", flat=True):
        if config_is_secret_reference(reference):
            with contextlib.suppress(ValueError):  # malformed: it names nothing a bot could read either
                found.add(config_secret_reference_parse(reference))
    return frozenset(found)
