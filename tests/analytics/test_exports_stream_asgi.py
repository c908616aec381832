"""The console's exports stream through the real ASGI application (gbplatform.asgi, as daphne serves it): the
first body bytes leave after at most one chunk of rows has been read, and every later message keeps the
reading at most one chunk ahead of what was sent; the bytes are the same as the WSGI (test client) path's; each
chunk is read in the request's tenant even when other requests switched the thread's connection between two
chunks; the exports are still audited.

Exports: audit log CSV (apps.console), transcript JSON and CSV and the conversation list CSV (apps.analytics).

Harness: the application is called through `async_to_sync` from the test's thread, so Django's sync work
(middleware, view, each chunk) runs in this thread with the test's connection and transaction, as in Django's
own test client (which also keeps `close_old_connections` off the request signals). Rows read from the
database are counted by spying on the models' `from_db`; rows sent by counting lines in the body messages.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import async_to_sync
from django.core import signals
from django.db import close_old_connections
from django.test import Client
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.analytics import exports
from apps.bots.models import Bot
from apps.compliance import selectors as audit_selectors
from apps.compliance.models import AuditEvent
from apps.compliance.selectors import audit_event_export_csv, audit_event_search
from apps.sessions.models import ChatSession, ChatUser, Message, MessageType
from apps.sessions.models import Role as MessageRole
from tests.console.conftest import signed_in, user_with_role

pytestmark = pytest.mark.django_db

CHUNK = 50
ROWS = 301  # six full chunks and one row: chunk boundaries inside runs of equal timestamps (ties of 7)
TIES = 7
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _small_chunks(monkeypatch):
    monkeypatch.setattr(exports, "EXPORT_CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(audit_selectors, "EXPORT_CHUNK_SIZE", CHUNK)


@pytest.fixture
def loaded(monkeypatch) -> Counter:
    """Rows materialised from the database so far, per model name."""
    counts: Counter = Counter()
    for model in (AuditEvent, ChatSession, Message):
        original = model.from_db.__func__

        def from_db(cls, db, field_names, values, _original=original, _name=model.__name__):
            counts[_name] += 1
            return _original(cls, db, field_names, values)

        monkeypatch.setattr(model, "from_db", classmethod(from_db))
    return counts


@contextmanager
def _test_connection_kept() -> Iterator[None]:
    """As django.test.Client does: the request signals must not close the connection holding the test's rows."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@dataclass
class Served:
    status: int = 0
    # Each non-empty body message, with the rows read from the database when it was sent.
    bodies: list[tuple[bytes, int]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(chunk for chunk, _ in self.bodies)


def _scope(client: Client, host: str, url: str) -> dict:
    path, _, query = url.partition("?")
    cookie = "; ".join(f"{morsel.key}={morsel.value}" for morsel in client.cookies.values())
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": [(b"host", host.encode()), (b"cookie", cookie.encode())], "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


async def _serve(scope: dict, read: Callable[[], int], on_body: Callable | None = None) -> Served:
    from gbplatform.asgi import application

    served = Served()
    requested = False

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays until the answer is complete
        raise AssertionError("unreachable")

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            served.status = message["status"]
        elif message["type"] == "http.response.body" and message.get("body"):
            served.bodies.append((message["body"], read()))
            if on_body is not None:
                await on_body(served)

    await application(scope, receive, send)
    return served


def asgi_get(client: Client, host: str, url: str, read: Callable[[], int] = lambda: 0,
             on_body: Callable | None = None) -> Served:
    with _test_connection_kept(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        served = async_to_sync(_serve)(_scope(client, host, url), read, on_body)
    served.warnings = [str(w.message) for w in caught]
    return served


def assert_streamed(served: Served, rows_sent: Callable[[bytes], int], total: int) -> None:
    """The first body left after at most one chunk was read; no message had more than one chunk read ahead."""
    assert served.status == 200
    first_read = served.bodies[0][1]
    assert first_read <= CHUNK, f"{first_read} of {total} rows were read before the first body byte was sent"
    assert not [w for w in served.warnings if "StreamingHttpResponse must consume" in w], served.warnings
    sent = b""
    for chunk, read in served.bodies:
        sent += chunk
        assert read <= rows_sent(sent) + CHUNK, f"{read} rows read when {rows_sent(sent)} had been sent"
    assert len(served.bodies) > total // CHUNK  # one message per chunk at least, not one for the whole export


def csv_rows_sent(body: bytes) -> int:
    return max(body.count(b"\r\n") - 1, 0)  # the header line is no row


def json_messages_sent(body: bytes) -> int:
    return body.count(b"\n")  # each message starts a line; the head has no line end


def _wsgi_body(client: Client, url: str) -> bytes:
    response = client.get(url)
    assert response.status_code == 200
    return b"".join(response.streaming_content)


def _client(tenant, role: Role, username: str) -> Client:
    return signed_in(tenant, user_with_role(tenant, username, role))


def _audit_events(tenant, count: int) -> None:
    with schema_context(tenant.schema_name):
        AuditEvent.objects.bulk_create(
            AuditEvent(at=START + timedelta(seconds=i // TIES), actor=f"actor-{i}", action="load.row",
                       object_type="row", object_id=f"{tenant.canary}-{i}", summary=f"summary {i}")
            for i in range(count))


def test_audit_export_sends_its_first_bytes_after_one_chunk(canary_tenants, loaded):
    a = canary_tenants.a
    _audit_events(a, ROWS)
    client = _client(a, Role.ADMIN, "auditor")
    served = asgi_get(client, a.host, "/console/compliance/export.csv?action=load.",
                      read=lambda: loaded["AuditEvent"])
    assert_streamed(served, csv_rows_sent, ROWS)
    assert loaded["AuditEvent"] == ROWS
    with schema_context(a.schema_name):
        expected = audit_event_export_csv(audit_event_search(action="load.").order_by("-at", "-id")).encode()
        assert AuditEvent.objects.filter(action="compliance.audit_export", actor="auditor").count() == 1
    assert served.body == expected  # every row once, in order, across chunk boundaries inside ties
    assert served.body.count(b"\r\n") == ROWS + 1
    assert served.body == _wsgi_body(client, "/console/compliance/export.csv?action=load.")


def test_each_chunk_is_read_in_the_requests_tenant_while_others_switch_the_connection(canary_tenants):
    """Between two chunks of A's export, B's export runs in the same thread (its middleware switches the
    connection to B's schema): A's later chunks are still A's rows."""
    a, b = canary_tenants.a, canary_tenants.b
    _audit_events(a, ROWS)
    _audit_events(b, ROWS)
    client_a, client_b = _client(a, Role.ADMIN, "auditor-a"), _client(b, Role.ADMIN, "auditor-b")
    others: list[Served] = []

    async def between_chunks(served: Served) -> None:
        if len(served.bodies) == 1:
            others.append(await _serve(_scope(client_b, b.host, "/console/compliance/export.csv?action=load."),
                                       lambda: 0))

    served = asgi_get(client_a, a.host, "/console/compliance/export.csv?action=load.", on_body=between_chunks)
    assert served.status == 200 and others and others[0].status == 200
    a_rows = list(csv.DictReader(io.StringIO(served.body.decode())))
    b_rows = list(csv.DictReader(io.StringIO(others[0].body.decode())))
    assert len(a_rows) == len(b_rows) == ROWS
    foreign = [r["object_id"] for r in a_rows if not r["object_id"].startswith(a.canary)]
    assert not foreign, f"{len(foreign)} of tenant A's exported rows came from tenant B: {foreign[:3]}"
    assert all(r["object_id"].startswith(b.canary) for r in b_rows)


@pytest.fixture
def long_session(canary_tenants) -> ChatSession:
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=canary_tenants.a.bot_pk)
        user = ChatUser.objects.create(username="talker")
        session = ChatSession.objects.create(bot=bot, user=user, title="Long talk", message_count=ROWS)
        Message.objects.bulk_create(
            Message(session=session, index=i, role=MessageRole.USER if i % 2 == 0 else MessageRole.ASSISTANT,
                    message_type=MessageType.USER if i % 2 == 0 else MessageType.BOT_RESPONSE,
                    content=f"=message {i}, \"quoted\"", tokens=i, model="m", meta={"cached": i % 3 == 0})
            for i in range(ROWS))
        return session


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_transcript_exports_send_their_first_bytes_after_one_chunk(canary_tenants, long_session, loaded, fmt):
    a = canary_tenants.a
    client = _client(a, Role.EDITOR, f"editor-{fmt}")
    url = f"/console/conversations/{long_session.pk}/export.{fmt}"
    served = asgi_get(client, a.host, url, read=lambda: loaded["Message"])
    assert_streamed(served, json_messages_sent if fmt == "json" else csv_rows_sent, ROWS)
    assert loaded["Message"] == ROWS + 1  # and the view's look for a first message (transcript_get, limit 0)
    if fmt == "json":
        data = json.loads(served.body)
        assert data["session"]["title"] == "Long talk" and [m["index"] for m in data["messages"]] == list(range(ROWS))
    else:
        rows = list(csv.DictReader(io.StringIO(served.body.decode())))
        assert [int(r["index"]) for r in rows] == list(range(ROWS)) and rows[7]["content"] == "'=message 7, \"quoted\""
    with schema_context(a.schema_name):
        assert AuditEvent.objects.filter(action="conversation.export", object_id=str(long_session.pk)).count() == 1
    assert served.body == _wsgi_body(client, url)


def test_conversation_list_export_sends_its_first_bytes_after_one_chunk(canary_tenants, loaded):
    a = canary_tenants.a
    with schema_context(a.schema_name):
        bot = Bot.objects.get(pk=a.bot_pk)
        user = ChatUser.objects.create(username="many")
        sessions = ChatSession.objects.bulk_create(
            ChatSession(bot=bot, user=user, title=f"session {i}", message_count=i) for i in range(ROWS))
        for start in range(0, ROWS, TIES):  # runs of equal last activity across the chunk boundaries
            ChatSession.objects.filter(pk__in=[s.pk for s in sessions[start:start + TIES]]).update(
                last_activity=START + timedelta(minutes=start))
        expected_order = [str(pk) for pk in ChatSession.objects.filter(bot=bot).order_by("-last_activity", "-id")
                          .values_list("pk", flat=True)]
    client = _client(a, Role.EDITOR, "list-editor")
    url = f"/console/conversations/export.csv?bot={a.canary}"
    served = asgi_get(client, a.host, url, read=lambda: loaded["ChatSession"])
    assert_streamed(served, csv_rows_sent, ROWS)
    rows = list(csv.DictReader(io.StringIO(served.body.decode())))
    assert [r["session"] for r in rows] == expected_order and len(rows) == ROWS
    with schema_context(a.schema_name):
        assert AuditEvent.objects.filter(action="conversation.list_export").count() == 1
    assert served.body == _wsgi_body(client, url)


def test_the_small_dataset_exports_are_the_same_bytes_under_asgi_and_wsgi(canary_tenants, dataset):
    """The hand-made dataset of tests/analytics/test_views.py: what its export tests expect, byte for byte the
    same through the ASGI application as through the test client."""
    a = canary_tenants.a
    with schema_context(a.schema_name):
        AuditEvent.objects.create(action="bot.deploy", actor="=HYPERLINK(1)", object_type="bot", object_id="shop")
    editor, admin = _client(a, Role.EDITOR, "small-editor"), _client(a, Role.ADMIN, "small-admin")
    for client, url in [(editor, f"/console/conversations/{dataset.web.pk}/export.json"),
                        (editor, f"/console/conversations/{dataset.web.pk}/export.csv"),
                        (editor, f"/console/conversations/export.csv?bot={a.canary}"),
                        (admin, "/console/compliance/export.csv?action=bot.")]:
        served = asgi_get(client, a.host, url)
        assert served.status == 200, url
        assert served.body == _wsgi_body(client, url), url
    transcript = json.loads(asgi_get(editor, a.host, f"/console/conversations/{dataset.web.pk}/export.json").body)
    assert [m["index"] for m in transcript["messages"]] == [0, 1, 2, 3]
    assert transcript["messages"][1]["tool_calls"][0]["name"] == "get-price"
    listed = asgi_get(editor, a.host, f"/console/conversations/export.csv?bot={a.canary}").body.decode()
    assert [r["session"] for r in csv.DictReader(io.StringIO(listed))] == [str(dataset.whatsapp.pk),
                                                                          str(dataset.web.pk)]
    audit = asgi_get(admin, a.host, "/console/compliance/export.csv?action=bot.").body.decode()
    assert audit.splitlines()[0].startswith("id,at,actor") and "'=HYPERLINK(1)" in audit
