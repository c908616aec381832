"""The request body limit as ASGI middleware, in front of Django: the second line, behind the server's own.

Django's ASGI handler spools the whole body to a temporary file before any middleware or view runs, and
DATA_UPLOAD_MAX_MEMORY_SIZE does not cover file uploads: without a limit, a 2 GB POST to any URL fills the
disk first and is refused after. Here a declared Content-Length over the limit is answered 413 before the
application reads any of the body, and a body sent without one (chunked) is cut off with 413 as soon as the
body messages the server delivers pass the limit.

That is only as early as the server hands the body over. Daphne (Twisted web) receives and stores a whole
body before it calls the application at all, so under daphne the limit is enforced first by
`apps.core.daphne_body_limit` while the body arrives (413 from the headers alone, or as soon as the body
passes the limit, with nothing beyond it stored); this middleware keeps the same limit for any other server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

# Room for the multipart framing and form fields around the largest file the platform takes (a package).
BODY_OVERHEAD_BYTES = 1024 * 1024

Scope = dict[str, Any]
Message = dict[str, Any]


def request_body_max_bytes() -> int:
    """The largest request body taken: a bot package upload (PACKAGE_MAX_TOTAL_BYTES) with its framing."""
    return int(settings.PACKAGE_MAX_TOTAL_BYTES) + BODY_OVERHEAD_BYTES


def too_large_body(limit: int) -> bytes:
    """The 413 text (daphne_body_limit answers with the same one)."""
    return f"The request body is larger than this server takes ({limit} bytes).".encode()


class RequestBodyLimit:
    """ASGI middleware for the `http` protocol: 413 for bodies over `request_body_max_bytes()`."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = request_body_max_bytes()
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                declared_bytes = int(declared)
            except ValueError:
                await self._refuse(send, 400, b"The Content-Length header is not a number.")
                return
            if declared_bytes > limit:
                await self._refuse(send, 413, too_large_body(limit))
                return
        received, cut, started = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, cut
            if cut:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Django then stops reading (RequestAborted) and sends nothing; the 413 goes below.
                    cut = True
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, counted_receive, watched_send)
        if cut and not started:
            await self._refuse(send, 413, too_large_body(limit))

    @staticmethod
    async def _refuse(send: Callable[[Message], Awaitable[None]], status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
