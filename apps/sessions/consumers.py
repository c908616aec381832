"""Chat WebSockets: the upstream JSON protocol (`/ws`, `/ws/<bot>`, spec 6.2-6.4) and the HTMX chat's HTML
frames (`/ws/<bot>/ui`, protocol in apps.sessions.rendering).

A consumer never runs a turn itself. It queues the turn (in arrival order per session, then in its tenant's
line when the tenant's turns fill its share of the process: apps.sessions.slots) on the chat's thread pool;
the turn publishes its events to the session's channel-layer group and every connection of the session
renders them. So a turn finishes and its answer is saved even when its socket closed, and a client that
reconnects with the last index it saw (`last_index` in the URL, or the HTMX page's `resume` frame) gets what
it missed exactly once: it joins the group first, then replays from the database, and drops live events it
already replayed.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import select
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from autobahn.exception import Disconnected
from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import connections
from django_tenants.utils import schema_context
from redis.exceptions import RedisError

from apps.core.ratelimit import RateLimitUnavailable
from apps.core.wire import WireError, json_loads
from apps.sessions import events, rendering, services
from apps.sessions.limits import message_rate_checked
from apps.sessions.models import MessageType, Role
from apps.sessions.slots import CHAT_TURN_THREADS, turn_slots
from apps.sessions.turns import TurnError, session_chips

logger = logging.getLogger(__name__)

# A frame larger than this is refused before parsing (the message limit applies to its content after).
FRAME_MAX_BYTES = 64 * 1024
# Turns queued for one connection before it is told to slow down (a client flooding frames).
CONNECTION_QUEUE_MAX = 20
# Messages a reconnecting client gets back at most, the newest ones: a client further behind reloads the page
# (the page renders the latest history itself). Each replay renders them all, so it stays small.
REPLAY_MAX = 1000
# A page's `resume` frames are taken at most this often per connection (a reconnect sends one; a client
# repeating it would have the process render its history again and again).
RESUME_MIN_INTERVAL_S = 5.0
# Told to a client whose message could not be checked (the rate-limit store is down): it was not taken.
SERVICE_BUSY = "The service is busy; please send your message again."
# Close codes (4000-4999 are the application's): the upstream client does not retry on 4xxx.
CLOSE_UNKNOWN_BOT = 4404
CLOSE_FORBIDDEN = 4403
# The web chat page's socket token is older than CHAT_WS_TOKEN_MAX_AGE_S: the page reloads for a new one.
CLOSE_TOKEN_EXPIRED = 4401
CLOSE_TOO_MANY = 4429
# The tenant was suspended (or is being deleted) while the socket was open.
CLOSE_SUSPENDED = 4503

# Quick database work of connections (open a session, check a rate, replay) has its own small pool, so
# turns held by slow LLMs or tools never keep a socket from connecting or being answered.
CHAT_QUICK_THREADS = int(getattr(settings, "CHAT_QUICK_THREADS", 8))
# WebSocket connections one IP may open per minute (each creates a session and runs start.bas).
CONNECTS_PER_MINUTE = int(getattr(settings, "CHAT_CONNECTS_PER_MINUTE", 60))
# A pooled connection idle this long is checked before use (PostgreSQL restarted, a proxy dropped it).
CONNECTION_IDLE_CHECK_S = 30.0
# Live message indexes a connection remembers to drop duplicates (events may arrive out of order when turns
# of one session run in several processes).
SEEN_INDEXES_MAX = 1000
# How long a turn waits for its events to be published before releasing its lock anyway.
FLUSH_TIMEOUT_S = 5.0
# The typing indicator appears only for a turn still running after this long: a scripted answer arrives
# sooner, and showing then hiding the indicator for it would only flicker (and cost two frames per turn).
THINKING_DELAY_S = 0.25
# While a turn runs, a socket that got nothing for this long gets the indicator again (upstream's keep-alive,
# spec 6.3 step 13): proxies close WebSockets idle for a while, and a model may think for minutes.
THINKING_KEEPALIVE_S = float(getattr(settings, "CHAT_THINKING_KEEPALIVE_S", 2.0))
# A connection re-reads its bot's message rate limit (config.csv) after this long; between reads the check
# is Redis only. A redeployed limit therefore applies to open sockets within this time.
RATE_LIMIT_REFRESH_S = 60.0

_executor = ThreadPoolExecutor(max_workers=CHAT_TURN_THREADS, thread_name_prefix="chat-turn")
_quick_executor = ThreadPoolExecutor(max_workers=CHAT_QUICK_THREADS, thread_name_prefix="chat-quick")
# The last queued turn of each session in this process: the next one waits for it (order within a
# process); the advisory lock in apps.sessions.turns orders turns across processes.
_session_tails: dict[str, asyncio.Future] = {}
# Turns running detached from their socket are kept referenced until they end.
_running: set[asyncio.Task] = set()
# The channel layer's standing subscription of each event loop (see _layer_keep_listening).
_listening: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, str] = weakref.WeakKeyDictionary()


async def _layer_keep_listening(layer) -> None:
    """Give the process's channel layer a subscription that never ends, once per event loop.

    channels-redis's pub/sub layer reads Redis only while it has a subscription; with none (the process's last
    socket closed) its reader sleeps 0.1 s between looks. The first socket of a quiet process then got its
    turn's events up to 0.1 s late (a cached answer took 90 ms instead of 10). With this channel subscribed
    the reader always waits on Redis itself. Nothing is ever sent to it. One subscription covers the layer's
    one Redis host (settings.channel_layers_for configures exactly one)."""
    loop = asyncio.get_running_loop()
    if layer is None or loop in _listening or not hasattr(layer, "new_channel"):
        return
    _listening[loop] = ""  # claimed before the await: two sockets opening at once subscribe once
    try:
        _listening[loop] = await layer.new_channel(prefix="listening.")
    except Exception:
        del _listening[loop]  # the next socket tries again
        raise


def _connection_dropped(conn) -> bool:
    """Whether the server has closed this idle connection (PostgreSQL restarted, pg_terminate_backend, a proxy
    timed it out): with no query in flight its socket is readable only then (end of file, or the server's
    last message). One poll of the socket, no round trip; a rare false alarm only costs a reconnect."""
    try:
        poller = select.poll()
        poller.register(conn.connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except Exception:  # noqa: BLE001 - a connection whose socket cannot even be polled is not worth keeping
        return True


def _prepare_connection() -> None:
    conn = connections["default"]
    now = time.monotonic()
    if conn.connection is not None:
        idle = now - getattr(conn, "chat_last_used", now)
        if _connection_dropped(conn) or (
                (conn.errors_occurred or idle > CONNECTION_IDLE_CHECK_S) and not conn.is_usable()):
            conn.close()
        conn.errors_occurred = False
    conn.chat_last_used = now


async def chat_run(schema: str, fn, *args, quick: bool = False, **kwargs):
    """Run `fn` on a chat pool in `schema` (connections persist per pool thread: no connect per turn)."""

    def call():
        _prepare_connection()
        with schema_context(schema):
            return fn(*args, **kwargs)

    pool = _quick_executor if quick else _executor
    return await sync_to_async(call, thread_sensitive=False, executor=pool)()


class _LoopSink:
    """Hands events from the turn's thread to the event loop, which publishes them in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *queues: asyncio.Queue) -> None:
        self.loop, self.queues = loop, queues

    def emit(self, event: dict) -> None:
        for queue in self.queues:
            self.loop.call_soon_threadsafe(queue.put_nowait, event)

    def flush(self, timeout: float = FLUSH_TIMEOUT_S) -> None:
        """Wait (in the turn's thread) until everything emitted so far is published: the turn calls this
        before releasing the session lock, so the next turn (maybe in another process) publishes after it."""
        done = threading.Event()
        self.loop.call_soon_threadsafe(self.queues[0].put_nowait, done)
        done.wait(timeout)


def _is_thinking(event: object, on: bool) -> bool:
    return isinstance(event, dict) and event.get("kind") == "thinking" and bool(event.get("on")) is on


def _deltas_joined(batch: list[dict]) -> list[dict]:
    """The batch with each run of contiguous deltas of one stream joined into one delta."""
    out: list[dict] = []
    for event in batch:
        last = out[-1] if out else None
        follows = (last is not None and last.get("kind") == "delta" and last["stream"] == event.get("stream")
                   and int(last["offset"]) + len(last["text"]) == int(event.get("offset", -1)))
        if event.get("kind") == "delta" and follows:
            out[-1] = {**last, "text": last["text"] + event["text"]}
        else:
            out.append(event)
    return out


def _bot_output(event: dict) -> bool:
    kind = event.get("kind")
    return kind in ("delta", "stream_start") or (kind == "message" and event["message"].get("role") != Role.USER)


async def _publish(group: str, queue: asyncio.Queue) -> None:
    """Publish a turn's events to the session's group: everything queued so far goes in one message (a
    scripted turn's user echo, answers and chips travel together). The typing indicator goes out only when
    the turn outlives THINKING_DELAY_S without an answer showing, then again whenever the session's sockets
    had nothing for THINKING_KEEPALIVE_S while the turn runs (spec 6.3 step 13: proxies drop idle sockets
    during a slow model); its `off` always (with the turn's chips)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    loop = asyncio.get_running_loop()
    thinking_due: float | None = None  # the first `on`, waiting for its delay
    keepalive_due: float | None = None  # the next `on` if nothing else goes out before (the turn runs)
    ended = False
    while not ended:
        wake = min((t for t in (thinking_due, keepalive_due) if t is not None), default=None)
        try:
            if wake is None:
                items = [await queue.get()]
            else:
                items = [await asyncio.wait_for(queue.get(), max(0.0, wake - loop.time()))]
        except TimeoutError:
            items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        batch: list[dict] = []
        markers: list[threading.Event] = []
        for item in items:
            if item is None:
                ended = True
            elif isinstance(item, threading.Event):  # a flush marker: set once everything before it is out
                markers.append(item)
            elif _is_thinking(item, True):  # once, when the turn starts
                thinking_due = loop.time() + THINKING_DELAY_S
                keepalive_due = loop.time() + THINKING_KEEPALIVE_S
            elif _is_thinking(item, False):
                # Always sent (it rides with the turn's chips): a connection that showed the indicator on
                # its own (a replay while the turn ran) must hear that it ended. Clients ignore a stray one.
                batch.append(item)
                thinking_due = keepalive_due = None
            else:
                batch.append(item)
                if _bot_output(item):
                    thinking_due = None  # the answer is showing: no indicator needed for it
        now = loop.time()
        if (thinking_due is not None and now >= thinking_due) or (keepalive_due is not None and now >= keepalive_due
                                                                  and not batch):
            batch.insert(0, {"kind": "thinking", "on": True})  # still running
            thinking_due = None
        if batch:
            if keepalive_due is not None:
                keepalive_due = now + THINKING_KEEPALIVE_S
            try:
                await layer.group_send(group, {"type": "chat.events", "events": batch})
            except Exception:  # noqa: BLE001 - the turn goes on; its saved messages are replayed on reconnect
                logger.exception("chat: publishing %d event(s) to %s failed", len(batch), group)
        for marker in markers:
            marker.set()


async def turn_dispatch(schema: str, session_id: str, fn, *args, extra: asyncio.Queue | None = None,
                        **kwargs) -> asyncio.Future:
    """Queue a turn of the session behind the previous one of this process, detached from any socket, then
    behind its tenant's running turns when they fill the tenant's slots (apps.sessions.slots). Its events go to
    the session's group (and to `extra`, for a caller streaming them itself)."""
    tail_key = f"{schema}:{session_id}"
    previous = _session_tails.get(tail_key)
    loop = asyncio.get_running_loop()

    async def run() -> None:
        if previous is not None:
            with _suppress_all():
                await previous
        # One of the tenant's turn slots (apps.sessions.slots): a tenant at its cap waits here, in its line and
        # on no thread, so its slow turns never hold the whole pool.
        async with turn_slots.held(schema):
            queue: asyncio.Queue = asyncio.Queue()
            publisher = asyncio.create_task(_publish(events.session_group(schema, session_id), queue))
            sink = _LoopSink(loop, queue, *([extra] if extra is not None else []))
            try:
                await chat_run(schema, fn, *args, sink=sink, **kwargs)
            except TurnError as exc:
                sink.emit({"kind": "status", "text": str(exc)})
            except Exception:
                logger.exception("chat: turn failed in session %s", session_id)
                sink.emit({"kind": "status", "text": "Something went wrong; please try again."})
            finally:
                # Through the loop like every event: a status emitted just above (call_soon_threadsafe) must be
                # queued before the end marker, or the publisher stops first and drops it.
                loop.call_soon_threadsafe(queue.put_nowait, None)
                await publisher

    task = asyncio.ensure_future(run())
    _session_tails[tail_key] = task
    _running.add(task)

    def done(t: asyncio.Task) -> None:
        _running.discard(t)
        if _session_tails.get(tail_key) is t:
            del _session_tails[tail_key]

    task.add_done_callback(done)
    return task


class _suppress_all:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return True


def _open_session(bot_name: str, user_id: str | None, session_id: str | None, page_token_ok: bool) -> dict:
    from apps.sessions.limits import chat_rate_limit

    # A session the page's socket (re)creates, e.g. after retention purged it, stays bound to the page: its
    # id alone (in a proxy log next to the token) must not open it over REST or the upstream socket.
    session = services.session_bootstrap(bot_name=bot_name, user_id=user_id, session_id=session_id,
                                         page_token_ok=page_token_ok, page_bound=page_token_ok)
    # A session of a bot without start.bas is created started (services.session_bootstrap): no start turn.
    return {"session_id": str(session.id), "user_id": str(session.user_id), "bot_id": str(session.bot_id),
            "bot_name": session.bot.name, "started": bool((session.state or {}).get("started")),
            "rate_limit": chat_rate_limit(session.bot)}


def _replay(session_id: str, after: int) -> dict:
    session = services.session_get(session_id, page_token_ok=True)  # the connection was authorised
    return {"messages": services.history(session, after=after, limit=REPLAY_MAX, cap=REPLAY_MAX, newest=True),
            "stream": services.stream_in_progress(session), **session_chips(session.state or {})}


class ChatConsumerBase(AsyncWebsocketConsumer):
    """Connection handling shared by both wire formats; subclasses render events."""

    bot_name = ""
    info: dict
    page_token_ok = False
    group = ""

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its `aclose_old_connections()` before every handler: that is a hop to
        the process's one thread-sensitive thread for each frame, group event and close, so every socket of
        the process queued on one thread twice per chat turn. This consumer never uses that thread's database
        connection: its work runs on the chat pools (chat_run), whose threads check their own connections."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"no handler for message type {message.get('type')!r}")
        await handler(message)

    async def connect(self) -> None:
        self.tenant = self.scope["tenant"]
        self.schema = self.tenant.schema_name
        self.query = {k: v[0] for k, v in parse_qs(self.scope.get("query_string", b"").decode("latin-1")).items()}
        self.sent_upto = -1  # everything up to here was replayed
        self.seen: collections.deque[int] = collections.deque(maxlen=SEEN_INDEXES_MAX)  # live ones after it
        self.stream_sent: dict[str, int | None] = {}  # stream -> characters sent; None: a gap, wait for the end
        self.pending = 0
        route = self.scope.get("url_route", {}).get("kwargs", {})
        self.bot_name = (route.get("bot") or self.query.get("bot_name") or "default").lower()
        refusal = await self.authorize()
        if refusal is not None:
            await self._refuse(refusal)
            return
        if await chat_run(self.schema, _connect_rate_check, self.client_ip(), quick=True):
            await self._refuse(CLOSE_TOO_MANY)
            return
        try:
            self.info = await chat_run(self.schema, _open_session, self.bot_name, self.query.get("user_id"),
                                       self.query.get("session_id"), self.page_token_ok, quick=True)
        except services.UnknownBot:
            await self._refuse(CLOSE_UNKNOWN_BOT)
            return
        self.session_id = self.info["session_id"]
        self.rate_limit, self.rate_limit_read = self.info["rate_limit"], time.monotonic()
        self.group = events.session_group(self.schema, self.session_id)
        await _layer_keep_listening(self.channel_layer)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.on_open()
        if not self.info["started"]:
            await turn_dispatch(self.schema, self.session_id, services.turn_execute_start, self.session_id)

    async def _refuse(self, code: int) -> None:
        # Accepted, then closed with the code: a close before the handshake reaches the client as a bare
        # HTTP 403 (browsers report 1006), and it could not tell "unknown bot" from a network failure.
        await self.accept()
        await self.close(code=code)

    async def authorize(self) -> int | None:
        """None to go on, or the close code that refuses the connection."""
        return None

    async def on_open(self) -> None:
        pass

    closed = False

    async def disconnect(self, code: int) -> None:
        self.closed = True
        if self.group:
            try:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            except (RedisError, OSError) as exc:
                # Redis is down: its subscription went with the connection; nothing to undo, nothing to report.
                logger.info("chat: leaving the group of session %s while Redis is down: %s", self.session_id, exc)

    async def replay(self, after: int) -> None:
        data = await chat_run(self.schema, _replay, self.session_id, after, quick=True)
        for message in data["messages"]:
            await self.render_message(message, replayed=True)
            self.sent_upto = max(self.sent_upto, message["index"])
        self.seen = collections.deque((i for i in self.seen if i > self.sent_upto), maxlen=SEEN_INDEXES_MAX)
        stream = data["stream"]
        if stream and stream.get("text"):
            self.stream_sent[stream["stream"]] = len(stream["text"])
            await self.render_stream_resume(stream["stream"], stream["text"])
        if f"{self.schema}:{self.session_id}" in _session_tails:  # a turn of this session is running in this process
            await self.render_thinking(True)
        await self.render_suggestions(data["suggestions"], data["switchers"], data["active_switchers"])

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        """Sending to a client that has gone (it left during a replay or a turn) is not an error."""
        if self.closed:
            return
        try:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)
        except Disconnected:  # the protocol was closed under us (daphne's WebSocket layer)
            self.closed = True

    # -- input -----------------------------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raw = text_data if text_data is not None else (bytes_data or b"").decode("utf-8", "replace")
        if len(raw.encode("utf-8")) > FRAME_MAX_BYTES:
            await self.render_status(f"message too large (limit {FRAME_MAX_BYTES} bytes)")
            return
        try:
            frame = json_loads(raw)
        except WireError as exc:
            await self.render_status(f"malformed frame: {exc}")
            return
        except ValueError:
            await self.render_status("malformed frame: expected JSON")
            return
        if not isinstance(frame, dict):
            await self.render_status("malformed frame: expected a JSON object")
            return
        await self.handle_frame(frame)

    async def handle_frame(self, frame: dict) -> None:
        text = frame.get("content")
        if text is None:
            text = frame.get("text", "")
        try:
            message_type = int(frame.get("message_type", MessageType.USER))
        except (TypeError, ValueError):
            await self.render_status("message_type must be a number")
            return
        if not isinstance(text, str):
            await self.render_status("content must be text")
            return
        # The formats the user has switched on (spec 6.3): only those the session offers are kept.
        active = frame.get("active_switchers")
        await self.submit(text, message_type, active if isinstance(active, list) else None)

    async def submit(self, text: str, message_type: int, active_switchers: list | None = None) -> None:
        if time.monotonic() - self.rate_limit_read > RATE_LIMIT_REFRESH_S:
            self.rate_limit, self.rate_limit_read = None, time.monotonic()
        if self.rate_limit is not None and not message_rate_checked(ip=self.client_ip(), limit=self.rate_limit):
            # The bot switched its limit off and no platform limit counts this message: nothing to check.
            await self._queue_turn(text, message_type, active_switchers)
            return
        try:
            retry_after, self.rate_limit = await chat_run(self.schema, _rate_check, self.session_id, self.client_ip(),
                                                          self.bot_name, self.rate_limit, quick=True)
        except TenantSuspended:
            await self.render_status("This service is not available now.")
            await self.close(code=CLOSE_SUSPENDED)
            return
        except RateLimitUnavailable:  # Redis is down (logged in apps.sessions.limits): not "too many messages"
            await self.render_status(SERVICE_BUSY)
            return
        except Exception:  # the message is not lost silently: the client is told to send it again
            logger.exception("chat: rate check failed for session %s", self.session_id)
            await self.render_status(SERVICE_BUSY)
            return
        if retry_after:
            await self.render_status(f"Too many messages; try again in {int(retry_after) + 1} s.")
            return
        await self._queue_turn(text, message_type, active_switchers)

    async def _queue_turn(self, text: str, message_type: int, active_switchers: list | None) -> None:
        if self.pending >= CONNECTION_QUEUE_MAX:
            await self.render_status("Too many messages waiting; please wait for the answers.")
            return
        self.pending += 1
        task = await turn_dispatch(self.schema, self.session_id, _turn, self.session_id, text, message_type,
                                   active_switchers)
        task.add_done_callback(self._turn_done)

    def _turn_done(self, task: asyncio.Future) -> None:
        self.pending -= 1

    def client_ip(self) -> str:
        """The peer, or the client a trusted proxy names (TRUSTED_PROXY_IPS), as for HTTP requests."""
        from apps.compliance.services import request_client_ip

        client = self.scope.get("client") or ("", 0)
        forwarded = ""
        for name, value in self.scope.get("headers", []):
            if name == b"x-forwarded-for":
                forwarded = value.decode("latin-1")
        meta = {"REMOTE_ADDR": str(client[0] or ""), "HTTP_X_FORWARDED_FOR": forwarded}
        return request_client_ip(SimpleNamespace(META=meta)) or ""

    # -- output ----------------------------------------------------------------------------------
    async def chat_events(self, message: dict) -> None:
        """A turn's events published together (see _publish); pieces of one answer that arrived together go
        out as one frame (a replayed cached answer, a model faster than this socket)."""
        for event in _deltas_joined(message.get("events") or []):
            await self.render_event(event)

    async def chat_event(self, message: dict) -> None:
        """One event (GroupSink: turns run by workers)."""
        await self.render_event(message["event"])

    async def render_event(self, event: dict) -> None:
        kind = event.get("kind")
        if kind == "message":
            msg = event["message"]
            if msg["index"] <= self.sent_upto or msg["index"] in self.seen:
                if event.get("update"):  # a message this connection showed, changed (see events)
                    await self.render_message_update(msg)
                return
            self.seen.append(msg["index"])
            if event.get("update"):
                await self.render_message_update(msg, shown=False)
            else:
                await self.render_message(msg, replayed=False)
        elif kind == "delta":
            sid, offset, text = event["stream"], int(event["offset"]), event["text"]
            if sid not in self.stream_sent:
                if offset > 0:  # joined mid-answer without its beginning: show it whole when it ends
                    self.stream_sent[sid] = None
                    return
                await self.render_stream_start(sid)
                self.stream_sent[sid] = 0
            have = self.stream_sent[sid]
            if have is None or offset + len(text) <= have:
                return
            if offset > have:  # a piece was lost on the way: the final message carries the whole answer
                self.stream_sent[sid] = None
                return
            text = text[have - offset:]
            self.stream_sent[sid] = offset + len(event["text"])
            await self.render_delta(sid, text)
        elif kind == "thinking":
            await self.render_thinking(bool(event.get("on")))
        elif kind == "suggestions":
            await self.render_suggestions(event.get("suggestions") or [], event.get("switchers") or [],
                                          event.get("active_switchers") or [])
        elif kind == "status":
            await self.render_status(str(event.get("text") or ""))

    async def render_message(self, msg: dict, *, replayed: bool) -> None: ...
    async def render_message_update(self, msg: dict, *, shown: bool = True) -> None: ...
    async def render_stream_start(self, stream: str) -> None: ...
    async def render_stream_resume(self, stream: str, text: str) -> None: ...
    async def render_delta(self, stream: str, text: str) -> None: ...
    async def render_thinking(self, on: bool) -> None: ...
    async def render_suggestions(self, suggestions: list, switchers: list = (), active: list = ()) -> None: ...
    async def render_status(self, text: str) -> None: ...


def _turn(session_id: str, text: str, message_type: int, active_switchers: list | None, sink) -> None:
    services.turn_run_id(session_id, text=text, message_type=message_type, sink=sink,
                         active_switchers=active_switchers)  # the connection was authorised


def _connect_rate_check(ip: str) -> float | None:
    """The tenant's connects per address and the address's platform-wide bucket (apps.sessions.limits)."""
    from apps.sessions.limits import connect_rate_check

    return connect_rate_check(ip, per_minute=CONNECTS_PER_MINUTE)


class TenantSuspended(Exception):
    """The socket's tenant no longer serves (suspended, or being deleted)."""


def _rate_check(session_id: str, ip: str, bot_name: str, limit) -> tuple[float | None, object]:
    """(seconds to wait or None, the limit used): `limit` None re-reads it from the bot's config, and checks
    that the tenant still serves (every RATE_LIMIT_REFRESH_S: new sockets of a suspended tenant are refused
    at the door, open ones here)."""
    from apps.sessions.limits import chat_rate_limit, message_rate_check
    from apps.tenants.selectors import tenant_is_ready

    if limit is None:
        if not tenant_is_ready(connections["default"].schema_name):
            raise TenantSuspended
        limit = chat_rate_limit(services.bot_by_name(bot_name))
    return message_rate_check(session_id=session_id, ip=ip, limit=limit), limit


def upstream_suggestion(chip: dict) -> dict:
    """The BASIC host's chip as upstream's suggestion object (spec 6.4: `action` is a JSON string)."""
    kind, value, label = chip.get("kind"), str(chip.get("value") or ""), str(chip.get("label") or "")
    if kind == "tool":
        action = {"type": "invoke_tool", "tool": value, "params": None, "prompt_for_params": False}
    elif kind == "context":
        action = {"type": "select_context", "context": value}
        return {"text": label or value, "context": value, "action": json.dumps(action)}
    else:
        action = {"type": "send_message", "message": value}
    return {"text": label or value, "action": json.dumps(action)}


class UpstreamChatConsumer(ChatConsumerBase):
    """General Bots' web-client protocol: JSON frames, `message_type` 2 for everything the bot sends."""

    async def on_open(self) -> None:
        await self.send_json({"type": "connected", "session_id": self.session_id, "user_id": self.info["user_id"],
                              "bot_id": self.info["bot_id"], "message": "Connected to bot server", "tools": []})
        last = self.query.get("last_index")
        if last is not None:
            try:
                after = int(last)
            except ValueError:
                after = -1
            await self.replay(after)

    async def send_json(self, data: dict) -> None:
        await self.send(text_data=json.dumps(data, ensure_ascii=False))

    def frame(self, content: str, *, complete: bool, **extra) -> dict:
        data = {"bot_id": self.info["bot_id"], "user_id": self.info["user_id"], "session_id": self.session_id,
                "channel": "web", "content": content, "message_type": MessageType.BOT_RESPONSE,
                "is_complete": complete, "suggestions": [], "switchers": [], "context_length": 0,
                "context_max_length": 0}
        data.update(extra)
        return data

    async def render_message(self, msg: dict, *, replayed: bool) -> None:
        if msg["role"] == Role.USER:
            # Not part of upstream's protocol (its client draws the user's bubble itself, and ignores
            # message_type 1): lets our clients see messages sent from another tab, and replays.
            await self.send_json({"session_id": self.session_id, "content": msg["content"],
                                  "message_type": msg["message_type"], "role": "user",
                                  "message_index": msg["index"], "is_complete": True})
            return
        stream = msg.get("stream")
        content = msg["content"]
        if stream and self.stream_sent.get(stream) is not None:
            # This connection streamed the answer chunk by chunk: upstream ends a stream with an empty final
            # frame (the client keeps what it assembled). The full text rides in `full_content` for others.
            self.stream_sent.pop(stream, None)
            await self.send_json(self.frame("", complete=True, stream_token=stream, message_index=msg["index"],
                                            full_content=content))
            return
        await self.send_json(self.frame(content, complete=True, message_index=msg["index"]))

    async def render_message_update(self, msg: dict, *, shown: bool = True) -> None:
        # Upstream frames carry no meta: only the stream the update closes (whitespace streamed after the last
        # tool) is ended, with an empty final frame, its text not shown again; the message itself if not shown.
        stream = msg.get("stream")
        if stream and self.stream_sent.pop(stream, None) is not None:
            await self.send_json(self.frame("", complete=True, stream_token=stream))
        if not shown:
            await self.render_message({**msg, "stream": None}, replayed=False)

    async def render_stream_start(self, stream: str) -> None:
        pass  # upstream starts a bubble on the first chunk

    async def render_stream_resume(self, stream: str, text: str) -> None:
        await self.render_delta(stream, text)

    async def render_delta(self, stream: str, text: str) -> None:
        await self.send_json(self.frame(text, complete=False, stream_token=stream))

    async def render_thinking(self, on: bool) -> None:
        if on:
            await self.send_json(self.frame("", complete=False, thinking=True))

    async def render_suggestions(self, suggestions: list, switchers: list = (), active: list = ()) -> None:
        if suggestions or switchers:  # spec 6.3 step 8: one frame with both, while either exists
            await self.send_json(self.frame("", complete=True,
                                            suggestions=[upstream_suggestion(s) for s in suggestions],
                                            switchers=[{"id": s["id"], "label": s["label"]} for s in switchers]))

    async def render_status(self, text: str) -> None:
        if text:
            await self.send_json({"type": "error", "message": text, "session_id": getattr(self, "session_id", "")})


class HtmxChatConsumer(ChatConsumerBase):
    """The HTMX web chat (`/ws/<bot>/ui`): HTML fragments swapped out of band by htmx-ext-ws."""

    page_token_ok = True  # authorize() checked the page's token: its page-bound session may be opened

    async def authorize(self) -> int | None:
        from apps.sessions.views_web import TOKEN_EXPIRED, TOKEN_OK, chat_ws_token_state

        state = chat_ws_token_state(tenant_schema=self.schema, bot_name=self.bot_name,
                                    session_id=self.query.get("session_id", ""), token=self.query.get("token", ""))
        if state == TOKEN_OK:
            return None
        return CLOSE_TOKEN_EXPIRED if state == TOKEN_EXPIRED else CLOSE_FORBIDDEN

    async def handle_frame(self, frame: dict) -> None:
        if frame.get("type") == "resume":
            now = time.monotonic()
            if now - getattr(self, "last_resume", -RESUME_MIN_INTERVAL_S) < RESUME_MIN_INTERVAL_S:
                return  # already replayed just now: repeats are ignored
            self.last_resume = now
            try:
                after = int(frame.get("last_index", -1))
            except (TypeError, ValueError):
                after = -1
            self.stream_sent.clear()  # the page drops its streaming bubbles on reconnect
            await self.replay(after)
            return
        await super().handle_frame(frame)

    async def render_message(self, msg: dict, *, replayed: bool) -> None:
        row = SimpleNamespace(index=msg["index"], role=msg["role"], content=msg["content"], meta=msg.get("meta"),
                              created_at=None)
        data = rendering.message_dict(row)
        if data is None:
            return
        data["created_at"] = msg.get("created_at") or ""
        if msg.get("stream"):
            data["stream_id"] = msg["stream"]
            self.stream_sent.pop(msg["stream"], None)
        await self.send(text_data=rendering.message_fragment(data))

    async def render_message_update(self, msg: dict, *, shown: bool = True) -> None:
        # The page replaces the message of that index (and drops the stream bubble it names: chat.js).
        await self.render_message(msg, replayed=False)

    async def render_stream_start(self, stream: str) -> None:
        await self.send(text_data=rendering.stream_start_fragment(stream))

    async def render_stream_resume(self, stream: str, text: str) -> None:
        await self.send(text_data=rendering.stream_start_fragment(stream, text=text))

    async def render_delta(self, stream: str, text: str) -> None:
        await self.send(text_data=rendering.stream_delta_fragment(stream, text))

    typing_shown = False
    switchers_shown: list | None = None

    async def render_thinking(self, on: bool) -> None:
        if on or self.typing_shown:  # an `off` for an indicator this page never showed costs a frame for nothing
            self.typing_shown = on
            await self.send(text_data=rendering.typing_fragment(on))

    async def render_suggestions(self, suggestions: list, switchers: list = (), active: list = ()) -> None:
        html = rendering.suggestions_fragment(suggestions)
        if list(switchers) != self.switchers_shown:
            # Only when the offered formats change: the user's ticks on this page stay as they are (they may
            # have changed them while the turn ran, or another tab sent a message with its own).
            self.switchers_shown = list(switchers)
            html += rendering.switchers_fragment(switchers, active)
        await self.send(text_data=html)

    async def render_status(self, text: str) -> None:
        await self.send(text_data=rendering.status_fragment(text))
