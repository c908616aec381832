"""Poison mail in: a mail the standard parser takes minutes over (a header full of `;`, commas or encoded words)
must neither hold the mailbox nor keep the tenant's other bots from being polled.

Before: the whole mail was parsed before its IncomingMail row was claimed and its attempt counted, so the task's
soft time limit fired with nothing recorded, INCOMING_MAX_ATTEMPTS never applied, the exception left
mailboxes_poll (bots in name order) and the bots after it were never polled; each poll cost the full time limit.
Now the headers are checked by a linear scan before the parser sees the mail (content.message_headers_check), the
row is claimed from the top-level headers before the mail is read, and the least recently polled bot goes first.
"""

from __future__ import annotations

import signal
import urllib.parse

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django_tenants.utils import schema_context
from imapclient import IMAPClient

from apps.bots.models import Bot, BotConfig
from apps.mail import content, services
from apps.mail.content import MIME_MAX_DEPTH, MessageTooComplex, message_parse
from apps.mail.models import IncomingMail, MailboxState
from apps.mail.services import mailboxes_poll
from tests.mail.conftest import bot_name_new
from tests.mail.test_content import nested_raw
from tests.mail.test_services_incoming import append_raw, deliver, imap
from tests.support.dovecot import DovecotServer
from tests.support.smtp_server import SmtpServer

pytestmark = pytest.mark.django_db

HEAD = "From: Ana <ana@example.test>\r\nTo: bot@shop.test\r\nMessage-ID: {id}\r\n"


def boundary_poison(message_id: str = "<boundary@x>") -> bytes:
    """`Content-Type: multipart/mixed; boundary=b;;;...`: 3 KB here; 16 KB held a worker 13 s, 64 KB minutes."""
    return (HEAD.format(id=message_id) + "Subject: boundary\r\nContent-Type: multipart/mixed; boundary=b"
            + ";" * 3000 + "\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n").encode()


def filename_poison(message_id: str = "<filename@x>") -> bytes:
    return (HEAD.format(id=message_id) + 'Subject: filename\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            '--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--b\r\nContent-Type: application/pdf\r\n'
            'Content-Disposition: attachment; filename="' + ";" * 2000 + '"\r\n\r\nJVBERg==\r\n--b--\r\n').encode()


def subject_poison(message_id: str = "<subject@x>") -> bytes:
    return (HEAD.format(id=message_id) + "Subject:" + " =?utf-8?q?a?=" * 5000 + "\r\n\r\nhi\r\n").encode()


def from_poison(message_id: str = "<from@x>", commas: int = 6000) -> bytes:
    return (f"From: ana@example.test{',' * commas}\r\nMessage-ID: {message_id}\r\nSubject: from\r\n\r\nhi\r\n").encode()


@pytest.mark.parametrize(("raw", "reason", "header_max"), [
    (boundary_poison(), "the message has a Content-Type header with more than 256 separators", None),
    (filename_poison(), "the message has a Content-Disposition header with more than 256 separators", None),
    (subject_poison(), "the message has a Subject header longer than 64 KiB", None),
    # A From of 64 KB of commas takes the standard parser about a minute: a lowered limit, a smaller From.
    (from_poison(), "the message has a From header longer than 4 KiB", 4096),
])
def test_headers_past_the_limits_are_refused_before_the_parser_and_their_headers_still_read(
        raw, reason, header_max, monkeypatch):
    if header_max is not None:
        monkeypatch.setattr(content, "HEADER_MAX_BYTES", header_max, raising=False)
    with pytest.raises(MessageTooComplex, match=reason):
        message_parse(raw)
    head = message_parse(raw, headers_only=True)  # what the claim and the record of a refused mail use
    assert head.message_id.endswith("@x>") and head.from_address in {"ana@example.test", ""}


def test_real_mail_with_long_file_names_and_many_parts_is_not_refused():
    name = urllib.parse.quote(("日本語のファイル名" * 28).encode())  # 252 characters, RFC 2231 in 60-byte pieces
    pieces = "".join(f";\r\n name*{n}*={'utf-8' + chr(39) * 2 if n == 0 else ''}{name[i:i + 60]}"
                     for n, i in enumerate(range(0, len(name), 60)))
    part = (f"--b\r\nContent-Type: application/pdf{pieces}\r\nContent-Disposition: attachment"
            f"{pieces.replace('name*', 'filename*')}\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n")
    simple = ('--b\r\nContent-Type: text/plain; charset="utf-8"; format=flowed\r\nContent-Disposition: attachment; '
              'filename="notes (final).txt"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nnotes\r\n')
    raw = (HEAD.format(id="<many@x>") + 'Subject: many\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
           "--b\r\nContent-Type: text/plain\r\n\r\nthe files\r\n" + part * 10 + simple * 400 + "--b--\r\n").encode()
    mail = message_parse(raw)
    assert len(mail.attachments) == 410 and mail.attachments[0].filename.endswith("_")  # non-ASCII made safe
    assert mail.attachments[-1].filename == "notes _final_.txt"


def mailbox_bot_named(prefix: str, smtp: SmtpServer, dovecot: DovecotServer) -> Bot:
    bot = Bot.objects.create(name=bot_name_new(prefix), display_name="Inbox Bot")
    user = f"{bot.name}@shop.test"
    dovecot.add_user(user, f"pw-{user}")
    config = {"email-from": user, "email-server": smtp.host, "email-port": str(smtp.port), "email-security": "plain",
              "imap-server": dovecot.host, "imap-port": str(dovecot.port), "imap-security": "plain",
              "imap-user": user, "imap-pass": f"pw-{user}"}
    for line, (key, value) in enumerate(config.items(), start=2):
        BotConfig.objects.create(bot=bot, key=key, value=value, line=line)
    return bot


def unread(dovecot: DovecotServer, bot: Bot) -> int:
    client: IMAPClient = imap(dovecot, bot)
    try:
        return len(client.search("UNSEEN"))
    finally:
        client.logout()


def test_poison_mail_is_recorded_refused_and_the_mail_after_it_and_the_other_bots_are_answered(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns, monkeypatch):
    monkeypatch.setattr(content, "HEADER_MAX_BYTES", 4096, raising=False)  # a 6 KB From stands in for 64 KB
    with schema_context(mail_tenant.schema_name):
        first = mailbox_bot_named("a-poisoned", smtp, dovecot)
        other = mailbox_bot_named("b-other", smtp, dovecot)
        append_raw(dovecot, first, boundary_poison(f"<boundary.{first.name}@x>"))
        append_raw(dovecot, first, filename_poison(f"<filename.{first.name}@x>"))
        append_raw(dovecot, first, from_poison(f"<from.{first.name}@x>"))
        deliver(dovecot, first, subject="after the poison")
        deliver(dovecot, other, subject="for the other bot")
        reports = {report.bot: report for report in mailboxes_poll()}
        poisoned = reports[first.name]
        assert (poisoned.fetched, poisoned.skipped, poisoned.answered, poisoned.error) == (4, 3, 1, "")
        assert (reports[other.name].answered, reports[other.name].error) == (1, "")
        refused = dict(IncomingMail.objects.filter(bot=first, status="skipped").values_list("subject", "reason"))
        assert refused == {
            "boundary": "the message has a Content-Type header with more than 256 separators (parameters, quotes, "
                        "comments)",
            "filename": "the message has a Content-Disposition header with more than 256 separators (parameters, "
                        "quotes, comments)",
            "from": "the message has a From header longer than 4 KiB"}
        assert sorted(m.message["Subject"] for m in smtp.wait_for(2)) == ["Re: after the poison",
                                                                           "Re: for the other bot"]
        assert unread(dovecot, first) == 0 and mailboxes_poll()[0].fetched == 0


def test_a_mail_whose_reading_keeps_running_out_of_time_is_given_up_and_the_other_bots_are_polled_meanwhile(
        mail_tenant, smtp, dovecot, chat_turns, monkeypatch):
    """The soft time limit fires while the slow mail is read (a real SIGALRM raising SoftTimeLimitExceeded in the
    parser, as billiard's handler does, armed when that mail's reading starts: 0.2 s stands for the task's 600).
    Runs on the main thread (signals are delivered there), in the test's transaction: replies are queued, not sent."""
    real_parse = content.message_parse

    def time_up(signum, frame):
        raise SoftTimeLimitExceeded("soft time limit exceeded")

    def parse_until_time_is_up(raw: bytes, *, headers_only: bool = False):
        if headers_only or b"Subject: deep" not in raw:
            return real_parse(raw, headers_only=headers_only)
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        try:
            return real_parse(raw)  # legal, but seconds of parsing
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    monkeypatch.setattr(content, "message_parse", parse_until_time_is_up)
    previous = signal.signal(signal.SIGALRM, time_up)
    try:
        with schema_context(mail_tenant.schema_name):
            first = mailbox_bot_named("a-slow", smtp, dovecot)
            other = mailbox_bot_named("b-waiting", smtp, dovecot)
            slow_id = f"<deep.{first.name}@x>"
            append_raw(dovecot, first, nested_raw(MIME_MAX_DEPTH, lines=600_000).replace(b"<deep@x>", slow_id.encode()))
            deliver(dovecot, first, subject="after the slow one")
            deliver(dovecot, other, subject="for the other bot")
            for attempt in range(1, services.INCOMING_MAX_ATTEMPTS + 1):
                with pytest.raises(SoftTimeLimitExceeded):
                    mailboxes_poll()
                slow = IncomingMail.objects.get(bot=first, message_id=slow_id)
                assert (slow.status, slow.attempts) == ("received", attempt)  # each run out of time is counted
                assert MailboxState.objects.get(bot=first).last_error == "the poll ran out of time"
                if attempt == 1:  # the slow bot was polled first (by name): the other one waits for the next poll
                    assert not IncomingMail.objects.filter(bot=other).exists()
                else:  # ... and is polled first then
                    assert IncomingMail.objects.get(bot=other).status == "answered"
            reports = {report.bot: report for report in mailboxes_poll()}  # the slow mail's claim past its attempts
            assert (reports[first.name].failed, reports[first.name].answered, reports[first.name].error) == (1, 1, "")
            slow = IncomingMail.objects.get(bot=first, message_id=slow_id)
            assert slow.status == "failed" and slow.reason.startswith(
                f"processing never finished in {services.INCOMING_MAX_ATTEMPTS} attempts")
            assert IncomingMail.objects.get(bot=first, subject="after the slow one").status == "answered"
            assert unread(dovecot, first) == 0 and unread(dovecot, other) == 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
