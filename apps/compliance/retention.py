"""Retention: each tenant says how many days it keeps each data class; a daily job deletes what is older.

Data classes (RetentionPolicy.DataClass): `messages` (chat messages by creation time), `sessions` (chat
sessions by last activity, with their messages), `logs` (mail rows: received mail by reception time with
its stored attachments, sent mail by creation time unless still queued), `recordings` (meeting recordings
that ended, with their drive files). A class without a policy is kept.

With the sessions policy, chat users older than it with no session left go too (their address, channel id
and user memory would otherwise outlive every conversation; report key `chat_users`): locked, skipping those
locked by a writer, and deleted by one statement that checks again that they still have no session, so a
returning visitor given a session meanwhile keeps it. Whatever the
policies: user memory values past their expiry are removed (`user_memory_expired`, keys), and scheduled
job runs older than JOB_RUN_KEEP_DAYS (their output and state quote customers; `job_runs`), except runs
still running or waiting.

The audit log is the platform operator's, not the tenant's: its events are kept AUDIT_LOG_KEEP_DAYS (unset:
forever; at least AUDIT_LOG_KEEP_MIN_DAYS), then purged like the rest (report key `audit`). The table refuses
every DELETE except the purge's, which marks its transaction (`gbplatform.audit_purge`; migration 0003).

Failure modes prevented:
- One huge DELETE holding locks and WAL for minutes: rows go in batches of RETENTION_BATCH_SIZE, one
  transaction each, so a crash loses at most one batch of progress and the next run continues.
- Files outliving their rows: a received mail's attachments and a recording's file are deleted with it
  (files first: a failure leaves a row the next run deletes, never an unlisted file).
- A mail still to be sent or a recording still running disappearing: queued mail and active recordings
  are kept whatever their age.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.compliance.models import RetentionPolicy
from apps.compliance.services import audit_record

# Days a data-subject export archive stays downloadable: it is a copy of everything about a person, made
# for them to fetch now, and must not linger in the drive (the request row and its counts stay).
EXPORT_ARCHIVE_KEEP_DAYS = 30
# Days a scheduled job's run record is kept, whatever the policies: its output (TALK lines) and saved state
# quote the customers the job handled, and a quarter of run history is enough to investigate a failing job
# (the console lists recent runs). Runs still running or waiting to resume are kept.
JOB_RUN_KEEP_DAYS = 90
# Rows deleted per transaction: small enough to keep locks short, large enough to purge a busy tenant's
# day of messages (tens of thousands) in a few dozen round trips.
RETENTION_BATCH_SIZE = 1000
# The shortest audit-log retention honoured: who did what in the console must outlive a month's
# investigation of an incident, whatever the setting says.
AUDIT_LOG_KEEP_MIN_DAYS = 90


def retention_policy_set(*, data_class: str, days: int | None, actor=None, request=None) -> RetentionPolicy | None:
    """Set (or, with days=None, remove) the tenant's retention for one data class."""
    if data_class not in RetentionPolicy.DataClass.values:
        raise ValueError(f"unknown data class {data_class!r}; expected one of {RetentionPolicy.DataClass.values}")
    if days is not None and (not isinstance(days, int) or isinstance(days, bool) or days < 1):
        raise ValueError("retention days must be a whole number of at least 1 (or nothing to keep forever)")
    with transaction.atomic():
        previous = RetentionPolicy.objects.filter(data_class=data_class).first()
        before = previous.days if previous else None
        if days is None:
            RetentionPolicy.objects.filter(data_class=data_class).delete()
            policy = None
        else:
            policy, _ = RetentionPolicy.objects.update_or_create(data_class=data_class, defaults={"days": days})
        audit_record(action="retention.policy_set", actor=actor, object_type="retention_policy",
                     object_id=data_class, summary={"before": before, "after": days}, request=request)
    return policy


def _batched(queryset: QuerySet, before_delete: Callable[[list], None] | None = None) -> int:
    deleted = 0
    while True:
        batch = list(queryset.order_by("pk")[:RETENTION_BATCH_SIZE])
        if not batch:
            return deleted
        if before_delete is not None:
            before_delete(batch)
        with transaction.atomic():
            deleted += queryset.model.objects.filter(pk__in=[row.pk for row in batch]).delete()[1].get(
                queryset.model._meta.label, 0)
        if len(batch) < RETENTION_BATCH_SIZE:
            return deleted


def _purge_messages(cutoff: datetime) -> int:
    from apps.sessions.models import Message

    return _batched(Message.objects.filter(created_at__lt=cutoff))


def _purge_sessions(cutoff: datetime) -> int:
    from apps.sessions.models import ChatSession

    return _batched(ChatSession.objects.filter(last_activity__lt=cutoff))


def _idle_chat_user_candidates(cutoff: datetime, *, after=None) -> list:
    """Ids of chat users older than `cutoff` with no session, in pk order after `after`: at most a batch."""
    from django.db.models import Exists, OuterRef

    from apps.sessions.models import ChatSession, ChatUser

    idle = ChatUser.objects.filter(created_at__lt=cutoff).filter(
        ~Exists(ChatSession.objects.filter(user_id=OuterRef("pk"))))
    if after is not None:
        idle = idle.filter(pk__gt=after)
    return list(idle.order_by("pk").values_list("pk", flat=True)[:RETENTION_BATCH_SIZE])


def _idle_chat_users_delete(ids: list) -> int:
    """Delete those of `ids` that still have no session; how many went.

    A returning visitor may get a session after the candidates were selected. Django's delete() collects the
    users' sessions in a query of its own before deleting the users: a session created in between was deleted
    with its messages, or (created after the collection) failed the purge's commit with an FK error. Here the
    users are locked (skipping those a writer holds) and deleted by one statement that checks again, in SQL,
    that they have no session; ChatSession is the only table referencing chat users."""
    from django.db import connection
    from django.db.models import Exists, OuterRef

    from apps.sessions.models import ChatSession, ChatUser

    with transaction.atomic():
        locked = list(ChatUser.objects.select_for_update(skip_locked=True).filter(pk__in=ids).filter(
            ~Exists(ChatSession.objects.filter(user_id=OuterRef("pk")))).values_list("pk", flat=True))
        if not locked:
            return 0
        users, sessions = (connection.ops.quote_name(model._meta.db_table) for model in (ChatUser, ChatSession))
        pk = connection.ops.quote_name(ChatUser._meta.pk.column)
        user_fk = connection.ops.quote_name(ChatSession._meta.get_field("user").column)
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {users} WHERE {pk} = ANY(%s) AND NOT EXISTS "  # noqa: S608 - quoted names
                           f"(SELECT 1 FROM {sessions} WHERE {sessions}.{user_fk} = {users}.{pk})", [locked])
            return cursor.rowcount


def _purge_idle_chat_users(cutoff: datetime) -> int:
    """Chat users older than `cutoff` with no session left: their address, channel id and user memory outlived
    every conversation (the sessions purge deleted those). See _idle_chat_users_delete for the race it avoids."""
    deleted, after = 0, None
    while True:
        ids = _idle_chat_user_candidates(cutoff, after=after)
        if not ids:
            return deleted
        deleted += _idle_chat_users_delete(ids)
        if len(ids) < RETENTION_BATCH_SIZE:
            return deleted
        after = ids[-1]  # users skipped (locked, or given a session) are not selected again by this run


def _expire_user_memory(now: datetime) -> int:
    """Remove SET USER MEMORY / REMEMBER values past their expiry (never read again, kept for ever otherwise);
    the number of keys removed."""
    from django.db.models import TextField
    from django.db.models.functions import Cast

    from apps.sessions.host import user_memory_expired
    from apps.sessions.models import ChatUser

    def expired(memory) -> list[str]:
        return [key for key, entry in (memory if isinstance(memory, dict) else {}).items()
                if user_memory_expired(entry, now)]

    removed = 0
    candidates = (ChatUser.objects.annotate(memory_text=Cast("memory", TextField()))
                  .filter(memory_text__contains='"expires": "').only("pk", "memory"))
    for user in candidates.order_by("pk").iterator(chunk_size=RETENTION_BATCH_SIZE):
        if not expired(user.memory):
            continue
        with transaction.atomic():  # re-read under the lock SET USER MEMORY takes
            locked = ChatUser.objects.select_for_update().filter(pk=user.pk).first()
            keys = expired(locked.memory) if locked else []
            if keys:
                locked.memory = {k: v for k, v in locked.memory.items() if k not in keys}
                locked.save(update_fields=["memory"])
                removed += len(keys)
    return removed


def _purge_job_runs(cutoff: datetime) -> int:
    from apps.automation.models import JobRun

    return _batched(JobRun.objects.filter(scheduled_for__lt=cutoff).exclude(status__in=JobRun.IN_FLIGHT))


def _purge_logs(cutoff: datetime) -> int:
    from apps.compliance.gdpr import MAIL_INBOX_FOLDER
    from apps.drive.storage import tenant_drive
    from apps.mail.models import IncomingMail, OutgoingMail
    from apps.mail.services import bot_drive_root

    def attachments_delete(batch: list) -> None:
        drive = tenant_drive()
        for mail in batch:
            if mail.attachments:
                drive.delete_prefix(f"{bot_drive_root(mail.bot)}{MAIL_INBOX_FOLDER}/{mail.pk}/")

    incoming = _batched(IncomingMail.objects.filter(received_at__lt=cutoff).select_related("bot"), attachments_delete)
    outgoing = _batched(OutgoingMail.objects.filter(created_at__lt=cutoff).exclude(status=OutgoingMail.Status.QUEUED))
    return incoming + outgoing


def _purge_recordings(cutoff: datetime) -> int:
    from apps.drive.storage import tenant_drive
    from apps.meet.models import Recording

    running = [Recording.Status.STARTING, Recording.Status.ACTIVE, Recording.Status.ENDING]

    def files_delete(batch: list) -> None:
        drive = tenant_drive()
        for recording in batch:
            if recording.drive_key and drive.exists(recording.drive_key):
                drive.delete(recording.drive_key)

    old = Q(ended_at__lt=cutoff) | Q(ended_at__isnull=True, updated_at__lt=cutoff)
    return _batched(Recording.objects.filter(old).exclude(status__in=running), files_delete)


PURGES: dict[str, Callable[[datetime], int]] = {
    RetentionPolicy.DataClass.MESSAGES: _purge_messages,
    RetentionPolicy.DataClass.SESSIONS: _purge_sessions,
    RetentionPolicy.DataClass.LOGS: _purge_logs,
    RetentionPolicy.DataClass.RECORDINGS: _purge_recordings,
}


def _expire_exports(now: datetime) -> int:
    """Delete export archives older than EXPORT_ARCHIVE_KEEP_DAYS; their requests say so in the report."""
    from apps.compliance.gdpr import export_archive_key
    from apps.compliance.models import DataSubjectRequest
    from apps.drive.storage import tenant_drive

    expired = 0
    rows = (DataSubjectRequest.objects.filter(kind=DataSubjectRequest.Kind.EXPORT,
                                              status=DataSubjectRequest.Status.DONE,
                                              completed_at__lt=now - timedelta(days=EXPORT_ARCHIVE_KEEP_DAYS))
            .exclude(report__has_key="archive_expired").order_by("pk"))
    for row in rows[:RETENTION_BATCH_SIZE]:
        tenant_drive().delete(export_archive_key(row.pk))
        DataSubjectRequest.objects.filter(pk=row.pk).update(report={**row.report, "archive_expired": True})
        expired += 1
    return expired


def _purge_audit(cutoff: datetime) -> int:
    """Delete audit events older than `cutoff`, a batch per transaction (the only DELETE the table allows)."""
    from django.db import connection

    from apps.compliance.models import AuditEvent

    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL gbplatform.audit_purge = 'on'")
            cursor.execute(f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} WHERE at < %s "  # noqa: S608
                           f"ORDER BY id LIMIT %s)", [cutoff, RETENTION_BATCH_SIZE])
            batch = cursor.rowcount
            # Inside a caller's transaction this block is a savepoint and SET LOCAL would last to its commit.
            cursor.execute("SET LOCAL gbplatform.audit_purge = 'off'")
        deleted += batch
        if batch < RETENTION_BATCH_SIZE:
            return deleted


def retention_purge(*, now: datetime | None = None) -> dict[str, int]:
    """Delete the current tenant's data older than its policies; rows deleted per data class (and, under
    "exports", export archives past EXPORT_ARCHIVE_KEEP_DAYS, when there were any)."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    for policy in RetentionPolicy.objects.order_by("data_class"):
        cutoff = now - timedelta(days=policy.days)
        counts[policy.data_class] = PURGES[policy.data_class](cutoff)
        if policy.data_class == RetentionPolicy.DataClass.SESSIONS:
            users = _purge_idle_chat_users(cutoff)
            if users:
                counts["chat_users"] = users
    for key, purged in (("user_memory_expired", _expire_user_memory(now)),
                        ("job_runs", _purge_job_runs(now - timedelta(days=JOB_RUN_KEEP_DAYS)))):
        if purged:
            counts[key] = purged
    expired = _expire_exports(now)
    if expired:
        counts["exports"] = expired
    keep_days = getattr(settings, "AUDIT_LOG_KEEP_DAYS", 0)
    if keep_days > 0:  # unset, 0 or negative: kept forever
        purged = _purge_audit(now - timedelta(days=max(keep_days, AUDIT_LOG_KEEP_MIN_DAYS)))
        if purged:
            counts["audit"] = purged
    if any(counts.values()):
        audit_record(action="retention.purge", object_type="retention", summary={"deleted": counts})
    return counts
