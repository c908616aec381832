"""Email in end to end: mail put in a real IMAP mailbox (dovecot on loopback) is read by the poller, runs a
chat turn on channel `email`, and is answered by SMTP (aiosmtpd) in the same thread, once.

These tests commit (see `committed_db` in conftest): the replies are queued on commit and sent by a real
worker. Each test has its own bot and its own mailbox user.
"""

from __future__ import annotations

import itertools
import signal
import threading
from email.message import EmailMessage

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django_tenants.utils import schema_context
from imapclient import IMAPClient

from apps.bots.models import Bot, BotConfig
from apps.bots.services import script_sync
from apps.core.locks import tenant_lock_try
from apps.drive.storage import tenant_drive
from apps.mail import services
from apps.mail.content import MIME_MAX_DEPTH
from apps.mail.models import IncomingMail, MailboxState, OutgoingMail
from apps.mail.services import bot_drive_root, mailbox_poll, mailboxes_poll
from tests.mail.conftest import bot_name_new
from tests.mail.test_content import nested_raw
from tests.mail.test_services import row_wait
from tests.support.dovecot import DovecotServer
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.django_db
_users = itertools.count(1)


def mailbox_bot(smtp: SmtpServer, dovecot: DovecotServer, *, greeting: str = "Thanks for writing") -> Bot:
    """A bot of the current tenant that reads its own dovecot mailbox and answers through `smtp`."""
    user = f"bot{next(_users)}-{threading.get_ident() % 10000}@shop.test"
    dovecot.add_user(user, f"pw-{user}")
    bot = Bot.objects.create(name=bot_name_new("inbox"), display_name="Inbox Bot")
    config = {
        "email-from": user, "email-server": smtp.host, "email-port": str(smtp.port), "email-security": "plain",
        "imap-server": dovecot.host, "imap-port": str(dovecot.port), "imap-security": "plain",
        "imap-user": user, "imap-pass": f"pw-{user}",
    }
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


def imap(dovecot: DovecotServer, bot: Bot) -> IMAPClient:
    user = BotConfig.objects.get(bot=bot, key="imap-user").value
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    client.login(user, dovecot.users[user])
    client.select_folder("INBOX")
    return client


def deliver(dovecot: DovecotServer, bot: Bot, *, sender: str = "ana@example.test", subject: str = "Opening hours",
            body: str = "When do you open on Sunday?", message_id: str | None = None,
            references: list[str] | None = None, headers: dict[str, str] | None = None,
            attachments: list[tuple[str, bytes]] = ()) -> str:
    """Put a mail into the bot's mailbox (IMAP APPEND, as a delivery agent would). Returns its Message-ID."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = f"Ana <{sender}>", "bot@shop.test", subject
    message["Message-ID"] = message_id or f"<m{next(_users)}.{threading.get_ident()}@example.test>"
    if references:
        message["In-Reply-To"], message["References"] = references[-1], " ".join(references)
    for key, value in (headers or {}).items():
        message[key] = value
    message.set_content(body)
    for name, data in attachments:
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    client = imap(dovecot, bot)
    client.append("INBOX", message.as_bytes())
    client.logout()
    return message["Message-ID"]


def test_a_mail_to_the_bot_is_answered_in_the_same_thread(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    from apps.sessions.models import ChatSession

    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        script_sync(bot=bot, path=f"{bot.name}.gbai/{bot.name}.gbdialog/start.bas",
                    data=b'TALK "Hello from the shop."\nHEAR question\nTALK "You asked: " + question\n')
        first = deliver(dovecot, bot, references=["<root@example.test>"])
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.answered, report.error) == (1, 1, "")
        (captured,) = smtp.wait_for(1)
        reply = captured.message
        assert captured.rcpt_tos == ["ana@example.test"]
        assert reply["Subject"] == "Re: Opening hours"
        assert reply["In-Reply-To"] == first
        assert reply["References"].split() == ["<root@example.test>", first]
        assert reply["Auto-Submitted"] == "auto-replied"
        assert reply.get_content().strip() == "Hello from the shop."  # start.bas greets, then HEARs
        row = IncomingMail.objects.get(bot=bot)
        assert row.status == "answered" and row.thread_key == "<root@example.test>"
        assert row_wait(row.reply_id, "sent").message_id == reply["Message-ID"]
        session = ChatSession.objects.get(bot=bot)
        assert (session.channel, session.thread_key) == ("email", "<root@example.test>")
        client = imap(dovecot, bot)
        flags = client.get_flags(client.search("ALL"))
        client.logout()
        assert all(b"\\Seen" in f and b"\\Answered" in f for f in flags.values())
        # Ana answers the bot's reply: same thread, same chat session, whose start.bas was waiting at HEAR.
        deliver(dovecot, bot, subject="Re: Opening hours", body="And on Monday?",
                references=["<root@example.test>", first, reply["Message-ID"]])
        report = mailbox_poll(bot=bot)
        assert report.answered == 1
        second = smtp.wait_for(2)[1].message
        assert second["References"].split()[0] == "<root@example.test>"
        assert second.get_content().strip() == "You asked: And on Monday?"  # the HEAR of the same session
        assert ChatSession.objects.filter(bot=bot).count() == 1


def test_the_same_mail_polled_twice_is_answered_once(mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot)
        assert mailbox_poll(bot=bot).answered == 1
        # The poller loses its place (a new UIDVALIDITY would do the same) and the mail is unread again.
        MailboxState.objects.filter(bot=bot).update(last_uid=0)
        client = imap(dovecot, bot)
        client.remove_flags(client.search("ALL"), [b"\\Seen"])
        client.logout()
        again = mailbox_poll(bot=bot)
        assert (again.fetched, again.answered) == (1, 0)
        # And the same message delivered a second time (a second copy in the mailbox) is not answered either.
        original = IncomingMail.objects.get(bot=bot).message_id
        deliver(dovecot, bot, message_id=original)
        assert mailbox_poll(bot=bot).answered == 0
        deliver(dovecot, bot, subject="marker", body="a different mail")
        assert mailbox_poll(bot=bot).answered == 1
        replies = smtp.wait_for(2)
        assert [m.message["Subject"] for m in replies] == ["Re: Opening hours", "Re: marker"]
        assert IncomingMail.objects.filter(bot=bot).count() == 2
        assert OutgoingMail.objects.filter(bot=bot).count() == 2


def test_two_pollers_never_read_one_mailbox_at_once(mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot)
        with tenant_lock_try(f"mail:poll:{bot.pk}") as held:  # the other poller, mid-way
            assert held
            report = _in_other_thread(mail_tenant.schema_name, lambda: mailbox_poll(bot=bot))
        assert report.busy and report.fetched == 0
        assert not IncomingMail.objects.filter(bot=bot).exists()
        assert mailbox_poll(bot=bot).answered == 1


def test_attachments_are_stored_in_the_bots_drive_within_limits(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, monkeypatch):
    monkeypatch.setattr(services, "INCOMING_ATTACHMENT_MAX_BYTES", 1000)
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot, body="my documents", attachments=[
            ("invoice.pdf", b"%PDF-1.4 tiny"), ("../../escape.txt", b"inside"), ("big.bin", b"x" * 1001),
            ("invoice.pdf", b"second copy")])
        assert mailbox_poll(bot=bot).answered == 1
        row = IncomingMail.objects.get(bot=bot)
        drive, root = tenant_drive(), bot_drive_root(bot)
        stored = {a["name"]: a for a in row.attachments}
        assert drive.read(root + f"mail/inbox/{row.pk}/invoice.pdf") == b"%PDF-1.4 tiny"
        assert drive.read(root + f"mail/inbox/{row.pk}/invoice-2.pdf") == b"second copy"
        assert drive.read(root + f"mail/inbox/{row.pk}/escape.txt") == b"inside"
        assert stored["big.bin"]["skipped"].startswith("larger than") and "path" not in stored["big.bin"]
        assert not drive.exists(root + f"mail/inbox/{row.pk}/big.bin")


def test_automated_mail_is_recorded_and_not_answered(mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot, subject="Out of office", headers={"Auto-Submitted": "auto-replied"})
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.answered, report.skipped) == (1, 0, 1)
        row = IncomingMail.objects.get(bot=bot)
        assert row.status == "skipped" and "auto-submitted" in row.reason
        assert not OutgoingMail.objects.filter(bot=bot).exists()


def append_raw(dovecot: DovecotServer, bot: Bot, raw: bytes, *, seen: bool = False) -> None:
    client = imap(dovecot, bot)
    client.append("INBOX", raw, flags=[b"\\Seen"] if seen else [])
    client.logout()


def test_a_mail_with_malformed_headers_is_read_and_does_not_block_the_mailbox(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    """Python's mail parser raises on `Message-ID: <` and `From: "`: such a mail stopped every poll of the mailbox
    at it (never recorded, never flagged), so nothing after it was ever answered."""
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        append_raw(dovecot, bot, b'Message-ID: <\r\nFrom: "\r\nSubject: broken\r\n\r\nhello\r\n')
        deliver(dovecot, bot, subject="after the broken one")
        report = mailbox_poll(bot=bot)
        assert (report.error, report.fetched, report.answered) == ("", 2, 1)
        broken = IncomingMail.objects.get(bot=bot, subject="broken")
        assert broken.message_id.endswith("@no-message-id>") and broken.status != "received"
        assert smtp.wait_for(1)[0].message["Subject"] == "Re: after the broken one"
        assert mailbox_poll(bot=bot).fetched == 0  # both flagged and behind the poller's position


def test_a_mailboxs_history_is_never_answered_only_its_unread_and_new_mail(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, monkeypatch):
    """The first poll of a mailbox answers what is unread there, in batches, and then everything that arrives;
    mail that was already read when the bot started on the mailbox is its history and is never answered (with
    more unread mail than one batch, the poller used to go on through every message, read or not)."""
    monkeypatch.setattr(services, "POLL_BATCH", 2)
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        for n in range(3):
            append_raw(dovecot, bot, f"From: old@x.test\r\nMessage-ID: <old{n}.{bot.name}@x.test>\r\n"
                                     f"Subject: old read {n}\r\n\r\nlong ago\r\n".encode(), seen=True)
            deliver(dovecot, bot, subject=f"unread {n}")
        assert mailbox_poll(bot=bot).answered == 2
        assert mailbox_poll(bot=bot).answered == 1
        assert mailbox_poll(bot=bot).fetched == 0
        # Mail arriving after the start is new even if someone read it in their mail client first.
        append_raw(dovecot, bot, f"From: ana@example.test\r\nMessage-ID: <new.{bot.name}@x.test>\r\n"
                                 "Subject: new but read\r\n\r\nhi\r\n".encode(), seen=True)
        assert mailbox_poll(bot=bot).answered == 1
        answered = sorted(IncomingMail.objects.filter(bot=bot).values_list("subject", flat=True))
        assert answered == ["new but read", "unread 0", "unread 1", "unread 2"]


def test_past_the_hourly_mail_limit_the_poller_waits_instead_of_running_turns_it_cannot_answer(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, settings):
    """The reply failed only after the bot's turn ran, and the mail was tried again (turn and all) each poll."""
    settings.MAIL_SEND_PER_BOT_PER_HOUR = 1
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot, subject="first")
        deliver(dovecot, bot, subject="second")
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.answered) == (1, 1)
        assert "MAIL_SEND_PER_BOT_PER_HOUR" in report.error and "waits for a later poll" in report.error
        assert list(IncomingMail.objects.filter(bot=bot).values_list("subject", flat=True)) == ["first"]
        settings.MAIL_SEND_PER_BOT_PER_HOUR = 0
        assert mailbox_poll(bot=bot).answered == 1  # nothing was lost: the second mail is answered later


def test_a_tenants_poll_never_uses_another_tenants_mailbox(
        mail_tenant, other_mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    with schema_context(other_mail_tenant.schema_name):
        other = mailbox_bot(smtp, dovecot)
        deliver(dovecot, other, sender="bo@example.test", subject="for tenant B")
    with schema_context(mail_tenant.schema_name):
        mine = mailbox_bot(smtp, dovecot)
        deliver(dovecot, mine, subject="for tenant A")
        reports = mailboxes_poll()  # every bot of tenant A with a mailbox (earlier tests' bots too)
        assert [(r.bot, r.answered) for r in reports if r.answered or r.fetched] == [(mine.name, 1)]
        (captured,) = smtp.wait_for(1)
        assert captured.rcpt_tos == ["ana@example.test"] and captured.message["Subject"] == "Re: for tenant A"
    with schema_context(other_mail_tenant.schema_name):
        assert not IncomingMail.objects.exists()
        client = imap(dovecot, other)
        assert client.search("UNSEEN")  # tenant B's mail is still unread
        client.logout()
        assert [r.answered for r in mailboxes_poll()] == [1]
    assert sorted(m.message["Subject"] for m in smtp.wait_for(2)) == ["Re: for tenant A", "Re: for tenant B"]


def _in_other_thread(schema: str, function):
    from django.db import connections

    result: dict = {}

    def target() -> None:
        try:
            with schema_context(schema):
                result["value"] = function()
        finally:
            connections.close_all()

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=30)
    return result["value"]


def test_a_mail_that_keeps_failing_is_given_up_after_its_attempts_and_does_not_block_the_mailbox(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, settings, tmp_path):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        deliver(dovecot, bot, subject="first", attachments=[("scan.pdf", b"%PDF-1.4")])
        deliver(dovecot, bot, subject="second")
        (tmp_path / "not-a-folder").write_bytes(b"")
        settings.MEDIA_ROOT = tmp_path / "not-a-folder" / "media"  # the drive fails storing the attachment
        for _ in range(services.INCOMING_MAX_ATTEMPTS - 1):
            report = mailbox_poll(bot=bot)
            assert (report.fetched, report.answered, report.failed) == (1, 0, 0)  # stopped at the first mail
            assert "NotADirectoryError" in report.error
        report = mailbox_poll(bot=bot)  # the first mail's last attempt: given up, the next mail is answered
        assert (report.fetched, report.failed, report.answered, report.error) == (2, 1, 1, "")
        first = IncomingMail.objects.get(bot=bot, subject="first")
        assert first.status == "failed" and first.attempts == services.INCOMING_MAX_ATTEMPTS
        assert "NotADirectoryError" in first.reason
        assert IncomingMail.objects.get(bot=bot, subject="second").status == "answered"
        assert [m.message["Subject"] for m in smtp.wait_for(1)] == ["Re: second"]


def test_a_bot_without_smtp_takes_in_mail_it_does_not_answer_and_fails_once_a_mail_it_answers(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    """A bot without an SMTP server had its whole mailbox stopped before any turn ran, so an intake bot whose
    script never answers by mail (it files the mail, notifies nobody) read nothing at all. Only a turn that
    produces an answer needs to send it: that mail fails, once, its turn run once (never again at a later poll)."""
    from apps.sessions.models import ChatSession, Message

    with schema_context(mail_tenant.schema_name):
        intake = mailbox_bot(smtp, dovecot)
        BotConfig.objects.filter(bot=intake, key="email-server").delete()  # no SMTP server
        script_sync(bot=intake, path=f"{intake.name}.gbai/{intake.name}.gbdialog/start.bas",
                    data=b'HEAR note\nSET BOT MEMORY "last", note\n')  # waits, answers nothing
        deliver(dovecot, intake, subject="invoice 1")
        deliver(dovecot, intake, subject="invoice 2")
        report = mailbox_poll(bot=intake)
        assert (report.fetched, report.skipped, report.failed, report.error) == (2, 2, 0, "")
        assert sorted(IncomingMail.objects.filter(bot=intake).values_list("subject", "status")) == [
            ("invoice 1", "no_reply"), ("invoice 2", "no_reply")]
        client = imap(dovecot, intake)
        assert client.search("UNSEEN") == []
        client.logout()

        answering = mailbox_bot(smtp, dovecot)
        BotConfig.objects.filter(bot=answering, key="email-server").delete()
        script_sync(bot=answering, path=f"{answering.name}.gbai/{answering.name}.gbdialog/start.bas",
                    data=b'TALK "Thanks"\n')
        deliver(dovecot, answering, subject="order", body="my order please")
        report = mailbox_poll(bot=answering)
        assert (report.fetched, report.answered, report.failed, report.error) == (1, 0, 1, "")
        row = IncomingMail.objects.get(bot=answering)
        assert row.status == "failed" and row.attempts == 1 and row.reply_id is None
        assert row.reason == ("the answer cannot be sent: no SMTP server: set email-server in config.csv (or "
                              "SMTP_HOST for the platform)")
        assert mailbox_poll(bot=answering).fetched == 0
        session = ChatSession.objects.get(bot=answering)
        texts = [m.content for m in Message.objects.filter(session=session)]  # sealed: compared here, not in SQL
        assert texts.count("my order please") == 1 and texts.count("Thanks") == 1  # the turn ran once, kept
        assert not OutgoingMail.objects.filter(bot__in=[intake, answering]).exists()
        assert smtp.messages == []


def test_an_answer_refused_after_the_turn_fails_the_mail_at_once_and_the_turn_never_runs_again(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, settings):
    from apps.sessions.models import ChatSession, Message

    settings.MAIL_SEND_PER_BOT_PER_HOUR = 1
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        script_sync(bot=bot, path=f"{bot.name}.gbai/{bot.name}.gbdialog/start.bas",
                    data=b'SEND MAIL "boss@example.test", "New mail", "someone wrote"\nTALK "Thanks"\n')
        deliver(dovecot, bot, subject="order", body="my order please")
        report = mailbox_poll(bot=bot)  # the turn's own SEND MAIL uses up the hour's one mail
        assert (report.fetched, report.answered, report.failed, report.error) == (1, 0, 1, "")
        row = IncomingMail.objects.get(bot=bot)
        assert row.status == "failed" and row.attempts == 1 and row.reply_id is None
        assert row.reason.startswith("the answer cannot be sent: bot ")
        assert "MAIL_SEND_PER_BOT_PER_HOUR" in row.reason
        settings.MAIL_SEND_PER_BOT_PER_HOUR = 0
        assert mailbox_poll(bot=bot).fetched == 0
        assert list(OutgoingMail.objects.filter(bot=bot).values_list("subject", flat=True)) == ["New mail"]
        session = ChatSession.objects.get(bot=bot)
        texts = [m.content for m in Message.objects.filter(session=session)]  # sealed: compared here, not in SQL
        assert texts.count("my order please") == 1


def test_the_mailbox_password_comes_from_vault_in_the_tenants_scope_only(
        mail_tenant, committed_db, smtp, dovecot, vault):
    schema = mail_tenant.schema_name
    with schema_context(schema):
        bot = mailbox_bot(smtp, dovecot)
        user = BotConfig.objects.get(bot=bot, key="imap-user").value
        vault.put_secret(f"gbo/tenants/{schema}/imap", {"password": dovecot.users[user]})
        BotConfig.objects.filter(bot=bot, key="imap-pass").update(value=f"vault:gbo/tenants/{schema}/imap#password")
        deliver(dovecot, bot, headers={"Auto-Submitted": "auto-generated"})  # recorded, needs no chat turn
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.skipped, report.error) == (1, 1, "")
        BotConfig.objects.filter(bot=bot, key="imap-pass").update(value="vault:gbo/tenants/other/imap#password")
        refused = mailbox_poll(bot=bot)
        assert "outside this bot's secrets" in refused.error and refused.fetched == 0
    assert vault.count(vault.kv_path("gbo/tenants/other/imap")) == 0


def test_a_mail_nested_too_deep_is_recorded_with_the_reason_and_the_next_one_answered(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    """The standard parser takes minutes over such a mail (lines x depth); it is refused from a cheap scan."""
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        append_raw(dovecot, bot, nested_raw(MIME_MAX_DEPTH + 1).replace(b"<deep@x>", f"<deep.{bot.name}@x>".encode()))
        deliver(dovecot, bot, subject="after the deep one")
        report = mailbox_poll(bot=bot)
        assert (report.error, report.fetched, report.skipped, report.answered) == ("", 2, 1, 1)
        deep = IncomingMail.objects.get(bot=bot, subject="deep")
        assert deep.status == "skipped" and deep.from_address == "ana@x.test"
        assert deep.reason == f"the message nests MIME parts more than {MIME_MAX_DEPTH} levels deep"
        assert smtp.wait_for(1)[0].message["Subject"] == "Re: after the deep one"


def test_a_poll_that_runs_out_of_time_stops_and_leaves_the_mail_for_the_next_one(
        mail_tenant, smtp, dovecot, chat_turns):
    """Celery's SoftTimeLimitExceeded is an Exception: the poller recorded the mail it was reading as skipped
    ("unreadable"), flagged it read, and went on polling until the hard limit killed the worker. Runs on the main
    thread (signals are delivered there), in the test's transaction."""
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        append_raw(dovecot, bot, nested_raw(MIME_MAX_DEPTH, lines=600_000))  # legal, a few seconds to parse

        def time_up(signum, frame):
            raise SoftTimeLimitExceeded("soft time limit exceeded")  # as billiard's handler does

        previous = signal.signal(signal.SIGALRM, time_up)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            with pytest.raises(SoftTimeLimitExceeded):
                mailbox_poll(bot=bot)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        # The mail is claimed from its headers before it is read, so the time ran out with its attempt counted
        # (a mail whose reading keeps running out of time is given up: test_intake_poison), not given a status.
        assert [(row.status, row.attempts) for row in IncomingMail.objects.filter(bot=bot)] in ([], [("received", 1)])
        assert MailboxState.objects.get(bot=bot).last_error == "the poll ran out of time"
        client = imap(dovecot, bot)
        assert len(client.search("UNSEEN")) == 1  # still unread: the next poll reads it
        client.logout()


def test_a_mail_whose_processing_never_finished_is_given_up_at_its_next_claim(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    """A worker killed mid-turn (hard time limit, out of memory) counts no failure: the row stayed `received` and
    was claimed again on every poll, for ever, each time killing the worker again and blocking the mailbox."""
    from apps.sessions.models import ChatSession

    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        killer = deliver(dovecot, bot, subject="the killer")
        deliver(dovecot, bot, subject="next")
        # What INCOMING_MAX_ATTEMPTS claims whose worker was killed each time leave behind (the mail unflagged).
        IncomingMail.objects.create(bot=bot, message_id=killer, thread_key=killer, from_address="ana@example.test",
                                    subject="the killer", attempts=services.INCOMING_MAX_ATTEMPTS)
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.failed, report.answered, report.error) == (2, 1, 1, "")
        row = IncomingMail.objects.get(bot=bot, subject="the killer")
        assert row.status == "failed" and row.attempts == services.INCOMING_MAX_ATTEMPTS
        assert row.reason.startswith(f"processing never finished in {services.INCOMING_MAX_ATTEMPTS} attempts")
        assert [m.message["Subject"] for m in smtp.wait_for(1)] == ["Re: next"]
        assert ChatSession.objects.filter(bot=bot).count() == 1  # no turn ran for the given-up mail
        client = imap(dovecot, bot)
        assert client.search("UNSEEN") == []
        client.logout()


def test_a_turn_that_runs_out_of_time_on_its_last_attempt_stops_the_poll_and_is_not_failed(
        mail_tenant, smtp, dovecot, chat_turns, monkeypatch):
    """On a mail's last attempt the generic handler caught SoftTimeLimitExceeded (an Exception): the mail was
    failed and the poll went on to the next one with no time left."""
    from apps.sessions import services as session_services

    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        first = deliver(dovecot, bot, subject="slow")
        deliver(dovecot, bot, subject="next")
        IncomingMail.objects.create(bot=bot, message_id=first, thread_key=first, from_address="ana@example.test",
                                    subject="slow", attempts=services.INCOMING_MAX_ATTEMPTS - 1)
        turns = []

        def time_up(**kwargs):
            turns.append(kwargs["text"])
            raise SoftTimeLimitExceeded("soft time limit exceeded")

        monkeypatch.setattr(session_services, "channel_turn", time_up)
        with pytest.raises(SoftTimeLimitExceeded):
            mailbox_poll(bot=bot)
        assert len(turns) == 1  # the next mail was not started
        row = IncomingMail.objects.get(bot=bot, message_id=first)
        assert row.status == "received" and row.attempts == services.INCOMING_MAX_ATTEMPTS
        assert not IncomingMail.objects.filter(bot=bot, subject="next").exists()
        assert MailboxState.objects.get(bot=bot).last_error == "the poll ran out of time"
        client = imap(dovecot, bot)
        assert len(client.search("UNSEEN")) == 2
        client.logout()
