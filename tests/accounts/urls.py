"""Test URLconf: the tenant URLs, with two existing API endpoints wrapped by `api_access` exactly as the lead
is asked to wire them in apps/kb/views.py and apps/bots/views.py (report of issue 8), and probes declaring
the higher roles, so the decorator is exercised through the whole middleware stack."""

from django.http import JsonResponse
from django.urls import path
from django.views.generic import View

from apps.accounts.permissions import ConsoleRoleRequiredMixin, api_access
from apps.accounts.roles import Role
from apps.bots.views import bots_api
from apps.kb.views import kb_search_api
from gbplatform.urls_tenant import urlpatterns as tenant_urlpatterns


def _whoami(request):
    return JsonResponse({"user": request.user.get_username(), "role": getattr(request, "console_role", None)})


class AdminPage(ConsoleRoleRequiredMixin, View):
    required_role = Role.ADMIN

    def get(self, request):
        return JsonResponse({"page": "admin"})


urlpatterns = [
    path("api/kb/search", kb_search_api),  # api_access(role=VIEWER, scope="kb:search"), as wired in apps/kb
    path("api/bots", api_access(role=Role.VIEWER, scope="bots:read")(bots_api)),
    path("test/editor", api_access(role=Role.EDITOR, scope="bots:deploy")(_whoami)),
    path("test/admin", api_access(role=Role.ADMIN, scope="bots:deploy")(_whoami)),
    path("test/admin-page", AdminPage.as_view()),
    *tenant_urlpatterns,
]
