"""Request plumbing that runs before tenant resolution: liveness and the request id."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.http import JsonResponse

from apps.core.logging import request_context_clear, request_context_set

# Accept a caller's request id only if it looks like one: it is echoed in logs and headers.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
LIVENESS_PATH = "/health"

access_logger = logging.getLogger("gbplatform.access")


class LivenessMiddleware:
    """`GET /health` answers before anything else (no database, no tenant): is the process alive."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path == LIVENESS_PATH and request.method in {"GET", "HEAD"}:
            return JsonResponse({"status": "ok"})
        return self.get_response(request)


class RequestContextMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if REQUEST_ID_RE.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        request_context_clear()
        request_context_set(request_id=request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            access_logger.info(
                "request",
                extra={
                    "method": request.method,
                    "path": request.path[:200],
                    "status": response.status_code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                },
            )
        finally:
            request_context_clear()
        response["X-Request-ID"] = request_id
        return response
