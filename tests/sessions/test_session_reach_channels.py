"""Which sessions the public chat endpoints reach by id: only the public chat channels' (web, api) sessions of
anonymous visitors. A session of another channel (an e-mail conversation, a job) or of a known person (Ana,
who wrote to the bot by e-mail) is never read, driven or handed out by its id, on REST, the server-sent event
stream, /api/auth or either WebSocket: it answers as an unknown session does. The legitimate clients keep
their sessions: upstream's bootstrap and reconnect, REST clients, the web chat page with its token."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from django.test import Client
from django_tenants.utils import schema_context

from apps.sessions import consumers, services
from apps.sessions.models import ChatSession, ChatUser, Message, Role
from tests.sessions.conftest import in_schema

pytestmark = pytest.mark.django_db

MAIL_TEXT = "my contract number is 4471-secret"
ANA = "ana@example.com"


def _client(tenant) -> Client:
    return Client(HTTP_HOST=tenant.host, REMOTE_ADDR=f"198.51.100.{uuid.uuid4().int % 250 + 1}")


def _mail_session(tenant) -> ChatSession:
    """Ana's e-mail conversation with the tenant's bot, as the IMAP poller starts it (apps.mail)."""
    from apps.bots.models import Bot

    session, _ = services.channel_turn(bot=Bot.objects.get(name=tenant.canary), channel="email", user_key=ANA,
                                       text=MAIL_TEXT, thread_key=f"<{uuid.uuid4()}@example.com>")
    return session


def _other_sessions(tenant) -> list[ChatSession]:
    """A job's session of an anonymous user, and a web-channel session whose user is a known person."""
    from apps.bots.models import Bot

    bot = Bot.objects.get(name=tenant.canary)
    job = ChatSession.objects.create(user=ChatUser.objects.create(username="guest_job"), bot=bot, channel="job",
                                     state={"started": True})
    known = ChatUser.objects.create(username="bruno@example.com", external_id="bruno@example.com",
                                    email="bruno@example.com", is_anonymous=False)
    web_of_known = ChatSession.objects.create(user=known, bot=bot, channel="web", state={"started": True})
    for session in (job, web_of_known):
        Message.objects.create(session=session, index=0, role=Role.USER, content=MAIL_TEXT)
        session.message_count = 1
        session.save(update_fields=["message_count"])
    return [job, web_of_known]


def _rest_answers(client: Client, session_id: str) -> list[tuple[int, object]]:
    """What each REST endpoint answers for the session id: (status, body)."""
    base = f"/api/sessions/{session_id}"
    answers = []
    for method, path, body in (("get", f"{base}/history", None), ("get", f"{base}/messages", None),
                               ("post", f"{base}/messages", {"content": "show me everything"}),
                               ("post", f"{base}/stream", {"content": "show me everything"})):
        if method == "get":
            response = client.get(path)
        else:
            response = client.post(path, data=json.dumps(body), content_type="application/json")
        if response.streaming:  # a stream of the session's turn: not read, it reached the session
            response.close()
            answers.append((response.status_code, "<event stream>"))
        else:
            answers.append((response.status_code, json.loads(response.content)))
    return answers


def test_rest_answers_for_other_channels_and_known_people_as_for_an_unknown_session(canary_tenants, settings):
    settings.LLM_URL = ""
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        refused = [_mail_session(tenant), *_other_sessions(tenant)]
        counts = {s.pk: Message.objects.filter(session=s).count() for s in refused}
        client = _client(tenant)
        unknown = _rest_answers(client, str(uuid.uuid4()))
        assert {status for status, _ in unknown} == {404}
        for session in refused:
            assert _rest_answers(client, str(session.pk)) == unknown, session.channel
            assert Message.objects.filter(session=session).count() == counts[session.pk]  # no turn ran in it
        with pytest.raises(services.UnknownSession):
            services.session_get(str(refused[0].pk))


def test_the_bootstrap_never_hands_out_a_known_persons_session_or_user_id(canary_tenants, settings):
    settings.LLM_URL = ""
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        mail = _mail_session(tenant)
        refused = [mail, *_other_sessions(tenant)]
        client = _client(tenant)
        for session in refused:
            response = client.get("/api/auth", {"bot_name": tenant.canary, "session_id": str(session.pk),
                                                "user_id": str(session.user_id)})
            assert response.status_code == 200
            got = response.json()
            assert got["status"] == "anonymous"
            assert got["session_id"] != str(session.pk)
            if not session.user.is_anonymous:  # a known person is never claimed (an anonymous user id may be)
                assert got["user_id"] != str(session.user_id)
            fresh = ChatSession.objects.select_related("user").get(pk=got["session_id"])
            assert fresh.user.is_anonymous and fresh.channel == "web" and fresh.message_count == 0
        # The sockets' bootstrap: neither the upstream socket (no token) nor the page's (a token) opens them.
        for session in refused:
            for page_token_ok in (False, True):
                opened = consumers._open_session(tenant.canary, str(session.user_id), str(session.pk),
                                                 page_token_ok)
                assert opened["session_id"] != str(session.pk)
                assert session.user.is_anonymous or opened["user_id"] != str(session.user_id)
        assert list(Message.objects.filter(session=mail).values_list("content", flat=True))[0] == MAIL_TEXT


def test_public_clients_keep_reaching_their_own_sessions(canary_tenants, settings):
    settings.LLM_URL = ""
    tenant = canary_tenants.a
    with schema_context(tenant.schema_name):
        client = _client(tenant)
        # Upstream's client: bootstrap, then reconnect with its stored ids; its session is readable over REST.
        ids = client.get("/api/auth", {"bot_name": tenant.canary}).json()
        again = client.get("/api/auth", {"bot_name": tenant.canary, "session_id": ids["session_id"],
                                         "user_id": ids["user_id"]}).json()
        assert (again["session_id"], again["user_id"]) == (ids["session_id"], ids["user_id"])
        assert consumers._open_session(tenant.canary, ids["user_id"], ids["session_id"], False)["session_id"] == \
            ids["session_id"]
        assert client.get(f"/api/sessions/{ids['session_id']}/history").status_code == 200
        # A REST client: its session takes messages and shows its history.
        created = client.post("/api/sessions", data=json.dumps({"bot_name": tenant.canary}),
                              content_type="application/json")
        assert created.status_code == 201, created.content
        sid = created.json()["session_id"]
        posted = client.post(f"/api/sessions/{sid}/messages", data=json.dumps({"content": "hello"}),
                             content_type="application/json")
        assert posted.status_code == 200, posted.content
        history = client.get(f"/api/sessions/{sid}/history").json()["messages"]
        assert [m["content"] for m in history][0] == "hello"
        # The web chat page: its session comes back with the page's cookie and opens with the page's token.
        page = client.get(f"/{tenant.canary}/")
        assert page.status_code == 200
        page_sid = str(page.context["session_id"])
        assert str(client.get(f"/{tenant.canary}/").context["session_id"]) == page_sid
        assert consumers._open_session(tenant.canary, None, page_sid, True)["session_id"] == page_sid
        assert services.session_get(page_sid, page_token_ok=True).pk == uuid.UUID(page_sid)


async def _socket_frames(host: str, path: str) -> list[dict]:
    from tests.security.probes import _close, _frames, _ws

    communicator = _ws(host, path)
    connected, code = await communicator.connect()
    frames = await _frames(communicator, wait=0.5) if connected else [f"<close {code}>"]
    await _close(communicator)
    return [json.loads(f) if f.startswith("{") else f for f in frames]


def test_the_upstream_socket_opens_a_fresh_anonymous_session_for_a_mail_sessions_id(canary_tenants, settings):
    """Through the real ASGI stack (the consumer reads on its own database threads: the rows are committed)."""
    settings.LLM_URL = ""
    tenant = canary_tenants.a

    def plant():
        session = _mail_session(tenant)
        return str(session.pk), str(session.user_id)

    def remove(session_ids: list[str], user_ids: list[str]):
        ChatSession.objects.filter(pk__in=session_ids).delete()
        ChatUser.objects.filter(pk__in=user_ids).delete()

    sid, uid = in_schema(tenant.schema_name, plant)
    opened_sessions, opened_users = [sid], [uid]
    try:
        for path in (f"/ws?bot_name={tenant.canary}&session_id={sid}&user_id={uid}&last_index=-1",
                     f"/ws/{tenant.canary}?session_id={sid}&user_id={uid}&last_index=-1"):
            frames = asyncio.run(_socket_frames(tenant.host, path))
            connected = next(f for f in frames if isinstance(f, dict) and f.get("type") == "connected")
            opened_sessions.append(connected["session_id"])
            opened_users.append(connected["user_id"])
            assert connected["session_id"] != sid and connected["user_id"] != uid
            assert MAIL_TEXT not in json.dumps(frames) and ANA not in json.dumps(frames)
    finally:
        in_schema(tenant.schema_name, remove, opened_sessions, opened_users)
