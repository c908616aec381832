"""One streamed model call to one provider, through the real SDKs (`openai`, `anthropic`), with retries.

`provider_round(provider, messages, tools, on_delta, ...)` sends OpenAI-format messages and tools, streams
text deltas to `on_delta`, collects tool calls (arguments reassembled from their fragments) and usage,
and returns a `RoundResult`; on failure it raises `ProviderFailure`, which says whether the breaker should
count it and whether part of the answer was already streamed.

Failure modes this module prevents:

* A hung provider holding a chat forever: every request has a connect timeout and a read timeout between
  bytes, and the caller's overall deadline is checked between chunks.
* Retry storms and retry-forever: at most `settings.max_retries` retries per call, exponential backoff with
  jitter capped at `RETRY_MAX_DELAY_S`, a server's `Retry-After` honoured up to `RETRY_AFTER_MAX_S`, and no
  retry that would end past the deadline. The SDKs' own retries are off (max_retries=0) so there is one
  policy, here.
* Duplicated text: a call that already streamed text is never retried (the user has seen it).
* A truncated stream passing as a complete short answer: a stream without a finish reason (dropped
  connection, proxy cut) is a failure.
* Keys in logs: failures are described by provider, model and status, never by request headers.
* A server sending a malformed stream (a `data:` line that is not JSON) escaping the breaker and the
  fallback chain: parse errors from the stream are provider failures like a 5xx.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import openai

try:  # the SDKs' own HTTP stack (a fork of httpx); its transport errors can escape a stream's iteration
    import httpx2
except ImportError:  # pragma: no cover - older SDKs use httpx itself
    httpx2 = httpx

from apps.basic.ssrf import SSRFResolveError
from apps.core.outbound import checked_http_client, ssrf_refusal
from apps.llm.config import KIND_ANTHROPIC, LLMSettings, ProviderConfig

logger = logging.getLogger(__name__)

# Connecting is fast or broken: a provider that cannot accept a TCP/TLS connection in 10 s is down.
CONNECT_TIMEOUT_S = 10.0
# Backoff cap: past a few seconds a user is better served by the next provider than by waiting.
RETRY_MAX_DELAY_S = 8.0
# A server asking for more than this (`Retry-After: 3600`) is treated as down for this call.
RETRY_AFTER_MAX_S = 20.0
# Anthropic requires max_tokens; 4096 fits every current Claude model's output limit.
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096
# Statuses worth retrying: request timeout, conflict (lock contention), rate limit; and any 5xx.
RETRYABLE_STATUSES = frozenset({408, 409, 429})
# Clients kept per process (one per endpoint and key): bounded so a tenant cycling keys cannot grow it.
CLIENT_CACHE_MAX = 64
# Models that take `max_completion_tokens` instead of `max_tokens` (OpenAI's reasoning models).
MAX_COMPLETION_TOKENS_PREFIXES = ("gpt-5", "o1", "o3", "o4")
# What one round may stream (answer text plus tool-call arguments) when the bot sets no `llm-max-tokens` and
# so no output cap is sent (sending one by default broke models with smaller limits): a model stuck repeating
# itself is cut here instead of streaming until the answer's deadline. About 25,000 tokens, more than the
# output limit of most models and far more than any chat answer.
ROUND_MAX_CHARS = 100_000


@dataclass
class ToolCallRequest:
    """A tool call as the model asked for it; `arguments` is the raw JSON text (validated by the caller)."""

    id: str
    name: str
    arguments: str


@dataclass
class RoundResult:
    text: str
    tool_calls: list[ToolCallRequest]
    prompt_tokens: int
    completion_tokens: int
    model: str
    finish_reason: str
    usage_reported: bool = True  # False: tokens are estimated (chars / 4), the server sent no usage
    cut_at_size: bool = False  # we stopped reading at ROUND_MAX_CHARS (tool calls of the round dropped)


@dataclass
class ProviderFailure(Exception):
    provider: ProviderConfig
    reason: str
    counts_for_breaker: bool  # an outage (connection, timeout, 429, 5xx), not a request the server refused
    streamed_text: str = ""  # what had gone to on_delta before the failure
    retryable: bool = False
    retry_after_s: float | None = field(default=None, repr=False)
    deadline_passed: bool = False  # the caller's time budget ran out (not the provider's fault alone)

    def __str__(self) -> str:
        return f"{self.provider.describe()}: {self.reason}"


class _DeadlinePassed(Exception):
    pass


class _StreamCutOff(Exception):
    """The stream ended without a finish reason: the connection was cut mid-answer."""


# --- clients ---------------------------------------------------------------------------------------------

_clients: dict[tuple[str, str, str, bool], Any] = {}
_clients_lock = threading.Lock()


def _client(provider: ProviderConfig) -> Any:
    """The process's SDK client for this endpoint and key (thread-safe; httpx pools connections)."""
    cache_key = (provider.kind, provider.base_url, provider.api_key, provider.public_only)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            if len(_clients) >= CLIENT_CACHE_MAX:
                _clients.pop(next(iter(_clients)))
            # Local servers take no key, but both clients refuse to start without one.
            key = provider.api_key or "no-key"
            sdk: Any = anthropic if provider.kind == KIND_ANTHROPIC else openai
            # Redirects are not followed (the SDKs would): a public endpoint that redirects to an internal
            # address would get around the SSRF check of the configured URL (apps.llm.config). An endpoint a bot
            # chose connects only to addresses checked as public when connecting (no DNS rebinding past the
            # check), and never through a proxy (apps.core.outbound).
            http_client = (checked_http_client(sdk) if provider.public_only
                           else sdk.DefaultHttpxClient(follow_redirects=False))
            if provider.kind == KIND_ANTHROPIC:
                client = anthropic.Anthropic(base_url=provider.base_url, api_key=key, max_retries=0,
                                             http_client=http_client)
            else:
                client = openai.OpenAI(base_url=provider.base_url, api_key=key, max_retries=0,
                                       http_client=http_client)
            _clients[cache_key] = client
        return client


# --- errors ----------------------------------------------------------------------------------------------

_TIMEOUT_ERRORS = (openai.APITimeoutError, anthropic.APITimeoutError, httpx.TimeoutException,
                   httpx2.TimeoutException)
_CONNECTION_ERRORS = (openai.APIConnectionError, anthropic.APIConnectionError, httpx.TransportError,
                      httpx2.TransportError, _StreamCutOff)
_STATUS_ERRORS = (openai.APIStatusError, anthropic.APIStatusError)
# What the SDKs raise while reading a stream the server got wrong: json.JSONDecodeError (a ValueError) for a
# `data:` line that is not JSON, UnicodeDecodeError (also one) for bytes that are not UTF-8. Not TypeError or
# KeyError: those are more likely our own bugs, which must surface, not open breakers.
_MALFORMED_RESPONSE_ERRORS = (ValueError,)


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    raw = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _failure(provider: ProviderConfig, exc: BaseException, streamed: str) -> ProviderFailure:
    if isinstance(exc, _DeadlinePassed):
        return ProviderFailure(provider, "the time budget of this call ran out", True, streamed, deadline_passed=True)
    if (refusal := ssrf_refusal(exc)) is not None:
        # The endpoint's name now resolves to an address a bot may not reach (apps.core.outbound): refused, not an
        # outage of the provider; the chain moves on. A name that does not resolve now is an outage, retried.
        if isinstance(refusal, SSRFResolveError):
            return ProviderFailure(provider, f"connection failed ({refusal})", True, streamed, retryable=True)
        return ProviderFailure(provider, f"refused: {refusal} (LLM endpoints of bots must be public hosts)", False,
                               streamed)
    if isinstance(exc, _TIMEOUT_ERRORS):
        return ProviderFailure(provider, "timed out", True, streamed, retryable=True)
    if isinstance(exc, _STATUS_ERRORS):
        status = exc.status_code
        message = _error_message(exc)
        outage = status >= 500 or status in RETRYABLE_STATUSES
        return ProviderFailure(provider, f"HTTP {status}: {message}", outage, streamed, retryable=outage,
                               retry_after_s=_retry_after(exc))
    if isinstance(exc, _CONNECTION_ERRORS):
        return ProviderFailure(provider, f"connection failed ({type(exc).__name__})", True, streamed, retryable=True)
    if isinstance(exc, openai.OpenAIError | anthropic.AnthropicError):
        return ProviderFailure(provider, f"{type(exc).__name__}: {str(exc)[:200]}", True, streamed, retryable=True)
    if isinstance(exc, _MALFORMED_RESPONSE_ERRORS):
        # The server's fault (a `data:` line that is not JSON): like a 5xx, it counts
        # for the breaker and the chain moves on, instead of the exception escaping the fallback chain.
        return ProviderFailure(provider, f"malformed response ({type(exc).__name__}: {str(exc)[:200]})", True,
                               streamed, retryable=True)
    raise exc


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        message = error.get("message") if isinstance(error, dict) else error
        if message:
            return str(message)[:200]
    return str(getattr(exc, "message", "") or exc)[:200]


# --- OpenAI-compatible -----------------------------------------------------------------------------------


def _openai_round(provider: ProviderConfig, settings: LLMSettings, messages: Sequence[dict[str, Any]],
                  tools: Sequence[dict[str, Any]] | None, emit: Callable[[str], None], deadline: float,
                  read_timeout: float) -> RoundResult:
    kwargs: dict[str, Any] = {
        "model": provider.model,
        "messages": list(messages),
        "stream": True,
        "stream_options": {"include_usage": True},
        "timeout": openai.Timeout(read_timeout, connect=min(CONNECT_TIMEOUT_S, read_timeout)),
    }
    if tools:
        kwargs["tools"] = list(tools)
    if settings.temperature is not None:
        kwargs["temperature"] = settings.temperature
    if settings.max_tokens:
        name = "max_completion_tokens" if provider.model.startswith(MAX_COMPLETION_TOKENS_PREFIXES) else "max_tokens"
        kwargs[name] = settings.max_tokens
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    usage = None
    finish = ""
    model = provider.model
    # No cap sent: we stop reading past ROUND_MAX_CHARS ourselves.
    size_left = ROUND_MAX_CHARS if not settings.max_tokens else None
    cut_at_size = False
    stream = _client(provider).chat.completions.create(**kwargs)
    with stream:
        for chunk in stream:
            if time.monotonic() > deadline:
                raise _DeadlinePassed
            if size_left is not None and size_left < 0:
                cut_at_size, finish = True, "length"
                break  # leaving the block closes the response: the server stops generating
            model = getattr(chunk, "model", None) or model
            if getattr(chunk, "usage", None) is not None:
                usage = chunk.usage
            for choice in chunk.choices or []:
                delta = choice.delta
                if delta is not None and delta.content:
                    piece = delta.content
                    if size_left is not None:
                        piece = piece[:max(0, size_left)]
                        size_left -= len(delta.content)
                    if piece:
                        text.append(piece)
                        emit(piece)
                for call in (delta.tool_calls if delta is not None else None) or []:
                    slot = calls.setdefault(call.index or 0, {"id": "", "name": "", "arguments": []})
                    if call.id:
                        slot["id"] = call.id
                    if call.function is not None:
                        if call.function.name:
                            slot["name"] += call.function.name
                        if call.function.arguments:
                            slot["arguments"].append(call.function.arguments)
                            if size_left is not None:
                                size_left -= len(call.function.arguments)
                if choice.finish_reason:
                    finish = choice.finish_reason
    if size_left is not None and size_left < 0:
        cut_at_size, finish = True, finish or "length"  # the last chunks went past it: their text was cut too
    if cut_at_size:
        logger.warning("llm: %s streamed more than %d characters in one round; cut there",
                       provider.describe(), ROUND_MAX_CHARS)
        calls = {}  # arguments cut short are not a call
        usage = None  # the stream's usage chunk never came: estimated below
    if not finish:
        raise _StreamCutOff("the stream ended without a finish reason")
    tool_calls = [
        # Some compatible servers send no call id; the tool message must still name its call, uniquely.
        ToolCallRequest(id=slot["id"] or f"call_{uuid.uuid4().hex[:16]}", name=slot["name"],
                        arguments="".join(slot["arguments"]))
        for index, slot in sorted(calls.items())
    ]
    answer = "".join(text)
    if usage is not None:
        return RoundResult(answer, tool_calls, int(usage.prompt_tokens or 0), int(usage.completion_tokens or 0),
                           model, finish)
    return RoundResult(answer, tool_calls, _estimate_tokens(messages), _estimate_tokens(answer, tool_calls),
                       model, finish, usage_reported=False, cut_at_size=cut_at_size)


def _estimate_tokens(content: Any, tool_calls: Sequence[ToolCallRequest] = ()) -> int:
    """Spec §7.2's estimate, about four characters per token; used only when a server reports no usage."""
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return max(1, (len(text) + sum(len(c.arguments) + len(c.name) for c in tool_calls)) // 4)


# --- Anthropic -------------------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def anthropic_messages(messages: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI-format messages -> (system text, Anthropic messages): system messages join the `system`
    parameter, assistant tool calls become `tool_use` blocks, `tool` results become `tool_result` blocks of
    a user message, and consecutive same-role messages merge (Anthropic wants alternating roles)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role")
        text = _text_of(message.get("content"))
        if role in ("system", "developer"):
            if text:
                system.append(text)
        elif role == "user":
            add("user", [{"type": "text", "text": text}] if text else [])
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                try:
                    arguments = json.loads(function.get("arguments") or "{}")
                except json.JSONDecodeError:
                    arguments = {}
                blocks.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                               "input": arguments if isinstance(arguments, dict) else {}})
            add("assistant", blocks)
        elif role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": message.get("tool_call_id"), "content": text}])
    return "\n\n".join(system), out


def anthropic_tools(tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        function = tool.get("function", tool)
        converted.append({
            "name": function.get("name"),
            "description": function.get("description") or "",
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        })
    return converted


def _anthropic_round(provider: ProviderConfig, settings: LLMSettings, messages: Sequence[dict[str, Any]],
                     tools: Sequence[dict[str, Any]] | None, emit: Callable[[str], None], deadline: float,
                     read_timeout: float) -> RoundResult:
    system, converted = anthropic_messages(messages)
    kwargs: dict[str, Any] = {
        "model": provider.model,
        "messages": converted,
        "max_tokens": settings.max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
        "stream": True,
        "timeout": anthropic.Timeout(read_timeout, connect=min(CONNECT_TIMEOUT_S, read_timeout)),
    }
    if system:
        kwargs["system"] = system
    if tools:
        kwargs["tools"] = anthropic_tools(tools)
    if settings.temperature is not None:
        kwargs["temperature"] = min(settings.temperature, 1.0)  # Anthropic's range is 0-1
    text: list[str] = []
    blocks: dict[int, dict[str, Any]] = {}
    input_tokens = output_tokens = 0
    stop_reason = ""
    model = provider.model
    stream = _client(provider).messages.create(**kwargs)
    with stream:
        for event in stream:
            if time.monotonic() > deadline:
                raise _DeadlinePassed
            kind = event.type
            if kind == "message_start":
                model = event.message.model or model
                input_tokens = int(event.message.usage.input_tokens or 0)
            elif kind == "content_block_start":
                block = event.content_block
                if block.type == "tool_use":
                    blocks[event.index] = {"id": block.id, "name": block.name, "arguments": []}
            elif kind == "content_block_delta":
                delta = event.delta
                if delta.type == "text_delta" and delta.text:
                    text.append(delta.text)
                    emit(delta.text)
                elif delta.type == "input_json_delta" and event.index in blocks:
                    blocks[event.index]["arguments"].append(delta.partial_json)
            elif kind == "message_delta":
                stop_reason = event.delta.stop_reason or stop_reason
                if event.usage is not None and event.usage.output_tokens is not None:
                    output_tokens = int(event.usage.output_tokens)
    if not stop_reason:
        raise _StreamCutOff("the stream ended without a stop reason")
    tool_calls = [ToolCallRequest(id=b["id"], name=b["name"], arguments="".join(b["arguments"]) or "{}")
                  for _, b in sorted(blocks.items())]
    return RoundResult("".join(text), tool_calls, input_tokens, output_tokens, model, stop_reason)


# --- one call with retries -------------------------------------------------------------------------------


def _backoff_s(settings: LLMSettings, attempt: int, retry_after_s: float | None) -> float:
    if retry_after_s is not None:
        return min(retry_after_s, RETRY_AFTER_MAX_S)
    delay = min(settings.retry_base_delay_s * (2**attempt), RETRY_MAX_DELAY_S)
    return delay * random.uniform(0.5, 1.0)  # jitter: processes retrying together do not stampede


def provider_round(provider: ProviderConfig, settings: LLMSettings, messages: Sequence[dict[str, Any]],
                   tools: Sequence[dict[str, Any]] | None, on_delta: Callable[[str], None] | None,
                   *, deadline: float) -> RoundResult:
    """One model call (streamed) with retries. Raises ProviderFailure when this provider cannot answer."""
    streamed: list[str] = []

    def emit(text: str) -> None:
        streamed.append(text)
        if on_delta is not None:
            on_delta(text)

    attempt = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _failure(provider, _DeadlinePassed(), "")
        run = _anthropic_round if provider.kind == KIND_ANTHROPIC else _openai_round
        try:
            return run(provider, settings, messages, tools, emit, deadline, min(settings.timeout_s, remaining))
        except Exception as exc:  # noqa: BLE001 - classified below; anything unknown is re-raised
            failure = _failure(provider, exc, "".join(streamed))
        if failure.streamed_text or not failure.retryable or attempt >= settings.max_retries:
            logger.warning("llm: %s failed after %d attempt(s): %s", provider.describe(), attempt + 1, failure.reason)
            raise failure
        delay = _backoff_s(settings, attempt, failure.retry_after_s)
        if time.monotonic() + delay >= deadline:
            raise failure
        logger.info("llm: %s: %s; retry %d in %.2f s", provider.describe(), failure.reason, attempt + 1, delay)
        time.sleep(delay)
        attempt += 1
