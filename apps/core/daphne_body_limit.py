"""The request body limit inside daphne, enforced while the body arrives, before any of it is stored.

Daphne reads HTTP with Twisted web, which stores a request's whole body (in memory up to 100 kB, else in a
temporary file) and only then hands the request to daphne, which only then calls the ASGI application. So
`apps.core.asgi_limits.RequestBodyLimit`, however early in the ASGI chain, sees a body only once all of it
has been received and written to the web container's disk: a client declaring a 500 MB Content-Length is
kept waiting for it, and a 30 MB body is stored whole before its 413.

Daphne has no setting for this (no body-size option; its server builds its HTTP factory itself), and the
only point where the body can be refused as it streams in is the Twisted request object: the HTTP channel
calls `gotLength(length)` once the headers are in (the Content-Length, None for a chunked body) and
`handleContentChunk(data)` for each piece of the body after. Daphne's `HTTPFactory.buildProtocol` names its
request class through the module attribute `daphne.http_protocol.WebRequest` for every new connection, so
`install()` replaces that attribute with `BodyLimitedWebRequest`, a subclass that:

- answers a declared Content-Length over the limit with 413 at once (a short text naming the limit) and
  closes the connection without reading the body; an `Expect: 100-continue` client is not told to send it;
- counts the body as it arrives (a chunked body, or any other) and, as soon as it passes the limit, answers
  413, closes the connection and drops what it had stored; the piece that passed the limit is never stored;
- never runs the application for a refused request.

The limit is `asgi_limits.request_body_max_bytes()`, the same one RequestBodyLimit applies (one limit for
every path), and the 413 text is the same. RequestBodyLimit stays in the ASGI chain as the second line, for
any other server.

`gbplatform.asgi` calls `install()` on import, which is how every daphne of ours gets it: daphne imports the
application module before it starts serving (`python -m daphne ... gbplatform.asgi:application`, which is
what gbplatform.serve's children run for `make run` and compose, and tests.browser.asgi, the tests' live
server, imports gbplatform.asgi).

HTTP/1.x only: HTTP/2 reaches daphne only over TLS with ALPN, which our deployments never give it (TLS ends
at the proxy); a request on any other channel is left to Twisted and RequestBodyLimit. WebSocket frames are
bounded by daphne itself (`--websocket-max-frame-size` / `--websocket-max-message-size`, 1 MiB by default,
which autobahn checks against a frame's header before reading its payload).
"""

from __future__ import annotations

import logging

from daphne import http_protocol
from twisted.web import http

from apps.core.asgi_limits import request_body_max_bytes, too_large_body

logger = logging.getLogger(__name__)

_ORIGINAL_WEB_REQUEST = http_protocol.WebRequest


def _refusal(limit: int) -> bytes:
    """The whole 413 response, written straight to the connection (no request line has been parsed into the
    request object yet, so Twisted's response machinery cannot be used)."""
    body = too_large_body(limit)
    head = ("HTTP/1.1 413 Content Too Large\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode("ascii") + body


class BodyLimitedWebRequest(_ORIGINAL_WEB_REQUEST):
    """daphne's WebRequest, refusing a body over `request_body_max_bytes()` while it arrives."""

    body_limit: int | None = None
    body_received = 0
    body_refused = False

    def gotLength(self, length: int | None) -> None:  # noqa: N802 - Twisted's name
        if not isinstance(self.channel, http.HTTPChannel):
            super().gotLength(length)
            return
        self.body_limit = request_body_max_bytes()
        if length is not None and length > self.body_limit:
            self._refuse_body()
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:  # noqa: N802 - Twisted's name
        if self.body_refused:
            return  # the rest of the read that passed the limit: dropped
        if self.body_limit is not None:
            self.body_received += len(data)
            if self.body_received > self.body_limit:
                self._refuse_body()
                return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:  # noqa: N802
        if self.body_refused:
            return  # the end of a refused body came in the same read: the application never sees it
        super().requestReceived(command, path, version)

    def _refuse_body(self) -> None:
        self.body_refused = True
        # Twisted answers `Expect: 100-continue` right after gotLength: it must not follow the 413.
        self.requestHeaders.removeHeader(b"Expect")
        if self.content is not None:
            self.content.close()  # a temporary file holding the body so far goes now
            self.content = None
        channel = self.channel
        channel.persistent = False
        peer = channel.transport.getPeer()
        logger.info("request body over %d bytes refused (%s %s from %s)", self.body_limit,
                    getattr(channel, "_command", b"?").decode("ascii", "replace"),
                    getattr(channel, "_path", b"?")[:200].decode("ascii", "replace"), getattr(peer, "host", peer))
        channel.transport.write(_refusal(self.body_limit))
        # Stops reading (nothing more of the body is taken in) and closes once the answer is written.
        channel.loseConnection()


def install() -> None:
    """Make daphne build every HTTP request as a BodyLimitedWebRequest (idempotent)."""
    http_protocol.WebRequest = BodyLimitedWebRequest
