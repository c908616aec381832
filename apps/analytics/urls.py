"""URLs of the analytics on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
