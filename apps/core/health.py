"""Health of the platform as the seed's JSON: database, cache, vector store and LLM, with latencies.

`/api/health` answers 503 when a required check (settings.HEALTH_REQUIRED_CHECKS) fails, and reports
"degraded" when only an optional one does. A service that is not configured is "disabled", which is fine.
Every probe has a timeout, so a hung dependency makes the report slow by at most that much, never stuck.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import connection

logger = logging.getLogger(__name__)

HEALTHY, UNHEALTHY, DISABLED = "healthy", "unhealthy", "disabled"
# The error text in a failing check is for operators; keep it short so a dependency cannot flood it.
MAX_ERROR_CHARS = 200


@dataclass(frozen=True)
class CheckResult:
    status: str
    latency_ms: float | None = None
    detail: str = ""

    def as_dict(self) -> dict:
        data: dict = {"status": self.status, "latency_ms": self.latency_ms}
        if self.detail:
            data["detail"] = self.detail
        return data


def _timed(probe: Callable[[], str]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = probe()
    except Exception as exc:  # noqa: BLE001 - any failure of a dependency is a failed check
        elapsed = round((time.perf_counter() - started) * 1000, 2)
        # The report is public on every host: error messages name internal hosts, ports and users, so they
        # go to the log and the report says only what kind of failure it was.
        logger.warning("health check failed: %s", f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        return CheckResult(UNHEALTHY, elapsed, type(exc).__name__)
    return CheckResult(HEALTHY, round((time.perf_counter() - started) * 1000, 2), detail)


def check_database() -> CheckResult:
    def probe() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        return ""

    return _timed(probe)


def check_cache() -> CheckResult:
    def probe() -> str:
        key = f"health:{uuid.uuid4().hex}"
        cache.set(key, "1", timeout=5)
        value = cache.get(key)
        cache.delete(key)
        if value != "1":
            raise RuntimeError("value written was not read back")
        return ""

    return _timed(probe)


def check_vectordb() -> CheckResult:
    if settings.QDRANT_URL:
        def probe_qdrant() -> str:
            from qdrant_client import QdrantClient

            client = QdrantClient(
                url=settings.QDRANT_URL,
                api_key=settings.QDRANT_API_KEY or None,
                timeout=int(settings.HEALTH_CHECK_TIMEOUT_S) or 1,
                # The version check is a second request, in a thread of its own, on every probe.
                check_compatibility=False,
            )
            try:
                client.get_collections()
            finally:
                client.close()
            return "qdrant"

        return _timed(probe_qdrant)

    def probe_pgvector() -> str:
        with connection.cursor() as cursor:
            cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            row = cursor.fetchone()
        if row is None:
            raise RuntimeError("pgvector extension is not installed in this database")
        return f"pgvector {row[0]}"

    return _timed(probe_pgvector)


def check_llm() -> CheckResult:
    if not settings.LLM_URL:
        return CheckResult(DISABLED)

    def probe() -> str:
        request = urllib.request.Request(settings.LLM_URL.rstrip("/") + "/models")  # noqa: S310 - operator URL
        if settings.LLM_API_KEY:
            request.add_header("Authorization", f"Bearer {settings.LLM_API_KEY}")
        # The URL is the operator's LLM_URL setting, never user input.
        with urllib.request.urlopen(request, timeout=settings.HEALTH_CHECK_TIMEOUT_S) as response:  # noqa: S310  # nosec B310
            json.loads(response.read(65536) or b"{}")
        return ""

    return _timed(probe)


def check_vault() -> CheckResult:
    from apps.core.secrets import vault_health

    status, latency_ms, detail = vault_health()
    if status == UNHEALTHY:
        logger.warning("health check failed: vault: %s", detail[:MAX_ERROR_CHARS])
        detail = "unavailable"
    return CheckResult(status, latency_ms, detail[:MAX_ERROR_CHARS])


CHECKS: dict[str, Callable[[], CheckResult]] = {
    "database": check_database,
    "cache": check_cache,
    "vectordb": check_vectordb,
    "llm": check_llm,
    "vault": check_vault,
}


_report_lock = threading.Lock()
_report: tuple[float, dict, int] | None = None  # (when, body, status) of this process's last report


def health_report_recent() -> tuple[dict, int]:
    """health_report, reused for settings.HEALTH_REPORT_TTL_S: requests arriving meanwhile (or while it runs:
    they wait for it) share one round of probes."""
    global _report
    ttl = float(getattr(settings, "HEALTH_REPORT_TTL_S", 0))
    if ttl <= 0:
        return health_report()
    with _report_lock:
        if _report is not None and time.monotonic() - _report[0] < ttl:
            return json.loads(json.dumps(_report[1])), _report[2]  # a copy: callers may not share the dict
        body, status = health_report()
        _report = (time.monotonic(), body, status)
        return json.loads(json.dumps(body)), status


def health_report() -> tuple[dict, int]:
    """The health JSON and the HTTP status to answer it with."""
    results = {name: check() for name, check in CHECKS.items()}
    required = set(settings.HEALTH_REQUIRED_CHECKS) | ({"vault"} if settings.VAULT_REQUIRED else set())
    required_failed = any(r.status == UNHEALTHY for name, r in results.items() if name in required)
    any_failed = any(r.status == UNHEALTHY for r in results.values())
    status = "unhealthy" if required_failed else "degraded" if any_failed else "healthy"
    body = {
        "status": status,
        "version": settings.PLATFORM_VERSION,
        "checks": {name: r.as_dict() for name, r in results.items()},
    }
    return body, 503 if required_failed else 200
