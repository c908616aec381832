"""A circuit breaker per provider, its state in Redis so every web and worker process agrees.

States: closed (calls go through; consecutive failures are counted) -> open after `threshold` consecutive
failed calls (calls are refused, the chain moves to the next provider at once instead of waiting on a dead
one) -> half-open once `timeout_s` has passed since it opened (exactly one process wins the probe; the
others still see it open) -> closed on the probe's success, open again (a fresh timeout) on its failure.

A provider is identified by `ProviderConfig.breaker_id` (endpoint, model, credential hash), so every
tenant using the platform endpoint shares its breaker, and one tenant's own key cannot open another's.
Other outside services use the same machinery through a `ServiceBreaker` (a key, a threshold, a timeout, a
probe claim TTL): apps.kb.breakers builds those of Qdrant and of the embedding endpoints.

Failure modes this module prevents:

* Each process rediscovering an outage on its own (N processes x threshold slow failures): the counter and
  the open time are shared in Redis.
* A thundering herd when a provider comes back: the half-open probe is claimed with SET NX, one caller.
* A probe that never reports (its process died) keeping a breaker half-open forever: the probe claim
  expires, and another caller probes. It lasts as long as one probe can (`probe_claim_ttl_s`: one attempt,
  the probe is not retried, at the provider's timeouts), at least the breaker timeout: a claim expiring
  while its probe still waits on a hung provider would let a new probe start every breaker timeout.
* State that outlives its meaning: every key expires (`STATE_TTL_S`), so a breaker nobody uses resets.
* Redis down taking the chat with it: breaker reads and writes that fail are logged and treated as closed
  (the provider's own timeouts still bound each call).

Without Redis (a development setup with the local-memory cache) the state lives in this process only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings as django_settings

from apps.llm.config import DEFAULT_BREAKER_THRESHOLD, DEFAULT_BREAKER_TIMEOUT_S, LLMSettings, ProviderConfig
from apps.llm.store import redis_client

logger = logging.getLogger(__name__)

KEY_PREFIX = "llm:breaker"
# How long breaker state is kept after the last write: long after any sane circuit-breaker-timeout, short
# enough that a provider unused for a day starts closed.
STATE_TTL_S = 24 * 3600

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


@dataclass(frozen=True)
class BreakerState:
    state: str
    failures: int
    opened_at: float | None


@dataclass(frozen=True)
class ServiceBreaker:
    """One breaker's identity and limits, for any outside service (an LLM provider, Qdrant, an embedding
    endpoint): its Redis key, `threshold` consecutive failures to open, `timeout_s` open before a probe,
    `probe_ttl_s` how long a probe's claim lasts, and how logs name it (`component`: the log prefix)."""

    key: str
    threshold: int
    timeout_s: float
    probe_ttl_s: int
    label: str
    description: str
    component: str = "llm"

    def describe(self) -> str:
        return self.description


def service_key(namespace: str, service_id: str) -> str:
    """The Redis key of a breaker: `namespace` (e.g. "llm:breaker") and the service's id."""
    return f"{namespace}:{service_id}"


def _key(provider: ProviderConfig) -> str:
    return service_key(KEY_PREFIX, provider.breaker_id)


def _probe_key_of(key: str) -> str:
    return f"{key}:probe"


def _probe_key(provider: ProviderConfig) -> str:
    return _probe_key_of(_key(provider))


# --- in-process fallback (no Redis) ------------------------------------------------------------------------

_local_lock = threading.Lock()
_local: dict[str, dict[str, float]] = {}
_local_probes: dict[str, float] = {}


def _read_key(key: str) -> tuple[int, float | None]:
    client = redis_client()
    if client is None:
        with _local_lock:
            data = _local.get(key, {})
        return int(data.get("failures", 0)), data.get("opened_at")
    raw = client.hgetall(key)
    failures = int(raw.get(b"failures", 0) or 0)
    opened = raw.get(b"opened_at")
    return failures, float(opened) if opened else None


def _read(provider: ProviderConfig) -> tuple[int, float | None]:
    return _read_key(_key(provider))


# --- any service, by its ServiceBreaker ----------------------------------------------------------------------


def service_state(breaker: ServiceBreaker) -> BreakerState:
    """The breaker's state now (for health pages and tests); does not claim a probe."""
    failures, opened_at = _read_key(breaker.key)
    if opened_at is None:
        return BreakerState(CLOSED, failures, None)
    if time.time() - opened_at < breaker.timeout_s:
        return BreakerState(OPEN, failures, opened_at)
    return BreakerState(HALF_OPEN, failures, opened_at)


def _admit(state: BreakerState, key: str, probe_ttl: int, describe, label: str, component: str) -> str | None:
    if state.state == CLOSED:
        return CLOSED
    if state.state == OPEN:
        return None
    probe_key = _probe_key_of(key)
    client = redis_client()
    if client is None:
        with _local_lock:
            now = time.time()
            if _local_probes.get(probe_key, 0) > now:
                return None
            _local_probes[probe_key] = now + probe_ttl
            return HALF_OPEN
    won = bool(client.set(probe_key, "1", nx=True, ex=probe_ttl))
    if won:
        logger.info("%s: breaker of %s half-open: probing", component, describe())
    return HALF_OPEN if won else None


def service_admit(breaker: ServiceBreaker) -> str | None:
    """May a call go to this service now? CLOSED (a call as usual), HALF_OPEN (this caller won the probe: make
    one attempt, no retries, so it ends within its claim), None (refused: open, or another caller probes)."""
    try:
        return _admit(service_state(breaker), breaker.key, breaker.probe_ttl_s, breaker.describe, breaker.label,
                      breaker.component)
    except Exception as exc:  # noqa: BLE001 - a Redis failure must not stop the chat
        logger.warning("%s: breaker state unavailable (%s); treating %s as closed", breaker.component, exc,
                       breaker.label)
        return CLOSED


def _probe_release(key: str, component: str) -> None:
    try:
        client = redis_client()
        if client is None:
            with _local_lock:
                _local_probes.pop(_probe_key_of(key), None)
            return
        client.delete(_probe_key_of(key))
    except Exception as exc:  # noqa: BLE001
        logger.warning("%s: could not release the breaker probe: %s", component, exc)


def _record_success(key: str, describe, component: str) -> None:
    try:
        client = redis_client()
        if client is None:
            with _local_lock:
                _local.pop(key, None)
                _local_probes.pop(_probe_key_of(key), None)
            return
        if client.exists(key):
            if client.hget(key, "opened_at"):
                logger.info("%s: breaker of %s closed again", component, describe())
            client.delete(key, _probe_key_of(key))
    except Exception as exc:  # noqa: BLE001
        logger.warning("%s: could not record a success in the breaker: %s", component, exc)


def _record_failure(key: str, threshold_of, describe, component: str) -> None:
    try:
        now = time.time()
        threshold = threshold_of()
        client = redis_client()
        if client is None:
            with _local_lock:
                data = _local.setdefault(key, {})
                data["failures"] = data.get("failures", 0) + 1
                half_open = data.get("opened_at") is not None
                if data["failures"] >= threshold or half_open:
                    data["opened_at"] = now
                _local_probes.pop(_probe_key_of(key), None)
            return
        pipe = client.pipeline()
        pipe.hincrby(key, "failures", 1)
        pipe.hget(key, "opened_at")
        pipe.expire(key, STATE_TTL_S)
        failures, opened_at, _ = pipe.execute()
        if opened_at is not None or failures >= threshold:
            # Opening, or a half-open probe that failed: (re)start the open period.
            client.hset(key, "opened_at", repr(now))
            client.delete(_probe_key_of(key))
            if opened_at is None:
                logger.warning("%s: breaker of %s opened after %d consecutive failures", component, describe(),
                               failures)
    except Exception as exc:  # noqa: BLE001
        logger.warning("%s: could not record a failure in the breaker: %s", component, exc)


def _reset(key: str) -> None:
    client = redis_client()
    if client is None:
        with _local_lock:
            _local.pop(key, None)
            _local_probes.pop(_probe_key_of(key), None)
        return
    client.delete(key, _probe_key_of(key))


def service_probe_release(breaker: ServiceBreaker) -> None:
    """A probe that ended without a verdict: another caller may probe."""
    _probe_release(breaker.key, breaker.component)


def service_record_success(breaker: ServiceBreaker) -> None:
    """A call succeeded (or the service answered at all): close the breaker, forget the failures."""
    _record_success(breaker.key, breaker.describe, breaker.component)


def service_record_failure(breaker: ServiceBreaker) -> None:
    """A call failed with an outage-type error: count it; open at the threshold; a failed probe re-opens."""
    _record_failure(breaker.key, lambda: breaker.threshold, breaker.describe, breaker.component)


def service_reset(breaker: ServiceBreaker) -> None:
    """Forget the service's breaker state (operators, tests)."""
    _reset(breaker.key)


# --- LLM providers -------------------------------------------------------------------------------------------


def breaker_limits(provider: ProviderConfig, settings: LLMSettings) -> tuple[int, float]:
    """(threshold, timeout_s) of the provider's breaker: the bot's `circuit-breaker-*` for its own credential;
    the platform's (LLM_BREAKER_THRESHOLD, LLM_BREAKER_TIMEOUT_S) for one every tenant shares, where one
    bot's threshold of 1 would otherwise open it for all."""
    if provider.shared:
        return (int(getattr(django_settings, "LLM_BREAKER_THRESHOLD", DEFAULT_BREAKER_THRESHOLD)),
                float(getattr(django_settings, "LLM_BREAKER_TIMEOUT_S", DEFAULT_BREAKER_TIMEOUT_S)))
    return settings.breaker_threshold, settings.breaker_timeout_s


def breaker_state(provider: ProviderConfig, settings: LLMSettings) -> BreakerState:
    """The breaker's state now (for health pages and tests); does not claim a probe."""
    failures, opened_at = _read(provider)
    if opened_at is None:
        return BreakerState(CLOSED, failures, None)
    if time.time() - opened_at < breaker_limits(provider, settings)[1]:
        return BreakerState(OPEN, failures, opened_at)
    return BreakerState(HALF_OPEN, failures, opened_at)


# Added to a probe's worst case (connect + read timeout of its one attempt) for what else it takes: sending
# the request, the breaker's own Redis round trips, a slow process.
PROBE_CLAIM_MARGIN_S = 5.0


def probe_claim_ttl(timeout_s: float, attempt_s: float) -> int:
    """Whole seconds a half-open probe's claim lasts: the breaker timeout, or longer when one probe's attempt
    (`attempt_s`, its worst case against a hung service) plus PROBE_CLAIM_MARGIN_S takes longer. A claim that
    expired while its probe still waits would let a new probe start every breaker timeout."""
    return max(1, int(max(timeout_s, attempt_s + PROBE_CLAIM_MARGIN_S) + 0.999))


def probe_claim_ttl_s(provider: ProviderConfig, settings: LLMSettings) -> int:
    """How long a half-open probe's claim lasts for this provider (a single attempt, see breaker_admit)."""
    from apps.llm.providers import CONNECT_TIMEOUT_S

    one_attempt = min(CONNECT_TIMEOUT_S, settings.timeout_s) + settings.timeout_s
    return probe_claim_ttl(breaker_limits(provider, settings)[1], one_attempt)


def breaker_allow(provider: ProviderConfig, settings: LLMSettings) -> bool:
    """May a call go to this provider now? Closed: yes. Open: no. Half-open: yes for one caller (the probe)."""
    return breaker_admit(provider, settings) is not None


def breaker_admit(provider: ProviderConfig, settings: LLMSettings) -> str | None:
    """breaker_allow, saying how: CLOSED (a call as usual), HALF_OPEN (this caller won the probe: make one
    attempt, no retries, so it ends within its claim), None (refused)."""
    try:
        state = breaker_state(provider, settings)
        if state.state != HALF_OPEN:
            return _admit(state, _key(provider), 0, provider.describe, provider.label, "llm")
        return _admit(state, _key(provider), probe_claim_ttl_s(provider, settings), provider.describe,
                      provider.label, "llm")
    except Exception as exc:  # noqa: BLE001 - a Redis failure must not stop the chat
        logger.warning("llm: breaker state unavailable (%s); treating %s as closed", exc, provider.label)
        return CLOSED


def breaker_probe_release(provider: ProviderConfig) -> None:
    """A probe that ended without a verdict (the caller's time ran out, an exception that is no provider failure
    escaped it): another caller may probe."""
    _probe_release(_key(provider), "llm")


def breaker_record_success(provider: ProviderConfig) -> None:
    """A call succeeded (or the server answered at all): close the breaker, forget the failures."""
    _record_success(_key(provider), provider.describe, "llm")


def breaker_record_failure(provider: ProviderConfig, settings: LLMSettings) -> None:
    """A call failed with an outage-type error: count it; open at the threshold; a failed probe re-opens."""
    _record_failure(_key(provider), lambda: breaker_limits(provider, settings)[0], provider.describe, "llm")


def breaker_reset(provider: ProviderConfig) -> None:
    """Forget the provider's breaker state (operators, tests)."""
    _reset(_key(provider))
