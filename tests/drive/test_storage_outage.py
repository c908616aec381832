"""A storage outage during a drive scan is the drive's, never the files': real SeaweedFS behind a TCP proxy
(tests.support.tcp_proxy) that the test cuts right after the scan's listing, or before it.

Before, every read that failed in the outage was counted as that file's failure ("internal error:
EndpointConnectionError"), so a few scans in an outage parked every changed file, and they stayed parked once
S3 was back, until their content changed; a listing that failed crashed the scan (and a deploy, with a 500).
"""

from __future__ import annotations

import importlib
from urllib.parse import urlsplit

import pytest
from botocore.exceptions import ClientError
from django.apps import apps as django_apps
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig, BotScript
from apps.drive.backends import S3_MAX_ATTEMPTS, S3Drive
from apps.drive.models import DriveObject
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.django_db

START = b'TALK "Hello"\n'
START_V2 = b'TALK "Hello again"\n'
TOOL = b'PARAM name AS STRING LIKE "Ana" DESCRIPTION "Who"\nDESCRIPTION "Book a visit"\nTALK "Booked " + name\n'
CONFIG = b"name,value\nbot-name,Shop\n"
START_KEY = "shop.gbai/shop.gbdialog/start.bas"
TOOL_KEY = "shop.gbai/shop.gbdialog/book-visit.bas"
CONFIG_KEY = "shop.gbai/shop.gbot/config.csv"
DOC_KEY = "shop.gbai/shop.gbkb/faq/hours.md"
THEME_KEY = "shop.gbai/shop.gbtheme/style.css"
FILES = {START_KEY: START, TOOL_KEY: TOOL, CONFIG_KEY: CONFIG, DOC_KEY: b"# Hours\nOpen 9 to 5.\n",
         THEME_KEY: b"body{}"}
# What a scan applies (the theme is only recorded).
APPLIED = sorted([START_KEY, TOOL_KEY, CONFIG_KEY, DOC_KEY])


@pytest.fixture
def proxy(s3_server):
    target = urlsplit(s3_server.endpoint_url)
    proxy = TcpProxy(target.hostname, target.port).start()
    yield proxy
    proxy.close()


@pytest.fixture
def s3_behind_proxy(settings, tmp_path, s3_server, proxy):
    """The tenants' drives on the real SeaweedFS, reached through the proxy; a fresh bucket per test."""
    import uuid

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.S3_ENDPOINT_URL = proxy.endpoint_url
    settings.S3_ACCESS_KEY, settings.S3_SECRET_KEY = s3_server.access_key, s3_server.secret_key
    settings.S3_REGION = s3_server.region
    settings.S3_BUCKET = f"outage-{uuid.uuid4().hex[:12]}"
    return proxy


class ReadSpy:
    """Counts the drive's reads; while `cut_mode` is set, cuts the proxy as soon as a listing has been read whole."""

    def __init__(self, monkeypatch, proxy: TcpProxy) -> None:
        self.proxy, self.reads, self.cut_mode = proxy, [], None
        listing, read = S3Drive.list, S3Drive.read

        def list_then_cut(drive, *args, **kwargs):
            entries = [*listing(drive, *args, **kwargs)]
            if self.cut_mode:
                self.proxy.cut(self.cut_mode)
            return iter(entries)

        def counted_read(drive, key, **kwargs):
            self.reads.append(key)
            return read(drive, key, **kwargs)

        monkeypatch.setattr(S3Drive, "list", list_then_cut)
        monkeypatch.setattr(S3Drive, "read", counted_read)


def _rows() -> dict[str, tuple]:
    return {o.key: (o.etag, o.processed_etag, o.fail_count, o.last_error, o.last_failed_at)
            for o in DriveObject.objects.all()}


def _blamed(rows: dict[str, tuple]) -> dict[str, tuple]:
    """Files with a failure counted or an error stored."""
    return {key: (row[2], row[3]) for key, row in rows.items() if row[2] or row[3]}


@pytest.mark.parametrize("mode", ["refuse", "503"])
def test_an_outage_after_the_listing_blames_no_file_and_the_next_scan_processes_them_all(
        canary_tenants, s3_behind_proxy, monkeypatch, settings, mode):
    """The reviewer's case: S3 goes away right after the listing, scan after scan. With DRIVE_MAX_FAILURES scans in
    the outage every changed file used to be parked ("internal error: EndpointConnectionError"), and the scan after
    the outage processed nothing."""
    settings.DRIVE_MAX_FAILURES = 2
    proxy = s3_behind_proxy
    spy = ReadSpy(monkeypatch, proxy)
    with schema_context(canary_tenants.a.schema_name):
        drive = tenant_drive()
        for key, data in FILES.items():
            drive.write(key, data)
        for _ in range(settings.DRIVE_MAX_FAILURES + 1):
            proxy.restore()
            spy.cut_mode, spy.reads = mode, []
            answered_before = proxy.answered_503
            report = drive_scan()  # the listing gets through, then the storage is gone
            assert _blamed(_rows()) == {}
            assert report.failed == {} and report.parked == []
            assert not set(report.processed) & set(APPLIED)
            assert report.unavailable, report
            assert ("EndpointConnectionError" if mode == "refuse" else "HTTP 503") in report.unavailable
            assert "127.0.0.1" not in report.unavailable  # the tenant may see it: no storage address
            assert sorted(report.waiting) == APPLIED
            # Stopped at the first read that met the outage: none of the reads that would all fail alike.
            assert len(spy.reads) == 1
            assert proxy.answered_503 - answered_before <= S3_MAX_ATTEMPTS
        assert not BotScript.objects.exists() and not BotConfig.objects.exists()

        proxy.restore()
        spy.cut_mode = None
        report = drive_scan()
        assert report.unavailable == "" and report.failed == {} and report.parked == []
        assert sorted(report.processed) == APPLIED
        assert all(row[0] == row[1] and row[2] == 0 for row in _rows().values()), _rows()
        assert {s.name: s.ok for s in BotScript.objects.all()} == {"start": True, "book-visit": True}
        assert BotConfig.objects.get(bot=Bot.objects.get(name="shop"), key="bot-name").value == "Shop"


def test_a_listing_that_fails_changes_nothing_and_the_next_scan_catches_up(canary_tenants, s3_behind_proxy):
    """A listing cut off must not read as files removed, nor count as anything; it crashed the scan before."""
    proxy = s3_behind_proxy
    with schema_context(canary_tenants.a.schema_name):
        drive = tenant_drive()
        for key, data in FILES.items():
            drive.write(key, data)
        assert sorted(drive_scan().processed) == sorted(FILES)
        # Work for the next scan: a change, a removal, a new file.
        drive.write(START_KEY, START_V2)
        drive.delete(TOOL_KEY)
        drive.write("shop.gbai/shop.gbdialog/new.bas", START)
        rows = _rows()
        scripts = dict(BotScript.objects.values_list("name", "source"))

        proxy.cut("refuse")
        for _ in range(2):
            report = drive_scan()
            assert report.unavailable and "EndpointConnectionError" in report.unavailable
            assert (report.processed, report.removed, report.failed, report.listed) == ([], [], {}, 0)
            assert _rows() == rows
            assert dict(BotScript.objects.values_list("name", "source")) == scripts

        proxy.restore()
        report = drive_scan()
        assert report.unavailable == "" and report.failed == {}
        assert sorted(report.processed) == ["shop.gbai/shop.gbdialog/new.bas", START_KEY]
        assert report.removed == [TOOL_KEY]
        assert dict(BotScript.objects.values_list("name", "source")) == {
            "start": START_V2.decode(), "new": START.decode()}


def test_a_scan_whose_first_contact_with_the_storage_fails_reports_the_outage(canary_tenants, s3_behind_proxy):
    """A worker's first scan checks the bucket (tenant_drive) before listing: S3 down then crashed the scan."""
    proxy = s3_behind_proxy
    proxy.cut("refuse")
    with schema_context(canary_tenants.a.schema_name):
        report = drive_scan()
    assert report.unavailable and "EndpointConnectionError" in report.unavailable
    assert (report.processed, report.failed, report.removed) == ([], {}, [])


def test_a_deploy_in_an_outage_after_its_writes_is_a_503_and_the_next_scan_applies_the_package(
        canary_tenants, s3_behind_proxy, monkeypatch):
    """The deploy's own scan meets the outage: the deployer is told the package waits for the drive (503), no file
    is blamed, and the next scan applies it."""
    import io
    import zipfile

    from apps.bots.services import BotDeployError, bot_deploy, package_limits
    from apps.drive.package import package_read_zip

    proxy = s3_behind_proxy
    spy = ReadSpy(monkeypatch, proxy)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for key, data in FILES.items():
            archive.writestr(key, data)
    buffer.seek(0)
    package = package_read_zip(buffer, limits=package_limits())
    with schema_context(canary_tenants.a.schema_name):
        tenant_drive()  # the bucket exists before the deploy lists it
        # The deploy's own listing of the old package passes; the scan's listing is the second one.
        calls = []
        original = S3Drive.list

        def second_listing_cuts(drive, *args, **kwargs):
            calls.append(args)
            spy.cut_mode = "refuse" if len(calls) == 2 else None
            return original(drive, *args, **kwargs)

        monkeypatch.setattr(S3Drive, "list", second_listing_cuts)
        with pytest.raises(BotDeployError) as refused:
            bot_deploy(package=package)
        assert refused.value.status == 503
        assert "the package was written" in str(refused.value) and "unavailable" in str(refused.value)
        assert _blamed(_rows()) == {}
        proxy.restore()
        spy.cut_mode = None
        report = drive_scan()
        assert sorted(report.processed) == APPLIED and report.failed == {}


def test_one_key_the_storage_refuses_is_that_files_failure_with_its_reason_and_the_scan_goes_on(
        canary_tenants, s3_behind_proxy, monkeypatch):
    """AccessDenied on one key (an object's ACL, a KMS key) is not an outage: the file fails, saying why (it said
    "internal error: ClientError"), and the other files are processed."""
    with schema_context(canary_tenants.a.schema_name):
        drive = tenant_drive()
        for key, data in FILES.items():
            drive.write(key, data)
        opened = type(drive.storage)._open

        def refused(storage, name, mode="rb"):
            if name.endswith("book-visit.bas"):
                raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                                   "ResponseMetadata": {"HTTPStatusCode": 403}}, "GetObject")
            return opened(storage, name, mode)

        monkeypatch.setattr(type(drive.storage), "_open", refused)
        report = drive_scan()
        assert "AccessDenied" in report.failed[TOOL_KEY] and "internal error" not in report.failed[TOOL_KEY]
        assert DriveObject.objects.get(key=TOOL_KEY).fail_count == 1
        assert sorted(report.processed) == sorted(set(FILES) - {TOOL_KEY})
        assert report.unavailable == ""


def test_files_parked_by_an_outage_before_the_fix_get_their_chances_again(canary_tenants, settings):
    """The data migration: a file whose failures were an outage's ("internal error: EndpointConnectionError") is
    no longer parked; a file that failed for its own reason stays parked."""
    migration = importlib.import_module("apps.drive.migrations.0002_outage_failures_forgiven")
    with schema_context(canary_tenants.a.schema_name):
        common = {"bot_name": "shop", "kind": "bas", "etag": "e1", "size": 1}
        outage = DriveObject.objects.create(key="shop.gbai/shop.gbdialog/a.bas", fail_count=5,
                                            last_error="internal error: EndpointConnectionError", **common)
        throttled = DriveObject.objects.create(key="shop.gbai/shop.gbdialog/b.bas", fail_count=5,
                                               last_error="internal error: ClientError", **common)
        broken = DriveObject.objects.create(key="shop.gbai/shop.gbdialog/c.bas", fail_count=5,
                                            last_error="c.bas: line 1: unexpected end of input", **common)
        migration.outage_failures_forgiven(django_apps, None)
        for obj in (outage, throttled, broken):
            obj.refresh_from_db()
        assert (outage.fail_count, outage.last_error) == (0, "")
        assert (throttled.fail_count, throttled.last_error) == (0, "")
        assert (broken.fail_count, broken.last_error) == (5, "c.bas: line 1: unexpected end of input")

