from django.shortcuts import render

from apps.bots.selectors import bot_list


def tenant_home(request):
    return render(request, "tenants/home.html", {"tenant": request.tenant, "bots": bot_list()})

