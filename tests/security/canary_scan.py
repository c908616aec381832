"""Canary scans: look for a canary string in every row of every tenant table and every file of a drive.

Used by the attack suite (a foreign canary reachable from tenant A is a leak) and by the erasure test (no
canary of the erased subject may remain). A scan reads through the ORM, so encrypted fields are compared
in clear; it is meant for the small databases of the tests, not for production sizes.
"""

from __future__ import annotations

import json

from django.apps import apps
from django.conf import settings
from django.db import models
from django_tenants.utils import schema_context


def _tenant_models() -> list[type[models.Model]]:
    configs = [config for config in apps.get_app_configs() if config.name in settings.TENANT_APPS]
    assert len(configs) == len(settings.TENANT_APPS), "every tenant app is scanned"
    return [model for config in configs for model in config.get_models()
            if not model._meta.proxy and model._meta.managed]


def _row_text(row: models.Model) -> str:
    values = [field.value_from_object(row) for field in row._meta.concrete_fields]
    return json.dumps(values, default=str, ensure_ascii=False)


def db_rows_containing(schema: str, needle: str) -> list[str]:
    """`<app.Model>#<pk>` of every row of `schema`'s tenant tables whose fields contain `needle`."""
    found = []
    with schema_context(schema):
        for model in _tenant_models():
            for row in model._base_manager.all().iterator():
                if needle in _row_text(row):
                    found.append(f"{model._meta.label}#{row.pk}")
    return found


def drive_files_containing(schema: str, needle: str) -> list[str]:
    """Keys of every file of `schema`'s drive whose name or content contains `needle` (zips looked into)."""
    import io
    import zipfile

    from apps.drive.storage import tenant_drive

    drive, found, raw = tenant_drive(schema), [], needle.encode()
    for entry in drive.list(""):
        content = drive.read(entry.key)
        hit = raw in content or needle in entry.key
        if not hit and content[:2] == b"PK":
            with zipfile.ZipFile(io.BytesIO(content)) as archive:
                hit = any(raw in archive.read(name) or needle in name for name in archive.namelist())
        if hit:
            found.append(entry.key)
    return found


def db_snapshot(schema: str) -> dict[str, str]:
    """Every row of `schema`'s tenant tables, `<app.Model>#<pk>` -> its fields as text: two snapshots
    taken around an operation differ exactly in the rows it added, changed or deleted."""
    rows = {}
    with schema_context(schema):
        for model in _tenant_models():
            for row in model._base_manager.all().iterator():
                rows[f"{model._meta.label}#{row.pk}"] = _row_text(row)
    return rows


def drive_snapshot(schema: str) -> dict[str, str]:
    """Every file of `schema`'s drive, key -> SHA-256 of its content."""
    import hashlib

    from apps.drive.storage import tenant_drive

    drive = tenant_drive(schema)
    return {entry.key: hashlib.sha256(drive.read(entry.key)).hexdigest() for entry in drive.list("")}
