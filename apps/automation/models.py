"""Runs of scheduled scripts (tenant schema): one row per schedule and due time, written by the tick as it queues
the run (`queued`), so the tenant's runs in flight can be counted, and taken (`running`) by the worker before the
script starts, so a redelivered task finds it and does not run the script a second time."""

from django.db import models

from apps.bots.models import Bot, BotSchedule


class JobRun(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"  # claimed by the tick and queued; no worker has taken it yet
        RUNNING = "running"
        WAITING = "waiting"  # suspended at a WAIT; a delayed task resumes it
        OK = "ok"
        ERROR = "error"
        SKIPPED_STALE = "skipped_stale"  # due longer ago than the late cut-off: not run

    bot = models.ForeignKey(Bot, on_delete=models.CASCADE, related_name="job_runs")
    # Schedule rows are replaced when their script recompiles; the run history stays with the bot.
    schedule = models.ForeignKey(BotSchedule, on_delete=models.SET_NULL, null=True, blank=True, related_name="runs")
    script_name = models.CharField(max_length=200)
    cron = models.CharField(max_length=100)
    scheduled_for = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    # TALK (and PRINT) lines of the run, bounded by apps.automation.host.JOB_OUTPUT_MAX_CHARS.
    output = models.TextField(blank=True)
    error_line = models.PositiveIntegerField(null=True, blank=True)
    error_message = models.TextField(blank=True)
    # A stale-skip record: how many due times were skipped (from scheduled_for on).
    skipped_count = models.PositiveIntegerField(default=0)
    # While WAITING: the VM state to resume, and when.
    state = models.JSONField(null=True, blank=True)
    resume_at = models.DateTimeField(null=True, blank=True)
    slices = models.PositiveSmallIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-scheduled_for", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["schedule", "scheduled_for"], name="job_run_once_per_due_time"),
        ]
        indexes = [
            models.Index(fields=["bot", "-scheduled_for"], name="job_run_bot_newest_idx"),
            # The tick counts a tenant's runs in flight every few seconds; the table keeps months of history.
            # Equalities OR-ed, not `IN`: PostgreSQL prints an IN over varchar with casts that re-read differently,
            # so a tenant schema cloned from the template got a differently written index.
            models.Index(fields=["status"], condition=models.Q(status="queued") | models.Q(status="running")
                         | models.Q(status="waiting"), name="job_run_in_flight_idx"),
        ]

    # Runs that may count against the tenant's AUTOMATION_TENANT_RUNS_IN_FLIGHT_MAX (which of them do:
    # apps.automation.services.job_runs_in_flight).
    IN_FLIGHT = (Status.QUEUED, Status.RUNNING, Status.WAITING)

    def __str__(self) -> str:
        return f"{self.script_name} @ {self.scheduled_for:%Y-%m-%d %H:%M} {self.status}"
