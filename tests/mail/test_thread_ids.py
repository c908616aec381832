"""Header fields of received mail the database can store, and thread ids kept whole: NUL in a header made the
mail's claim fail on every poll (before its attempt was counted); a Message-ID over 255 characters was cut
without its `>` (so two such ids that differ later were one mail, and the answer threaded nowhere); and the
answer's References were cut to 8000 characters from the end, dropping the newest ids."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.mail import content
from apps.mail.models import IncomingMail, OutgoingMail
from apps.mail.services import incoming_process, mailbox_poll
from tests.mail.test_services import mail_bot, row_wait
from tests.mail.test_services_incoming import append_raw, mailbox_bot

pytestmark = pytest.mark.django_db


def test_nul_in_the_headers_and_the_body_is_removed_and_the_mail_answered(mail_tenant, smtp, chat_turns):
    """Dovecot turns NUL into 0x80, other servers pass it on: the poller's own entry point is called here."""
    from apps.sessions.models import ChatSession, Message

    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        raw = (b"From: An\x00a <ana@exa\x00mple.test>\r\nTo: bot@shop.test\r\nSubject: Hel\x00lo\r\n"
               b"Message-ID: <n\x00ul@example.test>\r\nIn-Reply-To: <pre\x00v@example.test>\r\n"
               b"References: <ro\x00ot@example.test> <pre\x00v@example.test>\r\n\r\nWhen do you\x00 open?\r\n")
        row = incoming_process(bot=bot, raw=raw).mail
        assert row.status == "answered", row.reason
        assert (row.message_id, row.thread_key, row.from_address, row.subject) == (
            "<nul@example.test>", "<root@example.test>", "ana@example.test", "Hello")
        reply = OutgoingMail.objects.get(pk=row.reply_id)
        assert reply.in_reply_to == "<nul@example.test>"
        assert reply.references == "<root@example.test> <prev@example.test> <nul@example.test>"
        session = ChatSession.objects.get(bot=bot)
        assert session.thread_key == "<root@example.test>"
        assert "When do you open?" in [m.content for m in Message.objects.filter(session=session)]


def long_id(tail: str) -> str:
    return f"<{'x' * 300}.{tail}@example.test>"


def test_message_ids_over_255_characters_are_told_apart_and_answered_whole(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    from apps.sessions.models import ChatSession

    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        first, second = long_id(f"one.{bot.name}"), long_id(f"two.{bot.name}")
        for message_id, subject in ((first, "first"), (second, "second")):
            append_raw(dovecot, bot, (f"From: ana@example.test\r\nSubject: {subject}\r\nMessage-ID: {message_id}"
                                      "\r\n\r\nhello\r\n").encode())
        report = mailbox_poll(bot=bot)
        assert (report.fetched, report.answered, report.duplicates, report.error) == (2, 2, 0, "")
        rows = {row.subject: row for row in IncomingMail.objects.filter(bot=bot)}
        assert rows["first"].message_id != rows["second"].message_id
        for row in rows.values():  # stored whole or as a digest id, never cut without its `>`
            assert len(row.message_id) <= 255 and row.message_id.endswith("@long-message-id>")
            assert row.thread_key == row.message_id
        replies = {m.message["Subject"]: m.message for m in smtp.wait_for(2)}
        assert replies["Re: first"]["In-Reply-To"] == first and replies["Re: first"]["References"] == first
        assert replies["Re: second"]["In-Reply-To"] == second
        # Ana answers the first reply: the same thread, the same chat session.
        ours = replies["Re: first"]["Message-ID"]
        append_raw(dovecot, bot, (f"From: ana@example.test\r\nSubject: Re: first\r\nMessage-ID: <again.{bot.name}@x>"
                                  f"\r\nIn-Reply-To: {ours}\r\nReferences: {first} {ours}\r\n\r\nthanks\r\n").encode())
        assert mailbox_poll(bot=bot).answered == 1
        again = IncomingMail.objects.get(bot=bot, message_id=f"<again.{bot.name}@x>")
        assert again.thread_key == rows["first"].thread_key
        assert ChatSession.objects.filter(bot=bot).count() == 2
        third = smtp.wait_for(3)[2].message
        assert third["References"].split() == [first, ours, f"<again.{bot.name}@x>"]


def test_a_long_references_header_keeps_the_threads_first_and_newest_ids_whole(
        mail_tenant, committed_db, mail_worker, smtp, dovecot, chat_turns):
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        thread = [f"<message-number-{n:04d}.{'r' * 50}@example.test>" for n in range(200)]  # ~15,000 characters
        mine = f"<latest.{bot.name}@example.test>"
        raw = (f"From: ana@example.test\r\nSubject: long thread\r\nMessage-ID: {mine}\r\n"
               f"In-Reply-To: {thread[-1]}\r\nReferences: {' '.join(thread)}\r\n\r\nhi\r\n")
        append_raw(dovecot, bot, raw.encode())
        assert mailbox_poll(bot=bot).answered == 1
        row = IncomingMail.objects.get(bot=bot)
        assert row.thread_key == thread[0]
        reply = row_wait(row.reply_id, "sent")
        sent = smtp.wait_for(1)[0].message["References"].split()
        assert sent == reply.references.split()
        assert sent[0] == thread[0] and sent[-2:] == [thread[-1], mine]  # the root and the newest
        assert sent[1:-1] == thread[-(len(sent) - 2):]  # a run of the newest, each whole
        assert len(reply.references) <= 8000 and len(sent) > 50  # content.REFERENCES_MAX_CHARS


def test_thread_ids_are_whole_or_left_out():
    thread_ids, references_value = content.thread_ids, content.references_value
    assert content.message_id_key(long_id("a")) == content.message_id_key(long_id("a")) != content.message_id_key(
        long_id("b"))
    assert content.message_id_key("<short@x>") == "<short@x>"
    assert thread_ids(["<a@x>", "<b\x00c@x>"]) == ["<a@x>", "<bc@x>"]
    assert thread_ids(f"<a@x> <{'y' * 990}@x> <b@x>") == ["<a@x>", "<b@x>"]  # too long for a header line
    ids = [f"<{n:03d}{'z' * 90}@x>" for n in range(100)]
    value = references_value(ids, limit=1000)
    assert value.split() == [ids[0], *ids[-9:]] and len(value) <= 1000
    assert references_value([]) == "" and references_value(["<a@x>"]) == "<a@x>"
