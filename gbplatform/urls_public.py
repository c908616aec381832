"""URLs of the platform's own host (PLATFORM_PUBLIC_DOMAIN): the Django admin for support staff."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from apps.core.ratelimit import ratelimited
from apps.core.views import health
from apps.meet.views import meet_webhook_public

admin.site.site_header = "Bot platform: support"

# Django's refusals of malformed requests (too many form parts, ...) say why, as JSON on the API.
handler400 = "apps.core.views.bad_request"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    # The staff's sign-in has the console sign-in's limit on attempts (these accounts reach every tenant).
    path("admin/login/", ratelimited("auth", methods=("POST",))(admin.site.login), name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/health", health, name="health"),
    # One LiveKit server shared by every tenant sends its webhooks here; the room name picks the tenant.
    path("api/meet/webhook", meet_webhook_public, name="meet-webhook-public"),
]
