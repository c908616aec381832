"""Data-subject requests match identifiers exactly: ana@example.com is not mariana@example.com, a phone
number is found however it was typed (with or without its country code, its separators), and a number is
never found inside an order number or an e-mail address."""

from __future__ import annotations

import datetime
import json

import pytest
from django_tenants.utils import schema_context

from apps.compliance.gdpr import subject_data, subject_erase, subject_parse

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_storage(local_storage):
    return local_storage


def _rows(schema: str, *datas: dict) -> list[int]:
    from apps.bots.models import Bot, BotTableRow

    with schema_context(schema):
        bot = Bot.objects.get(pk=1)
        return [BotTableRow.objects.create(bot=bot, table="customers", data=data).pk for data in datas]


def _left(schema: str, pks: list[int]) -> list[int]:
    from apps.bots.models import BotTableRow

    with schema_context(schema):
        return sorted(BotTableRow.objects.filter(pk__in=pks).values_list("pk", flat=True))


def test_an_address_is_not_found_inside_a_longer_one(canary_tenants):
    a = canary_tenants.a.schema_name
    ana, mariana, joana, other_domain = _rows(
        a, {"email": " Ana@Example.com "}, {"email": "mariana@example.com"}, {"email": "joana@example.com"},
        {"email": "ana@example.com.br"})
    counts = _erase(a, "ana@example.com")
    assert counts["bot_table_rows"] == 1
    assert _left(a, [ana, mariana, joana, other_domain]) == [mariana, joana, other_domain]


def test_a_phone_is_found_in_every_spelling_and_not_in_other_numbers(canary_tenants):
    a = canary_tenants.a.schema_name
    pks = _rows(a, {"phone": "5511987654321"}, {"phone": "(11) 98765-4321"}, {"phone": 5511987654321},
                {"note": "call me on +55 11 98765 4321 after six"},
                {"order": "654321"}, {"order": "1198765432100"}, {"email": "5511987654321@example.com"},
                {"phone": "5511987654322"})
    counts = _erase(a, "+55 11 98765-4321")
    assert (counts["bot_table_rows"], counts["bot_table_rows_redacted"]) == (3, 1)
    assert _left(a, pks) == pks[3:]  # the note naming the number is blanked (see the shared-values tests)


def test_a_short_phone_subject_does_not_match_longer_numbers(canary_tenants):
    a = canary_tenants.a.schema_name
    pks = _rows(a, {"order": "1654321"}, {"order": "order 6543210"}, {"phone": "654321"})
    assert _erase(a, "654321")["bot_table_rows"] == 1
    assert _left(a, pks) == pks[:2]


def test_a_phone_subject_does_not_match_a_chat_user_whose_address_holds_its_digits(canary_tenants):
    from apps.sessions.models import ChatUser

    with schema_context(canary_tenants.a.schema_name):
        mail_user = ChatUser.objects.create(username="m", external_id="5511987654321@example.com", is_anonymous=False)
        phone_user = ChatUser.objects.create(username="p", external_id="whatsapp:+55 (11) 98765-4321",
                                             is_anonymous=False)
        data = subject_data(subject_parse("5511987654321"))
    assert [user.pk for user in data.users] == [phone_user.pk] and mail_user.pk not in {u.pk for u in data.users}


def test_questions_and_bot_memory_are_matched_by_whole_address(canary_tenants):
    from apps.analytics.models import DailyQuestion
    from apps.bots.models import Bot, BotMemory

    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        today = datetime.date.today()
        ours = DailyQuestion.objects.create(day=today, bot=bot, text="my email is ana@example.com", asked=1)
        theirs = DailyQuestion.objects.create(day=today, bot=bot, text="my email is mariana@example.com", asked=1)
        BotMemory.objects.create(bot=bot, key="mariana@example.com:plan", value={"plan": "gold"})
        BotMemory.objects.create(bot=bot, key="lead", value={"who": "joana@example.com"})
        counts = subject_erase(subject="ana@example.com")
        assert counts["analytics_questions"] == 1 and counts["bot_memory"] == 0
        assert list(DailyQuestion.objects.filter(pk__in=[ours.pk, theirs.pk]).values_list("pk", flat=True)) == [
            theirs.pk]
        assert BotMemory.objects.filter(key__in=["mariana@example.com:plan", "lead"]).count() == 2


def _erase(schema: str, subject: str) -> dict:
    with schema_context(schema):
        return subject_erase(subject=subject)


# --- values shared with others ---------------------------------------------------------------------


def _export(schema: str, subject: str) -> dict:
    import io
    import zipfile

    from apps.compliance.gdpr import subject_export

    with schema_context(schema):
        archive, _ = subject_export(subject=subject)
    with zipfile.ZipFile(io.BytesIO(archive)) as opened:
        return {name: json.loads(opened.read(name)) for name in opened.namelist() if name.endswith(".json")}


def test_a_shared_bot_memory_value_gives_up_only_the_subjects_items(canary_tenants):
    from apps.bots.models import Bot, BotMemory

    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        BotMemory.objects.create(bot=bot, key="subscribers", value=["ana@example.com", "bruno@example.com"])
        BotMemory.objects.create(bot=bot, key="leads", value={"ana@example.com": {"plan": "gold"},
                                                              "bruno@example.com": {"plan": "free"}})
        BotMemory.objects.create(bot=bot, key="lead-7", value={"who": "ana@example.com", "plan": "gold"})
    exported = _export(a, "ana@example.com")
    assert {entry["key"]: entry["value"] for entry in exported["bot_memory.json"]} == {
        "subscribers": ["ana@example.com"], "leads": {"ana@example.com": {"plan": "gold"}},
        "lead-7": {"who": "ana@example.com", "plan": "gold"}}
    assert "bruno@example.com" not in json.dumps(exported)
    counts = _erase(a, "ana@example.com")
    assert (counts["bot_memory"], counts["bot_memory_redacted"]) == (1, 2)
    with schema_context(a):
        values = {row.key: row.value for row in BotMemory.objects.filter(key__in=["subscribers", "leads", "lead-7"])}
    assert values == {"subscribers": ["bruno@example.com"], "leads": {"bruno@example.com": {"plan": "free"}}}


def test_another_customers_row_naming_the_subject_is_blanked_not_deleted(canary_tenants):
    from apps.bots.models import BotTableRow

    a = canary_tenants.a.schema_name
    ana, bruno, carla = _rows(
        a, {"email": "ana@example.com", "referred_by": "bruno@example.com", "note": "vip"},
        {"customer": "bruno@example.com", "referred_by": "ana@example.com", "total": 10},
        {"email": "carla@example.com", "note": "friend of ana@example.com", "cc": ["ana@example.com", "x@y.com"]})
    exported = _export(a, "ana@example.com")
    rows = {row["id"]: (row["data"], row["partial"]) for row in exported["bot_table_rows.json"]}
    assert rows == {ana: ({"email": "ana@example.com", "referred_by": "bruno@example.com", "note": "vip"}, False),
                    bruno: ({"referred_by": "ana@example.com"}, True),
                    carla: ({"note": "friend of ana@example.com", "cc": ["ana@example.com"]}, True)}
    counts = _erase(a, "ana@example.com")
    assert (counts["bot_table_rows"], counts["bot_table_rows_redacted"]) == (1, 2)
    with schema_context(a):
        left = {row.pk: row.data for row in BotTableRow.objects.filter(pk__in=[ana, bruno, carla])}
    assert left == {bruno: {"customer": "bruno@example.com", "referred_by": "", "total": 10},
                    carla: {"email": "carla@example.com", "note": "", "cc": ["x@y.com"]}}


def test_the_subjects_row_is_found_by_a_named_or_mailto_address_and_any_contact_field(canary_tenants):
    """The subject's own rows go: their address written `Ana Souza <ana@...>` or `mailto:`, or in a field whose
    name holds "email"/"phone" next to another person's address. Others' rows only lose the fields naming her."""
    from apps.bots.models import BotTableRow

    a = canary_tenants.a.schema_name
    named, mailto, customer_email, whatsapp, bob, bob_referrer, bob_named = _rows(
        a, {"email": "Ana Souza <ana@example.com>", "name": "Ana Souza", "city": "SP"},
        {"link": "mailto:ANA@example.com?subject=Hi", "name": "Ana Souza"},
        {"customer_email": "ana@example.com", "sales_rep": "rep@shop.com", "total": 10},
        {"whatsappNumber": "tel:+55 11 98765-4321", "owner": "rep@shop.com"},
        {"customer": "bob@x.com", "referred_by": "ana@example.com"},
        {"customer": "bob@x.com", "referrer_email": "Ana <ana@example.com>"},
        {"customer": "Bob <bob@x.com>", "note": "ana@example.com"})
    _erase(a, "ana@example.com")
    _erase(a, "+55 11 98765-4321")
    with schema_context(a):
        left = {row.pk: row.data for row in BotTableRow.objects.filter(
            pk__in=[named, mailto, customer_email, whatsapp, bob, bob_referrer, bob_named])}
    assert left == {bob: {"customer": "bob@x.com", "referred_by": ""},
                    bob_referrer: {"customer": "bob@x.com", "referrer_email": ""},
                    bob_named: {"customer": "Bob <bob@x.com>", "note": ""}}


def test_a_row_naming_the_subject_in_a_role_field_beside_another_persons_is_not_theirs(canary_tenants):
    """A field name holding "email" made the row the subject's, even beside another person's contact field
    (student/teacher, attendee/organizer), and `hotel` or `intel` counted as "tel"; a value with two addresses
    ("ana@... <bob@...>", one per line) was read as one of them. Those rows only lose what names her."""
    from apps.bots.models import BotTableRow

    a = canary_tenants.a.schema_name
    pks = _rows(
        a, {"student_email": "bob@x.com", "teacher_email": "ana@example.com"},
        {"attendee_email": "bob@x.com", "organizer_email": "ana@example.com"},
        {"customer_phone": "+55 11 91234-5678", "driver_email": "ana@example.com"},
        {"hotel": "ana@example.com", "guest": "bob@x.com"},
        {"company": "Acme", "emails": "ana@example.com\nbob@x.com"},
        {"customer": "bob@x.com", "contact": "ana@example.com <bob@x.com>"})
    _erase(a, "ana@example.com")
    with schema_context(a):
        left = [BotTableRow.objects.get(pk=pk).data for pk in pks]
    assert left == [{"student_email": "bob@x.com", "teacher_email": ""},
                    {"attendee_email": "bob@x.com", "organizer_email": ""},
                    {"customer_phone": "+55 11 91234-5678", "driver_email": ""},
                    {"hotel": "", "guest": "bob@x.com"},
                    {"company": "Acme", "emails": ""},
                    {"customer": "bob@x.com", "contact": ""}]


# --- others' records that name the subject ---------------------------------------------------------


def test_mail_to_others_job_runs_and_meeting_rooms_naming_the_subject_are_exported_and_redacted(canary_tenants):
    import uuid

    from django.utils import timezone

    from apps.automation.models import JobRun
    from apps.bots.models import Bot
    from apps.mail.models import OutgoingMail
    from apps.meet.models import Room

    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        mail = OutgoingMail.objects.create(
            bot=bot, to="bruno@example.com", subject="Referral from ana@example.com", message_id=f"<{uuid.uuid4()}@x>",
            body_text="Hello Bruno,\nana@example.com referred you.\nWelcome!", status=OutgoingMail.Status.SENT)
        other_mail = OutgoingMail.objects.create(
            bot=bot, to="carla@example.com", subject="hi", message_id=f"<{uuid.uuid4()}@x>",
            body_text="mariana@example.com says hi", status=OutgoingMail.Status.SENT)
        run = JobRun.objects.create(
            bot=bot, script_name="newsletter.bas", cron="0 9 * * *", scheduled_for=timezone.now(),
            status=JobRun.Status.WAITING, output="sent to ana@example.com\nsent to bruno@example.com",
            state={"vm": {"vars": {"to": ["ana@example.com", "bruno@example.com"], "n": 2}}})
        room = Room.objects.create(name="call-ana-1a2b", title="Call with ana@example.com", bot=bot,
                                   metadata={"booking": {"description": "Ana, +55 11 98765-4321", "location": "HQ"}})
    exported = _export(a, "ana@example.com")
    assert [(m["id"], m["subject"], m["body_text"]) for m in exported["mail_outgoing_mentions.json"]] == [
        (mail.pk, ["Referral from ana@example.com"], ["ana@example.com referred you."])]
    assert [(r["id"], r["output"], r["state"]) for r in exported["job_runs.json"]] == [
        (run.pk, ["sent to ana@example.com"], {"vm": {"vars": {"to": ["ana@example.com"]}}})]
    assert [(r["id"], r["title"]) for r in exported["meeting_rooms.json"]] == [(room.pk, ["Call with ana@example.com"])]
    assert exported["manifest.json"]["counts"]["job_runs"] == 1
    assert "mail_outgoing_mentions.json" in exported["manifest.json"]["files"]
    assert "bruno@example.com" not in json.dumps(exported)
    # A phone subject finds the booking's description.
    assert [r["metadata"] for r in _export(a, "+55 11 98765-4321")["meeting_rooms.json"]] == [
        {"booking": {"description": "Ana, +55 11 98765-4321"}}]

    counts = _erase(a, "ana@example.com")
    assert (counts["mail_outgoing"], counts["mail_outgoing_redacted"], counts["job_runs_redacted"],
            counts["meeting_rooms_redacted"]) == (0, 1, 1, 1)
    with schema_context(a):
        mail.refresh_from_db()
        other_mail.refresh_from_db()
        run.refresh_from_db()
        room.refresh_from_db()
    assert (mail.to, mail.subject, mail.body_text) == ("bruno@example.com", "[erased]",
                                                       "Hello Bruno,\n[erased]\nWelcome!")
    assert other_mail.body_text == "mariana@example.com says hi"
    assert run.output == "[erased]\nsent to bruno@example.com"
    assert (run.status, run.state) == (JobRun.Status.ERROR, None)  # see the next test
    assert room.title == "[erased]" and room.metadata["booking"]["location"] == "HQ"
    _erase(a, "+55 11 98765-4321")
    with schema_context(a):
        room.refresh_from_db()
    assert room.metadata == {"booking": {"description": "", "location": "HQ"}}


def test_a_waiting_job_runs_state_naming_the_subject_is_not_edited_the_run_ends_in_error(canary_tenants):
    """A newsletter waiting in a FOR EACH over [ana, bruno, carla] with its index at Bruno, and a frame whose
    only variable is Ana's address: dropping Ana's item would resume at Carla (Bruno skipped), blanking the
    frame's variables to "" would crash the resume. The run ends in error instead, its state removed."""
    from django.utils import timezone

    from apps.automation.models import JobRun
    from apps.automation.services import job_run_resume
    from apps.basic.vm import STATE_VERSION
    from apps.bots.models import Bot

    people = ["ana@example.com", "bruno@example.com", "carla@example.com"]
    state = {"version": STATE_VERSION, "program": "x", "waiting": {"type": "wait", "pc": 4, "seconds": 60},
             "headers": {}, "output_chars": 0, "message_count": 0,
             "frames": [{"unit": "main", "pc": 4, "vars": {"$each1": [people, 1], "who": "ana@example.com"}},
                        {"unit": "notify", "pc": 2, "vars": {"to": "ana@example.com"}, "ret": True}]}
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.get(pk=1)
        run = JobRun.objects.create(bot=bot, script_name="newsletter.bas", cron="0 9 * * *",
                                    scheduled_for=timezone.now(), status=JobRun.Status.WAITING, state=state,
                                    resume_at=timezone.now(), output="sent to ana@example.com")
        other = JobRun.objects.create(bot=bot, script_name="newsletter.bas", cron="0 9 * * *",
                                      scheduled_for=timezone.now(), status=JobRun.Status.WAITING,
                                      state={**state, "frames": [{"unit": "main", "pc": 4, "vars": {
                                          "$each1": [people[1:], 1]}}]}, resume_at=timezone.now())
        assert subject_erase(subject="ana@example.com")["job_runs_redacted"] == 1
        run.refresh_from_db()
        other.refresh_from_db()
        assert (run.status, run.state, run.resume_at) == (JobRun.Status.ERROR, None, None)
        assert run.error_message.startswith("ended by a data-subject erasure: its saved state named the person")
        assert run.finished_at is not None and run.output == "[erased]"
        assert job_run_resume(run_id=run.pk) is None  # the queued resume finds nothing to continue
        assert other.status == JobRun.Status.WAITING and other.state["frames"][0]["vars"]["$each1"] == [
            people[1:], 1]


# --- drive files (reported, not changed) -----------------------------------------------------------


def test_erasure_reports_the_drive_files_that_still_name_the_subject(canary_tenants, django_capture_on_commit_callbacks,
                                                                     monkeypatch):
    from apps.bots.models import Bot
    from apps.compliance import gdpr
    from apps.compliance.gdpr import subject_request_create, subject_request_execute
    from apps.drive.storage import tenant_drive
    from apps.mail.services import bot_drive_root

    monkeypatch.setattr(gdpr, "DRIVE_SCAN_FILE_MAX_BYTES", 100)
    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        data_csv = f"{bot.name}.gbai/{bot.name}.gbdata/customers.csv"
        script_out = f"{bot_drive_root(bot)}exports/leads.txt"
        others = f"{bot_drive_root(bot)}exports/mariana.txt"
        big = f"{bot.name}.gbai/{bot.name}.gbdata/big.csv"
        named = f"{bot_drive_root(bot)}ana@example.com.json"
        drive = tenant_drive()
        drive.write(data_csv, b"email,plan\nana@example.com,gold\nbruno@example.com,free\n")
        drive.write(script_out, b"lead: Ana <ana@example.com>\n")
        drive.write(others, b"mariana@example.com\n")
        drive.write(big, b"email\n" + b"x@example.com\n" * 20)
        drive.write(named, b"{}")
        with django_capture_on_commit_callbacks(execute=False):
            row = subject_request_create(kind="erasure", subject="ana@example.com", requested_by="dpo")
        row = subject_request_execute(request_id=str(row.pk))
        assert drive.exists(data_csv)  # reported, not changed
    assert sorted(row.report["drive_files"]) == sorted([data_csv, script_out, f"{bot_drive_root(bot)}[email]"])
    assert row.report["drive_files_not_searched"] == [big]
    assert row.report["counts"]["drive_files_naming_subject"] == 3
    assert "ana@example.com" not in json.dumps(row.report)
    exported = _export(a, "ana@example.com")
    assert len(exported["manifest.json"]["drive_files_naming_subject"]) == 3


def test_a_drive_file_that_cannot_be_read_is_listed_as_not_searched_and_the_request_is_done(
        canary_tenants, django_capture_on_commit_callbacks, monkeypatch):
    from apps.bots.models import Bot
    from apps.compliance.gdpr import subject_request_create, subject_request_execute
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.backends import LocalDrive
    from apps.drive.storage import tenant_drive
    from apps.mail.services import bot_drive_root

    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        locked = f"{bot_drive_root(bot)}exports/locked.txt"
        readable = f"{bot_drive_root(bot)}exports/leads.txt"
        drive = tenant_drive()
        drive.write(locked, b"ana@example.com\n")
        drive.write(readable, b"ana@example.com\n")
        _rows(a, {"email": "ana@example.com"})
        read = LocalDrive.read

        def refusing(self, key, **kwargs):
            if key == locked:
                raise PermissionError(13, "Permission denied")  # S3: AccessDenied
            return read(self, key, **kwargs)

        monkeypatch.setattr(LocalDrive, "read", refusing)
        for kind in ("export", "erasure"):
            with django_capture_on_commit_callbacks(execute=False):
                row = subject_request_create(kind=kind, subject="ana@example.com", requested_by="dpo")
            row = subject_request_execute(request_id=str(row.pk))
            assert (row.kind, row.status, row.error) == (kind, DataSubjectRequest.Status.DONE, "")
        assert row.report["drive_files"] == [readable]
        assert row.report["drive_files_not_searched"] == [locked]
        assert row.report["counts"]["bot_table_rows"] == 1


def test_a_shared_value_written_after_the_scan_keeps_that_write(canary_tenants, monkeypatch):
    """The erasure saved the copy of a shared value it had read during its scan: a subscriber a script added
    meanwhile (or a field of another customer's row changed) was lost."""
    from apps.bots.models import Bot, BotMemory, BotTableRow
    from apps.compliance import gdpr

    a = canary_tenants.a.schema_name
    with schema_context(a):
        bot = Bot.objects.get(pk=1)
        BotMemory.objects.create(bot=bot, key="subscribers", value=["ana@example.com", "bruno@example.com"])
        row = BotTableRow.objects.create(bot=bot, table="orders", data={"customer": "bruno@example.com",
                                                                        "referred_by": "ana@example.com"})
    real = gdpr.subject_data

    def scanned_then_written(subject):
        found = real(subject)
        entry = BotMemory.objects.get(key="subscribers")  # a script's SET BOT MEMORY, after the scan
        entry.value = [*entry.value, "carla@example.com"]
        entry.save()
        BotTableRow.objects.filter(pk=row.pk).update(data={"customer": "bruno@example.com",
                                                           "referred_by": "ana@example.com", "status": "paid"})
        return found

    monkeypatch.setattr(gdpr, "subject_data", scanned_then_written)
    counts = _erase(a, "ana@example.com")
    assert (counts["bot_memory_redacted"], counts["bot_table_rows_redacted"]) == (1, 1)
    with schema_context(a):
        assert BotMemory.objects.get(key="subscribers").value == ["bruno@example.com", "carla@example.com"]
        assert BotTableRow.objects.get(pk=row.pk).data == {"customer": "bruno@example.com", "referred_by": "",
                                                           "status": "paid"}
