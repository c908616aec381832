from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.health import health_report_recent

# Said for any other request Django refuses as malformed (SuspiciousOperation): never the exception's own
# text, which may name internals.
BAD_REQUEST_REASON = "The request could not be understood."


@never_cache
@require_GET
def health(request):
    body, status = health_report_recent()
    return JsonResponse(body, status=status)


def bad_request_reason(exception: BaseException | None) -> str:
    """What a client is told when Django refuses its request while reading it: its limits on the number of files
    and fields of a form, and on a body that is not a file upload, name the limit; anything else is generic."""
    if isinstance(exception, TooManyFilesSent):
        return (f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files; this server takes at "
                "most that many in one request.")
    if isinstance(exception, TooManyFieldsSent):
        return (f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields; this server takes at "
                "most that many in one request.")
    if isinstance(exception, RequestDataTooBig):
        return (f"The request's form data (files apart) is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} "
                "bytes; this server takes at most that much.")
    return BAD_REQUEST_REASON


def bad_request(request, exception=None):
    """handler400 of both URL configurations. Django's own answers every refused request with the same bare
    HTML page: an API client (a package deploy of too many parts) got no JSON and no reason, and the console's
    deploy form showed "Bad Request (400)". JSON with `error` for the API, the reason as text elsewhere (the
    console swaps a 4xx answer into the form's result)."""
    reason = bad_request_reason(exception)
    if request.path.startswith("/api/"):
        return JsonResponse({"error": reason}, status=400)
    return HttpResponse(reason, content_type="text/plain; charset=utf-8", status=400)
