"""Parts of the chat consumers below the socket: how a turn's events are published to the session's group
(the real channel layer on the test run's Redis) and how a published batch becomes frames."""

from __future__ import annotations

import asyncio
import collections
import threading
import time

import pytest

from apps.sessions import rendering
from apps.sessions.consumers import HtmxChatConsumer, UpstreamChatConsumer, _deltas_joined, _publish
from apps.sessions.models import MessageType
from tests.sessions.support import socket_closed


def _delta(stream: str, offset: int, text: str) -> dict:
    return {"kind": "delta", "stream": stream, "offset": offset, "text": text}


def test_contiguous_pieces_of_one_answer_in_a_batch_become_one_delta():
    batch = [{"kind": "stream_start", "stream": "s1"}, _delta("s1", 0, "We open "), _delta("s1", 8, "at nine"),
             _delta("s1", 15, "."), {"kind": "message", "message": {"index": 3}}]
    assert _deltas_joined(batch) == [{"kind": "stream_start", "stream": "s1"}, _delta("s1", 0, "We open at nine."),
                                     {"kind": "message", "message": {"index": 3}}]


def test_pieces_of_other_streams_gaps_and_other_events_are_not_joined():
    batch = [_delta("s1", 0, "ab"), _delta("s2", 2, "cd"),  # another stream
             _delta("s2", 10, "ef"),  # a gap: the client must see it to wait for the final message
             {"kind": "thinking", "on": True}, _delta("s2", 12, "gh")]  # not adjacent
    assert _deltas_joined(batch) == batch
    assert _deltas_joined([]) == []


async def _published(events: list) -> list[dict]:
    """What a connection in the session's group receives when a turn emits `events` (then ends)."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    group = "chat.test.publish"
    channel = await layer.new_channel()
    await layer.group_add(group, channel)
    try:
        queue: asyncio.Queue = asyncio.Queue()
        for event in [*events, None]:
            queue.put_nowait(event)
        await _publish(group, queue)
        received: list[dict] = []
        while True:
            try:
                message = await asyncio.wait_for(layer.receive(channel), 1.0)
            except TimeoutError:
                return received
            received += message["events"]
    finally:
        await layer.group_discard(group, channel)


@pytest.mark.asyncio
async def test_a_fast_turn_goes_out_in_one_message_with_the_indicators_end_but_not_its_start():
    bot = {"kind": "message", "message": {"index": 4, "role": 2, "content": "hi"}}
    chips = {"kind": "suggestions", "suggestions": [], "switchers": [], "active_switchers": []}
    received = await _published([{"kind": "thinking", "on": True}, bot, chips, {"kind": "thinking", "on": False}])
    # The `off` always goes: a page that showed the indicator itself (it reconnected while the turn ran) must
    # hear that the turn ended.
    assert received == [bot, chips, {"kind": "thinking", "on": False}]


class _Page(HtmxChatConsumer):
    """The HTMX consumer's rendering, with its frames collected instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[str] = []

    async def send(self, text_data=None, bytes_data=None, close=False) -> None:
        self.frames.append(text_data)


@pytest.mark.asyncio
async def test_the_page_hides_only_an_indicator_it_showed_and_keeps_the_users_format_ticks():
    page = _Page()
    await page.render_thinking(False)
    assert page.frames == []  # never shown: nothing to hide
    await page.render_thinking(True)
    await page.render_thinking(False)
    assert page.frames == [rendering.typing_fragment(True), rendering.typing_fragment(False)]

    offered = [{"id": "list", "label": "List"}]
    await page.render_suggestions([], offered, [])
    await page.render_suggestions([], offered, [])  # after the next turn: same formats offered
    await page.render_suggestions([], [*offered, {"id": "tables", "label": "Tables"}], ["list"])
    with_toggles = ['id="switchers"' in frame for frame in page.frames[2:]]
    assert with_toggles == [True, False, True]  # the page's own ticks are replaced only when the offer changes


@pytest.mark.asyncio
async def test_a_bot_with_its_limits_off_still_counts_each_message_in_the_platform_wide_address_bucket(settings):
    """A bot's `rate-limit-enabled,false` skips its own buckets, never the platform's per-address one."""
    import uuid

    from apps.core.ratelimit import RateLimit

    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 2
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"  # a fresh bucket for this run

    class Probe(UpstreamChatConsumer):
        """The consumer's input path; what it would queue or tell the client is recorded."""

        def __init__(self) -> None:
            super().__init__()
            self.scope = {"client": (address, 5000), "headers": []}
            # No database work on this path (the limit is given): a schema name is all the turn pool needs.
            self.schema, self.session_id, self.bot_name = "tenant_a", str(uuid.uuid4()), "open"
            self.rate_limit = RateLimit(endpoint="chat", enabled=False, limit=30, window_s=60, burst=10, by="session")
            self.rate_limit_read = time.monotonic()
            self.queued: list[str] = []
            self.notices: list[str] = []

        async def _queue_turn(self, text, message_type, active_switchers) -> None:
            self.queued.append(text)

        async def render_status(self, text: str) -> None:
            self.notices.append(text)

    probe = Probe()
    for text in ("one", "two", "three"):
        await probe.submit(text, MessageType.USER)
    assert probe.queued == ["one", "two"]
    assert len(probe.notices) == 1 and probe.notices[0].startswith("Too many messages; try again in")
    # With the platform-wide limit off too, only the platform's per-session one counts it (far above four).
    settings.RATE_LIMIT_PLATFORM_IP_PER_MINUTE = 0
    await probe.submit("four", MessageType.USER)
    assert probe.queued == ["one", "two", "four"]


def _committed(work) -> None:
    """Run `work` on a connection of its own (autocommit): the chat pool's threads see it, unlike the test's
    transaction."""
    from django.db import connections as dbs

    def run() -> None:
        try:
            work()
        finally:
            dbs.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)


@pytest.mark.django_db
def test_an_open_socket_of_a_suspended_tenant_is_closed_at_its_next_check(canary_tenants):
    """Suspending a tenant refused new sockets only: one already open kept running turns."""
    import uuid

    from apps.sessions.consumers import CLOSE_SUSPENDED, RATE_LIMIT_REFRESH_S
    from apps.tenants.models import Tenant
    from apps.tenants.selectors import tenant_settings_forget

    schema = canary_tenants.a.schema_name

    class Probe(UpstreamChatConsumer):
        def __init__(self) -> None:
            super().__init__()
            self.scope = {"client": ("192.0.2.7", 5000), "headers": []}
            self.schema, self.session_id, self.bot_name = schema, str(uuid.uuid4()), canary_tenants.a.canary
            self.rate_limit, self.rate_limit_read = None, time.monotonic() - RATE_LIMIT_REFRESH_S - 1  # check due
            self.queued: list[str] = []
            self.notices: list[str] = []
            self.closed_with: int | None = None

        async def _queue_turn(self, text, message_type, active_switchers) -> None:
            self.queued.append(text)

        async def render_status(self, text: str) -> None:
            self.notices.append(text)

        async def close(self, code=None, reason=None) -> None:
            self.closed_with = code

    _committed(lambda: Tenant.objects.filter(schema_name=schema).update(ready=False))
    tenant_settings_forget()
    try:
        probe = Probe()
        asyncio.run(probe.submit("still there?", MessageType.USER))
    finally:
        _committed(lambda: Tenant.objects.filter(schema_name=schema).update(ready=True))
        tenant_settings_forget()
    assert probe.queued == [] and probe.closed_with == CLOSE_SUSPENDED
    assert probe.notices == ["This service is not available now."]


@pytest.mark.asyncio
async def test_a_socket_opening_in_a_quiet_process_gets_its_events_at_once():
    """channels-redis's pub/sub reader sleeps 0.1 s between looks while the process has no subscription: the
    first socket after the last one closed got its events that much late (a cached answer in 90 ms instead of
    10). The consumer keeps one subscription standing (as connect() does), so the reader always waits on Redis
    itself and nothing waits for that poll. Checked on the real Redis: after the process's last socket closed,
    the standing channel is still subscribed there. (The latency is printed by tests/bench/bench_guards.py.)"""
    import redis.asyncio
    from channels.layers import get_channel_layer
    from django.conf import settings

    from apps.sessions.consumers import _layer_keep_listening, _listening

    layer = get_channel_layer()
    group = "chat.test.quiet-process"
    group_channel = layer._get_group_channel_name(group)
    await _layer_keep_listening(layer)
    standing = _listening.get(asyncio.get_running_loop())
    assert standing, "no standing subscription for this event loop"
    await _layer_keep_listening(layer)  # the next socket of the loop: the same subscription, not another
    assert _listening[asyncio.get_running_loop()] == standing
    client = redis.asyncio.Redis.from_url(settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"][0]["address"])
    try:
        for _ in range(2):  # a socket opens, gets its events, closes: the process is quiet again
            channel = await layer.new_channel()
            await layer.group_add(group, channel)
            subscribers = dict(await client.pubsub_numsub(standing, channel, group_channel))
            assert subscribers == {standing.encode(): 1, channel.encode(): 1, group_channel.encode(): 1}
            await layer.group_send(group, {"type": "chat.events", "events": []})
            assert await asyncio.wait_for(layer.receive(channel), 10.0) == {"type": "chat.events", "events": []}
            await socket_closed(layer, group, channel)
            subscribers = dict(await client.pubsub_numsub(standing, channel, group_channel))
            assert subscribers == {standing.encode(): 1, channel.encode(): 0, group_channel.encode(): 0}
    finally:
        await client.aclose()


async def test_a_pages_repeated_resume_frames_replay_once(monkeypatch):
    """A reconnect sends one `resume`; a client repeating it must not have the process render the history
    again and again."""
    consumer = HtmxChatConsumer()
    consumer.stream_sent = {}
    replays: list[int] = []

    async def replay(after: int) -> None:
        replays.append(after)

    monkeypatch.setattr(consumer, "replay", replay)
    for _ in range(50):
        await consumer.handle_frame({"type": "resume", "last_index": 3})
    assert replays == [3]
    from apps.sessions import consumers

    consumer.last_resume -= consumers.RESUME_MIN_INTERVAL_S  # later on, a real reconnect is taken again
    await consumer.handle_frame({"type": "resume", "last_index": 7})
    assert replays == [3, 7]


@pytest.mark.django_db
def test_a_reconnect_far_behind_gets_the_newest_messages_not_the_oldest(canary_tenants, monkeypatch):
    from django_tenants.utils import schema_context

    from apps.bots.models import Bot
    from apps.sessions import services
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(canary_tenants.a.schema_name):
        session = ChatSession.objects.create(user=ChatUser.objects.create(username="far"),
                                             bot=Bot.objects.get(pk=1))
        Message.objects.bulk_create(Message(session=session, index=i, role=Role.USER if i % 2 else Role.ASSISTANT,
                                            content=f"m{i}") for i in range(30))
        assert [m["index"] for m in services.history(session, after=-1, limit=10, cap=10, newest=True)] == list(
            range(20, 30))
        assert [m["index"] for m in services.history(session, after=-1, limit=10, cap=10)] == list(range(10))
        from apps.sessions import consumers

        monkeypatch.setattr(consumers, "REPLAY_MAX", 10)
        assert [m["index"] for m in consumers._replay(str(session.id), -1)["messages"]] == list(range(20, 30))


@pytest.mark.django_db
def test_a_session_the_pages_socket_recreates_stays_bound_to_the_page(canary_tenants):
    import uuid

    from django_tenants.utils import schema_context

    from apps.sessions import consumers, services
    from apps.sessions.services import UnknownSession

    purged = str(uuid.uuid4())  # the page's session id, its row purged by retention meanwhile
    with schema_context(canary_tenants.a.schema_name):
        opened = consumers._open_session(canary_tenants.a.canary, None, purged, True)
        assert opened["session_id"] == purged
        with pytest.raises(UnknownSession):
            services.session_get(purged)  # the id alone (REST, the upstream socket) does not reach it
        assert services.session_get(purged, page_token_ok=True)


class _UpstreamClient(UpstreamChatConsumer):
    """The upstream consumer's rendering, with its frames collected instead of sent."""

    def __init__(self) -> None:
        super().__init__()
        self.info = {"bot_id": "b", "user_id": "u"}
        self.session_id = "s"
        self.frames: list[dict] = []

    async def send_json(self, data: dict) -> None:
        self.frames.append(data)


@pytest.mark.asyncio
async def test_an_update_of_a_shown_message_replaces_it_and_closes_the_stream_it_names():
    """The last part of an answer takes the answer's tool calls when only whitespace followed its tool: the
    message is sent again as an update naming the whitespace round's stream. A connection that showed it
    replaces it (the page) and closes that stream (both); a plain message of a shown index is still dropped."""
    part = {"index": 5, "role": 2, "message_type": 2, "content": "Let me note that. ", "meta": {},
            "created_at": "", "stream": "s1"}
    batch = [{"kind": "stream_start", "stream": "s1"}, _delta("s1", 0, "Let me note that. "),
             {"kind": "message", "message": part},
             {"kind": "stream_start", "stream": "s2"}, _delta("s2", 0, "\n\n"),
             {"kind": "message", "message": {**part, "stream": None}},  # a duplicate: dropped
             {"kind": "message", "update": True,
              "message": {**part, "stream": "s2", "meta": {"tool_calls": [{"name": "note"}]}}}]
    page, client = _Page(), _UpstreamClient()
    for consumer in (page, client):
        consumer.sent_upto, consumer.seen, consumer.stream_sent = -1, collections.deque(), {}  # as connect() sets
        for event in batch:
            await consumer.render_event(event)
        assert consumer.stream_sent == {}  # no stream left open
    assert len(page.frames) == 6  # two bubbles, two deltas, the part and its update
    assert 'id="msg-5"' in page.frames[-1] and 'data-stream="s2"' in page.frames[-1]
    assert 'class="msg-tool">note<' in page.frames[-1]
    assert [(f["content"], f["is_complete"], f.get("stream_token")) for f in client.frames] == [
        ("Let me note that. ", False, "s1"), ("", True, "s1"), ("\n\n", False, "s2"), ("", True, "s2")]
