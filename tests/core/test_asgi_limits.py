"""Request bodies over the limit are refused while they arrive, before Django spools them to disk
(apps.core.asgi_limits, in front of Django in gbplatform.asgi)."""

from __future__ import annotations

import pytest
from asgiref.testing import ApplicationCommunicator

from apps.core.asgi_limits import BODY_OVERHEAD_BYTES, request_body_max_bytes

CHUNK = 64 * 1024


def _scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"nowhere.localhost"), *headers], "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


async def _answer(communicator: ApplicationCommunicator) -> tuple[int, bytes]:
    start = await communicator.receive_output(10)
    assert start["type"] == "http.response.start"
    body = b""
    while True:
        message = await communicator.receive_output(10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            return start["status"], body


@pytest.fixture
def small_limit(settings):
    settings.PACKAGE_MAX_TOTAL_BYTES = 1000
    return request_body_max_bytes()


@pytest.mark.asyncio
async def test_a_declared_body_over_the_limit_is_refused_before_it_is_read(small_limit):
    from gbplatform.asgi import application

    communicator = ApplicationCommunicator(application, _scope(
        "POST", "/api/bots/deploy", [(b"content-length", str(2 * 1024**3).encode())]))
    # Nothing of the body is sent: the answer comes from the header alone.
    status, body = await _answer(communicator)
    assert status == 413 and str(small_limit).encode() in body
    await communicator.wait(5)


@pytest.mark.asyncio
async def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(small_limit):
    from gbplatform.asgi import application

    communicator = ApplicationCommunicator(application, _scope("POST", "/api/bots/deploy", []))
    sent = 0
    while sent <= small_limit:
        await communicator.send_input({"type": "http.request", "body": b"x" * CHUNK, "more_body": True})
        sent += CHUNK
    status, body = await _answer(communicator)
    assert status == 413 and b"larger than this server takes" in body
    assert sent < small_limit + 2 * CHUNK  # refused as it passed the limit, not at the end of the body
    await communicator.wait(5)


@pytest.mark.asyncio
async def test_bodies_within_the_limit_and_bad_lengths(small_limit):
    from gbplatform.asgi import application

    assert small_limit == 1000 + BODY_OVERHEAD_BYTES
    ok = ApplicationCommunicator(application, _scope("GET", "/health", [(b"content-length", b"5")]))
    await ok.send_input({"type": "http.request", "body": b"hello", "more_body": False})
    status, body = await _answer(ok)
    assert status == 200 and b"ok" in body  # reached Django (its liveness answer)
    bad = ApplicationCommunicator(application, _scope("POST", "/health", [(b"content-length", b"lots")]))
    status, body = await _answer(bad)
    assert status == 400 and b"Content-Length" in body
