"""URLs of Email on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
