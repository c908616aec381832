"""The console's home: what the tenant has, and where to go next."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.console.selectors import console_summary
from apps.console.views.common import console_render


@console_role_required(Role.VIEWER)
def console_home(request: HttpRequest) -> HttpResponse:
    return console_render(request, "console/home.html", {"summary": console_summary()})
