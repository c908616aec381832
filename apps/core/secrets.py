"""Secrets from Vault (hvac, KV v2): lookup by path and key, bot -> tenant -> global resolution, `vault:`
references in config.csv, and the Vault line of `/api/health`.

Paths (KV v2 under the mount `VAULT_KV_MOUNT`, default `secret`, as in the seed, spec §8.4):

* `secret_get(path, key)` reads field `key` of the secret at `path` (`gbo/llm`, `gbo/tenants/<t>/config`).
* `secret_resolve(name, tenant=, org=, bot=)` looks for the field `name` at, in this order:
  `gbo/orgs/<org>/bots/<bot>` (when org and bot are given), `gbo/tenants/<tenant>` (when tenant is given),
  `gbo` (global), and finally -- in development only (`DEBUG` on and `VAULT_REQUIRED` off) -- the
  environment variable `GBO_SECRET_<NAME>` (`name` upper-cased, `-` and `.` turned into `_`:
  `llm-api-key` -> `GBO_SECRET_LLM_API_KEY`; the prefix keeps a secret name from ever matching `PATH`).
* `config_secret_value(value)` resolves a config.csv value `vault:<path>#<key>` (or the seed's spelling
  `vault:<path>/<key>`, whose last segment is the key) and returns any other value unchanged.
* `tenant_secrets_delete(tenant)` deletes a deleted tenant's secrets: `gbo/tenants/<t>` and `gbo/orgs/<t>`
  (its bots'), each with everything below it, every version and the metadata (`tenant_secret_prefixes`). The
  platform otherwise only reads; for this its Vault policy needs `list` and `delete` on
  `<mount>/metadata/gbo/tenants/*` and `<mount>/metadata/gbo/orgs/*`.

Failure modes this module prevents:

* Running on the wrong secret: when Vault is configured, any read error other than "not there" (down,
  sealed, timeout, denied) raises `SecretUnavailable`; resolution never skips a level it could not read,
  so an outage cannot silently swap a bot's own key for the global one. With `VAULT_REQUIRED` the
  environment is never consulted (fail closed); in production without Vault, neither.
* A hung Vault hanging requests: every call has `VAULT_TIMEOUT_S` (hvac's default is 30 s).
* Tokens expiring under a long-running process: hvac does not renew (test plan §1.8); before each call
  the token is renewed once less than `TOKEN_RENEW_REMAINING_FRACTION` of its lease is left, and AppRole
  logs in again when the token is not renewable or has hit its max TTL.
* Re-login storms: a 403 causes at most one AppRole login and one retry per call, and none when the
  token was issued less than `RELOGIN_MIN_INTERVAL_S` ago (a fresh token refused is a policy denial,
  which logging in again cannot fix).
* Hammering Vault, and outages shorter than the cache: secrets read (and "not there" answers) are kept
  `SECRET_CACHE_TTL_S` per process, in memory only -- never in the shared Django cache or the database,
  where they would outlive the process and be readable by anything with cache access.
* Secrets in logs and error messages: logs and exceptions name the path and key, never a value.
* A deleted tenant's secrets passing to the next tenant given its schema name (a name comes from the host
  name, so it comes back): `tenant_secrets_delete` removes the tenant's two subtrees, listed below the path
  with its trailing `/` so `acme`'s never reaches `acme2`'s, and drops them from this process's cache.
* Path traversal through names: tenant, org and bot segments and reference paths are checked against a
  strict pattern (`..`, empty and slash-carrying segments refused), so `bot="x/../../tenants/other"`
  cannot reach another tenant's secrets.
* Threads and forks sharing one `requests.Session`: each thread of each process gets its own hvac client.

What this module does not do: a background renewal thread (a process with no Vault call during the last
third of a token's lease lets a static token lapse; AppRole recovers by logging in, and the health probe
renews too), retries, lease renewal of dynamic secrets.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from django.conf import settings

from apps.bots.config_csv import VAULT_REFERENCE_PREFIX, config_is_secret_reference

logger = logging.getLogger(__name__)

# --- policy ----------------------------------------------------------------------------------------------

# Connect and read timeout of every Vault call. Vault answers reads in milliseconds; 3 s rides out a GC
# pause or a standby forwarding, while a hung Vault costs a chat request at most this much.
VAULT_TIMEOUT_S = 3.0
# Renew once less than a third of the lease remains (renewal at about 2/3 of the TTL, as Vault's own
# LifetimeWatcher does): the remaining third leaves room for a timeout or two before expiry.
TOKEN_RENEW_REMAINING_FRACTION = 1 / 3
# How long a secret read (or a "not there" answer) is reused in this process. Short, so a rotation in
# Vault is picked up within half a minute; long enough that chats do not hit Vault per message and that a
# Vault blip shorter than this goes unnoticed. After it, an unreachable Vault fails closed.
SECRET_CACHE_TTL_S = 30.0
# A 403 with a token younger than this is a policy denial, not an expired token: do not log in again.
RELOGIN_MIN_INTERVAL_S = 5.0
KV_MOUNT_DEFAULT = "secret"
APPROLE_MOUNT = "approle"

# --- paths -----------------------------------------------------------------------------------------------

GLOBAL_PATH = "gbo"
TENANT_PATH = "gbo/tenants/{tenant}"
ORG_PATH = "gbo/orgs/{org}"
BOT_PATH = ORG_PATH + "/bots/{bot}"
# The tenant's admins' own secrets (the OIDC client secret), under the tenant's path but never resolved from a
# bot's config.csv: editors write that, and an `llm-key` or `email-pass` naming an admin secret would send it,
# as a bearer token or an SMTP login, to a URL or server the editor chose.
TENANT_ADMIN_PATH = TENANT_PATH + "/admin"
ENV_PREFIX = "GBO_SECRET_"
# One path segment or key: letters, digits, `_`, `-`, `.`; not `.` or `..` (checked separately).
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_PATH_SEGMENTS = 16

# --- health vocabulary (the strings of apps.core.health, which imports this module) ----------------------

HEALTHY, UNHEALTHY, DISABLED = "healthy", "unhealthy", "disabled"
MAX_HEALTH_DETAIL_CHARS = 200


class SecretUnavailable(RuntimeError):
    """A secret could not be read. The message names where (path and key) and why, never a value."""

    def __init__(self, path: str, key: str, reason: str) -> None:
        self.path, self.key, self.reason = path, key, reason
        super().__init__(f"secret {path}#{key} is unavailable: {reason}")


class SecretNotFound(SecretUnavailable):
    """Vault answered, and the path or the key is not there."""


class SecretDeleteFailed(RuntimeError):
    """Secrets under a path could not all be deleted. The message names the path and why, never a value."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"secrets under {path} could not be deleted: {reason}")


def _check_segment(segment: str, what: str) -> str:
    if not _SEGMENT_RE.fullmatch(segment) or segment in (".", ".."):
        raise ValueError(f"invalid {what} {segment!r}: use letters, digits, '_', '-' and '.' only")
    return segment


def _check_path(path: str) -> str:
    segments = path.split("/")
    if not path or len(segments) > _MAX_PATH_SEGMENTS:
        raise ValueError(f"invalid secret path {path!r}")
    for segment in segments:
        _check_segment(segment, "secret path segment")
    return path


# --- the client ------------------------------------------------------------------------------------------

T = TypeVar("T")
_NETWORK_ERRORS = (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
# Answers worth asking again at once: 412 (a performance standby has not caught up with the index yet; Vault's
# docs tell clients to retry), other statuses hvac has no class for, and 429 (a rate-limit quota). Retried
# VAULT_TRANSIENT_ATTEMPTS times in all, VAULT_TRANSIENT_DELAY_S apart (doubling): a read on a request path
# waits at most a few tenths of a second before it fails closed.
_TRANSIENT_ERRORS = (hvac.exceptions.UnexpectedError, hvac.exceptions.RateLimitExceeded)
VAULT_TRANSIENT_ATTEMPTS = 3
VAULT_TRANSIENT_DELAY_S = 0.05
# Most secrets (folders count too) one `tree_delete` removes. A tenant keeps a handful (its own, its admins', one
# per bot); each costs a round trip, inline in the caller. A tree far larger is not what the caller thinks it is
# deleting (a wrong mount or path), so it is refused whole, before anything is deleted, for a person to look at.
VAULT_TREE_MAX_SECRETS = 10_000


@dataclass
class _CacheEntry:
    expires_at: float
    data: dict[str, Any] | None  # None: Vault said the path does not exist


class VaultSecrets:
    """One Vault identity (a token, or an AppRole) with token upkeep and a short per-process cache.

    Thread-safe: token state and cache are behind locks, and each thread uses its own hvac client.
    """

    def __init__(
        self,
        *,
        addr: str,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        mount: str = KV_MOUNT_DEFAULT,
        timeout_s: float = VAULT_TIMEOUT_S,
        cache_ttl_s: float = SECRET_CACHE_TTL_S,
        relogin_min_interval_s: float = RELOGIN_MIN_INTERVAL_S,
        verify: bool | str = True,
    ) -> None:
        if not token and not (role_id and secret_id):
            raise ValueError("Vault needs a token (VAULT_TOKEN) or an AppRole (VAULT_ROLE_ID, VAULT_SECRET_ID)")
        self.addr = addr.rstrip("/")
        self.mount = mount
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        self.relogin_min_interval_s = relogin_min_interval_s
        self._verify = verify
        self._role_id, self._secret_id = role_id or None, secret_id or None
        self._token_lock = threading.RLock()
        self._token: str | None = token or None
        self._lease_s: float | None = None  # the lease granted at login / last renewal; None: unknown
        self._expires_at: float | None = None  # monotonic; None: never expires or not looked up yet
        self._renewable = False
        self._looked_up = False
        self._logged_in_at: float | None = None
        self._cache_lock = threading.Lock()
        self._cache: dict[str, _CacheEntry] = {}
        self._local = threading.local()

    @property
    def uses_approle(self) -> bool:
        return bool(self._role_id and self._secret_id)

    # --- plumbing --------------------------------------------------------------------------------------

    def _client(self, token: str | None) -> hvac.Client:
        """This thread's client (a requests.Session must not be shared across threads or forks)."""
        client = getattr(self._local, "client", None)
        if client is None or getattr(self._local, "pid", None) != os.getpid():
            # An explicit token ("" when logging in) so hvac never falls back to VAULT_TOKEN/~/.vault-token.
            client = hvac.Client(url=self.addr, token="", timeout=self.timeout_s, verify=self._verify)
            self._local.client, self._local.pid = client, os.getpid()
        client.token = token or ""
        return client

    def _unavailable(self, path: str, key: str, exc: Exception) -> SecretUnavailable:
        if isinstance(exc, requests.exceptions.Timeout):
            reason = f"Vault did not answer within {self.timeout_s:g} s"
        elif isinstance(exc, requests.exceptions.ConnectionError):
            reason = "Vault is unreachable"
        elif isinstance(exc, hvac.exceptions.Forbidden):
            reason = "permission denied"
        elif isinstance(exc, hvac.exceptions.VaultError):
            reason = f"Vault error ({type(exc).__name__})"
        else:
            reason = type(exc).__name__
        return SecretUnavailable(path, key, reason)

    # --- token upkeep ----------------------------------------------------------------------------------

    def _set_lease(self, lease_s: float, renewable: bool) -> None:
        self._renewable = renewable
        if lease_s <= 0:  # a root or otherwise non-expiring token
            self._lease_s = self._expires_at = None
        else:
            self._lease_s = lease_s
            self._expires_at = time.monotonic() + lease_s

    def _login(self) -> None:
        """AppRole login; caller holds the token lock."""
        logger.info("vault: AppRole login")
        auth = self._client(None).auth.approle.login(
            role_id=self._role_id, secret_id=self._secret_id, use_token=False, mount_point=APPROLE_MOUNT
        )["auth"]
        self._token = auth["client_token"]
        self._logged_in_at = time.monotonic()
        self._looked_up = True
        self._set_lease(float(auth.get("lease_duration") or 0), bool(auth.get("renewable")))

    def _lookup(self) -> None:
        data = self._client(self._token).auth.token.lookup_self()["data"]
        self._looked_up = True
        self._set_lease(float(data.get("ttl") or 0), bool(data.get("renewable")))
        if self._lease_s is not None and float(data.get("creation_ttl") or 0) > 0:
            # Measure "a third left" against the whole lease, not what was left when we first looked.
            self._lease_s = float(data["creation_ttl"])

    def _renew(self) -> None:
        """Renew the token; log in again when it cannot be renewed or is at its max TTL."""
        lease_before = self._lease_s or 0.0
        if self._renewable:
            try:
                auth = self._client(self._token).auth.token.renew_self()["auth"]
            except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest) as exc:
                logger.warning("vault: token renewal refused (%s)", type(exc).__name__)
            else:
                lease = float(auth.get("lease_duration") or 0)
                if lease > 0:  # keep the original lease as the yardstick for the next renewal
                    self._renewable = bool(auth.get("renewable"))
                    self._expires_at = time.monotonic() + lease
                logger.debug("vault: token renewed, lease %.0f s", lease)
                if lease > lease_before * TOKEN_RENEW_REMAINING_FRACTION:
                    return
                # Still under the renewal threshold after renewing: the token is at its max TTL. Renewing
                # again cannot extend it, so stop trying (or it would be renewed on every call).
                self._renewable = False
                if not self.uses_approle:
                    logger.warning("vault: token is at its max TTL and there is no AppRole to log in with")
                    return
                logger.info("vault: token is at its max TTL; logging in again")
        if self.uses_approle:
            self._login()

    def _ensure_token(self) -> None:
        """Log in, look the token up, or renew it, as its state requires (before a Vault call)."""
        with self._token_lock:
            if self._token is None:
                self._login()
                return
            if not self._looked_up:
                try:
                    self._lookup()
                except hvac.exceptions.Forbidden:
                    if not self.uses_approle:
                        raise
                    logger.warning("vault: the configured token is refused; logging in with AppRole")
                    self._login()
                return
            if self._expires_at is not None and self._lease_s is not None:
                remaining = self._expires_at - time.monotonic()
                if remaining < self._lease_s * TOKEN_RENEW_REMAINING_FRACTION:
                    self._renew()

    def _relogin_after_forbidden(self, failed_token: str | None) -> bool:
        """After a 403: log in again at most once. True when the call should be retried."""
        with self._token_lock:
            if self._token != failed_token:
                return True  # another thread already replaced the token
            if not self.uses_approle:
                return False
            if self._logged_in_at is not None and (
                time.monotonic() - self._logged_in_at < self.relogin_min_interval_s
            ):
                return False
            logger.warning("vault: 403 with the current token; logging in again once")
            self._login()
            return True

    def _call(self, operation: Callable[[hvac.Client], T]) -> T:
        """Run one Vault operation with a fresh-enough token; one re-login and retry on 403; transient answers
        (412, 429) asked again a bounded number of times."""
        for attempt in range(VAULT_TRANSIENT_ATTEMPTS):
            try:
                return self._call_once(operation)
            except _TRANSIENT_ERRORS as exc:
                if attempt + 1 >= VAULT_TRANSIENT_ATTEMPTS:
                    raise
                logger.info("vault: transient answer (%s); asking again", type(exc).__name__)
                time.sleep(VAULT_TRANSIENT_DELAY_S * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _call_once(self, operation: Callable[[hvac.Client], T]) -> T:
        self._ensure_token()
        token = self._token
        try:
            return operation(self._client(token))
        except hvac.exceptions.Forbidden:
            if not self._relogin_after_forbidden(token):
                raise
        return operation(self._client(self._token))  # a second 403 propagates: no loop

    # --- reads -----------------------------------------------------------------------------------------

    def read(self, path: str) -> dict[str, Any] | None:
        """The fields of the secret at `path`, or None when it does not exist. Cached `cache_ttl_s`."""
        _check_path(path)
        now = time.monotonic()
        with self._cache_lock:
            entry = self._cache.get(path)
        if entry is not None and entry.expires_at > now:
            self._renew_quietly()
            return entry.data

        def operation(client: hvac.Client) -> dict[str, Any] | None:
            try:
                response = client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=self.mount, raise_on_deleted_version=True
                )
            except hvac.exceptions.InvalidPath:
                return None
            return dict(response["data"]["data"] or {})

        try:
            data = self._call(operation)
        except (*_NETWORK_ERRORS, hvac.exceptions.VaultError) as exc:
            logger.warning("vault: reading %s failed (%s)", path, type(exc).__name__)
            raise self._unavailable(path, "*", exc) from None
        logger.debug("vault: read %s (%s)", path, "found" if data is not None else "not found")
        _audit_secret_read(path, found=data is not None)
        with self._cache_lock:
            self._cache[path] = _CacheEntry(time.monotonic() + self.cache_ttl_s, data)
        return data

    def _renew_quietly(self) -> None:
        """On a cache hit, keep the token alive if it is due; a failure here must not fail the read."""
        try:
            self._ensure_token()
        except (*_NETWORK_ERRORS, hvac.exceptions.VaultError) as exc:
            logger.warning("vault: token upkeep failed (%s); serving from cache", type(exc).__name__)

    def get(self, path: str, key: str) -> str:
        """Field `key` of the secret at `path`; SecretNotFound when either is missing."""
        _check_segment(key, "secret key")
        data = self.read(path)
        if data is None:
            raise SecretNotFound(path, key, "no secret at this path")
        if key not in data or data[key] is None:
            raise SecretNotFound(path, key, "the secret has no such key")
        value = data[key]
        return value if isinstance(value, str) else str(value)

    def cache_clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()

    def cache_forget_under(self, path: str) -> None:
        """Drop this process's cached reads of `path` and of every path below it."""
        with self._cache_lock:
            for cached in [cached for cached in self._cache if _path_under(cached, path)]:
                del self._cache[cached]

    # --- deletion --------------------------------------------------------------------------------------

    def _tree_list(self, path: str) -> list[str]:
        """Every secret below `path/` (not `path` itself). Lists `path/` and its sub-folders,
        never `path`'s parent, so `gbo/tenants/acme` cannot reach its sibling `gbo/tenants/acme2`."""
        folders, secrets = [path], []
        while folders:
            folder = folders.pop()

            def operation(client: hvac.Client, folder: str = folder) -> list[str]:
                try:
                    response = client.secrets.kv.v2.list_secrets(path=folder + "/", mount_point=self.mount)
                except hvac.exceptions.InvalidPath:  # an empty folder (Vault answers 404)
                    return []
                return list((response.get("data") or {}).get("keys") or [])

            for name in self._call(operation):
                child = name.removesuffix("/")
                if not child or child in (".", "..") or "/" in child:
                    raise SecretDeleteFailed(path, f"Vault listed an unexpected name {name!r} in {folder}/")
                (folders if name.endswith("/") else secrets).append(f"{folder}/{child}")
                if len(secrets) + len(folders) > VAULT_TREE_MAX_SECRETS:
                    raise SecretDeleteFailed(path, f"more than {VAULT_TREE_MAX_SECRETS} secrets; nothing was "
                                                   "deleted (VAULT_TREE_MAX_SECRETS)")
        return secrets

    def tree_delete(self, path: str) -> list[str]:
        """Delete the secret at `path` and every secret below `path/`, each with all its versions and its metadata
        (KV v2 `DELETE <mount>/metadata/<path>`: nothing is left to undelete), and forget them in this process's
        cache. Only that subtree: a sibling whose name starts alike (`acme2` beside `acme`) is never touched.

        Returns the paths deleted: those listed below `path`, and `path` itself (deleted whether or not it held a
        secret: Vault answers a delete of nothing with 204). Raises SecretDeleteFailed when Vault cannot be
        reached, refuses (its policy lacks `list` or `delete` on the metadata), or lists more than
        VAULT_TREE_MAX_SECRETS; secrets deleted before the failure stay deleted, and calling again finishes.
        """
        _check_path(path)
        try:
            doomed = [*self._tree_list(path), path]
            for secret in doomed:
                self._call(lambda client, secret=secret: client.secrets.kv.v2.delete_metadata_and_all_versions(
                    path=secret, mount_point=self.mount))
        except (*_NETWORK_ERRORS, hvac.exceptions.VaultError) as exc:
            logger.warning("vault: deleting the secrets under %s failed (%s)", path, type(exc).__name__)
            raise SecretDeleteFailed(path, self._unavailable(path, "*", exc).reason) from None
        finally:
            # Also after a failure: what this process read there may be gone from Vault already.
            self.cache_forget_under(path)
        logger.info("vault: deleted %d secret(s) under %s", len(doomed), path)
        return doomed

    def health(self) -> tuple[str, float, str]:
        """(status, latency_ms, detail) from a token lookup: proves reachability and a live token."""
        started = time.perf_counter()
        try:
            self._call(lambda client: client.auth.token.lookup_self())
        except (*_NETWORK_ERRORS, hvac.exceptions.VaultError) as exc:
            detail = str(self._unavailable("auth/token", "lookup-self", exc).reason)
            return UNHEALTHY, _elapsed_ms(started), detail[:MAX_HEALTH_DETAIL_CHARS]
        return HEALTHY, _elapsed_ms(started), "approle" if self.uses_approle else "token"


def _audit_secret_read(path: str, *, found: bool) -> None:
    """Record a read from Vault in the current tenant's audit log (path only, never a value). Reads are
    cached, so this records each actual fetch, not every use. Platform-level reads (public schema) are
    logged only. An audit failure never fails the read: it is logged."""
    from django.db import connection, transaction

    schema = getattr(connection, "schema_name", "") or ""
    if not schema or schema == "public":
        return
    try:
        from apps.compliance.services import audit_log_available, audit_record

        if audit_log_available():
            with transaction.atomic():  # a savepoint: a failed insert leaves the caller's transaction usable
                audit_record(action="secret.read", actor="system", object_type="vault", object_id=path[:200],
                             summary={"found": found})
    except Exception as exc:  # noqa: BLE001 - see docstring
        logger.warning("vault: could not audit the read of %s (%s)", path, type(exc).__name__)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# --- the process-wide client from settings ---------------------------------------------------------------

_default_lock = threading.Lock()
_default: tuple[tuple, VaultSecrets] | None = None


def _settings_key() -> tuple:
    return (
        getattr(settings, "VAULT_ADDR", ""),
        getattr(settings, "VAULT_TOKEN", ""),
        getattr(settings, "VAULT_ROLE_ID", ""),
        getattr(settings, "VAULT_SECRET_ID", ""),
        getattr(settings, "VAULT_KV_MOUNT", KV_MOUNT_DEFAULT) or KV_MOUNT_DEFAULT,
        float(getattr(settings, "VAULT_TIMEOUT_S", VAULT_TIMEOUT_S)),
        float(getattr(settings, "VAULT_CACHE_TTL_S", SECRET_CACHE_TTL_S)),
        getattr(settings, "VAULT_CACERT", "") or True,
    )


def vault_secrets() -> VaultSecrets | None:
    """The process's VaultSecrets for the current settings, or None when VAULT_ADDR is empty."""
    global _default
    key = _settings_key()
    addr, token, role_id, secret_id, mount, timeout_s, cache_ttl_s, verify = key
    if not addr:
        return None
    with _default_lock:
        if _default is None or _default[0] != key:
            client = VaultSecrets(addr=addr, token=token, role_id=role_id, secret_id=secret_id, mount=mount,
                                  timeout_s=timeout_s, cache_ttl_s=cache_ttl_s, verify=verify)
            _default = (key, client)
        return _default[1]


def secrets_reset() -> None:
    """Forget the process's client, its token and its cache (tests; after a settings change)."""
    global _default
    with _default_lock:
        _default = None


def _vault_required() -> bool:
    return bool(getattr(settings, "VAULT_REQUIRED", False))


def _environment_allowed() -> bool:
    """The environment is a secret store in development only, and never when Vault is required."""
    return bool(getattr(settings, "DEBUG", False)) and not _vault_required()


def _not_configured(path: str, key: str) -> SecretUnavailable:
    if _vault_required():
        return SecretUnavailable(path, key, "VAULT_REQUIRED is on but VAULT_ADDR is not set")
    return SecretUnavailable(path, key, "Vault is not configured (VAULT_ADDR is not set)")


# --- public API ------------------------------------------------------------------------------------------


def secret_get(path: str, key: str) -> str:
    """Field `key` of the Vault secret at `path` (`secret_get("gbo/llm", "api_key")`).

    Raises SecretNotFound when Vault has no such path or key, SecretUnavailable when Vault is not
    configured, down, slow past the timeout or refuses access. Never reads the environment.
    """
    _check_path(path)
    _check_segment(key, "secret key")
    vault = vault_secrets()
    if vault is None:
        raise _not_configured(path, key)
    return vault.get(path, key)


def secret_resolution_paths(*, tenant: str | None, org: str | None, bot: str | None) -> list[str]:
    """The Vault paths `secret_resolve` reads, most specific first."""
    paths = []
    if org and bot:
        paths.append(BOT_PATH.format(org=_check_segment(org, "org"), bot=_check_segment(bot, "bot")))
    if tenant:
        paths.append(TENANT_PATH.format(tenant=_check_segment(tenant, "tenant")))
    paths.append(GLOBAL_PATH)
    return paths


def secret_env_name(name: str) -> str:
    """The development-only environment variable for secret `name`: `llm-api-key` -> `GBO_SECRET_LLM_API_KEY`."""
    return ENV_PREFIX + re.sub(r"[-.]", "_", _check_segment(name, "secret name")).upper()


def _from_environment(name: str, where: str, reason: str) -> str:
    value = os.environ.get(secret_env_name(name))
    if value is None:
        raise SecretNotFound(where, name, reason)
    logger.warning("secret %s taken from the environment (%s), development only", name, secret_env_name(name))
    return value


def secret_resolve(name: str, *, tenant: str | None, org: str | None, bot: str | None) -> str:
    """Secret `name` for a bot: its bot path, then its tenant's, then the global `gbo`, then (dev only)
    the environment variable `GBO_SECRET_<NAME>`. See the module docstring for the exact paths.

    A level that exists but lacks the key is skipped; a level that cannot be read (Vault down, denied)
    stops the resolution with SecretUnavailable instead of falling through to a less specific secret --
    except in development, where the environment is used, with a warning.
    """
    _check_segment(name, "secret name")
    paths = secret_resolution_paths(tenant=tenant, org=org, bot=bot)
    where = ", ".join(paths)
    vault = vault_secrets()
    if vault is None:
        if _environment_allowed():
            return _from_environment(name, "environment", "Vault is not configured and the variable is unset")
        raise _not_configured(where, name)
    for path in paths:
        try:
            data = vault.read(path)
        except SecretUnavailable as exc:
            if _environment_allowed():
                logger.warning("vault unavailable for %s (%s); trying the environment", name, exc.reason)
                return _from_environment(name, where, f"{exc.reason}, and the variable is unset")
            raise SecretUnavailable(path, name, exc.reason) from None
        if data is not None and data.get(name) is not None:
            logger.debug("secret %s resolved at %s", name, path)
            value = data[name]
            return value if isinstance(value, str) else str(value)
    if _environment_allowed():
        return _from_environment(name, where, "not in Vault and the variable is unset")
    raise SecretNotFound(where, name, "not found at any level")


def config_secret_reference_parse(value: str) -> tuple[str, str]:
    """(path, key) of a config.csv reference: `vault:gbo/meet#api_key` or the seed's `vault:gbo/meet/api_key`.

    ValueError names what is wrong with a malformed reference.
    """
    if not config_is_secret_reference(value):
        raise ValueError(f"not a vault reference: it must start with {VAULT_REFERENCE_PREFIX!r}")
    body = value.strip()[len(VAULT_REFERENCE_PREFIX):]
    example = "expected vault:<path>#<key>, e.g. vault:gbo/meet#api_key"
    if body.count("#") > 1:
        raise ValueError(f"malformed vault reference {value!r}: more than one '#'; {example}")
    if "#" in body:
        path, key = body.split("#")
    else:
        path, _, key = body.rpartition("/")
    if not path or not key:
        raise ValueError(f"malformed vault reference {value!r}: path or key missing; {example}")
    try:
        _check_path(path)
        _check_segment(key, "secret key")
    except ValueError as exc:
        raise ValueError(f"malformed vault reference {value!r}: {exc}; {example}") from None
    return path, key


def secret_scope_prefixes(*, tenant: str | None, org: str | None, bot: str | None) -> list[str]:
    """The paths a tenant's own config.csv may reference: its bot's and its tenant's (and below)."""
    return secret_resolution_paths(tenant=tenant, org=org, bot=bot)[:-1]


def tenant_secret_prefixes(tenant: str) -> list[str]:
    """The Vault paths (each with everything below it) holding the tenant's secrets: its own, its admins'
    (`gbo/tenants/<t>/admin`) and its bots' (`gbo/orgs/<t>/bots/<bot>`: this platform's organisations are its
    tenants, see `bot_config_secret_value`)."""
    _check_segment(tenant, "tenant")
    return [TENANT_PATH.format(tenant=tenant), ORG_PATH.format(org=tenant)]


def tenant_secrets_delete(tenant: str) -> list[str]:
    """Delete every secret of the tenant (`tenant_secret_prefixes`), for a tenant being deleted: left behind,
    they would be the secrets of the next tenant given the same schema name. Returns the paths deleted; [] when
    Vault is not configured (secrets then come from the environment, which holds none per tenant).

    Raises SecretDeleteFailed when Vault is configured and the deletion fails (down, sealed, denied): the caller
    must not go on as if the tenant's secrets were gone. Idempotent: call it again to finish. Other processes
    may serve what they read there from their cache for up to VAULT_CACHE_TTL_S more."""
    prefixes = tenant_secret_prefixes(tenant)
    vault = vault_secrets()
    if vault is None:
        return []
    return [path for prefix in prefixes for path in vault.tree_delete(prefix)]


def tenant_admin_path(tenant: str) -> str:
    """Where the tenant's admins keep their own secrets (TENANT_ADMIN_PATH)."""
    return TENANT_ADMIN_PATH.format(tenant=_check_segment(tenant, "tenant"))


def _path_under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


def config_secret_value(value: str, *, allowed_prefixes: Sequence[str] | None = None,
                        denied_prefixes: Sequence[str] = (),
                        denied_references: Collection[tuple[str, str]] = ()) -> str:
    """A config.csv value with a `vault:` reference resolved; plain values are returned unchanged.

    `allowed_prefixes` (e.g. `secret_scope_prefixes(...)`) restricts which paths the reference may name;
    pass it for config written by tenants, so a bot author cannot read another tenant's or the platform's
    secrets by naming their path. `denied_prefixes` (paths and below) and `denied_references` ((path, key) pairs)
    are refused inside that scope. Raises ValueError
    (malformed or out-of-scope reference), SecretNotFound or SecretUnavailable.
    """
    if not config_is_secret_reference(value):
        return value
    path, key = config_secret_reference_parse(value)
    if allowed_prefixes is not None and not any(_path_under(path, prefix) for prefix in allowed_prefixes):
        raise ValueError(f"vault reference to {path!r} is outside this bot's secrets ({', '.join(allowed_prefixes)})")
    if any(_path_under(path, prefix) for prefix in denied_prefixes) or (path, key) in denied_references:
        raise ValueError(f"vault reference to {path!r} names the tenant admins' own secrets, which bot "
                         "configuration may not use")
    return secret_get(path, key)


class AdminSecretReferences:
    """The (path, key) of the Vault secrets the tenant admins' configuration names (its OIDC client secrets,
    apps.accounts.selectors.admin_secret_references), read on first need and then kept: a caller that resolves
    several values (the LLM key resolver: a chain names up to three keys) makes one and passes it to each
    `bot_config_secret_value`, so the tenant's admin configuration is read once, not once per reference. Keep one
    no longer than that (a request, a settings build): the admins may change their configuration.

    Read in the tenant's schema, where every chat turn, job and mail runs; when the connection is on another
    schema (settings built elsewhere: tests) there is nothing to read and the admin path alone refuses."""

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self._found: frozenset[tuple[str, str]] | None = None

    def get(self) -> frozenset[tuple[str, str]]:
        if self._found is None:
            from django.db import connection

            found: frozenset[tuple[str, str]] = frozenset()
            if getattr(connection, "schema_name", None) == self.tenant:
                from apps.accounts.selectors import admin_secret_references

                found = admin_secret_references()
            self._found = found
        return self._found


def bot_config_secret_value(value: str, *, tenant: str, bot: str, with_bot_path: bool = True,
                            admin_references: AdminSecretReferences | None = None) -> str:
    """A value of a bot's config.csv with its `vault:` reference resolved inside the bot's scope: its tenant's
    secrets (and, `with_bot_path`, its own `gbo/orgs/<tenant>/bots/<bot>`), never the tenant admins' own
    (`tenant_admin_path`, and the (path, key) of secrets the admins' configuration names elsewhere, such as an
    OIDC client secret kept where it was before the admin path: read here, through `admin_references` when the
    caller keeps one for several values, else for this call), another tenant's or the platform's. Raises as
    `config_secret_value`."""
    if not config_is_secret_reference(value):
        return value
    if admin_references is None:
        admin_references = AdminSecretReferences(tenant)
    elif admin_references.tenant != tenant:
        raise RuntimeError(f"admin secret references of tenant {admin_references.tenant!r} used for {tenant!r}")
    # org = tenant: this platform's organisations are its tenants (gbo/orgs/<tenant>/bots/<bot>).
    scope = secret_scope_prefixes(tenant=tenant, org=tenant if with_bot_path else None, bot=bot)
    return config_secret_value(value, allowed_prefixes=scope, denied_prefixes=[tenant_admin_path(tenant)],
                               denied_references=admin_references.get())


def vault_health() -> tuple[str, float | None, str]:
    """(status, latency_ms, detail) for `/api/health`: `disabled` when Vault is not configured (unhealthy
    if it is required), else a token lookup against Vault."""
    vault = vault_secrets()
    if vault is None:
        if _vault_required():
            return UNHEALTHY, None, "VAULT_REQUIRED is on but VAULT_ADDR is not set"
        return DISABLED, None, ""
    return vault.health()
