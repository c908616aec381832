"""Tokens per tenant per UTC day."""

from __future__ import annotations

import pytest

from apps.llm.quota import quota_add, quota_key, quota_used
from apps.llm.services import LLMQuotaExceeded, chat, complete
from tests.llm.conftest import make_settings, openai_provider
from tests.support.llm_fake import Reply

QUESTION = [{"role": "user", "content": "hello"}]


def test_quota_is_checked_before_a_call_and_counted_after(llm_fake, clean_llm_keys):
    llm_fake.default = lambda request: Reply(text="hi", usage=(30, 20))
    settings = make_settings(openai_provider(llm_fake), daily_token_limit=100)
    clean_llm_keys.append(settings.tenant)
    chat(settings, QUESTION)
    chat(settings, QUESTION)
    assert quota_used(settings.tenant) == 100
    with pytest.raises(LLMQuotaExceeded, match="100 of 100 tokens") as caught:
        complete(settings, "one more")
    assert caught.value.tenant == settings.tenant
    assert len(llm_fake.chat_requests()) == 2  # refused before asking the provider


def test_quota_is_per_tenant_and_unlimited_at_zero(llm_fake, clean_llm_keys):
    llm_fake.default = lambda request: Reply(text="hi", usage=(60, 60))
    spender = make_settings(openai_provider(llm_fake), daily_token_limit=100)
    other = make_settings(openai_provider(llm_fake), daily_token_limit=100)
    unlimited = make_settings(openai_provider(llm_fake), daily_token_limit=0)
    clean_llm_keys.extend([spender.tenant, other.tenant, unlimited.tenant])
    chat(spender, QUESTION)
    with pytest.raises(LLMQuotaExceeded):
        chat(spender, QUESTION)
    assert chat(other, QUESTION).text == "hi"
    for _ in range(3):
        chat(unlimited, QUESTION)
    assert quota_used(unlimited.tenant) == 360


def test_tool_rounds_all_count(llm_fake, clean_llm_keys):
    from tests.support.llm_fake import ToolCall

    tool = {"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}
    llm_fake.script(Reply(tool_calls=[ToolCall("t", {})], usage=(10, 5)), Reply(text="ok", usage=(20, 5)))
    settings = make_settings(openai_provider(llm_fake), daily_token_limit=1000)
    clean_llm_keys.append(settings.tenant)
    result = chat(settings, QUESTION, tools=[tool], run_tool=lambda n, a: "r")
    assert result.total_tokens == quota_used(settings.tenant) == 40


def test_the_counter_key_names_tenant_and_utc_day(clean_llm_keys):
    clean_llm_keys.append("t_quota_key")
    assert quota_add("t_quota_key", 7) == 7
    assert quota_add("t_quota_key", 5) == 12
    assert quota_key("t_quota_key", "20261121") == "llm:quota:t_quota_key:20261121"
