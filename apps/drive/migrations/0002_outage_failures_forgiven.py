"""Failures a drive outage recorded against files, before outages were told apart, are forgiven.

Until then the DriveMonitor stored any error of the storage as the file's failure, "internal error: <type>", and
parked the file after DRIVE_MAX_FAILURES of them; it stayed parked after the storage came back, until its content
changed. Such files get their chances again: the next scan processes them. The names below are the errors a drive
outage raised (botocore's, s3transfer's, and the OSError family of a local mount); "ClientError" and "OSError"
were also what a file refused on its own raised, and such a file is tried DRIVE_MAX_FAILURES times more, then
parked again, with the drive's reason now.
"""

from django.db import migrations

OUTAGE_ERROR_NAMES = (
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
    "ProxyConnectionError", "SSLError", "HTTPClientError", "ResponseStreamingError", "IncompleteReadError",
    "ConnectionError", "NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
    "RetriesExceededError", "ClientError", "OSError", "TimeoutError", "ConnectionResetError",
    "ConnectionRefusedError", "ConnectionAbortedError", "BrokenPipeError",
)


def outage_failures_forgiven(apps, schema_editor):
    DriveObject = apps.get_model("drive", "DriveObject")
    DriveObject.objects.filter(
        fail_count__gt=0, last_error__in=[f"internal error: {name}" for name in OUTAGE_ERROR_NAMES]
    ).update(fail_count=0, last_error="", last_failed_at=None, processed_etag="")


class Migration(migrations.Migration):

    dependencies = [
        ("drive", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(outage_failures_forgiven, migrations.RunPython.noop),
    ]
