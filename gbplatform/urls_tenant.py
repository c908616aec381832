"""URLs of every tenant host: the web chat, the tenant's console and the API."""

from django.urls import include, path

from apps.accounts.views import ConsoleLoginView, ConsoleLogoutView
from apps.bots.views import bot_deploy_api, bots_api
from apps.core.views import health
from apps.kb.views import kb_search_api
from apps.tenants.views import tenant_home

# Django's refusals of malformed requests (too many form parts, ...) say why, as JSON on the API.
handler400 = "apps.core.views.bad_request"

urlpatterns = [
    path("", tenant_home, name="tenant-home"),
    path("api/health", health, name="health"),
    path("api/bots", bots_api, name="bots-api"),
    path("api/bots/deploy", bot_deploy_api, name="bot-deploy-api"),
    path("api/kb/search", kb_search_api, name="kb-search-api"),
    path("accounts/login/", ConsoleLoginView.as_view(), name="login"),
    path("accounts/logout/", ConsoleLogoutView.as_view(), name="logout"),
    # Each app owns its routes; the chat's `/<bot>/` pages come last (a bot name is any free segment).
    path("", include("apps.accounts.urls")),
    path("", include("apps.llm.urls")),
    path("", include("apps.automation.urls")),
    path("", include("apps.mail.urls")),
    path("", include("apps.meet.urls")),
    path("", include("apps.console.urls")),
    path("", include("apps.analytics.urls")),
    path("", include("apps.sessions.urls")),
]
