"""URLs of the platform's own host (PLATFORM_PUBLIC_DOMAIN): the Django admin for support staff."""

from django.contrib import admin
from django.urls import path
from django.views.generic import RedirectView

from apps.core.views import health

admin.site.site_header = "Bot platform: support"

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path("api/health", health, name="health"),
]
