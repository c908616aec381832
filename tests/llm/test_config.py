"""A bot's LLM settings from config.csv values: endpoints, the provider chain, `vault:` keys in scope."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from apps.core import secrets as secrets_module
from apps.llm.config import (
    DEFAULT_BREAKER_THRESHOLD,
    KIND_ANTHROPIC,
    KIND_OPENAI,
    anthropic_base_url,
    llm_settings_for,
    openai_base_url,
    provider_kind,
)
from apps.llm.services import LLMUnavailable, chat, llm_is_configured
from tests.support.llm_fake import FakeLLMServer
from tests.support.vault_fake import FakeVault

BOT = SimpleNamespace(name="helper", pk=7)
TENANT = "acme"


@pytest.fixture
def platform(settings):
    settings.LLM_URL, settings.LLM_MODEL, settings.LLM_API_KEY, settings.LLM_PROVIDER = (
        "http://platform.invalid:8080", "platform-model", "sk-platform-secret", "")
    return settings


@pytest.fixture
def no_platform(settings):
    settings.LLM_URL = settings.LLM_MODEL = settings.LLM_API_KEY = settings.LLM_PROVIDER = ""
    return settings


@pytest.mark.parametrize(("url", "base"), [
    ("https://api.groq.com/openai/v1/chat/completions", "https://api.groq.com/openai/v1"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
    ("http://localhost:11434", "http://localhost:11434/v1"),
    ("http://127.0.0.1:8081/", "http://127.0.0.1:8081/v1"),
    ("https://api.z.ai/api/paas/v4", "https://api.z.ai/api/paas/v4"),
    ("https://generativelanguage.googleapis.com/v1beta/openai", "https://generativelanguage.googleapis.com/v1beta/openai"),
])
def test_openai_endpoint_resolution(url, base):
    assert openai_base_url(url) == base


def test_anthropic_endpoint_resolution_and_kind_detection():
    assert anthropic_base_url("https://api.anthropic.com/v1/messages") == "https://api.anthropic.com"
    assert anthropic_base_url("https://api.anthropic.com/v1") == "https://api.anthropic.com"
    assert provider_kind(None, "https://api.anthropic.com") == KIND_ANTHROPIC
    assert provider_kind("claude", "http://gateway.local") == KIND_ANTHROPIC
    assert provider_kind("ollama", "http://localhost:11434") == KIND_OPENAI
    assert provider_kind(None, "https://api.groq.com/openai/v1") == KIND_OPENAI
    assert provider_kind("bedrock", "") is None


def test_the_chain_is_bot_fallback_model_order_then_platform(platform):
    values = {
        "llm-provider": "groq", "llm-url": "https://api.groq.com/openai/v1/chat/completions",
        "llm-model": "llama-3.3-70b", "llm-key": "sk-bot",
        "llm-fallback-provider": "anthropic", "llm-fallback-url": "https://api.anthropic.com",
        "llm-fallback-model": "claude-haiku", "llm-fallback-key": "sk-ant-bot",
        "model-fallback-order": "fast,missing", "model-fast": "llama-3.1-8b",
    }
    settings = llm_settings_for(BOT, values, tenant=TENANT)
    chain = [(p.source, p.kind, p.base_url, p.model, p.api_key) for p in settings.providers]
    assert chain == [
        ("bot", KIND_OPENAI, "https://api.groq.com/openai/v1", "llama-3.3-70b", "sk-bot"),
        ("fallback", KIND_ANTHROPIC, "https://api.anthropic.com", "claude-haiku", "sk-ant-bot"),
        ("model-fallback-order", KIND_OPENAI, "https://api.groq.com/openai/v1", "llama-3.1-8b", "sk-bot"),
        ("platform", KIND_OPENAI, "http://platform.invalid:8080/v1", "platform-model", "sk-platform-secret"),
    ]
    assert (settings.tenant, settings.bot_id, settings.bot_name) == (TENANT, "7", "helper")
    assert "sk-bot" not in repr(settings)  # keys never show in repr (and so in logs)


def test_llm_server_as_a_base_url_stands_in_for_llm_url(no_platform):
    settings = llm_settings_for(BOT, {"llm-server": "http://127.0.0.1:8081", "llm-model": "local"}, tenant=TENANT)
    assert [(p.base_url, p.model) for p in settings.providers] == [("http://127.0.0.1:8081/v1", "local")]
    assert llm_settings_for(BOT, {"llm-server": "true", "llm-model": "local"}, tenant=TENANT).providers == ()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:6379", "http://169.254.169.254/latest", "http://10.0.0.5:8000/v1", "http://localhost:11434",
    "http://[::1]:8080", "file:///etc/passwd",
])
def test_a_bots_llm_url_must_be_a_public_host(settings, platform, url):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    values = {"llm-url": url, "llm-model": "m", "llm-key": "sk-bot",
              "llm-fallback-url": url, "llm-fallback-model": "m2"}
    result = llm_settings_for(BOT, values, tenant=TENANT)
    assert [p.source for p in result.providers] == ["platform"]  # the operator's own URL is trusted
    assert any(p.startswith("llm-url:") and "LLM_ALLOW_PRIVATE_HOSTS" in p for p in result.problems)
    assert any(p.startswith("llm-fallback-url:") for p in result.problems)


def test_a_public_address_passes_the_guard_and_the_operator_can_allow_private_ones(settings, no_platform):
    settings.LLM_ALLOW_PRIVATE_HOSTS = False
    public = llm_settings_for(BOT, {"llm-url": "https://93.184.216.34/v1", "llm-model": "m"}, tenant=TENANT)
    assert [p.base_url for p in public.providers] == ["https://93.184.216.34/v1"]
    settings.LLM_ALLOW_PRIVATE_HOSTS = True
    local = llm_settings_for(BOT, {"llm-url": "http://127.0.0.1:11434", "llm-model": "m"}, tenant=TENANT)
    assert [p.base_url for p in local.providers] == ["http://127.0.0.1:11434/v1"]


def test_a_bot_with_its_own_url_never_gets_the_platform_key(platform):
    settings = llm_settings_for(BOT, {"llm-url": "http://bot-chosen.invalid/v1", "llm-model": "m"}, tenant=TENANT)
    assert settings.providers[0].source == "bot" and settings.providers[0].api_key == ""
    fallback = llm_settings_for(BOT, {"llm-url": "http://a.invalid", "llm-model": "m",
                                      "llm-fallback-url": "http://b.invalid", "llm-key": "sk-a"}, tenant=TENANT)
    assert [p.api_key for p in fallback.providers] == ["sk-a", "", "sk-platform-secret"]


def test_only_the_platform_default_when_the_bot_sets_nothing(platform):
    settings = llm_settings_for(BOT, {}, tenant=TENANT)
    assert [p.source for p in settings.providers] == ["platform"]
    assert llm_is_configured(settings)


def test_nothing_configured_anywhere(no_platform):
    settings = llm_settings_for(BOT, {"llm-model": "m"}, tenant=TENANT)
    assert not llm_is_configured(settings)


def test_bad_values_fall_back_to_defaults_and_are_reported(no_platform):
    settings = llm_settings_for(BOT, {"circuit-breaker-threshold": "lots", "llm-cache": "maybe",
                                      "llm-cache-threshold": "2"}, tenant=TENANT)
    assert settings.breaker_threshold == DEFAULT_BREAKER_THRESHOLD
    assert settings.cache_enabled is True and settings.cache_threshold == 0.95
    assert len(settings.problems) == 3 and "circuit-breaker-threshold" in settings.problems[0]


def test_config_keys_reach_the_settings(no_platform):
    settings = llm_settings_for(BOT, {"llm-url": "http://x.invalid", "llm-model": "m",
                                      "circuit-breaker-threshold": "2", "circuit-breaker-timeout": "15",
                                      "llm-cache": "false", "llm-cache-ttl": "60", "llm-cache-semantic": "true",
                                      "llm-cache-threshold": "0.9", "Max Tokens": "512", "llm-temperature": "0.2"},
                                tenant=TENANT)
    assert (settings.breaker_threshold, settings.breaker_timeout_s) == (2, 15.0)
    assert (settings.cache_enabled, settings.cache_ttl_s, settings.cache_semantic, settings.cache_threshold) == (
        False, 60, True, 0.9)
    assert (settings.max_tokens, settings.temperature) == (512, 0.2)


# --- vault: keys -----------------------------------------------------------------------------------------


@pytest.fixture
def vault(settings):
    secrets_module.secrets_reset()
    with FakeVault() as fake:
        settings.VAULT_ADDR = fake.url
        settings.VAULT_TOKEN = fake.create_token(0)
        settings.VAULT_REQUIRED, settings.DEBUG = False, False
        fake.put_secret(f"gbo/tenants/{TENANT}/llm", {"api_key": "sk-acme-from-vault"})
        fake.put_secret(f"gbo/orgs/{TENANT}/bots/helper", {"llm_key": "sk-helper-from-vault"})
        fake.put_secret("gbo/tenants/globex/llm", {"api_key": "sk-globex-secret"})
        fake.put_secret("gbo/llm", {"api_key": "sk-platform-vault-secret"})
        fake.put_secret(f"gbo/tenants/{TENANT}/admin/oidc", {"client_secret": "sk-oidc-client-secret"})
        fake.put_secret(f"gbo/tenants/{TENANT}/admin", {"client_secret": "sk-oidc-client-secret"})
        yield fake
    secrets_module.secrets_reset()


def test_a_vault_key_in_the_tenants_scope_is_resolved_and_sent(vault, no_platform):
    with FakeLLMServer(api_key="sk-acme-from-vault") as llm:
        values = {"llm-url": llm.base_url, "llm-model": "m", "llm-key": f"vault:gbo/tenants/{TENANT}/llm#api_key"}
        settings = llm_settings_for(BOT, values, tenant=TENANT)
        assert settings.providers[0].api_key == "sk-acme-from-vault"
        assert chat(settings, [{"role": "user", "content": "hi"}], use_cache=False).text == "echo: hi"
        assert llm.requests[-1].headers["authorization"] == "Bearer sk-acme-from-vault"
    bot_level = llm_settings_for(BOT, {**values, "llm-key": f"vault:gbo/orgs/{TENANT}/bots/helper#llm_key"},
                                 tenant=TENANT)
    assert bot_level.providers[0].api_key == "sk-helper-from-vault"


@pytest.mark.parametrize("reference", [
    "vault:gbo/tenants/globex/llm#api_key",  # another tenant
    "vault:gbo/llm#api_key",  # the platform's own secrets
    "vault:gbo/orgs/globex/bots/helper#llm_key",  # a bot of the same name in another tenant
    "vault:gbo/tenants/acme-evil/llm#api_key",  # a prefix look-alike
    f"vault:gbo/tenants/{TENANT}/admin/oidc#client_secret",  # the tenant admins' own (an editor's exfiltration)
    f"vault:gbo/tenants/{TENANT}/admin#client_secret",
])
def test_a_vault_key_outside_the_tenants_scope_is_refused(vault, no_platform, reference):
    values = {"llm-url": "http://127.0.0.1:9/v1", "llm-model": "m", "llm-key": reference}
    settings = llm_settings_for(BOT, values, tenant=TENANT)
    assert settings.providers == ()  # the bot's provider is dropped; nothing else configured
    assert any(("outside" in p or "admins' own" in p) and "llm-key" in p for p in settings.problems)
    assert "sk-" not in " ".join(settings.problems)  # problems name the reference, never a value
    path = reference.removeprefix("vault:").split("#")[0]
    assert vault.count(vault.kv_path(path)) == 0  # never even read


def test_an_unresolvable_bot_key_falls_back_to_the_platform_default(vault, platform):
    values = {"llm-url": "http://127.0.0.1:9/v1", "llm-model": "m", "llm-key": "vault:gbo/tenants/globex/llm#api_key"}
    settings = llm_settings_for(BOT, values, tenant=TENANT)
    assert [p.source for p in settings.providers] == ["platform"]


@pytest.mark.django_db
def test_settings_for_the_canary_bots_carry_their_own_tenant(canary_tenants, no_platform):
    from django_tenants.utils import schema_context

    from apps.bots.models import Bot

    found = []
    for tenant in (canary_tenants.a, canary_tenants.b):
        with schema_context(tenant.schema_name):
            bot = Bot.objects.get(pk=tenant.bot_pk)
            settings = llm_settings_for(bot, {"llm-url": "http://x.invalid", "llm-model": "m"})
            found.append((settings.tenant, settings.bot_id, settings.bot_name))
    assert found == [(canary_tenants.a.schema_name, str(canary_tenants.a.bot_pk), canary_tenants.a.canary),
                     (canary_tenants.b.schema_name, str(canary_tenants.b.bot_pk), canary_tenants.b.canary)]


def test_vault_down_never_moves_the_bot_onto_the_platform_provider(vault, platform):
    vault.outage_status = 503
    values = {"llm-url": "http://127.0.0.1:9/v1", "llm-model": "m",
              "llm-key": f"vault:gbo/tenants/{TENANT}/llm#api_key"}
    settings = llm_settings_for(BOT, values, tenant=TENANT)
    assert settings.providers == ()
    assert any("unavailable" in p for p in settings.problems)
    with pytest.raises(LLMUnavailable, match="configuration problems"):
        chat(settings, [{"role": "user", "content": "hi"}])
    # A reference that is simply not there is a configuration error: the chain goes on to the platform.
    vault.outage_status = None
    secrets_module.secrets_reset()
    missing = llm_settings_for(BOT, {**values, "llm-key": f"vault:gbo/tenants/{TENANT}/llm#nope"}, tenant=TENANT)
    assert [p.source for p in missing.providers] == ["platform"]
