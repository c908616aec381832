"""DNS rebinding against a bot's `llm-url`: the name is checked as public when the settings are read, and the
SDK client connects only to an address checked in the same resolution (apps.core.outbound).

Our fake OpenAI/Anthropic server on 127.0.0.1 is the honeypot: with a resolver answering a public address to
the settings' check and 127.0.0.1 to the connection, it must get no request. A name resolving consistently to
a public address (routed to the fake) still answers, and the platform's own LLM_URL (trusted) is not checked.
"""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest

from apps.llm.config import llm_settings_for
from apps.llm.services import LLMUnavailable, chat
from tests.support.llm_fake import FakeLLMServer
from tests.support.rebinding import LOOPBACK, PUBLIC_ADDRESS, Resolver, Route

BOT = SimpleNamespace(name="rebind", pk=11)
TENANT = "rebind"
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def guarded(settings):
    """Private hosts not allowed (production's default); no platform provider to fall back to."""
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    settings.LLM_URL = settings.LLM_MODEL = settings.LLM_API_KEY = settings.LLM_PROVIDER = ""
    return settings


def _port(fake: FakeLLMServer) -> int:
    return urlsplit(fake.url).port


def _values(host: str, port: int, provider: str) -> dict[str, str]:
    path = "" if provider == "anthropic" else "/v1"
    # A fresh key each time: a fresh breaker, and no client of an earlier test reused.
    return {"llm-provider": provider, "llm-url": f"http://{host}:{port}{path}", "llm-model": "fake-model",
            "llm-key": f"sk-{uuid.uuid4().hex[:12]}", "llm-cache": "false"}


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_llm_url_rebinding_to_loopback_is_refused_when_connecting(monkeypatch, guarded, llm_fake, provider):
    resolver = Resolver(monkeypatch, {"llm.rebind.test": [PUBLIC_ADDRESS, LOOPBACK]})
    settings = llm_settings_for(BOT, _values("llm.rebind.test", _port(llm_fake), provider), tenant=TENANT)
    assert [p.source for p in settings.providers] == ["bot"] and not settings.problems  # the check passed
    with pytest.raises(LLMUnavailable) as raised:
        chat(settings, MESSAGES, use_cache=False)
    assert "refused: address 127.0.0.1 of 'llm.rebind.test' is not a public address" in raised.value.detail
    assert llm_fake.requests == []  # the honeypot was never reached
    assert resolver.lookups[:2] == ["llm.rebind.test", "llm.rebind.test"]


def test_a_fallback_url_rebinding_to_loopback_is_refused_too(monkeypatch, guarded, llm_fake):
    Resolver(monkeypatch, {"llm.rebind.test": [PUBLIC_ADDRESS, LOOPBACK], "fb.rebind.test": [PUBLIC_ADDRESS, LOOPBACK]})
    port = _port(llm_fake)
    values = {**_values("llm.rebind.test", port, "openai"), "llm-fallback-url": f"http://fb.rebind.test:{port}/v1",
              "llm-fallback-model": "fake-model", "llm-fallback-key": "sk-fb"}
    settings = llm_settings_for(BOT, values, tenant=TENANT)
    assert [p.source for p in settings.providers] == ["bot", "fallback"]
    with pytest.raises(LLMUnavailable) as raised:
        chat(settings, MESSAGES, use_cache=False)
    assert "'fb.rebind.test' is not a public address" in raised.value.detail
    assert llm_fake.requests == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_an_llm_url_resolving_consistently_to_a_public_address_still_answers(monkeypatch, guarded, llm_fake,
                                                                             provider):
    port = _port(llm_fake)
    Resolver(monkeypatch, {"llm.public.test": [PUBLIC_ADDRESS]})
    route = Route(monkeypatch, {(PUBLIC_ADDRESS, port): (LOOPBACK, port)})  # the "public" server is the fake
    settings = llm_settings_for(BOT, _values("llm.public.test", port, provider), tenant=TENANT)
    assert settings.providers[0].public_only
    assert chat(settings, MESSAGES, use_cache=False).text == "echo: hi"
    [request] = llm_fake.requests
    assert request.headers["host"] == f"llm.public.test:{port}"  # the Host header keeps the name
    assert (PUBLIC_ADDRESS, port) in route.connects and (LOOPBACK, port) not in route.connects


def test_the_platform_llm_url_is_trusted_and_not_checked(settings, llm_fake):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    settings.LLM_URL, settings.LLM_MODEL, settings.LLM_PROVIDER = llm_fake.base_url, "fake-model", "openai"
    settings.LLM_API_KEY = f"sk-platform-{uuid.uuid4().hex[:8]}"
    llm = llm_settings_for(BOT, {"llm-cache": "false"}, tenant=TENANT)
    assert [(p.source, p.public_only) for p in llm.providers] == [("platform", False)]
    assert chat(llm, MESSAGES, use_cache=False).text == "echo: hi"
