"""A tenant's share of a web process's chat turns (apps/sessions/slots.py).

First the slots themselves, in this process: a tenant at its cap waits in its own line (on no thread), in
arrival order, while other tenants start at once; a REST request waits a bounded time and is refused as busy;
a waiter that goes away leaves the line or passes on the slot it was handed.

Then the attack the slots stop, against a live daphne of its own whose pool is small (CHAT_TURN_THREADS 4,
CHAT_TURNS_PER_TENANT 2): tenant A's bot switched its rate limits off and names a model that holds every answer
until the test lets it go. A's slow turns fill A's share only: tenant B's turns (socket, stream and REST) are
answered while A's are stuck, A's further turns start in the order they came once A's slow ones end, and an A
REST message that finds no slot is told "busy, send it again" (503) and is not taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time

import httpx
import pytest

from apps.sessions.slots import TenantTurnSlots, TurnSlotBusy
from tests.sessions.conftest import CHAT_HOST, ChatServer, bot_config, in_schema, live_env
from tests.sessions.support import FRAME_TIMEOUT_S, ChatClient, bot_text, is_bot_message, is_connected, is_error
from tests.support.llm_fake import FakeLLMServer, RecordedRequest, Reply

BUSY = "The service is busy; please send your message again."


# --- the slots ------------------------------------------------------------------------------------------------


async def _queued(slots: TenantTurnSlots, tenant: str, started: list[str], name: str) -> None:
    await slots.acquire(tenant)
    started.append(name)


async def _settle() -> None:
    for _ in range(5):  # a slot handed over wakes its waiter through the loop: a few turns of it
        await asyncio.sleep(0)


@pytest.mark.asyncio
async def test_a_tenant_at_its_cap_waits_in_its_own_line_in_arrival_order_while_another_tenant_starts():
    slots = TenantTurnSlots(2)
    await slots.acquire("a")
    await slots.acquire("a")
    started: list[str] = []
    waiting = [asyncio.create_task(_queued(slots, "a", started, name)) for name in ("a3", "a4", "a5")]
    other = asyncio.create_task(_queued(slots, "b", started, "b1"))
    await _settle()
    assert started == ["b1"] and other.done()  # B does not queue behind A
    assert slots.running("a") == 2 and slots.waiting("a") == 3

    slots.release("a")  # one of A's turns ended: its slot goes to the first in A's line
    await _settle()
    assert started == ["b1", "a3"] and slots.running("a") == 2 and slots.waiting("a") == 2
    slots.release("a")
    slots.release("a")
    await _settle()
    assert started == ["b1", "a3", "a4", "a5"] and all(task.done() for task in waiting)
    for _ in range(3):
        slots.release("a")
    slots.release("b")
    assert slots.running("a") == slots.running("b") == 0


@pytest.mark.asyncio
async def test_a_waiter_that_goes_away_leaves_the_line_or_passes_on_the_slot_it_was_handed():
    slots = TenantTurnSlots(1)
    await slots.acquire("a")
    started: list[str] = []
    gone = asyncio.create_task(_queued(slots, "a", started, "gone"))
    kept = asyncio.create_task(_queued(slots, "a", started, "kept"))
    await _settle()
    gone.cancel()  # its socket's turn was cancelled while it waited (the process stopping)
    await _settle()
    assert slots.waiting("a") == 1
    slots.release("a")
    await _settle()
    assert started == ["kept"] and kept.done()

    handed = asyncio.create_task(_queued(slots, "a", started, "handed"))
    after = asyncio.create_task(_queued(slots, "a", started, "after"))
    await _settle()
    slots.release("a")  # the slot is handed to `handed`...
    handed.cancel()  # ...which is cancelled before it runs: the slot goes on to the next
    await _settle()
    assert started == ["kept", "after"] and after.done() and slots.running("a") == 1


def test_a_rest_turn_over_the_cap_waits_without_its_connection_then_is_refused_as_busy():
    slots = TenantTurnSlots(1)
    slots.acquire_blocking("a", wait_s=0)
    closed: list[bool] = []
    with pytest.raises(TurnSlotBusy):
        slots.acquire_blocking("a", wait_s=0.05, before_wait=lambda: closed.append(True))
    assert closed == [True] and slots.waiting("a") == 0 and slots.running("a") == 1
    slots.acquire_blocking("b", wait_s=0)  # another tenant's is taken at once
    assert slots.running("b") == 1


@pytest.mark.asyncio
async def test_socket_and_rest_turns_of_a_tenant_share_one_line_in_arrival_order():
    slots = TenantTurnSlots(1)
    await slots.acquire("a")
    started: list[str] = []
    socket_turn = asyncio.create_task(_queued(slots, "a", started, "socket"))
    await _settle()

    def rest_turn() -> None:
        slots.acquire_blocking("a", wait_s=FRAME_TIMEOUT_S)
        started.append("rest")

    rest = threading.Thread(target=rest_turn)
    rest.start()
    while slots.waiting("a") < 2:  # the request is in the line, behind the socket's turn
        await asyncio.sleep(0.01)
    slots.release("a")
    await _settle()
    assert started == ["socket"] and socket_turn.done()
    slots.release("a")
    await asyncio.to_thread(rest.join, FRAME_TIMEOUT_S)
    assert started == ["socket", "rest"] and slots.running("a") == 1


# --- the attack, on a live server -------------------------------------------------------------------------------

FAIR_B_HOST = "fair-b.test.localhost"
# The live server's pool and share: A's two slow turns fill A's share; four would fill the pool.
TURN_THREADS, TURNS_PER_TENANT = 4, 2
# How long a REST message waits in its tenant's line there before it is refused as busy.
REST_WAIT_S = 3


class HeldModel:
    """A model that takes each question and answers only when the test lets one answer go (`let_go`)."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self._answers = threading.Semaphore(0)
        self._lock = threading.Lock()

    def __call__(self, request: RecordedRequest) -> Reply:
        with self._lock:
            self.asked.append(request.last_user_text)
        self._answers.acquire(timeout=120)
        return Reply(text=f"echo: {request.last_user_text}", chunk_chars=6)

    def let_go(self, answers: int = 1) -> None:
        self._answers.release(answers)

    async def asked_at_least(self, count: int) -> list[str]:
        deadline = time.monotonic() + FRAME_TIMEOUT_S
        while len(self.asked) < count:
            assert time.monotonic() < deadline, f"the model was asked {self.asked}, expected {count} questions"
            await asyncio.sleep(0.02)
        return list(self.asked)


@pytest.fixture(scope="module")
def held_llm():
    server = FakeLLMServer().start()
    yield server
    server.stop()


@pytest.fixture
def held_model(held_llm):
    model = HeldModel()
    held_llm.reset()
    held_llm.default = model
    yield model
    model.let_go(100)  # nothing of the server stays waiting on the model


@pytest.fixture(scope="module")
def fair_bots(deploy_bot, held_llm, chat_llm, django_db_blocker) -> tuple[str, str]:
    """A's bot: limits off, a model that holds its answers; B's (a tenant of its own): the usual echo."""
    from apps.tenants.services import tenant_create

    with django_db_blocker.unblock():
        tenant_b, _password = tenant_create(name="Fair B", domain=FAIR_B_HOST)
    hog = deploy_bot("hog", {"hog.gbot/config.csv": bot_config(llm_url=held_llm.base_url,
                                                                extra="rate-limit-enabled,false\n")})
    deploy_bot("hog-greeter", {"hog-greeter.gbdialog/start.bas": 'TALK "hello"\n'})  # A's, with a start.bas
    calm = deploy_bot("calm", {"calm.gbot/config.csv": bot_config(llm_url=chat_llm.base_url)},
                      schema=tenant_b.schema_name)
    return hog, calm


@pytest.fixture(scope="module")
def fair_server(chat_tenant, chat_drive, fair_bots, tmp_path_factory):
    env = {**live_env(chat_drive), "CHAT_TURN_THREADS": str(TURN_THREADS),
           "CHAT_TURNS_PER_TENANT": str(TURNS_PER_TENANT), "CHAT_TURN_SLOT_WAIT_S": str(REST_WAIT_S)}
    server = ChatServer(env=env, log_dir=tmp_path_factory.mktemp("fair-logs")).start()
    yield server
    server.stop()


def _sessions_of(schema: str, bot_name: str) -> int:
    from apps.sessions.models import ChatSession

    return in_schema(schema, lambda: ChatSession.objects.filter(bot__name=bot_name).count())


def _http(client: ChatClient) -> httpx.AsyncClient:
    # Longer than a frame's wait: a stream waiting in its tenant's line gets nothing until its turn starts.
    return httpx.AsyncClient(base_url=client.http_base, headers={"Host": f"{client.host}:{client.port}"},
                             timeout=4 * FRAME_TIMEOUT_S)


async def _stream_messages(client: ChatClient, session_id: str, content: str) -> list[str]:
    """The bot messages of a turn sent as a server-sent event stream, read to its end."""
    texts: list[str] = []
    kind = ""
    async with _http(client) as http, http.stream("POST", f"/api/sessions/{session_id}/stream",
                                                   json={"content": content}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: ") and kind == "message":
                message = json.loads(line.removeprefix("data: "))["message"]
                if message["role"] == 2:
                    texts.append(message["content"])
            if kind == "done":
                return texts
    return texts


async def _answer(sock) -> str:
    return bot_text((await sock.until(is_bot_message))[-1])


async def _queued_on(sock, content: str) -> None:
    """Send a message and wait until the server has queued its turn: a frame after it on the same socket is
    answered once the consumer is done with the message (a socket's frames are handled one after another)."""
    await sock.send(content)
    await sock.send_raw("not json")
    await sock.until(is_error)


@pytest.mark.django_db
@pytest.mark.asyncio(loop_scope="session")
async def test_a_tenant_whose_model_hangs_fills_only_its_share_and_its_other_turns_start_in_order(
        fair_server, fair_bots, held_model, llm):
    hog, calm = fair_bots
    a, b = ChatClient(fair_server.port, CHAT_HOST), ChatClient(fair_server.port, FAIR_B_HOST)
    async with contextlib.AsyncExitStack() as stack:
        socks = []
        for _ in range(3):
            sock = await stack.enter_async_context(a.connect(hog, await a.bootstrap(hog)))
            await sock.until(is_connected)
            socks.append(sock)
        streamed_ids = await a.bootstrap(hog)
        await socks[0].send("a1")
        await held_model.asked_at_least(1)
        await socks[1].send("a2")
        assert await held_model.asked_at_least(2) == ["a1", "a2"]  # A's share is full: both hang
        await _queued_on(socks[2], "a3")
        # A's fourth turn comes as a server-sent event stream, after a3 was queued.
        streamed = asyncio.create_task(_stream_messages(a, streamed_ids["session_id"], "a4"))

        # B's turns are answered while A's hang: over a socket, as a stream, and over REST.
        b_sock = await stack.enter_async_context(b.connect(calm, await b.bootstrap(calm)))
        await b_sock.until(is_connected)
        await b_sock.send("b1")
        assert await _answer(b_sock) == "echo: b1"
        assert await _stream_messages(b, (await b.bootstrap(calm))["session_id"], "b2") == ["echo: b2"]
        async with _http(b) as http:
            created = (await http.post("/api/sessions", json={"bot_name": calm})).json()
            reply = await http.post(f"/api/sessions/{created['session_id']}/messages", json={"content": "b3"})
        assert reply.status_code == 200 and [m["content"] for m in reply.json()["messages"]] == ["echo: b3"]
        assert held_model.asked == ["a1", "a2"], "A's further turns wait in A's line, holding no thread"
        assert not any(is_bot_message(frame) for sock in socks for frame in sock.frames)

        # A's slow turns end one by one: the turns waiting in A's line start in the order they came.
        held_model.let_go()
        assert (await held_model.asked_at_least(3))[2] == "a3"
        held_model.let_go()
        assert (await held_model.asked_at_least(4))[3] == "a4"
        held_model.let_go(2)
        assert sorted([await _answer(sock) for sock in socks]) == ["echo: a1", "echo: a2", "echo: a3"]
        assert await asyncio.wait_for(streamed, FRAME_TIMEOUT_S) == ["echo: a4"]


@pytest.mark.django_db
@pytest.mark.asyncio(loop_scope="session")
async def test_a_rest_message_finding_its_tenants_share_full_is_refused_as_busy_and_not_taken(
        fair_server, fair_bots, held_model, llm, chat_tenant):
    hog, calm = fair_bots
    a, b = ChatClient(fair_server.port, CHAT_HOST), ChatClient(fair_server.port, FAIR_B_HOST)
    async with contextlib.AsyncExitStack() as stack, _http(a) as http_a, _http(b) as http_b:
        rest_session = (await http_a.post("/api/sessions", json={"bot_name": hog})).json()["session_id"]
        socks = []
        for text in ("a1", "a2"):
            sock = await stack.enter_async_context(a.connect(hog, await a.bootstrap(hog)))
            await sock.until(is_connected)
            await sock.send(text)
            socks.append(sock)
        await held_model.asked_at_least(2)

        refused = await http_a.post(f"/api/sessions/{rest_session}/messages", json={"content": "a-rest"})
        assert refused.status_code == 503, refused.text
        assert refused.json()["message"] == BUSY and int(refused.headers["Retry-After"]) >= 1
        history = (await http_a.get(f"/api/sessions/{rest_session}/history")).json()["messages"]
        assert history == [], "a message refused as busy is not taken"
        # A new session whose start.bas finds no slot is refused the same way, and not left behind unstarted.
        greeters = await asyncio.to_thread(_sessions_of, chat_tenant.schema_name, "hog-greeter")
        busy_start = await http_a.post("/api/sessions", json={"bot_name": "hog-greeter"})
        assert busy_start.status_code == 503 and busy_start.json()["message"] == BUSY
        assert await asyncio.to_thread(_sessions_of, chat_tenant.schema_name, "hog-greeter") == greeters
        created = (await http_b.post("/api/sessions", json={"bot_name": calm})).json()
        reply = await http_b.post(f"/api/sessions/{created['session_id']}/messages", json={"content": "b-rest"})
        assert reply.status_code == 200 and reply.json()["messages"][0]["content"] == "echo: b-rest"

        # Sent again while A's share is still full, it waits in A's line and gets the slot of the first A turn
        # that ends (the pause only makes it likely that it is waiting by then; it passes either way).
        again = asyncio.create_task(http_a.post(f"/api/sessions/{rest_session}/messages", json={"content": "a-rest"}))
        await asyncio.sleep(0.3)
        held_model.let_go()
        assert (await held_model.asked_at_least(3))[2] == "a-rest"
        held_model.let_go(2)
        reply = await asyncio.wait_for(again, FRAME_TIMEOUT_S)
        assert reply.status_code == 200 and reply.json()["messages"][0]["content"] == "echo: a-rest"
        assert sorted([await _answer(sock) for sock in socks]) == ["echo: a1", "echo: a2"]


@pytest.mark.asyncio
async def test_a_tenant_alone_borrows_the_idle_room_and_another_tenant_still_starts_its_share_at_once():
    """The cap applied to a tenant alone on the process (a single-tenant install, the demo): 8 turns at once of
    32 threads while 24 sat idle, and REST messages refused as busy."""
    slots = TenantTurnSlots(2, capacity=6)
    for _ in range(4):  # its share (2), then borrowed while 2 stay free for the others
        await slots.acquire("a")
    started: list[str] = []
    fifth = asyncio.create_task(_queued(slots, "a", started, "a5"))
    b_turns = [asyncio.create_task(_queued(slots, "b", started, name)) for name in ("b1", "b2", "b3")]
    await _settle()
    assert slots.running("a") == 4 and slots.waiting("a") == 1
    assert started == ["b1", "b2"] and slots.running("b") == 2 and slots.waiting("b") == 1  # B's share at once
    slots.release("b")  # B's own line first
    await _settle()
    assert started == ["b1", "b2", "b3"] and not fifth.done()
    slots.release("b")
    slots.release("b")  # B is done; A already holds all it may borrow (2 stay free for the others)
    await _settle()
    assert not fifth.done() and all(t.done() for t in b_turns) and slots.running("b") == 0
    slots.release("a")  # one of A's ends: its slot goes to A's waiting turn
    await _settle()
    assert started == ["b1", "b2", "b3", "a5"] and slots.running("a") == 4
    slots.acquire_blocking("c", wait_s=0)  # a third tenant below its share starts even now
    assert slots.running("c") == 1

    # Room another tenant frees is lent to a tenant waiting beyond its share.
    lent = TenantTurnSlots(2, capacity=6)
    for tenant in ("a", "a", "b", "b"):
        await lent.acquire(tenant)
    late = asyncio.create_task(_queued(lent, "a", started, "a-late"))  # 4 run: lending would leave < 2 free
    await _settle()
    assert not late.done() and lent.waiting("a") == 1
    lent.release("b")
    await _settle()
    assert late.done() and lent.running("a") == 3 and lent.waiting("a") == 0

