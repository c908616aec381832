"""chat() and complete() against our fake OpenAI/Anthropic server, through the real SDKs."""

from __future__ import annotations

import json

import pytest

from apps.llm.services import (
    ANSWER_SIZE_LIMIT_MESSAGE,
    MAX_TOOL_CALLS_PER_ROUND,
    MAX_TOOL_ROUNDS,
    LLMStreamInterrupted,
    LLMTimeout,
    LLMUnavailable,
    chat,
    complete,
    context_budget_tokens,
    token_estimate,
)
from tests.llm.conftest import anthropic_provider, make_settings, openai_provider
from tests.support.llm_fake import Reply, ToolCall

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
BOOK_TOOL = {
    "type": "function",
    "function": {
        "name": "book_visit",
        "description": "Book a visit",
        "parameters": {"type": "object", "properties": {"day": {"type": "string"}}, "required": ["day"]},
    },
}


def _question(text: str) -> list[dict]:
    return [{"role": "system", "content": "You are a test bot."}, {"role": "user", "content": text}]


def test_streams_text_deltas_in_order_and_reports_usage(llm_fake):
    llm_fake.script(Reply(text="Hello from the fake model, streamed.", chunk_chars=5, usage=(11, 7)))
    deltas: list[str] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("hi"), on_delta=deltas.append)
    assert len(deltas) == 8  # 37 characters in pieces of 5
    assert "".join(deltas) == result.text == "Hello from the fake model, streamed."
    assert (result.prompt_tokens, result.completion_tokens, result.total_tokens) == (11, 7, 18)
    assert result.model == "fake-model" and result.provider == "primary" and not result.cached
    sent = llm_fake.chat_requests()[0]
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["messages"][1] == {"role": "user", "content": "hi"}
    assert sent.headers["authorization"].startswith("Bearer sk-test-")


def test_two_tool_rounds_then_an_answer(llm_fake):
    llm_fake.script(
        Reply(text="Let me check. ", tool_calls=[ToolCall("get_weather", {"city": "Lisbon"}, id="call_1")],
              chunk_chars=4, usage=(10, 5)),
        Reply(tool_calls=[ToolCall("book_visit", {"day": "friday"}, id="call_2")], usage=(20, 6)),
        Reply(text="Sunny in Lisbon; booked for Friday.", usage=(30, 9)),
    )
    ran: list[tuple[str, dict]] = []

    def run_tool(name: str, arguments: dict) -> str:
        ran.append((name, arguments))
        return {"get_weather": "sunny, 24C", "book_visit": "booking #42"}[name]

    deltas: list[str] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("weather and book"),
                  tools=[WEATHER_TOOL, BOOK_TOOL], run_tool=run_tool, on_delta=deltas.append)
    assert ran == [("get_weather", {"city": "Lisbon"}), ("book_visit", {"day": "friday"})]
    assert result.text == "".join(deltas) == "Let me check. Sunny in Lisbon; booked for Friday."
    assert [(c.name, c.arguments, c.result, c.error) for c in result.tool_calls] == [
        ("get_weather", {"city": "Lisbon"}, "sunny, 24C", False),
        ("book_visit", {"day": "friday"}, "booking #42", False),
    ]
    assert (result.prompt_tokens, result.completion_tokens, result.rounds) == (60, 20, 3)
    third = llm_fake.chat_requests()[2].body
    assert third["tools"][0]["function"]["name"] == "get_weather"
    # The model sees its own calls and each result, linked by id, in order.
    assert third["messages"][2]["role"] == "assistant"
    assert third["messages"][2]["tool_calls"][0]["function"] == {"name": "get_weather",
                                                                 "arguments": json.dumps({"city": "Lisbon"})}
    assert third["messages"][3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 24C"}
    assert third["messages"][5] == {"role": "tool", "tool_call_id": "call_2", "content": "booking #42"}


def test_tool_rounds_are_capped_with_a_clear_message(llm_fake):
    llm_fake.default = lambda request: Reply(tool_calls=[ToolCall("get_weather", {"city": "Porto"})])
    calls: list[str] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("loop"), tools=[WEATHER_TOOL],
                  run_tool=lambda name, args: calls.append(name) or "rain")
    assert len(calls) == MAX_TOOL_ROUNDS
    assert result.rounds == MAX_TOOL_ROUNDS + 1 == len(llm_fake.chat_requests())
    assert result.stopped_reason == "tool_round_limit"
    assert "stopped" in result.text and str(MAX_TOOL_ROUNDS + 1) in result.text


def test_tool_calls_in_one_answer_are_capped_and_the_rest_told_to_the_model(llm_fake):
    many = [ToolCall("get_weather", {"city": f"city {n}"}, id=f"call_{n}") for n in range(30)]
    llm_fake.script(Reply(tool_calls=many), Reply(text="Here is the weather."))
    ran: list[str] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("weather everywhere"), tools=[WEATHER_TOOL],
                  run_tool=lambda name, args: ran.append(args["city"]) or "sun")
    assert ran == [f"city {n}" for n in range(MAX_TOOL_CALLS_PER_ROUND)]
    assert result.text == "Here is the weather." and len(result.tool_calls) == 30
    answers = [m for m in llm_fake.chat_requests()[1].body["messages"] if m["role"] == "tool"]
    assert len(answers) == 30  # every call id gets an answer (the API requires it)
    assert all("at most" in m["content"] for m in answers[MAX_TOOL_CALLS_PER_ROUND:])


def test_tools_are_not_run_once_the_answers_time_is_up(llm_fake):
    import time

    llm_fake.script(Reply(tool_calls=[ToolCall("get_weather", {"city": c}, id=f"c{i}")
                                      for i, c in enumerate(["Porto", "Faro", "Braga"])]),
                    Reply(text="Partly done."))
    ran: list[str] = []

    def slow(name, args):
        ran.append(args["city"])
        time.sleep(1.5)
        return "sun"

    with pytest.raises(LLMTimeout):
        chat(make_settings(openai_provider(llm_fake)), _question("weather"), tools=[WEATHER_TOOL], run_tool=slow,
             deadline_s=1.0)
    assert ran == ["Porto"]  # the first ran past the deadline; the others (side effects) were not started


def test_bad_tool_json_is_fed_back_to_the_model_not_raised(llm_fake):
    llm_fake.script(
        Reply(tool_calls=[ToolCall("get_weather", '{"city": "Lis', id="call_bad")]),
        Reply(tool_calls=[ToolCall("get_weather", '["Lisbon"]', id="call_list"),
                          ToolCall("delete_everything", {}, id="call_unknown")]),
        Reply(text="Sorry, which city?"),
    )
    ran: list[dict] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("weather"), tools=[WEATHER_TOOL],
                  run_tool=lambda name, args: ran.append(args) or "never")
    assert ran == []  # the tool never ran with bad arguments
    assert result.text == "Sorry, which city?"
    assert [c.error for c in result.tool_calls] == [True, True, True]
    second = llm_fake.chat_requests()[1].body["messages"]
    assert second[-1]["tool_call_id"] == "call_bad"
    assert "not valid JSON" in second[-1]["content"]
    third = llm_fake.chat_requests()[2].body["messages"]
    assert "must be a JSON object" in third[-2]["content"]
    assert "no tool named 'delete_everything'" in third[-1]["content"]


def test_missing_required_argument_and_a_failing_tool_become_error_results(llm_fake):
    llm_fake.script(
        Reply(tool_calls=[ToolCall("get_weather", {}, id="c1")]),
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="c2")]),
        Reply(text="done"),
    )

    def run_tool(name, args):
        raise RuntimeError("weather service down")

    result = chat(make_settings(openai_provider(llm_fake)), _question("w"), tools=[WEATHER_TOOL], run_tool=run_tool)
    assert result.tool_calls[0].result == "error: get_weather: missing required argument(s) city"
    assert result.tool_calls[1].result == "error: get_weather failed: weather service down"
    assert result.text == "done"


def test_arguments_are_checked_against_the_parameter_types_and_enums(llm_fake):
    tool = {"type": "function", "function": {"name": "order", "parameters": {
        "type": "object", "required": ["qty"],
        "properties": {"qty": {"type": "integer"}, "size": {"type": "string", "enum": ["S", "M", "L"]},
                       "gift": {"type": "boolean"}, "price": {"type": "number"}}}}}
    llm_fake.script(
        Reply(tool_calls=[ToolCall("order", {"qty": "two", "size": "XL", "gift": 1})]),
        Reply(tool_calls=[ToolCall("order", {"qty": True})]),
        Reply(tool_calls=[ToolCall("order", {"qty": 2, "size": "M", "gift": False, "price": 9.5, "note": "x"})]),
        Reply(text="Ordered."),
    )
    ran = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("order"), tools=[tool],
                  run_tool=lambda name, args: ran.append(args) or "ok")
    assert ran == [{"qty": 2, "size": "M", "gift": False, "price": 9.5, "note": "x"}]
    first = result.tool_calls[0].result
    assert 'qty must be a JSON integer, got "two"' in first
    assert 'size must be one of "S", "M", "L"' in first and "gift must be a JSON boolean" in first
    assert "qty must be a JSON integer, got true" in result.tool_calls[1].result
    assert result.text == "Ordered."


@pytest.mark.parametrize("status", [500, 429])
def test_retries_on_500_and_429_then_succeeds(llm_fake, status):
    llm_fake.script(Reply(status=status, headers={"Retry-After": "0"}), Reply(status=status), Reply(text="third time"))
    result = chat(make_settings(openai_provider(llm_fake)), _question("x"))
    assert result.text == "third time"
    assert len(llm_fake.chat_requests()) == 3


def test_gives_up_after_the_retry_budget(llm_fake):
    llm_fake.script(*[Reply(status=503)] * 3, Reply(text="too late"))
    with pytest.raises(LLMUnavailable) as caught:
        chat(make_settings(openai_provider(llm_fake), max_retries=2), _question("x"))
    assert "HTTP 503" in caught.value.detail
    assert len(llm_fake.chat_requests()) == 3
    assert llm_fake.pending() == 1


def test_a_client_error_is_not_retried(llm_fake):
    llm_fake.script(Reply(status=400, error_message="bad model"), Reply(text="unused"))
    with pytest.raises(LLMUnavailable) as caught:
        chat(make_settings(openai_provider(llm_fake)), _question("x"))
    assert "HTTP 400: bad model" in caught.value.detail
    assert len(llm_fake.chat_requests()) == 1


def test_a_slow_first_byte_times_out_and_is_retried(llm_fake):
    llm_fake.script(Reply(text="slow", delay_s=1.0), Reply(text="fast"))
    result = chat(make_settings(openai_provider(llm_fake), timeout_s=0.3), _question("x"))
    assert result.text == "fast"
    assert len(llm_fake.chat_requests()) == 2


def test_timeout_with_no_retries_left_is_unavailable(llm_fake):
    llm_fake.script(Reply(text="slow", delay_s=1.0))
    with pytest.raises(LLMUnavailable) as caught:
        chat(make_settings(openai_provider(llm_fake), timeout_s=0.2, max_retries=0), _question("x"))
    assert "timed out" in caught.value.detail


def test_a_dropped_stream_before_any_text_is_retried(llm_fake):
    llm_fake.script(Reply(text="never finished", drop_after_chunks=0), Reply(text="whole answer"))
    result = chat(make_settings(openai_provider(llm_fake)), _question("x"))
    assert result.text == "whole answer"


def test_a_stream_dropped_mid_answer_is_not_retried_and_keeps_the_partial_text(llm_fake):
    llm_fake.script(Reply(text="The beginning of an answer", chunk_chars=5, drop_after_chunks=2),
                    Reply(text="must not be used"))
    deltas: list[str] = []
    with pytest.raises(LLMStreamInterrupted) as caught:
        chat(make_settings(openai_provider(llm_fake)), _question("x"), on_delta=deltas.append)
    assert caught.value.partial_text == "".join(deltas) == "The beginn"  # two chunks of 5
    assert len(llm_fake.chat_requests()) == 1


def test_a_runaway_answer_is_cut_at_the_round_size_when_no_output_cap_is_sent(llm_fake, monkeypatch,
                                                                              clean_llm_keys):
    from apps.llm import providers

    monkeypatch.setattr(providers, "ROUND_MAX_CHARS", 60)
    settings = make_settings(openai_provider(llm_fake), cache_enabled=True, cache_semantic=False)
    clean_llm_keys.append(settings.tenant)
    llm_fake.script(Reply(text="again and " * 500, chunk_chars=7))
    deltas: list[str] = []
    result = chat(settings, _question("loop"), on_delta=deltas.append)
    assert result.stopped_reason == "answer_size_limit"
    assert result.text == "".join(deltas) == ("again and " * 6) + ANSWER_SIZE_LIMIT_MESSAGE
    assert "max_tokens" not in llm_fake.chat_requests()[0].body
    # A cut answer is not a real one: it is not cached (the same question goes to the model again).
    llm_fake.script(Reply(text="short"))
    assert chat(settings, _question("loop")).text == "short"


def test_tool_call_arguments_past_the_round_size_run_no_tool(llm_fake, monkeypatch):
    from apps.llm import providers

    monkeypatch.setattr(providers, "ROUND_MAX_CHARS", 60)
    llm_fake.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "x" * 500})], chunk_chars=9))
    ran: list[str] = []
    result = chat(make_settings(openai_provider(llm_fake)), _question("weather"), tools=[WEATHER_TOOL],
                  run_tool=lambda name, args: ran.append(name) or "sunny")
    assert ran == [] and result.tool_calls == [] and result.rounds == 1
    assert result.stopped_reason == "answer_size_limit" and result.text == ANSWER_SIZE_LIMIT_MESSAGE


def test_a_bot_with_an_output_cap_is_not_cut_by_the_round_size(llm_fake, monkeypatch):
    from apps.llm import providers

    monkeypatch.setattr(providers, "ROUND_MAX_CHARS", 60)
    llm_fake.script(Reply(text="word " * 40, chunk_chars=7))
    result = chat(make_settings(openai_provider(llm_fake), max_tokens=500), _question("long"))
    assert result.text == "word " * 40 and result.stopped_reason is None
    assert llm_fake.chat_requests()[0].body["max_tokens"] == 500


def test_no_provider_configured_is_unavailable():
    with pytest.raises(LLMUnavailable, match="no LLM provider is configured"):
        chat(make_settings(), _question("x"))


def test_complete_returns_the_text_and_sends_one_user_message(llm_fake):
    llm_fake.script(Reply(text="A short summary."))
    assert complete(make_settings(openai_provider(llm_fake)), "Summarise this") == "A short summary."
    body = llm_fake.chat_requests()[0].body
    assert body["messages"] == [{"role": "user", "content": "Summarise this"}]
    assert "tools" not in body


def test_complete_times_out_with_the_keyword_message(llm_fake):
    llm_fake.script(Reply(text="slow words", chunk_chars=2, chunk_delay_s=0.2))
    with pytest.raises(LLMTimeout, match=r"^LLM generation timed out after 0.5 seconds$"):
        complete(make_settings(openai_provider(llm_fake)), "go", timeout_s=0.5)


# --- Anthropic -------------------------------------------------------------------------------------------


def test_anthropic_streams_text_and_runs_a_tool_use_block(llm_fake):
    llm_fake.script(
        Reply(text="Checking. ", tool_calls=[ToolCall("get_weather", {"city": "Faro"}, id="toolu_1")],
              chunk_chars=3, usage=(40, 12)),
        Reply(text="It is warm in Faro.", chunk_chars=4, usage=(60, 8)),
    )
    deltas: list[str] = []
    result = chat(make_settings(anthropic_provider(llm_fake)), _question("weather in Faro"), tools=[WEATHER_TOOL],
                  run_tool=lambda name, args: f"{args['city']}: 28C", on_delta=deltas.append)
    assert result.text == "".join(deltas) == "Checking. It is warm in Faro."
    assert len(deltas) > 5
    assert [(c.name, c.arguments, c.result) for c in result.tool_calls] == [("get_weather", {"city": "Faro"},
                                                                            "Faro: 28C")]
    assert (result.prompt_tokens, result.completion_tokens) == (100, 20)
    first, second = (r.body for r in llm_fake.chat_requests())
    assert first["system"] == "You are a test bot."
    assert first["tools"] == [{"name": "get_weather", "description": "Current weather of a city",
                               "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    headers = llm_fake.chat_requests()[0].headers
    # This SDK version sends the key as a Bearer token; older ones used x-api-key.
    assert (headers.get("x-api-key") or headers["authorization"].removeprefix("Bearer ")).startswith("sk-ant-test-")
    # The tool round trip in Anthropic's shape: tool_use in the assistant turn, tool_result in a user turn.
    assert second["messages"][1]["content"][1] == {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                                   "input": {"city": "Faro"}}
    assert second["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Faro: 28C"}]}


def test_anthropic_stream_dropped_before_text_is_retried_and_mid_text_is_interrupted(llm_fake):
    llm_fake.script(Reply(text="never", drop_after_chunks=0), Reply(text="complete answer", chunk_chars=4))
    assert chat(make_settings(anthropic_provider(llm_fake)), _question("x")).text == "complete answer"
    llm_fake.script(Reply(text="half an answer", chunk_chars=4, drop_after_chunks=1))
    with pytest.raises(LLMStreamInterrupted) as caught:
        chat(make_settings(anthropic_provider(llm_fake)), _question("x"))
    assert caught.value.partial_text == "half"


def test_anthropic_overloaded_is_retried(llm_fake):
    llm_fake.script(Reply(status=529), Reply(text="ok now"))
    assert chat(make_settings(anthropic_provider(llm_fake)), _question("x")).text == "ok now"


# --- the shared fixtures other apps' tests use -----------------------------------------------------------


def test_the_llm_platform_fixture_makes_the_fake_every_bots_default(llm_platform):
    from types import SimpleNamespace

    from apps.llm.config import llm_settings_for

    llm_platform.script(Reply(text="platform says hi"))
    settings = llm_settings_for(SimpleNamespace(name="any", pk=1), {}, tenant="t_fixture")
    assert chat(settings, _question("hi")).text == "platform says hi"
    assert llm_platform.chat_requests()[0].headers["authorization"] == "Bearer sk-fake-platform"


def test_token_estimate_and_context_budget():
    assert token_estimate("x" * 400) == 100
    assert token_estimate([{"role": "user", "content": "x" * 398}]) == 100 + 4  # content + per-message overhead
    assert context_budget_tokens("gpt-4o-mini") == 115_200
    assert context_budget_tokens("llama3:8b") == int(32_768 * 0.9)


def test_a_provider_sending_a_malformed_stream_falls_back_to_the_next(llm_fake, llm_fake_b):
    from apps.llm import breaker

    llm_fake.script(Reply(raw_line="{not json"))
    llm_fake_b.script(Reply(text="from the fallback"))
    primary, fallback = openai_provider(llm_fake), openai_provider(llm_fake_b, label="fallback")
    settings = make_settings(primary, fallback, max_retries=0)
    result = chat(settings, _question("hi"))
    assert (result.text, result.provider) == ("from the fallback", "fallback")
    assert breaker.breaker_state(primary, settings).failures == 1  # counted like any outage
