from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from apps.core.health import health_report_recent


@never_cache
@require_GET
def health(request):
    body, status = health_report_recent()
    return JsonResponse(body, status=status)
