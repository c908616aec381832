"""Rate limits on the shared Redis cache: one check for views, WebSocket frames and tasks, per tenant, plus
one platform-wide bucket per client IP.

* `rate_check(scope, key, limit=, window_s=, burst=)` -> None (go ahead) or the seconds to wait.
* `rate_check_buckets([Bucket, ...], client_ip=)` -> None or a Refusal: an event counted in several buckets
  at once (all or none, one Redis round trip), and in the platform-wide bucket of `client_ip`
  (`RATE_LIMIT_PLATFORM_IP_PER_MINUTE`, every tenant and entry point together).
* `rate_limits_for(config_values, endpoint)` -> RateLimit from a bot's config.csv keys (the seed's
  `rate-limit-enabled`, `rate-limit-requests`, `rate-limit-window`, `rate-limit-burst`, `rate-limit-by`,
  `rate-limit-api-chat|files|auth|llm`) over the platform defaults in settings (RATE_LIMIT_*).
* `@ratelimited(endpoint, by=...)` on a view: 429 JSON with `Retry-After` when over the limit.

The algorithm is GCRA (a token bucket kept as one timestamp): `limit` requests per `window_s` sustained,
and up to `limit + burst` back to back after a quiet spell; the answer when refused is the exact time until
the next request would pass. It runs as one Lua script on Redis with Redis's own clock, so it is atomic
across every web and worker process and immune to their clock skew.

Why not django-ratelimit's core: it counts fixed windows in the cache, which lets twice the limit through
across a window boundary and has no burst; its key functions expect an HttpRequest (a WebSocket frame or a
task has none); and a Redis outage surfaces as a 500 from inside it. Its ideas are kept: the cache is the
shared store (the Redis of CACHES["default"]), keys are hashed, IPv6 clients are counted per /64.

Failure modes this module prevents:

* One tenant's traffic using up another's quota: every bucket key carries the tenant schema
  (`connection.schema_name`); only `per_tenant=False` (a platform-wide limit) leaves it out.
* One address getting every tenant's full allowance (many tenants' hostnames, or one IP hammering them
  all): each limited event (HTTP API and sign-in views, chat sockets' connects and messages, REST chat) is
  also counted in the platform-wide bucket of its client IP (`rl:platform:ip:...`), checked in the same
  Lua call as the tenant buckets. A tenant's config.csv cannot switch it off; RATE_LIMIT_ENABLED=false or
  RATE_LIMIT_PLATFORM_IP_PER_MINUTE=0 does. An event refused by any bucket is counted in none.
* A forged client address: the IP is REMOTE_ADDR, or X-Forwarded-For only behind a proxy listed in
  TRUSTED_PROXY_IPS (apps.compliance.services.request_client_ip).
* Dodging the limit by inventing identities: `by=user|session|api-key` count per identity only when the
  server verified it (signed-in user, an existing session, `request.api_key` set by `api_access` once it
  checked the key); otherwise the request counts against its IP. A request authenticated by an API key counts
  per key under `by=user` too (its principal has no user id: all keys shared one bucket).
* Counting an API-key request before its key is known (`@ratelimited` above `@api_access`, so `api-key`
  counted every key against the caller's IP): `@ratelimited` refuses, when the module loads, to wrap a view
  `api_access` already wrapped; put it below `@api_access`.
* A tenant's config.csv switching off or inflating the platform's protection: values are clamped to
  RATE_LIMIT_MAX_REQUESTS / RATE_LIMIT_MAX_WINDOW_S, and `rate-limit-enabled,false` does not switch off
  the `auth` limit (password guessing).
* A Redis outage turning every view into a 500: the check raises RateLimitUnavailable, which the decorator
  answers with 503 and Retry-After (fail closed), or lets through when RATE_LIMIT_FAIL_OPEN is on.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import ipaddress
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django.http import HttpRequest, JsonResponse
from redis.exceptions import RedisError

from apps.bots.config_csv import config_lookup

logger = logging.getLogger(__name__)

# --- vocabulary ------------------------------------------------------------------------------------------------

ENDPOINT_GENERAL = "api"  # `rate-limit-requests`: any API request
# Endpoint classes with a key of their own (`rate-limit-api-<name>`), and the settings holding their defaults.
ENDPOINT_SETTINGS = {
    "chat": "RATE_LIMIT_API_CHAT",
    "files": "RATE_LIMIT_API_FILES",
    "auth": "RATE_LIMIT_API_AUTH",
    "llm": "RATE_LIMIT_API_LLM",
}
ENDPOINTS = (ENDPOINT_GENERAL, *ENDPOINT_SETTINGS)
BY_IP, BY_USER, BY_SESSION, BY_API_KEY = "ip", "user", "session", "api-key"
BY_CHOICES = (BY_IP, BY_USER, BY_SESSION, BY_API_KEY)
# Endpoints a tenant cannot switch off with `rate-limit-enabled,false`: they protect credentials.
ALWAYS_LIMITED = frozenset({"auth"})

# --- policy ----------------------------------------------------------------------------------------------------

# Platform defaults when settings do not name them (the seed's documented values).
DEFAULT_REQUESTS, DEFAULT_WINDOW_S, DEFAULT_BURST = 100, 60, 20
DEFAULT_ENDPOINT_LIMITS = {"chat": 30, "files": 50, "auth": 10, "llm": 20}
# Ceilings for values from config.csv: a typo (or a tenant) cannot make a limit meaningless.
DEFAULT_MAX_REQUESTS = 100_000
DEFAULT_MAX_WINDOW_S = 86_400
# IPv6 clients get a /64 from their provider: counting per address would give each of them 2^64 buckets.
IPV6_PREFIX = 64
# The platform-wide per-IP limit: events per minute from one address, across every tenant and entry point.
# Ten times the largest per-tenant per-IP allowance at the defaults (chat messages: 30 x CHAT_RATE_IP_FACTOR
# 10 = 300 a minute), so a NAT whose users use several tenants is not cut off; an address spreading over
# any number of tenants is held to 50 events a second sustained.
DEFAULT_PLATFORM_IP_PER_MINUTE = 3000
PLATFORM_WINDOW_S = 60
PLATFORM_TENANT = "platform"  # the tenant part of a platform-wide key: rl:platform:<scope>:<hash>
PLATFORM_IP_SCOPE = "ip"  # used by no per-tenant bucket
# When Redis cannot be asked, tell the client to come back after this long (503 Retry-After).
UNAVAILABLE_RETRY_AFTER_S = 5
SCOPE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")  # a schema name: never a ':' that could shift the key
KEY_PREFIX = "rl"

# One call counts one event in every bucket of KEYS, all or none. KEYS[i] holds bucket i's "theoretical arrival
# time" (TAT) in microseconds of Redis time; ARGV[2i-1] = its emission interval (window / limit) and ARGV[2i] =
# capacity * interval, both in microseconds. Returns {1, 0, 0} when every bucket allows it (each TAT advanced),
# else {0, wait_us, i}: the longest wait and the bucket it comes from (nothing changed in any bucket).
_GCRA_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local new_tats = {}
local wait, refused_by = 0, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local capacity_span = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - capacity_span
  if allow_at > now and allow_at - now > wait then
    wait, refused_by = allow_at - now, i
  end
  new_tats[i] = new_tat
end
if refused_by > 0 then
  return {0, wait, refused_by}
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%d', new_tats[i]), 'PX', math.ceil((new_tats[i] - now) / 1000) + 1000)
end
return {1, 0, 0}
"""


class RateLimitUnavailable(RuntimeError):
    """The shared cache (Redis) could not be asked; the caller decides: refuse (default) or let through."""


class RateLimitNotConfigured(RateLimitUnavailable):
    """The cache is not Redis (no REDIS_URL): there is no shared store to count in."""


@dataclass(frozen=True)
class RateLimit:
    """The limit that applies to one endpoint class, as resolved from config and settings."""

    endpoint: str
    enabled: bool
    limit: int  # requests per window, sustained
    window_s: int
    burst: int  # extra requests allowed back to back
    by: str
    issues: tuple[str, ...] = ()  # config values that were ignored, and why

    @property
    def rate_text(self) -> str:
        return f"{self.limit}/{self.window_s}s (+{self.burst} burst) by {self.by}"


@dataclass(frozen=True)
class Bucket:
    """One counter an event is counted in: `limit` per `window_s` sustained, `limit + burst` back to back."""

    scope: str
    key: str
    limit: int
    window_s: int
    burst: int = 0
    per_tenant: bool = True
    tenant: str | None = None  # the schema; None: this thread's connection's (only for per-tenant buckets)

    @property
    def platform(self) -> bool:
        return not self.per_tenant


@dataclass(frozen=True)
class Refusal:
    """An event refused: the seconds until it would pass, and the bucket that refused it (the longest wait)."""

    wait_s: float
    bucket: Bucket

    @property
    def platform(self) -> bool:
        """Refused by a platform-wide limit (the address's requests to every tenant together)."""
        return self.bucket.platform


# --- the check -------------------------------------------------------------------------------------------------

_script = None


def _redis():
    """The Redis client behind CACHES['default'] (django-redis), or RateLimitUnavailable."""
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except (ImportError, NotImplementedError):
        raise RateLimitNotConfigured("rate limits need the Redis cache (set REDIS_URL)") from None


def _bucket_key(scope: str, key: str, *, per_tenant: bool, tenant: str | None) -> str:
    if not SCOPE_RE.fullmatch(scope):
        raise ValueError(f"invalid rate-limit scope {scope!r}: letters, digits, '_', '.', ':', '-' only")
    if not per_tenant:
        tenant = PLATFORM_TENANT
    elif not TENANT_RE.fullmatch(tenant := tenant or getattr(connection, "schema_name", "") or "public"):
        raise ValueError(f"invalid tenant {tenant!r} for a rate limit")
    # Hashed: IPs, session ids and API keys never sit in Redis as they are.
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:40]
    return f"{KEY_PREFIX}:{tenant}:{scope}:{digest}"


def rate_check(scope: str, key: str, *, limit: int, window_s: int, burst: int = 0,
               per_tenant: bool = True, tenant: str | None = None) -> float | None:
    """Count one event for `key` in `scope`; None when it may proceed, else the seconds to wait (> 0).

    `limit` events per `window_s` seconds are allowed sustained, `limit + burst` back to back. Counters are
    per tenant unless `per_tenant=False`: `tenant` (a schema name) when given, else the current schema of
    this thread's connection -- pass it explicitly from async code, whose sync_to_async thread may have
    another schema active. Synchronous (one Redis round trip): call it through `sync_to_async`.
    Raises ValueError for a malformed scope, tenant or limit, and
    RateLimitUnavailable when Redis cannot be reached.
    """
    refusal = rate_check_all([Bucket(scope, key, limit=limit, window_s=window_s, burst=burst, per_tenant=per_tenant,
                                     tenant=tenant)])
    return None if refusal is None else refusal.wait_s


def rate_check_all(buckets: Iterable[Bucket]) -> Refusal | None:
    """Count one event in every bucket at once: None when all allow it (each counted), else the Refusal with
    the longest wait (none counted: an event refused by one limit uses up no other). One Redis round trip,
    atomic; no buckets: None without asking Redis. Raises as `rate_check`."""
    global _script
    buckets = list(buckets)
    if not buckets:
        return None
    keys, args = [], []
    for bucket in buckets:
        if bucket.limit < 1 or bucket.window_s < 1 or bucket.burst < 0:
            raise ValueError(f"invalid rate limit {bucket.limit}/{bucket.window_s}s burst {bucket.burst}: "
                             "limit and window >= 1, burst >= 0")
        interval_us = bucket.window_s * 1_000_000 / bucket.limit
        keys.append(_bucket_key(bucket.scope, bucket.key, per_tenant=bucket.per_tenant, tenant=bucket.tenant))
        args += [f"{interval_us:.0f}", f"{interval_us * (bucket.limit + bucket.burst):.0f}"]
    if len(set(keys)) != len(keys):
        raise ValueError("the same rate-limit bucket twice in one check")
    client = _redis()
    if _script is None:
        _script = client.register_script(_GCRA_LUA)
    try:
        allowed, wait_us, refused_by = _script(keys=keys, args=args, client=client)
    except (RedisError, OSError) as exc:
        scopes = ",".join(bucket.scope for bucket in buckets)
        logger.warning("rate limit: Redis unavailable for %s (%s)", scopes, type(exc).__name__)
        raise RateLimitUnavailable(f"the rate-limit store is unavailable ({type(exc).__name__})") from None
    if int(allowed) == 1:
        return None
    return Refusal(wait_s=max(int(wait_us) / 1_000_000, 0.001), bucket=buckets[int(refused_by) - 1])


def address_bucket(address: str) -> str:
    """A client address as counted: IPv6 per /64 (what a provider hands one customer), IPv4 as it is."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:a.b.c.d from a dual-stack listener is the IPv4 client, not one /64 for all
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False).network_address) + f"/{IPV6_PREFIX}"
    return str(ip)


def platform_ip_bucket(client_ip: str | None) -> Bucket | None:
    """The platform-wide bucket of a client address (every tenant, every limited entry point), or None when
    the address is unknown (an unknown address is not one client) or the limit is off (RATE_LIMIT_ENABLED
    false or RATE_LIMIT_PLATFORM_IP_PER_MINUTE 0)."""
    per_minute = int(_setting("RATE_LIMIT_PLATFORM_IP_PER_MINUTE", DEFAULT_PLATFORM_IP_PER_MINUTE))
    if not client_ip or per_minute <= 0 or not _setting("RATE_LIMIT_ENABLED", True):
        return None
    return Bucket(PLATFORM_IP_SCOPE, address_bucket(client_ip), limit=per_minute, window_s=PLATFORM_WINDOW_S,
                  per_tenant=False)


def rate_check_buckets(buckets: Iterable[Bucket], *, client_ip: str | None) -> Refusal | None:
    """`rate_check_all` of `buckets` and of the platform-wide bucket of `client_ip`, in one round trip: what
    every limited entry point calls, so one address's events to all tenants are counted together."""
    platform = platform_ip_bucket(client_ip)
    return rate_check_all([*buckets, platform] if platform is not None else buckets)


# --- limits from config.csv and settings ------------------------------------------------------------------------


def _setting(name: str, default):
    return getattr(settings, name, default)


def _int_value(values: Mapping[str, str], key: str, default: int, *, low: int, high: int,
               issues: list[str]) -> int:
    raw = config_lookup(values, key)
    if raw is None:
        return default
    try:
        number = int(str(raw).strip())
    except ValueError:
        issues.append(f"{key}={raw!r} is not a whole number; using {default}")
        return default
    if number < low or number > high:
        clamped = min(max(number, low), high)
        issues.append(f"{key}={number} is outside {low}..{high}; using {clamped}")
        return clamped
    return number


def rate_limits_for(config_values: Mapping[str, str], endpoint: str) -> RateLimit:
    """The limit for `endpoint` (`api`, `chat`, `files`, `auth`, `llm`) from a bot's config.csv values
    over the platform defaults. Bad values are ignored (listed in `issues`), never raised: a typo in a
    config file must not take an endpoint down or switch its protection off."""
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown rate-limit endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
    issues: list[str] = []
    max_requests = int(_setting("RATE_LIMIT_MAX_REQUESTS", DEFAULT_MAX_REQUESTS))
    max_window = int(_setting("RATE_LIMIT_MAX_WINDOW_S", DEFAULT_MAX_WINDOW_S))

    enabled = bool(_setting("RATE_LIMIT_ENABLED", True))
    raw_enabled = config_lookup(config_values, "rate-limit-enabled")
    if raw_enabled is not None:
        text = str(raw_enabled).strip().lower()
        if text in ("true", "false"):
            enabled = enabled and text == "true"
        else:
            issues.append(f"rate-limit-enabled={raw_enabled!r} is not true or false; ignored")
    if endpoint in ALWAYS_LIMITED and not enabled and _setting("RATE_LIMIT_ENABLED", True):
        issues.append(f"rate-limit-enabled=false does not apply to the {endpoint} endpoint")
        enabled = True

    if endpoint == ENDPOINT_GENERAL:
        default_limit, key = int(_setting("RATE_LIMIT_REQUESTS", DEFAULT_REQUESTS)), "rate-limit-requests"
    else:
        default_limit = int(_setting(ENDPOINT_SETTINGS[endpoint], DEFAULT_ENDPOINT_LIMITS[endpoint]))
        key = f"rate-limit-api-{endpoint}"
    limit = _int_value(config_values, key, default_limit, low=1, high=max_requests, issues=issues)
    window_s = _int_value(config_values, "rate-limit-window", int(_setting("RATE_LIMIT_WINDOW_S", DEFAULT_WINDOW_S)),
                          low=1, high=max_window, issues=issues)
    burst = _int_value(config_values, "rate-limit-burst", int(_setting("RATE_LIMIT_BURST", DEFAULT_BURST)),
                       low=0, high=max_requests, issues=issues)

    by = str(_setting("RATE_LIMIT_BY", BY_IP))
    raw_by = config_lookup(config_values, "rate-limit-by")
    if raw_by is not None:
        candidate = str(raw_by).strip().lower().replace("_", "-")
        if candidate in BY_CHOICES:
            by = candidate
        else:
            issues.append(f"rate-limit-by={raw_by!r} is not one of {', '.join(BY_CHOICES)}; using {by}")
    for issue in issues:
        logger.warning("rate limit config: %s", issue)
    return RateLimit(endpoint=endpoint, enabled=enabled, limit=limit, window_s=window_s, burst=burst, by=by,
                     issues=tuple(issues))


# --- HTTP -------------------------------------------------------------------------------------------------------


def client_ip_bucket(request: HttpRequest) -> str:
    """The client address as counted: REMOTE_ADDR or a trusted proxy's X-Forwarded-For; IPv6 per /64."""
    from apps.compliance.services import request_client_ip

    address = request_client_ip(request)
    return "unknown" if address is None else address_bucket(address)


def request_rate_key(request: HttpRequest, by: str) -> str:
    """The identity a request is counted under: verified user, session or API key, else its IP."""
    if by not in BY_CHOICES:
        raise ValueError(f"unknown rate-limit-by {by!r}; one of {', '.join(BY_CHOICES)}")
    # Set by apps.accounts.permissions.api_access once it verified the key (a decorator outside it sees none).
    api_key = getattr(request, "api_key", None)
    if by == BY_USER:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and user.pk is not None:
            return f"user:{user.pk}"
        if api_key is not None:  # an API key's principal has no user id: the key is who is counted
            return f"api-key:{api_key.prefix}"
    elif by == BY_SESSION:
        session = getattr(request, "session", None)
        session_key = getattr(session, "session_key", None)
        if session_key and session.exists(session_key):
            return f"session:{session_key}"
    elif by == BY_API_KEY and api_key is not None:
        return f"api-key:{api_key.prefix}"
    return f"ip:{client_ip_bucket(request)}"


PLATFORM_REFUSED_MESSAGE = "Too many requests from your address. Please slow down."


def rate_limited_response(retry_after_s: float, *, platform: bool = False) -> JsonResponse:
    """429 in the seed's shape, with Retry-After in whole seconds (at least 1); `platform`: refused by the
    platform-wide per-IP limit (the same shape, its own message)."""
    seconds = max(1, math.ceil(retry_after_s))
    response = JsonResponse(
        {"error": "rate_limit_exceeded",
         "message": PLATFORM_REFUSED_MESSAGE if platform else "Too many requests. Please slow down.",
         "retry_after_secs": seconds},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def rate_limit_unavailable_response(*, error: str = "rate_limit_unavailable",
                                    message: str = "The service is busy. Please retry shortly.",
                                    retry_after_s: int = UNAVAILABLE_RETRY_AFTER_S) -> JsonResponse:
    """503 with Retry-After: the request was not taken and may be sent again (also the chat's refusal when its
    tenant's turns leave a message no slot, apps.sessions.api)."""
    response = JsonResponse({"error": error, "message": message, "retry_after_secs": retry_after_s}, status=503)
    response["Retry-After"] = str(retry_after_s)
    return response


def request_rate_check(request: HttpRequest, endpoint: str, *, by: str | None = None,
                       config_values: Mapping[str, str] | None = None) -> JsonResponse | None:
    """The refusal response for this request (429, or 503 when the store is down), or None to proceed.
    Counted in the tenant's bucket of `endpoint` (unless the config switched it off) and in the platform-wide
    bucket of the client IP, in one round trip."""
    from apps.compliance.services import request_client_ip

    limit = rate_limits_for(config_values or {}, endpoint)
    buckets = []
    if limit.enabled:
        by = by or limit.by
        tenant = getattr(getattr(request, "tenant", None), "schema_name", None)  # set by the tenant middleware
        buckets.append(Bucket(f"http.{endpoint}.{by}", request_rate_key(request, by), limit=limit.limit,
                              window_s=limit.window_s, burst=limit.burst, tenant=tenant))
    try:
        refusal = rate_check_buckets(buckets, client_ip=request_client_ip(request))
    except RateLimitUnavailable as exc:
        # A development server without Redis (bare `manage.py runserver`) serves unlimited; production
        # requires REDIS_URL, so there this is an outage and fails closed unless told otherwise. A tenant that
        # switched its own limit off is not refused for the platform-wide backstop alone.
        if not buckets or _setting("RATE_LIMIT_FAIL_OPEN", False) or (
            isinstance(exc, RateLimitNotConfigured) and _setting("DEBUG", False)
        ):
            return None
        return rate_limit_unavailable_response()
    if refusal is None:
        return None
    if refusal.platform:
        logger.warning("rate limit: %s refused by the platform-wide per-IP limit (%s/%ss), retry in %.1f s",
                       endpoint, refusal.bucket.limit, refusal.bucket.window_s, refusal.wait_s)
    else:
        logger.info("rate limit: %s refused (%s), retry in %.1f s", endpoint, limit.rate_text, refusal.wait_s)
    return rate_limited_response(refusal.wait_s, platform=refusal.platform)


def ratelimited(endpoint: str, *, by: str | None = None,
                config: Callable[[HttpRequest], Mapping[str, str] | None] | None = None,
                methods: Iterable[str] | None = None):
    """View decorator: count the request against `endpoint`'s limit; 429 JSON with Retry-After when over.

    `by` overrides `rate-limit-by`; `config(request)` returns the config.csv values to read limits from
    (e.g. the bot the request addresses), else the platform defaults apply; `methods` (e.g. ("POST",))
    counts only those methods (a sign-in form's GET should not use up its attempts). Works on sync and
    async views.

    On an API endpoint it goes below `@api_access` (applied after it), so the key is verified and known when the
    request is counted; wrapping a view `api_access` already wrapped raises ImproperlyConfigured.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown rate-limit endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
    if by is not None and by not in BY_CHOICES:
        raise ValueError(f"unknown rate-limit-by {by!r}; one of {', '.join(BY_CHOICES)}")

    counted = {m.upper() for m in methods} if methods is not None else None

    def decorator(view):
        if getattr(view, "required_scope", None) is not None:  # set by api_access, copied by functools.wraps
            raise ImproperlyConfigured(
                f"@ratelimited({endpoint!r}) wraps {getattr(view, '__qualname__', view)!r}, which @api_access already "
                "wrapped: the API key would not be known when the request is counted. Put @ratelimited below "
                "@api_access.")
        if asyncio.iscoroutinefunction(view):
            from asgiref.sync import sync_to_async

            @functools.wraps(view)
            async def async_wrapped(request, *args, **kwargs):
                if counted is not None and request.method not in counted:
                    return await view(request, *args, **kwargs)

                def check():
                    return request_rate_check(request, endpoint, by=by,
                                              config_values=config(request) if config else None)

                refused = await sync_to_async(check)()
                if refused is not None:
                    return refused
                return await view(request, *args, **kwargs)

            return async_wrapped

        @functools.wraps(view)
        def wrapped(request, *args, **kwargs):
            if counted is not None and request.method not in counted:
                return view(request, *args, **kwargs)
            refused = request_rate_check(request, endpoint, by=by, config_values=config(request) if config else None)
            if refused is not None:
                return refused
            return view(request, *args, **kwargs)

        return wrapped

    return decorator
