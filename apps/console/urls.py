"""URLs of the console on tenant hosts (included by gbplatform.urls_tenant). Paths are plain so other apps'
templates can link to them; /console/conversations/ and /console/analytics/ belong to apps.analytics."""

from django.urls import include, path

from apps.console.views import home

urlpatterns = [
    path("console/", home.console_home, name="console-home"),
    # Django's set_language view (POST with CSRF): stores the choice in the django_language cookie.
    path("console/i18n/", include("django.conf.urls.i18n")),
]
