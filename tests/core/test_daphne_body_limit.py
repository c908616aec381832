"""A real daphne refuses a request body over the limit while it arrives, not after storing it
(apps.core.daphne_body_limit, installed by gbplatform.asgi), spoken to over a raw socket.

The server is the tests' live server (tests.browser.harness.LiveServer: `python -m daphne` on the production
application) with a 1000-byte package limit, so the body limit is 1000 bytes + BODY_OVERHEAD_BYTES.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

import pytest

from apps.core.asgi_limits import BODY_OVERHEAD_BYTES
from tests.browser.harness import LiveServer

PACKAGE_LIMIT = 1000
LIMIT = PACKAGE_LIMIT + BODY_OVERHEAD_BYTES
# Generous: the answers asserted here come at once; this only bounds a test run against a server that waits.
ANSWER_TIMEOUT_S = 10
# What a chunked upload tries to send: far over the limit and over what loopback sockets buffer.
CHUNKED_TOTAL = 48 * 1024 * 1024
CHUNK = 64 * 1024
# What the client may get into the sockets' buffers beyond what the server read before closing.
SOCKET_BUFFERS_SLACK = 16 * 1024 * 1024
HOST = "nowhere.test.localhost"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gbplatform.settings.test",
           "PACKAGE_MAX_TOTAL_BYTES": str(PACKAGE_LIMIT)}
    live = LiveServer(env=env, log_path=tmp_path_factory.mktemp("daphne-body-limit") / "server.log").start()
    yield live
    live.stop()


def _connect(port: int, send_buffer: int | None = None) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if send_buffer:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.settimeout(ANSWER_TIMEOUT_S)
    sock.connect(("127.0.0.1", port))
    return sock


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; fails if it neither answers nor closes."""
    answer = b""
    while True:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            raise AssertionError(f"the server neither answered nor closed within {ANSWER_TIMEOUT_S} s "
                                 f"(got {answer[:200]!r})") from None
        except ConnectionResetError:
            return answer
        if not data:
            return answer
        answer += data


def _status(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("expect_continue", [False, True], ids=["plain", "expect-100-continue"])
def test_a_declared_length_over_the_limit_is_answered_at_once_without_the_body(server, expect_continue):
    head = (f"POST /api/bots/deploy HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/zip\r\n"
            f"Content-Length: 500000000\r\n" + ("Expect: 100-continue\r\n" if expect_continue else "") + "\r\n")
    with _connect(server.port) as sock:
        # The headers and 1 KB of a 500 MB body; the rest is never sent, so only an answer from the headers
        # (and the connection closed by the server) ends the read.
        sock.sendall(head.encode() + b"x" * 1024)
        answer = _read_until_closed(sock)
    assert _status(answer) == 413
    assert f"({LIMIT} bytes)".encode() in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer: no "100 Continue" telling the client to send it


def test_a_chunked_body_is_cut_off_and_closed_as_it_passes_the_limit(server):
    with _connect(server.port, send_buffer=CHUNK) as sock:
        received: list[bytes] = []
        reader = threading.Thread(target=lambda: received.append(_read_until_closed(sock)), daemon=True)
        reader.start()
        piece = b"%x\r\n" % CHUNK + b"x" * CHUNK + b"\r\n"
        sent, broken = 0, None
        try:
            sock.sendall(f"POST /api/bots/deploy HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/zip\r\n"
                         "Transfer-Encoding: chunked\r\n\r\n".encode())
            while sent < CHUNKED_TOTAL:
                sock.sendall(piece)
                sent += CHUNK
            sock.sendall(b"0\r\n\r\n")
        except OSError as exc:
            broken = exc
        reader.join(ANSWER_TIMEOUT_S + 1)
    # The server stopped taking the body and closed the connection (the client's writes fail) once the body
    # passed the limit, instead of storing all of it and answering at its end.
    assert isinstance(broken, ConnectionError), (
        f"the server took {sent} bytes of a body over its {LIMIT}-byte limit ({broken!r})")
    assert sent < LIMIT + SOCKET_BUFFERS_SLACK, sent
    assert received and _status(received[0]) == 413, received
    assert f"({LIMIT} bytes)".encode() in received[0]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_still_reaches_the_application(server, chunked):
    body = b"x" * LIMIT
    framing = (f"Transfer-Encoding: chunked\r\n\r\n{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
               if chunked else f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    with _connect(server.port) as sock:
        # /health answers from Django's middleware (no tenant, no database): the body went through.
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n".encode() + framing)
        answer = _read_until_closed(sock)
    assert _status(answer) == 200, answer[:300]
    assert b'{"status": "ok"}' in answer


def test_websocket_frames_are_bounded_before_their_payload_is_read():
    """daphne passes --websocket-max-frame-size / --websocket-max-message-size (1 MiB by default in the daphne
    requirements.txt pins) to autobahn, which fails a connection from a frame's header when its payload length
    is over the limit; with 0 (autobahn's own default: no limit) a client could make a process buffer a frame
    of any size. Our daphne commands (gbplatform.serve, the live server) leave daphne's defaults, so they must
    stay bounded. The chat's own, smaller limit (apps.sessions.consumers.FRAME_MAX_BYTES) applies after."""
    code = ("from daphne.cli import CommandLineInterface\n"
            "a = CommandLineInterface().parser.parse_args(['gbplatform.asgi:application'])\n"
            "print(a.websocket_max_frame_size, a.websocket_max_message_size)\n")
    frame, message = map(int, subprocess.check_output([sys.executable, "-c", code], text=True).split())
    assert 0 < frame <= 1024 * 1024 and 0 < message <= 1024 * 1024
