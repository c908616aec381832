"""A tiny ASGI application answering every HTTP request with its process id (tests of gbplatform.serve)."""

from __future__ import annotations

import os


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": str(os.getpid()).encode()})
