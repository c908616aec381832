"""One provider call: message conversion for Anthropic, request shape, stream handling; and the fake itself."""

from __future__ import annotations

import anthropic
import openai
import pytest

from apps.llm.providers import ProviderFailure, anthropic_messages, anthropic_tools, provider_round
from tests.llm.conftest import make_settings, openai_provider
from tests.support.llm_fake import Reply, ToolCall


def test_openai_messages_become_anthropic_turns():
    system, messages = anthropic_messages([
        {"role": "system", "content": "Persona."},
        {"role": "system", "content": "KB context."},
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": '{"city": "Faro"}'}},
            {"id": "c2", "type": "function", "function": {"name": "w", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "error: bad arguments"},
        {"role": "user", "content": "Thanks"},
    ])
    assert system == "Persona.\n\nKB context."
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[1]["content"][0] == {"type": "tool_use", "id": "c1", "name": "w", "input": {"city": "Faro"}}
    assert messages[1]["content"][1]["input"] == {}  # unparseable arguments are not resent as text
    # Both results and the next question merge into one user turn (Anthropic wants alternating roles).
    assert [b["type"] for b in messages[2]["content"]] == ["tool_result", "tool_result", "text"]


def test_tools_convert_to_input_schemas():
    tool = {"type": "function", "function": {"name": "t", "description": "d",
                                             "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}}}
    assert anthropic_tools([tool]) == [{"name": "t", "description": "d",
                                        "input_schema": tool["function"]["parameters"]}]


def test_request_carries_temperature_max_tokens_and_tools(llm_fake):
    settings = make_settings(openai_provider(llm_fake, model="gpt-5-mini"), temperature=0.3, max_tokens=256)
    tools = [{"type": "function", "function": {"name": "t", "parameters": {"type": "object"}}}]
    provider_round(settings.providers[0], settings, [{"role": "user", "content": "x"}], tools, None,
                   deadline=float("inf"))
    body = llm_fake.chat_requests()[0].body
    assert body["temperature"] == 0.3
    assert body["max_completion_tokens"] == 256 and "max_tokens" not in body  # gpt-5 family wants this name
    assert body["tools"] == tools


def test_tool_call_fragments_are_reassembled_and_reasoning_is_not_streamed(llm_fake):
    llm_fake.script(Reply(reasoning="thinking hard", text="ok",
                          tool_calls=[ToolCall("a", {"long": "x" * 50}), ToolCall("b", '{"n": 1}')], chunk_chars=3))
    deltas: list[str] = []
    settings = make_settings(openai_provider(llm_fake))
    result = provider_round(settings.providers[0], settings, [{"role": "user", "content": "x"}], None,
                            deltas.append, deadline=float("inf"))
    assert deltas == ["ok"]  # the reasoning delta came first and was not passed on
    assert "thinking" not in "".join(deltas)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("a", '{"long": "' + "x" * 50 + '"}'),
                                                                  ("b", '{"n": 1}')]
    assert result.finish_reason == "tool_calls"


def test_redirects_are_not_followed(llm_fake, llm_fake_b):
    """A redirect could lead past the SSRF check of the configured URL to an internal address."""
    llm_fake.script(Reply(status=307, headers={"Location": llm_fake_b.chat_url}))
    settings = make_settings(openai_provider(llm_fake))
    with pytest.raises(ProviderFailure) as caught:
        provider_round(settings.providers[0], settings, [{"role": "user", "content": "x"}], None, None,
                       deadline=float("inf"))
    assert "HTTP 307" in caught.value.reason and not caught.value.retryable
    assert llm_fake_b.requests == []


def test_an_unreachable_provider_is_a_breaker_failure():
    from apps.llm.config import KIND_OPENAI, ProviderConfig

    provider = ProviderConfig(kind=KIND_OPENAI, label="gone", base_url="http://127.0.0.1:9/v1", model="m",
                              source="bot")
    settings = make_settings(provider, max_retries=1)
    with pytest.raises(ProviderFailure) as caught:
        provider_round(provider, settings, [{"role": "user", "content": "x"}], None, None, deadline=float("inf"))
    assert caught.value.counts_for_breaker and "connection failed" in caught.value.reason


def test_the_fake_speaks_both_apis_without_streaming(llm_fake):
    llm_fake.script(Reply(text="plain", tool_calls=[ToolCall("t", {"a": 1}, id="call_9")]), "hello anthropic")
    client = openai.OpenAI(base_url=llm_fake.base_url, api_key="k", max_retries=0)
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert completion.choices[0].message.content == "plain"
    assert completion.choices[0].message.tool_calls[0].function.arguments == '{"a": 1}'
    message = anthropic.Anthropic(base_url=llm_fake.url, api_key="k", max_retries=0).messages.create(
        model="c", max_tokens=10, messages=[{"role": "user", "content": "q"}])
    assert message.content[0].text == "hello anthropic"
    assert [m.id for m in client.models.list().data] == ["fake-model"]
    assert len(client.embeddings.create(model="e", input=["a", "b"], encoding_format="float").data) == 2


def test_a_malformed_stream_line_is_a_provider_failure_that_is_retried(llm_fake):
    llm_fake.script(Reply(raw_line="{not json"), Reply(text="fine now"))
    settings = make_settings(openai_provider(llm_fake))
    result = provider_round(settings.providers[0], settings, [{"role": "user", "content": "x"}], None, None,
                            deadline=float("inf"))
    assert result.text == "fine now" and llm_fake.served == 2
    llm_fake.script(Reply(raw_line="{not json"))
    with pytest.raises(ProviderFailure) as caught:
        provider_round(settings.providers[0], make_settings(settings.providers[0], max_retries=0),
                       [{"role": "user", "content": "x"}], None, None, deadline=float("inf"))
    assert caught.value.reason.startswith("malformed response (JSONDecodeError") and caught.value.counts_for_breaker
