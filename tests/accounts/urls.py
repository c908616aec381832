"""Test URLconf: the tenant URLs, and probes declaring each role with `api_access` (the viewer's returns the
tenant's bot directory, so a test can see which tenant answered), so the decorator is exercised through the
whole middleware stack. In production GET /api/bots is public."""

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
    path("test/viewer", api_access(role=Role.VIEWER, scope="kb:search")(bots_api)),
    path("test/editor", api_access(role=Role.EDITOR, scope="bots:deploy")(_whoami)),
    path("test/admin", api_access(role=Role.ADMIN, scope="bots:deploy")(_whoami)),
    path("test/admin-page", AdminPage.as_view()),
    *tenant_urlpatterns,
]
