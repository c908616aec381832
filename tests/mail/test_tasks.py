"""Mail tasks: beat's dispatch queues one poll per tenant that reads mail, and a real worker runs it."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django_tenants.utils import schema_context

from apps.bots.models import BotConfig
from apps.mail.models import MailboxState
from apps.mail.tasks import POLL_QUEUED_KEY, mail_dispatch_polls
from tests.mail.test_services import mail_bot
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
