"""`rate-limit-by=api-key` counts each verified key apart on the API endpoints (POST /api/kb/search), and a
`@ratelimited` put above `@api_access` (where the key is not known yet) is refused when the module loads."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.http import JsonResponse
from django.test import Client
from django.views.decorators.http import require_POST
from django_tenants.utils import schema_context

from apps.accounts.permissions import api_access
from apps.accounts.roles import Role
from apps.accounts.services import api_key_create
from apps.core.ratelimit import ratelimited

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_per_key(settings):
    settings.RATE_LIMIT_BY, settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST = "api-key", 2, 0


def _keys(tenant, count: int) -> list[str]:
    with schema_context(tenant.schema_name):
        admin = get_user_model().objects.get(username="admin")
        return [api_key_create(name=f"script {n}", scopes=["kb:search"], created_by=admin).secret for n in range(count)]


def _search(tenant, secret: str) -> int:
    response = Client(HTTP_HOST=tenant.host).post(
        "/api/kb/search", data=b'{"bot": "nope", "query": "x"}', content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}")
    return response.status_code


def test_each_key_has_its_own_bucket_on_the_kb_search_api(canary_tenants, two_per_key):
    a = canary_tenants.a
    first, second = _keys(a, 2)
    # 404: past the key check and the limiter, the view itself answers (no bot "nope").
    statuses = [_search(a, first) for _ in range(4)] + [_search(a, second)]
    assert statuses == [404, 404, 429, 429, 404]


def test_by_user_counts_an_api_key_request_per_key_too(canary_tenants, settings):
    """An API key's principal has no user id: under `user` every key of the tenant shared one bucket."""
    settings.RATE_LIMIT_BY, settings.RATE_LIMIT_REQUESTS, settings.RATE_LIMIT_BURST = "user", 1, 0
    a = canary_tenants.a
    first, second = _keys(a, 2)
    assert [_search(a, first), _search(a, first), _search(a, second)] == [404, 429, 404]


def test_ratelimited_above_api_access_is_refused_at_import():
    def view(request):
        return JsonResponse({})

    with pytest.raises(ImproperlyConfigured, match="Put @ratelimited below @api_access"):
        ratelimited("api")(api_access(role=Role.VIEWER, scope="kb:search")(view))
    with pytest.raises(ImproperlyConfigured, match="Put @ratelimited below @api_access"):
        ratelimited("api")(require_POST(api_access(role=Role.VIEWER, scope="kb:search")(view)))
    api_access(role=Role.VIEWER, scope="kb:search")(ratelimited("api")(view))  # the right order
