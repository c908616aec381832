"""Recipients a server refuses at RCPT while it takes the mail for others: one refused for now (4xx) gets the mail
on a later attempt, alone and with the same Message-ID; one refused for good (5xx) is recorded, never tried again.
A real worker and a real SMTP server (aiosmtpd), as in test_services."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.mail.services import mail_send
from apps.mail.tasks import mail_send_task
from tests.mail.test_services import mail_bot, row_wait

pytestmark = pytest.mark.django_db

GREYLISTED = "450 4.2.0 Greylisted, try again later"
NO_SUCH_USER = "550 5.1.1 No such user"


def test_a_recipient_refused_for_now_gets_the_mail_later_and_one_refused_for_good_is_recorded(
        mail_tenant, committed_db, mail_worker, smtp):
    """mail_deliver marked the mail sent with last_error "grey@b.test: 450" and never tried grey@b.test again."""
    smtp.rcpt_replies = {"grey@b.test": [GREYLISTED, GREYLISTED], "bad@c.test": [NO_SUCH_USER]}
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = mail_send(bot=bot, to="ok@a.test, grey@b.test, bad@c.test", subject="Report", body_text="numbers")
        first, second = smtp.wait_for(2)
        row = row_wait(row.pk, "sent")
    assert (first.rcpt_tos, second.rcpt_tos) == (["ok@a.test"], ["grey@b.test"])
    assert first.message["Message-ID"] == second.message["Message-ID"] == row.message_id
    assert second.message["To"] == "ok@a.test, grey@b.test, bad@c.test"  # the header names everyone, as before
    # bad@c.test was asked once: accepted on a second RCPT, it would have been in a later transaction.
    assert smtp.rcpt_commands == ["ok@a.test", "grey@b.test", "bad@c.test", "grey@b.test", "grey@b.test"]
    assert row.attempts == 3 and row.sent_at is not None
    assert row.recipient_status == {"ok@a.test": "sent", "grey@b.test": "sent", "bad@c.test": NO_SUCH_USER}
    assert row.last_error == f"recipients refused: bad@c.test: {NO_SUCH_USER}"


def test_while_a_recipient_is_retried_the_row_says_so_and_giving_up_keeps_the_mail_sent_for_the_others(
        mail_tenant, committed_db, mail_worker, smtp, monkeypatch):
    monkeypatch.setattr(mail_send_task, "max_retries", 2)
    smtp.rcpt_replies = {"grey@b.test": [GREYLISTED] * 10, "alone@b.test": [GREYLISTED] * 10}
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = mail_send(bot=bot, to="ok@a.test, grey@b.test", subject="Report", body_text="numbers")
        (captured,) = smtp.wait_for(1)
        row = row_wait(row.pk, "sent")
        assert captured.rcpt_tos == ["ok@a.test"] and smtp.rcpt_commands.count("grey@b.test") == 3
        assert row.attempts == 3 and row.recipient_status == {"ok@a.test": "sent", "grey@b.test": GREYLISTED}
        assert row.last_error == ("gave up after 3 attempts: recipients refused for now, tried again later: "
                                  f"grey@b.test: {GREYLISTED}")
        # Nobody took it: failed, as any mail whose retries ran out.
        alone = row_wait(mail_send(bot=bot, to="alone@b.test", subject="x", body_text="y").pk, "failed")
        assert alone.attempts == 3 and alone.sent_at is None and "gave up after 3 attempts" in alone.last_error
        assert alone.recipient_status == {"alone@b.test": GREYLISTED}
    assert len(smtp.messages) == 1


def test_every_recipient_refused_for_good_fails_the_mail_at_once_naming_each(mail_tenant, committed_db, mail_worker,
                                                                              smtp):
    smtp.rcpt_replies = {"a@x.test": [NO_SUCH_USER], "b@x.test": ["553 5.7.1 Relaying denied"]}
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)
        row = row_wait(mail_send(bot=bot, to="a@x.test, b@x.test", subject="x", body_text="y").pk, "failed")
    assert row.attempts == 1 and smtp.messages == []
    assert row.last_error == f"recipients refused: a@x.test: {NO_SUCH_USER}; b@x.test: 553 5.7.1 Relaying denied"
    assert row.sent_at is None
