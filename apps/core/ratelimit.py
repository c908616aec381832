"""Rate limits on the shared Redis cache: one check for views, WebSocket frames and tasks, per tenant.

* `rate_check(scope, key, limit=, window_s=, burst=)` -> None (go ahead) or the seconds to wait.
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
* A forged client address: the IP is REMOTE_ADDR, or X-Forwarded-For only behind a proxy listed in
  TRUSTED_PROXY_IPS (apps.compliance.services.request_client_ip).
* Dodging the limit by inventing identities: `by=user|session|api-key` count per identity only when the
  server verified it (signed-in user, an existing session, `request.api_key_id` set by API-key
  authentication); otherwise the request counts against its IP.
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
# When Redis cannot be asked, tell the client to come back after this long (503 Retry-After).
UNAVAILABLE_RETRY_AFTER_S = 5
SCOPE_RE = re.compile(r"[A-Za-z0-9_.:-]{1,100}")
TENANT_RE = re.compile(r"[A-Za-z0-9_-]{1,63}")  # a schema name: never a ':' that could shift the key
KEY_PREFIX = "rl"

# KEYS[1] holds the bucket's "theoretical arrival time" (TAT) in microseconds of Redis time.
# ARGV[1] = emission interval (window / limit), ARGV[2] = capacity * interval, both in microseconds.
# Returns {1, 0} when allowed (and the TAT advanced), {0, wait_us} when refused (nothing changed).
_GCRA_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local interval = tonumber(ARGV[1])
local capacity_span = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - capacity_span
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
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
        tenant = "platform"
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
    global _script
    if limit < 1 or window_s < 1 or burst < 0:
        raise ValueError(f"invalid rate limit {limit}/{window_s}s burst {burst}: limit and window >= 1, burst >= 0")
    bucket = _bucket_key(scope, key, per_tenant=per_tenant, tenant=tenant)
    interval_us = window_s * 1_000_000 / limit
    capacity_span_us = interval_us * (limit + burst)
    client = _redis()
    if _script is None:
        _script = client.register_script(_GCRA_LUA)
    try:
        allowed, wait_us = _script(keys=[bucket], args=[f"{interval_us:.0f}", f"{capacity_span_us:.0f}"],
                                   client=client)
    except (RedisError, OSError) as exc:
        logger.warning("rate limit: Redis unavailable for %s (%s)", scope, type(exc).__name__)
        raise RateLimitUnavailable(f"the rate-limit store is unavailable ({type(exc).__name__})") from None
    if int(allowed) == 1:
        return None
    return max(int(wait_us) / 1_000_000, 0.001)


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
    if address is None:
        return "unknown"
    ip = ipaddress.ip_address(address)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False).network_address) + f"/{IPV6_PREFIX}"
    return str(ip)


def request_rate_key(request: HttpRequest, by: str) -> str:
    """The identity a request is counted under: verified user, session or API key, else its IP."""
    if by not in BY_CHOICES:
        raise ValueError(f"unknown rate-limit-by {by!r}; one of {', '.join(BY_CHOICES)}")
    if by == BY_USER:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"user:{user.pk}"
    elif by == BY_SESSION:
        session = getattr(request, "session", None)
        session_key = getattr(session, "session_key", None)
        if session_key and session.exists(session_key):
            return f"session:{session_key}"
    elif by == BY_API_KEY:
        api_key_id = getattr(request, "api_key_id", None)  # set by API-key authentication once verified
        if api_key_id:
            return f"api-key:{api_key_id}"
    return f"ip:{client_ip_bucket(request)}"


def rate_limited_response(retry_after_s: float) -> JsonResponse:
    """429 in the seed's shape, with Retry-After in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(retry_after_s))
    response = JsonResponse(
        {"error": "rate_limit_exceeded", "message": "Too many requests. Please slow down.",
         "retry_after_secs": seconds},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response


def rate_limit_unavailable_response() -> JsonResponse:
    response = JsonResponse(
        {"error": "rate_limit_unavailable", "message": "The service is busy. Please retry shortly.",
         "retry_after_secs": UNAVAILABLE_RETRY_AFTER_S},
        status=503,
    )
    response["Retry-After"] = str(UNAVAILABLE_RETRY_AFTER_S)
    return response


def request_rate_check(request: HttpRequest, endpoint: str, *, by: str | None = None,
                       config_values: Mapping[str, str] | None = None) -> JsonResponse | None:
    """The refusal response for this request (429, or 503 when the store is down), or None to proceed."""
    limit = rate_limits_for(config_values or {}, endpoint)
    if not limit.enabled:
        return None
    by = by or limit.by
    tenant = getattr(getattr(request, "tenant", None), "schema_name", None)  # set by the tenant middleware
    try:
        wait = rate_check(f"http.{endpoint}.{by}", request_rate_key(request, by), limit=limit.limit,
                          window_s=limit.window_s, burst=limit.burst, tenant=tenant)
    except RateLimitUnavailable as exc:
        # A development server without Redis (bare `manage.py runserver`) serves unlimited; production
        # requires REDIS_URL, so there this is an outage and fails closed unless told otherwise.
        if _setting("RATE_LIMIT_FAIL_OPEN", False) or (
            isinstance(exc, RateLimitNotConfigured) and _setting("DEBUG", False)
        ):
            return None
        return rate_limit_unavailable_response()
    if wait is None:
        return None
    logger.info("rate limit: %s refused (%s), retry in %.1f s", endpoint, limit.rate_text, wait)
    return rate_limited_response(wait)


def ratelimited(endpoint: str, *, by: str | None = None,
                config: Callable[[HttpRequest], Mapping[str, str] | None] | None = None,
                methods: Iterable[str] | None = None):
    """View decorator: count the request against `endpoint`'s limit; 429 JSON with Retry-After when over.

    `by` overrides `rate-limit-by`; `config(request)` returns the config.csv values to read limits from
    (e.g. the bot the request addresses), else the platform defaults apply; `methods` (e.g. ("POST",))
    counts only those methods (a sign-in form's GET should not use up its attempts). Works on sync and
    async views.
    """
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown rate-limit endpoint {endpoint!r}; one of {', '.join(ENDPOINTS)}")
    if by is not None and by not in BY_CHOICES:
        raise ValueError(f"unknown rate-limit-by {by!r}; one of {', '.join(BY_CHOICES)}")

    counted = {m.upper() for m in methods} if methods is not None else None

    def decorator(view):
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
