"""What the DriveMonitor knows of each object in the tenant's drive (tenant schema)."""

from django.db import models


class DriveObject(models.Model):
    """One object of the tenant's drive as last seen by a scan, and the outcome of processing it.

    `processed_etag` is the ETag whose processing succeeded: an object is reprocessed only when its
    current ETag differs. Failures count up per ETag; past the threshold the object is parked (skipped)
    until its ETag changes, so a broken file is never re-processed in a loop.
    """

    KIND_CHOICES = [(k, k) for k in ("bas", "kb", "config", "prompt", "data", "other")]

    key = models.CharField(max_length=1024, unique=True)
    bot_name = models.CharField(max_length=63, db_index=True)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES)
    etag = models.CharField(max_length=128)
    size = models.BigIntegerField(default=0)
    # Local files only: lets a scan reuse the ETag of an unchanged file without reading it.
    mtime_ns = models.BigIntegerField(null=True)
    processed_etag = models.CharField(max_length=128, blank=True)
    fail_count = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    last_failed_at = models.DateTimeField(null=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key
