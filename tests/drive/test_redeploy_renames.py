"""Scripts and `.gbdata` tables moved or renamed in a redeploy (or between two scans), and two `.gbdata` files of
one table name: a bad new file never takes the working version down, and no file's rows are replaced or emptied
silently by another file of the same name."""


import pytest
from django_tenants.utils import schema_context

from apps.bots.models import BotScript, BotTableRow
from apps.drive.models import DriveObject
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from tests.drive.support import package_deploy as _deploy

pytestmark = pytest.mark.django_db

START = b'TALK "Hello"\n'
START_NEW = b'TALK "Hello again"\n'
BROKEN = b'IF x THEN\nTALK "never closed"\n'
KEPT = "(not deployed: the previous version keeps running)"


def _rows(table: str = "products.csv") -> list[dict]:
    return list(BotTableRow.objects.filter(table=table).order_by("pk").values_list("data", flat=True))


def test_a_redeploy_renaming_a_script_and_a_table_to_broken_files_keeps_the_working_versions(canary_tenants,
                                                                                              storage):
    """The old paths were removed first: the script row became the broken file (ok=False) and the table was
    emptied, while the same typo at the same path kept the previous version running and said so."""
    old_script, new_script = "shop.gbai/shop.gbdialog/start.bas", "shop.gbai/shop.gbdialog/Start.bas"
    old_table, new_table = "shop.gbai/shop.gbdata/products.csv", "shop.gbai/shop.gbdata/Products.csv"
    with schema_context(canary_tenants.a.schema_name):
        report = _deploy({"shop.gbdialog/start.bas": START, "shop.gbdata/products.csv": b"id,name\n1,rose\n"})
        assert report.errors == {}
        report = _deploy({"shop.gbdialog/Start.bas": BROKEN, "shop.gbdata/Products.csv": b"id,id\n1,2\n"})
        assert report.errors[new_script] == f"{new_script}:1:1: IF is never closed {KEPT}"
        assert "column 2 of the header repeats 'id'" in report.errors[new_table]
        assert report.errors[new_table].endswith(
            "(not imported: the table 'products.csv' keeps its previous 1 row)")
        script = BotScript.objects.get(name="start")
        assert script.ok and script.source == START.decode() and script.path == new_script
        assert script.rejected_source == BROKEN.decode()
        assert _rows() == [{"id": "1", "name": "rose"}]
        assert not DriveObject.objects.filter(key__in=[old_script, old_table]).exists()

        # The next scan: the old paths are gone, the new ones still fail the same way, nothing is lost.
        report = drive_scan()
        assert set(report.failed) == {new_script, new_table} and report.removed == []
        assert BotScript.objects.get(name="start").ok and _rows() == [{"id": "1", "name": "rose"}]

        # A good save of the new paths replaces the old versions cleanly.
        drive = tenant_drive()
        drive.write(new_script, START_NEW)
        drive.write(new_table, b"id,name\n2,tulip\n3,fig\n")
        report = drive_scan()
        assert report.failed == {}
        script = BotScript.objects.get()
        assert (script.path, script.source, script.rejected_source, script.ok) == (
            new_script, START_NEW.decode(), "", True)
        assert [row["name"] for row in _rows()] == ["tulip", "fig"]

        # Deleting the new paths removes the script and empties the table.
        drive.delete(new_script)
        drive.delete(new_table)
        report = drive_scan()
        assert sorted(report.removed) == [new_table, new_script]
        assert not BotScript.objects.exists() and _rows() == []


def test_deleting_a_renamed_script_that_never_compiled_removes_the_previous_version(canary_tenants, storage):
    """The new path holds the script from the rename on: deleting it must not leave the old version running."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdialog/start.bas": START})
        _deploy({"shop.gbdialog/main/start.bas": BROKEN})
        assert BotScript.objects.get(name="start").ok
        tenant_drive().delete("shop.gbai/shop.gbdialog/main/start.bas")
        report = drive_scan()
        assert report.removed == ["shop.gbai/shop.gbdialog/main/start.bas"]
        assert not BotScript.objects.exists()


def test_a_data_table_with_an_error_at_the_same_path_says_it_keeps_its_rows(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        key = "shop.gbai/shop.gbdata/products.csv"
        _deploy({"shop.gbdata/products.csv": b"id,name\n1,rose\n2,tulip\n"})
        tenant_drive().write(key, b"id,id\n1,2\n")
        report = drive_scan()
        assert report.failed[key].endswith("(not imported: the table 'products.csv' keeps its previous 2 rows)")
        assert len(_rows()) == 2


def test_a_second_data_file_of_a_table_name_is_refused_and_applied_once_the_first_is_removed(canary_tenants,
                                                                                             storage):
    """`a.gbdata/products.csv` and `b.gbdata/products.csv` are one table: b replaced a's rows with no error, and
    deleting a then emptied the table while b stayed marked processed."""
    a, b = "shop.gbai/a.gbdata/products.csv", "shop.gbai/b.gbdata/products.csv"
    with schema_context(canary_tenants.a.schema_name):
        report = _deploy({"a.gbdata/products.csv": b"name\napple\n", "b.gbdata/products.csv": b"name\npear\nfig\n"})
        assert list(report.errors) == [b]
        assert a in report.errors[b] and b in report.errors[b]
        assert _rows() == [{"name": "apple"}]

        tenant_drive().delete(a)
        report = drive_scan()
        assert report.removed == [a] and report.failed == {} and b in report.processed
        assert _rows() == [{"name": "pear"}, {"name": "fig"}]
        assert drive_scan().processed == []

        tenant_drive().delete(b)
        drive_scan()
        assert _rows() == []


def test_a_data_file_added_beside_its_tables_file_is_refused_and_removing_it_keeps_the_table(canary_tenants,
                                                                                             storage, settings):
    """The later file replaced the table; deleting it emptied the table, though the first file was still there.
    Rows a script saved since the import are kept too: nothing is imported again."""
    from apps.basic.vm import run_source
    from apps.bots.host import BotHost
    from apps.bots.models import Bot

    a, b = "shop.gbai/shop.gbdata/products.csv", "shop.gbai/shop.gbdata/old/Products.csv"
    settings.DRIVE_MAX_FAILURES = 1
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdata/products.csv": b"name\napple\n"})
        assert run_source('SAVE "products.csv", #{name: "kiwi"}\n', BotHost(Bot.objects.get(name="shop"))).status \
            == "done"
        drive = tenant_drive()
        drive.write(b, b"name\npear\n")
        report = drive_scan()
        assert report.failed[b] == (
            f"{b}: the table 'products.csv' belongs to {a}, the bot's first file of that name (tables are named by "
            "file name); not imported: rename or remove one of the two files")
        assert drive_scan().parked == [b]
        assert [row["name"] for row in _rows()] == ["apple", "kiwi"]
        drive.delete(b)
        report = drive_scan()
        assert report.removed == [b] and report.processed == []
        assert [row["name"] for row in _rows()] == ["apple", "kiwi"]


def test_a_script_refused_beside_another_of_its_name_takes_over_when_that_one_is_deleted(canary_tenants, storage,
                                                                                        settings):
    """The refused file was parked ("a script named 'start' already exists"); deleting the other removed the
    script and left the bot without one until the parked file changed."""
    settings.DRIVE_MAX_FAILURES = 1
    with schema_context(canary_tenants.a.schema_name):
        _deploy({"shop.gbdialog/start.bas": START, "shop.gbdialog/zz/start.bas": START_NEW})
        moved = "shop.gbai/shop.gbdialog/zz/start.bas"
        assert drive_scan().parked == [moved]
        tenant_drive().delete("shop.gbai/shop.gbdialog/start.bas")
        report = drive_scan()
        assert report.failed == {} and report.processed == [moved]
        script = BotScript.objects.get()
        assert (script.path, script.source, script.ok) == (moved, START_NEW.decode(), True)
