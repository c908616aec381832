"""DriveMonitor against real storage (local files and SeaweedFS S3): only what changed is processed,
failures park, deletions un-register, tenants never meet."""

import os
import time
import zoneinfo

import pytest
from django_tenants.utils import schema_context

from apps.bots.models import Bot, BotConfig, BotScript
from apps.drive.models import DriveObject
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from apps.kb.models import Document
from tests.drive.support import package_deploy as _deploy

pytestmark = pytest.mark.django_db

START = b'TALK "Hello from ${BOT.name}"\nADD SUGGESTION "visit" AS "Book a visit"\n'
TOOL = (
    b'PARAM name AS STRING LIKE "Ana" DESCRIPTION "Who is visiting"\n'
    b'DESCRIPTION "Book a visit"\nTALK "Booked for " + name\n'
)
CONFIG = b"name,value\nbot-name,Shop\ntheme-color1,#0d2111\nparam-max-guests,4\n"
BROKEN = b'IF x THEN\nTALK "never closed"\n'


def _shop_files(bot: str = "shop") -> dict[str, bytes]:
    return {
        f"{bot}.gbdialog/start.bas": START,
        f"{bot}.gbdialog/book-visit.bas": TOOL,
        f"{bot}.gbot/config.csv": CONFIG,
        f"{bot}.gbkb/faq/hours.md": b"# Hours\nOpen 9 to 5.\n",
        f"{bot}.gbkb/faq/visits.txt": b"Visits are free.\n",
        f"{bot}.gbtheme/style.css": b"body{}",
    }


def test_deploy_compiles_scripts_syncs_config_and_registers_documents(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        report = _deploy(_shop_files())
        assert report.errors == {}
        bot = Bot.objects.get(name="shop")
        scripts = {s.name: s for s in BotScript.objects.filter(bot=bot)}
        assert set(scripts) == {"start", "book-visit"}
        assert all(s.ok for s in scripts.values())
        tool = scripts["book-visit"].tool_schema["function"]
        assert tool["name"] == "book-visit" and "name" in tool["parameters"]["properties"]
        assert scripts["start"].tool_schema is None
        assert dict(BotConfig.objects.filter(bot=bot).values_list("key", "value")) == {
            "bot-name": "Shop", "theme-color1": "#0d2111", "param-max-guests": "4"}
        documents = Document.objects.filter(kb__bot=bot, kb__name="faq")
        assert sorted(d.path.rsplit("/", 1)[-1] for d in documents) == ["hours.md", "visits.txt"]
        assert DriveObject.objects.filter(bot_name="shop").count() == 6


def test_changing_one_script_recompiles_only_it(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        before = {s.name: s.compiled_at for s in BotScript.objects.all()}
        key = "shop.gbai/shop.gbdialog/book-visit.bas"
        tenant_drive().write(key, TOOL + b'TALK "see you"\n')
        report = drive_scan()
        assert report.processed == [key]
        after = {s.name: s.compiled_at for s in BotScript.objects.all()}
        assert after["start"] == before["start"] and after["book-visit"] > before["book-visit"]
        assert "see you" in BotScript.objects.get(name="book-visit").source


def test_unchanged_and_touched_files_are_not_processed_again(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        assert drive_scan().processed == []
        drive = tenant_drive()
        key = "shop.gbai/shop.gbdialog/start.bas"
        if storage == "local":
            path = drive.root / key
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
        else:
            drive.write(key, START)  # the same bytes again: same ETag
        report = drive_scan()
        assert report.processed == [] and report.failed == {}


def test_deleted_kb_document_is_unregistered_and_deleted_script_dropped(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.delete("shop.gbai/shop.gbkb/faq/visits.txt")
        drive.delete("shop.gbai/shop.gbdialog/book-visit.bas")
        report = drive_scan()
        assert sorted(report.removed) == [
            "shop.gbai/shop.gbdialog/book-visit.bas", "shop.gbai/shop.gbkb/faq/visits.txt"]
        assert list(Document.objects.values_list("path", flat=True)) == ["shop.gbai/shop.gbkb/faq/hours.md"]
        assert list(BotScript.objects.values_list("name", flat=True)) == ["start"]


def test_broken_script_shows_its_error_and_is_parked_after_the_threshold(canary_tenants, storage, settings):
    settings.DRIVE_MAX_FAILURES = 3
    with schema_context(canary_tenants.a.schema_name):
        files = _shop_files()
        files["shop.gbdialog/broken.bas"] = BROKEN
        report = _deploy(files)
        key = "shop.gbai/shop.gbdialog/broken.bas"
        assert key in report.errors and "broken.bas:" in report.errors[key]
        script = BotScript.objects.get(name="broken")
        assert script.errors and script.errors[0]["line"] >= 1 and script.errors[0]["message"]
        for expected in (2, 3):
            assert key in drive_scan().failed
            assert DriveObject.objects.get(key=key).fail_count == expected
        parked = drive_scan()
        assert parked.parked == [key] and key not in parked.failed
        assert DriveObject.objects.get(key=key).fail_count == 3  # no more attempts
        tenant_drive().write(key, b'TALK "fixed"\n')
        fixed = drive_scan()
        assert fixed.processed == [key]
        assert BotScript.objects.get(name="broken").ok


def test_a_redeployed_script_that_does_not_compile_leaves_the_previous_version_running(canary_tenants, storage):
    """A typo in a redeploy used to replace the working script: every session then got "start is not available".
    As the config does, the last version that compiled stays live; the refused file is shown with its error."""
    from apps.bots.runtime import bot_script_program

    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        bot = Bot.objects.get(name="shop")
        live = bot_script_program(bot, "start").source_hash
        report = _deploy({**_shop_files(), "shop.gbdialog/start.bas": BROKEN})
        key = "shop.gbai/shop.gbdialog/start.bas"
        assert "the previous version keeps running" in report.errors[key]
        script = BotScript.objects.get(bot=bot, name="start")
        assert script.ok and script.source == START.decode() and script.rejected_source == BROKEN.decode()
        assert script.rejected_errors[0]["message"]
        assert bot_script_program(Bot.objects.get(pk=bot.pk), "start").source_hash == live  # still served
        tenant_drive().write(key, START)  # put back as it was: processed again, the refused version gone
        assert drive_scan().processed == [key]
        script.refresh_from_db()
        assert (script.source, script.rejected_source, script.rejected_errors) == (START.decode(), "", [])
        page_fixed = b'TALK "fixed"\n'
        tenant_drive().write(key, page_fixed)
        assert drive_scan().processed == [key]
        script.refresh_from_db()
        assert (script.source, script.rejected_source, script.rejected_errors) == (page_fixed.decode(), "", [])


def test_broken_config_keeps_the_previous_configuration(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        tenant_drive().write("shop.gbai/shop.gbot/config.csv", b"bot-name,New\nthis line has no comma\n")
        report = drive_scan()
        assert "line 2" in report.failed["shop.gbai/shop.gbot/config.csv"]
        assert BotConfig.objects.get(key="bot-name").value == "Shop"


def test_a_backup_of_the_settings_is_not_the_settings_and_removing_it_keeps_them(canary_tenants, storage):
    """Upstream takes any .gbot/ file ending in config.csv as the bot's settings: `old-config.csv` (sorted after
    `config.csv`) silently replaced them, and deleting the backup cleared them for good."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.write("shop.gbai/shop.gbot/old-config.csv", b"name,value\nbot-name,Old\n")
        drive.write("shop.gbai/shop.gbot/system-prompt.md", b"an old prompt")
        drive_scan()
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert Bot.objects.get(name="shop").system_prompt == ""
        drive.delete("shop.gbai/shop.gbot/old-config.csv")
        drive.delete("shop.gbai/shop.gbot/system-prompt.md")
        drive_scan()
        assert BotConfig.objects.get(key="bot-name").value == "Shop"


def test_a_redeploy_may_turn_a_folder_into_a_file_and_a_file_into_a_folder(canary_tenants, storage):
    """A local drive cannot hold `x` and `x/...` at once: the deploy wrote the new file over the old folder and
    failed half way (IsADirectoryError)."""
    with schema_context(canary_tenants.a.schema_name):
        first = _deploy({**_shop_files(), "shop.gbtheme/logo/small.png": b"png", "shop.gbtheme/banner": b"v1"})
        assert first.errors == {}
        second = _deploy({**_shop_files(), "shop.gbtheme/logo": b"now a file", "shop.gbtheme/banner/wide.png": b"v2"})
        assert second.errors == {}
        drive = tenant_drive()
        assert drive.read("shop.gbai/shop.gbtheme/logo") == b"now a file"
        assert drive.read("shop.gbai/shop.gbtheme/banner/wide.png") == b"v2"
        keys = {entry.key for entry in drive.list("shop.gbai/shop.gbtheme/")}
        assert keys == {"shop.gbai/shop.gbtheme/logo", "shop.gbai/shop.gbtheme/banner/wide.png",
                        "shop.gbai/shop.gbtheme/style.css"}


def test_settings_cleared_with_a_removed_backup_are_applied_again_even_after_a_failed_attempt(
        canary_tenants, storage, monkeypatch):
    """Removing one settings file clears the bot's settings and re-applies the other in the same scan; if that
    re-apply failed, the other file still looked processed and the bot stayed without settings."""
    from apps.drive import services as drive_services

    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.write("shop.gbai/shop.gbot/Config.csv", b"name,value\nbot-name,Twin\n")  # a case twin: a config too
        drive_scan()
        real = "shop.gbai/shop.gbot/config.csv"
        process = drive_services._process

        def fail_the_real_one(drive_, bot, obj, report, **kwargs):
            if obj.key == real:
                raise RuntimeError("drive unreachable")
            return process(drive_, bot, obj, report, **kwargs)

        monkeypatch.setattr(drive_services, "_process", fail_the_real_one)
        drive.delete("shop.gbai/shop.gbot/Config.csv")
        with pytest.raises(RuntimeError):
            drive_scan()
        monkeypatch.setattr(drive_services, "_process", process)
        assert DriveObject.objects.get(key=real).processed_etag == ""  # marked with the clear, in one commit
        drive_scan()
        assert BotConfig.objects.get(key="bot-name").value == "Shop"


def test_files_recorded_under_an_older_rule_are_reclassified_and_the_settings_applied_again(canary_tenants,
                                                                                           storage):
    """A drive recorded before the rule changed: the backup was the bot's settings. The next scan undoes it and
    applies the real config.csv again, in the same scan."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        tenant_drive().write("shop.gbai/shop.gbot/old-config.csv", b"name,value\nbot-name,Old\n")
        drive_scan()
        stray = DriveObject.objects.get(key="shop.gbai/shop.gbot/old-config.csv")
        # As the old rule recorded it: kind config, processed, and its values applied.
        DriveObject.objects.filter(pk=stray.pk).update(kind="config")
        BotConfig.objects.filter(key="bot-name").update(value="Old")
        report = drive_scan()
        assert DriveObject.objects.get(pk=stray.pk).kind == "other"
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert "shop.gbai/shop.gbot/config.csv" in report.processed


def test_a_malformed_data_table_is_reported_with_its_line_and_keeps_the_previous_rows(canary_tenants, storage):
    """A CSV the csv module refuses (here a field past its 128 KiB limit) was reported as "internal error"."""
    from apps.bots.models import BotTableRow

    with schema_context(canary_tenants.a.schema_name):
        _deploy({**_shop_files(), "shop.gbdata/products.csv": b"name,price\nrose,3\n"})
        key = "shop.gbai/shop.gbdata/products.csv"
        tenant_drive().write(key, b'name,price\nrose,3\ntulip,"' + b"x" * 200_000 + b'"\n')
        report = drive_scan()
        assert "products.csv line 3: field larger than field limit" in report.failed[key]
        assert list(BotTableRow.objects.filter(table="products.csv").values_list("data", flat=True)) == [
            {"name": "rose", "price": "3"}]


def test_two_tenants_with_a_bot_of_the_same_name_never_meet(canary_tenants, storage):
    a, b = canary_tenants.a, canary_tenants.b
    files_a = _shop_files()
    files_a["shop.gbot/config.csv"] = b"bot-name," + a.canary.encode() + b"\n"
    files_b = {"shop.gbdialog/start.bas": b'TALK "' + b.canary.encode() + b'"\n',
               "shop.gbot/config.csv": b"bot-name," + b.canary.encode() + b"\n"}
    with schema_context(a.schema_name):
        _deploy(files_a)
    with schema_context(b.schema_name):
        _deploy(files_b)
        assert set(BotScript.objects.values_list("name", flat=True)) == {"start"}
        assert BotConfig.objects.get(key="bot-name").value == b.canary
        keys = {entry.key for entry in tenant_drive().list()}
        assert keys == {"shop.gbai/shop.gbdialog/start.bas", "shop.gbai/shop.gbot/config.csv"}
        assert not Document.objects.exists()
    with schema_context(a.schema_name):
        assert BotConfig.objects.get(key="bot-name").value == a.canary
        assert b.canary not in BotScript.objects.get(name="start").source
        assert len(list(tenant_drive().list())) == 6


def test_redeploy_replaces_the_package(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        report = _deploy({"shop.gbdialog/start.bas": START})
        assert report.files_removed == 5
        assert list(BotScript.objects.values_list("name", flat=True)) == ["start"]
        assert not Document.objects.exists() and not BotConfig.objects.exists()


def test_schedules_follow_their_script(canary_tenants, storage):
    from apps.bots.models import BotSchedule

    with schema_context(canary_tenants.a.schema_name):
        files = _shop_files()
        files["shop.gbot/config.csv"] = b"timezone,America/Sao_Paulo\n"
        files["shop.gbdialog/report.bas"] = b'SET SCHEDULE "every day at 9am"\nTALK "daily report"\n'
        _deploy(files)
        schedule = BotSchedule.objects.get()
        assert schedule.cron == "0 9 * * *" and schedule.script.name == "report"
        assert schedule.timezone == "America/Sao_Paulo"
        local = schedule.next_run_at.astimezone(zoneinfo.ZoneInfo("America/Sao_Paulo"))
        assert (local.hour, local.minute) == (9, 0)
        drive = tenant_drive()
        drive.write("shop.gbai/shop.gbot/config.csv", b"timezone,Asia/Tokyo\n")
        drive_scan()
        local = BotSchedule.objects.get().next_run_at.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
        assert (local.hour, local.minute) == (9, 0)
        drive.write("shop.gbai/shop.gbdialog/report.bas", b'SET SCHEDULE "*/15 * * * *"\nTALK "often"\n')
        drive_scan()
        assert list(BotSchedule.objects.values_list("cron", flat=True)) == ["*/15 * * * *"]
        drive.write("shop.gbai/shop.gbdialog/report.bas", b'TALK "no schedule any more"\n')
        drive_scan()
        assert not BotSchedule.objects.exists()
        drive.write("shop.gbai/shop.gbdialog/report.bas", b'SET SCHEDULE "0 6 * * *"\n')
        drive_scan()
        drive.delete("shop.gbai/shop.gbdialog/report.bas")
        drive_scan()
        assert not BotSchedule.objects.exists()


def test_files_a_script_writes_are_never_processed_as_package_files(canary_tenants, storage):
    from apps.basic.vm import run_source
    from apps.bots.host import BotHost

    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        bot = Bot.objects.get(name="shop")
        source = (
            'WRITE "TALK 1" TO "evil.bas"\nWRITE "bot-name,Pwned" TO "x.gbot/config.csv"\n'
            'WRITE "secret" TO "a.gbkb/k/doc.txt"\n'
        )
        assert run_source(source, BotHost(bot)).status == "done"
        report = drive_scan()
        assert report.failed == {}
        assert set(BotScript.objects.values_list("name", flat=True)) == {"start", "book-visit"}
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert Document.objects.count() == 2
        # A redeploy replaces the package but keeps what scripts wrote.
        _deploy(_shop_files())
        assert tenant_drive().exists("shop.gbai/shop.gbdrive/evil.bas")


def test_a_bot_scoped_scan_keeps_a_differently_cased_package_folder(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        drive = tenant_drive()
        drive.write("Shop.gbai/shop.gbdialog/start.bas", START)
        drive_scan()
        assert BotScript.objects.filter(name="start").exists()
        drive_scan(bot_name="shop")  # lists `shop.gbai/` only
        assert BotScript.objects.filter(name="start").exists()


@pytest.mark.parametrize("target", ["shop.gbai/data.gbdata/products.csv", "shop.gbai/Shop.gbdata/products.csv"],
                         ids=["other-folder", "folder-case"])
def test_a_data_file_moved_within_one_scan_keeps_its_table(canary_tenants, storage, target):
    """Changed files were processed before removals: the moved file was imported, then the removal of its old
    path (the same table: tables are named by the file name) emptied the table."""
    from apps.bots.models import BotTableRow

    with schema_context(canary_tenants.a.schema_name):
        rows = b"name,price\nrose,3\ntulip,4\n"
        _deploy({**_shop_files(), "shop.gbdata/products.csv": rows})
        drive = tenant_drive()
        drive.delete("shop.gbai/shop.gbdata/products.csv")
        drive.write(target, rows)
        report = drive_scan()
        assert report.failed == {} and report.removed == ["shop.gbai/shop.gbdata/products.csv"]
        assert sorted(r["name"] for r in BotTableRow.objects.filter(table="products.csv").values_list(
            "data", flat=True)) == ["rose", "tulip"]


def test_a_script_moved_to_another_folder_within_one_scan_stays_deployed(canary_tenants, storage):
    """The moved start.bas was refused ("a script named 'start' already exists") and the removal of the old
    path then left the bot without a start script."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.delete("shop.gbai/shop.gbdialog/start.bas")
        drive.write("shop.gbai/shop.gbdialog/main/start.bas", START)
        report = drive_scan()
        assert report.failed == {}
        script = BotScript.objects.get(name="start")
        assert script.path == "shop.gbai/shop.gbdialog/main/start.bas" and script.ok
        assert drive_scan().processed == []  # and nothing is left to retry


def test_a_settings_file_moved_in_case_within_one_scan_keeps_the_settings(canary_tenants, storage):
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.delete("shop.gbai/shop.gbot/config.csv")
        drive.write("shop.gbai/Shop.gbot/config.csv", CONFIG)
        report = drive_scan()
        assert report.failed == {}
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert drive_scan().processed == []


@pytest.mark.parametrize(("path", "kind"), [("shop.gbdialog/start.bas", "bas"), ("shop.gbot/config.csv", "config"),
                                            ("shop.gbot/PROMPT.md", "prompt"), ("shop.gbdata/products.csv", "data")])
def test_a_file_past_its_kinds_limit_is_refused_from_its_size_and_changes_nothing(canary_tenants, storage, path,
                                                                                 kind):
    """The DriveMonitor read whole objects (limits, where any, were checked after the read; prompts and .gbdata
    tables had none): a 3 GB CSV put in the bucket was downloaded into the worker, once per retry."""
    from apps.bots.models import BotTableRow
    from apps.drive import services as drive_services

    with schema_context(canary_tenants.a.schema_name):
        _deploy({**_shop_files(), "shop.gbot/PROMPT.md": b"Be kind.", "shop.gbdata/products.csv": b"name\nrose\n"})

        def state():
            return (sorted(BotScript.objects.values_list("path", "source", "rejected_source")),
                    sorted(BotConfig.objects.values_list("key", "value")), Bot.objects.get(name="shop").system_prompt,
                    sorted(str(d) for d in BotTableRow.objects.values_list("data", flat=True)))

        before = state()
        limit = drive_services.KIND_MAX_BYTES[kind]
        key = f"shop.gbai/{path}"
        reads = []
        drive = tenant_drive()
        tenant_drive().write(key, b"#" * (limit + 1))
        real_read = type(drive).read

        def recorded(self, key_, *, max_bytes=None):
            reads.append(max_bytes)
            return real_read(self, key_, max_bytes=max_bytes)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(type(drive), "read", recorded)
            report = drive_scan()
        assert report.failed[key] == (f"{key}: {limit + 1} bytes; the limit for {drive_services.KIND_LABELS[kind]} "
                                      f"is {limit} bytes (not read)")
        assert reads == [limit]
        assert state() == before


def test_a_copy_of_an_old_package_inside_the_package_is_not_the_bots_settings(canary_tenants, storage):
    """Any `*.gbot/config.csv` at any depth was the bot's settings: `old/shop.gbot/config.csv` replaced them."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.write("shop.gbai/old/shop.gbot/config.csv", b"name,value\nbot-name,Old\n")
        drive.write("shop.gbai/old/shop.gbot/PROMPT.md", b"an old prompt")
        report = drive_scan()
        assert report.failed == {}
        assert DriveObject.objects.get(key="shop.gbai/old/shop.gbot/config.csv").kind == "other"
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert Bot.objects.get(name="shop").system_prompt == ""


@pytest.mark.parametrize(("content", "error"), [
    (b"Id,Name,Id\n1,rose,2\n", "products.csv line 1: column 3 of the header repeats 'Id' (column 1)"),
    (b"Id, ,Name\n1,x,rose\n", "products.csv line 1: column 2 of the header has no name"),
    (b"Id,Name,\n1,rose,\n2,tulip,red\n", "products.csv line 3: a value in column 3, which has no name"),
    (b'name,notes\nrose,"grows\nin spring"\ntulip,red,extra\n', "products.csv line 4: more values than header"),
    (b'name,notes\nrose,"two\nlines"\ntulip,"' + b"x" * 200_000 + b'"\n',
     "products.csv line 4: field larger than field limit"),
], ids=["repeated-header", "blank-header", "value-under-a-trailing-blank-header", "multi-line-record",
        "multi-line-then-csv-error"])
def test_a_data_table_with_an_ambiguous_header_or_a_bad_record_names_the_right_line(canary_tenants, storage,
                                                                                    content, error):
    """DictReader kept the last of two `Id` columns and dropped blank-named ones silently; error lines counted
    records, wrong once a quoted field spans lines."""
    from apps.bots.models import BotTableRow

    with schema_context(canary_tenants.a.schema_name):
        _deploy({**_shop_files(), "shop.gbdata/products.csv": b"name,price\nrose,3\n"})
        key = "shop.gbai/shop.gbdata/products.csv"
        tenant_drive().write(key, content)
        report = drive_scan()
        assert error in report.failed[key], report.failed
        assert list(BotTableRow.objects.filter(table="products.csv").values_list("data", flat=True)) == [
            {"name": "rose", "price": "3"}]


def test_a_trailing_empty_column_of_a_spreadsheet_export_is_left_out(canary_tenants, storage):
    """Spreadsheets export a stray formatted column as `Id,Name,` with empty cells: not a column to refuse."""
    from apps.bots.models import BotTableRow

    with schema_context(canary_tenants.a.schema_name):
        _deploy({**_shop_files(), "shop.gbdata/products.csv": b"name,price,,\nrose,3,,\ntulip,2\n"})
        rows = BotTableRow.objects.filter(table="products.csv").order_by("pk").values_list("data", flat=True)
        assert list(rows) == [{"name": "rose", "price": "3"}, {"name": "tulip", "price": "2"}]


def test_a_data_table_reads_multi_line_fields_and_short_rows(canary_tenants, storage):
    from apps.bots.models import BotTableRow

    with schema_context(canary_tenants.a.schema_name):
        _deploy({**_shop_files(), "shop.gbdata/products.csv": b'\nname, notes\nrose,"two\nlines"\n\ntulip\n'})
        rows = BotTableRow.objects.filter(table="products.csv").order_by("pk").values_list("data", flat=True)
        assert list(rows) == [{"name": "rose", "notes": "two\nlines"}, {"name": "tulip", "notes": None}]


def test_a_same_size_rewrite_in_the_mtime_tick_of_a_racily_hashed_file_is_not_missed(canary_tenants, local_storage,
                                                                                     monkeypatch):
    """The scan hashed a file modified 1.5 s earlier (inside the racy window) and stored its (size, mtime) as the
    hint; the file was then rewritten, same size, in the same mtime tick. Every later scan, once the window had
    passed, reused the old ETag: the change was never processed.

    The window is widened for the test (the scan must hash the file inside it, however slow the machine), then
    narrowed to leave the file's tick outside it, as time passing would."""
    from apps.bots.models import BotTableRow
    from apps.drive import backends

    window_ns = 600 * 10**9
    monkeypatch.setattr(backends, "HINT_RACY_WINDOW_NS", window_ns)
    with schema_context(canary_tenants.a.schema_name):
        drive = tenant_drive()
        key = "shop.gbai/shop.gbdata/products.csv"
        path = drive.root / key
        drive.write(key, b"name\nrose\n")
        tick = time.time_ns() - window_ns // 4  # well inside the window when the scan hashes it
        os.utime(path, ns=(tick, tick))
        drive_scan()
        assert [r["name"] for r in BotTableRow.objects.values_list("data", flat=True)] == ["rose"]
        path.write_bytes(b"name\nlily\n")  # same size, same mtime tick
        os.utime(path, ns=(tick, tick))
        monkeypatch.setattr(backends, "HINT_RACY_WINDOW_NS", window_ns // 8)  # the window has passed the tick
        assert drive_scan().processed == [key]
        assert [r["name"] for r in BotTableRow.objects.values_list("data", flat=True)] == ["lily"]


def test_a_copied_old_gbai_package_inside_the_package_is_not_the_bots_settings(canary_tenants, storage):
    """`shop.gbai/old.gbai/shop.gbot/config.csv` lost its nested `old.gbai/` level and replaced the settings."""
    with schema_context(canary_tenants.a.schema_name):
        _deploy(_shop_files())
        drive = tenant_drive()
        drive.write("shop.gbai/old.gbai/shop.gbot/config.csv", b"name,value\nbot-name,Old\n")
        drive.write("shop.gbai/old.gbai/shop.gbot/PROMPT.md", b"an old prompt")
        report = drive_scan()
        assert report.failed == {}
        assert DriveObject.objects.get(key="shop.gbai/old.gbai/shop.gbot/config.csv").kind == "other"
        assert BotConfig.objects.get(key="bot-name").value == "Shop"
        assert Bot.objects.get(name="shop").system_prompt == ""


def _daily_schedules(start: int, count: int) -> bytes:
    """`count` different daily times (minute i % 60 of hour i // 60), each a SET SCHEDULE line."""
    return "".join(f'SET SCHEDULE "{i % 60} {i // 60} * * *"\n' for i in range(start, start + count)).encode()


def test_schedules_moved_between_scripts_in_one_scan_deploy_whatever_the_order(canary_tenants, storage):
    """The bot's schedule total counted the other scripts' schedules as they were before the scan: a.bas 40 -> 60
    with b.bas 60 -> 40 was refused (a.bas is processed first and b.bas still held 60), the other way round not."""
    from apps.bots.models import BotSchedule

    def counts() -> dict[str, int]:
        return {name: BotSchedule.objects.filter(script__bot__name="shop", script__name=name).count()
                for name in ("a", "b")}

    with schema_context(canary_tenants.a.schema_name):
        report = _deploy({"shop.gbdialog/a.bas": _daily_schedules(0, 40),
                          "shop.gbdialog/b.bas": _daily_schedules(40, 60)})
        assert report.errors == {}
        assert counts() == {"a": 40, "b": 60}
        report = _deploy({"shop.gbdialog/a.bas": _daily_schedules(0, 60),
                          "shop.gbdialog/b.bas": _daily_schedules(60, 40)})
        assert report.errors == {}
        assert counts() == {"a": 60, "b": 40}
        # 60 + 41 is still one too many: b.bas is refused (after a retry) and keeps its 40.
        drive = tenant_drive()
        drive.write("shop.gbai/shop.gbdialog/b.bas", _daily_schedules(60, 41))
        report = drive_scan()
        assert list(report.failed) == ["shop.gbai/shop.gbdialog/b.bas"]
        assert "the bot would have 101; a bot may have at most 100" in report.failed["shop.gbai/shop.gbdialog/b.bas"]
        assert counts() == {"a": 60, "b": 40}
