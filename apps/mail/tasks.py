"""Mail tasks on queue `mail`: thin wrappers over apps.mail.services.

* `mail.send` (tenant): deliver one OutgoingMail; temporary failures retried with backoff, then failed.
* `mail.poll` (tenant): poll every configured mailbox of the tenant's bots.
* `mail.dispatch_polls` (platform, beat every MAIL_POLL_INTERVAL_S): one `mail.poll` per ready tenant that
  has a bot with `imap-server`, and none while one is still queued.
* `mail.requeue_stale` (platform, beat every 5 minutes): in every ready tenant, queue again the mails whose
  `mail.send` task was lost (still queued long after their retries could have ended).
"""

from __future__ import annotations

from django.conf import settings
from django.core.cache import cache

from apps.bots.models import BotConfig
from apps.mail.services import (
    MAIL_SEND_RETRIES,
    MailTemporaryError,
    mail_deliver,
    mail_give_up,
    mail_retry_delay,
    mailboxes_poll,
    mails_requeue_stale,
)
from apps.tenants.celery import PlatformTask, each_ready_tenant, queue_unless_queued
from gbplatform.celery import app

# Set (in the tenant's cache namespace) while a poll is queued: a slow tenant never piles up polls.
# Expires by itself after this many intervals if a worker died holding it.
POLL_QUEUED_KEY = "mail:poll-queued"
POLL_QUEUED_TTL_INTERVALS = 10
# config.csv spellings of the IMAP server key (kebab-case and the Title Case dialect), for a cheap
# "does any bot of this tenant read mail" query; apps.mail.accounts decides per bot.
IMAP_KEY_REGEX = r"^imap[-_ ](server|host)$"


@app.task(bind=True, name="mail.send", max_retries=MAIL_SEND_RETRIES)
def mail_send_task(self, mail_id: int) -> str:
    try:
        return mail_deliver(mail_id=mail_id)
    except MailTemporaryError as exc:
        if self.request.retries >= self.max_retries:
            mail_give_up(mail_id=mail_id, error=str(exc))
            return "failed"
        raise self.retry(exc=exc, countdown=mail_retry_delay(self.request.retries)) from exc


@app.task(name="mail.poll", when_not_ready="skip")
def mail_poll_task() -> list[dict]:
    cache.delete(POLL_QUEUED_KEY)
    return [vars(report) for report in mailboxes_poll()]


@app.task(name="mail.dispatch_polls", base=PlatformTask)
def mail_dispatch_polls() -> int:
    ttl = settings.MAIL_POLL_INTERVAL_S * POLL_QUEUED_TTL_INTERVALS

    def queue() -> bool:
        values = BotConfig.objects.filter(key__iregex=IMAP_KEY_REGEX).values_list("value", flat=True)
        if not any(str(v).strip() for v in values):  # values are encrypted: checked here, not in SQL
            return False
        return queue_unless_queued(mail_poll_task, mark=POLL_QUEUED_KEY, ttl=ttl, queue="mail")

    return each_ready_tenant(queue, what="mail.dispatch_polls")


@app.task(name="mail.requeue_stale", base=PlatformTask)
def mail_requeue_stale_task() -> int:
    """Beat: in every ready tenant, queue again the mails whose `mail.send` task never reached a worker."""
    return each_ready_tenant(mails_requeue_stale, what="mail.requeue_stale")
