"""The answer cache: exact and semantic hits, streamed like live answers, scoped by tenant and bot."""

from __future__ import annotations

import dataclasses

import pytest

from apps.llm.cache import SEMANTIC_CANDIDATES_MAX, cache_lookup, exact_key
from apps.llm.services import chat
from apps.llm.store import redis_client
from tests.llm.conftest import make_settings, openai_provider
from tests.support.llm_fake import Reply, ToolCall

SYSTEM = {"role": "system", "content": "You answer questions about the Lisbon store."}


def _ask(text: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": text}]


@pytest.fixture
def cached(llm_fake, clean_llm_keys):
    """Settings with the cache on; the fake numbers its answers so a test can tell them apart."""
    answers = iter(range(1, 1000))
    llm_fake.default = lambda request: Reply(text=f"answer #{next(answers)} to: {request.last_user_text}")
    settings = make_settings(openai_provider(llm_fake), cache_enabled=True, cache_semantic=False)
    clean_llm_keys.append(settings.tenant)
    return settings


def test_exact_hit_is_streamed_through_on_delta_without_calling_the_model(cached, llm_fake):
    first = chat(cached, _ask("What are your opening hours?"))
    deltas: list[str] = []
    second = chat(cached, _ask("What are your opening hours?"), on_delta=deltas.append)
    assert second.cached and second.cache_kind == "exact" and second.provider == "cache"
    assert second.text == first.text == "answer #1 to: What are your opening hours?"
    assert "".join(deltas) == second.text and len(deltas) > 1  # in pieces, like a live stream
    assert second.total_tokens == 0
    assert len(llm_fake.chat_requests()) == 1


def test_a_different_question_or_history_misses(cached, llm_fake):
    chat(cached, _ask("What are your opening hours?"))
    assert chat(cached, _ask("How do I reset my password?")).cached is False
    longer = [*_ask("hi"), {"role": "assistant", "content": "hello"},
              {"role": "user", "content": "What are your opening hours?"}]
    assert chat(cached, longer).cached is False
    assert len(llm_fake.chat_requests()) == 3


def test_another_bot_or_another_tenant_never_hits(cached, llm_fake, clean_llm_keys):
    chat(cached, _ask("What are your opening hours?"))
    other_bot = dataclasses.replace(cached, bot_id="2")
    other_tenant = dataclasses.replace(cached, tenant=cached.tenant + "_other")
    clean_llm_keys.append(other_tenant.tenant)
    for settings in (other_bot, other_tenant):
        result = chat(settings, _ask("What are your opening hours?"))
        assert result.cached is False
    assert len(llm_fake.chat_requests()) == 3
    assert exact_key(other_tenant, _ask("x"), None).startswith(f"llm:cache:{other_tenant.tenant}:1:")


def test_semantic_hit_on_a_paraphrase_and_miss_on_a_different_question(cached, llm_fake):
    semantic = dataclasses.replace(cached, cache_semantic=True, cache_threshold=0.95)
    chat(semantic, _ask("What are your opening hours?"))
    deltas: list[str] = []
    hit = chat(semantic, _ask("what are your opening hours"), on_delta=deltas.append)
    assert hit.cached and hit.cache_kind == "semantic"
    assert hit.text == "".join(deltas) == "answer #1 to: What are your opening hours?"
    # Close but different questions stay below a strict threshold; unrelated ones are far below any.
    assert chat(semantic, _ask("What are your opening hours on Sunday?")).cached is False
    assert chat(semantic, _ask("How do I reset my password?")).cached is False
    # A looser threshold (llm-cache-threshold) accepts a rephrasing.
    loose = dataclasses.replace(semantic, cache_threshold=0.8)
    assert chat(loose, _ask("What time do you open?")).cache_kind == "semantic"
    assert len(llm_fake.chat_requests()) == 3


def test_semantic_hits_stay_within_the_tenant_and_the_system_prompt(cached, llm_fake, clean_llm_keys):
    semantic = dataclasses.replace(cached, cache_semantic=True)
    chat(semantic, _ask("What are your opening hours?"))
    other_tenant = dataclasses.replace(semantic, tenant=semantic.tenant + "_b")
    clean_llm_keys.append(other_tenant.tenant)
    assert chat(other_tenant, _ask("what are your opening hours")).cached is False
    other_prompt = [{"role": "system", "content": "You answer questions about the Porto store."},
                    {"role": "user", "content": "what are your opening hours"}]
    assert chat(semantic, other_prompt).cached is False


def test_answers_that_used_tools_are_not_cached(cached, llm_fake):
    tool = {"type": "function", "function": {"name": "order_status", "parameters": {"type": "object"}}}
    llm_fake.script(Reply(tool_calls=[ToolCall("order_status", {})]), Reply(text="Your order shipped."))
    first = chat(cached, _ask("Where is my order?"), tools=[tool], run_tool=lambda n, a: "shipped")
    assert first.text == "Your order shipped."
    second = chat(cached, _ask("Where is my order?"), tools=[tool], run_tool=lambda n, a: "delivered")
    assert second.cached is False
    assert len(llm_fake.chat_requests()) == 3


def test_cache_off_for_the_bot_never_hits(cached, llm_fake):
    off = dataclasses.replace(cached, cache_enabled=False)
    chat(off, _ask("Q"))
    assert chat(off, _ask("Q")).cached is False
    assert cache_lookup(off, _ask("Q"), None) is None


def test_the_semantic_candidate_list_is_bounded(cached):
    semantic = dataclasses.replace(cached, cache_semantic=True)
    from apps.llm.cache import cache_store, index_key

    for i in range(SEMANTIC_CANDIDATES_MAX + 5):
        cache_store(semantic, _ask(f"question number {i}"), None, f"answer {i}", "fake-model")
    assert redis_client().llen(index_key(semantic, _ask("any"), None)) == SEMANTIC_CANDIDATES_MAX


@pytest.mark.django_db
def test_two_tenants_whose_bots_share_a_primary_key_never_share_answers(canary_tenants, llm_fake, clean_llm_keys,
                                                                        settings):
    """The canary bots have the same id in both schemas: only the tenant in the key keeps them apart."""
    from django_tenants.utils import schema_context

    from apps.bots.models import Bot
    from apps.llm.config import llm_settings_for

    settings.LLM_URL = settings.LLM_MODEL = settings.LLM_API_KEY = ""
    llm_fake.default = lambda request: Reply(text=f"for {request.body['messages'][0]['content']}")
    per_tenant = {}
    for tenant in (canary_tenants.a, canary_tenants.b):
        with schema_context(tenant.schema_name):
            bot = Bot.objects.get(pk=tenant.bot_pk)
            per_tenant[tenant.canary] = llm_settings_for(bot, {
                "llm-url": llm_fake.base_url, "llm-model": "fake-model", "llm-cache": "true",
                "llm-cache-semantic": "true"})
            clean_llm_keys.append(tenant.schema_name)
    a, b = per_tenant[canary_tenants.a.canary], per_tenant[canary_tenants.b.canary]
    assert a.bot_id == b.bot_id and a.tenant != b.tenant
    question = [{"role": "system", "content": "same prompt"}, {"role": "user", "content": "What is the secret?"}]
    assert chat(a, question).cached is False
    assert chat(b, question).cached is False  # same bot id, same question: still a miss
    assert chat(a, question).cached is True
    assert chat(b, question).cached is True
    assert len(llm_fake.chat_requests()) == 2


def test_semantic_matching_takes_only_questions_that_open_a_conversation(cached, llm_fake):
    """Semantic matching compares the latest question only: an answer built on one user's conversation (its
    history) was served to another user asking something similar."""
    semantic = dataclasses.replace(cached, cache_semantic=True, cache_threshold=0.9)
    with_history = [SYSTEM, {"role": "user", "content": "My order 4471 is late."},
                    {"role": "assistant", "content": "Sorry about order 4471."},
                    {"role": "user", "content": "When will it arrive?"}]
    chat(semantic, with_history)
    assert chat(semantic, _ask("when will it arrive")).cached is False  # not from that user's conversation
    chat(semantic, _ask("What are your opening hours?"))
    follow_up = [*_ask("hi"), {"role": "assistant", "content": "hello"},
                 {"role": "user", "content": "what are your opening hours"}]
    assert chat(semantic, follow_up).cached is False  # a question inside a conversation is not matched either
    assert chat(semantic, _ask("what are your opening hours")).cache_kind == "semantic"
    # The bot's own greeting before the first question (start.bas output) does not make it a follow-up.
    greeted = [SYSTEM, {"role": "assistant", "content": "Welcome to the Lisbon store!"},
               {"role": "user", "content": "what are your opening hours"}]
    assert chat(semantic, greeted).cache_kind == "semantic"
    assert len(llm_fake.chat_requests()) == 4


def test_a_fallbacks_answer_is_not_cached_under_the_primary(llm_fake, llm_fake_b, clean_llm_keys):
    """The key names the primary model: an answer the fallback gave while the primary was down is not served
    in its name once it is back; the same question reaches the primary again."""
    llm_fake.script(Reply(status=503, error_message="upstream is down"))
    llm_fake.default = lambda request: Reply(text="primary answers")
    llm_fake_b.default = lambda request: Reply(text="fallback answers")
    settings = make_settings(openai_provider(llm_fake), openai_provider(llm_fake_b, model="other", label="fallback",
                                                                       source="fallback"),
                             cache_enabled=True, cache_semantic=False, max_retries=0)
    clean_llm_keys.append(settings.tenant)
    assert chat(settings, _ask("What are your opening hours?")).text == "fallback answers"
    again = chat(settings, _ask("What are your opening hours?"))
    assert (again.text, again.cached, again.provider) == ("primary answers", False, "primary")
    assert len(llm_fake.chat_requests()) == 2
    third = chat(settings, _ask("What are your opening hours?"))  # the primary's own answer is kept
    assert (third.text, third.cached) == ("primary answers", True)


def test_a_tool_whose_definition_changed_misses(cached, llm_fake):
    def tool(description: str, parameters: dict) -> dict:
        return {"type": "function", "function": {"name": "book", "description": description,
                                                 "parameters": parameters}}

    people = {"type": "object", "properties": {"people": {"type": "integer"}}}
    first = chat(cached, _ask("Can I book?"), tools=[tool("Book a visit", people)])
    assert chat(cached, _ask("Can I book?"), tools=[tool("Book a visit", people)]).cached is True
    for changed in (tool("Book a table", people), tool("Book a visit", {"type": "object", "properties": {}})):
        result = chat(cached, _ask("Can I book?"), tools=[changed])
        assert result.cached is False and result.text != first.text
    assert len(llm_fake.chat_requests()) == 3
