"""Logs are JSON lines carrying the request id and the tenant."""

import io
import json
import logging

import pytest
from django.test import Client

from apps.core.logging import JsonFormatter, RequestContextFilter

pytestmark = pytest.mark.django_db


@pytest.fixture
def access_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    handler.addFilter(RequestContextFilter())
    logger = logging.getLogger("gbplatform.access")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(previous)


def test_request_log_line_is_json_with_request_id_and_tenant(canary_tenants, access_log):
    response = Client(HTTP_HOST=canary_tenants.a.host).get("/api/bots", HTTP_X_REQUEST_ID="req-12345678")
    assert response["X-Request-ID"] == "req-12345678"
    line = json.loads(access_log.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == "req-12345678"
    assert line["tenant"] == canary_tenants.a.schema_name
    assert line["path"] == "/api/bots" and line["status"] == 200 and line["levelname"] == "INFO"


def test_malformed_request_id_is_replaced_not_echoed(canary_tenants, access_log):
    response = Client(HTTP_HOST=canary_tenants.a.host).get("/api/bots", HTTP_X_REQUEST_ID="bad\r\nid")
    assert response["X-Request-ID"] != "bad\r\nid" and len(response["X-Request-ID"]) == 32
    line = json.loads(access_log.getvalue().strip().splitlines()[-1])
    assert line["request_id"] == response["X-Request-ID"]
