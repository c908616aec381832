"""The web chat page (apps.sessions.views_web): a page load without the chat cookie starts a conversation,
counted per address in its own bucket."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.sessions.models import ChatSession

pytestmark = pytest.mark.django_db


def test_page_loads_that_start_conversations_are_limited_per_address(canary_tenants, settings):
    settings.CHAT_PAGE_LOADS_PER_MINUTE = 3
    settings.CHAT_CONNECTS_PER_MINUTE = 1  # the sockets' own bucket: page loads do not use it up
    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 0
    tenant, bot = canary_tenants.a, canary_tenants.a.canary
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    with schema_context(tenant.schema_name):
        before = ChatSession.objects.count()
    statuses = [Client(HTTP_HOST=tenant.host, REMOTE_ADDR=address).get(f"/{bot}/").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    with schema_context(tenant.schema_name):
        assert ChatSession.objects.count() == before + 3  # the refused load created nothing
    # A visitor with the page's cookie keeps their conversation: no new one, not counted.
    returning = Client(HTTP_HOST=tenant.host, REMOTE_ADDR=f"203.0.113.{uuid.uuid4().int % 250 + 1}")
    assert returning.get(f"/{bot}/").status_code == 200
    settings.CHAT_PAGE_LOADS_PER_MINUTE = 1
    assert [returning.get(f"/{bot}/").status_code for _ in range(3)] == [200, 200, 200]
