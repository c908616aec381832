"""B4 (test plan §3.4) against a real daphne: slow-loris clients and a multipart upload of 10,000 parts.

The server is the tests' live server (tests.browser.harness.LiveServer: `python -m daphne` on the production
application, which installs apps.core.daphne_slow_clients) on the test run's database, with short deadlines
for slow clients (HEAD_TIMEOUT_S, BODY_TIMEOUT_S, BODY_MIN_BYTES_PER_S through the environment) so a test waits
seconds, not the production 20. A tenant of its own holds a bot, an API key that may deploy, and an admin.

Slow loris: 80 connections, half silent and half sending their request head a byte at a time, are all closed
within the head deadline while /health keeps answering; a body trickled below the least rate is dropped with
408, a slow but steady one is served; a kept-alive connection and a WebSocket outlive the head deadline. Many
parts: 10,000 files or fields to the package deploy endpoints (API key, and the console's form through the
CSRF middleware, which reads the form first) get 400 naming the limit, never a 5xx, and deploy nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
import threading
import time
from dataclasses import dataclass

import pytest
import requests
from django.conf import settings
from django_tenants.utils import schema_context

from tests.browser.harness import LiveServer, database_url_for
from tests.sessions.support import ChatClient

# The module's tenant is committed by its fixture; the mark makes pytest-django create the test database.
pytestmark = pytest.mark.django_db

HOST = "slow-clients.test.localhost"
BOT = "echo"
HEAD_TIMEOUT_S = 3
BODY_TIMEOUT_S = 3
BODY_MIN_BYTES_PER_S = 1000
# What the machine may add to a deadline before a connection is seen closed (a loaded 2-core machine; the
# server checks nothing periodically: each deadline is its own timer).
DROP_SLACK_S = 5.0
SILENT_CONNECTIONS = 40
TRICKLING_CONNECTIONS = 40
TRICKLE_INTERVAL_S = 0.5
ANSWER_TIMEOUT_S = 15.0
PARTS = 10_000


@dataclass(frozen=True)
class World:
    server: LiveServer
    api_key: str
    admin_password: str

    @property
    def port(self) -> int:
        return self.server.port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(scope="module")
def world(canary_tenants, django_db_blocker, tmp_path_factory):
    from django.db import connection

    from apps.accounts.services import api_key_create
    from apps.bots.models import Bot
    from apps.tenants.services import tenant_create

    with django_db_blocker.unblock():
        tenant, password = tenant_create(name="Slow clients", domain=HOST)
        with schema_context(tenant.schema_name):
            Bot.objects.create(name=BOT)
            from django.contrib.auth import get_user_model

            admin = get_user_model().objects.get(username="admin")  # tenant_create's first admin
            key = api_key_create(name="ci", scopes=["bots:deploy"], created_by=admin).secret
        database_url = database_url_for(os.environ["DATABASE_URL"], connection.settings_dict["NAME"])
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test", "DATABASE_URL": database_url,
        "MEDIA_ROOT": str(tmp_path_factory.mktemp("slow-clients-drive")), "S3_ACCESS_KEY": "", "QDRANT_URL": "",
        "LLM_URL": "", "HTTP_REQUEST_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "HTTP_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
        "HTTP_REQUEST_BODY_MIN_BYTES_PER_S": str(BODY_MIN_BYTES_PER_S),
    }
    server = LiveServer(env=env, log_path=tmp_path_factory.mktemp("slow-clients") / "server.log").start()
    yield World(server, key, password)
    server.stop()


# --- raw HTTP ------------------------------------------------------------------------------------------


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT_S)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, bytes]:
    """One HTTP/1.1 response, with a Content-Length or chunked (the connection may stay open): status, body."""
    data = b""

    def more() -> None:
        nonlocal data
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed mid-answer: {data[:200]!r}"
        data += chunk

    while b"\r\n\r\n" not in data:
        more()
    head, data = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    status = int(lines[0].split(" ", 2)[1])
    if "content-length" in headers:
        while len(data) < int(headers["content-length"]):
            more()
        return status, data[:int(headers["content-length"])]
    assert headers.get("transfer-encoding") == "chunked", headers
    body = b""
    while True:
        while b"\r\n" not in data:
            more()
        size_line, data = data.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(data) < size + 2:
            more()
        body, data = body + data[:size], data[size + 2:]
        if size == 0:
            return status, body


def _health(port: int) -> int:
    with _connect(port) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        return _read_response(sock)[0]


def _until_closed(sockets: list[socket.socket], deadline: float) -> dict[socket.socket, bytes]:
    """What each socket received until the server closed it, for those closed before `deadline`."""
    pending = {sock: b"" for sock in sockets}
    closed: dict[socket.socket, bytes] = {}
    while pending and time.monotonic() < deadline:
        readable, _, _ = select.select(list(pending), [], [], max(0.0, min(0.5, deadline - time.monotonic())))
        for sock in readable:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                data = b""
            if data:
                pending[sock] += data
            else:
                closed[sock] = pending.pop(sock)
    return closed


# --- slow loris ----------------------------------------------------------------------------------------


def test_slow_loris_connections_are_dropped_within_the_head_timeout_while_health_answers(world):
    head = f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ".encode()
    started = time.monotonic()
    silent = [_connect(world.port) for _ in range(SILENT_CONNECTIONS)]
    trickling = [_connect(world.port) for _ in range(TRICKLING_CONNECTIONS)]
    stop = threading.Event()

    def trickle() -> None:
        sent = 0
        while not stop.is_set():  # a byte per connection and interval; the head never ends
            piece = head[sent:sent + 1] or b"a"
            for sock in trickling:
                with contextlib.suppress(OSError):  # closed by the server: the check below counts it
                    sock.send(piece)
            sent += 1
            stop.wait(TRICKLE_INTERVAL_S)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        # While the 80 hold their connections, other clients are served; one sends its head in three pieces
        # (slow, but well within the deadline).
        assert [_health(world.port) for _ in range(3)] == [200, 200, 200]
        with _connect(world.port) as polite:
            for piece in (b"GET /health HTT", f"P/1.1\r\nHost: {HOST}\r\n".encode(), b"Connection: close\r\n\r\n"):
                polite.sendall(piece)
                time.sleep(0.3)
            assert _read_response(polite)[0] == 200
        closed = _until_closed(silent + trickling, started + HEAD_TIMEOUT_S + DROP_SLACK_S)
    finally:
        stop.set()
        thread.join()
        for sock in silent + trickling:
            sock.close()
    open_after = len(silent) + len(trickling) - len(closed)
    assert open_after == 0, (f"{open_after} slow connections still open {HEAD_TIMEOUT_S + DROP_SLACK_S:g} s after "
                             f"they opened (head deadline {HEAD_TIMEOUT_S} s)")
    assert all(closed[sock] == b"" for sock in silent)  # nothing sent, nothing answered: closed
    assert all(closed[sock].startswith(b"HTTP/1.1 408 ") for sock in trickling), {closed[s][:40] for s in trickling}
    assert _health(world.port) == 200


def test_a_body_trickled_below_the_least_rate_is_dropped_and_a_slow_steady_one_is_served(world):
    with _connect(world.port) as trickler, _connect(world.port) as steady:
        started = time.monotonic()
        trickler.sendall(f"POST /health HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 100000\r\n\r\n".encode())
        body = b"x" * 16_000  # at 4,000 bytes a second: past the grace, well above the least rate
        steady.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {len(body)}\r\n"
                       "Connection: close\r\n\r\n".encode())
        dropped: bytes | None = None
        for n in range(16):
            steady.sendall(body[n * 1000:(n + 1) * 1000])
            with contextlib.suppress(OSError):  # closed by the server: the check below counts it
                trickler.send(b"x")  # a byte every 0.25 s: 4 bytes a second
            time.sleep(0.25)
        assert _read_response(steady)[0] == 200
        closed = _until_closed([trickler], started + BODY_TIMEOUT_S + DROP_SLACK_S)
        dropped = closed.get(trickler)
    assert dropped is not None, f"a body arriving at 4 bytes/s was still taken {BODY_TIMEOUT_S + DROP_SLACK_S:g} s on"
    assert dropped.startswith(b"HTTP/1.1 408 "), dropped[:200]


def test_a_kept_alive_connection_and_a_websocket_outlive_the_head_timeout(world):
    async def scenario() -> tuple[int, int, float | None]:
        client = ChatClient(world.port, HOST)
        ids = await client.bootstrap(BOT)
        async with client.connect(BOT, ids) as chat:
            with _connect(world.port) as kept:
                kept.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                first = _read_response(kept)[0]
                await asyncio.sleep(HEAD_TIMEOUT_S + 1.5)  # idle past the head deadline, both of them
                kept.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                second = _read_response(kept)[0]
            pong = await asyncio.wait_for(await chat.ws.ping(), ANSWER_TIMEOUT_S)
        return first, second, pong

    first, second, pong = asyncio.run(scenario())
    assert (first, second) == (200, 200)
    assert pong is not None  # the socket still answers its pings


# --- 10,000 parts --------------------------------------------------------------------------------------


def _multipart(parts: int, *, files: bool) -> tuple[bytes, str]:
    boundary = "b4-many-parts-boundary"
    if files:
        part = ('--{b}\r\nContent-Disposition: form-data; name="package"; filename="p{i}.zip"\r\n'
                "Content-Type: application/zip\r\n\r\nPK\r\n")
    else:
        part = '--{b}\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\nv\r\n'
    body = "".join(part.format(b=boundary, i=i) for i in range(parts)) + f"--{boundary}--\r\n"
    return body.encode(), f"multipart/form-data; boundary={boundary}"


def _bots(world: World) -> list[str]:
    response = requests.get(world.url("/api/bots"), headers={"Host": HOST}, timeout=ANSWER_TIMEOUT_S)
    return [bot["name"] for bot in response.json()["bots"]]


@pytest.mark.parametrize("files", [True, False], ids=["10000-files", "10000-fields"])
def test_a_deploy_of_10000_parts_is_a_clear_400_not_a_server_error(world, files):
    body, content_type = _multipart(PARTS, files=files)
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FILES if files else settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    what = "files" if files else "fields"

    api = requests.post(world.url("/api/bots/deploy"), data=body, timeout=ANSWER_TIMEOUT_S,
                        headers={"Host": HOST, "Content-Type": content_type,
                                 "Authorization": f"Bearer {world.api_key}"})
    assert api.status_code == 400, api.text[:300]
    assert api.headers["Content-Type"].startswith("application/json")
    assert f"more than {limit} {what}" in api.json()["error"]

    # The console's form: a signed-in admin, its CSRF token in the header; the CSRF middleware reads the form.
    console = requests.Session()
    console.headers["Host"] = HOST
    login_page = console.get(world.url("/accounts/login/"), timeout=ANSWER_TIMEOUT_S)
    assert login_page.status_code == 200
    token = console.cookies["csrftoken"]
    signed_in = console.post(world.url("/accounts/login/"), allow_redirects=False, timeout=ANSWER_TIMEOUT_S,
                             data={"username": "admin", "password": world.admin_password,
                                   "csrfmiddlewaretoken": token})
    assert signed_in.status_code == 302, signed_in.text[:300]
    for htmx in ({"HX-Request": "true"}, {}):
        page = console.post(world.url("/console/bots/deploy/"), data=body, timeout=ANSWER_TIMEOUT_S,
                            allow_redirects=False, headers={"Content-Type": content_type,
                                                            "X-CSRFToken": console.cookies["csrftoken"], **htmx})
        assert page.status_code == 400, page.text[:300]
        assert f"more than {limit} {what}" in page.text
    assert _bots(world) == [BOT]  # nothing was deployed
    assert _health(world.port) == 200
