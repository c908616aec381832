"""The one place that gives a tenant its drive: a bucket prefix in S3 or a folder of local files.

Nothing else builds storage paths. Every drive key below is relative to the tenant's root, starting
with the bot's package folder (`<bot>.gbai/...`), so two tenants' bots of the same name can never meet.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import connection
from django_tenants.utils import get_public_schema_name

from apps.drive.backends import DriveBackend, LocalDrive, S3Drive

# Buckets this process has already made sure of: creating (or checking) a bucket per call would add a
# round trip to every drive access.
_buckets_ready: set[tuple[str, str]] = set()


class NoTenantDrive(RuntimeError):
    """Drive access was attempted outside a tenant (the public schema has no drive)."""


def tenant_drive(schema_name: str | None = None) -> DriveBackend:
    """The drive of `schema_name` (default: the tenant active on this connection)."""
    schema = schema_name or connection.schema_name
    if not schema or schema in {get_public_schema_name(), settings.TENANT_BASE_SCHEMA}:
        raise NoTenantDrive(f"no drive for schema {schema!r}")
    if settings.S3_ACCESS_KEY:
        drive = S3Drive(
            bucket=settings.S3_BUCKET,
            prefix=f"{settings.S3_TENANT_PREFIX}/{schema}",
            endpoint_url=settings.S3_ENDPOINT_URL or None,
            access_key=settings.S3_ACCESS_KEY,
            secret_key=settings.S3_SECRET_KEY,
            region=settings.S3_REGION,
        )
        bucket_id = (settings.S3_ENDPOINT_URL, settings.S3_BUCKET)
        if bucket_id not in _buckets_ready:
            drive.ensure_bucket()
            _buckets_ready.add(bucket_id)
        return drive
    return LocalDrive(Path(settings.MEDIA_ROOT) / "tenants" / schema)


def package_root(bot_name: str) -> str:
    """Drive prefix of a bot's package."""
    return f"{bot_name}.gbai/"
