from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from apps.bots.selectors import bot_list


def tenant_home(request):
    return render(request, "tenants/home.html", {"tenant": request.tenant, "bots": bot_list()})


@login_required
def console_home(request):
    return render(request, "tenants/console.html", {"tenant": request.tenant, "bots": bot_list()})
