"""Email out and email in for a tenant's bots (spec 8.2, 3.5.10): typed services the tasks and hosts call.

Out: `mail_send` records an OutgoingMail row in the caller's transaction and queues `mail.send` after
commit; `mail_deliver` (the task's body) sends it once by SMTP. In: `mailbox_poll` reads a bot's IMAP
folder and hands each new message to `incoming_process`, which runs a chat turn on channel `email` and
answers in the same thread.

Failure modes this module prevents:

* A mail sent for a transaction that rolled back: the task is queued on commit only.
* Sending twice: a redelivered task for a row already sent does nothing, and a per-row advisory lock keeps
  two workers from sending the same row at once. (A worker killed after the server accepted the message
  and before the row was marked sent sends it again on redelivery: delivery is at-least-once, with the
  same Message-ID both times.)
* Retrying forever, or not at all: temporary failures (4xx replies, connection errors, Vault down) are
  retried with a bounded exponential backoff; permanent ones (5xx, bad configuration) fail at once with
  the reason on the row.
* Answering one mail twice: IncomingMail is unique per (bot, Message-ID) and claimed before the bot runs;
  the same mail polled twice, or by two pollers, is answered once. Two pollers never read one mailbox at
  once (advisory lock per bot).
* One mail holding a mailbox, or a tenant's other mailboxes, for ever: a mail is claimed and its attempt
  counted before it is read (headers past the parser's safe limits are refused first, content.py), so one that
  keeps failing or running out of time is given up after INCOMING_MAX_ATTEMPTS; the least recently polled
  mailbox is polled first, so the one whose poll ran out of time goes last the next time.
* Mail loops: automated mail (RFC 3834 Auto-Submitted, bulk, bounces, the bot's own address) is recorded
  and not answered, and every mail a bot sends says it is automated.
* Bodies in logs: log lines name the Message-ID, recipients and status, never the body.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import re
import smtplib
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.basic.ssrf import SSRFError, SSRFResolveError
from apps.bots.models import Bot
from apps.bots.selectors import bot_config_values
from apps.core.locks import tenant_lock_try
from apps.core.outbound import CheckedSMTP, CheckedSMTP_SSL, checked_imap_client
from apps.core.secrets import SecretUnavailable
from apps.drive.backends import DriveKeyError, DriveObjectTooLarge
from apps.drive.storage import package_root, tenant_drive
from apps.mail import content
from apps.mail.accounts import (
    FROM_KEYS,
    PLAIN,
    SSL,
    STARTTLS,
    ImapAccount,
    MailConfigError,
    SmtpAccount,
    address_valid,
    imap_account,
    imap_configured,
    smtp_account,
)
from apps.mail.models import IncomingMail, MailboxState, OutgoingMail

logger = logging.getLogger(__name__)

# --- limits ----------------------------------------------------------------------------------------------

# Recipients of one SEND MAIL: a report to a team, not a mailing list (BROADCAST is for that).
MAIL_MAX_RECIPIENTS = 50
# Attachments of one outgoing mail: most providers refuse messages over 25 MB, and base64 adds a third.
OUTGOING_ATTACHMENTS_MAX = 10
OUTGOING_ATTACHMENTS_MAX_BYTES = 15 * 1024 * 1024
# A body a script builds is text for a person; 1 MiB is far beyond that and bounded per row.
BODY_MAX_CHARS = 1024 * 1024
# Waiting on a mail server: long enough for a slow relay's banner and DATA reply, short enough that a
# dead one costs a worker at most this per attempt.
SMTP_TIMEOUT_S = 30
IMAP_TIMEOUT_S = 30
# Attempts of `mail.send` after the first (backoff base MAIL_RETRY_BASE_S doubles each time, capped):
# with the default 30 s base that is ~15 minutes, enough for greylisting and a relay restart.
MAIL_SEND_RETRIES = 5
MAIL_RETRY_MAX_S = 1800  # must stay below the broker's visibility timeout
# Received mail: bigger messages are recorded and skipped unread (the common provider limit is 25 MB).
INCOMING_MAX_BYTES = 25 * 1024 * 1024
INCOMING_ATTACHMENT_MAX_BYTES = 10 * 1024 * 1024
INCOMING_ATTACHMENTS_MAX = 20
# Beat's `mail.requeue_stale` queues a mail again once it has been queued this long past the longest its
# retry schedule can take (`mail_requeue_after`): its task never reached the broker (broker down at commit,
# Redis restarted and lost it). The margin covers a busy queue; a mail still in its retries is never queued
# twice. At most MAIL_REQUEUE_BATCH per tenant and sweep, so the sweep after a long outage stays short.
MAIL_REQUEUE_MARGIN = timedelta(minutes=10)
MAIL_REQUEUE_BATCH = 500
# The window MAIL_SEND_PER_BOT_PER_HOUR counts in.
SEND_RATE_WINDOW = timedelta(hours=1)
# Messages one poll processes; the rest wait for the next poll, so one flooded mailbox cannot hold a
# worker (and every other mailbox of the tenant) for long.
POLL_BATCH = 25
# A message whose processing crashed is tried again on the next polls, this many times in all.
INCOMING_MAX_ATTEMPTS = 3
# Where received attachments go, inside the bot's drive area (`<bot>.gbai/<bot>.gbdrive/`).
INBOX_FOLDER = "mail/inbox"
# RFC 3834: every mail a bot sends is automated; replies say so more precisely.
AUTO_GENERATED, AUTO_REPLIED = "auto-generated", "auto-replied"
# A script's body is sent as HTML when it starts with one of these tags (`<b>`, `<p class=...>`, `<br/>`);
# "<ana@example.test> wrote:" is text.
_HTML_BODY_RE = re.compile(r"^\s*<(!doctype|html|body|p|div|table|br|h[1-6]|ul|ol|span|b|i|strong|em|a)[\s>/]",
                           re.IGNORECASE)


# Line breaks and tabs separate recipients (a list read from a file: `to = READ "admins.txt"`, a trailing
# newline). What a recipient list may not contain: other control characters, and ':' outside a quoted name
# (a header "Bcc: e@y" after a line break, or an address group).
_SEPARATOR_RE = re.compile(r"[\r\n\t]+")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_QUOTED_RE = re.compile(r'"(?:[^"\\]|\\.)*"')


class MailError(ValueError):
    """A mail cannot be queued as asked (bad recipient, missing attachment...): nothing was recorded."""


class MailTemporaryError(RuntimeError):
    """Sending failed in a way that may pass (4xx reply, connection error, Vault down): retry later."""


class MailPermanentError(RuntimeError):
    """Sending failed in a way a retry cannot fix (5xx reply, bad configuration)."""


def bot_drive_root(bot: Bot) -> str:
    """The bot's own area of the drive (as BotHost's file keywords see it): `<bot>.gbai/<bot>.gbdrive/`."""
    return f"{package_root(bot.name)}{bot.name}.gbdrive/"


# --- email out -------------------------------------------------------------------------------------------


def recipients_parse(to: str | Sequence[str]) -> list[str]:
    """Addresses from `a@x, B <b@y>; c@z` (or a list); MailError naming the first bad one."""
    items = [to] if isinstance(to, str) else [str(item) for item in to]
    text = ",".join(_SEPARATOR_RE.sub(",", item).strip() for item in items)
    control = _CONTROL_RE.search(text)
    if control:
        raise MailError(f"the recipients contain a control character (U+{ord(control.group()):04X}); give "
                        "addresses separated by commas")
    if ":" in _QUOTED_RE.sub("", text):
        # A header name or an address group ("a@x\r\nBcc: e@y", "team: a@x, b@y;"), which the parser takes
        # apart into addresses the script never meant as such: refused, not guessed at.
        raise MailError("the recipients contain ':' (a header or an address group such as 'Bcc: ...'); give "
                        "addresses separated by commas")
    found: list[str] = []
    for name, address in email.utils.getaddresses([text.replace(";", ",")]):
        address = address.strip()
        if not address and not name.strip():
            continue
        if not address_valid(address):
            raise MailError(f"{(address or name).strip()!r} is not an e-mail address")
        if address.lower() not in {a.lower() for a in found}:
            found.append(address)
    if not found:
        raise MailError("the mail has no recipient")
    if len(found) > MAIL_MAX_RECIPIENTS:
        raise MailError(f"{len(found)} recipients; one mail goes to at most {MAIL_MAX_RECIPIENTS}")
    return found


def _attachment_key(bot: Bot, path: str) -> str:
    relative = str(path).strip().strip("/")
    if not relative or ".." in relative.split("/"):
        raise MailError(f"attachment {path!r} must be a path in the bot's drive, without '..'")
    return bot_drive_root(bot) + relative


def _attachments_read(bot: Bot, paths: Sequence[str]) -> list[content.Attachment]:
    if len(paths) > OUTGOING_ATTACHMENTS_MAX:
        raise MailError(f"{len(paths)} attachments; a mail carries at most {OUTGOING_ATTACHMENTS_MAX}")
    drive, total, found = tenant_drive(), 0, []
    limit_mb = OUTGOING_ATTACHMENTS_MAX_BYTES // (1024 * 1024)
    for path in paths:
        try:
            # Read at most what is left of the allowance: a 2 GB drive file (a meeting recording) is refused
            # from its size, not loaded into the worker's memory to be measured.
            data = drive.read(_attachment_key(bot, path), max_bytes=OUTGOING_ATTACHMENTS_MAX_BYTES - total)
        except (FileNotFoundError, DriveKeyError):
            raise MailError(f"attachment not found in the bot's drive: {path}") from None
        except DriveObjectTooLarge as exc:
            raise MailError(f"attachment {path} is {exc.size} bytes; the attachments of one mail are at most "
                            f"{limit_mb} MB in all") from None
        total += len(data)
        name = content.filename_safe(str(path), "attachment")
        found.append(content.Attachment(name, data, content.attachment_content_type(name)))
    return found


def _message_id_domain(bot: Bot) -> str:
    values = bot_config_values(bot)
    sender = next((values[k] for k in FROM_KEYS if values.get(k)), "") or getattr(settings, "MAIL_DEFAULT_FROM", "")
    domain = sender.rpartition("@")[2].strip().lower()
    return domain if re.fullmatch(r"[a-z0-9.-]{1,200}", domain) else "localhost"


def mail_send(*, bot: Bot, to: str | Sequence[str], subject: str, body_text: str, body_html: str | None = None,
              attachments: Sequence[str] = (), in_reply_to: str | None = None,
              references: str | Sequence[str] | None = None) -> OutgoingMail:
    """Record a mail from `bot` and send it by SMTP after the current transaction commits.

    `attachments` are paths in the bot's drive area (as READ/WRITE see them); they must exist now and are
    read again when the mail is sent. Raises MailError (nothing recorded) on a bad recipient, a missing
    or oversized attachment, or an oversized body, and MailConfigError when the bot has no usable sender
    or server (the password is checked when sending).
    """
    recipients = recipients_parse(to)
    smtp_account(bot, with_password=False)  # a bot that cannot send at all is told now, not in the worker
    _send_rate_check(bot)
    paths = [str(p).strip().strip("/") for p in attachments if str(p).strip()]
    _attachments_read(bot, paths)  # fail now, in the script, rather than later in the worker
    body_html = body_html or ""
    if len(body_text) > BODY_MAX_CHARS or len(body_html) > BODY_MAX_CHARS:
        raise MailError(f"the body is longer than {BODY_MAX_CHARS} characters")
    # Thread headers name ids whole (never a cut id, which matches nothing): In-Reply-To one id, References the
    # thread's first id and the newest that fit (content.references_value).
    in_reply_to = (content.thread_ids(in_reply_to) or [""])[0]
    references = content.references_value(content.thread_ids(references))
    with transaction.atomic():
        row = OutgoingMail.objects.create(
            bot=bot, to=", ".join(recipients), subject=content.header_clean(subject),
            message_id=email.utils.make_msgid(domain=_message_id_domain(bot)),
            in_reply_to=in_reply_to, references=references,
            body_text=body_text, body_html=body_html, attachments=paths,
        )
        # Robust: with the broker down the mail is recorded (queued) and `mail.requeue_stale` queues it later;
        # raising after the commit told the script SEND MAIL failed, and a retry sent the mail twice.
        transaction.on_commit(lambda: _enqueue_send(row.pk), robust=True)
    logger.info("mail: queued %s from bot %s to %s", row.message_id, bot.name, row.to)
    return row


def _send_rate_check(bot: Bot) -> None:
    """MailError when the bot queued MAIL_SEND_PER_BOT_PER_HOUR mails in the last hour."""
    limit = int(getattr(settings, "MAIL_SEND_PER_BOT_PER_HOUR", 0) or 0)
    if limit <= 0:
        return
    since = timezone.now() - SEND_RATE_WINDOW
    sent = OutgoingMail.objects.filter(bot=bot, created_at__gte=since).count()
    if sent >= limit:
        raise MailError(f"bot {bot.name} queued {sent} mails in the last hour; the limit is {limit} "
                        "(MAIL_SEND_PER_BOT_PER_HOUR)")


def _enqueue_send(mail_id: int) -> None:
    from apps.mail.tasks import mail_send_task

    mail_send_task.apply_async(args=[mail_id], queue="mail")


def script_mail_send(*, bot: Bot, to: str, subject: str, body: str, attachments: Sequence[str] = ()) -> dict:
    """SEND MAIL / BEGIN MAIL from a script: a body that starts with HTML is sent as HTML with a text part."""
    is_html = bool(_HTML_BODY_RE.match(body or ""))
    row = mail_send(bot=bot, to=to, subject=subject, body_text="" if is_html else body,
                    body_html=body if is_html else None, attachments=attachments)
    return {"success": True, "message_id": row.message_id, "status": row.status}


def _public_only(platform: bool) -> bool:
    """A mail server the bot chose, private hosts not allowed: connect only to an address checked as public in the
    same resolution (apps.core.outbound), never to what its name resolves to after accounts.py checked it (DNS
    rebinding). The platform's SMTP_HOST is trusted."""
    return not platform and not getattr(settings, "MAIL_ALLOW_PRIVATE_HOSTS", False)


def _host_refused(protocol: str, host: str, exc: SSRFError) -> Exception:
    """The error for a mail server refused when connecting: its name now resolves to a non-public address (the
    bot's configuration, permanent), or does not resolve now (temporary)."""
    if isinstance(exc, SSRFResolveError):
        return MailTemporaryError(f"{protocol} server {host}: {exc}")
    return MailConfigError(f"{protocol} server {host} refused: {exc} (mail servers must be public hosts)")


@contextlib.contextmanager
def _smtp_connect(account: SmtpAccount) -> Iterator[smtplib.SMTP]:
    context = ssl.create_default_context()
    checked = _public_only(account.platform)
    try:
        if account.security == SSL:
            client: smtplib.SMTP = (CheckedSMTP_SSL if checked else smtplib.SMTP_SSL)(
                account.host, account.port, timeout=SMTP_TIMEOUT_S, context=context)
        else:
            client = (CheckedSMTP if checked else smtplib.SMTP)(account.host, account.port, timeout=SMTP_TIMEOUT_S)
    except SSRFError as exc:
        raise _host_refused("SMTP", account.host, exc) from None
    try:
        client.ehlo()
        if account.security == STARTTLS:
            client.starttls(context=context)
            client.ehlo()
        if account.user:
            client.login(account.user, account.password)
        yield client
    finally:
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()


# TLS errors of a connection cut off mid-way (see _tls_cut_off): retried like any other connection error.
_TLS_CUT_OFF_ERRORS = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ssl.SSLWantReadError,
                       ssl.SSLWantWriteError)
_TLS_CUT_OFF_REASONS = frozenset({"UNEXPECTED_EOF_WHILE_READING"})


def _classify(exc: Exception) -> Exception:
    """MailTemporaryError or MailPermanentError for an SMTP failure (the reply code decides). Recipients refused
    at RCPT are not failures of the whole mail: `_smtp_deliver` returns them, each with its reply."""
    if isinstance(exc, smtplib.SMTPResponseException):
        message = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        kind = MailTemporaryError if 400 <= exc.smtp_code < 500 else MailPermanentError
        return kind(f"SMTP {exc.smtp_code} {message}"[:1000])
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return MailPermanentError(f"the SMTP server does not support it: {exc} (check email-security)")
    if isinstance(exc, ssl.SSLError) and not _tls_cut_off(exc):
        return MailPermanentError(f"TLS failed: {exc.reason or exc} (check email-security and email-port)")
    if isinstance(exc, ssl.SSLError):
        return MailTemporaryError(f"TLS cut off: {type(exc).__name__}: {exc.reason or exc}"[:1000])
    return MailTemporaryError(f"{type(exc).__name__}: {exc}"[:1000])


def _tls_cut_off(exc: ssl.SSLError) -> bool:
    """A TLS connection the server (or the network) ended or left unfinished: a restart, an overloaded relay
    dropping connections, a reset. Worth a retry, unlike a refused certificate, a protocol version or cipher the
    two sides do not share, or TLS spoken to a port that speaks plain SMTP (WRONG_VERSION_NUMBER): those are the
    configuration, and stay permanent. (A handshake that times out is a TimeoutError, already temporary.)"""
    return isinstance(exc, _TLS_CUT_OFF_ERRORS) or getattr(exc, "reason", None) in _TLS_CUT_OFF_REASONS


def _smtp_deliver(account: SmtpAccount, message: email.message.EmailMessage,
                  recipients: list[str]) -> tuple[list[str], dict[str, str]]:
    """Send `message` to `recipients`: (the recipients the server took it for, {recipient: reply} of those it
    refused at RCPT). A recipient in neither was not tried (the server closed with 421 before it)."""
    try:
        with _smtp_connect(account) as client:
            refused = client.send_message(message, from_addr=account.sender, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as exc:
        # No recipient took it (or the server said 421 part way): no DATA was sent, nobody got the mail.
        return [], {rcpt: _reply_text(code, reply) for rcpt, (code, reply) in exc.recipients.items()}
    except (smtplib.SMTPException, OSError) as exc:
        raise _classify(exc) from exc
    return ([rcpt for rcpt in recipients if rcpt not in refused],
            {rcpt: _reply_text(code, reply) for rcpt, (code, reply) in refused.items()})


def _reply_text(code: int, reply: bytes | str) -> str:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
    return f"{code} {' '.join(text.split())}"[:300]


def _refused_for_now(reply: str) -> bool:
    """A recipient's RCPT reply that says "try again later" (4xx: greylisting, a full mailbox, a busy server)."""
    return reply[:1] == "4"


def _recipients_pending(row: OutgoingMail) -> list[str]:
    """The recipients the next attempt sends to: those never answered, and those refused for now (4xx)."""
    done = row.recipient_status or {}
    return [rcpt for rcpt in row.to.split(", ") if rcpt not in done or _refused_for_now(done[rcpt])]


def _recipients_summary(row: OutgoingMail) -> str:
    """What last_error says about the recipients that did not get the mail (empty when all did)."""
    done = row.recipient_status or {}
    refused = [f"{rcpt}: {reply}" for rcpt, reply in done.items() if reply != "sent" and not _refused_for_now(reply)]
    deferred = [f"{rcpt}: {reply}" for rcpt, reply in done.items() if _refused_for_now(reply)]
    parts = ([f"recipients refused: {'; '.join(refused)}"] if refused else []) + (
        [f"recipients refused for now, tried again later: {'; '.join(deferred)}"] if deferred else [])
    return " | ".join(parts)[:1000]


def mail_deliver(*, mail_id: int) -> str:
    """Send OutgoingMail `mail_id` once; returns its status. Raises MailTemporaryError to be retried."""
    with tenant_lock_try(f"mail:out:{mail_id}") as held:
        if not held:
            return "busy"  # another worker is sending this very row
        row = OutgoingMail.objects.select_related("bot").filter(pk=mail_id).first()
        if row is None or row.status != OutgoingMail.Status.QUEUED:
            return row.status if row else "missing"
        row.attempts += 1
        row.save(update_fields=["attempts"])
        try:
            account = smtp_account(row.bot)
            message = content.message_compose(
                sender=account.sender, sender_name=account.sender_name, to=row.to.split(", "),
                subject=row.subject, body_text=row.body_text, body_html=row.body_html,
                message_id=row.message_id, in_reply_to=row.in_reply_to, references=row.references,
                attachments=_attachments_read(row.bot, row.attachments),
                auto_submitted=AUTO_REPLIED if row.in_reply_to else AUTO_GENERATED, reply_to=account.reply_to,
            )
            recipients = _recipients_pending(row)
            accepted, refused = _smtp_deliver(account, message, recipients)
        except (MailConfigError, MailError, MailPermanentError) as exc:
            return _mail_failed(row, str(exc))
        except SecretUnavailable as exc:
            _mail_error(row, str(exc))
            raise MailTemporaryError(str(exc)) from exc
        except MailTemporaryError as exc:
            _mail_error(row, str(exc))
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. the drive down while reading attachments: retried,
            # then failed with the reason, instead of a row left queued forever.
            logger.exception("mail: unexpected error sending %s", row.message_id)
            _mail_error(row, f"{type(exc).__name__}: {exc}")
            raise MailTemporaryError(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        row.recipient_status = {**(row.recipient_status or {}), **refused, **{rcpt: "sent" for rcpt in accepted}}
        if accepted:
            row.sent_at = row.sent_at or timezone.now()
            logger.info("mail: sent %s to %s via %s:%s (attempt %d)", row.message_id, ", ".join(accepted),
                        account.host, account.port, row.attempts)
        row.last_error = _recipients_summary(row)
        if _recipients_pending(row):
            # Some recipients were refused for now (or not tried): only they are sent to again, after the
            # usual backoff, with the same Message-ID; the others never get it twice.
            row.save(update_fields=["recipient_status", "sent_at", "last_error"])
            logger.warning("mail: %s: %s (attempt %d)", row.message_id, row.last_error, row.attempts)
            raise MailTemporaryError(row.last_error or "recipients not tried")
        delivered = any(reply == "sent" for reply in row.recipient_status.values())
        row.status = OutgoingMail.Status.SENT if delivered else OutgoingMail.Status.FAILED
        row.save(update_fields=["status", "recipient_status", "sent_at", "last_error"])
        if row.last_error:
            logger.warning("mail: %s %s: %s", row.message_id, row.status, row.last_error)
        return row.status


def _mail_error(row: OutgoingMail, error: str) -> None:
    row.last_error = error[:1000]
    row.save(update_fields=["last_error"])
    logger.warning("mail: %s to %s failed for now (attempt %d): %s", row.message_id, row.to, row.attempts, error)


def _mail_failed(row: OutgoingMail, error: str) -> str:
    row.status, row.last_error = OutgoingMail.Status.FAILED, error[:1000]
    row.save(update_fields=["status", "last_error"])
    logger.error("mail: %s to %s failed: %s", row.message_id, row.to, error)
    return row.status


def mail_give_up(*, mail_id: int, error: str) -> None:
    """Retries exhausted: the row shows failed with the last reason; sent, when some recipients took it before
    (last_error then names those who did not get it)."""
    row = OutgoingMail.objects.filter(pk=mail_id, status=OutgoingMail.Status.QUEUED).first()
    if row is None:
        return
    if not any(reply == "sent" for reply in (row.recipient_status or {}).values()):
        _mail_failed(row, f"gave up after {row.attempts} attempts: {error}")
        return
    row.status, row.last_error = OutgoingMail.Status.SENT, f"gave up after {row.attempts} attempts: {error}"[:1000]
    row.save(update_fields=["status", "last_error"])
    logger.error("mail: %s sent, but not to every recipient: %s", row.message_id, row.last_error)


def mail_retry_delay(retries: int) -> float:
    """Seconds before retry number `retries + 1`: exponential from MAIL_RETRY_BASE_S, capped."""
    return min(float(MAIL_RETRY_MAX_S), float(settings.MAIL_RETRY_BASE_S) * 2 ** retries)


def mail_requeue_after() -> timedelta:
    """How long a mail may stay queued before it counts as lost: every retry's backoff, every attempt waiting
    the SMTP timeout at each step (connect, greeting, DATA), and MAIL_REQUEUE_MARGIN."""
    backoffs = sum(mail_retry_delay(n) for n in range(MAIL_SEND_RETRIES))
    attempts = (MAIL_SEND_RETRIES + 1) * 3 * SMTP_TIMEOUT_S
    return timedelta(seconds=backoffs + attempts) + MAIL_REQUEUE_MARGIN


def mails_requeue_stale(*, older_than: timedelta | None = None) -> int:
    """Queue again the current tenant's mails still queued `older_than` (default `mail_requeue_after()`) after
    they were last queued: their task was lost. Safe to repeat: `mail_deliver` leaves a row that is sent or
    failed alone, and a per-row lock keeps two tasks from sending one row at once."""
    cutoff = timezone.now() - (mail_requeue_after() if older_than is None else older_than)
    stale = OutgoingMail.objects.filter(status=OutgoingMail.Status.QUEUED, queued_at__lt=cutoff)
    queued: list[int] = []
    try:
        for mail_id in stale.order_by("queued_at").values_list("pk", flat=True)[:MAIL_REQUEUE_BATCH]:
            _enqueue_send(mail_id)  # the broker down still: this raises, and the row waits for the next sweep
            queued.append(mail_id)
    finally:  # one UPDATE for the rows queued (also when the broker failed part way)
        if queued:
            OutgoingMail.objects.filter(pk__in=queued).update(queued_at=timezone.now())
    count = len(queued)
    if count:
        logger.warning("mail: queued %d mails again whose task was lost", count)
    return count


# --- email in --------------------------------------------------------------------------------------------


@dataclass
class PollReport:
    bot: str
    fetched: int = 0
    answered: int = 0
    skipped: int = 0
    failed: int = 0
    duplicates: int = 0  # already handled (same Message-ID seen before): left alone
    busy: bool = False
    error: str = ""


@dataclass(frozen=True)
class IncomingResult:
    mail: IncomingMail
    duplicate: bool  # handled before this call; nothing was done now


@contextlib.contextmanager
def _imap_connect(account: ImapAccount) -> Iterator[object]:
    from imapclient import IMAPClient

    context = ssl.create_default_context()
    try:
        client = (checked_imap_client if _public_only(False) else IMAPClient)(
            account.host, port=account.port, ssl=account.security == SSL, ssl_context=context, timeout=IMAP_TIMEOUT_S)
    except SSRFError as exc:
        raise _host_refused("IMAP", account.host, exc) from None
    try:
        if account.security == STARTTLS:
            client.starttls(context)
        elif account.security == PLAIN:
            logger.debug("mail: IMAP to %s without TLS", account.host)
        client.login(account.user, account.password)
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def mailbox_poll(*, bot: Bot) -> PollReport:
    """Process new mail of the bot's IMAP folder (at most POLL_BATCH messages); one poller per mailbox."""
    report = PollReport(bot=bot.name)
    with tenant_lock_try(f"mail:poll:{bot.pk}") as held:
        if not held:
            report.busy = True
            return report
        try:
            account = imap_account(bot)
            if account is None:
                return report
            _mailbox_read(bot, account, report)
        except MailConfigError as exc:
            report.error = str(exc)
        except SecretUnavailable as exc:
            report.error = str(exc)
        except SoftTimeLimitExceeded:
            # The task's time is up: stop here (the current mail is not flagged, so the next poll takes it again,
            # its claim counted) instead of going on to the next mailbox until the hard limit kills it. Polled
            # now, so the next task polls the tenant's other mailboxes first (mailboxes_poll).
            MailboxState.objects.update_or_create(bot=bot, defaults={"last_polled_at": timezone.now(),
                                                                      "last_error": "the poll ran out of time"})
            raise
        except Exception as exc:  # noqa: BLE001 - IMAP and socket errors of many kinds: record and go on
            report.error = f"{type(exc).__name__}: {exc}"[:1000]
        if report.error:
            logger.warning("mail: polling the mailbox of bot %s failed: %s", bot.name, report.error)
        MailboxState.objects.update_or_create(bot=bot, defaults={"last_polled_at": timezone.now(),
                                                                  "last_error": report.error})
    return report


def _mailbox_uids(client, state: MailboxState) -> tuple[list[int], list[int]]:
    """(unread mail up to the baseline, all mail after it) not yet handled, each in UID order."""
    last, baseline = state.last_uid, state.baseline_uid
    old: list[int] = []
    if last < baseline:
        old = sorted(u for u in client.search(["UNSEEN", "UID", f"{last + 1}:{baseline}"]) if last < u <= baseline)
    start = max(last, baseline)
    # `UID n:*` always names the folder's last message, even when its UID is below n: hence the filter.
    new = sorted(u for u in client.search(["UID", f"{start + 1}:*"]) if u > start)
    return old, new


def _mailbox_read(bot: Bot, account: ImapAccount, report: PollReport) -> None:
    with _imap_connect(account) as client:
        selected = client.select_folder(account.folder)
        uidvalidity, uidnext = int(selected[b"UIDVALIDITY"]), int(selected.get(b"UIDNEXT") or 0)
        state, _ = MailboxState.objects.get_or_create(bot=bot, defaults={"mailbox": account.mailbox})
        if state.mailbox != account.mailbox or state.uidvalidity != uidvalidity:
            # A new mailbox (or one whose UIDs were renumbered): what is there now is its history, answered
            # only while unread; everything after it is new. A server without UIDNEXT: its highest UID.
            baseline = uidnext - 1 if uidnext else max(client.search("ALL") or [0])
            state.mailbox, state.uidvalidity, state.last_uid, state.baseline_uid = (
                account.mailbox, uidvalidity, 0, baseline)
            state.save()
        old, new = _mailbox_uids(client, state)
        batch = (old + new)[:POLL_BATCH]
        sizes = client.fetch(batch, ["RFC822.SIZE"]) if batch else {}
        stopped = False
        for uid in batch:
            try:
                # Checked before the bot's turn runs: a bot past its hourly mail limit (which passes within the
                # hour) leaves its mail unread until then, instead of running turns whose answers fail. A bot
                # that cannot send at all (no SMTP server, a sender the relay refuses) is not stopped: it may be
                # one that never answers by mail (an intake bot); a turn that does produce an answer then fails
                # its own mail, once (incoming_process).
                _send_rate_check(bot)
            except MailError as exc:
                report.error = f"cannot answer mail: {exc}: the rest of the mailbox waits for a later poll"
                stopped = True
                break
            report.fetched += 1
            size = int(sizes.get(uid, {}).get(b"RFC822.SIZE", 0))
            if size > INCOMING_MAX_BYTES:
                header = client.fetch([uid], ["BODY.PEEK[HEADER]"])[uid][b"BODY[HEADER]"]
                reason = f"larger than {INCOMING_MAX_BYTES // (1024 * 1024)} MB ({size} bytes)"
                result = incoming_record_skipped(bot=bot, raw=header, uid=uid, reason=reason)
            else:
                raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
                result = incoming_process(bot=bot, raw=raw, uid=uid, own_addresses={account.user.lower()})
            row = result.mail
            flags = [b"\\Seen"] + ([b"\\Answered"] if row.status == IncomingMail.Status.ANSWERED else [])
            client.add_flags([uid], flags)
            if result.duplicate:
                report.duplicates += 1
            else:
                report.answered += row.status == IncomingMail.Status.ANSWERED
                report.skipped += row.status in (IncomingMail.Status.SKIPPED, IncomingMail.Status.NO_REPLY)
                report.failed += row.status == IncomingMail.Status.FAILED
            state.last_uid = uid
            state.save()
        if not stopped and len(old) <= POLL_BATCH and state.last_uid < state.baseline_uid:
            # Every unread message of the history was handled: the rest of it stays as it is.
            state.last_uid = state.baseline_uid
        state.save()


def incoming_record_skipped(*, bot: Bot, raw: bytes, uid: int | None, reason: str) -> IncomingResult:
    """Record a mail that is not processed (too large, unreadable) from what of it can be read, so it shows
    with the reason, is marked read and is not fetched again."""
    try:
        mail = content.message_parse(raw, headers_only=True)
        message_id = mail.message_id
        seen = {"thread_key": mail.thread_key, "from_address": mail.from_address, "subject": mail.subject}
    except content.MessageUnreadable:
        message_id = content.message_fallback_id(raw)
        seen = {"thread_key": message_id, "from_address": "", "subject": ""}
    row, created = IncomingMail.objects.get_or_create(
        bot=bot, message_id=message_id,
        defaults={**seen, "mailbox_uid": uid, "status": IncomingMail.Status.SKIPPED, "reason": reason,
                  "processed_at": timezone.now()},
    )
    return IncomingResult(row, duplicate=not created)


def incoming_process(*, bot: Bot, raw: bytes, uid: int | None = None,
                     own_addresses: set[str] | None = None) -> IncomingResult:
    """Answer one received mail through a chat turn on channel `email`, in its thread; once per Message-ID.

    Returns the IncomingMail row, and whether it had been handled before (then nothing is done). A crash
    in the bot's turn propagates (the poller stops and the mail is tried again on the next poll) until
    INCOMING_MAX_ATTEMPTS, then the row shows failed. An answer that cannot be sent (MailError,
    MailConfigError when it is queued: no SMTP server, a refused sender, the hourly limit, which is also
    checked before the turn) fails the row at once, the turn's messages kept: the turn is never run twice for
    it. A turn with no answer needs no SMTP server (no_reply). The row is claimed from the mail's top-level
    headers, its attempt counted, before the whole mail is read: a mail the parser refuses or cannot read is
    skipped with the reason, and one whose reading runs out of time counts that attempt like a turn would.
    """
    try:
        head = content.message_parse(raw, headers_only=True)  # ids, sender, subject: time linear in the size
    except content.MessageUnreadable as exc:
        logger.warning("mail: a message for bot %s is unreadable: %s", bot.name, exc)
        return incoming_record_skipped(bot=bot, raw=raw, uid=uid, reason=str(exc))
    with transaction.atomic():
        # Claimed, and the attempt counted, before the whole mail is read: a mail whose reading (like its turn)
        # keeps failing, running out of time or killing the worker is given up after INCOMING_MAX_ATTEMPTS
        # claims, instead of stopping the mailbox at it on every poll.
        row, created = IncomingMail.objects.select_for_update().get_or_create(
            bot=bot, message_id=head.message_id,
            defaults={"thread_key": head.thread_key, "from_address": head.from_address, "subject": head.subject,
                      "mailbox_uid": uid},
        )
        if not created and row.status != IncomingMail.Status.RECEIVED:
            logger.info("mail: %s for bot %s already %s", head.message_id, bot.name, row.status)
            return IncomingResult(row, duplicate=True)
        if row.attempts >= INCOMING_MAX_ATTEMPTS:
            # Claimed that many times and never finished: each attempt was stopped (the task's time limit, the
            # worker killed by the hard limit or out of memory) before any failure could be recorded. Given up,
            # or it would block the mailbox forever.
            logger.error("mail: %s for bot %s never finished in %d attempts", head.message_id, bot.name, row.attempts)
            reason = (f"processing never finished in {row.attempts} attempts (each was stopped: the task's time "
                      "limit, or the worker killed)")
            return IncomingResult(_incoming_done(row, IncomingMail.Status.FAILED, reason), duplicate=False)
        row.attempts += 1
        row.save(update_fields=["attempts"])
    try:
        mail = content.message_parse(raw)
    except content.MessageUnreadable as exc:
        # Recorded and marked read: a mail the parser cannot read (or refuses to: headers or structure past the
        # limits) must not stop the mailbox at it.
        logger.warning("mail: message %s for bot %s is not read: %s", head.message_id, bot.name, exc)
        return IncomingResult(_incoming_done(row, IncomingMail.Status.SKIPPED, str(exc)), duplicate=False)
    try:
        return IncomingResult(_incoming_answer(bot, row, mail, own_addresses), duplicate=False)
    except (MailError, MailConfigError) as exc:
        # Final: the answer cannot be sent (the bot's SMTP settings, the relay refusing its sender, its hourly
        # limit reached by the turn's own SEND MAILs). Trying again would run the whole turn again.
        logger.warning("mail: bot %s cannot answer %s: %s", bot.name, mail.message_id, exc)
        return IncomingResult(_incoming_done(row, IncomingMail.Status.FAILED, f"the answer cannot be sent: {exc}"),
                              duplicate=False)
    except SoftTimeLimitExceeded:
        # An Exception too, but the task's time is up, not the mail's fault: never failed for it (on its last
        # attempt it was, and the poll went on to the next mail with no time left). The row keeps its attempts
        # count; past INCOMING_MAX_ATTEMPTS it is given up at its next claim.
        raise
    except Exception as exc:
        if row.attempts < INCOMING_MAX_ATTEMPTS:
            raise  # the poller stops here; the next poll tries this mail again
        logger.exception("mail: bot %s could not answer %s", bot.name, mail.message_id)
        failed = _incoming_done(row, IncomingMail.Status.FAILED, f"{type(exc).__name__}: {exc}"[:1000])
        return IncomingResult(failed, duplicate=False)


def _incoming_answer(bot: Bot, row: IncomingMail, mail: content.ReceivedMail,
                     own_addresses: set[str] | None) -> IncomingMail:
    own = set(own_addresses or ()) | _bot_addresses(bot)
    refusal = content.reply_refusal(mail, own_addresses=own)
    if not refusal and not address_valid(mail.from_address):
        refusal = f"the sender {mail.from_address!r} is not an address we can answer"
    if refusal:
        return _incoming_done(row, IncomingMail.Status.SKIPPED, refusal)
    _send_rate_check(bot)  # before the turn: past the hourly limit its answer could not be sent
    row.attachments = _attachments_store(bot, row, mail.attachments)
    row.save(update_fields=["attachments"])
    from apps.sessions.services import channel_turn

    _session, messages = channel_turn(bot=bot, channel="email", user_key=mail.from_address,
                                      text=mail.text or mail.subject, thread_key=mail.thread_key)
    reply = "\n\n".join(m.content.strip() for m in messages if (m.content or "").strip())
    if not reply:
        return _incoming_done(row, IncomingMail.Status.NO_REPLY, "the bot produced no answer")
    with transaction.atomic():
        row.reply = mail_send(bot=bot, to=mail.from_address, subject=content.reply_subject(mail.subject),
                              body_text=reply, in_reply_to=mail.message_id_header,
                              references=[*mail.references, mail.message_id_header])
        return _incoming_done(row, IncomingMail.Status.ANSWERED, "")


def _incoming_done(row: IncomingMail, status: str, reason: str) -> IncomingMail:
    row.status, row.reason, row.processed_at = status, reason, timezone.now()
    row.save(update_fields=["status", "reason", "processed_at", "reply"])
    logger.info("mail: %s from %s -> %s%s", row.message_id, row.from_address, status, f" ({reason})" if reason else "")
    return row


def _bot_addresses(bot: Bot) -> set[str]:
    values = bot_config_values(bot)
    found = {values[k].strip().lower() for k in FROM_KEYS if values.get(k)}
    default = getattr(settings, "MAIL_DEFAULT_FROM", "")
    return found | ({default.lower()} if default else set())


def _attachments_store(bot: Bot, row: IncomingMail, attachments: list[content.ReceivedAttachment]) -> list[dict]:
    """Save a received mail's attachments under `mail/inbox/<id>/` of the bot's drive, within the limits."""
    drive, stored, names = tenant_drive(), [], set()
    for index, item in enumerate(attachments):
        entry: dict = {"name": item.filename, "size": len(item.content)}
        if index >= INCOMING_ATTACHMENTS_MAX:
            entry["skipped"] = f"more than {INCOMING_ATTACHMENTS_MAX} attachments"
        elif len(item.content) > INCOMING_ATTACHMENT_MAX_BYTES:
            entry["skipped"] = f"larger than {INCOMING_ATTACHMENT_MAX_BYTES // (1024 * 1024)} MB"
        else:
            name, stem, dot, ext = item.filename, *item.filename.rpartition(".")
            counter = 1
            while name.lower() in names:
                counter += 1
                name = f"{stem}-{counter}{dot}{ext}" if stem else f"{ext}-{counter}"
            names.add(name.lower())
            path = f"{INBOX_FOLDER}/{row.pk}/{name}"
            drive.write(bot_drive_root(bot) + path, item.content)
            entry["path"] = path
        stored.append(entry)
    return stored


def mailboxes_poll() -> list[PollReport]:
    """Poll every bot of the current tenant that has an IMAP mailbox configured, the least recently polled
    first. A poll that runs out of the task's time stops the task (SoftTimeLimitExceeded passes on, its mailbox
    marked polled), and the next task starts with the mailboxes it did not reach: one slow mailbox cannot keep
    the tenant's other bots from ever being polled, as it did in name order. Any other failure of one bot's poll
    is that bot's report, and the others go on."""
    reports = []
    bots = Bot.objects.order_by(F("mailbox_state__last_polled_at").asc(nulls_first=True), "name")
    for bot in bots:
        try:
            if imap_configured(bot):
                reports.append(mailbox_poll(bot=bot))
        except SoftTimeLimitExceeded:
            raise
        except Exception as exc:  # noqa: BLE001 - the next bot's mailbox is not this one's problem
            logger.exception("mail: polling the mailbox of bot %s failed", bot.name)
            reports.append(PollReport(bot=bot.name, error=f"{type(exc).__name__}: {exc}"[:1000]))
    return reports
