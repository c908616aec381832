"""URLs of Chat sessions on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
