"""Faults of the servers the chat depends on (reliability test plan 3.2).

F5, the database ends a pooled connection (a restart, pg_terminate_backend) just before a turn uses it: the
turn's first statement (the session read with its lock) finds it dead; it reconnects and goes on.

F4, Redis restarted (without persistence) in the middle of conversations: the channel layer, the rate limits
and the resume buffers are gone for a while. Nothing the user was told may be lost: a client reconnecting
with the last index it saw gets the rest once, in order, from the database, and the dialog goes on. While
Redis is down a message that needs the rate limits is refused as "busy, send it again" (503 over REST), never
as "too many messages" and never with a 500; one that needs none is answered and saved.
"""

from __future__ import annotations

import asyncio

import pytest

from gbplatform import localservices
from tests.sessions.conftest import CHAT_HOST, ChatServer, bot_config, live_env
from tests.sessions.support import ChatClient, bot_text, is_bot_message, is_error, message_index

pytestmark = [pytest.mark.django_db, pytest.mark.asyncio(loop_scope="session")]

DIALOG = ('TALK "Your name?"\nHEAR name\nTALK "Your city, " + name + "?"\nHEAR city\n'
          'TALK "Hello " + name + " from " + city\n')
BUSY = "The service is busy; please send your message again."


@pytest.fixture(scope="module")
def f4_bots(deploy_bot):
    return (deploy_bot("f4limited", {"f4limited.gbot/config.csv": bot_config(llm_url=None),
                                     "f4limited.gbdialog/start.bas": DIALOG}),
            deploy_bot("f4open", {"f4open.gbot/config.csv": bot_config(llm_url=None,
                                                                         extra="rate-limit-enabled,false\n"),
                                  "f4open.gbdialog/start.bas": DIALOG}))


@pytest.fixture
def own_redis_server(chat_tenant, chat_drive, tmp_path):
    """A live daphne on a Redis of its own (the test run's Redis is not to be restarted); the platform-wide
    per-address limit off, so a bot that switched its own off needs no Redis to take a message."""
    state = {"redis": localservices.redis_start(tmp_path / "redis", persist=False)}
    env = {**live_env(chat_drive), "REDIS_URL": state["redis"].url, "RATE_LIMIT_PLATFORM_IP_PER_MINUTE": "0"}
    (tmp_path / "logs").mkdir()
    server = ChatServer(env=env, log_dir=tmp_path / "logs").start()

    def restart_redis() -> None:
        state["redis"] = localservices.redis_start(tmp_path / "redis", persist=False, port=state["redis"].port)

    yield state, restart_redis, server
    server.stop()
    state["redis"].stop()


def _indexes(frames: list[dict]) -> list[int]:
    return [i for i in map(message_index, frames) if i is not None]


async def test_a_redis_restart_mid_conversation_loses_nothing(own_redis_server, f4_bots):
    state, restart_redis, server = own_redis_server
    limited, open_bot = f4_bots
    client = ChatClient(server.port, CHAT_HOST)
    limited_ids, open_ids = await client.bootstrap(limited), await client.bootstrap(open_bot)
    async with client.connect(limited, limited_ids) as a, client.connect(open_bot, open_ids) as b:
        seen_a = await a.until(lambda f: is_bot_message(f) and bot_text(f) == "Your name?")
        seen_b = await b.until(lambda f: is_bot_message(f) and bot_text(f) == "Your name?")
        state["redis"].stop()
        await a.send("Rita")
        refused = await a.until(is_error)
        assert refused[-1]["message"] == BUSY  # not "too many messages"
        await b.send("Rui")  # needs no Redis: taken, answered and saved, though its events cannot be published
        seen_a += refused + await a.quiet(1.0)
        seen_b += await b.quiet(2.0)
        async with client.http() as http:
            api = await http.post(f"/api/sessions/{limited_ids['session_id']}/messages", json={"content": "Rita"})
            assert api.status_code == 503 and api.headers["Retry-After"]  # busy, not 429, not 500
            assert (await http.get("/api/auth", params={"bot_name": limited})).status_code == 503
    restart_redis()

    # Reconnecting from the last index seen: what was missed comes once, in order, and the dialogs go on.
    async with client.connect(open_bot, open_ids, last_index=max(_indexes(seen_b))) as b:
        missed = await b.until(lambda f: is_bot_message(f) and bot_text(f) == "Your city, Rui?")
        all_b = _indexes(seen_b) + _indexes(missed)
        assert all_b == sorted(set(all_b)) and all_b == list(range(all_b[0], all_b[-1] + 1))  # no gap, no repeat
        await b.send("Braga")
        assert "Hello Rui from Braga" in [bot_text(f) for f in await b.until(
            lambda f: is_bot_message(f) and bot_text(f).startswith("Hello"))]
    async with client.connect(limited, limited_ids, last_index=max(_indexes(seen_a))) as a:
        await a.send("Rita")  # sent again, as it was told
        assert "Your city, Rita?" in [bot_text(f) for f in await a.until(
            lambda f: is_bot_message(f) and bot_text(f).startswith("Your city"))]
    # channels_redis logs its own reconnect attempts; no consumer or view may have failed.
    log = server.server.log_tail(100_000)
    assert "Exception inside application" not in log and "Internal Server Error" not in log


async def test_a_turn_whose_connection_the_database_just_ended_reconnects_and_goes_on(chat_tenant, f4_bots):
    from tests.sessions.conftest import in_schema, orm_call

    _limited, bot = f4_bots

    def turn_after_the_server_ended_the_connection() -> list[str]:
        from django.db import connection

        from apps.sessions import services

        session = services.session_bootstrap(bot_name=bot)
        services.session_start(session)
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        orm_call(_end_backend, pid)  # from another connection, and wait until it is gone
        return [m.content for m in services.turn_run_id(str(session.pk), text="Rita")]

    assert await asyncio.to_thread(in_schema, chat_tenant.schema_name,
                                   turn_after_the_server_ended_the_connection) == ["Your city, Rita?"]


def _end_backend(pid: int) -> None:
    import time

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.05)
    raise AssertionError(f"backend {pid} did not end")
