"""Email of a tenant's bots (tenant schema): every message sent, every message received, mailbox positions.

OutgoingMail is the log of every message a bot sends (SEND MAIL, BEGIN MAIL, TALK TO an address, replies
to incoming mail): the row is written in the caller's transaction and delivered by the `mail.send` task
after commit. IncomingMail is unique per (bot, Message-ID) and created before a message is processed, so a
message polled twice is answered once. MailboxState remembers where the poller stopped in a mailbox.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.bots.models import Bot


class OutgoingMail(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        SENT = "sent"
        FAILED = "failed"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="outgoing_mail")
    # Comma-separated addr-specs, validated by the service.
    to = models.TextField()
    subject = models.CharField(max_length=998)
    # `<...@domain>`, generated when the row is made: the same on every delivery attempt, so a receiver
    # can recognise a duplicate after an at-least-once redelivery.
    message_id = models.CharField(max_length=255, unique=True)
    # The id answered, whole (an id longer than 255 characters too: a cut one threads nowhere).
    in_reply_to = models.CharField(max_length=998, blank=True)
    references = models.TextField(blank=True)
    body_text = models.TextField()
    body_html = models.TextField(blank=True)
    # Paths relative to the bot's drive area (`<bot>.gbai/<bot>.gbdrive/`), read when the mail is sent.
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # What the server answered for each recipient it was given: {"a@x": "sent", "b@y": "450 4.2.0 ...",
    # "c@z": "550 5.1.1 ..."}. A recipient refused for now (4xx) is sent to again on the next attempt, alone
    # (same Message-ID); one accepted or refused for good (5xx) never is. Empty until the first attempt.
    recipient_status = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # When the row was last handed to the broker (made, or queued again by beat's `mail.requeue_stale`).
    queued_at = models.DateTimeField(default=timezone.now)
    # When the server first took the message (for some recipients, while others may still be retried).
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["bot", "status"], name="mail_out_bot_status"),
                   models.Index(fields=["bot", "created_at"], name="mail_out_bot_created"),
                   models.Index(fields=["status", "queued_at"], name="mail_out_status_queued")]

    def __str__(self) -> str:
        return f"{self.message_id} -> {self.to} ({self.status})"


class IncomingMail(models.Model):
    class Status(models.TextChoices):
        RECEIVED = "received"  # claimed; being processed (or the process died: retried on the next poll)
        ANSWERED = "answered"
        NO_REPLY = "no_reply"  # the bot said nothing
        SKIPPED = "skipped"  # not for the bot to answer (auto-reply, loop, too large): `reason` says why
        FAILED = "failed"

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="incoming_mail")
    message_id = models.CharField(max_length=255)
    # The Message-ID of the thread's first message: the chat session's thread key.
    thread_key = models.CharField(max_length=255)
    from_address = models.CharField(max_length=320)
    subject = models.CharField(max_length=998, blank=True)
    mailbox_uid = models.BigIntegerField(null=True, blank=True)
    # [{"name", "size", "path"} or {"name", "size", "skipped": reason}]; paths relative to the bot's drive area.
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    reason = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    reply = models.ForeignKey(OutgoingMail, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(auto_now_add=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["bot", "message_id"], name="mail_in_bot_message_unique")]

    def __str__(self) -> str:
        return f"{self.message_id} from {self.from_address} ({self.status})"


class MailboxState(models.Model):
    """Where the poller stopped in a bot's IMAP folder. UIDs are only meaningful under one UIDVALIDITY
    of one mailbox: a change of either (or of server, user, folder) starts over, from the unread mail of what
    is there and everything that arrives after."""

    bot = models.OneToOneField(Bot, on_delete=models.CASCADE, related_name="mailbox_state")
    # server:port/user/folder the position belongs to.
    mailbox = models.CharField(max_length=600)
    uidvalidity = models.BigIntegerField(default=0)
    last_uid = models.BigIntegerField(default=0)
    # The last UID that was already in the folder when the poller started on it: mail up to here is answered
    # only while unread (the mailbox's history is not replied to); mail after it is all new.
    baseline_uid = models.BigIntegerField(default=0)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    def __str__(self) -> str:
        return f"{self.mailbox} uid>{self.last_uid}"
