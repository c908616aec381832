"""URLs of Automation on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
