"""URLs of Accounts and access on tenant hosts (included by gbplatform.urls_tenant)."""

urlpatterns: list = []
