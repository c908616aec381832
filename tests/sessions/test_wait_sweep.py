"""A dialog at a WAIT whose resume message was lost is continued by beat's lost-wait sweep, once.

The resume (`chat.resume_wait`) is queued when the turn commits, with the WAIT's countdown; if that message is
lost (the broker down at commit, Redis restarted, the worker holding it until due killed) nothing else continued
the dialog. Here the message really goes through the run's Redis and is then taken out of the `jobs` queue as a
restarted Redis would lose it; the sweep runs as beat's task; a real Celery worker (in a thread, on `jobs`) runs
what it queues. The lost message is put back afterwards, as Redis hands back a message a killed worker never
acknowledged: it must change nothing.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.conf import settings

from tests.sessions.conftest import in_schema, orm_call

pytestmark = pytest.mark.django_db
# The worker takes a message within a second; a scripted resume takes milliseconds.
WAIT_S = 30
# After the expected messages are there, how long to watch for a duplicate that must never come.
SETTLE_S = 1.5
SCRIPT = 'TALK "one"\nWAIT 1\nTALK "two"\n'
RESUME_TASK = "chat.resume_wait"


def _broker() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL)


def _resume_messages(session_id: str) -> list[bytes]:
    """The `chat.resume_wait` messages for the session waiting in the broker's `jobs` queue (kombu's Redis list)."""
    found = []
    for raw in _broker().lrange("jobs", 0, -1):
        headers = json.loads(raw).get("headers") or {}
        if headers.get("task") == RESUME_TASK and session_id in str(headers.get("argsrepr")):
            found.append(raw)
    return found


def _lose(raw: bytes) -> None:
    """The message disappears from the broker, as when Redis restarts without it."""
    assert _broker().lrem("jobs", 1, raw) == 1


def _deliver_late(raw: bytes) -> None:
    """The lost message comes back (Redis hands back what a killed worker held, after the visibility timeout)."""
    _broker().lpush("jobs", raw)


def _bot_create(name: str) -> None:
    from apps.bots.models import Bot
    from apps.bots.services import script_sync

    bot = Bot.objects.create(name=name)
    saved = script_sync(bot=bot, path=f"{name}.gbai/{name}.gbdialog/start.bas", data=SCRIPT.encode())
    assert saved.ok, saved.errors


def _bot_delete(name: str) -> None:
    from apps.bots.models import Bot

    Bot.objects.filter(name=name).delete()  # its sessions and messages go with it


def _session_at_wait(bot_name: str) -> str:
    """A session whose start.bas said "one" and stopped at its WAIT, committed; its resume message queued."""
    from apps.sessions import services

    session = services.session_bootstrap(bot_name=bot_name)
    assert [m.content for m in services.session_start(session)] == ["one"]
    return str(session.pk)


def _time_passes(session_id: str, delta: timedelta) -> None:
    """The WAIT ended `delta` earlier than it did (minutes pass without sleeping through them)."""
    from django.db.models import F

    from apps.sessions.models import ChatSession

    assert ChatSession.objects.filter(pk=session_id).update(wait_due_at=F("wait_due_at") - delta) == 1


def _transcript(session_id: str) -> tuple[list[str], dict | None, object]:
    """(the bot's texts, the session's dialog, its wait_due_at)."""
    from apps.sessions.models import ChatSession, Message, Role

    session = ChatSession.objects.get(pk=session_id)
    texts = list(Message.objects.filter(session=session, role=Role.ASSISTANT).order_by("index")
                 .values_list("content", flat=True))
    return texts, session.state.get("dialog"), session.wait_due_at


def _sweep() -> int:
    """What beat sends every minute, run here (on a connection of its own: its messages go out as it commits)."""
    from apps.sessions.tasks import waits_requeue_lost_task

    return orm_call(lambda: waits_requeue_lost_task.apply().get())


def _wait_for(predicate, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def _worker():
    """A real worker on `jobs` (where the resumes go), in a thread of this process, started once the messages the
    test means to lose are out of the queue."""
    from gbplatform.celery import app

    return start_worker(app, pool="solo", perform_ping_check=False, queues=["jobs"], shutdown_timeout=10)


def test_a_wait_whose_resume_was_lost_is_continued_by_the_sweep_exactly_once(chat_tenant):
    """Before the sweep the dialog stayed at its WAIT for ever: "two" was never said. Two sweeps queuing the
    resume and the original message arriving after all still say it once."""
    from apps.sessions.services import WAIT_RESUME_GRACE

    assert settings.CELERY_BEAT_SCHEDULE["chat-sweep-lost-waits"]["task"] == "chat.sweep_lost_waits"
    assert settings.CELERY_TASK_ROUTES["chat.sweep_lost_waits"] == {"queue": "dispatch"}
    schema, bot = chat_tenant.schema_name, "waitsweep"
    in_schema(schema, _bot_create, bot)
    try:
        session_id = in_schema(schema, _session_at_wait, bot)
        [original] = _resume_messages(session_id)  # queued by the turn's commit, with the WAIT's countdown
        _lose(original)
        texts, dialog, due = in_schema(schema, _transcript, session_id)
        assert texts == ["one"] and dialog["kind"] == "wait" and due is not None

        _sweep()
        assert not _resume_messages(session_id)  # the WAIT just ended: within the grace, left alone
        in_schema(schema, _time_passes, session_id, WAIT_RESUME_GRACE + timedelta(minutes=1))
        assert _sweep() >= 1
        assert len(_resume_messages(session_id)) == 1
        # The next sweep a minute later: the resume is queued again only if it is lost too (not yet: left alone).
        _sweep()
        assert len(_resume_messages(session_id)) == 1
        # ... and after that one's grace too (a duplicate on the queue): the second copy of the same resume.
        in_schema(schema, _time_passes, session_id, WAIT_RESUME_GRACE + timedelta(minutes=1))
        assert _sweep() >= 1
        assert len(_resume_messages(session_id)) == 2

        with _worker():
            assert _wait_for(lambda: "two" in in_schema(schema, _transcript, session_id)[0])
            assert _wait_for(lambda: not _resume_messages(session_id))
            _deliver_late(original)
            assert _wait_for(lambda: not _resume_messages(session_id))
            time.sleep(SETTLE_S)  # the late message taken: long enough for it to have run
            texts, dialog, due = in_schema(schema, _transcript, session_id)
        assert texts == ["one", "two"]  # the TALK after the WAIT, once
        assert dialog is None and due is None  # the script ended: nothing left for the sweep
        assert not _resume_messages(session_id)
    finally:
        in_schema(schema, _bot_delete, bot)


def test_a_sweep_queues_a_bounded_batch_per_tenant_longest_overdue_first(chat_tenant, monkeypatch):
    """Resumes Redis lost for many visitors at once are spread over sweeps, oldest first; a WAIT within its grace
    is left alone."""
    from apps.sessions import services

    monkeypatch.setattr(services, "WAIT_SWEEP_BATCH", 2)
    schema, bot = chat_tenant.schema_name, "waitbatch"
    in_schema(schema, _bot_create, bot)
    try:
        sessions = [in_schema(schema, _session_at_wait, bot) for _ in range(4)]
        for session_id in sessions:
            [message] = _resume_messages(session_id)
            _lose(message)
        # Overdue by 30, 20 and 10 minutes past the grace; the last WAIT just ended.
        for minutes, session_id in zip((30, 20, 10), sessions, strict=False):
            in_schema(schema, _time_passes, session_id, services.WAIT_RESUME_GRACE + timedelta(minutes=minutes))

        in_schema(schema, services.waits_requeue_lost)
        assert [len(_resume_messages(s)) for s in sessions] == [1, 1, 0, 0]
        in_schema(schema, services.waits_requeue_lost)
        assert [len(_resume_messages(s)) for s in sessions] == [1, 1, 1, 0]

        with _worker():
            assert _wait_for(lambda: all("two" in in_schema(schema, _transcript, s)[0] for s in sessions[:3]))
            time.sleep(SETTLE_S)
        assert [in_schema(schema, _transcript, s)[0] for s in sessions] == [["one", "two"]] * 3 + [["one"]]
        texts, dialog, due = in_schema(schema, _transcript, sessions[3])
        assert dialog["kind"] == "wait" and due is not None  # its grace not over: its own resume may still come
    finally:
        in_schema(schema, _bot_delete, bot)


def _age(session_id: str, delta: timedelta) -> None:
    """The session's last activity and WAIT were `delta` ago."""
    from django.db.models import F

    from apps.sessions.models import ChatSession

    assert ChatSession.objects.filter(pk=session_id).update(
        last_activity=F("last_activity") - delta, wait_due_at=F("wait_due_at") - delta) == 1


def test_a_wait_overdue_by_more_than_the_limit_is_given_up_not_resumed(chat_tenant):
    """A conversation of days ago (beat stopped that long) is not continued out of the blue: its due time is
    cleared and nothing is queued; a WAIT overdue within the limit is still resumed."""
    from apps.sessions import services

    schema, bot = chat_tenant.schema_name, "waitstale"
    in_schema(schema, _bot_create, bot)
    try:
        stale, lost = in_schema(schema, _session_at_wait, bot), in_schema(schema, _session_at_wait, bot)
        for session_id in (stale, lost):
            [message] = _resume_messages(session_id)
            _lose(message)
        in_schema(schema, _age, stale, services.WAIT_RESUME_MAX_OVERDUE + timedelta(minutes=5))
        in_schema(schema, _age, lost, services.WAIT_RESUME_GRACE + timedelta(minutes=5))

        assert in_schema(schema, services.waits_requeue_lost) == 1
        assert not _resume_messages(stale) and len(_resume_messages(lost)) == 1
        texts, dialog, due = in_schema(schema, _transcript, stale)
        assert texts == ["one"] and dialog["kind"] == "wait" and due is None
        assert in_schema(schema, services.waits_requeue_lost) == 0  # given up once, not again
        for raw in _resume_messages(lost):
            _lose(raw)
    finally:
        in_schema(schema, _bot_delete, bot)


def test_the_migration_backfills_the_due_time_of_recent_waits_only(chat_tenant):
    """Dialogs at a WAIT when the column came get a due time (the latest their WAIT can end) if their session was
    active in the last day; a WAIT lost months ago stays as it was instead of being resumed after the deploy."""
    import importlib

    from django.apps import apps

    backfill = importlib.import_module("apps.sessions.migrations.0006_chatsession_wait_due_backfill")
    schema, bot = chat_tenant.schema_name, "waitfill"

    def run() -> tuple:
        from django.db.models import F

        from apps.sessions.models import ChatSession

        recent, old = _session_at_wait(bot), _session_at_wait(bot)
        for raw in _resume_messages(recent) + _resume_messages(old):
            _lose(raw)
        ChatSession.objects.filter(pk=old).update(last_activity=F("last_activity") - timedelta(days=90))
        ChatSession.objects.filter(pk__in=[recent, old]).update(wait_due_at=None)
        backfill.recent_waiting_dialogs_due(apps, None)
        rows = dict(ChatSession.objects.filter(pk__in=[recent, old]).values_list("pk", "wait_due_at"))
        activity = ChatSession.objects.get(pk=recent).last_activity
        return rows[ChatSession._meta.pk.to_python(recent)], rows[ChatSession._meta.pk.to_python(old)], activity

    in_schema(schema, _bot_create, bot)
    try:
        recent_due, old_due, activity = in_schema(schema, run)
        assert recent_due == activity + backfill.MAX_WAIT
        assert old_due is None
    finally:
        in_schema(schema, _bot_delete, bot)
