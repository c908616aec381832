"""The LLM layer's public API: `chat` (streamed, with the function-calling loop) and `complete` (BASIC `LLM`).

    settings = llm_settings_for(bot, bot_config_values(bot))          # apps.llm.config
    result = chat(settings, messages, tools=tools, run_tool=run_tool, on_delta=send)
    text = complete(settings, "Summarise: ...")                       # 45 s budget, spec §3.5.2

Both walk the bot's provider chain (apps.llm.config) through each provider's circuit breaker
(apps.llm.breaker), charge the tenant's daily token quota (apps.llm.quota), and raise `LLMUnavailable`
when no provider can answer, so the chat core can give its offline answer.

Failure modes this module prevents:

* A model looping on tool calls: at most `MAX_TOOL_ROUNDS` rounds of tool execution per answer; past it the
  loop stops with `TOOL_ROUND_LIMIT_MESSAGE` (streamed like any text) and `ChatResult.stopped_reason`. At
  most `MAX_TOOL_CALLS_PER_ROUND` calls of one answer run, and none once the answer's deadline has passed
  (the others get an error result, so every call id is answered).
* Model-made tool arguments crashing the turn: arguments that are not a JSON object, a tool name that was
  not offered, a missing required argument, or a tool that raises become an error *result* fed back to the
  model (which can correct itself), never an exception here; results are capped at `TOOL_RESULT_MAX_CHARS`.
* Answers from another tenant's cache: see apps.llm.cache (tenant and bot in every key).
* Dead providers slowing every message: an open breaker is skipped at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.llm import breaker, cache, quota
from apps.llm.config import LLMSettings, ProviderConfig, llm_is_configured, llm_settings_for
from apps.llm.errors import (
    LLMError,
    LLMQuotaExceeded,
    LLMStreamInterrupted,
    LLMTimeout,
    LLMUnavailable,
    ToolSuspended,
)
from apps.llm.providers import ProviderFailure, RoundResult, provider_round

logger = logging.getLogger(__name__)

__all__ = [
    "ChatResult", "LLMError", "LLMQuotaExceeded", "LLMSettings", "LLMStreamInterrupted", "LLMTimeout",
    "LLMUnavailable", "ToolCallRecord", "bot_llm_configured", "chat", "complete", "context_budget_tokens",
    "llm_is_configured", "llm_settings_for", "token_estimate",
]

# Spec §7.5 recommends an iteration cap of 5: enough for a lookup, a follow-up and a booking; a model
# still asking for tools after that is looping.
MAX_TOOL_ROUNDS = 5
TOOL_ROUND_LIMIT_MESSAGE = (
    "\n\n(I stopped here: the assistant asked for tools {rounds} times in a row without giving an answer.)"
)
ANSWER_SIZE_LIMIT_MESSAGE = "\n\n(The answer was cut here: it was longer than this assistant may write at once.)"
# Tool calls run per round: each runs a BASIC script (with side effects) while the session waits. A model
# asking for more in one answer gets an error result for the rest, telling it the limit (parallel calls
# rarely need more than a few: a lookup per item of a short list).
MAX_TOOL_CALLS_PER_ROUND = 8
# A tool's RETURN value goes back into the prompt; a huge one would blow the context window and the bill.
TOOL_RESULT_MAX_CHARS = 16_000
# Spec §3.5.2 / §7.7: the `LLM` keyword gives up after 45 s ("LLM generation timed out after 45 seconds").
COMPLETE_TIMEOUT_S = 45.0
# A chat answer's total budget across rounds, retries and fallbacks, unless the caller gives one: the
# per-request read timeout (180 s) bounds each wait; this bounds the sum.
CHAT_DEADLINE_S = 600.0
CACHE_PROVIDER = "cache"
# Role markers and separators every chat format adds per message, in tokens (OpenAI's own rule of thumb).
TOKENS_PER_MESSAGE = 4

RunTool = Callable[[str, dict[str, Any]], str]
OnDelta = Callable[[str], None]


@dataclass
class ToolCallRecord:
    id: str
    name: str
    arguments: dict[str, Any] | None  # None when the model's arguments were not a JSON object
    result: str
    error: bool = False


@dataclass
class ChatResult:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str = ""
    provider: str = ""  # ProviderConfig.label, or "cache"
    latency_ms: int = 0
    cached: bool = False
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    rounds: int = 0  # model calls made
    # "tool_round_limit" when the loop was cut, "answer_size_limit" when the text was (ROUND_MAX_CHARS)
    stopped_reason: str | None = None
    cache_kind: str | None = None  # "exact" / "semantic" on a cache hit

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# Spec §7.2: context windows by model name (first match wins), and the share of it a prompt may fill (the
# rest is for the answer).
_CONTEXT_WINDOWS: tuple[tuple[str, int], ...] = (
    ("glm-4", 202_750), ("gemini", 1_000_000), ("gpt-oss", 128_000), ("gpt-4", 128_000), ("gpt-3.5", 16_385),
)
DEFAULT_CONTEXT_WINDOW = 32_768
PROMPT_SHARE_OF_CONTEXT = 0.9


def context_budget_tokens(model: str) -> int:
    """How many prompt tokens (by `token_estimate`) a request to `model` may carry (spec §7.2)."""
    name = model.lower()
    window = next((size for fragment, size in _CONTEXT_WINDOWS if fragment in name), DEFAULT_CONTEXT_WINDOW)
    return int(window * PROMPT_SHARE_OF_CONTEXT)


def token_estimate(messages: Sequence[dict[str, Any]] | str) -> int:
    """Spec §7.2's estimate (about four characters per token) of a prompt's size, for history budgets."""
    if isinstance(messages, str):
        return len(messages) // 4
    return sum(len(json.dumps(m.get("content") or "", ensure_ascii=False)) // 4 + TOKENS_PER_MESSAGE
               for m in messages)


def bot_llm_configured(bot: Any, config_values: Mapping[str, str] | None = None) -> bool:
    """Whether any provider (the bot's, a fallback or the platform default) is configured for `bot`."""
    return llm_is_configured(llm_settings_for(bot, config_values))


# --- the provider chain ----------------------------------------------------------------------------------


def _call_chain(settings: LLMSettings, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None,
                on_delta: OnDelta | None, deadline: float) -> tuple[RoundResult, ProviderConfig]:
    """One model call: the first provider of the chain whose breaker allows it and that answers."""
    if not settings.providers:
        message = ("no usable LLM provider for this bot (see its configuration problems)" if settings.problems
                   else "no LLM provider is configured for this bot")
        raise LLMUnavailable(message, settings.problems)
    reasons: list[str] = []
    for provider in settings.providers:
        if time.monotonic() >= deadline:
            reasons.append("time budget used up")
            break
        admitted = breaker.breaker_admit(provider, settings)
        if admitted is None:
            reasons.append(f"{provider.describe()}: circuit open")
            continue
        # A half-open probe makes one attempt: retries against a provider still down would outlast its claim.
        call_settings = dataclasses.replace(settings, max_retries=0) if admitted == breaker.HALF_OPEN else settings
        try:
            result = provider_round(provider, call_settings, messages, tools, on_delta, deadline=deadline)
        except ProviderFailure as failure:
            if failure.deadline_passed:
                if admitted == breaker.HALF_OPEN:
                    breaker.breaker_probe_release(provider)
                # The caller's budget, not necessarily the provider's fault (a long answer from a slow local
                # model): the breaker is left alone, so `LLM` calls in scripts cannot open it for chats.
                logger.warning("llm: bot %s (tenant %s): out of time at %s", settings.bot_name, settings.tenant,
                               provider.describe())
                raise LLMTimeout("the LLM did not finish in time", (*reasons, str(failure))) from None
            if failure.counts_for_breaker:
                breaker.breaker_record_failure(provider, settings)
            else:
                breaker.breaker_record_success(provider)  # it answered: up, but refused this request
            if failure.streamed_text:
                logger.warning("llm: bot %s (tenant %s): stream broke off: %s", settings.bot_name, settings.tenant,
                               failure)
                raise LLMStreamInterrupted("the answer broke off; please ask again", failure.streamed_text) from None
            reasons.append(str(failure))
            continue
        except BaseException:
            # No verdict on the provider (an on_delta that raised, a job's soft time limit, a bug): a probe's
            # claim would otherwise outlive it by its whole TTL, every caller refused as "circuit open".
            if admitted == breaker.HALF_OPEN:
                breaker.breaker_probe_release(provider)
            raise
        breaker.breaker_record_success(provider)
        return result, provider
    logger.warning("llm: bot %s (tenant %s): no provider answered: %s", settings.bot_name, settings.tenant,
                   "; ".join(reasons))
    if time.monotonic() >= deadline:
        raise LLMTimeout("the LLM did not answer in time", tuple(reasons))
    raise LLMUnavailable(f"no LLM provider could answer ({len(reasons)} tried)", tuple(reasons))


# --- tools -----------------------------------------------------------------------------------------------


def _tool_index(tools: Sequence[dict[str, Any]] | None) -> dict[str, dict[str, Any]]:
    index = {}
    for tool in tools or []:
        function = tool.get("function", tool)
        if function.get("name"):
            index[str(function["name"])] = function.get("parameters") or {}
    return index


# JSON Schema types the BASIC compiler emits for PARAMs (spec §3.6) and the Python values that satisfy them.
_SCHEMA_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,), "array": (list,),
    "object": (dict,),
}


def _argument_problems(schema: dict[str, Any], arguments: dict[str, Any]) -> list[str]:
    """What is wrong with model-made arguments against the tool's parameters (spec §7.5): missing required
    ones, wrong JSON types, values outside an enum. Extra arguments are tolerated (the script ignores them)."""
    problems = []
    missing = [p for p in schema.get("required") or [] if p not in arguments]
    if missing:
        problems.append(f"missing required argument(s) {', '.join(missing)}")
    for param, spec in (schema.get("properties") or {}).items():
        if param not in arguments or not isinstance(spec, dict):
            continue
        value = arguments[param]
        expected = _SCHEMA_TYPES.get(str(spec.get("type")))
        # bool is an int in Python; JSON keeps them apart.
        if expected and (not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected)):
            problems.append(f"{param} must be a JSON {spec['type']}, got {json.dumps(value)[:60]}")
        elif spec.get("enum") and value not in spec["enum"]:
            problems.append(f"{param} must be one of {', '.join(json.dumps(v) for v in spec['enum'])}")
    return problems


def _run_one_tool(call_id: str, name: str, raw_arguments: str, offered: dict[str, dict[str, Any]],
                  run_tool: RunTool | None) -> ToolCallRecord:
    def error(message: str, arguments: dict[str, Any] | None = None) -> ToolCallRecord:
        return ToolCallRecord(call_id, name, arguments, f"error: {message}", error=True)

    if name not in offered or run_tool is None:
        return error(f"there is no tool named {name!r}; available: {', '.join(sorted(offered)) or 'none'}")
    try:
        arguments = json.loads(raw_arguments) if raw_arguments.strip() else {}
    except json.JSONDecodeError as exc:
        return error(f"the arguments of {name} are not valid JSON ({exc.msg} at position {exc.pos}); "
                     "send a JSON object")
    if not isinstance(arguments, dict):
        return error(f"the arguments of {name} must be a JSON object, got {type(arguments).__name__}")
    problems = _argument_problems(offered[name], arguments)
    if problems:
        return error(f"{name}: {'; '.join(problems)}", arguments)
    try:
        result = run_tool(name, arguments)
    except ToolSuspended:
        raise  # the tool waits for the user: the loop stops here
    except Exception as exc:  # noqa: BLE001 - the model is told, the turn goes on
        logger.warning("llm: tool %s raised %s", name, type(exc).__name__, exc_info=True)
        return error(f"{name} failed: {str(exc)[:300] or type(exc).__name__}", arguments)
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    if len(text) > TOOL_RESULT_MAX_CHARS:
        text = text[:TOOL_RESULT_MAX_CHARS] + "\n(truncated)"
    return ToolCallRecord(call_id, name, arguments, text)


# --- chat ------------------------------------------------------------------------------------------------


def _replay(text: str, on_delta: OnDelta | None) -> None:
    if on_delta is None:
        return
    for start in range(0, len(text), cache.REPLAY_CHUNK_CHARS):
        on_delta(text[start : start + cache.REPLAY_CHUNK_CHARS])


def chat(settings: LLMSettings, messages: Sequence[dict[str, Any]], *, tools: Sequence[dict[str, Any]] | None = None,
         run_tool: RunTool | None = None, on_delta: OnDelta | None = None, use_cache: bool = True,
         deadline_s: float | None = None, on_cached: Callable[[], None] | None = None) -> ChatResult:
    """Answer `messages` (OpenAI format: system/user/assistant/tool dicts), streaming text to `on_delta`.

    `tools` are OpenAI function definitions (`{"type": "function", "function": {name, description,
    parameters}}`); when the model calls one, `run_tool(name, arguments)` runs it and its string result goes
    back to the model, for at most MAX_TOOL_ROUNDS rounds. `messages` is not modified.

    Raises LLMUnavailable (no provider configured or able to answer: answer offline), LLMTimeout (a
    subclass: `deadline_s` passed), LLMQuotaExceeded (the tenant's daily tokens are used up),
    LLMStreamInterrupted (a provider broke off mid-answer; what was streamed is in `partial_text`).
    `on_cached` is called before a cached answer is replayed to `on_delta` (all at once, no model behind it).
    """
    started = time.monotonic()
    deadline = started + (deadline_s if deadline_s is not None else CHAT_DEADLINE_S)
    conversation = [dict(m) for m in messages]
    tools = list(tools) if tools else None
    if use_cache:
        hit = cache.cache_lookup(settings, conversation, tools)
        if hit is not None:
            if on_cached is not None:
                on_cached()
            _replay(hit.response, on_delta)
            return ChatResult(text=hit.response, model=hit.model, provider=CACHE_PROVIDER, cached=True,
                              latency_ms=int((time.monotonic() - started) * 1000), cache_kind=hit.kind)
    offered = _tool_index(tools)
    result = ChatResult(text="")
    parts: list[str] = []

    def emit(text: str) -> None:
        parts.append(text)
        if on_delta is not None:
            on_delta(text)

    tool_rounds = 0
    while True:
        quota.quota_check(settings.tenant, settings.daily_token_limit)
        try:
            round_result, provider = _call_chain(settings, conversation, tools, emit, deadline)
        except LLMStreamInterrupted as exc:
            exc.partial_text = "".join(parts)
            raise
        result.rounds += 1
        result.prompt_tokens += round_result.prompt_tokens
        result.completion_tokens += round_result.completion_tokens
        result.model, result.provider = round_result.model, provider.label
        quota.quota_add(settings.tenant, round_result.prompt_tokens + round_result.completion_tokens)
        if round_result.cut_at_size:
            result.stopped_reason = "answer_size_limit"
            emit(ANSWER_SIZE_LIMIT_MESSAGE)
            break
        if not round_result.tool_calls:
            break
        if tool_rounds >= MAX_TOOL_ROUNDS:
            result.stopped_reason = "tool_round_limit"
            emit(TOOL_ROUND_LIMIT_MESSAGE.format(rounds=tool_rounds + 1))
            logger.warning("llm: bot %s (tenant %s): tool loop stopped after %d rounds",
                           settings.bot_name, settings.tenant, tool_rounds)
            break
        tool_rounds += 1
        conversation.append({
            "role": "assistant",
            "content": round_result.text or None,
            "tool_calls": [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                           for c in round_result.tool_calls],
        })
        for number, call in enumerate(round_result.tool_calls):
            if number >= MAX_TOOL_CALLS_PER_ROUND:
                record = ToolCallRecord(call.id, call.name, None, f"error: not run: at most {MAX_TOOL_CALLS_PER_ROUND} "
                                        "tool calls are run per answer; ask again for the rest", error=True)
            elif time.monotonic() >= deadline:
                record = ToolCallRecord(call.id, call.name, None, "error: not run: the answer's time is up",
                                        error=True)
            else:
                record = _run_one_tool(call.id, call.name, call.arguments, offered, run_tool)
            result.tool_calls.append(record)
            conversation.append({"role": "tool", "tool_call_id": call.id, "content": record.result})
    result.text = "".join(parts)
    result.latency_ms = int((time.monotonic() - started) * 1000)
    # Answers that used tools are not cached: they depend on what the tools returned at that moment (an
    # order's status, a booking made), and replaying one would skip the tool's side effects and show stale
    # data. A capped loop is not a real answer either. Only the chain's first provider's answers are kept: the
    # key names the primary model, and a fallback's answer stored under it would be served in the primary's
    # name for the cache's TTL after the primary came back.
    # (No tool calls and no stop: one round, answered by `provider`.)
    if (use_cache and not result.tool_calls and result.stopped_reason is None
            and provider == settings.providers[0]):
        cache.cache_store(settings, messages, tools, result.text, result.model)
    return result


# --- complete (BASIC `LLM "prompt"`) ---------------------------------------------------------------------


def complete(settings: LLMSettings, prompt: str, *, system: str | None = None,
             timeout_s: float = COMPLETE_TIMEOUT_S) -> str:
    """One-shot completion for the BASIC `LLM` keyword: same chain, breakers and quota, no tools, no cache
    (scripts call it for fresh text: summaries, classifications of new input), `timeout_s` for everything.

    Raises LLMTimeout with "LLM generation timed out after 45 seconds" past the budget, LLMUnavailable,
    LLMQuotaExceeded, LLMStreamInterrupted (see `chat`).
    """
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": prompt})
    try:
        return chat(settings, messages, use_cache=False, deadline_s=timeout_s).text
    except LLMTimeout as exc:
        timeout = LLMTimeout(f"LLM generation timed out after {timeout_s:g} seconds")
        timeout.reasons = exc.reasons
        raise timeout from None
