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
- A key outliving its creator's authority (an admin demoted to viewer, deactivated, deleted, or left with no
  role by the identity provider at the next sign-in, still deploying bots with the key made as admin): a key
  acts with at most its creator's current console role, read in the same query as the key on every use, so
  every way a role changes (console role set, OIDC role mapping, superuser flag, deactivation) takes effect
  on the next request with no code of its own. Deleting the creator also revokes the key (`revoked_reason`),
  so the key list says why it stopped.
- Keys made before keys had an owner (the `api_key_create` command stored no creator) stopping on upgrade with
  a misleading "creator no longer exists": a key with no creator and no `revoked_reason` is "ownerless" and
  its refusal says so and how to keep it (`api_key_adopt`, which gives it an owner holding its scopes' roles).
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
from apps.accounts.roles import ROLE_RANK, Role, role_allows
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

# Each scope guards the endpoints declaring it with api_access: kb:search POST /api/kb/search, bots:deploy
# POST /api/bots/deploy (tests/accounts/test_api_key_scopes.py checks every one is used by a tenant URL).
API_KEY_SCOPES = ("kb:search", "bots:deploy")
# Scopes once offered that guarded nothing: the chat (web chat, its WebSocket and REST API) and the bot
# directory GET /api/bots are public by design (General Bots' protocol: anonymous visitors, a session id as
# the capability), so a key with them protected nothing an admin might have thought it did. Keys holding them
# keep their other scopes; new keys cannot ask for them.
RETIRED_API_KEY_SCOPES = {
    "chat": "the chat API is public (anonymous visitors, the session id is the capability): no key is checked",
    "bots:read": "the bot directory GET /api/bots is public (names only): no key is checked",
}
# The console role a key's creator must hold for the key to use each scope (the role a console user needs
# for the same endpoints); a key never does more than its creator could do signed in.
API_KEY_SCOPE_ROLES = {"kb:search": Role.VIEWER, "bots:deploy": Role.EDITOR}
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
    """A presented key is unusable; `reason` is safe to return to the client. `key` is the key when it is
    genuine (its secret matched) but its creator's authority is gone, with `detail` for the audit log and
    `status` 401 (the key works nowhere now) or 403 (its creator's role is too low for this endpoint)."""

    def __init__(self, reason: str, *, key: ApiKey | None = None, status: int = 401,
                 detail: dict[str, Any] | None = None) -> None:
        self.reason = reason
        self.key = key
        self.status = status
        self.detail = detail or {}
        super().__init__(reason)


# Why a key's creator gives it no authority at all.
CREATOR_DELETED = "creator_deleted"
CREATOR_INACTIVE = "creator_inactive"
CREATOR_NO_ROLE = "creator_no_role"
# No creator ever recorded (made by the command before keys belonged to a user): adoptable.
CREATOR_NONE = "creator_none"
_CREATOR_PROBLEM_REASONS = {
    CREATOR_NONE: "this API key has no owner (it was made before keys belonged to a user); a tenant admin can "
                  "adopt it with `manage.py api_key_adopt` or create a new key",
    CREATOR_DELETED: "this API key's creator no longer exists; create a new key",
    CREATOR_INACTIVE: "this API key's creator is deactivated",
    CREATOR_NO_ROLE: "this API key's creator no longer has console access",
}


@dataclass(frozen=True)
class ApiKeyAuthority:
    """What a key may do now: its creator's current console role (`role`), or why it may do nothing
    (`problem`, one of CREATOR_*). `creator` is the creator's username ("" once deleted)."""

    creator: str
    role: Role | None
    problem: str = ""

    def allows(self, required: Role | str) -> bool:
        return not self.problem and role_allows(self.role, required)

    def scopes_refused(self, scopes: list[str]) -> list[str]:
        """The scopes among `scopes` the creator's role no longer grants (all of them when it has none)."""
        return [scope for scope in scopes if not self.allows(api_key_scope_role(scope))]


def api_key_scope_role(scope: str) -> Role:
    """The console role a key's creator must hold for the key to use `scope` (unknown scopes: admin)."""
    return API_KEY_SCOPE_ROLES.get(scope, Role.ADMIN)


def role_max(*roles: Role | str) -> Role:
    return max((Role(role) for role in roles), key=lambda role: ROLE_RANK[role])


def api_key_authority(key: ApiKey) -> ApiKeyAuthority:
    """The key's creator's current authority. Reads `key.created_by` and its console profile: select them
    with the key (`select_related("created_by__console_profile")`) to keep this free of queries."""
    from apps.accounts.selectors import user_console_role

    creator = key.created_by if key.created_by_id is not None else None
    if creator is None:
        ownerless = not key.revoked_reason  # a deleted creator's keys are revoked with revoked_reason set
        return ApiKeyAuthority(creator="", role=None, problem=CREATOR_NONE if ownerless else CREATOR_DELETED)
    name = creator.get_username()
    if not creator.is_active:
        return ApiKeyAuthority(creator=name, role=None, problem=CREATOR_INACTIVE)
    role = user_console_role(creator)
    if role is None:
        return ApiKeyAuthority(creator=name, role=None, problem=CREATOR_NO_ROLE)
    return ApiKeyAuthority(creator=name, role=role)


@dataclass(frozen=True)
class ApiKeyCreated:
    key: ApiKey
    secret: str  # the full key, shown once


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_scopes_validate(scopes: list[str]) -> list[str]:
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(API_KEY_SCOPES)}")
    retired = [scope for scope in scopes if scope in RETIRED_API_KEY_SCOPES]
    if retired:
        raise ValueError("; ".join(f"scope {scope!r} is not offered: {RETIRED_API_KEY_SCOPES[scope]}"
                                   for scope in retired) + f"; use {', '.join(API_KEY_SCOPES)}")
    unknown = [scope for scope in scopes if scope not in API_KEY_SCOPES]
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(map(repr, unknown))}; use {', '.join(API_KEY_SCOPES)}")
    return sorted(set(scopes))


def api_key_create(*, name: str, scopes: list[str], created_by, expires_at: dt.datetime | None = None,
                   request: HttpRequest | None = None) -> ApiKeyCreated:
    """A new key for this tenant, acting for `created_by` (a user of this tenant who holds the console role
    every scope needs, and keeps needing it for the key to work); the returned `secret` is the only time the
    full key exists."""
    name = name.strip()
    if not name or len(name) > API_KEY_NAME_MAX_LENGTH:
        raise ValueError(f"the key name must be 1 to {API_KEY_NAME_MAX_LENGTH} characters")
    scopes = api_key_scopes_validate(scopes)
    if expires_at is not None and expires_at <= timezone.now():
        raise ValueError("the expiry date is in the past")
    if getattr(created_by, "pk", None) is None:
        raise ValueError("an API key acts for the user who creates it: give a user of this tenant")
    _api_key_owner_check(created_by, scopes, doing="create API keys")
    prefix = secrets.token_hex(API_KEY_PREFIX_BYTES)
    raw = f"{API_KEY_TAG}_{prefix}_{secrets.token_urlsafe(API_KEY_SECRET_BYTES)}"
    with transaction.atomic():
        key = ApiKey.objects.create(prefix=prefix, secret_hash=api_key_hash(raw), name=name, scopes=scopes,
                                    created_by=created_by, expires_at=expires_at)
        _audit("apikey.created", actor=created_by, object_type="api_key", object_id=prefix,
               summary={"name": name, "scopes": scopes,
                        "expires_at": expires_at.isoformat() if expires_at else None},
               request=request)
    return ApiKeyCreated(key=key, secret=raw)


def _api_key_owner_check(user, scopes: list[str], *, doing: str) -> None:
    """ValueError unless `user` is active and holds the console role of every scope in `scopes`."""
    authority = api_key_authority(ApiKey(created_by=user))
    if authority.problem == CREATOR_INACTIVE:
        raise ValueError(f"{authority.creator} is deactivated and cannot {doing}")
    if authority.problem:
        raise ValueError(f"{authority.creator} has no console role and cannot {doing}")
    refused = authority.scopes_refused(scopes)
    if refused:
        raise ValueError(f"{authority.creator} holds the {authority.role.value} role, which does not grant "
                         + ", ".join(f"{scope} (needs {api_key_scope_role(scope).value})" for scope in refused))


def api_key_adopt(*, prefix: str, user) -> ApiKey:
    """Give an ownerless key (no creator and never revoked: made by the command before keys belonged to a user)
    `user` as its creator, who must be active and hold the role of every scope of the key, as to create it.
    ApiKey.DoesNotExist when this tenant has no such key; ValueError when it is revoked, already has a creator,
    or `user` may not hold it. Audited as apikey.adopted."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().get(prefix=prefix)
        if key.revoked_reason == ApiKey.REVOKED_CREATOR_DELETED:
            raise ValueError(f"API key {prefix} was revoked when its creator was deleted; create a new key")
        if key.revoked_at is not None:
            raise ValueError(f"API key {prefix} is revoked; create a new key")
        if key.created_by_id is not None:
            raise ValueError(f"API key {prefix} already belongs to {key.created_by.get_username()}; only a key "
                             "with no owner can be adopted")
        _api_key_owner_check(user, key.scopes, doing="adopt API keys")
        key.created_by = user
        key.save(update_fields=["created_by"])
        _audit("apikey.adopted", actor=user, object_type="api_key", object_id=prefix,
               summary={"name": key.name, "scopes": key.scopes, "creator": user.get_username()})
    return key


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


def api_key_authenticate(raw_key: str, *, role: Role | str | None = None) -> ApiKey:
    """The tenant's live key matching `raw_key`, or ApiKeyRejected with the reason.

    The key's creator must still exist, be active and hold a console role, and `role` (what the endpoint and
    scope need, see `api_key_scope_role`) when given: read with the key in one query."""
    match = API_KEY_RE.match(raw_key.strip())
    if match is None:
        raise ApiKeyRejected("malformed API key")
    key = (ApiKey.objects.select_related("created_by", "created_by__console_profile")
           .filter(prefix=match.group(1)).first())
    # Hash either way so an unknown prefix costs what a known one does.
    presented = api_key_hash(raw_key.strip())
    if key is None or not hmac.compare_digest(presented, key.secret_hash):
        raise ApiKeyRejected("unknown API key for this tenant")
    now = timezone.now()
    if key.revoked_at is not None:
        raise ApiKeyRejected("this API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise ApiKeyRejected("this API key has expired")
    authority = api_key_authority(key)
    if authority.problem:
        raise ApiKeyRejected(_CREATOR_PROBLEM_REASONS[authority.problem], key=key,
                             detail={"creator": authority.creator or None, "problem": authority.problem})
    if role is not None and not authority.allows(role):
        required = Role(role)
        raise ApiKeyRejected(f"this API key's creator no longer holds the {required.value} role this needs "
                             "(a key acts with its creator's current role)", key=key, status=403,
                             detail={"creator": authority.creator, "problem": "creator_role_too_low",
                                     "held": authority.role.value, "required": required.value})
    if key.last_used_at is None or (now - key.last_used_at).total_seconds() >= API_KEY_LAST_USED_RESOLUTION_S:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def api_keys_revoke_for_deleted_user(user) -> int:
    """Revoke the live keys `user` created, as it is being deleted (a pre_delete receiver, apps.py): the
    use-time check already refuses a key without a creator, and this leaves the list saying why. Audited."""
    if not audit_log_available():  # the public schema (platform staff users) has no API keys
        return 0
    now = timezone.now()
    with transaction.atomic():
        keys = list(ApiKey.objects.select_for_update().filter(created_by=user, revoked_at__isnull=True))
        for key in keys:
            key.revoked_at, key.revoked_reason = now, ApiKey.REVOKED_CREATOR_DELETED
            key.save(update_fields=["revoked_at", "revoked_reason"])
            _audit("apikey.revoked", object_type="api_key", object_id=key.prefix,
                   summary={"name": key.name, "reason": "creator deleted", "creator": user.get_username()})
    return len(keys)


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
