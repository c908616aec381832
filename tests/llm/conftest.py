"""Fixtures of the LLM tests: our fake OpenAI/Anthropic server on loopback and settings pointing at it."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from apps.llm.config import KIND_ANTHROPIC, KIND_OPENAI, LLMSettings, ProviderConfig
from apps.llm.store import redis_client
from tests.support.llm_fake import FakeLLMServer, llm_platform, llm_server  # noqa: F401 - shared fixtures


@pytest.fixture(autouse=True)
def _private_llm_hosts(settings):
    """The fake listens on 127.0.0.1: allow private LLM endpoints (test_config checks the guard itself)."""
    settings.LLM_ALLOW_PRIVATE_HOSTS = True


@pytest.fixture
def llm_fake():
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def llm_fake_b():
    """A second, independent provider (the fallback)."""
    with FakeLLMServer() as fake:
        yield fake


def openai_provider(fake: FakeLLMServer, model: str = "fake-model", label: str = "primary",
                    source: str = "bot") -> ProviderConfig:
    return ProviderConfig(kind=KIND_OPENAI, label=label, base_url=fake.base_url, model=model, source=source,
                          api_key=f"sk-test-{uuid.uuid4().hex[:8]}")  # unique: a fresh breaker per test


def anthropic_provider(fake: FakeLLMServer, model: str = "claude-fake", label: str = "anthropic") -> ProviderConfig:
    return ProviderConfig(kind=KIND_ANTHROPIC, label=label, base_url=fake.url, model=model, source="bot",
                          api_key=f"sk-ant-test-{uuid.uuid4().hex[:8]}")


def make_settings(*providers: ProviderConfig, **overrides) -> LLMSettings:
    """Fast test settings: short timeouts and backoff, cache off unless asked, a fresh tenant name."""
    base = LLMSettings(
        tenant=f"t_{uuid.uuid4().hex[:10]}", bot_id="1", bot_name="bot", providers=tuple(providers),
        timeout_s=5.0, max_retries=2, retry_base_delay_s=0.01, breaker_threshold=3, breaker_timeout_s=30.0,
        cache_enabled=False,
    )
    return dataclasses.replace(base, **overrides)


@pytest.fixture
def clean_llm_keys():
    """Remove the Redis keys a test wrote under its tenants (the test Redis is shared by a whole run)."""
    tenants: list[str] = []
    yield tenants
    client = redis_client()
    for tenant in tenants:
        for pattern in (f"llm:cache:{tenant}:*", f"llm:quota:{tenant}:*"):
            for key in client.scan_iter(match=pattern):
                client.delete(key)
