"""The drive browser: folders and files of the tenant's own drive, downloads as attachments, bad keys refused,
another tenant's files never listed."""

from __future__ import annotations

import pytest
from django_tenants.utils import schema_context

from apps.accounts.roles import Role
from apps.drive.storage import tenant_drive

pytestmark = pytest.mark.django_db


def _write(tenant, files: dict[str, bytes]) -> None:
    with schema_context(tenant.schema_name):
        drive = tenant_drive()
        for key, data in files.items():
            drive.write(key, data)


def test_browser_lists_folders_then_files_and_downloads_one(console_client, canary_tenants, local_storage):
    _write(canary_tenants.a, {"shop.gbai/shop.gbot/config.csv": b"name,value\n",
                              "shop.gbai/shop.gbdialog/start.bas": b'TALK "hi"\n',
                              "shop.gbai/README.md": b"<script>alert(1)</script>"})
    client = console_client(Role.VIEWER)
    root = client.get("/console/drive/").content.decode()
    assert "shop.gbai/" in root and "3 files" in root
    folder = client.get("/console/drive/?prefix=shop.gbai/").content.decode()
    assert "shop.gbot/" in folder and "shop.gbdialog/" in folder and "README.md" in folder
    assert folder.index("shop.gbot/") < folder.index("README.md")
    download = client.get("/console/drive/download/?key=shop.gbai/README.md")
    assert download.status_code == 200 and download.content == b"<script>alert(1)</script>"
    assert download["Content-Type"] == "application/octet-stream"
    assert download["Content-Disposition"].startswith("attachment;")


def test_bad_or_missing_keys_are_refused(console_client, local_storage):
    client = console_client(Role.VIEWER)
    traversal = client.get("/console/drive/download/?key=../../etc/passwd")
    assert traversal.status_code == 400 and "'..'" in traversal.content.decode()
    assert client.get("/console/drive/download/?key=nothing/here.txt").status_code == 404
    assert client.get("/console/drive/?prefix=../x").status_code == 404


def test_another_tenants_files_are_not_reachable(console_client, canary_tenants, local_storage):
    _write(canary_tenants.b, {"secret.gbai/notes.txt": b"tenant B only"})
    client = console_client(Role.ADMIN)
    assert "secret.gbai" not in client.get("/console/drive/").content.decode()
    assert client.get("/console/drive/download/?key=secret.gbai/notes.txt").status_code == 404


def test_platform_areas_are_neither_listed_nor_served_and_downloads_are_audited(console_client, canary_tenants,
                                                                                   local_storage):
    from apps.compliance.models import AuditEvent

    _write(canary_tenants.a, {"_compliance/exports/abc.zip.sealed": b"sealed export",
                              "shop.gbai/notes.txt": b"notes"})
    client = console_client(Role.ADMIN)
    assert "_compliance" not in client.get("/console/drive/").content.decode()
    assert client.get("/console/drive/?prefix=_compliance/exports/").status_code == 404
    assert client.get("/console/drive/download/?key=_compliance/exports/abc.zip.sealed").status_code == 404
    assert client.get("/console/drive/download/?key=shop.gbai/notes.txt").status_code == 200
    with schema_context(canary_tenants.a.schema_name):
        assert AuditEvent.objects.filter(action="drive.download", object_id="shop.gbai/notes.txt").exists()


def test_a_file_larger_than_the_download_limit_is_refused_without_a_drive_row(console_client, canary_tenants,
                                                                               local_storage, monkeypatch):
    """Files outside bot packages have no DriveObject row (and a package file may have grown since the last
    scan): the read itself stops at the limit instead of loading the whole object into the web process."""
    from apps.console.views import drive as views
    from apps.drive import backends

    monkeypatch.setattr(views, "DRIVE_DOWNLOAD_MAX_BYTES", 1000)
    _write(canary_tenants.a, {"backups/dump.tar": b"x" * 5000, "backups/small.txt": b"y" * 1000})
    read: list[int | None] = []
    original = backends._read_bounded

    def recorded(file, key, size, max_bytes):
        read.append(max_bytes)
        return original(file, key, size, max_bytes)

    monkeypatch.setattr(backends, "_read_bounded", recorded)
    client = console_client(Role.VIEWER)
    refused = client.get("/console/drive/download/?key=backups/dump.tar")
    assert refused.status_code == 413 and "5000 bytes" in refused.content.decode()
    assert read == [1000]
    assert client.get("/console/drive/download/?key=backups/small.txt").content == b"y" * 1000
