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
