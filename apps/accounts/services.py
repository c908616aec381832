"""Writes: OIDC configuration, signing an OIDC user in (by issuer and subject), API keys.

Failure modes prevented:
- Account takeover through a shared or recycled email: an OIDC user is found by (issuer, sub) only; the
  email is display data, stored only when verified.
- A user with no role left behind as a console account: a token that maps to no console role creates no
  user (test plan I10), and an existing user's role is cleared so the next request has no access.
- Leaked API keys from the database: only a SHA-256 hash of the secret part is stored; the full key is
  returned once, at creation. A 32-byte random secret makes a plain hash sufficient (no dictionary to
  attack), and comparison is constant-time.
- A key used past revocation or expiry, or on another tenant: every use checks both, and the lookup runs
  in the schema of the host it was sent to, where another tenant's key has no row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from apps.accounts.models import SUBJECT_MAX_LENGTH, ApiKey, ConsoleProfile, OidcConfig
from apps.accounts.roles import Role
from apps.compliance.services import audit_log_available, audit_record

# --- OIDC configuration ------------------------------------------------------------------------------------


def oidc_config_save(*, issuer: str, client_id: str, client_secret: str = "", scopes: str | None = None,
                     roles_claim: str | None = None, role_map: dict[str, str] | None = None,
                     organization_id: str = "", request: HttpRequest | None = None) -> OidcConfig:
    """Enable this provider for the tenant (replacing any enabled one). ValidationError says what is wrong."""
    with transaction.atomic():
        OidcConfig.objects.filter(enabled=True).update(enabled=False)
        config = OidcConfig(issuer=issuer, client_id=client_id, client_secret=client_secret,
                            organization_id=organization_id, enabled=True)
        if scopes is not None:
            config.scopes = scopes
        if roles_claim is not None:
            config.roles_claim = roles_claim
        if role_map is not None:
            config.role_map = role_map
        config.full_clean()
        config.save()
        _audit("accounts.oidc_configured", object_type="oidc_config", object_id=config.pk,
               summary={"issuer": issuer, "client_id": client_id}, request=request)
    return config


def oidc_config_disable(*, request: HttpRequest | None = None) -> int:
    """Turn the tenant's own provider off (the platform default, if any, applies again)."""
    with transaction.atomic():
        count = OidcConfig.objects.filter(enabled=True).update(enabled=False)
        if count:
            _audit("accounts.oidc_disabled", object_type="oidc_config", request=request)
    return count


# --- OIDC users --------------------------------------------------------------------------------------------

# Usernames of OIDC users are derived from (issuer, sub): unique, stable, and not a reassignable claim.
OIDC_USERNAME_PREFIX = "oidc-"
OIDC_USERNAME_HASH_CHARS = 32
DISPLAY_NAME_MAX_LENGTH = 200


def oidc_username(issuer: str, subject: str) -> str:
    digest = hashlib.sha256(f"{issuer}\n{subject}".encode()).hexdigest()
    return OIDC_USERNAME_PREFIX + digest[:OIDC_USERNAME_HASH_CHARS]


def _display_name(claims: dict[str, Any], email: str) -> str:
    for value in (email, claims.get("preferred_username"), claims.get("name"), claims.get("sub")):
        if isinstance(value, str) and value.strip():
            return value.strip()[:DISPLAY_NAME_MAX_LENGTH]
    return ""


def oidc_user_sign_in(*, issuer: str, claims: dict[str, Any], email: str, role: Role | None):
    """The user for (issuer, sub) with role and display data from these claims; None when `role` is None
    (no console access: no user is created, an existing one loses its role)."""
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > SUBJECT_MAX_LENGTH:
        raise ValueError("malformed subject")
    user_model = get_user_model()
    with transaction.atomic():
        profile = (ConsoleProfile.objects.select_for_update().select_related("user")
                   .filter(oidc_issuer=issuer, oidc_subject=subject).first())
        if role is None:
            if profile is not None and profile.role:
                profile.role = ""
                profile.save(update_fields=["role", "updated_at"])
            return None
        if profile is None:
            user = user_model(username=oidc_username(issuer, subject))
            user.set_unusable_password()
            user.save()
            profile = ConsoleProfile(user=user, oidc_issuer=issuer, oidc_subject=subject)
        profile.role = role.value
        profile.email = email
        profile.display_name = _display_name(claims, email)
        profile.save()
        user = profile.user
        if user.email != email:
            user.email = email
            user.save(update_fields=["email"])
    return user


# --- API keys ----------------------------------------------------------------------------------------------

API_KEY_SCOPES = ("chat", "kb:search", "bots:read", "bots:deploy")
API_KEY_TAG = "gbk"
# 6 random bytes of prefix: collisions stay negligible for any realistic number of keys per tenant, and
# the prefix is short enough to show in lists and logs.
API_KEY_PREFIX_BYTES = 6
# 32 random bytes of secret (256 bits): out of reach of guessing, so one SHA-256 round is enough.
API_KEY_SECRET_BYTES = 32
API_KEY_RE = re.compile(r"^gbk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
API_KEY_NAME_MAX_LENGTH = 100
# last_used_at is written at most this often per key: a busy script must not cost a write per request.
API_KEY_LAST_USED_RESOLUTION_S = 60


class ApiKeyRejected(Exception):
    """A presented key is unusable; `reason` is safe to return to the client."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class ApiKeyCreated:
    key: ApiKey
    secret: str  # the full key, shown once


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_scopes_validate(scopes: list[str]) -> list[str]:
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(API_KEY_SCOPES)}")
    unknown = [scope for scope in scopes if scope not in API_KEY_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; use {', '.join(API_KEY_SCOPES)}")
    return sorted(set(scopes))


def api_key_create(*, name: str, scopes: list[str], created_by=None, expires_at: dt.datetime | None = None,
                   request: HttpRequest | None = None) -> ApiKeyCreated:
    """A new key for this tenant; the returned `secret` is the only time the full key exists."""
    name = name.strip()
    if not name or len(name) > API_KEY_NAME_MAX_LENGTH:
        raise ValueError(f"the key name must be 1 to {API_KEY_NAME_MAX_LENGTH} characters")
    scopes = api_key_scopes_validate(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry date is in the past")
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    raw = f"{API_KEY_TAG}_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"
    with transaction.atomic():
        key = ApiKey.objects.create(prefix=prefix, secret_hash=api_key_hash(raw), name=name, scopes=scopes,
                                    created_by=created_by if getattr(created_by, "pk", None) else None,
                                    expires_at=expires_at)
        _audit("apikey.created", actor=created_by, object_type="api_key", object_id=prefix,
               summary={"name": name, "scopes": scopes,
                        "expires_at": expires_at.isoformat() if expires_at else None},
               request=request)
    return ApiKeyCreated(key=key, secret=raw)


def api_key_revoke(*, prefix: str, revoked_by=None, request: HttpRequest | None = None) -> ApiKey:
    """Revoke a key by its prefix (idempotent). ApiKey.DoesNotExist when this tenant has no such key."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(prefix=prefix)
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            _audit("apikey.revoked", actor=revoked_by, object_type="api_key", object_id=prefix,
                   summary={"name": key.name}, request=request)
    return key


def api_key_authenticate(raw_key: str) -> ApiKey:
    """The tenant's live key matching `raw_key`, or ApiKeyRejected with the reason."""
    match = API_KEY_RE.match(raw_key.strip())
    if match is None:
        raise ApiKeyRejected("malformed API key")
    key = ApiKey.objects.filter(prefix=match.group(1)).first()
    # Hash either way so an unknown prefix costs what a known one does.
    presented = api_key_hash(raw_key.strip())
    if key is None or not hmac.compare_digest(presented, key.secret_hash):
        raise ApiKeyRejected("unknown API key for this tenant")
    now = timezone.now()
    if key.revoked_at is not None:
        raise ApiKeyRejected("this API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise ApiKeyRejected("this API key has expired")
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= API_KEY_LAST_USED_RESOLUTION_S:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


# --- audit -------------------------------------------------------------------------------------------------


def _audit(action: str, *, actor: Any = None, object_type: str = "", object_id: Any = "",
           summary: Any = "", request: HttpRequest | None = None) -> None:
    """Record in the tenant's audit log (commands run in a tenant schema too; the public schema has none)."""
    if audit_log_available():
        audit_record(action=action, actor=actor, object_type=object_type, object_id=object_id, summary=summary,
                     request=request)


def access_audit(action: str, *, request: HttpRequest | None, actor: Any = None, summary: Any = "",
                 object_type: str = "", object_id: Any = "") -> None:
    """Sign-in outcomes and access denials, from the views and decorators of this app."""
    _audit(action, actor=actor, object_type=object_type, object_id=object_id, summary=summary, request=request)
