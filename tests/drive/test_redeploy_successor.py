"""Which remaining file takes a removed script or `.gbdata` table over: the file it was renamed or moved to (new or
changed in the scan), not an older copy refused beside it. The takeover went to the remaining file of that name
recorded first, which is any older refused (even parked) copy: the rename target, recorded in the scan, was refused
naming the stale copy, and the stale copy became the running script or the table's rows."""


import pytest
from django_tenants.utils import schema_context

from apps.bots.models import BotScript, BotTableRow
from apps.drive.models import DriveObject
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from tests.drive.support import package_deploy as _deploy

pytestmark = pytest.mark.django_db

HELLO = b'TALK "Hello"\n'
STALE = b'TALK "stale"\n'
START, PARKED = "shop.gbai/shop.gbdialog/start.bas", "shop.gbai/shop.gbdialog/zz/start.bas"
MAIN = "shop.gbai/shop.gbdialog/main/start.bas"
TABLE_A, TABLE_B, TABLE_C = (f"shop.gbai/{folder}.gbdata/products.csv" for folder in "abc")


def _names() -> list[str]:
    return [row["name"] for row in BotTableRow.objects.filter(table="products.csv").order_by("pk")
            .values_list("data", flat=True)]


def _rename(old: str, new: str) -> None:
    drive = tenant_drive()
    drive.write(new, drive.read(old))
    drive.delete(old)


def _refused(key: str) -> str:
    obj = DriveObject.objects.get(key=key)
    assert obj.fail_count > 0 and obj.processed_etag == ""
    return obj.last_error


def _script() -> tuple[str, str, bool]:
    script = BotScript.objects.get(name="start")
    return script.path, script.source, script.ok


def test_a_script_renamed_beside_a_parked_duplicate_stays_the_running_script(canary_tenants, storage, settings):
    """The reviewer's repro: processed=[zz/start.bas], main/start.bas refused ("a script named 'start' already
    exists at .../zz/start.bas"), and the running script became the parked TALK "stale"."""
    settings.DRIVE_MAX_FAILURES = 1
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdialog/start.bas": HELLO, "shop.gbdialog/zz/start.bas": STALE})
        assert drive_scan().parked == [PARKED]

        _rename(START, MAIN)
        report = drive_scan()
        assert (report.removed, report.processed, report.failed, report.parked) == ([START], [MAIN], {}, [PARKED])
        assert _script() == (MAIN, HELLO.decode(), True)
        assert "a script named 'start' already exists" in _refused(PARKED)

        # The renamed file holds the script from now on: a change of it is applied, the parked copy stays refused.
        tenant_drive().write(MAIN, b'TALK "Hello again"\n')
        report = drive_scan()
        assert (report.processed, report.failed) == ([MAIN], {})
        assert _script() == (MAIN, 'TALK "Hello again"\n', True)
        tenant_drive().write(PARKED, b'TALK "stale again"\n')
        report = drive_scan()
        assert report.failed == {PARKED: f"{PARKED}: a script named 'start' already exists at {MAIN}"}
        assert _script() == (MAIN, 'TALK "Hello again"\n', True)


def test_a_data_file_renamed_beside_a_refused_duplicate_keeps_the_table(canary_tenants, storage):
    """b was imported (its stale rows replaced the table) and c, the file a was renamed to, was refused naming b."""
    with schema_context(canary_tenants.a.schema_name):
        report = _deploy({"a.gbdata/products.csv": b"name\napple\n", "b.gbdata/products.csv": b"name\npear\n"})
        assert list(report.errors) == [TABLE_B]

        _rename(TABLE_A, TABLE_C)
        report = drive_scan()
        assert report.removed == [TABLE_A] and report.processed == [TABLE_C]
        assert report.failed == {TABLE_B: (
            f"{TABLE_B}: the table 'products.csv' belongs to {TABLE_C}, the bot's first file of that name (tables are "
            "named by file name); not imported: rename or remove one of the two files")}
        assert _names() == ["apple"]
        assert _refused(TABLE_B) == report.failed[TABLE_B]

        # c holds the table in later scans too: its change is imported, a change of b is still refused.
        tenant_drive().write(TABLE_C, b"name\napple\nkiwi\n")
        tenant_drive().write(TABLE_B, b"name\npear\nfig\n")
        report = drive_scan()
        assert report.processed == [TABLE_C] and list(report.failed) == [TABLE_B]
        assert _names() == ["apple", "kiwi"]

        # Only when c goes does the refused b take the table over.
        tenant_drive().delete(TABLE_C)
        report = drive_scan()
        assert (report.removed, report.processed, report.failed) == ([TABLE_C], [TABLE_B], {})
        assert _names() == ["pear", "fig"]


def test_two_renames_in_one_scan_each_keep_their_script_or_table(canary_tenants, storage, settings):
    """A redeploy renaming the script and the table, and the refused copy of the script too (zz/ to aa/, which sorts
    and is recorded first): the file with the removed holder's content takes over, not the first in key order."""
    settings.DRIVE_MAX_FAILURES = 1
    copy = "shop.gbai/shop.gbdialog/aa/start.bas"
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdialog/start.bas": HELLO, "shop.gbdialog/zz/start.bas": STALE,
                 "a.gbdata/products.csv": b"name\napple\n", "b.gbdata/products.csv": b"name\npear\n"})
        assert sorted(drive_scan().parked) == [TABLE_B, PARKED]

        report = _deploy({"shop.gbdialog/main/start.bas": HELLO, "shop.gbdialog/aa/start.bas": STALE,
                          "c.gbdata/products.csv": b"name\napple\n", "b.gbdata/products.csv": b"name\npear\n"})
        assert report.errors == {copy: f"{copy}: a script named 'start' already exists at {MAIN}"}
        assert _script() == (MAIN, HELLO.decode(), True)
        assert _names() == ["apple"]
        assert DriveObject.objects.get(key=TABLE_C).processed_etag
        assert "belongs to" in _refused(TABLE_B)


def test_of_several_changed_files_of_a_name_the_first_in_key_order_takes_over(canary_tenants, storage):
    """start.bas moved and edited to main/start.bas while its refused copy zz/start.bas is edited too: neither has
    the removed file's content, and key order decides (main/ before zz/), not which was recorded first."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdialog/start.bas": HELLO, "shop.gbdialog/zz/start.bas": STALE})
        drive = tenant_drive()
        drive.write(MAIN, b'TALK "Hello, moved"\n')
        drive.delete(START)
        drive.write(PARKED, b'TALK "stale, edited"\n')
        report = drive_scan()
        assert report.processed == [MAIN]
        assert report.failed == {PARKED: f"{PARKED}: a script named 'start' already exists at {MAIN}"}
        assert _script() == (MAIN, 'TALK "Hello, moved"\n', True)
