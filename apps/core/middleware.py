"""Request plumbing that runs before tenant resolution: liveness and the request id."""

from __future__ import annotations

import logging
import re
import time
import uuid

from django.http import HttpResponse, JsonResponse

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


# Form posts are read for NUL characters only up to this size (larger ones are uploads, read by their views).
NUL_CHECK_FORM_MAX_BYTES = 64 * 1024
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class NulCharacterMiddleware:
    """A NUL character in the path, the query string or a posted form answers 400 before any view.

    PostgreSQL cannot store NUL in text and psycopg refuses such a parameter: every lookup, search filter or
    name typed with `%00` was otherwise an internal error (500). Django forms refuse NUL already; this covers
    the path, query filters and plain form fields read without a form. JSON bodies are the wire parser's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if self._has_nul(request):
            return HttpResponse("NUL characters (%00) are not accepted in addresses, filters or form fields.",
                                status=400, content_type="text/plain; charset=utf-8")
        return self.get_response(request)

    @staticmethod
    def _has_nul(request) -> bool:
        if "\x00" in request.path:  # the path_info is part of it
            return True
        if any("\x00" in key or any("\x00" in value for value in values) for key, values in request.GET.lists()):
            return True
        if (request.method == "POST" and request.content_type == FORM_CONTENT_TYPE
                and int(request.META.get("CONTENT_LENGTH") or 0) <= NUL_CHECK_FORM_MAX_BYTES):
            return any("\x00" in key or any("\x00" in value for value in values)
                       for key, values in request.POST.lists())
        return False


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
