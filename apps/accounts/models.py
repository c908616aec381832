"""Accounts and access of one tenant (rows in the tenant's schema): its OIDC provider, its console users'
identities and roles, and its API keys."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q

from apps.accounts.roles import DEFAULT_ROLE_MAP, ZITADEL_ROLES_CLAIM, Role, role_map_validate

ISSUER_MAX_LENGTH = 500
CLIENT_ID_MAX_LENGTH = 255
SECRET_REFERENCE_MAX_LENGTH = 500
SUBJECT_MAX_LENGTH = 255  # OIDC Core §2: `sub` is at most 255 ASCII characters
DEFAULT_SCOPES = "openid email profile"
# Loopback issuers may use plain http (a provider on the same machine, as in the tests); any other issuer
# must be https, or a network attacker could swap the provider's keys and sign tokens of their own.
LOOPBACK_HOSTS = {"localhost"}


def default_role_map() -> dict[str, str]:
    return dict(DEFAULT_ROLE_MAP)


def issuer_validate(issuer: str) -> None:
    parts = urlsplit(issuer)
    if parts.scheme not in {"https", "http"} or not parts.hostname or parts.query or parts.fragment:
        raise ValidationError({"issuer": f"{issuer!r} is not an issuer URL (https://host[/path])"})
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ValidationError({"issuer": "the issuer must use https (plain http only for a provider on loopback)"})


def issuer_reachable_validate(issuer: str) -> None:
    """A tenant's issuer must be an https URL whose host resolves to public addresses only (the SSRF guard's
    rules), unless OIDC_ALLOW_PRIVATE_HOSTS: otherwise a tenant admin could make the platform request its own
    network (cloud metadata, Vault, internal services). Checked again at every request (DNS rebinding)."""
    from apps.accounts.oidc import private_hosts_allowed, provider_url_check
    from apps.basic.ssrf import SSRFError

    if private_hosts_allowed():
        return
    try:
        provider_url_check(issuer)
    except SSRFError as exc:
        raise ValidationError({"issuer": f"the issuer {issuer} cannot be used: {exc} (the platform requests only "
                                         "https providers on public addresses)"}) from None


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class OidcConfig(models.Model):
    """The tenant's OIDC provider (Zitadel in production). At most one row is enabled; with none, the
    platform default from settings (OIDC_ISSUER...) applies, and without that, local passwords."""

    issuer = models.URLField(max_length=ISSUER_MAX_LENGTH)
    client_id = models.CharField(max_length=CLIENT_ID_MAX_LENGTH)
    # `vault:<path>#<key>` under gbo/tenants/<this tenant>/admin/, or empty for a public client (PKCE only).
    # Encrypted storage of a literal value comes with apps.core.crypto.
    client_secret = models.CharField(max_length=SECRET_REFERENCE_MAX_LENGTH, blank=True)
    scopes = models.CharField(max_length=200, default=DEFAULT_SCOPES)
    roles_claim = models.CharField(max_length=200, default=ZITADEL_ROLES_CLAIM)
    role_map = models.JSONField(default=default_role_map)
    # Zitadel with one organisation per tenant: only users of this organisation (the claim
    # ZITADEL_RESOURCE_OWNER_CLAIM), with roles it granted, may sign in; blank: no such check. (The platform
    # default provider takes it from tenants.Tenant.oidc_organization_id, and blank there admits nobody.)
    organization_id = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "accounts_oidc_config"
        constraints = [
            models.UniqueConstraint(fields=["enabled"], condition=Q(enabled=True), name="accounts_one_enabled_oidc"),
        ]

    def __str__(self) -> str:
        return f"{self.issuer} ({self.client_id})"

    @property
    def is_platform_default(self) -> bool:
        """The platform's provider from settings (never saved; see selectors.oidc_config_effective): shared by
        every tenant, so it admits only the tenant's bound organisation, and nobody without one."""
        return self.pk is None

    @property
    def organization_unbound(self) -> bool:
        """The platform's provider on a tenant bound to no organisation there: nobody may sign in."""
        return self.is_platform_default and not self.organization_id

    def clean(self) -> None:
        from django.db import connection

        from apps.bots.config_csv import config_is_secret_reference
        from apps.core.secrets import config_secret_reference_parse, tenant_admin_path

        issuer_validate(self.issuer)
        issuer_reachable_validate(self.issuer)
        if "openid" not in self.scopes.split():
            raise ValidationError({"scopes": "the scopes must include 'openid'"})
        try:
            self.role_map = role_map_validate(self.role_map)
        except ValueError as exc:
            raise ValidationError({"role_map": str(exc)}) from None
        if self.client_secret:
            if not config_is_secret_reference(self.client_secret):
                raise ValidationError({"client_secret": "give the client secret as a Vault reference "
                                                        "vault:gbo/tenants/<tenant>/admin/<path>#<key> (or leave "
                                                        "it empty for a public client)"})
            try:
                path, _ = config_secret_reference_parse(self.client_secret)
            except ValueError as exc:
                raise ValidationError({"client_secret": str(exc)}) from None
            # Under the admins' own path, which bot configuration (written by editors) can never resolve.
            admin = tenant_admin_path(connection.schema_name)
            if path != admin and not path.startswith(admin + "/"):
                raise ValidationError({"client_secret": f"keep the client secret under {admin}/ (bot configuration "
                                                        "can name the tenant's other secrets)"})


class ConsoleProfile(models.Model):
    """A console user's identity and role. OIDC users are found by (issuer, subject), never by email; their
    role is the one their last token mapped to. Local users (no OIDC) have no subject: the tenant's
    superusers are admins, others hold `role`."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="console_profile")
    role = models.CharField(max_length=10, choices=Role.choices, blank=True)
    oidc_issuer = models.CharField(max_length=ISSUER_MAX_LENGTH, blank=True)
    oidc_subject = models.CharField(max_length=SUBJECT_MAX_LENGTH, blank=True)
    email = models.EmailField(blank=True)  # stored only when the provider says it is verified
    display_name = models.CharField(max_length=200, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "accounts_console_profile"
        constraints = [
            models.UniqueConstraint(fields=["oidc_issuer", "oidc_subject"], condition=~Q(oidc_subject=""),
                                    name="accounts_one_user_per_oidc_subject"),
        ]

    def __str__(self) -> str:
        return self.display_name or str(self.user_id)


class ApiKey(models.Model):
    """A tenant's API key. Only a SHA-256 hash of the secret is kept; the prefix identifies the key in lists
    and logs. The key works on this tenant's host only (its row lives in this tenant's schema).

    A key acts with at most its creator's current authority: each use needs `created_by` to exist, be active
    and still hold the console role the scope and endpoint need (apps.accounts.services.api_key_authenticate).
    Deleting the creator revokes the key (`revoked_reason` says so) before the foreign key is set to NULL; a key
    whose `created_by` is NULL works nowhere. One with no `revoked_reason` either is "ownerless" (made before
    keys belonged to a user) and can be given an owner with `manage.py api_key_adopt`."""

    REVOKED_CREATOR_DELETED = "creator_deleted"

    prefix = models.CharField(max_length=16, unique=True)
    secret_hash = models.CharField(max_length=64)
    name = models.CharField(max_length=100)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    # Why the platform revoked it by itself ("" when someone revoked it, or it is live).
    revoked_reason = models.CharField(max_length=32, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "accounts_api_key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"
