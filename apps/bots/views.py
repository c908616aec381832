from django.http import JsonResponse
from django.views.decorators.http import require_GET

from apps.bots.selectors import bot_list


@require_GET
def bots_api(request):
    """The tenant's bot directory (what its web chat landing page lists)."""
    return JsonResponse({"tenant": request.tenant.name, "bots": bot_list()})
