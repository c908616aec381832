"""A small LLM server of our own on loopback: OpenAI's chat API and Anthropic's messages API, scriptable.

The real `openai` and `anthropic` SDKs talk to it over a socket, so tests and benchmarks exercise the
real clients (streaming, retries, timeouts, error mapping) instead of a mock.

Endpoints
---------
* `POST /v1/chat/completions` (OpenAI): non-streaming JSON, or SSE when `"stream": true` -- one
  `data: {chunk}` line per piece, a last chunk with `finish_reason`, a usage-only chunk (`choices: []`)
  when `stream_options.include_usage` is true, then `data: [DONE]`. Tool calls stream as OpenAI does:
  the first delta of a call carries `index`, `id`, `type` and `function.name`, later deltas carry pieces
  of `function.arguments` (split every `chunk_chars` characters).
* `POST /v1/messages` (Anthropic): non-streaming JSON, or the event stream `message_start`,
  `content_block_start` / `content_block_delta` (`text_delta`, `input_json_delta`) / `content_block_stop`,
  `message_delta` (stop reason, output tokens), `message_stop`. Tool calls become `tool_use` blocks.
* `GET /v1/models` lists `models`; `POST /v1/embeddings` answers deterministic vectors
  (`tests.support.openai_fake.fake_vector`).

Responses stream with chunked transfer encoding and `Connection: close`, so a scripted drop (the socket
closed before the terminating chunk) is seen by the client as a broken stream, not as a short answer.

Scripting
---------
    with FakeLLMServer() as llm:                       # or: llm = FakeLLMServer().start(); ...; llm.stop()
        llm.script(Reply(text="Hello there"))          # the next request gets this reply
        llm.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Lisbon"})]),
                   Reply(status=500), Reply(text="It is sunny", chunk_delay_s=0.01))
        client = openai.OpenAI(base_url=llm.base_url, api_key="k")   # http://127.0.0.1:<port>/v1
        anthropic.Anthropic(base_url=llm.url, api_key="k")           # http://127.0.0.1:<port>
        llm.requests[-1].body["messages"]             # what the client sent (JSON), .headers, .path

`script(*replies)` appends to one FIFO queue shared by both APIs; each chat or messages request takes the
next reply. When the queue is empty, `default` answers: a callable `(RecordedRequest) -> Reply | str`
(default: `echo_reply`, which answers `echo: <last user text>`).

`Reply` fields: `text`; `tool_calls` (list of `ToolCall(name, arguments, id=None)`; `arguments` a dict is
JSON-encoded, a str is sent verbatim -- use a str to send invalid JSON); `status` (an HTTP error status:
the reply is that error in the API's error shape, `error_message` its text, `headers` e.g.
`{"Retry-After": "0"}`); `delay_s` (sleep before the first byte: status line included, so a client's read
timeout fires); `chunk_delay_s` (sleep between streamed chunks); `chunk_chars` (characters per text or
arguments piece); `drop_after_chunks` (close the connection after that many content chunks, without
finishing the stream); `usage` (`(prompt_tokens, completion_tokens)`; default: characters / 4);
`model` (default: the requested model); `reasoning` (an OpenAI `reasoning_content` delta sent first);
`raw_line` (OpenAI stream: sent as `data: <raw_line>` after the text, e.g. a malformed JSON chunk).

Every request is recorded in `requests` (method, path, headers, JSON body); `chat_requests()` keeps the
chat and messages calls only. `api_key`, when set, makes other keys get 401. `served` counts the replies
given. All of it is thread-safe; the server is a `ThreadingHTTPServer` on a free port of 127.0.0.1.

Pytest fixtures (import them into a conftest: `from tests.support.llm_fake import llm_server, llm_platform`):

* `llm_server` -- a started `FakeLLMServer`, stopped after the test.
* `llm_platform` -- the same, made the platform default provider (`LLM_URL` = its base URL, `LLM_MODEL` =
  `fake-model`, `LLM_API_KEY` = `sk-fake-platform`, `LLM_PROVIDER` = `openai`; `LLM_ALLOW_PRIVATE_HOSTS` on),
  so every bot without its own `llm-url` talks to it; it also empties the LLM layer's Redis state (`llm:*`
  keys: cached answers, breakers, quota counters), because the answer cache is on by default and a question
  asked in an earlier test would otherwise be answered from the cache. Bots can instead point at the fake
  through config.csv: `llm-url,<llm_server.base_url>` and `llm-model,fake-model` (`llm-cache,false` keeps the
  cache out; without `llm_platform`, set `settings.LLM_ALLOW_PRIVATE_HOSTS = True` for the 127.0.0.1 URL).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from tests.support.loopback_http import LoopbackServer
from tests.support.openai_fake import fake_vector

CHAT_PATH = "/v1/chat/completions"
MESSAGES_PATH = "/v1/messages"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/v1/embeddings"
EMBEDDING_DIMENSIONS = 8


@dataclass
class ToolCall:
    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None

    def arguments_json(self) -> str:
        return self.arguments if isinstance(self.arguments, str) else json.dumps(self.arguments)


@dataclass
class Reply:
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    status: int | None = None
    error_message: str = "scripted failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    chunk_chars: int = 8
    drop_after_chunks: int | None = None
    usage: tuple[int, int] | None = None
    model: str | None = None
    reasoning: str = ""
    raw_line: str | None = None


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.body.get("messages") or []):
            if message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""


def _content_text(content: Any) -> str:
    """Text of an OpenAI or Anthropic message content (a string or a list of blocks)."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif isinstance(block, dict) and block.get("type") == "tool_result":
            parts.append(_content_text(block.get("content")))
    return "".join(parts)


def echo_reply(request: RecordedRequest) -> Reply:
    return Reply(text=f"echo: {request.last_user_text}")


def _pieces(text: str, size: int) -> list[str]:
    size = max(1, size)
    return [text[i : i + size] for i in range(0, len(text), size)] if text else []


class _Dropped(Exception):
    """The scripted reply closes the connection here."""


class FakeLLMServer:
    def __init__(
        self,
        default: Callable[[RecordedRequest], Reply | str] | None = None,
        *,
        api_key: str | None = None,
        models: list[str] | None = None,
    ) -> None:
        self.default = default or echo_reply
        self.api_key = api_key
        self.models = models or ["fake-model"]
        self.requests: list[RecordedRequest] = []
        self.served = 0
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._http = LoopbackServer(self._handle, methods=("GET", "POST"), name="llm-fake")

    # --- control ---------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server root, `http://127.0.0.1:<port>` (Anthropic's base URL)."""
        return self._http.url

    @property
    def base_url(self) -> str:
        """`<url>/v1`: the OpenAI client's base URL."""
        return f"{self.url}/v1"

    @property
    def chat_url(self) -> str:
        return f"{self.url}{CHAT_PATH}"

    def script(self, *replies: Reply | str) -> FakeLLMServer:
        with self._lock:
            self._queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)
        return self

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def chat_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path in (CHAT_PATH, MESSAGES_PATH)]

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self.requests.clear()
            self.served = 0

    def start(self) -> FakeLLMServer:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling ------------------------------------------------------------------------------

    def _next_reply(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.served += 1
            if self._queue:
                return self._queue.popleft()
        reply = self.default(request)
        return Reply(text=reply) if isinstance(reply, str) else reply

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path.split("?", 1)[0].rstrip("/")
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {"_invalid_json": raw.decode(errors="replace")}
        request = RecordedRequest(method, path, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(request)
        anthropic = path == MESSAGES_PATH
        if self.api_key is not None:
            given = handler.headers.get("x-api-key") if anthropic else None
            given = given or (handler.headers.get("Authorization") or "").removeprefix("Bearer ")
            if given != self.api_key:
                return _error(handler, 401, "invalid api key", anthropic=anthropic)
        if method == "GET" and path == MODELS_PATH:
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
            return _json(handler, 200, {"object": "list", "data": data})
        if method == "POST" and path == EMBEDDINGS_PATH:
            return self._embeddings(handler, body)
        if method != "POST" or path not in (CHAT_PATH, MESSAGES_PATH):
            return _error(handler, 404, f"no route {method} {path}", anthropic=anthropic)
        reply = self._next_reply(request)
        if reply.delay_s:
            time.sleep(reply.delay_s)
        if reply.status is not None:
            return _error(handler, reply.status, reply.error_message, anthropic=anthropic, headers=reply.headers)
        try:
            if anthropic:
                self._anthropic(handler, request, reply)
            else:
                self._openai(handler, request, reply)
        except _Dropped:
            _drop(handler)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away (its timeout): nothing more to send

    def _embeddings(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else list(texts or [])
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t, EMBEDDING_DIMENSIONS)}
                for i, t in enumerate(texts)]
        tokens = sum(len(t.split()) for t in texts)
        _json(handler, 200, {"object": "list", "data": data, "model": body.get("model", ""),
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    @staticmethod
    def _usage(request: RecordedRequest, reply: Reply) -> tuple[int, int]:
        if reply.usage is not None:
            return reply.usage
        prompt = max(1, len(json.dumps(request.body.get("messages") or [])) // 4)
        completion = len(reply.text) // 4 + sum(len(c.arguments_json()) // 4 + 1 for c in reply.tool_calls)
        return prompt, max(1, completion)

    # --- OpenAI ----------------------------------------------------------------------------------------

    def _openai(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, reply: Reply) -> None:
        model = reply.model or request.body.get("model") or self.models[0]
        prompt_tokens, completion_tokens = self._usage(request, reply)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        calls = [(c.id or f"call_{uuid.uuid4().hex[:12]}", c) for c in reply.tool_calls]
        finish = "tool_calls" if calls else "stop"
        created = int(time.time())
        completion_id = f"chatcmpl-{uuid.uuid4().hex[:16]}"
        if not request.body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": cid, "type": "function", "function": {"name": c.name, "arguments": c.arguments_json()}}
                    for cid, c in calls
                ]
            return _json(handler, 200, {
                "id": completion_id, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage,
            })

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}

        stream = _SSE(handler, reply)
        stream.send(chunk({"role": "assistant", "content": ""}), content=False)
        if reply.reasoning:
            stream.send(chunk({"reasoning_content": reply.reasoning}))
        for piece in _pieces(reply.text, reply.chunk_chars):
            stream.send(chunk({"content": piece}))
        if reply.raw_line is not None:
            stream.raw(reply.raw_line)
        for index, (cid, call) in enumerate(calls):
            stream.send(chunk({"tool_calls": [{"index": index, "id": cid, "type": "function",
                                               "function": {"name": call.name, "arguments": ""}}]}))
            for piece in _pieces(call.arguments_json(), reply.chunk_chars):
                stream.send(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        stream.send(chunk({}, finish), content=False)
        if (request.body.get("stream_options") or {}).get("include_usage"):
            stream.send({"id": completion_id, "object": "chat.completion.chunk", "created": created,
                         "model": model, "choices": [], "usage": usage}, content=False)
        stream.raw("[DONE]")
        stream.end()

    # --- Anthropic -------------------------------------------------------------------------------------

    def _anthropic(self, handler: BaseHTTPRequestHandler, request: RecordedRequest, reply: Reply) -> None:
        model = reply.model or request.body.get("model") or self.models[0]
        input_tokens, output_tokens = self._usage(request, reply)
        calls = [(c.id or f"toolu_{uuid.uuid4().hex[:16]}", c) for c in reply.tool_calls]
        stop_reason = "tool_use" if calls else "end_turn"
        message_id = f"msg_{uuid.uuid4().hex[:16]}"
        if not request.body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": reply.text}] if reply.text else []
            content += [{"type": "tool_use", "id": cid, "name": c.name, "input": json.loads(c.arguments_json())}
                        for cid, c in calls]
            return _json(handler, 200, {
                "id": message_id, "type": "message", "role": "assistant", "model": model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            })
        stream = _SSE(handler, reply)
        stream.send({"type": "message_start", "message": {
            "id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        }}, content=False, event="message_start")
        index = 0
        if reply.text:
            stream.send({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                        content=False, event="content_block_start")
            for piece in _pieces(reply.text, reply.chunk_chars):
                stream.send({"type": "content_block_delta", "index": index,
                             "delta": {"type": "text_delta", "text": piece}}, event="content_block_delta")
            stream.send({"type": "content_block_stop", "index": index}, content=False, event="content_block_stop")
            index += 1
        for cid, call in calls:
            stream.send({"type": "content_block_start", "index": index,
                         "content_block": {"type": "tool_use", "id": cid, "name": call.name, "input": {}}},
                        content=False, event="content_block_start")
            for piece in _pieces(call.arguments_json(), reply.chunk_chars):
                stream.send({"type": "content_block_delta", "index": index,
                             "delta": {"type": "input_json_delta", "partial_json": piece}}, event="content_block_delta")
            stream.send({"type": "content_block_stop", "index": index}, content=False, event="content_block_stop")
            index += 1
        stream.send({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                     "usage": {"output_tokens": output_tokens}}, content=False, event="message_delta")
        stream.send({"type": "message_stop"}, content=False, event="message_stop")
        stream.end()


class _SSE:
    """A `text/event-stream` body in chunked transfer encoding, honouring the reply's pacing and drop."""

    def __init__(self, handler: BaseHTTPRequestHandler, reply: Reply) -> None:
        self.handler, self.reply, self.content_chunks = handler, reply, 0
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Cache-Control", "no-cache")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.send_header("Connection", "close")
        handler.end_headers()

    def _write(self, data: bytes) -> None:
        self.handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.handler.wfile.flush()

    def send(self, payload: dict[str, Any], *, content: bool = True, event: str | None = None) -> None:
        if content:
            if self.reply.drop_after_chunks is not None and self.content_chunks >= self.reply.drop_after_chunks:
                raise _Dropped
            if self.content_chunks and self.reply.chunk_delay_s:
                time.sleep(self.reply.chunk_delay_s)
            self.content_chunks += 1
        prefix = f"event: {event}\n" if event else ""
        self._write(f"{prefix}data: {json.dumps(payload)}\n\n".encode())

    def raw(self, data: str) -> None:
        self._write(f"data: {data}\n\n".encode())

    def end(self) -> None:
        self.handler.wfile.write(b"0\r\n\r\n")
        self.handler.wfile.flush()
        self.handler.close_connection = True


def _json(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any],
          headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    handler.send_header("Connection", "close")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)
    handler.close_connection = True


def _error(handler: BaseHTTPRequestHandler, status: int, message: str, *, anthropic: bool,
           headers: dict[str, str] | None = None) -> None:
    if anthropic:
        kind = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error",
                529: "overloaded_error"}.get(status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": message}}
    else:
        body = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                          "code": None}}
    _json(handler, status, body, headers)


def _drop(handler: BaseHTTPRequestHandler) -> None:
    """Close the socket at once, mid-body: the client sees an incomplete chunked stream."""
    handler.close_connection = True
    try:
        handler.wfile.flush()
        handler.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# --- pytest fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def llm_server():
    with FakeLLMServer() as fake:
        yield fake


def llm_state_clear() -> int:
    """Delete the LLM layer's Redis keys (`llm:*`) of the test Redis; returns how many went."""
    from apps.llm.store import redis_client

    client = redis_client()
    if client is None:
        return 0
    keys = list(client.scan_iter(match="llm:*", count=1000))
    return client.delete(*keys) if keys else 0


@pytest.fixture
def llm_platform(settings, llm_server):
    settings.LLM_URL, settings.LLM_MODEL = llm_server.base_url, "fake-model"
    settings.LLM_API_KEY, settings.LLM_PROVIDER = "sk-fake-platform", "openai"
    settings.LLM_ALLOW_PRIVATE_HOSTS = True  # bots may point at the fake (127.0.0.1) with llm-url
    llm_state_clear()
    yield llm_server
    llm_state_clear()
