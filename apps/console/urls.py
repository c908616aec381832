"""URLs of the console on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
