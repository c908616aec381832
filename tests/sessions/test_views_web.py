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


def _token_made_ago(monkeypatch, seconds: int, **names) -> str:
    import time

    from django.core import signing

    from apps.sessions.views_web import chat_ws_token

    with monkeypatch.context() as patched:
        patched.setattr(signing.TimestampSigner, "timestamp",
                        lambda self: signing.b62_encode(int(time.time()) - seconds))
        return chat_ws_token(**names)


def test_the_pages_socket_token_expires_and_is_bound_to_its_session(monkeypatch):
    from apps.sessions.views_web import CHAT_WS_TOKEN_MAX_AGE_S, TOKEN_BAD, TOKEN_EXPIRED, TOKEN_OK, chat_ws_token_state

    names = {"tenant_schema": "t_a", "bot_name": "demo", "session_id": str(uuid.uuid4())}
    fresh = _token_made_ago(monkeypatch, 0, **names)
    almost = _token_made_ago(monkeypatch, CHAT_WS_TOKEN_MAX_AGE_S - 60, **names)
    old = _token_made_ago(monkeypatch, CHAT_WS_TOKEN_MAX_AGE_S + 60, **names)
    assert chat_ws_token_state(**names, token=fresh) == TOKEN_OK
    assert chat_ws_token_state(**names, token=almost) == TOKEN_OK
    assert chat_ws_token_state(**names, token=old) == TOKEN_EXPIRED
    # Another session, bot or tenant, a changed time or signature, the token before it carried a time: refused.
    timestamp, signature = fresh.split(":")
    for changed in ({**names, "session_id": str(uuid.uuid4())}, {**names, "bot_name": "other"},
                    {**names, "tenant_schema": "t_b"}):
        assert chat_ws_token_state(**changed, token=fresh) == TOKEN_BAD
    for token in (f"{timestamp}x:{signature}", f"{timestamp}:{signature[:-1]}", signature, "", "a:b:c"):
        assert chat_ws_token_state(**names, token=token) == TOKEN_BAD
    assert chat_ws_token_state(**{**names, "session_id": names["session_id"] + ":x"}, token=fresh) == TOKEN_BAD
