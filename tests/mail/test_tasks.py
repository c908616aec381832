"""Mail tasks: beat's dispatch queues one poll per tenant that reads mail, and a real worker runs it."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.core.cache import cache
from django.utils import timezone
from django_tenants.utils import schema_context

from apps.bots.models import BotConfig
from apps.mail.models import MailboxState, OutgoingMail
from apps.mail.services import mail_requeue_after
from apps.mail.tasks import POLL_QUEUED_KEY, mail_dispatch_polls, mail_requeue_stale_task
from tests.mail.test_services import mail_bot, row_wait
from tests.mail.test_services_incoming import mailbox_bot

pytestmark = pytest.mark.django_db
WAIT_S = 20


def _polled(bot) -> MailboxState:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        state = MailboxState.objects.filter(bot=bot, last_polled_at__isnull=False).first()
        if state is not None:
            return state
        time.sleep(0.1)
    raise AssertionError(f"bot {bot.name}'s mailbox was not polled within {WAIT_S} s")


def test_dispatch_queues_one_poll_per_tenant_reading_mail_and_the_worker_polls(
        mail_tenant, other_mail_tenant, committed_db, mail_worker, smtp, dovecot):
    for tenant in (mail_tenant, other_mail_tenant):
        with schema_context(tenant.schema_name):
            cache.delete(POLL_QUEUED_KEY)
    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
    with schema_context(other_mail_tenant.schema_name):
        sender = mail_bot(smtp)  # sends mail, reads none
    with schema_context(mail_tenant.schema_name):
        cache.set(POLL_QUEUED_KEY, "1", timeout=60)
    assert mail_dispatch_polls.apply().get() == 0  # tenant A has a poll queued already
    with schema_context(mail_tenant.schema_name):
        cache.delete(POLL_QUEUED_KEY)
    # Tenant B has a bot, but no mailbox: nothing is queued for it.
    assert mail_dispatch_polls.apply().get() == 1
    with schema_context(mail_tenant.schema_name):
        state = _polled(bot)
        assert state.last_error == "" and state.uidvalidity > 0
    with schema_context(other_mail_tenant.schema_name):
        assert not MailboxState.objects.filter(bot=sender).exists()


def test_a_mailbox_that_refuses_the_login_shows_the_error(mail_tenant, committed_db, smtp, dovecot):
    from apps.mail.services import mailbox_poll

    with schema_context(mail_tenant.schema_name):
        bot = mailbox_bot(smtp, dovecot)
        BotConfig.objects.filter(bot=bot, key="imap-pass").update(value="wrong-password")
        report = mailbox_poll(bot=bot)
        assert "AUTHENTICATIONFAILED" in report.error or "Authentication failed" in report.error
        assert MailboxState.objects.get(bot=bot).last_error == report.error


def test_a_queued_mail_whose_task_was_lost_is_queued_again_by_beat_and_sent_once(
        mail_tenant, committed_db, mail_worker, smtp):
    """A mail whose `mail.send` never reached the broker (broker down at commit, Redis restarted) stayed queued
    for ever: nothing queued it again."""
    assert settings.CELERY_BEAT_SCHEDULE["mail-requeue-stale"]["task"] == "mail.requeue_stale"
    long_ago = timezone.now() - mail_requeue_after() - timedelta(minutes=1)
    with schema_context(mail_tenant.schema_name):
        bot = mail_bot(smtp)

        def row(subject: str, **fields) -> OutgoingMail:  # as mail_send records it; its task is never queued
            return OutgoingMail.objects.create(bot=bot, to="ana@example.test", subject=subject, body_text="hi",
                                               message_id=f"<{subject}.{bot.name}@shop.test>", **fields)

        lost = row("lost", queued_at=long_ago)
        in_retries = row("in-retries")  # queued recently: its task may still be waiting for a retry
        sent = row("sent", queued_at=long_ago, status=OutgoingMail.Status.SENT, sent_at=long_ago)
        assert mail_requeue_stale_task.apply().get() >= 1
        (captured,) = smtp.wait_for(1)
        assert captured.message["Message-ID"] == lost.message_id
        assert row_wait(lost.pk, "sent").attempts == 1
        mail_requeue_stale_task.apply().get()  # the row is sent now: left alone
        time.sleep(0.5)
        assert [m.message["Subject"] for m in smtp.messages] == ["lost"]
        assert OutgoingMail.objects.get(pk=in_retries.pk).status == "queued"
        assert OutgoingMail.objects.get(pk=sent.pk).attempts == 0


def test_send_mail_with_the_broker_down_succeeds_and_leaves_the_mail_queued(
        canary_tenants, smtp, monkeypatch, django_capture_on_commit_callbacks):
    """The broker down at commit: the on_commit that queues `mail.send` raised after the mail was recorded, so the
    script's SEND MAIL failed and a script that retried sent the mail twice once the sweep queued both."""
    from apps.mail import services
    from tests.mail.test_services import run

    def broker_down(mail_id: int) -> None:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(services, "_enqueue_send", broker_down)
    with schema_context(canary_tenants.a.schema_name):
        bot = mail_bot(smtp)
        with django_capture_on_commit_callbacks(execute=True):
            result = run(bot, 'SEND MAIL "ana@example.test", "Order", "shipped"\n')
        assert result.status == "done", result.error
        assert list(OutgoingMail.objects.filter(bot=bot).values_list("subject", "status")) == [("Order", "queued")]
