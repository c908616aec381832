"""Email out end to end: scripts queue mail in their transaction, a real worker delivers it after commit to
a real SMTP server (aiosmtpd on loopback), with retries on temporary failures and never twice.

These tests commit (see `committed_db` in conftest), in a tenant of their own.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from django.db import transaction
from django_tenants.utils import schema_context

from apps.bots.host import BotHost
from apps.bots.models import Bot, BotConfig
from apps.bots.runtime import script_start
from apps.bots.services import script_sync
from apps.drive.storage import tenant_drive
from apps.mail.models import OutgoingMail
from apps.mail.services import (
    OUTGOING_ATTACHMENTS_MAX_BYTES,
    MailError,
    bot_drive_root,
    mail_deliver,
    mail_send,
    recipients_parse,
    script_mail_send,
)
from apps.mail.tasks import mail_send_task
from gbplatform.localservices import free_port
from tests.mail.conftest import bot_name_new
from tests.support.smtp_server import SmtpServer, bot_mail_config

pytestmark = pytest.mark.django_db
WAIT_S = 20


def mail_bot(smtp: SmtpServer, **config: str) -> Bot:
    """A bot of the current tenant sending through the test SMTP server."""
    bot = Bot.objects.create(name=bot_name_new(), display_name="Shop Bot")
    values = {**bot_mail_config(smtp, sender=f"{bot.name}@shop.test"), **config}
    for line, (key, value) in enumerate(values.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


def row_wait(pk: int, status: str) -> OutgoingMail:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        row = OutgoingMail.objects.get(pk=pk)
        if row.status == status:
            return row
        time.sleep(0.05)
    raise AssertionError(f"mail {pk} is {row.status} ({row.last_error}), expected {status}")


def run(bot: Bot, source: str):
    script_sync(bot=bot, path=f"{bot.name}.gbai/{bot.name}.gbdialog/report.bas", data=source.encode())
    return script_start(bot=bot, name="report", host=BotHost(bot))


def test_send_mail_from_a_script_is_delivered_after_commit_with_text_and_html(
        mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        with transaction.atomic():
            result = run(bot, 'total = 42\nSEND MAIL "ana@example.test", "Daily report", '
                              '"<p>Total: <b>" + total + "</b></p>"\n')
            assert result.status == "done", result.error
            row = OutgoingMail.objects.get(bot=bot)
            assert row.status == "queued"
            time.sleep(0.3)
            assert smtp.messages == []  # nothing leaves before the transaction commits
        (captured,) = smtp.wait_for(1)
        row = row_wait(row.pk, "sent")
    message = captured.message
    assert captured.rcpt_tos == ["ana@example.test"] and captured.mail_from == f"{bot.name}@shop.test"
    assert message["Subject"] == "Daily report" and message["To"] == "ana@example.test"
    assert message["Message-ID"] == row.message_id and row.message_id.endswith("@shop.test>")
    assert "Shop Bot" in message["From"] and message["Auto-Submitted"] == "auto-generated"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(preferencelist=("plain",)).get_content().strip() == "Total: 42"
    assert "<b>42</b>" in message.get_body(preferencelist=("html",)).get_content()
    assert row.attempts == 1 and row.sent_at is not None and row.last_error == ""


def test_begin_mail_block_sends_subject_and_body_lines(mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        result = run(bot, 'who = "Ana"\nBEGIN MAIL "ana@example.test"\nSubject: Hello ${who}\n\n'
                          'Dear ${who},\nyour order shipped.\nEND MAIL\n')
        assert result.status == "done", result.error
        (captured,) = smtp.wait_for(1)
    assert captured.message["Subject"] == "Hello Ana"
    assert captured.message.get_content_type() == "text/plain"
    assert captured.message.get_content().strip() == "Dear Ana,\nyour order shipped."


def test_a_rolled_back_script_sends_nothing(mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        with pytest.raises(RuntimeError, match="^the caller fails after the script$"), transaction.atomic():
            result = run(bot, 'SEND MAIL "ana@example.test", "never", "rolled back"\n')
            assert result.status == "done", result.error
            assert OutgoingMail.objects.get(bot=bot, subject="never").status == "queued"  # queued in the transaction
            raise RuntimeError("the caller fails after the script")
        mail_send(bot=bot, to="bo@example.test", subject="after", body_text="marker")
        (captured,) = smtp.wait_for(1)  # the worker is FIFO: the rolled-back mail would have come first
        assert captured.message["Subject"] == "after"
        assert not OutgoingMail.objects.filter(bot=bot, subject="never").exists()


def test_a_temporary_failure_is_retried_then_delivered(mail_tenant, committed_db, mail_worker, smtp):
    smtp.fail_next = ["451 4.3.0 Greylisted, try again later", "421 4.7.0 Busy"]
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = mail_send(bot=bot, to="ana@example.test", subject="retry me", body_text="hello")
        (captured,) = smtp.wait_for(1)
        row = row_wait(row.pk, "sent")
    assert captured.message["Message-ID"] == row.message_id
    assert row.attempts == 3 and row.last_error == ""  # two temporary failures, then sent (error cleared)
    assert len(smtp.messages) == 1


def test_a_permanent_failure_fails_at_once_with_the_reason(mail_tenant, committed_db, mail_worker, smtp):
    smtp.fail_next = ["550 5.1.1 No such user"]
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = row_wait(mail_send(bot=bot, to="ghost@example.test", subject="x", body_text="y").pk, "failed")
    assert row.attempts == 1 and "550" in row.last_error and "No such user" in row.last_error
    assert smtp.messages == []


def test_a_redelivered_task_for_a_sent_mail_sends_nothing(mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        first = mail_send(bot=bot, to="ana@example.test", subject="once", body_text="only once")
        smtp.wait_for(1)
        row_wait(first.pk, "sent")
        mail_send_task.apply_async(args=[first.pk], queue="mail")  # as the broker would redeliver it
        mail_send(bot=bot, to="ana@example.test", subject="marker", body_text="after the redelivery")
        captured = smtp.wait_for(2)
        time.sleep(0.2)
        assert [m.message["Subject"] for m in smtp.messages] == ["once", "marker"]
        assert OutgoingMail.objects.get(pk=first.pk).attempts == 1
    assert len(captured) == 2


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_uses_the_vault_password_of_the_bots_tenant(mail_tenant, committed_db, mail_worker, smtp_auth,
                                                                vault):
    schema, smtp = mail_tenant.schema_name, smtp_auth
    vault.put_secret(f"gbo/tenants/{schema}/mail", {"password": "s3cret-from-vault"})
    with schema_context(schema):
        bot = mail_bot(smtp, **{"email-user": "shop", "email-pass": f"vault:gbo/tenants/{schema}/mail#password"})
        row = mail_send(bot=bot, to="ana@example.test", subject="authenticated", body_text="hi")
        smtp.wait_for(1)
        row_wait(row.pk, "sent")
        thief = mail_bot(smtp, **{"email-user": "shop", "email-pass": "vault:gbo/tenants/other/mail#password"})
        stolen = row_wait(mail_send(bot=thief, to="ana@example.test", subject="x", body_text="y").pk, "failed")
    assert smtp.auth_attempts == [("shop", "s3cret-from-vault")]
    assert "outside this bot's secrets" in stolen.last_error
    assert vault.count(vault.kv_path("gbo/tenants/other/mail")) == 0


def test_attachments_come_from_the_bots_drive(mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        tenant_drive().write(bot_drive_root(bot) + "reports/sales.csv", b"day,total\nmon,42\n")
        result = run(bot, 'SEND MAIL "ana@example.test", "Sales", "attached", "reports/sales.csv"\n')
        assert result.status == "done", result.error
        (captured,) = smtp.wait_for(1)
        (attachment,) = list(captured.message.iter_attachments())
        assert attachment.get_filename() == "sales.csv"
        assert attachment.get_content() == "day,total\nmon,42\n"
        missing = run(bot, 'SEND MAIL "ana@example.test", "Sales", "attached", "../other.gbai/secret.txt"\n')
        assert missing.status == "error" and "without '..'" in missing.error["message"]


def test_talk_to_an_address_mails_it_and_bad_recipients_are_script_errors(
        mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        result = run(bot, 'TALK TO "email:bo@example.test", "Your table is ready"\n')
        assert result.status == "done", result.error
        (captured,) = smtp.wait_for(1)
        assert captured.rcpt_tos == ["bo@example.test"]
        assert captured.message["Subject"] == "Message from Shop Bot"
        bad = run(bot, 'SEND MAIL "not an address", "x", "y"\n')
        assert bad.status == "error" and "not an e-mail address" in bad.error["message"]
        with pytest.raises(MailError, match="at most"):
            mail_send(bot=bot, to=",".join(f"u{i}@example.test" for i in range(51)), subject="x", body_text="y")
        whatsapp = run(bot, 'TALK TO "whatsapp:+5511999", "hi"\n')
        assert whatsapp.status == "error" and "whatsapp" in whatsapp.error["message"]


def test_retries_are_bounded_then_the_mail_fails_with_the_last_reason(
        mail_tenant, committed_db, mail_worker, smtp, monkeypatch):
    monkeypatch.setattr(mail_send_task, "max_retries", 2)
    smtp.fail_next = ["451 4.3.0 Try later"] * 5
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = row_wait(mail_send(bot=bot, to="ana@example.test", subject="doomed", body_text="x").pk, "failed")
        assert row.attempts == 3 and "gave up after 3 attempts" in row.last_error and "451" in row.last_error
        unreachable = mail_bot(smtp, **{"email-port": str(free_port())})  # nothing listens there
        row = row_wait(mail_send(bot=unreachable, to="ana@example.test", subject="x", body_text="y").pk, "failed")
        assert row.attempts == 3 and "ConnectionRefusedError" in row.last_error
    assert smtp.messages == []


def test_a_bot_without_mail_settings_is_told_at_once_and_nothing_is_queued(mail_tenant, committed_db, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = Bot.objects.create(name=bot_name_new("nomail"))
        result = run(bot, 'SEND MAIL "ana@example.test", "x", "y"\n')
        assert result.status == "error"
        assert "SEND MAIL" in result.error["message"] and "email-from" in result.error["message"]
        assert not OutgoingMail.objects.filter(bot=bot).exists()


def test_a_body_is_html_only_when_it_starts_with_an_html_tag(mail_tenant, committed_db, mail_worker, smtp):
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        script_mail_send(bot=bot, to="ana@example.test", subject="quoted", body="<ana@example.test> wrote: hi")
        script_mail_send(bot=bot, to="ana@example.test", subject="rich", body='<p class="x">Hi <b>Ana</b></p>')
        quoted, rich = (m.message for m in smtp.wait_for(2))
    assert quoted.get_content_type() == "text/plain"
    assert quoted.get_content().strip() == "<ana@example.test> wrote: hi"
    assert rich.get_content_type() == "multipart/alternative"
    assert rich.get_body(preferencelist=("plain",)).get_content().strip() == "Hi Ana"


def test_a_bot_past_its_hourly_mail_limit_gets_an_error_and_nothing_is_queued(
        mail_tenant, committed_db, mail_worker, smtp, settings):
    """A script looping on SEND MAIL (or a flood of mail the bot answers) had no volume limit."""
    settings.MAIL_SEND_PER_BOT_PER_HOUR = 2
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        result = run(bot, 'FOR i = 1 TO 5\nSEND MAIL "ana@example.test", "n " + i, "hello"\nNEXT\n')
        assert result.status == "error" and "the limit is 2 (MAIL_SEND_PER_BOT_PER_HOUR)" in result.error["message"]
        assert OutgoingMail.objects.filter(bot=bot).count() == 2
        assert sorted(m.message["Subject"] for m in smtp.wait_for(2)) == ["n 1", "n 2"]


def _sparse_drive_file(bot: Bot, relative: str, size: int) -> None:
    """A drive file of `size` bytes that costs no disk (a meeting recording, say): written, then extended."""
    from django.conf import settings
    from django.db import connection

    tenant_drive().write(bot_drive_root(bot) + relative, b"\0")
    path = Path(settings.MEDIA_ROOT) / "tenants" / connection.schema_name / (bot_drive_root(bot) + relative)
    os.truncate(path, size)


def test_an_attachment_larger_than_the_allowance_is_refused_from_its_size_without_being_read(
        mail_tenant, committed_db, smtp, monkeypatch):
    """A 2 GB drive file (a meet recording) was read whole into memory, then found too large. Every read of an
    attachment carries what is left of the allowance, and the drive refuses a larger file from its size
    (tests/drive/test_backends.py)."""
    big = 200 * 1024 * 1024
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        _sparse_drive_file(bot, "recordings/standup.webm", big)
        tenant_drive().write(bot_drive_root(bot) + "notes.txt", b"x" * 1000)
        reads: list[tuple[str, int | None]] = []
        drive_class = type(tenant_drive())
        real_read = drive_class.read

        def counted_read(self, key, *, max_bytes=None):
            reads.append((key.removeprefix(bot_drive_root(bot)), max_bytes))
            return real_read(self, key, max_bytes=max_bytes)

        monkeypatch.setattr(drive_class, "read", counted_read)
        with pytest.raises(MailError) as refused:
            script_mail_send(bot=bot, to="ana@example.test", subject="rec", body="see",
                             attachments=["notes.txt", "recordings/standup.webm"])
        assert reads == [("notes.txt", OUTGOING_ATTACHMENTS_MAX_BYTES),
                         ("recordings/standup.webm", OUTGOING_ATTACHMENTS_MAX_BYTES - 1000)]
        assert str(refused.value) == (f"attachment recordings/standup.webm is {big} bytes; the attachments of one "
                                      "mail are at most 15 MB in all")
        assert not OutgoingMail.objects.filter(bot=bot).exists()
        # A file that grew after the mail was queued: the worker refuses it the same way, and the row says why.
        tenant_drive().write(bot_drive_root(bot) + "grows.bin", b"small")
        row = OutgoingMail.objects.create(bot=bot, to="ana@example.test", subject="x", message_id="<grow@shop.test>",
                                          body_text="y", attachments=["grows.bin"])  # not queued: run below
        _sparse_drive_file(bot, "grows.bin", big)
        reads.clear()
        assert mail_deliver(mail_id=row.pk) == "failed"
        assert reads == [("grows.bin", OUTGOING_ATTACHMENTS_MAX_BYTES)]
        row.refresh_from_db()
        assert row.last_error.startswith(f"attachment grows.bin is {big} bytes")
    assert smtp.messages == []


def test_recipients_with_line_breaks_or_headers_are_refused_not_split(mail_tenant, committed_db, mail_worker, smtp):
    """"ana@x\\r\\nBcc: eve@y" (a recipient built from user input) was read as two recipients, eve included."""
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        for to, problem in (("ana@example.test\r\nBcc: eve@example.test", "contain ':'"),
                            (["ana@example.test", "bo@example.test\nCc: eve@example.test"], "contain ':'"),
                            ("ana@example.test\x00eve@example.test", "control character (U+0000)"),
                            ("Bcc: eve@example.test", "contain ':'"),
                            ("team: ana@example.test, eve@example.test;", "contain ':'")):
            with pytest.raises(MailError, match=re.escape(problem)):
                script_mail_send(bot=bot, to=to, subject="x", body="y")
        assert not OutgoingMail.objects.filter(bot=bot).exists()
        # A colon inside a quoted display name is a name, not a header.
        script_mail_send(bot=bot, to='"Sales: Ana" <ana@example.test>; bo@example.test', subject="ok", body="y")
        (captured,) = smtp.wait_for(1)
    assert captured.rcpt_tos == ["ana@example.test", "bo@example.test"]


def test_line_breaks_and_tabs_separate_recipients():
    """Every control character was refused, so a list read from a file (`to = READ "admins.txt"`, one address a
    line, a trailing newline) could no longer be mailed; the parser used to take such lines apart."""
    assert recipients_parse("ana@example.test\n") == ["ana@example.test"]
    assert recipients_parse("ana@example.test\nbo@example.test") == ["ana@example.test", "bo@example.test"]
    assert recipients_parse("ana@example.test\r\nbo@example.test\r\n") == ["ana@example.test", "bo@example.test"]
    assert recipients_parse("ana@example.test\tbo@example.test") == ["ana@example.test", "bo@example.test"]
    assert recipients_parse(["ana@example.test\n", "\tbo@example.test"]) == ["ana@example.test", "bo@example.test"]
    assert recipients_parse('"Ana\nLopes" <ana@example.test>\nbo@example.test') == ["ana@example.test",
                                                                                    "bo@example.test"]
    for to in ("ana@example.test\r\nBcc: eve@example.test", "ana@example.test\nteam: eve@example.test;"):
        with pytest.raises(MailError, match="contain ':'"):
            recipients_parse(to)
    with pytest.raises(MailError, match=re.escape("control character (U+000B)")):
        recipients_parse("ana@example.test\x0beve@example.test")
