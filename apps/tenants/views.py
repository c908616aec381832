from django.shortcuts import render

from apps.accounts.permissions import console_role_required
from apps.accounts.roles import Role
from apps.bots.selectors import bot_list


def tenant_home(request):
    return render(request, "tenants/home.html", {"tenant": request.tenant, "bots": bot_list()})


@console_role_required(Role.VIEWER)
def console_home(request):
    return render(request, "tenants/console.html", {"tenant": request.tenant, "bots": bot_list()})
