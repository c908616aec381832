"""The attack suite's probes: canaries planted in both tenants (same primary keys, same keys, same names),
then attacks from tenant A that report every tenant-B canary they manage to read.

Each probe returns the list of leaks it found (empty = the guard held), so the same probe serves the
attack tests (expect []) and the mutation check (a guard removed: expect at least one leak). Planting is
done in the test's transaction (rolled back), in the drive of the test's `local_storage` and in Redis under
keys of the probe's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from django_tenants.utils import schema_context

# Same ids in both tenants: code that reads the wrong schema finds the other tenant's row, not nothing.
COLLIDING_SESSION = uuid.UUID("00000000-5ec0-4000-8000-00000000c011")
COLLIDING_USER = uuid.UUID("00000000-5ec0-4000-8000-0000000000a1")
COLLIDING_DOCUMENT = 4242
COLLIDING_REQUEST = uuid.UUID("00000000-5ec0-4000-8000-0000000d5a00")  # a data-subject export
COLLIDING_ROOM = "weekly"
CACHE_KEY = "security:canary"
DRIVE_KEY = "_security/canary.txt"
VECTOR = [0.6, 0.8, 0.0]
SHARED_BOT = "shared"  # the bot name both tenants use in the vector store: only the tenant separates them


@dataclass
class Side:
    schema: str
    host: str
    bot_name: str
    admin_password: str
    canary: str  # unique to this run and tenant
    only_session: uuid.UUID = field(default_factory=uuid.uuid4)  # a session that exists in this tenant only
    only_room: str = ""
    only_request: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class World:
    a: Side
    b: Side


def _canary(tenant) -> str:
    return f"CANARY-{tenant.schema_name}-{uuid.uuid4().hex[:10]}"


def plant(canary_tenants) -> World:
    """Plant one canary per store in each tenant, with colliding ids; returns what was planted."""
    from apps.bots.models import Bot
    from apps.compliance.gdpr import export_archive_store
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Document, KnowledgeBase
    from apps.kb.vectorstores import ChunkRecord, PgVectorStore
    from apps.meet.models import Room
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    sides = []
    for tenant in (canary_tenants.a, canary_tenants.b):
        side = Side(tenant.schema_name, tenant.host, tenant.canary, tenant.admin_password, _canary(tenant),
                    only_room=f"only-{tenant.schema_name.replace('_', '-')}")
        with schema_context(tenant.schema_name):
            bot = Bot.objects.get(pk=1)
            user = ChatUser.objects.create(id=COLLIDING_USER, username=f"{side.canary} user",
                                           memory={"secret": {"value": side.canary}})
            for session_id in (COLLIDING_SESSION, side.only_session):
                session = ChatSession.objects.create(id=session_id, user=user, bot=bot, title=side.canary,
                                                     state={"started": True}, message_count=2)
                Message.objects.create(session=session, index=0, role=Role.USER, content=f"{side.canary} asks")
                Message.objects.create(session=session, index=1, role=Role.ASSISTANT,
                                       content=f"{side.canary} answers")
            for name in (COLLIDING_ROOM, side.only_room):
                Room.objects.create(name=name, bot=bot, title=side.canary)
            kb, _ = KnowledgeBase.objects.get_or_create(bot=bot, name="faq")
            path = f"{bot.name}.gbai/{bot.name}.gbkb/faq/canary.md"
            Document.objects.create(id=COLLIDING_DOCUMENT, kb=kb, path=path, etag="e", size=1)
            PgVectorStore().replace_document(
                tenant=tenant.schema_name, bot=bot.name, bot_id=bot.pk, kb_id=kb.pk, document_id=COLLIDING_DOCUMENT,
                model="test", records=[ChunkRecord(document_id=COLLIDING_DOCUMENT, document_path=path, kb="faq",
                                                   index=0, text=f"{side.canary} passage", start_char=0,
                                                   end_char=1, page=None, heading="", vector=VECTOR)])
            tenant_drive().write(DRIVE_KEY, side.canary.encode())
            for request_id in (COLLIDING_REQUEST, side.only_request):
                DataSubjectRequest.objects.create(id=request_id, kind="export", subject_kind="email",
                                                  subject=f"{side.canary.lower()}@example.com", subject_digest="x",
                                                  status="done", requested_by="dpo")
                export_archive_store(request_id=request_id, archive=f"archive of {side.canary}".encode())
            cache.set(CACHE_KEY, side.canary, timeout=300)
        sides.append(side)
    return World(*sides)


def _in_own_connection(fn, *args):
    """Run `fn` on a connection of its own, in autocommit: what it writes is committed at once and seen by
    the chat's database threads (the test's own connection sits in pytest-django's transaction)."""
    import threading

    from django.db import connections

    outcome: dict = {}

    def body() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _chat_rows(canary_tenants) -> dict[str, tuple[set, set]]:
    from apps.sessions.models import ChatSession, ChatUser

    rows = {}
    for tenant in (canary_tenants.a, canary_tenants.b):
        with schema_context(tenant.schema_name):
            rows[tenant.schema_name] = (set(ChatUser.objects.values_list("pk", flat=True)),
                                        set(ChatSession.objects.values_list("pk", flat=True)))
    return rows


def _remove(world: World, before: dict[str, tuple[set, set]]) -> None:
    """Remove what was planted, and the chat users and sessions the probes made (a socket opened with an
    unknown session id starts a new session). Everything goes: the planted rows are committed in the shared
    canary tenants, so a knowledge base left behind showed in later modules' pages ("no knowledge base")."""
    from apps.compliance.gdpr import export_archive_key
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Document, KnowledgeBase
    from apps.meet.models import Room
    from apps.sessions.models import ChatSession, ChatUser

    for side in (world.a, world.b):
        users, sessions = before[side.schema]
        with schema_context(side.schema):
            ChatSession.objects.exclude(pk__in=sessions).delete()
            ChatUser.objects.exclude(pk__in=users).delete()
            Room.objects.filter(name__in=[COLLIDING_ROOM, side.only_room]).delete()
            Document.objects.filter(pk=COLLIDING_DOCUMENT).delete()  # its chunks go with it
            KnowledgeBase.objects.filter(bot_id=1, name="faq", documents__isnull=True).delete()
            DataSubjectRequest.objects.filter(pk__in=[COLLIDING_REQUEST, side.only_request]).delete()
            drive = tenant_drive()
            for key in (DRIVE_KEY, export_archive_key(COLLIDING_REQUEST), export_archive_key(side.only_request)):
                drive.delete(key)
            cache.delete(CACHE_KEY)


class committed_world:
    """Context manager: `plant` committed (for probes whose server side runs on other connections), and
    removed afterwards."""

    def __init__(self, canary_tenants) -> None:
        self.canary_tenants = canary_tenants

    def __enter__(self) -> World:
        self.before = _in_own_connection(_chat_rows, self.canary_tenants)
        self.world = _in_own_connection(plant, self.canary_tenants)
        return self.world

    def __exit__(self, *exc) -> None:
        _in_own_connection(_remove, self.world, self.before)


def leaks_in(text: str, world: World, where: str) -> list[str]:
    return [f"{where}: {world.b.canary}"] if world.b.canary in text else []


# --- I1: every tenant URL with an object id, asked from A for B's objects ----------------------------


@dataclass(frozen=True)
class Route:
    route: str
    name: str
    params: tuple[tuple[str, str], ...]  # (converter, name)


PARAM_RE = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")


def tenant_routes() -> tuple[list[Route], list[str]]:
    """Every route of the tenant URLconf with a path parameter (and the patterns that are not routes)."""
    routes, others = [], []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            if not isinstance(entry.pattern, RoutePattern):
                others.append(prefix + str(entry.pattern))
                continue
            route = prefix + str(entry.pattern)
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif isinstance(entry, URLPattern):
                params = tuple((m["conv"] or "str", m["name"]) for m in PARAM_RE.finditer(route))
                if params:
                    routes.append(Route(route, entry.name or "", params))

    walk(get_resolver(settings.ROOT_URLCONF).url_patterns, "")
    return routes, others


def _values(converter: str, name: str, world: World) -> list[str]:
    """B's object ids for a parameter: the colliding ones and those that exist in B only."""
    if converter == "uuid":
        return [str(COLLIDING_SESSION), str(world.b.only_session), str(COLLIDING_USER), str(COLLIDING_REQUEST),
                str(world.b.only_request)]
    if converter == "int":
        return [str(COLLIDING_DOCUMENT), "1"]
    if name == "bot":
        return [world.b.bot_name]
    return [COLLIDING_ROOM, world.b.only_room, world.b.bot_name]


def route_urls(route: Route, world: World) -> list[str]:
    urls = [route.route]
    for converter, name in route.params:
        urls = [re.sub(rf"<(?:{re.escape(converter)}:)?{re.escape(name)}>", value, url, count=1)
                for url in urls for value in _values(converter, name, world)]
    return ["/" + url for url in urls]


def _admin_client(side: Side) -> Client:
    client = Client(HTTP_HOST=side.host)
    response = client.post("/accounts/login/", {"username": "admin", "password": side.admin_password})
    assert response.status_code == 302, "the console admin of the canary tenant signs in"
    return client


@dataclass
class HttpReport:
    leaks: list[str] = field(default_factory=list)
    requests: int = 0
    own_canary_seen: int = 0  # responses that served A's colliding object: the URLs reach real objects
    server_errors: list[str] = field(default_factory=list)
    streams_not_read: list[str] = field(default_factory=list)


def _body(response, report: HttpReport, world: World, where: str) -> bytes:
    if not response.streaming:
        return response.content
    if not getattr(response, "is_async", False):
        return b"".join(response.streaming_content)
    # An async stream (the SSE turn of an existing session): it only starts for a session of A's own
    # schema (B's ids get a 404 before), so it is a turn of A's session, not an attack; it is not read here
    # (the sync test client cannot drive its event loop) and the WebSocket probe covers what turns publish.
    response.close()
    report.streams_not_read.append(where)
    return b""


# Request methods sent to each URL; POSTs carry an empty JSON object (the body of every API here).
HTTP_METHODS = ("get", "post")


def http_probe(world: World) -> HttpReport:
    report = HttpReport()
    routes, _ = tenant_routes()
    clients = {"anonymous": Client(HTTP_HOST=world.a.host), "admin": _admin_client(world.a)}
    for route in routes:
        for url in route_urls(route, world):
            for who, client in clients.items():
                for method in HTTP_METHODS:
                    if method == "post" and route.name == "chat-stream" and str(COLLIDING_SESSION) in url:
                        # A turn of A's own session, streamed by an async view: the sync test client cannot
                        # drive it (its turn thread shares and closes the test's connection). Not an attack;
                        # B's ids on this route are still sent (404), and turns are probed over WebSockets.
                        continue
                    kwargs = {"data": "{}", "content_type": "application/json"} if method == "post" else {}
                    response = getattr(client, method)(url, **kwargs)
                    report.requests += 1
                    body = _body(response, report, world, f"{method.upper()} {url} ({who})")
                    text = body.decode("utf-8", "replace") + json.dumps(dict(response.headers))
                    report.leaks += leaks_in(text, world, f"{method.upper()} {url} ({who})")
                    report.own_canary_seen += world.a.canary in text
                    if response.status_code == 500:  # 503: an outside service not configured here
                        report.server_errors.append(f"{method.upper()} {url} ({who}): {response.status_code}")
    return report


# --- I2: host header tricks with A's session cookie ---------------------------------------------------


def host_probe(world: World) -> list[str]:
    """A's signed-in console cookie sent to B's host in every spelling must not be signed in there; A's host
    with B named in proxy headers must serve nothing of B (B's own host serving B's anonymous chat sessions
    to anyone holding their id is by design, so only the sign-in is checked there)."""
    leaks = []
    signed_in = _admin_client(world.a)
    b = world.b.host
    for host in (b, b.upper(), b + ".", b + ":443", b.upper() + ".:8000"):
        client = Client(HTTP_HOST=host)
        client.cookies = signed_in.cookies
        if client.get("/console/").status_code == 200:
            leaks.append(f"A's console session is accepted on {host}/console/")
        # The deploy API takes POST only (a GET is 405 whoever asks): signed in, an empty POST is a 400.
        if client.post("/api/bots/deploy").status_code not in (401, 403):
            leaks.append(f"A's console session is accepted on {host}/api/bots/deploy")
    proxied = [{"HTTP_X_FORWARDED_HOST": b}, {"HTTP_FORWARDED": f"host={b}"}, {"HTTP_X_ORIGINAL_HOST": b},
               {"HTTP_X_FORWARDED_HOST": f"{b}, {world.a.host}"}]
    paths = ["/api/bots", "/console/", f"/api/sessions/{world.b.only_session}/history",
             f"/api/sessions/{COLLIDING_SESSION}/history", f"/api/meet/rooms/{world.b.only_room}"]
    for headers in proxied:
        client = Client(HTTP_HOST=world.a.host, **headers)
        client.cookies = signed_in.cookies
        for path in paths:
            response = client.get(path)
            leaks += leaks_in(response.content.decode("utf-8", "replace"), world, f"GET {path} {headers}")
    return leaks


# --- I4: cache ----------------------------------------------------------------------------------------


def cache_probe(world: World) -> list[str]:
    with schema_context(world.a.schema):
        value = cache.get(CACHE_KEY)
    return [f"cache.get({CACHE_KEY!r}) in A: {value}"] if value == world.b.canary else []


# --- I9: drive keys ---------------------------------------------------------------------------------


def drive_attack_keys(world: World) -> list[str]:
    b = world.b.schema
    return [f"../{b}/{DRIVE_KEY}", f"%2e%2e/{b}/{DRIVE_KEY}", f"/{b}/{DRIVE_KEY}", f"tenants/{b}/{DRIVE_KEY}",
            f"../../tenants/{b}/{DRIVE_KEY}", f"\uff0e\uff0e\uff0f{b}/{DRIVE_KEY}", f"{DRIVE_KEY}\x00../{b}",
            f"..\\{b}\\{DRIVE_KEY}", "a/" * 600 + DRIVE_KEY, f"./{b}/{DRIVE_KEY}", f"{b}/../../{b}/{DRIVE_KEY}"]


def drive_probe(world: World) -> list[str]:
    from apps.drive import storage

    leaks = []
    with schema_context(world.a.schema):
        drive = storage.tenant_drive()
        for key in drive_attack_keys(world) + [DRIVE_KEY]:
            try:
                content = drive.read(key)
            except (ValueError, OSError):
                continue  # refused (DriveKeyError is a ValueError) or absent: the attack failed
            leaks += leaks_in(content.decode("utf-8", "replace"), world, f"drive.read({key!r})")
        for entry in drive.list(""):
            leaks += leaks_in(drive.read(entry.key).decode("utf-8", "replace"), world, f"drive.list: {entry.key}")
    return leaks


# --- I8: vector store --------------------------------------------------------------------------------


def vector_probe(world: World) -> list[str]:
    """pgvector from A's schema (colliding document ids), and Qdrant where both tenants use one bot name."""
    from apps.kb.vectorstores import (
        ChunkRecord,
        PgVectorStore,
        QdrantStore,
        VectorStoreError,
        vector_store_for_settings,
    )
    from tests.support.qdrant_fake import qdrant_platform_running

    leaks = []
    with schema_context(world.a.schema):
        hits = PgVectorStore().search(tenant=world.a.schema, bot=world.a.bot_name, kbs=["faq"], vector=VECTOR,
                                      limit=50)
        leaks += [f"pgvector hit: {h.text}" for h in hits if world.b.canary in h.text]
        # A search that finds nothing would pass above whatever the guards do: A's own passage must be found.
        if not any(world.a.canary in h.text for h in hits):
            leaks.append("pgvector probe did not find A's own passage: the probe is broken")
        try:
            hits = PgVectorStore().search(tenant=world.b.schema, bot=world.b.bot_name, kbs=["faq"], vector=VECTOR,
                                          limit=50)
        except VectorStoreError:
            pass  # refused: the store checks that the connection is on the caller's tenant schema
        else:
            leaks.append("pgvector search naming B from A's schema was not refused: the schema guard is missing")
            leaks += [f"pgvector search naming B from A's schema: {h.text}" for h in hits if world.b.canary in h.text]
    # Our Qdrant server on loopback, reached through the platform's own client (QDRANT_URL, QDRANT_API_KEY).
    with qdrant_platform_running():
        store = vector_store_for_settings()
        assert isinstance(store, QdrantStore)
        for side in (world.a, world.b):
            store.replace_document(
                tenant=side.schema, bot=SHARED_BOT, bot_id=1, kb_id=1, document_id=COLLIDING_DOCUMENT, model="test",
                records=[ChunkRecord(document_id=COLLIDING_DOCUMENT, document_path="faq/canary.md", kb="faq",
                                     index=0, text=f"{side.canary} passage", start_char=0, end_char=1, page=None,
                                     heading="", vector=VECTOR)])
        hits = store.search(tenant=world.a.schema, bot=SHARED_BOT, kbs=["faq"], vector=VECTOR, limit=50)
        leaks += [f"qdrant hit: {h.text}" for h in hits if world.b.canary in h.text]
        if not any(world.a.canary in h.text for h in hits):
            leaks.append("qdrant probe did not find A's own passage: the probe is broken")
    return leaks


# --- I5/I6: WebSockets ------------------------------------------------------------------------------


async def _frames(communicator, wait: float = 0.5) -> list[str]:
    """Every frame the server sends until it stays quiet for `wait` seconds (receive_nothing does not
    cancel the application the way a timed-out receive_output does)."""
    frames = []
    while not await communicator.receive_nothing(timeout=wait):
        output = await communicator.receive_output()
        if output.get("type") == "websocket.close":
            frames.append(f"<close {output.get('code')}>")
            return frames
        frames.append(output.get("text") or (output.get("bytes") or b"").decode("utf-8", "replace"))
    return frames


async def _close(communicator) -> None:
    """Disconnect, unless the server already closed (the test communicator then raises CancelledError)."""
    with contextlib.suppress(asyncio.CancelledError, AssertionError):
        await communicator.disconnect()


def _ws(host: str, path: str):
    from channels.testing import WebsocketCommunicator

    from gbplatform.asgi import application

    return WebsocketCommunicator(application, path, headers=[(b"host", host.encode())])


@dataclass
class WsReport:
    leaks: list[str] = field(default_factory=list)
    own_canary_seen: int = 0
    frames: int = 0


async def ws_probe(world: World) -> WsReport:
    """From A's host: B's session ids (colliding and B-only) on /ws and /ws/<bot>, B's bot name; then an
    event published to B's group of the colliding session while A listens to its own."""
    from channels.layers import get_channel_layer

    from apps.sessions import events

    report = WsReport()
    a_bot, b_bot = world.a.bot_name, world.b.bot_name
    attempts = [f"/ws/{a_bot}?session_id={COLLIDING_SESSION}&last_index=-1",
                f"/ws/{a_bot}?session_id={world.b.only_session}&last_index=-1",
                f"/ws?bot_name={a_bot}&session_id={COLLIDING_SESSION}&user_id={COLLIDING_USER}&last_index=-1",
                f"/ws/{b_bot}?session_id={COLLIDING_SESSION}&last_index=-1",
                f"/ws?bot_name={b_bot}&session_id={world.b.only_session}&last_index=-1"]
    for path in attempts:
        communicator = _ws(world.a.host, path)
        await communicator.connect()
        frames = await _frames(communicator)
        await _close(communicator)
        report.frames += len(frames)
        text = "\n".join(frames)
        report.leaks += leaks_in(text, world, f"WS {path}")
        report.own_canary_seen += world.a.canary in text
    # A listens on the colliding session; B's turn publishes an event to B's group of that session.
    listener = _ws(world.a.host, f"/ws/{a_bot}?session_id={COLLIDING_SESSION}")
    connected, _ = await listener.connect()
    if connected:
        await _frames(listener, wait=0.3)  # the "connected" frame
        layer = get_channel_layer()
        message = {"kind": "message", "message": {"index": 99, "role": 2, "message_type": 2,
                                                  "content": f"{world.b.canary} live", "meta": {}}}
        await layer.group_send(events.session_group(world.b.schema, str(COLLIDING_SESSION)),
                               {"type": "chat.event", "event": message})
        frames = await _frames(listener, wait=1.0)
        report.frames += len(frames)
        report.leaks += leaks_in("\n".join(frames), world, "WS group of B's colliding session")
        await _close(listener)
    else:
        report.leaks.append("the listener on A's own session could not connect: the probe is broken")
    return report


async def ws_interleaved_mismatches(world: World, rounds: int = 15) -> int:
    """I6: chat sockets of A and B on the colliding session, opened at the same time, `rounds` times; counts
    replies without their own tenant's canary or with the other's (0 when every turn ran in its schema)."""

    async def one(side: Side) -> str:
        communicator = _ws(side.host, f"/ws/{side.bot_name}?session_id={COLLIDING_SESSION}&last_index=-1")
        try:
            await communicator.connect()
            frames = await _frames(communicator, wait=0.3)
        except Exception as exc:  # noqa: BLE001 - the consumer crashed: a mismatch, reported as text
            return f"<consumer error {type(exc).__name__}: {exc}>"
        await _close(communicator)
        return "\n".join(frames)

    mismatches = 0
    for _ in range(rounds):
        text_a, text_b = await asyncio.gather(one(world.a), one(world.b))
        mismatches += (world.a.canary not in text_a) + (world.b.canary in text_a)
        mismatches += (world.b.canary not in text_b) + (world.a.canary in text_b)
    return mismatches
