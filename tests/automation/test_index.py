"""The public schedule index follows the tenants' schedule rows: what the DriveMonitor compiles, changes,
breaks or removes is what the tick sees, and a deleted tenant leaves nothing behind."""

from __future__ import annotations

import zoneinfo

import pytest
from django_tenants.utils import get_public_schema_name, schema_context

from apps.bots.models import Bot, BotSchedule
from apps.drive.services import drive_scan
from apps.drive.storage import tenant_drive
from apps.tenants.models import ScheduleIndex
from apps.tenants.services import tenant_create, tenant_delete
from tests.automation.conftest import deploy, outside_test_transaction

pytestmark = pytest.mark.django_db


def _index(schema: str) -> list[ScheduleIndex]:
    with schema_context(get_public_schema_name()):
        return list(ScheduleIndex.objects.filter(tenant__schema_name=schema).order_by("schedule_id"))


def _schedules(schema: str) -> list[BotSchedule]:
    with schema_context(schema):
        return list(BotSchedule.objects.order_by("pk"))


@outside_test_transaction
def test_the_drivemonitor_registers_changes_and_drops_a_schedule_in_the_index(canary_tenants, local_storage):
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.get()
        key = f"{bot.name}.gbai/{bot.name}.gbdialog/automation-test/at-report.bas"
        drive = tenant_drive()
        drive.write(key, b'SET SCHEDULE "every minute"\nTALK "x"\n')
        drive_scan(bot_name=bot.name)
    [schedule], [row] = _schedules(schema), _index(schema)
    assert (row.schedule_id, row.cron, row.next_run_at, row.enabled) == (schedule.pk, "* * * * *",
                                                                         schedule.next_run_at, True)

    with schema_context(schema):  # the script changes: its schedule is recomputed
        drive.write(key, b'SET SCHEDULE "every day at 9am"\nTALK "x"\n')
        drive_scan(bot_name=bot.name)
    [changed], [row] = _schedules(schema), _index(schema)
    assert changed.pk != schedule.pk and changed.cron == "0 9 * * *"
    assert (row.schedule_id, row.cron, row.next_run_at) == (changed.pk, "0 9 * * *", changed.next_run_at)

    with schema_context(schema):  # a compile error: the version that compiled keeps running, on its schedule
        drive.write(key, b'SET SCHEDULE "every 5 minutes"\nIF x THEN\n')
        drive_scan(bot_name=bot.name)
    assert [r.cron for r in _index(schema)] == ["0 9 * * *"]

    with schema_context(schema):
        drive.write(key, b'SET SCHEDULE "every 5 minutes"\nTALK "x"\n')
        drive_scan(bot_name=bot.name)
    assert [r.cron for r in _index(schema)] == ["*/5 * * * *"]
    with schema_context(schema):  # the file is deleted: the schedule goes with the script
        drive.delete(key)
        drive_scan(bot_name=bot.name)
    assert _schedules(schema) == [] and _index(schema) == []


@outside_test_transaction
def test_a_schedule_line_removed_from_a_script_leaves_the_index(canary_tenants):
    schema = canary_tenants.b.schema_name
    deploy(schema, "at-two", 'SET SCHEDULE "every minute"\nSET SCHEDULE "every hour"\nTALK "x"\n')
    assert sorted(r.cron for r in _index(schema)) == ["* * * * *", "0 * * * *"]
    deploy(schema, "at-two", 'SET SCHEDULE "every hour"\nTALK "x"\n')
    assert [r.cron for r in _index(schema)] == ["0 * * * *"]
    assert [r.schedule_id for r in _index(schema)] == [s.pk for s in _schedules(schema)]


@outside_test_transaction
def test_the_bot_timezone_is_copied_to_the_index(canary_tenants):
    from apps.bots import services as bot_services

    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.get()
        bot_services.config_sync(bot=bot, data=b"name,value\ntimezone,America/Sao_Paulo\n")
    try:
        deploy(schema, "at-tz", 'SET SCHEDULE "every day at 9am"\nTALK "x"\n')
        [row] = _index(schema)
        assert row.timezone == "America/Sao_Paulo"
        assert row.next_run_at.astimezone(zoneinfo.ZoneInfo("America/Sao_Paulo")).hour == 9
    finally:
        with schema_context(schema):
            bot_services.config_clear(bot=bot)


@outside_test_transaction
def test_a_deleted_tenant_leaves_no_index_rows(canary_tenants, local_storage):
    tenant, _ = tenant_create(name="Automation Gone", domain="automation-gone.test.localhost", admin_username=None)
    with schema_context(tenant.schema_name):
        Bot.objects.create(name="gone")
    deploy(tenant.schema_name, "at-gone", 'SET SCHEDULE "every minute"\nTALK "x"\n')
    assert len(_index(tenant.schema_name)) == 1
    tenant_delete(schema_name=tenant.schema_name)
    with schema_context(get_public_schema_name()):
        assert not ScheduleIndex.objects.filter(tenant_id=tenant.pk).exists()


def _daily_lines(start: int, count: int) -> str:
    """`count` different daily times (minute i % 60 of hour i // 60), each a SET SCHEDULE line."""
    return "".join(f'SET SCHEDULE "{i % 60} {i // 60} * * *"\n' for i in range(start, start + count))


def test_a_bot_over_the_schedule_limit_is_refused_and_nothing_is_written(canary_tenants):
    from apps.bots import services as bot_services

    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.create(name="at-many")
        path = "at-many.gbai/at-many.gbdialog/{}.bas"
        # One script past the limit: a compile error at the 101st line; the script runs on no schedule.
        script = bot_services.script_sync(bot=bot, path=path.format("one"), data=_daily_lines(0, 101).encode())
        assert script.errors[0]["line"] == 101
        assert "at most 100 different SET SCHEDULE times" in script.errors[0]["message"]
        assert not BotSchedule.objects.filter(bot=bot).exists()
        # The same cron on 40,000 lines is one schedule.
        script = bot_services.script_sync(bot=bot, path=path.format("one"),
                                          data=b'SET SCHEDULE "* * * * *"\n' * 40_000 + b'TALK "x"\n')
        assert script.ok and list(BotSchedule.objects.filter(bot=bot).values_list("cron", flat=True)) == ["* * * * *"]
        bot_services.script_remove(bot=bot, path=path.format("one"))
        # Two scripts of one bot: 60 fit, 41 more would make 101.
        bot_services.script_sync(bot=bot, path=path.format("first"), data=_daily_lines(0, 60).encode())
        with pytest.raises(bot_services.BotFileError) as info:
            bot_services.script_sync(bot=bot, path=path.format("second"), data=_daily_lines(60, 41).encode())
        assert str(info.value) == (
            "at-many.gbai/at-many.gbdialog/second.bas: too many schedules: with its 41 SET SCHEDULE times the bot "
            "would have 101; a bot may have at most 100 (SCHEDULES_MAX_PER_BOT). Not deployed: the previous "
            "version, if any, keeps running")
        assert BotSchedule.objects.filter(bot=bot).count() == 60
        assert not bot.scripts.filter(name="second").exists()
        # 40 more fit exactly.
        assert bot_services.script_sync(bot=bot, path=path.format("second"), data=_daily_lines(60, 40).encode()).ok
        ids = set(BotSchedule.objects.filter(bot=bot).values_list("pk", flat=True))
    assert len(ids) == 100 and {row.schedule_id for row in _index(schema)} >= ids


def test_a_tenant_over_its_schedule_limit_across_bots_is_refused_in_scan_order(canary_tenants, local_storage):
    """The per-bot limit bounded nothing per tenant: the DriveMonitor creates a bot for every `<bot>.gbai/`
    folder, and six full bots registered 600 every-minute schedules on the queue all tenants share."""
    from apps.bots import services as bot_services

    limit = bot_services.SCHEDULES_MAX_PER_TENANT
    schema = canary_tenants.b.schema_name
    every_minute = "".join(f'SET SCHEDULE "{m} * * * *"\n' for m in range(60)) + "".join(
        f'SET SCHEDULE "{m} 9 * * *"\n' for m in range(40))  # 100 schedules: a full bot
    with schema_context(schema):
        assert BotSchedule.objects.count() == 0
        drive = tenant_drive()
        bots = [f"at-fleet-{i}" for i in range(limit // bot_services.SCHEDULES_MAX_PER_BOT + 1)]
        for name in bots:
            drive.write(f"{name}.gbai/{name}.gbdialog/jobs.bas", (every_minute + 'TALK "x"\n').encode())
        report = drive_scan()
        refused = f"{bots[-1]}.gbai/{bots[-1]}.gbdialog/jobs.bas"
        assert report.failed == {refused: (
            f"{refused}: too many schedules: with its 100 SET SCHEDULE times the tenant's bots would have "
            f"{limit + 100}; a tenant may have at most {limit} over all its bots (SCHEDULES_MAX_PER_TENANT). "
            f"Not deployed: the previous version, if any, keeps running")}
        # The scan's order (by key) decides which bots' schedules are kept, the same on every scan.
        kept = BotSchedule.objects.values_list("bot__name", flat=True)
        assert BotSchedule.objects.count() == limit and set(kept) == set(bots[:-1])
        assert not Bot.objects.get(name=bots[-1]).scripts.exists()

        # A change that adds none is not refused at the limit (an edit of a full bot's script)...
        first = Bot.objects.get(name=bots[0])
        edited = bot_services.script_sync(bot=first, path=f"{bots[0]}.gbai/{bots[0]}.gbdialog/jobs.bas",
                                          data=(every_minute + 'TALK "edited"\n').encode())
        assert edited.ok and BotSchedule.objects.count() == limit
        # ...one that adds is, with one schedule in a bot of its own too.
        extra = Bot.objects.create(name="at-fleet-extra")
        with pytest.raises(bot_services.ScheduleLimitError, match="a tenant may have at most"):
            bot_services.script_sync(bot=extra, path="at-fleet-extra.gbai/at-fleet-extra.gbdialog/one.bas",
                                     data=b'SET SCHEDULE "0 3 * * *"\nTALK "x"\n')
        # Room made in one bot is room for another: the refused file goes in at the next scan.
        drive.delete(f"{bots[0]}.gbai/{bots[0]}.gbdialog/jobs.bas")
        report = drive_scan()
        assert report.failed == {} and refused in report.processed
        assert BotSchedule.objects.count() == limit
    assert len(_index(schema)) == limit
