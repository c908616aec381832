"""Bad files in a drive get a clear, specific error naming the file, and lose nothing: what was applied before
stays, and a file is blamed only for what is wrong with it."""

import io
import zipfile

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotScript, BotTableRow
from apps.bots.services import package_limits
from apps.drive.models import DriveObject
from apps.drive.package import package_read_zip
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from tests.drive.support import package_deploy as _deploy

pytestmark = pytest.mark.django_db

START = b'TALK "Hello"\n'


def _shop() -> dict[str, bytes]:
    return {"shop.gbdialog/start.bas": START, "shop.gbot/config.csv": b"name,value\nbot-name,Shop\n",
            "shop.gbot/PROMPT.md": b"Be kind.", "shop.gbdata/products.csv": b"name\nrose\n"}


def _state():
    return (sorted(BotScript.objects.values_list("path", "source", "rejected_source")),
            Bot.objects.get(name="shop").system_prompt,
            sorted(str(d) for d in BotTableRow.objects.values_list("data", flat=True)))


@pytest.mark.parametrize("path", ["shop.gbdialog/start.bas", "shop.gbot/PROMPT.md", "shop.gbdata/products.csv"])
def test_a_nul_byte_in_a_text_file_is_refused_with_its_path_line_and_byte(canary_tenants, local_storage, path):
    """A script, prompt or .gbdata table with a NUL byte failed at the INSERT: "internal error: DataError"."""
    with schema_context(canary_tenants.a.schema_name):
        assert _deploy(_shop()).errors == {}
        before = _state()
        key = f"shop.gbai/{path}"
        tenant_drive().write(key, b"name\r\nro\x00se\n")
        report = drive_scan()
        # A table's refusal also says what it keeps (the DriveMonitor's wording for every refused .gbdata CSV).
        kept = " (not imported: the table 'products.csv' keeps its previous 1 row)" if path.endswith(".csv") else ""
        assert report.failed == {key: f"{key} line 2: contains a NUL byte (byte 9 of the file){kept}"}
        assert _state() == before


def test_the_tasks_time_limit_stops_the_scan_and_blames_no_file(canary_tenants, local_storage, monkeypatch):
    """Celery's SoftTimeLimitExceeded was caught as the file's failure ("internal error", a step towards parking
    it) and the scan went on until the hard kill."""
    from celery.exceptions import SoftTimeLimitExceeded

    from apps.bots import services as bot_services

    with schema_context(canary_tenants.a.schema_name):
        assert _deploy(_shop()).errors == {}
        drive = tenant_drive()
        drive.write("shop.gbai/shop.gbdialog/a.bas", b'TALK "a"\n')
        drive.write("shop.gbai/shop.gbdialog/b.bas", b'TALK "b"\n')
        synced = []

        def out_of_time(*, bot, path, data):
            synced.append(path)
            raise SoftTimeLimitExceeded()

        monkeypatch.setattr(bot_services, "script_sync", out_of_time)
        with pytest.raises(SoftTimeLimitExceeded):
            drive_scan()
        assert synced == ["shop.gbai/shop.gbdialog/a.bas"]  # the scan stopped there
        row = DriveObject.objects.get(key="shop.gbai/shop.gbdialog/a.bas")
        assert (row.fail_count, row.last_error) == (0, "")


def test_a_file_removed_between_listing_and_reading_is_said_so_without_a_server_path(canary_tenants, storage,
                                                                                    settings):
    """The error stored and shown was str(FileNotFoundError): the file's absolute path on the server, counted as
    the file's failure."""
    with schema_context(canary_tenants.a.schema_name):
        assert _deploy(_shop()).errors == {}
        key = "shop.gbai/shop.gbdialog/late.bas"
        drive = tenant_drive()
        drive.write(key, b'TALK "late"\n')
        real_read = type(drive).read

        def removed_first(self, key_, *, max_bytes=None):
            if key_ == key:
                self.delete(key_)
            return real_read(self, key_, max_bytes=max_bytes)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(drive), "read", removed_first)
            report = drive_scan()
        assert report.failed == {key: f"{key} was removed while the scan read it"}
        assert str(settings.MEDIA_ROOT) not in str(list(DriveObject.objects.values_list("last_error", flat=True)))
        row = DriveObject.objects.get(key=key)
        assert row.fail_count == 0 and row.last_error == report.failed[key]
        assert not BotScript.objects.filter(path=key).exists()
        later = drive_scan()
        assert later.removed == [key] and later.failed == {}


def test_deploy_errors_name_no_path_or_address_of_the_server(canary_tenants, local_storage, monkeypatch):
    """The drive's refusals reached the tenant as str(exc): `[Errno 21] Is a directory: '/srv/.../b.bas'`, and the
    same for reads and deletes (and KB indexing), with the server's paths."""
    from apps.bots.services import BotDeployError
    from apps.drive.backends import LocalDrive

    with schema_context(canary_tenants.a.schema_name):
        assert _deploy({**_shop(), "shop.gbkb/old.md": b"# old\n"}).errors == {}
        # A real refusal: a folder left by a crashed write (holding only a temporary file) where b.bas goes.
        obstacle = tenant_drive().root / "shop.gbai/shop.gbdialog/b.bas"
        obstacle.mkdir()
        (obstacle / ".drive-tmp-crashed").write_bytes(b"")
        with pytest.raises(BotDeployError) as refused:
            _deploy({**_shop(), "shop.gbdialog/b.bas": START})
        assert str(refused.value) == ("the drive refused 'shop.gbdialog/b.bas' (IsADirectoryError: Is a directory); "
                                      "nothing was deployed and the previous files were put back")
        obstacle.joinpath(".drive-tmp-crashed").unlink()
        obstacle.rmdir()

        def denied(self, key, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(self._path(key)))

        monkeypatch.setattr(LocalDrive, "delete", denied)
        with pytest.raises(BotDeployError) as refused:
            _deploy(_shop())  # without old.md, which the drive refuses to remove
        assert "(shop.gbkb/old.md; PermissionError: Permission denied)" in str(refused.value)
        monkeypatch.setattr(LocalDrive, "read", denied)
        with pytest.raises(BotDeployError) as refused:
            _deploy({**_shop(), "shop.gbdialog/start.bas": b'TALK "changed"\n'})
        assert "(PermissionError: Permission denied); nothing was written" in str(refused.value)
        assert str(local_storage) not in str(refused.value)


def test_kb_indexing_errors_name_no_path_or_address_of_the_server():
    from botocore.exceptions import EndpointConnectionError

    from apps.kb.indexing import index_failure_message

    assert index_failure_message(PermissionError(13, "Permission denied", "/srv/media/tenants/a/x.md")) == (
        "indexing failed (PermissionError): Permission denied")
    assert index_failure_message(EndpointConnectionError(endpoint_url="http://seaweed.internal:8333/b/x.md")) == (
        "indexing failed (EndpointConnectionError): Could not connect to the endpoint URL: \"<storage endpoint>\"")


@pytest.mark.parametrize("name", ["shop.gbdialog/.drive-tmp-tool.bas", "shop.gbkb/.drive-tmp-faq/hours.md"])
def test_a_package_file_named_like_the_drives_temporary_files_is_refused_naming_it(name):
    """Written, such a file was never listed on a local drive (its listing skips the drive's writes in flight):
    never processed, and never shown."""
    from apps.drive.package import PackageError

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("shop.gbai/shop.gbdialog/start.bas", START)
        archive.writestr(f"shop.gbai/{name}", START)
    buffer.seek(0)
    with pytest.raises(PackageError) as refused:
        package_read_zip(buffer, limits=package_limits())
    assert str(refused.value).startswith(f"entry '{name}' cannot be stored in the drive: ")
    assert "starting with '.drive-tmp-', which the drive keeps for its temporary files; rename it" in str(
        refused.value)


def test_a_script_cannot_write_a_file_the_drive_would_not_list(canary_tenants, local_storage):
    from apps.basic.vm import run_source
    from apps.bots.host import BotHost

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result = run_source('WRITE "hello" TO "notes/.drive-tmp-a.txt"', BotHost(bot))
        assert result.status == "error" and "'.drive-tmp-'" in result.error["message"], result.error
        tenant_root = local_storage / "tenants" / canary_tenants.a.schema_name
        assert not (tenant_root / "shop.gbai/shop.gbdrive/notes/.drive-tmp-a.txt").exists()
