"""/api/health returns the seed's JSON; required failures answer 503, optional ones degrade; /health lives."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.test import Client

from gbplatform.localservices import free_port

pytestmark = pytest.mark.django_db


def _health(host: str):
    return Client(HTTP_HOST=host).get("/api/health")


def test_health_on_a_tenant_host_is_healthy_with_every_check(canary_tenants):
    response = _health(canary_tenants.a.host)
    body = response.json()
    assert response.status_code == 200
    assert body["status"] == "healthy"
    assert body["version"]
    assert set(body["checks"]) == {"database", "cache", "vectordb", "llm", "vault"}
    for name in ("database", "cache", "vectordb"):
        assert body["checks"][name]["status"] == "healthy", body
        assert body["checks"][name]["latency_ms"] >= 0
    assert body["checks"]["llm"]["status"] == "disabled"  # no LLM configured: not a failure
    assert body["checks"]["vault"]["status"] == "disabled"


def test_required_vault_that_is_down_makes_health_unhealthy(canary_tenants, settings):
    from apps.core.secrets import secrets_reset

    settings.VAULT_ADDR, settings.VAULT_TOKEN, settings.VAULT_REQUIRED = f"http://127.0.0.1:{free_port()}", "t", True
    secrets_reset()
    try:
        response = _health(canary_tenants.a.host)
        assert response.status_code == 503
        assert response.json()["checks"]["vault"]["status"] == "unhealthy"
    finally:
        secrets_reset()


def test_required_check_failing_answers_503_unhealthy(canary_tenants, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/1",  # nothing listens there
            "KEY_FUNCTION": "django_tenants.cache.make_key",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    response = _health(canary_tenants.a.host)
    assert response.status_code == 503
    assert response.json()["status"] == "unhealthy"
    assert response.json()["checks"]["cache"]["status"] == "unhealthy"
    # The public report names the kind of failure, not internal addresses.
    assert "127.0.0.1" not in response.content.decode()


class _ModelsHandler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = json.dumps({"object": "list", "data": [{"id": "local-model", "object": "model"}]}).encode()
        self.send_response(200 if self.path == "/v1/models" else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def llm_server():
    server = HTTPServer(("127.0.0.1", 0), _ModelsHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_configured_llm_is_probed(canary_tenants, settings, llm_server):
    settings.LLM_URL = llm_server
    body = _health(canary_tenants.a.host).json()
    assert body["checks"]["llm"]["status"] == "healthy"
    assert body["status"] == "healthy"


def test_optional_check_failing_degrades_but_answers_200(canary_tenants, settings):
    settings.LLM_URL = f"http://127.0.0.1:{free_port()}/v1"
    settings.HEALTH_CHECK_TIMEOUT_S = 0.5
    response = _health(canary_tenants.a.host)
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["checks"]["llm"]["status"] == "unhealthy"


def test_liveness_answers_on_any_host_without_touching_tenants():
    response = Client(HTTP_HOST="whatever.invalid").get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_a_burst_of_health_requests_shares_one_round_of_probes(canary_tenants, settings, monkeypatch):
    """The endpoint is public and each report probes every dependency: requests within HEALTH_REPORT_TTL_S get
    the last report, and the probes run again after it."""
    import time

    from apps.core import health

    probes: list[float] = []
    database = health.CHECKS["database"]

    def counted() -> health.CheckResult:
        probes.append(time.monotonic())
        return database()

    def report_aged(seconds: float) -> None:
        """The cached report as if it had been made `seconds` earlier (instead of waiting for it to age)."""
        when, body, status = health._report
        health._report = (when - seconds, body, status)

    monkeypatch.setitem(health.CHECKS, "database", counted)
    monkeypatch.setattr(health, "_report", None)
    settings.HEALTH_REPORT_TTL_S = 60  # far longer than the burst takes, however slow the machine
    first = _health(canary_tenants.a.host)
    for _ in range(5):
        again = _health(canary_tenants.b.host)
        assert again.status_code == 200 and json.loads(again.content) == json.loads(first.content)
    assert len(probes) == 1
    report_aged(30)  # half the TTL: still the last report
    assert _health(canary_tenants.a.host).status_code == 200
    assert len(probes) == 1
    report_aged(31)  # past the TTL: the next request probes again
    assert _health(canary_tenants.a.host).status_code == 200
    assert len(probes) == 2
    settings.HEALTH_REPORT_TTL_S = 0  # off: every request probes
    _health(canary_tenants.a.host)
    _health(canary_tenants.a.host)
    assert len(probes) == 4


def test_the_vector_database_check_asks_qdrant_over_http_once_with_its_key(settings):
    """The Qdrant branch had no test against a server: the probe made a second request (the client's version
    check, in a thread of its own) on every probe."""
    from apps.core import health
    from tests.support.qdrant_fake import FakeQdrant

    with FakeQdrant(api_key="health-key") as qdrant:
        settings.QDRANT_URL, settings.QDRANT_API_KEY = qdrant.url, "health-key"
        first, second = health.check_vectordb(), health.check_vectordb()
        assert (first.status, first.detail, second.status) == (health.HEALTHY, "qdrant", health.HEALTHY)
        assert [(r.method, r.path, r.status) for r in qdrant.requests] == [("GET", "/collections", 200)] * 2
        settings.QDRANT_API_KEY = "wrong-key"
        refused = health.check_vectordb()
        assert refused.status == health.UNHEALTHY and "wrong-key" not in str(refused.as_dict())

