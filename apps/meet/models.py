"""Meetings of a tenant (tenant schema): rooms, what LiveKit reported about them, and recordings.

A Room's `name` is unique in its tenant's schema only; the name LiveKit sees is namespaced by the schema
(apps.meet.livekit.livekit_room_name), so two tenants' rooms of the same name never meet in LiveKit.
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

# Room names are URL segments (`/meet/<name>/`) and part of LiveKit's room name: plain, short, lower case.
# No "--": that is the separator between the tenant's schema and the room in LiveKit's room name.
ROOM_NAME_RE = r"^(?!.*--)[a-z0-9][a-z0-9_-]{0,62}$"
ROOM_NAME_VALIDATOR = RegexValidator(ROOM_NAME_RE, "lower-case letters, digits, - and _ only (no '--'), 1-63 long")
# Upstream's default (`meet-max-participants`, spec 2.4.5).
ROOM_DEFAULT_MAX_PARTICIPANTS = 50
# An SFU room beyond this is a webinar/broadcast set-up this app does not offer; it also bounds what a
# BASIC script or an API caller can ask LiveKit for.
ROOM_MAX_PARTICIPANTS_LIMIT = 500


class Room(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "open"
        CLOSED = "closed", "closed"

    name = models.CharField(max_length=63, unique=True, validators=[ROOM_NAME_VALIDATOR])
    bot = models.ForeignKey("bots.Bot", null=True, blank=True, on_delete=models.SET_NULL, related_name="meet_rooms")
    title = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="meet_rooms"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN, db_index=True)
    # LiveKit's id of the room (RM_...); empty while video is not configured or LiveKit was not reached.
    livekit_sid = models.CharField(max_length=64, blank=True)
    max_participants = models.PositiveIntegerField(
        default=ROOM_DEFAULT_MAX_PARTICIPANTS,
        validators=[MinValueValidator(1), MaxValueValidator(ROOM_MAX_PARTICIPANTS_LIMIT)],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    # From LiveKit's room_started / room_finished webhooks (a room starts when its first participant joins).
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Booking details (BOOK: description, start, duration, location) and other free-form facts.
    metadata = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at", "name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(max_participants__gte=1, max_participants__lte=ROOM_MAX_PARTICIPANTS_LIMIT),
                name="meet_room_max_participants_range",
            ),
            models.CheckConstraint(
                condition=models.Q(status="open", closed_at__isnull=True) | models.Q(status="closed"),
                name="meet_room_open_not_closed",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_open(self) -> bool:
        return self.status == self.Status.OPEN


class WebhookEvent(models.Model):
    """One LiveKit webhook delivery, kept once: LiveKit's event id is unique, so a redelivery is a no-op."""

    event_id = models.CharField(max_length=128, unique=True)
    event = models.CharField(max_length=40, db_index=True)
    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.SET_NULL, related_name="webhook_events")
    # The room name without the tenant namespace, kept even when no local room has it.
    room_name = models.CharField(max_length=63, blank=True)
    # When LiveKit says the event happened (null when it did not say).
    occurred_at = models.DateTimeField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    payload = models.JSONField(default=dict)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event} {self.event_id}"


class ParticipantEvent(models.Model):
    class Kind(models.TextChoices):
        JOINED = "joined", "joined"
        LEFT = "left", "left"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="participant_events")
    webhook_event = models.OneToOneField(WebhookEvent, on_delete=models.CASCADE, related_name="participant_event")
    kind = models.CharField(max_length=8, choices=Kind.choices)
    identity = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True)
    participant_sid = models.CharField(max_length=64, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [models.Index(fields=["room", "occurred_at"])]

    def __str__(self) -> str:
        return f"{self.identity} {self.kind}"


class Recording(models.Model):
    """A LiveKit egress of a room. Its file is either in the tenant's drive (`drive_key`, relative to the
    tenant's root like every drive key) or somewhere else (`external_location`, as LiveKit reported it)."""

    class Status(models.TextChoices):
        STARTING = "starting", "starting"
        ACTIVE = "active", "active"
        ENDING = "ending", "ending"
        COMPLETE = "complete", "complete"
        FAILED = "failed", "failed"
        ABORTED = "aborted", "aborted"
        LIMIT_REACHED = "limit_reached", "limit reached"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="recordings")
    egress_id = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.STARTING)
    drive_key = models.CharField(max_length=1024, blank=True)
    external_location = models.CharField(max_length=2048, blank=True)
    size_bytes = models.BigIntegerField(null=True, blank=True)
    duration_ms = models.BigIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.egress_id
