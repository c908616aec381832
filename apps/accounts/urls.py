"""URLs of Accounts and access on tenant hosts (included by gbplatform.urls_tenant).

Register at the tenant's provider: redirect URI `https://<tenant host>/accounts/oidc/callback/` and
post-logout redirect URI `https://<tenant host>/`.
"""

from django.urls import path

from apps.accounts.views import TenantOIDCAuthenticationCallbackView, TenantOIDCAuthenticationRequestView

urlpatterns = [
    path("accounts/oidc/authenticate/", TenantOIDCAuthenticationRequestView.as_view(),
         name="oidc_authentication_init"),
    path("accounts/oidc/callback/", TenantOIDCAuthenticationCallbackView.as_view(),
         name="oidc_authentication_callback"),
]
