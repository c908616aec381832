"""Sign-in attempts are rate limited per client IP and tenant (the seed's rate-limit-api-auth)."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_password_guessing_gets_429_with_retry_after_and_the_form_still_loads(canary_tenants, settings):
    settings.RATE_LIMIT_API_AUTH, settings.RATE_LIMIT_BURST = 3, 0
    client = Client(HTTP_HOST=canary_tenants.a.host)
    statuses = [client.post("/accounts/login/", {"username": "admin", "password": f"guess-{n}"}).status_code
                for n in range(4)]
    assert statuses[:3] == [200, 200, 200]  # the form again, with its error
    assert statuses[3] == 429
    refused = client.post("/accounts/login/", {"username": "admin", "password": canary_tenants.a.admin_password})
    assert refused.status_code == 429 and int(refused["Retry-After"]) >= 1
    assert client.get("/accounts/login/").status_code == 200  # only POSTs count
    other = Client(HTTP_HOST=canary_tenants.b.host)  # counters are per tenant
    assert other.post("/accounts/login/", {"username": "admin", "password": "x"}).status_code == 200
