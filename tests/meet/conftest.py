"""Meetings tests: LiveKit's server API is our fake on loopback (tests/support/livekit_fake.py), reached by
the real livekit-api client; drives are local files."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django_tenants.utils import schema_context

from tests.support.livekit_fake import FakeLiveKit


@pytest.fixture
def livekit(settings):
    fake = FakeLiveKit().start()
    settings.LIVEKIT_URL, settings.LIVEKIT_PUBLIC_URL = fake.url, ""
    settings.LIVEKIT_API_KEY, settings.LIVEKIT_API_SECRET = fake.api_key, fake.api_secret
    yield fake
    fake.stop()


@pytest.fixture
def no_livekit(settings):
    settings.LIVEKIT_URL = settings.LIVEKIT_API_KEY = settings.LIVEKIT_API_SECRET = ""


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def admin_client(tenant) -> Client:
    client = Client(HTTP_HOST=tenant.host)
    assert client.post("/accounts/login/", {"username": "admin", "password": tenant.admin_password}).status_code == 302
    return client


def role_client(tenant, username: str, role: str) -> Client:
    """A signed-in local user of the tenant (not staff) holding console `role` ("" for none)."""
    from apps.accounts.models import ConsoleProfile

    with schema_context(tenant.schema_name):
        user = get_user_model().objects.create_user(username=username, password="member-pass-123", first_name="Wanda")
        ConsoleProfile.objects.create(user=user, role=role)
    client = Client(HTTP_HOST=tenant.host)
    assert client.post("/accounts/login/", {"username": username, "password": "member-pass-123"}).status_code == 302
    return client


def viewer_client(tenant, username: str = "watcher") -> Client:
    return role_client(tenant, username, "viewer")
