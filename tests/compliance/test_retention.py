"""Retention: per-tenant days per data class; the daily purge deletes older rows (and their files) in
batches, keeps what is young or still in use, and touches no other tenant."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.compliance import retention
from apps.compliance.models import RetentionPolicy
from apps.compliance.retention import retention_policy_set, retention_purge
from apps.compliance.selectors import audit_event_search
from tests.tenants.test_celery_isolation import worker  # noqa: F401 - the shared in-thread worker

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _ago(days: float):
    return timezone.now() - timedelta(days=days)


def _chat(schema: str, *, messages_days: list[float], session_days: float):
    from apps.bots.models import Bot
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(schema):
        user = ChatUser.objects.create(username="u")
        session = ChatSession.objects.create(user=user, bot=Bot.objects.get(pk=1))
        for index, days in enumerate(messages_days):
            message = Message.objects.create(session=session, index=index, role=Role.USER, content=f"m{index}")
            Message.objects.filter(pk=message.pk).update(created_at=_ago(days))
        ChatSession.objects.filter(pk=session.pk).update(last_activity=_ago(session_days))
        return session.pk


def test_messages_older_than_the_policy_are_deleted_in_batches(canary_tenants, monkeypatch):
    from apps.sessions.models import Message

    a, b = canary_tenants.a, canary_tenants.b
    monkeypatch.setattr(retention, "RETENTION_BATCH_SIZE", 2)  # 5 old messages: batches of 2, 2, 1
    session_a = _chat(a.schema_name, messages_days=[40, 40, 40, 31, 31, 29, 1], session_days=1)
    session_b = _chat(b.schema_name, messages_days=[40, 40], session_days=1)
    with schema_context(a.schema_name):
        retention_policy_set(data_class="messages", days=30)
        assert retention_purge() == {"messages": 5}
        assert sorted(Message.objects.filter(session_id=session_a).values_list("content", flat=True)) == ["m5", "m6"]
        [event] = audit_event_search(action="retention.purge")
        assert '"messages": 5' in event.summary
        assert retention_purge() == {"messages": 0}  # nothing left to do, nothing audited
        assert len(list(audit_event_search(action="retention.purge"))) == 1
    with schema_context(b.schema_name):  # B has no policy: its old messages stay
        assert Message.objects.filter(session_id=session_b).count() == 2


def test_sessions_past_retention_go_with_their_messages(canary_tenants):
    from apps.sessions.models import ChatSession, Message

    a = canary_tenants.a
    old = _chat(a.schema_name, messages_days=[100], session_days=100)
    young = _chat(a.schema_name, messages_days=[100], session_days=2)
    with schema_context(a.schema_name):
        retention_policy_set(data_class="sessions", days=90)
        assert retention_purge() == {"sessions": 1}
        assert list(ChatSession.objects.filter(pk__in=[old, young]).values_list("pk", flat=True)) == [young]
        assert not Message.objects.filter(session_id=old).exists()


def test_mail_logs_are_purged_with_their_attachments_but_queued_mail_stays(canary_tenants):
    from apps.bots.models import Bot
    from apps.drive.storage import tenant_drive
    from apps.mail.models import IncomingMail, OutgoingMail
    from apps.mail.services import bot_drive_root

    a = canary_tenants.a
    with schema_context(a.schema_name):
        bot, drive = Bot.objects.get(pk=1), tenant_drive()
        old_in = IncomingMail.objects.create(bot=bot, message_id="<old@x>", thread_key="t", from_address="a@x.com",
                                             attachments=[{"name": "f.txt", "size": 1, "path": "p"}])
        new_in = IncomingMail.objects.create(bot=bot, message_id="<new@x>", thread_key="t", from_address="a@x.com")
        IncomingMail.objects.filter(pk=old_in.pk).update(received_at=_ago(10))
        old_key = f"{bot_drive_root(bot)}mail/inbox/{old_in.pk}/f.txt"
        drive.write(old_key, b"x")
        sent = OutgoingMail.objects.create(bot=bot, to="a@x.com", subject="s", message_id=f"<{uuid.uuid4()}@x>",
                                           body_text="b", status=OutgoingMail.Status.SENT)
        queued = OutgoingMail.objects.create(bot=bot, to="a@x.com", subject="s", message_id=f"<{uuid.uuid4()}@x>",
                                             body_text="b")
        OutgoingMail.objects.filter(pk__in=[sent.pk, queued.pk]).update(created_at=_ago(10))
        retention_policy_set(data_class="logs", days=7)
        assert retention_purge() == {"logs": 2}
        assert list(IncomingMail.objects.values_list("pk", flat=True)) == [new_in.pk]
        assert list(OutgoingMail.objects.values_list("pk", flat=True)) == [queued.pk]
        assert not drive.exists(old_key)


def test_ended_recordings_are_purged_with_their_files_and_running_ones_stay(canary_tenants):
    from apps.drive.storage import tenant_drive
    from apps.meet.models import Recording, Room

    a = canary_tenants.a
    with schema_context(a.schema_name):
        room = Room.objects.create(name="weekly")
        drive = tenant_drive()
        drive.write("_meet/recordings/old.mp4", b"video")
        old = Recording.objects.create(room=room, egress_id="EG_old", status=Recording.Status.COMPLETE,
                                       drive_key="_meet/recordings/old.mp4", ended_at=_ago(400))
        running = Recording.objects.create(room=room, egress_id="EG_live", status=Recording.Status.ACTIVE)
        Recording.objects.filter(pk=running.pk).update(updated_at=_ago(400))
        retention_policy_set(data_class="recordings", days=365)
        assert retention_purge() == {"recordings": 1}
        assert not Recording.objects.filter(pk=old.pk).exists() and Recording.objects.filter(pk=running.pk).exists()
        assert not drive.exists("_meet/recordings/old.mp4")


@pytest.mark.parametrize(
    ("data_class", "days", "reason"),
    [("messages", 0, "at least 1"), ("messages", -3, "at least 1"), ("cookies", 30, "unknown data class"),
     ("messages", True, "at least 1")],
)
def test_bad_policies_are_refused_with_the_reason(canary_tenants, data_class, days, reason):
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(ValueError, match=reason):
            retention_policy_set(data_class=data_class, days=days)
        assert not RetentionPolicy.objects.exists()


def test_policy_changes_are_audited_and_none_removes_the_policy(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        retention_policy_set(data_class="sessions", days=30, actor="dpo")
        retention_policy_set(data_class="sessions", days=60, actor="dpo")
        retention_policy_set(data_class="sessions", days=None, actor="dpo")
        assert not RetentionPolicy.objects.exists()
        summaries = [e.summary for e in audit_event_search(action="retention.policy_set")]
    assert summaries == ['{"after": null, "before": 60}', '{"after": 60, "before": 30}',
                         '{"after": 30, "before": null}']


# Tenants of the dispatch test's own (created, then dropped): the purges it causes write append-only audit
# events, which would otherwise stay in the shared canary tenants for the rest of the run.
DISPATCH_SCHEMAS = {"retention_d1": 30, "retention_d2": 10}  # schema -> its messages policy (days)
# The in-thread worker picks a job up within a second; a purge takes milliseconds.
DISPATCH_WAIT_S = 30


def _dispatch_tenants_drop() -> None:
    from apps.tenants.models import Tenant
    from apps.tenants.services import tenant_delete

    for schema in DISPATCH_SCHEMAS:
        if Tenant.objects.filter(schema_name=schema).exists():
            tenant_delete(schema_name=schema)


def _dispatch_tenants_setup() -> dict[str, int]:
    """Two committed tenants, each with its own messages policy and messages 40, 20 and 1 day old."""
    from apps.bots.models import Bot
    from apps.tenants.services import tenant_create

    _dispatch_tenants_drop()  # left by an interrupted run
    sessions = {}
    for schema, days in DISPATCH_SCHEMAS.items():
        tenant_create(name=schema, domain=f"{schema.replace('_', '-')}.test.localhost", schema_name=schema,
                      admin_username=None)
        with schema_context(schema):
            Bot.objects.create(pk=1, name="helpdesk")
            retention_policy_set(data_class="messages", days=days)
        sessions[schema] = _chat(schema, messages_days=[40, 20, 1], session_days=1)
    return sessions


def _messages_left(schema: str, session_id: int) -> list[str]:
    from apps.sessions.models import Message

    with schema_context(schema):
        return sorted(Message.objects.filter(session_id=session_id).values_list("content", flat=True))


def _purge_summaries(schema: str) -> list[str]:
    with schema_context(schema):
        return [event.summary for event in audit_event_search(action="retention.purge")]


def test_daily_dispatch_queues_one_purge_per_ready_tenant(canary_tenants, worker, monkeypatch, settings):  # noqa: F811
    """Beat's dispatch queues a purge in every ready tenant on the real broker; the real worker runs each in the
    tenant it was queued for (recorded inside the task as it ran), with that tenant's own policy."""
    import time

    from django.db import connection

    from apps.compliance import tasks
    from apps.tenants.selectors import tenant_list_ready
    from tests.security.probes import _in_own_connection

    assert settings.CELERY_BEAT_SCHEDULE["compliance-retention"]["task"] == "compliance.dispatch_retention"
    ran_in: list[str] = []
    real_purge = tasks.retention_purge

    def purge_recording_its_schema() -> dict:
        ran_in.append(connection.schema_name)  # the worker thread's connection, as the task runs
        return real_purge()

    monkeypatch.setattr(tasks, "retention_purge", purge_recording_its_schema)
    try:
        sessions = _in_own_connection(_dispatch_tenants_setup)
        ready = _in_own_connection(lambda: sorted(t.schema_name for t in tenant_list_ready()))
        assert set(DISPATCH_SCHEMAS) | {canary_tenants.a.schema_name, canary_tenants.b.schema_name} <= set(ready)
        count = _in_own_connection(lambda: tasks.retention_dispatch_task.apply().get())  # as beat, in public
        assert count == len(ready)
        deadline = time.monotonic() + DISPATCH_WAIT_S
        while len(ran_in) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # a duplicate purge would show now
        assert sorted(ran_in) == ready  # one purge per ready tenant, each in its own schema
        # Each tenant's messages were purged by its own policy (30 and 10 days), in its schema only.
        assert _in_own_connection(_messages_left, "retention_d1", sessions["retention_d1"]) == ["m1", "m2"]
        assert _in_own_connection(_messages_left, "retention_d2", sessions["retention_d2"]) == ["m2"]
        [summary_1] = _in_own_connection(_purge_summaries, "retention_d1")
        [summary_2] = _in_own_connection(_purge_summaries, "retention_d2")
        assert '"messages": 1' in summary_1 and '"messages": 2' in summary_2
    finally:
        _in_own_connection(_dispatch_tenants_drop)


def test_export_archives_expire_after_the_keep_period_whatever_the_policies(canary_tenants):
    import uuid as uuid_module

    from apps.compliance.gdpr import export_archive_store, subject_export_read
    from apps.compliance.models import DataSubjectRequest

    with schema_context(canary_tenants.a.schema_name):
        rows = {}
        for name, age in (("old", retention.EXPORT_ARCHIVE_KEEP_DAYS + 1), ("new", 1)):
            rows[name] = DataSubjectRequest.objects.create(
                id=uuid_module.uuid4(), kind="export", subject_kind="email", subject="a@x.com", subject_digest="d",
                status="done", requested_by="dpo", completed_at=_ago(age), report={"counts": {"messages": 1}})
            export_archive_store(request_id=rows[name].pk, archive=b"zip")
        assert retention_purge() == {"exports": 1}
        with pytest.raises(FileNotFoundError):
            subject_export_read(request_id=str(rows["old"].pk))
        assert subject_export_read(request_id=str(rows["new"].pk)) == b"zip"
        rows["old"].refresh_from_db()
        assert rows["old"].report == {"counts": {"messages": 1}, "archive_expired": True}
        assert retention_purge() == {}


def _audit_events(schema: str, ages: list[float]) -> None:
    from apps.compliance.models import AuditEvent

    with schema_context(schema):
        for days in ages:
            AuditEvent.objects.create(at=_ago(days), actor="test", action=f"test.aged.{days}")


def _aged_left(schema: str) -> list[str]:
    from apps.compliance.models import AuditEvent

    with schema_context(schema):
        return sorted(AuditEvent.objects.filter(action__startswith="test.aged.").values_list("action", flat=True))


def test_audit_events_past_the_keep_period_are_purged_in_batches(canary_tenants, monkeypatch, settings):
    a, b = canary_tenants.a, canary_tenants.b
    monkeypatch.setattr(retention, "RETENTION_BATCH_SIZE", 2)  # 3 old events: batches of 2, 1
    _audit_events(a.schema_name, [400, 200, 121, 119, 1])
    _audit_events(b.schema_name, [400])
    with schema_context(a.schema_name):
        settings.AUDIT_LOG_KEEP_DAYS = 0  # unset: kept forever
        assert retention_purge() == {}
        settings.AUDIT_LOG_KEEP_DAYS = 120
        assert retention_purge() == {"audit": 3}
        [event] = audit_event_search(action="retention.purge")  # the purge itself is recorded, after it
        assert '"audit": 3' in event.summary
    assert _aged_left(a.schema_name) == ["test.aged.1", "test.aged.119"]
    assert _aged_left(b.schema_name) == ["test.aged.400"]  # another tenant's log is its own purge's


def test_audit_retention_below_the_minimum_keeps_the_minimum(canary_tenants, settings):
    a = canary_tenants.a
    _audit_events(a.schema_name, [retention.AUDIT_LOG_KEEP_MIN_DAYS + 1, retention.AUDIT_LOG_KEEP_MIN_DAYS - 1, 20])
    settings.AUDIT_LOG_KEEP_DAYS = 7
    with schema_context(a.schema_name):
        assert retention_purge() == {"audit": 1}
    assert _aged_left(a.schema_name) == sorted([f"test.aged.{retention.AUDIT_LOG_KEEP_MIN_DAYS - 1}", "test.aged.20"])


def test_only_the_purge_may_delete_audit_events_and_nothing_may_change_them(canary_tenants):
    from django.db import DatabaseError, connection, transaction

    a = canary_tenants.a
    _audit_events(a.schema_name, [400])
    with schema_context(a.schema_name):
        for statement, marked in (("DELETE FROM compliance_auditevent", False),
                                  ("UPDATE compliance_auditevent SET actor = 'x'", True),
                                  ("TRUNCATE compliance_auditevent", True)):
            with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
                if marked:
                    cursor.execute("SET LOCAL gbplatform.audit_purge = 'on'")
                cursor.execute(statement)
    assert _aged_left(a.schema_name) == ["test.aged.400"]


def test_chat_users_left_without_sessions_go_with_the_sessions_policy(canary_tenants):
    from apps.bots.models import Bot
    from apps.sessions.models import ChatSession, ChatUser

    a = canary_tenants.a
    with schema_context(a.schema_name):
        bot = Bot.objects.get(pk=1)
        users = {}
        for name, created, session_days in (("gone", 100, 100), ("active", 100, 2), ("new", 10, None),
                                            ("never", 100, None)):
            user = ChatUser.objects.create(username=name, email=f"{name}@example.com",
                                           external_id=f"{name}@example.com",
                                           memory={"plan": {"value": "gold", "expires": None}})
            ChatUser.objects.filter(pk=user.pk).update(created_at=_ago(created))
            if session_days is not None:
                session = ChatSession.objects.create(user=user, bot=bot)
                ChatSession.objects.filter(pk=session.pk).update(last_activity=_ago(session_days))
            users[name] = user.pk
        retention_policy_set(data_class="sessions", days=90)
        assert retention_purge() == {"sessions": 1, "chat_users": 2}
        assert sorted(ChatUser.objects.filter(pk__in=users.values()).values_list("username", flat=True)) == [
            "active", "new"]


def test_a_chat_user_given_a_session_during_the_purge_keeps_it(canary_tenants):
    """A returning anonymous visitor gets a session after the purge selected them as idle: just before the
    purge's DELETE of chat users (after Django's delete() had collected the users' sessions, in the old code)."""
    from django.db import connection

    from apps.bots.models import Bot
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=1)
        returning, idle = (ChatUser.objects.create(username=name) for name in ("returning", "idle"))
        ChatUser.objects.filter(pk__in=[returning.pk, idle.pk]).update(created_at=_ago(100))
        retention_policy_set(data_class="sessions", days=90)
        table = connection.ops.quote_name(ChatUser._meta.db_table)
        started = []

        def visitor_returns(execute, sql, params, many, context):
            if sql.split(" WHERE ")[0] == f"DELETE FROM {table}" and not started:  # noqa: S608 - a comparison
                started.append(ChatSession.objects.create(user=returning, bot=bot))
                Message.objects.create(session=started[0], index=0, role=Role.USER, content="hello again")
            return execute(sql, params, many, context)

        with connection.execute_wrapper(visitor_returns):
            counts = retention_purge()
        assert counts.get("chat_users") == 1 and started
        assert list(ChatUser.objects.filter(pk__in=[returning.pk, idle.pk]).values_list("username", flat=True)) == [
            "returning"]
        assert ChatSession.objects.filter(pk=started[0].pk).exists()
        assert Message.objects.filter(session=started[0]).count() == 1


def test_expired_user_memory_values_are_removed_whatever_the_policies(canary_tenants):
    from apps.sessions.models import ChatUser

    with schema_context(canary_tenants.a.schema_name):
        user = ChatUser.objects.create(username="m", memory={
            "otp": {"value": "123456", "expires": _ago(1).isoformat()},
            "plan": {"value": "gold", "expires": None},
            "cart": {"value": ["x"], "expires": (timezone.now() + timedelta(days=1)).isoformat()}})
        assert retention_purge() == {"user_memory_expired": 1}
        user.refresh_from_db()
        assert set(user.memory) == {"plan", "cart"}
        assert retention_purge() == {}


def test_job_runs_past_the_keep_period_are_purged_but_waiting_ones_stay(canary_tenants):
    from apps.automation.models import JobRun
    from apps.bots.models import Bot

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=1)
        runs = {status: JobRun.objects.create(bot=bot, script_name="s.bas", cron="* * * * *", status=status,
                                              scheduled_for=_ago(age), output="sent to ana@example.com").pk
                for status, age in ((JobRun.Status.OK, retention.JOB_RUN_KEEP_DAYS + 1),
                                    (JobRun.Status.ERROR, retention.JOB_RUN_KEEP_DAYS + 30),
                                    (JobRun.Status.WAITING, retention.JOB_RUN_KEEP_DAYS + 30),
                                    (JobRun.Status.QUEUED, retention.JOB_RUN_KEEP_DAYS + 30),
                                    (JobRun.Status.RUNNING, 1))}
        assert retention_purge() == {"job_runs": 2}
        assert sorted(JobRun.objects.filter(pk__in=runs.values()).values_list("status", flat=True)) == [
            "queued", "running", "waiting"]
