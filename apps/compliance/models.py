"""The audit log: one row per security-relevant event, in the tenant's own schema, never changed.

Failure modes prevented:
- An event edited or removed after the fact (by a bug, an admin or an intruder with the app's database
  role): the database itself refuses UPDATE, DELETE and TRUNCATE on the table (triggers created by
  migration 0001); the model and its queryset refuse them too, so the ORM fails early with a clear error.
- An event that outlives its subject pointing nowhere: the actor is stored by name and id, not as a
  foreign key, so deleting a user neither cascades into the log nor blocks the deletion.
- One tenant reading another's events: the table lives in each tenant schema (a TENANT_APP), so a query
  can only ever see the events of the schema it runs in.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone

# Django's default username length; longer names (a failed login's typed username) are truncated.
ACTOR_MAX_LENGTH = 150
# Dotted action names ("bot.deploy", "auth.login_failed") stay short and indexable.
ACTION_MAX_LENGTH = 64
OBJECT_TYPE_MAX_LENGTH = 64
# Object ids are primary keys, bot names or storage keys; 255 covers all of them.
OBJECT_ID_MAX_LENGTH = 255
# RequestContextMiddleware accepts request ids of at most 64 characters.
REQUEST_ID_MAX_LENGTH = 64
# The actor recorded for what the platform does by itself (jobs, commands).
ACTOR_SYSTEM = "system"


class AuditLogImmutable(Exception):
    """Audit events are append-only: they cannot be changed or deleted."""


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AuditLogImmutable("audit events cannot be updated")

    def delete(self):
        raise AuditLogImmutable("audit events cannot be deleted")


class AuditEvent(models.Model):
    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.CharField(max_length=ACTOR_MAX_LENGTH)
    # The user's primary key when the actor is a user of this tenant; None for "system" and failed logins.
    actor_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=ACTION_MAX_LENGTH, db_index=True)
    object_type = models.CharField(max_length=OBJECT_TYPE_MAX_LENGTH, blank=True)
    object_id = models.CharField(max_length=OBJECT_ID_MAX_LENGTH, blank=True)
    # Before/after summary: plain text or JSON, never secret values.
    summary = models.TextField(blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    request_id = models.CharField(max_length=REQUEST_ID_MAX_LENGTH, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"], name="audit_object_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}:{self.object_id}"

    def save(self, *args, **kwargs) -> None:
        if not self._state.adding:
            raise AuditLogImmutable("audit events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutable("audit events cannot be deleted")


# --- Data-subject rights (GDPR Art. 15/17/20, LGPD Art. 18) ------------------------------------------------

# A subject is a ChatUser id (36), an e-mail address (RFC 5321: 254) or a phone number.
SUBJECT_MAX_LENGTH = 254
# Who asked: a console user's name or "system".
REQUESTED_BY_MAX_LENGTH = 150
# Consent purposes are short machine names ("marketing", "analytics").
PURPOSE_MAX_LENGTH = 64
# Where a consent came from ("web-chat", "console", "import:crm-2026-10"): short, free text.
CONSENT_SOURCE_MAX_LENGTH = 200


class SubjectKind(models.TextChoices):
    CHAT_USER = "chat_user", "chat user"
    EMAIL = "email", "e-mail address"
    PHONE = "phone", "phone number"


class DataSubjectRequest(models.Model):
    """One export or erasure of everything the tenant holds about one person, done by a job.

    The id is a random UUID: it names the export archive in the drive and appears in the audit log in
    place of the person. `subject_digest` (a keyed hash of the normalised identifier) stays after an
    erasure, so "was this person erased, and when?" can be answered without keeping who they were;
    `subject` itself is blanked when the erasure completes.
    """

    class Kind(models.TextChoices):
        EXPORT = "export", "export"
        ERASURE = "erasure", "erasure"

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        RUNNING = "running", "running"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    id = models.UUIDField(primary_key=True, editable=False)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    subject_kind = models.CharField(max_length=10, choices=SubjectKind.choices)
    subject = models.CharField(max_length=SUBJECT_MAX_LENGTH, blank=True)
    subject_digest = models.CharField(max_length=64, db_index=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True)
    requested_by = models.CharField(max_length=REQUESTED_BY_MAX_LENGTH)
    # Export: {"archive": key, "size": bytes, "counts": {...}}; erasure: {"counts": {...}} (no PII either way).
    report = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    requested_at = models.DateTimeField(default=timezone.now, db_index=True)
    # When its job was last handed to the broker (filed, or queued again by beat's `compliance.requeue_stale`).
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # Runs that ended with their worker (found still `running` by the next delivery of the job).
    interrupted = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["-requested_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.id} ({self.status})"


class ConsentRecord(models.Model):
    """One consent decision: granted or withdrawn, for one purpose, by one subject, at a time, from a source.

    Rows are only added: the latest row per (subject, purpose) is the current state and the rest is the
    history a controller must be able to show (GDPR Art. 7(1)).
    """

    subject_kind = models.CharField(max_length=10, choices=SubjectKind.choices)
    subject = models.CharField(max_length=SUBJECT_MAX_LENGTH, db_index=True)
    purpose = models.CharField(max_length=PURPOSE_MAX_LENGTH)
    granted = models.BooleanField()
    at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=CONSENT_SOURCE_MAX_LENGTH, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["subject", "purpose", "-at"], name="consent_subject_purpose_idx")]

    def __str__(self) -> str:
        return f"{self.subject} {self.purpose} {'granted' if self.granted else 'withdrawn'}"


class RetentionPolicy(models.Model):
    """How long the tenant keeps one class of data; the daily purge deletes what is older."""

    class DataClass(models.TextChoices):
        MESSAGES = "messages", "chat messages"
        SESSIONS = "sessions", "chat sessions (with their messages)"
        LOGS = "logs", "mail logs (incoming and outgoing mail rows, with received attachments)"
        RECORDINGS = "recordings", "meeting recordings (rows and their drive files)"

    data_class = models.CharField(max_length=12, choices=DataClass.choices, unique=True)
    days = models.PositiveIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=models.Q(days__gte=1), name="retention_days_positive")]

    def __str__(self) -> str:
        return f"{self.data_class}: {self.days} days"
