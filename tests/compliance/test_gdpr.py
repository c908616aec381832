"""Data-subject export and erasure: everything about one person, in one tenant, and nothing else.

A subject ("Ana", ana@example.com) has data in every store of tenant A: chat user and user memory,
sessions and messages, bot memory (encrypted), mail in and out, an attachment in the drive, a knowledge-base
document indexed from it (chunks with vectors), a bot table row, a consent. Another user of A and a user of
tenant B with the same e-mail address have data too. Each piece of Ana's data in A carries ANA; each piece
of the others carries their own canary, so a scan of every table and file tells exactly what was touched.
"""

from __future__ import annotations

import datetime
import io
import json
import uuid
import zipfile
from dataclasses import dataclass

import pytest
from django_tenants.utils import schema_context

from apps.compliance.gdpr import (
    SubjectError,
    export_archive_key,
    subject_erase,
    subject_parse,
    subject_request_create,
    subject_request_execute,
)
from apps.compliance.models import DataSubjectRequest
from apps.compliance.selectors import audit_event_search
from tests.security.canary_scan import db_rows_containing, drive_files_containing

pytestmark = pytest.mark.django_db

ANA = "ANA-PII-5d1e"
VERA = "VERA-OTHER-8c27"  # another user of tenant A
BRUNO = "BRUNO-TENANT-B-3f90"  # tenant B's user with the same address as Ana
ADDRESS = "ana@example.com"
VECTOR = [1.0, 0.0, 0.0]


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


@dataclass
class Planted:
    user_id: str
    other_user_id: str
    attachment_key: str


def _plant(schema: str, *, canary: str, address: str, other_canary: str | None = None) -> Planted:
    """One person's data in every store of `schema` (and, with other_canary, another user's)."""
    from apps.bots.models import Bot, BotMemory, BotTableRow
    from apps.compliance.consent import consent_record
    from apps.drive.storage import tenant_drive
    from apps.kb.models import Document, KnowledgeBase
    from apps.kb.vectorstores import ChunkRecord, PgVectorStore
    from apps.mail.models import IncomingMail, OutgoingMail
    from apps.mail.services import bot_drive_root
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(schema):
        bot = Bot.objects.get(pk=1)
        user = ChatUser.objects.create(username=f"{canary} user", email=address.upper(), external_id=address,
                                       is_anonymous=False, memory={"nickname": {"value": f"{canary}-memory"}})
        for n in range(2):
            session = ChatSession.objects.create(user=user, bot=bot, channel="web", title=f"{canary} chat {n}")
            Message.objects.create(session=session, index=0, role=Role.USER, content=f"{canary} says hi {n}")
            Message.objects.create(session=session, index=1, role=Role.ASSISTANT, content=f"hello {canary}")
        BotMemory.objects.create(bot=bot, key=f"{address}:plan", value={"plan": f"{canary}-plan"})
        BotMemory.objects.create(bot=bot, key=f"lead-{uuid.uuid4().hex[:6]}", value={"who": address, "c": canary})
        BotTableRow.objects.create(bot=bot, table="customers", data={"email": address, "note": f"{canary} row"})
        mail = IncomingMail.objects.create(bot=bot, message_id=f"<{uuid.uuid4()}@x>", thread_key="t",
                                           from_address=address, subject=f"{canary} question")
        path = f"mail/inbox/{mail.pk}/{canary}-invoice.txt"
        key = bot_drive_root(bot) + path
        tenant_drive().write(key, f"invoice of {canary}".encode())
        mail.attachments = [{"name": f"{canary}-invoice.txt", "size": 20, "path": path}]
        mail.save(update_fields=["attachments"])
        OutgoingMail.objects.create(bot=bot, to=f"{address}", subject=f"re: {canary}", message_id=f"<{uuid.uuid4()}@x>",
                                    body_text=f"dear {canary}", status=OutgoingMail.Status.SENT)
        kb, _ = KnowledgeBase.objects.get_or_create(bot=bot, name="inbox")
        document = Document.objects.create(kb=kb, path=key, etag="e1", size=20)
        PgVectorStore().replace_document(
            tenant=schema, bot=bot.name, bot_id=bot.pk, kb_id=kb.pk, document_id=document.pk, model="test",
            records=[ChunkRecord(document_id=document.pk, document_path=key, kb="inbox", index=0,
                                 text=f"invoice of {canary}", start_char=0, end_char=20, page=None, heading="",
                                 vector=VECTOR)])
        consent_record(subject=address, purpose="marketing", granted=True, source=f"web-chat {canary}")
        from apps.analytics.models import DailyQuestion

        DailyQuestion.objects.create(day=datetime.date.today(), bot=bot, text=f"is {address} registered {canary}",
                                     asked=1)
        other_id = ""
        if other_canary:
            other = ChatUser.objects.create(username=f"{other_canary} user", email="vera@example.com",
                                            external_id="vera@example.com", is_anonymous=False,
                                            memory={"k": {"value": other_canary}})
            session = ChatSession.objects.create(user=other, bot=bot, title=f"{other_canary} chat")
            Message.objects.create(session=session, index=0, role=Role.USER, content=f"{other_canary} here")
            BotMemory.objects.create(bot=bot, key="vera@example.com:plan", value={"plan": other_canary})
            BotTableRow.objects.create(bot=bot, table="customers", data={"email": "vera@example.com",
                                                                          "note": other_canary})
            OutgoingMail.objects.create(bot=bot, to="vera@example.com", subject=other_canary,
                                        message_id=f"<{uuid.uuid4()}@x>", body_text=other_canary,
                                        status=OutgoingMail.Status.SENT)
            other_doc = Document.objects.create(kb=kb, path=f"{bot.name}.gbai/{bot.name}.gbkb/inbox/faq.txt",
                                                etag="e2", size=10)
            PgVectorStore().replace_document(
                tenant=schema, bot=bot.name, bot_id=bot.pk, kb_id=kb.pk, document_id=other_doc.pk, model="test",
                records=[ChunkRecord(document_id=other_doc.pk, document_path=other_doc.path, kb="inbox", index=0,
                                     text=f"faq {other_canary}", start_char=0, end_char=10, page=None, heading="",
                                     vector=VECTOR)])
            tenant_drive().write(other_doc.path, f"faq {other_canary}".encode())
            other_id = str(other.pk)
        return Planted(str(user.pk), other_id, key)


@pytest.fixture
def world(canary_tenants):
    a, b = canary_tenants.a, canary_tenants.b
    planted_a = _plant(a.schema_name, canary=ANA, address=ADDRESS, other_canary=VERA)
    planted_b = _plant(b.schema_name, canary=BRUNO, address=ADDRESS)
    return a, b, planted_a, planted_b


def _vector_hits(schema: str) -> list[str]:
    from apps.kb.vectorstores import PgVectorStore

    with schema_context(schema):
        from apps.bots.models import Bot

        bot = Bot.objects.get(pk=1)
        hits = PgVectorStore().search(tenant=schema, bot=bot.name, kbs=["inbox"], vector=VECTOR, limit=10)
    return [hit.text for hit in hits]


def _run(schema: str, kind: str, subject: str, django_capture_on_commit_callbacks) -> DataSubjectRequest:
    with schema_context(schema):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            row = subject_request_create(kind=kind, subject=subject, requested_by="dpo")
        assert len(callbacks) == 1  # the job is queued after commit
        return subject_request_execute(request_id=str(row.pk))


# --- subjects ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "kind", "normalised"),
    [
        ("Ana@Example.com ", "email", "ana@example.com"),
        ("+55 (11) 98765-4321", "phone", "+5511987654321"),
        ("11987654321", "phone", "11987654321"),
        ("3F2A1B4C-1234-4678-9ABC-1234567890AB", "chat_user", "3f2a1b4c-1234-4678-9abc-1234567890ab"),
    ],
)
def test_subjects_are_recognised_and_normalised(value, kind, normalised):
    subject = subject_parse(value)
    assert (subject.kind, subject.value) == (kind, normalised)


@pytest.mark.parametrize(
    ("value", "reason"),
    [("", "empty"), ("ana@", "not a valid e-mail"), ("12-34", "neither"), ("robert'); drop", "neither"),
     ("x" * 300, "limit is 254")],
)
def test_bad_subjects_are_refused_with_the_reason_and_nothing_is_recorded(canary_tenants, value, reason):
    with schema_context(canary_tenants.a.schema_name):
        with pytest.raises(SubjectError, match=reason):
            subject_request_create(kind="export", subject=value, requested_by="dpo")
        assert not DataSubjectRequest.objects.exists()


# --- export ----------------------------------------------------------------------------------------


def test_export_archive_holds_everything_about_the_subject_and_nothing_of_others(
        world, django_capture_on_commit_callbacks):
    a, b, planted, _ = world
    row = _run(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    assert row.status == DataSubjectRequest.Status.DONE and row.report["archive"] == export_archive_key(row.pk)
    from apps.compliance.gdpr import subject_export_read
    from apps.drive.storage import tenant_drive

    sealed = tenant_drive(a.schema_name).read(row.report["archive"])
    assert ANA.encode() not in sealed and not sealed.startswith(b"PK")  # the drive holds ciphertext only
    with schema_context(a.schema_name):
        archive = zipfile.ZipFile(io.BytesIO(subject_export_read(request_id=str(row.pk))))
    files = {name: archive.read(name) for name in archive.namelist()}
    manifest = json.loads(files["manifest.json"])
    assert manifest["counts"] == {"chat_users": 1, "user_memory_keys": 1, "sessions": 2, "messages": 4,
                                  "bot_memory": 2, "mail_incoming": 1, "mail_outgoing": 1, "bot_table_rows": 1,
                                  "consents": 1, "files": 1, "mail_outgoing_mentions": 0, "job_runs": 0,
                                  "meeting_rooms": 0}
    assert manifest["request_id"] == str(row.pk) and manifest["subject"] == {"kind": "email", "value": ADDRESS}
    messages = json.loads(files["messages.json"])
    assert {m["content"] for m in messages} == {f"{ANA} says hi 0", f"{ANA} says hi 1", f"hello {ANA}"}
    assert json.loads(files["user_memory.json"]) == {planted.user_id: {"nickname": {"value": f"{ANA}-memory"}}}
    assert files[f"files/{planted.attachment_key}"] == f"invoice of {ANA}".encode()
    everything = b"".join(files.values()).decode()
    assert VERA not in everything and BRUNO not in everything
    # The audit log names the request and counts, never the person.
    with schema_context(a.schema_name):
        events = list(audit_event_search(object_id=str(row.pk)))
    assert [e.action for e in events] == ["dsr.export", "dsr.requested"]
    assert all(ADDRESS not in e.summary and ANA not in e.summary for e in events)
    assert json.loads(events[0].summary)["counts"]["messages"] == 4


def test_export_by_chat_user_id_finds_the_mail_of_the_users_address(world, django_capture_on_commit_callbacks):
    a, _, planted, _ = world
    row = _run(a.schema_name, "export", planted.user_id, django_capture_on_commit_callbacks)
    assert row.report["counts"]["mail_incoming"] == 1 and row.report["counts"]["messages"] == 4


def test_export_by_phone_matches_the_external_id_digits(canary_tenants, django_capture_on_commit_callbacks):
    from apps.bots.models import Bot
    from apps.sessions.models import ChatSession, ChatUser, Message, Role

    with schema_context(canary_tenants.a.schema_name):
        user = ChatUser.objects.create(username="wa", external_id="+55 11 98765-4321", is_anonymous=False)
        session = ChatSession.objects.create(user=user, bot=Bot.objects.get(pk=1), channel="whatsapp")
        Message.objects.create(session=session, index=0, role=Role.USER, content="oi")
        from apps.compliance.consent import consent_record

        consent_record(subject="+55 11 98765-4321", purpose="whatsapp", granted=True)  # stored with its "+"
    row = _run(canary_tenants.a.schema_name, "export", "5511987654321", django_capture_on_commit_callbacks)
    assert row.report["counts"]["chat_users"] == 1 and row.report["counts"]["messages"] == 1
    assert row.report["counts"]["consents"] == 1


# --- erasure ---------------------------------------------------------------------------------------


def test_erasure_leaves_nothing_of_the_subject_and_everything_of_others(world, django_capture_on_commit_callbacks):
    a, b, planted, _ = world
    export = _run(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    assert drive_files_containing(a.schema_name, ANA)  # the attachment before the erasure
    from apps.drive.storage import tenant_drive

    assert tenant_drive(a.schema_name).exists(export.report["archive"])
    b_rows_before = db_rows_containing(b.schema_name, BRUNO)
    vera_rows_before = db_rows_containing(a.schema_name, VERA)
    ana_rows_before = db_rows_containing(a.schema_name, ANA)
    # The scan sees every store: users, sessions, messages, encrypted bot memory, mail, rows, chunks, consents.
    assert {r.split("#")[0] for r in ana_rows_before} >= {
        "chat.ChatUser", "chat.ChatSession", "chat.Message", "bots.BotMemory", "bots.BotTableRow",
        "mail.IncomingMail", "mail.OutgoingMail", "kb.Chunk", "compliance.ConsentRecord", "analytics.DailyQuestion"}
    assert vera_rows_before and b_rows_before

    row = _run(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)

    assert row.status == DataSubjectRequest.Status.DONE and row.subject == ""
    assert row.report["counts"] == {"chat_users": 1, "user_memory_keys": 1, "sessions": 2, "messages": 4,
                                    "bot_memory": 2, "mail_incoming": 1, "mail_outgoing": 1, "bot_table_rows": 1,
                                    "bot_table_rows_redacted": 0, "bot_memory_redacted": 0, "mail_outgoing_redacted": 0,
                                    "job_runs_redacted": 0, "meeting_rooms_redacted": 0, "consents": 1,
                                    "files": 1, "documents": 1, "chunks": 1, "exports": 1,
                                    "analytics_questions": 1, "llm_cached_answers": 0,
                                    "drive_files_naming_subject": 0}
    # No message, memory, mail, row, vector or file of Ana remains in tenant A, nor her address.
    assert db_rows_containing(a.schema_name, ANA) == []
    assert [r for r in db_rows_containing(a.schema_name, ADDRESS) if not r.startswith("compliance.")] == []
    assert drive_files_containing(a.schema_name, ANA) == []
    assert not tenant_drive(a.schema_name).exists(export.report["archive"])  # the sealed archive too
    assert all(ANA not in text for text in _vector_hits(a.schema_name))
    # The requests keep a digest of who they were about, not the address.
    with schema_context(a.schema_name):
        assert DataSubjectRequest.objects.get(pk=export.pk).subject == ""
        assert DataSubjectRequest.objects.get(pk=export.pk).subject_digest == row.subject_digest
    # Vera's data in A and everything in B are intact.
    assert db_rows_containing(a.schema_name, VERA) == vera_rows_before
    assert any(VERA in text for text in _vector_hits(a.schema_name))
    assert drive_files_containing(a.schema_name, VERA)
    assert db_rows_containing(b.schema_name, BRUNO) == b_rows_before
    assert drive_files_containing(b.schema_name, BRUNO) and any(BRUNO in t for t in _vector_hits(b.schema_name))
    # The audit log records it, with the request id and counts only.
    with schema_context(a.schema_name):
        [event] = audit_event_search(action="dsr.erase")
    assert event.object_id == str(row.pk) and json.loads(event.summary)["counts"]["messages"] == 4
    assert ADDRESS not in event.summary and ANA not in event.summary


def test_erasure_is_idempotent(world, django_capture_on_commit_callbacks):
    a, *_ = world
    _run(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    with schema_context(a.schema_name):
        again = subject_erase(subject=ADDRESS)
    assert set(again.values()) == {0}


def test_a_failed_erasure_is_recorded_and_a_rerun_finishes_it(world, django_capture_on_commit_callbacks,
                                                               monkeypatch):
    a, *_ = world
    from apps.compliance import gdpr

    real = gdpr.subject_data
    calls = {"n": 0}

    def failing_once(subject):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("drive unreachable")
        return real(subject)

    monkeypatch.setattr(gdpr, "subject_data", failing_once)
    with schema_context(a.schema_name):
        with django_capture_on_commit_callbacks(execute=False):
            row = subject_request_create(kind="erasure", subject=ADDRESS, requested_by="dpo")
        with pytest.raises(ConnectionError):
            subject_request_execute(request_id=str(row.pk))
        row.refresh_from_db()
        assert row.status == DataSubjectRequest.Status.FAILED and "drive unreachable" in row.error
        assert row.subject == ADDRESS  # still needed to finish the job
        row = subject_request_execute(request_id=str(row.pk))
        assert row.status == DataSubjectRequest.Status.DONE and row.report["counts"]["messages"] == 4
        assert [e.summary for e in audit_event_search(action="dsr.erase")][-1] == '{"status": "failed"}'
    assert db_rows_containing(a.schema_name, ANA) == []


def test_request_job_runs_as_a_tenant_task(world, django_capture_on_commit_callbacks):
    from apps.compliance.tasks import subject_request_run_task

    a, *_ = world
    with schema_context(a.schema_name):
        with django_capture_on_commit_callbacks(execute=False):
            row = subject_request_create(kind="export", subject=ADDRESS, requested_by="dpo")
        result = subject_request_run_task.apply(args=[str(row.pk)], headers={"_schema_name": a.schema_name})
    assert result.get()["status"] == "done"
    # A finished request is not carried out twice.
    with schema_context(a.schema_name):
        assert subject_request_execute(request_id=str(row.pk)).completed_at == DataSubjectRequest.objects.get(
            pk=row.pk).completed_at
        assert len(list(audit_event_search(action="dsr.export"))) == 1


def test_a_sealed_archive_copied_to_another_request_or_tenant_does_not_open(world, django_capture_on_commit_callbacks):
    from apps.compliance.gdpr import ExportArchiveUnreadable, subject_export_read
    from apps.drive.storage import tenant_drive

    a, b, _, _ = world
    first = _run(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    second = _run(a.schema_name, "export", "vera@example.com", django_capture_on_commit_callbacks)
    other = _run(b.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    sealed = tenant_drive(a.schema_name).read(first.report["archive"])
    tenant_drive(a.schema_name).write(second.report["archive"], sealed)  # swapped within the tenant
    tenant_drive(b.schema_name).write(other.report["archive"], sealed)  # copied into tenant B
    with schema_context(a.schema_name):
        assert zipfile.ZipFile(io.BytesIO(subject_export_read(request_id=str(first.pk)))).testzip() is None
        with pytest.raises(ExportArchiveUnreadable):
            subject_export_read(request_id=str(second.pk))
    with schema_context(b.schema_name), pytest.raises(ExportArchiveUnreadable):
        subject_export_read(request_id=str(other.pk))


# --- requests about the same person ----------------------------------------------------------------


def _queue(schema: str, kind: str, subject: str, django_capture_on_commit_callbacks) -> DataSubjectRequest:
    with schema_context(schema), django_capture_on_commit_callbacks(execute=False):
        return subject_request_create(kind=kind, subject=subject, requested_by="dpo")


def test_a_second_request_for_an_erased_person_finds_nothing_and_touches_no_one_else(
        world, django_capture_on_commit_callbacks):
    """Two requests about Ana queued before either runs: the erasure that runs first must not leave the other
    with a blank subject (a blank matched every user, row, memory entry and question of the tenant)."""
    a, b, _, _ = world
    first = _queue(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    second = _queue(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    export = _queue(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    failed = _queue(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    with schema_context(a.schema_name):
        DataSubjectRequest.objects.filter(pk=failed.pk).update(status=DataSubjectRequest.Status.FAILED)
    vera_rows = db_rows_containing(a.schema_name, VERA)
    with schema_context(a.schema_name):
        assert subject_request_execute(request_id=str(first.pk)).status == DataSubjectRequest.Status.DONE
        assert DataSubjectRequest.objects.get(pk=second.pk).subject == ADDRESS  # still to run: kept
        assert DataSubjectRequest.objects.get(pk=failed.pk).subject == ""  # a failed one: the digest only
        again = subject_request_execute(request_id=str(second.pk))
        late_export = subject_request_execute(request_id=str(export.pk))
    assert again.status == DataSubjectRequest.Status.DONE and set(again.report["counts"].values()) == {0}
    assert again.subject == ""
    assert late_export.status == DataSubjectRequest.Status.DONE and late_export.subject == ""
    assert set(late_export.report["counts"].values()) == {0}
    assert db_rows_containing(a.schema_name, VERA) == vera_rows
    with schema_context(a.schema_name):
        from apps.compliance.gdpr import subject_export_read

        archive = zipfile.ZipFile(io.BytesIO(subject_export_read(request_id=str(late_export.pk))))
        assert VERA not in b"".join(archive.read(name) for name in archive.namelist()).decode()


def test_a_request_whose_subject_was_blanked_fails_and_changes_nothing(world, django_capture_on_commit_callbacks):
    a, *_ = world
    row = _queue(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    before = db_rows_containing(a.schema_name, VERA) + db_rows_containing(a.schema_name, ANA)
    with schema_context(a.schema_name):
        DataSubjectRequest.objects.filter(pk=row.pk).update(subject="")  # as an older erasure left it
        done = subject_request_execute(request_id=str(row.pk))
        assert done.status == DataSubjectRequest.Status.FAILED and "earlier erasure" in done.error
        from apps.compliance.gdpr import Subject

        with pytest.raises(SubjectError, match="empty"):
            subject_erase(subject=Subject("email", ""))
    assert db_rows_containing(a.schema_name, VERA) + db_rows_containing(a.schema_name, ANA) == before


def test_erasure_drops_the_tenants_cached_llm_answers_only(world, django_capture_on_commit_callbacks):
    from apps.llm.store import redis_client

    a, b, _, _ = world
    client = redis_client()
    ours, theirs = f"llm:cache:{a.schema_name}:1:m:e:{ANA}", f"llm:cache:{b.schema_name}:1:m:e:{BRUNO}"
    client.set(ours, json.dumps({"question": f"is {ADDRESS} registered?", "response": "yes"}))
    client.set(theirs, json.dumps({"question": f"is {ADDRESS} registered?", "response": "yes"}))
    try:
        row = _run(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
        assert row.report["counts"]["llm_cached_answers"] == 1
        assert client.get(ours) is None and client.get(theirs) is not None
    finally:
        client.delete(ours, theirs)


def test_erasure_searches_every_bot_memory_entry(world, django_capture_on_commit_callbacks):
    """Bot memory is encrypted and searched by decrypting it: an entry after thousands of others is found."""
    from apps.bots.models import Bot, BotMemory

    a, *_ = world
    with schema_context(a.schema_name):
        bot = Bot.objects.get(pk=1)
        BotMemory.objects.bulk_create(BotMemory(bot=bot, key=f"filler-{n}", value={"n": n}) for n in range(5001))
        BotMemory.objects.create(bot=bot, key="late", value={"contact": ADDRESS})
    row = _run(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    assert row.report["counts"]["bot_memory"] == 3
    with schema_context(a.schema_name):
        assert not BotMemory.objects.filter(key="late").exists()
        assert BotMemory.objects.filter(key__startswith="filler-").count() == 5001


def test_a_request_whose_runs_keep_ending_with_their_worker_fails_instead_of_running_for_ever(
        world, django_capture_on_commit_callbacks):
    a, *_ = world
    row = _queue(a.schema_name, "erasure", ADDRESS, django_capture_on_commit_callbacks)
    ana_rows = db_rows_containing(a.schema_name, ANA)
    with schema_context(a.schema_name):
        # Two runs killed mid-way (the row stays `running`); the redelivered job runs again and finishes...
        DataSubjectRequest.objects.filter(pk=row.pk).update(status=DataSubjectRequest.Status.RUNNING, interrupted=1)
        again = subject_request_execute(request_id=str(row.pk))
        assert again.status == DataSubjectRequest.Status.DONE and again.interrupted == 2
        # ... but at the third interruption in a row it stops and says why.
        other = _queue(a.schema_name, "export", "vera@example.com", django_capture_on_commit_callbacks)
        DataSubjectRequest.objects.filter(pk=other.pk).update(status=DataSubjectRequest.Status.RUNNING, interrupted=2)
        stopped = subject_request_execute(request_id=str(other.pk))
        assert stopped.status == DataSubjectRequest.Status.FAILED and "ended with their worker" in stopped.error
        assert not stopped.report
    assert ana_rows and db_rows_containing(a.schema_name, ANA) == []


def test_a_copy_the_stale_sweep_queued_leaves_a_request_already_taken_alone(world, django_capture_on_commit_callbacks):
    """The sweep re-queues a request pending for 30 minutes; if its own job was only stuck behind a backlog, both
    arrive: the copy found it `running`, took it for a run whose worker died, counted an interruption and ran the
    erasure again at the same time (at the third copy it marked the running request failed)."""
    a, *_ = world
    row = _queue(a.schema_name, "export", ADDRESS, django_capture_on_commit_callbacks)
    with schema_context(a.schema_name):
        DataSubjectRequest.objects.filter(pk=row.pk).update(status=DataSubjectRequest.Status.RUNNING)
        copy = subject_request_execute(request_id=str(row.pk), requeued=True)
        assert (copy.status, copy.interrupted, copy.report) == (DataSubjectRequest.Status.RUNNING, 0, {})
        # Still pending (its job really was lost): the copy carries it out.
        DataSubjectRequest.objects.filter(pk=row.pk).update(status=DataSubjectRequest.Status.PENDING)
        assert subject_request_execute(request_id=str(row.pk), requeued=True).status == DataSubjectRequest.Status.DONE
