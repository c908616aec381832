"""Request plumbing that runs before tenant resolution: liveness and the request id."""

from __future__ import annotations

import re
import uuid

from django.http import JsonResponse

from apps.core.logging import request_context_clear, request_context_set

# Accept a caller's request id only if it looks like one: it is echoed in logs and headers.
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
LIVENESS_PATH = "/health"


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
        try:
            response = self.get_response(request)
        finally:
            request_context_clear()
        response["X-Request-ID"] = request_id
        return response
