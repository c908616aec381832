"""URLs of the platform's own host (PLATFORM_PUBLIC_DOMAIN): the Django admin for support staff."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from apps.core.views import health
from apps.meet.views import meet_webhook_public

admin.site.site_header = "Bot platform: support"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/health", health, name="health"),
    # One LiveKit server shared by every tenant sends its webhooks here; the room name picks the tenant.
    path("api/meet/webhook", meet_webhook_public, name="meet-webhook-public"),
]
