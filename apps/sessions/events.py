"""What a turn tells the clients watching a session, and how it reaches them.

A turn never writes to a socket. It persists messages and emits events to a `Sink`; the WebSocket side
publishes them to the session's channel-layer group, so every connection of the session (another tab, a
client that reconnected, a socket on another web process) gets them, and a turn that outlives its socket
still delivers. Events are plain dicts:

* `{"kind": "message", "message": {...}}`: a persisted message (user echo, TALK, final answer); carries
  its `index`, so a connection that replayed history drops what it already sent. With `"update": true` it
  is a message already sent, changed (the last part of an answer taking the answer's tool calls and
  citations when nothing followed its last tool): clients replace the message of that index, and close the
  bubble of its `stream` if it has one (the last round streamed only whitespace).
* `{"kind": "thinking", "on": bool}`: a turn started / ended (typing indicator).
* `{"kind": "stream_start", "stream": id}`, `{"kind": "delta", "stream": id, "offset": n, "text": t}`:
  an answer being streamed; `offset` is where `text` starts in the answer, so a client that resumed from the
  buffer drops the overlap. The final text comes as a `message` event carrying `stream` (it replaces the
  bubble).
* `{"kind": "suggestions", "suggestions": [...]}`: the session's suggestion chips after a turn.
* `{"kind": "status", "text": str}`: a notice (rate limited, script error...).

The text streamed so far is also kept in the cache (`stream_buffer_*`), so a client reconnecting mid-answer
gets it at once instead of waiting for the end.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Protocol

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.cache import cache
from django.db import connection
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# What Redis being down or restarting raises (the channel layer's client, the resume buffer's): publishing
# and buffering are best-effort, a turn's answer is saved whatever happens to them.
REDIS_ERRORS = (RedisError, OSError)

# A streamed answer's buffer outlives its turn by this much: a client reconnecting right after the end
# finds the final message in the database instead; the buffer only bridges the streaming window.
STREAM_BUFFER_TTL_S = 300


class Sink(Protocol):
    def emit(self, event: dict) -> None: ...


class NullSink:
    def emit(self, event: dict) -> None:
        pass


class ListSink:
    """Collects events (REST calls answer with them; tests read them)."""

    def __init__(self) -> None:
        self.events: list[dict] = []

    def emit(self, event: dict) -> None:
        self.events.append(event)


class GroupSink:
    """Publishes to the session's group from synchronous code outside the web process (REST views, Celery
    jobs). Best-effort: with Redis down an event is lost (logged), never the turn; its messages are saved and
    a client reconnecting replays them from the database."""

    def __init__(self, schema: str, session_id: str) -> None:
        self.group = session_group(schema, session_id)
        self.layer = get_channel_layer()

    def emit(self, event: dict) -> None:
        if self.layer is None:
            return
        try:
            async_to_sync(self.layer.group_send)(self.group, {"type": "chat.event", "event": event})
        except REDIS_ERRORS as exc:
            logger.warning("chat: could not publish a %s event to %s: %s", event.get("kind"), self.group, exc)


class TeeSink:
    def __init__(self, *sinks: Sink) -> None:
        self.sinks = sinks

    def emit(self, event: dict) -> None:
        for sink in self.sinks:
            sink.emit(event)


def session_group(schema: str, session_id: str) -> str:
    """The channel-layer group of one session of one tenant (names are capped at 100 characters)."""
    tenant_tag = hashlib.sha256(schema.encode()).hexdigest()[:16]
    return f"chat.{tenant_tag}.{str(session_id).replace('-', '')}"


def _buffer_key(session_id: str) -> str:
    # The cache's key function prefixes the tenant schema: another tenant can never read this buffer.
    return f"chat:stream:{session_id}"


def _redis():
    """The raw Redis client behind the cache (APPEND keeps a long answer's buffer linear), or None."""
    try:
        from django_redis import get_redis_connection

        return get_redis_connection("default")
    except (ImportError, NotImplementedError):
        return None


def _raw_keys(session_id: str) -> tuple[str, str]:
    base = cache.make_key(_buffer_key(session_id))
    return base + ":id", base + ":text"


def stream_buffer_start(session_id: str, stream_id: str) -> None:
    client = _redis()
    if client is None:
        cache.set(_buffer_key(session_id), {"stream": stream_id, "text": ""}, STREAM_BUFFER_TTL_S)
        return
    id_key, text_key = _raw_keys(session_id)
    client.pipeline().set(id_key, stream_id, ex=STREAM_BUFFER_TTL_S).delete(text_key).execute()


def stream_buffer_append(session_id: str, stream_id: str, chunk: str) -> None:
    client = _redis()
    if client is None:
        current = cache.get(_buffer_key(session_id)) or {"stream": stream_id, "text": ""}
        cache.set(_buffer_key(session_id), {"stream": stream_id, "text": current["text"] + chunk},
                  STREAM_BUFFER_TTL_S)
        return
    id_key, text_key = _raw_keys(session_id)
    # Both keys live on while the answer streams: an answer longer than the TTL keeps its resume buffer.
    (client.pipeline().append(text_key, chunk.encode("utf-8")).expire(text_key, STREAM_BUFFER_TTL_S)
     .expire(id_key, STREAM_BUFFER_TTL_S).execute())


def stream_buffer_clear(session_id: str) -> None:
    client = _redis()
    if client is None:
        cache.delete(_buffer_key(session_id))
        return
    client.delete(*_raw_keys(session_id))


def stream_buffer_clear_quietly(session_id: str) -> bool:
    """stream_buffer_clear, logging instead of raising when Redis fails (the buffer then expires with its
    TTL); False when it failed."""
    try:
        stream_buffer_clear(session_id)
    except REDIS_ERRORS as exc:
        logger.warning("chat: could not clear the resume buffer of session %s: %s", session_id, exc)
        return False
    return True


def stream_buffer_get(session_id: str) -> dict | None:
    """`{"stream", "text"}` of the answer streaming in this session right now, if any."""
    client = _redis()
    if client is None:
        value = cache.get(_buffer_key(session_id))
        return value if isinstance(value, dict) else None
    stream_id, text = client.mget(_raw_keys(session_id))
    if not stream_id:
        return None
    return {"stream": stream_id.decode(), "text": (text or b"").decode("utf-8", "replace")}


def current_schema() -> str:
    return connection.schema_name
