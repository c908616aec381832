"""Tenant resolution for HTTP: the Host header picks the schema, and an unknown host gets a 404.

django-tenants' own middleware can be told to fall back to the public schema; this one never does, and it
normalises the host (case, trailing dot, port) before the lookup so the same host always maps the same way.
X-Forwarded-Host is ignored unless USE_X_FORWARDED_HOST is set for a trusted proxy (Django's get_host).
"""

from __future__ import annotations

from django.core.exceptions import DisallowedHost
from django.db import connection
from django.http import JsonResponse
from django_tenants.middleware.main import TenantMainMiddleware

from apps.core.logging import request_context_set
from apps.tenants.selectors import tenant_for_host

# A tenant still being provisioned may be retried shortly.
PROVISIONING_RETRY_AFTER_S = 5


class TenantHostMiddleware(TenantMainMiddleware):
    def process_request(self, request):
        connection.set_schema_to_public()
        try:
            host = request.get_host()
        except DisallowedHost:
            return _not_found()
        tenant = tenant_for_host(host)
        if tenant is None:
            return _not_found()
        if not tenant.ready:
            response = JsonResponse({"error": "tenant is being provisioned"}, status=503)
            response["Retry-After"] = str(PROVISIONING_RETRY_AFTER_S)
            return response
        tenant.domain_url = host
        request.tenant = tenant
        connection.set_tenant(tenant)
        request_context_set(tenant=tenant.schema_name)
        self.setup_url_routing(request)
        return None


def _not_found() -> JsonResponse:
    # Deliberately generic and identical for every unknown host: no hint of which hosts exist.
    return JsonResponse({"error": "not found"}, status=404)
