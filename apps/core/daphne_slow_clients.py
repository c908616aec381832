"""Slow clients inside daphne: a request's head, and then its body, must arrive within a time limit.

Daphne reads HTTP with Twisted web, whose HTTP channel has one timer: `timeOut`, 60 s without any byte
received (Twisted's default; daphne sets none), started again by every byte. A client that sends its request
line and headers a byte every few seconds (slow loris), or a body a byte at a time, therefore holds its
connection for ever, with a file descriptor and the buffers behind it. A few thousand such connections from one
machine use up a process's descriptors and nobody else gets in. Daphne's own `--http-timeout` does not help:
its clock starts when the whole request has arrived (it bounds the application's answer; see gbplatform.serve
for why our daphne commands leave it unset). Daphne has no option for this either, and builds its HTTP factory
itself, so `install()` makes daphne's `HTTPFactory` build its channels as `DeadlineHTTPChannel`, which adds:

- a head deadline: the request line and headers must be complete `HTTP_REQUEST_HEAD_TIMEOUT_S` after the
  connection opened (a new connection that sends nothing is closed then too) or, on a kept-alive connection,
  after the first byte of the next request. A client that sent part of a head gets 408 and the connection closes.
- a body deadline: a request body must arrive at `HTTP_REQUEST_BODY_MIN_BYTES_PER_S` on average after a
  grace of `HTTP_REQUEST_BODY_TIMEOUT_S` (at any moment the body may have taken the grace plus one second per
  that many bytes received), else 408 and the connection closes. A real upload at any usable speed passes:
  a 100 MB package at 1 Mbit/s takes 800 s and is allowed 100,020.
- nothing else: a kept-alive connection idle between requests keeps Twisted's 60 s (proxies in front reuse
  their connections to us, and closing them sooner makes their next request race our close), and a request
  being answered (a server-sent event stream, a long chat turn) or a connection upgraded to a WebSocket has
  no deadline here.

Either setting at 0 switches its deadline off. The application never sees a request dropped so: its body
was never complete. HTTP/1.x only, as `daphne_body_limit` (HTTP/2 needs TLS with ALPN, which our
deployments end at the proxy). `gbplatform.asgi` calls `install()` on import, which every daphne of ours loads
before it serves.
"""

from __future__ import annotations

import logging
import time

from daphne import http_protocol
from django.conf import settings
from twisted.web import http

logger = logging.getLogger(__name__)

# A request line and headers (at most 16 KB: Twisted's totalHeadersSize) come in one or two packets within
# milliseconds of the connection; 20 s leaves room for a very slow link retransmitting (TCP's first retries add
# up to 15 s) and is where Apache's mod_reqtimeout starts (header=20-40). A browser's speculative connection
# left unused goes after it too, which browsers expect.
REQUEST_HEAD_TIMEOUT_S = 20
# A body's grace before the rate counts, and the least average rate it must keep after (Apache's body=20,
# MinRate=500 is the same rule): 1 KB/s is far below any real connection and far above a trickle.
REQUEST_BODY_TIMEOUT_S = 20
REQUEST_BODY_MIN_BYTES_PER_S = 1000

_TIMEOUT_BODY = b"The request did not arrive in time.\n"
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_TIMEOUT_BODY)).encode() + b"\r\nConnection: close\r\n\r\n" + _TIMEOUT_BODY
)

_IDLE, _HEAD, _BODY, _BUSY = "idle", "head", "body", "busy"


def _setting(name: str, default: float) -> float:
    value = getattr(settings, name, None)
    return float(default if value is None else value)


def head_timeout_s() -> float:
    return _setting("HTTP_REQUEST_HEAD_TIMEOUT_S", REQUEST_HEAD_TIMEOUT_S)


def body_timeout_s() -> float:
    return _setting("HTTP_REQUEST_BODY_TIMEOUT_S", REQUEST_BODY_TIMEOUT_S)


def body_min_bytes_per_s() -> float:
    return _setting("HTTP_REQUEST_BODY_MIN_BYTES_PER_S", REQUEST_BODY_MIN_BYTES_PER_S)


class DeadlineHTTPChannel(http.HTTPChannel):
    """Twisted's HTTP channel with a deadline on each request's head and a least rate for its body."""

    _phase = _IDLE
    _deadline_call = None
    _received = 0  # bytes of the current head or body so far
    _body_started = 0.0

    # -- phases ------------------------------------------------------------------------------------------
    def connectionMade(self) -> None:  # noqa: N802 - Twisted's names
        super().connectionMade()
        self._head_start()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if data and self._phase == _IDLE:
            self._head_start()  # the next request on a kept-alive connection
        if self._phase in (_HEAD, _BODY):
            self._received += len(data)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802
        self._deadline_cancel()
        self._phase = _BODY if self.length != 0 else _BUSY  # `length` is None for a chunked body
        if self._phase == _BODY:
            self._body_start()
        super().allHeadersReceived()

    def allContentReceived(self) -> None:  # noqa: N802
        self._deadline_cancel()
        self._phase = _BUSY
        super().allContentReceived()

    def requestDone(self, request: http.Request) -> None:  # noqa: N802
        # Before the channel replays what a pipelining client already sent (dataReceived starts its head).
        if self.persistent:
            self._phase = _IDLE
        super().requestDone(request)

    def connectionLost(self, reason: object) -> None:  # noqa: N802
        self._deadline_cancel()
        super().connectionLost(reason)

    # -- deadlines ---------------------------------------------------------------------------------------
    def _head_start(self) -> None:
        self._deadline_cancel()
        self._phase, self._received = _HEAD, 0
        limit = head_timeout_s()
        if limit > 0:
            self._deadline_call = self.callLater(limit, self._too_slow)

    def _body_start(self) -> None:
        self._received, self._body_started = 0, time.monotonic()
        if body_timeout_s() > 0 and body_min_bytes_per_s() > 0:
            self._deadline_call = self.callLater(body_timeout_s(), self._body_check)

    def _body_check(self) -> None:
        self._deadline_call = None
        allowed = body_timeout_s() + self._received / body_min_bytes_per_s()
        left = allowed - (time.monotonic() - self._body_started)
        if left > 0:
            self._deadline_call = self.callLater(left, self._body_check)
        else:
            self._too_slow()

    def _deadline_cancel(self) -> None:
        if self._deadline_call is not None and self._deadline_call.active():
            self._deadline_call.cancel()
        self._deadline_call = None

    def _too_slow(self) -> None:
        self._deadline_call = None
        if self.transport is None:
            return
        what = "request head" if self._phase == _HEAD else "request body"
        peer = self.transport.getPeer()
        logger.info("%s too slow: %d bytes received; connection closed (from %s)", what, self._received,
                    getattr(peer, "host", peer))
        if self._received:  # a client that sent nothing gets no answer, as an idle connection would
            self.transport.write(_TIMEOUT_RESPONSE)
        self.persistent = False
        self._phase = _BUSY
        self.timeoutConnection()  # Twisted's: close now, abort if the client will not read what is pending


def _channel_protocol(factory: http.HTTPFactory) -> http._GenericHTTPChannelProtocol:
    """What daphne's HTTPFactory builds per connection (Twisted's own factory function, with our channel)."""
    return http._GenericHTTPChannelProtocol(DeadlineHTTPChannel())


def install() -> None:
    """Make daphne build every HTTP channel as a DeadlineHTTPChannel (idempotent)."""
    http_protocol.HTTPFactory.protocol = _channel_protocol
