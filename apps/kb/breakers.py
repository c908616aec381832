"""Circuit breakers of the knowledge bases' outside services on the search path: Qdrant and remote embedding
endpoints. The machinery (state in Redis shared by every process, one half-open probe, Redis down = closed)
is apps.llm.breaker's; this module only says who is who and what counts as an outage.

Identity: Qdrant is one platform-wide service, keyed by its URL (hashed: a URL may carry credentials); an
embedding endpoint is keyed by endpoint + model + credential hash, as an LLM provider's `breaker_id`, so one
tenant's broken endpoint or key never opens another tenant's breaker.

Only "the service is down" counts as a failure: timeouts, connection errors and 5xx answers. A 4xx (a wrong
key, a malformed request, a missing collection) or an empty result means the service answered: it closes the
breaker. While a breaker is open, `KBServiceUnavailable` is raised at once, without a request, and the search
answers lexically, marked degraded (apps.kb.search).

Failure mode this module prevents: a hung Qdrant or embedding endpoint costing every chat turn that uses a KB
the full search timeout (QDRANT_SEARCH_TIMEOUT_S / QUERY_TIMEOUT_S, 5 s) on every search.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from urllib.parse import urlsplit

from django.conf import settings as django_settings

from apps.llm.breaker import (
    HALF_OPEN,
    ServiceBreaker,
    probe_claim_ttl,
    service_admit,
    service_key,
    service_probe_release,
    service_record_failure,
    service_record_success,
)

KEY_PREFIX = "kb:breaker"
# Consecutive outage-type failures before a breaker opens, and how long it stays open before one probe
# (settings KB_BREAKER_THRESHOLD / KB_BREAKER_TIMEOUT_S override them).
DEFAULT_KB_BREAKER_THRESHOLD = 3
DEFAULT_KB_BREAKER_TIMEOUT_S = 30.0


class KBServiceUnavailable(RuntimeError):
    """The service's breaker is open (or another caller is probing it): no request was made."""


def _limits() -> tuple[int, float]:
    return (int(getattr(django_settings, "KB_BREAKER_THRESHOLD", DEFAULT_KB_BREAKER_THRESHOLD)),
            float(getattr(django_settings, "KB_BREAKER_TIMEOUT_S", DEFAULT_KB_BREAKER_TIMEOUT_S)))


def _where(url: str) -> str:
    """A URL for logs: no credentials (`user:pass@host`), no query."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _breaker(kind: str, service_id: str, label: str, description: str, attempt_s: float) -> ServiceBreaker:
    threshold, timeout_s = _limits()
    probe_ttl = probe_claim_ttl(timeout_s, 2 * attempt_s)  # one attempt: connect + read at the search timeout
    return ServiceBreaker(key=service_key(f"{KEY_PREFIX}:{kind}", service_id), threshold=threshold,
                          timeout_s=timeout_s, probe_ttl_s=probe_ttl, label=label, description=description,
                          component="kb")


def qdrant_breaker(url: str) -> ServiceBreaker:
    """The breaker of the platform's Qdrant (one for every tenant: it is one service)."""
    from apps.kb.vectorstores import QDRANT_SEARCH_TIMEOUT_S

    service_id = hashlib.sha256(url.strip().rstrip("/").encode()).hexdigest()[:24]
    return _breaker("qdrant", service_id, "qdrant", f"Qdrant at {_where(url)}", QDRANT_SEARCH_TIMEOUT_S)


def embedding_breaker_id(base_url: str, model: str, api_key: str) -> str:
    """An embedding endpoint's identity: endpoint, model and credential (hashed), as apps.llm's breaker_id."""
    return hashlib.sha256(f"embeddings\n{base_url}\n{model}\n{api_key}".encode()).hexdigest()[:24]


def embedding_breaker(provider) -> ServiceBreaker | None:
    """The breaker of a remote embedding provider (None for the in-process model: nothing outside to guard)."""
    from apps.kb.embeddings import QUERY_TIMEOUT_S

    breaker_id = getattr(provider, "breaker_id", None)
    if not breaker_id:
        return None
    where = _where(getattr(provider, "base_url", ""))
    return _breaker("embeddings", breaker_id, "embeddings",
                    f"embedding endpoint {where} (model {getattr(provider, 'model', '')})", QUERY_TIMEOUT_S)


def qdrant_outage(exc: BaseException) -> bool:
    """Does this exception of a Qdrant call mean Qdrant is down (timeout, connection error, 5xx)?"""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, UnexpectedResponse):
        return exc.status_code is None or exc.status_code >= 500
    if isinstance(exc, ResponseHandlingException):
        exc = exc.source
    return isinstance(exc, httpx.TransportError | TimeoutError | ConnectionError)


def qdrant_answered(exc: BaseException) -> bool:
    """Qdrant answered (a 4xx): it is up, whatever the call's fault was."""
    from qdrant_client.http.exceptions import UnexpectedResponse

    return isinstance(exc, UnexpectedResponse) and exc.status_code is not None and exc.status_code < 500


def embedding_outage(exc: BaseException) -> bool:
    return bool(getattr(exc, "counts_for_breaker", False))


def embedding_answered(exc: BaseException) -> bool:
    return getattr(exc, "http_status", None) is not None and not embedding_outage(exc)


@contextlib.contextmanager
def guarded(breaker: ServiceBreaker | None, outage, answered) -> Iterator[None]:
    """Run the block through `breaker`: refused at once (KBServiceUnavailable) while it is open; an outage-type
    exception (`outage(exc)`) counts as a failure; success or an answer of the service (`answered(exc)`)
    closes it; anything else releases a probe without a verdict."""
    if breaker is None:
        yield
        return
    admitted = service_admit(breaker)
    if admitted is None:
        raise KBServiceUnavailable(f"{breaker.describe()} is unavailable (circuit breaker open)")
    try:
        yield
    except BaseException as exc:
        if outage(exc):
            service_record_failure(breaker)
        elif answered(exc):
            service_record_success(breaker)
        elif admitted == HALF_OPEN:
            service_probe_release(breaker)
        raise
    service_record_success(breaker)
