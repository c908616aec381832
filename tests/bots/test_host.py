"""Scripts run against a bot's own data: config, bot memory and bot tables, per tenant and per bot."""

import threading

import pytest
from django.db import connections
from django_tenants.utils import schema_context

from apps.basic.vm import run_source
from apps.bots import host as host_module
from apps.bots.host import FIND_LIMIT, BotHost
from apps.bots.models import Bot, BotConfig, BotTableRow

pytestmark = pytest.mark.django_db


def _run(bot: Bot, source: str):
    host = BotHost(bot)
    result = run_source(source, host)
    return result, host


def test_bot_memory_is_shared_by_runs_of_one_bot_and_separate_per_bot_and_tenant(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        shop, other = Bot.objects.create(name="shop"), Bot.objects.create(name="other")
        _run(shop, 'SET BOT MEMORY "greeting", "' + canary_tenants.a.canary + '"')
        result, _ = _run(shop, 'x = GET BOT MEMORY("greeting")\nRETURN x')
        assert result.value == canary_tenants.a.canary
        result, _ = _run(other, 'x = GET BOT MEMORY("greeting")\nRETURN x')
        assert result.value == ""
    with schema_context(canary_tenants.b.schema_name):
        shop_b = Bot.objects.create(name="shop")
        result, _ = _run(shop_b, 'x = GET BOT MEMORY("greeting")\nRETURN x')
        assert result.value == ""


def test_tables_insert_find_update_delete(canary_tenants):
    # SAVE's id is a text: INSERT's ids are row numbers (like a serial column), and after a transactional test
    # resets the sequences a numeric id here could be one of them (SAVE would then update that row, as upstream).
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        source = """
INSERT "customers", #{name: "Ana", city: "Rio"}
INSERT "customers", #{name: "Bo", city: "Oslo"}
SAVE "customers", "cy-1", #{name: "Cy", city: "Rio"}
rio = FIND "customers", "city=Rio"
n = UPDATE "customers", "name=Bo", #{city: "Rio"}
gone = DELETE "customers", "name=Ana"
RETURN #{rio: UBOUND(rio) + 1, updated: n, deleted: gone}
"""
        result, _ = _run(bot, source)
        assert result.status == "done", result.error
        assert result.value == {"rio": 2, "updated": 1, "deleted": 1}
        stored = BotTableRow.objects.filter(bot=bot, table="customers").values_list("data", flat=True)
        rows = sorted(r["name"] for r in stored)
        assert rows == ["Bo", "Cy"]


def test_find_returns_at_most_the_upstream_limit(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        BotTableRow.objects.bulk_create(BotTableRow(bot=bot, table="t", data={"k": "v", "i": i}) for i in range(25))
        assert len(BotHost(bot).find("t", "k=v")) == FIND_LIMIT


def test_bad_filter_is_a_script_error_with_its_line(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result, _ = _run(bot, 'x = 1\nrows = FIND "t", "this is not a filter"\n')
        assert result.status == "error"
        assert result.error["line"] == 2 and "COLUMN=VALUE" in result.error["message"]


def test_config_reaches_scripts_in_both_key_dialects(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        BotConfig.objects.create(bot=bot, key="Bot Name", value="Shop Bot", line=2)
        host = BotHost(bot)
        assert host.get_config("bot-name") == "Shop Bot"
        assert host.get_config("Bot Name") == "Shop Bot"
        assert host.get_config("llm-model") == ""


def test_files_live_in_the_bot_drive_and_cannot_escape_it(canary_tenants, local_storage):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result, _ = _run(bot, 'WRITE "hello" TO "notes/a.txt"\nx = READ "notes/a.txt"\nRETURN x')
        assert result.value == "hello", result.error
        tenant_root = local_storage / "tenants" / canary_tenants.a.schema_name
        assert (tenant_root / "shop.gbai/shop.gbdrive/notes/a.txt").exists()
        result, _ = _run(bot, 'x = READ "../../other.gbai/secret.txt"\nRETURN x')
        assert result.status == "error"


def test_param_config_values_reach_scripts_and_tool_arguments_override_them(canary_tenants):
    from apps.bots.runtime import ScriptUnavailable, script_start
    from apps.bots.services import config_sync, script_sync

    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        config_sync(bot=bot, data=b"param-maxGuests,4\nparam-city,Rio\nbot-name,Shop\n")
        script_sync(bot=bot, path="shop.gbai/shop.gbdialog/limits.bas", data=b"RETURN #{m: maxguests, c: city}\n")
        assert script_start(bot=bot, name="limits", host=BotHost(bot)).value == {"m": 4, "c": "Rio"}
        result = script_start(bot=bot, name="limits", host=BotHost(bot), args={"city": "Oslo"})
        assert result.value == {"m": 4, "c": "Oslo"}
        script_sync(bot=bot, path="shop.gbai/shop.gbdialog/broken.bas", data=b"IF x THEN\n")
        with pytest.raises(ScriptUnavailable, match="compile error at line"):
            script_start(bot=bot, name="broken", host=BotHost(bot))
        with pytest.raises(ScriptUnavailable, match="no script named"):
            script_start(bot=bot, name="missing", host=BotHost(bot))


def test_save_upserts_by_id_whether_it_reads_as_a_number_or_a_text(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result, _ = _run(bot, 'SAVE "stock", "sku-9", #{n: 1}\nSAVE "stock", "sku-9", #{n: 2}\n'
                              'SAVE "stock", 41, #{n: 3}\nSAVE "stock", "41", #{n: 4}\nSAVE "stock", #{n: 5}')
        assert result.status == "done", result.error
        rows = sorted(BotTableRow.objects.filter(bot=bot, table="stock").values_list("data", flat=True),
                      key=lambda r: r["n"])
        assert rows == [{"id": "sku-9", "n": 2}, {"id": "41", "n": 4}, {"n": 5}]


def test_a_nul_character_in_a_row_is_a_clear_script_error_and_a_literal_backslash_is_kept(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="nulrows")
        result, _ = _run(bot, 'x = JSON PARSE "\\"a\\\\u0000b\\""\nSAVE "t", "k1", #{v: x}')
        assert result.status == "error" and "NUL character" in result.error["message"]
        assert not BotTableRow.objects.filter(bot=bot).exists()
        # The six characters \u0000 typed as text are no NUL: kept as they are.
        result, _ = _run(bot, 'SAVE "t", "k2", #{v: "a\\u0000b"}')
        assert result.status == "done", result.error
        assert BotTableRow.objects.get(bot=bot).data["v"] == "a\\u0000b"


def test_save_finds_its_row_whatever_the_kind_of_id(canary_tenants):
    """The row is found by its id as stored: floats as PostgreSQL prints its numerics (no exponent, no
    negative zero), structured ids by JSON equality. Each pair below is one row, updated by the second SAVE."""
    pairs = [(1e16, 10_000_000_000_000_000), (10_000_000_000_000_000, 1e16), (1e-05, 0.00001), (-0.0, 0.0),
             (2.5, "2.5"), (True, "true"), ({"b": 1, "a": [1, 2]}, {"a": [1, 2], "b": 1}), ([1, "x"], [1, "x"])]
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="ids")
        host = BotHost(bot)
        for n, (first, second) in enumerate(pairs):
            host.save(f"t{n}", [first, {"v": 1}])
            host.save(f"t{n}", [second, {"v": 2}])
            rows = list(BotTableRow.objects.filter(bot=bot, table=f"t{n}").values_list("data", flat=True))
            assert len(rows) == 1 and rows[0]["v"] == 2, (first, second, rows)
        host.save("t0", [1e17, {"v": 3}])  # another id: another row
        assert BotTableRow.objects.filter(bot=bot, table="t0").count() == 2


def test_find_sees_every_row_a_table_can_hold(canary_tenants):
    # The scan once stopped at 10,000 rows while a .gbdata import may hold 50,000: rows past it were invisible.
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        BotTableRow.objects.bulk_create(BotTableRow(bot=bot, table="big", data={"i": i}) for i in range(12_000))
        BotTableRow.objects.create(bot=bot, table="big", data={"i": "last", "name": "needle"})
        assert BotHost(bot).find("big", "name=needle") == [{"i": "last", "name": "needle"}]


def test_a_full_table_refuses_a_new_row_with_a_clear_error_and_keeps_its_rows(canary_tenants, monkeypatch):
    monkeypatch.setattr(host_module, "TABLE_ROWS_MAX", 3)
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result, _ = _run(bot, 'INSERT "t", #{n: 1}\nINSERT "t", #{n: 2}\nSAVE "t", "x", #{n: 3}\nINSERT "t", #{n: 4}')
        assert result.status == "error"
        assert result.error["line"] == 4
        assert "table 't' is full: it holds 3 rows" in result.error["message"]
        assert sorted(r["n"] for r in BotTableRow.objects.filter(bot=bot, table="t").values_list("data", flat=True)) \
            == [1, 2, 3]
        # A full table still takes updates of its rows, and a new row once one is deleted.
        result, _ = _run(bot, 'SAVE "t", "x", #{n: 30}\nDELETE "t", "n=1"\nINSERT "t", #{n: 5}\nRETURN 1')
        assert result.status == "done", result.error
        assert sorted(r["n"] for r in BotTableRow.objects.filter(bot=bot, table="t").values_list("data", flat=True)) \
            == [2, 5, 30]


def test_writing_a_file_past_the_size_limit_fails_and_keeps_the_file(canary_tenants, local_storage, monkeypatch):
    monkeypatch.setattr(host_module, "FILE_WRITE_MAX_BYTES", 10)
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        result, _ = _run(bot, 'WRITE "12345" TO "log.txt"\nWRITE "67890" TO "log.txt" APPEND\nRETURN READ "log.txt"')
        assert result.value == "1234567890", result.error
        result, _ = _run(bot, 'WRITE "!" TO "log.txt" APPEND')
        assert result.status == "error"
        assert "would be larger than 10 bytes; nothing was written" in result.error["message"]
        result, _ = _run(bot, 'WRITE "this is too long" TO "new.txt"')
        assert result.status == "error"
        result, _ = _run(bot, 'RETURN READ "log.txt"')
        assert result.value == "1234567890"


def test_read_and_append_refuse_a_file_past_the_limit_without_reading_it(canary_tenants, local_storage,
                                                                       monkeypatch):
    """A file put on the drive another way (an upload, a sync) larger than the limits: READ and APPEND refuse
    it from its size; its content never comes into memory, and it stays as it was."""
    from apps.drive.storage import tenant_drive

    monkeypatch.setattr(host_module, "FILE_WRITE_MAX_BYTES", 10)
    monkeypatch.setattr(host_module, "FILE_READ_MAX_BYTES", 10)
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="bigfile")
        drive = tenant_drive()
        key = "bigfile.gbai/bigfile.gbdrive/big.txt"
        drive.write(key, b"0123456789AB")
        reads: list[int | None] = []
        real_read = type(drive).read

        def counted_read(self, k, *, max_bytes=None):
            reads.append(max_bytes)
            return real_read(self, k, max_bytes=max_bytes)

        monkeypatch.setattr(type(drive), "read", counted_read)
        result, _ = _run(bot, 'WRITE "!" TO "big.txt" APPEND')
        assert result.status == "error" and "would be larger than 10 bytes" in result.error["message"]
        result, _ = _run(bot, 'RETURN READ "big.txt"')
        assert result.status == "error" and "is larger than 10 bytes" in result.error["message"]
        assert reads == [9, 10]  # every read of the file carried its limit
        assert real_read(drive, key) == b"0123456789AB"


@pytest.mark.django_db(transaction=True)
def test_concurrent_saves_of_one_new_id_make_one_row(canary_tenants):
    # Two sessions SAVE the same new ids at once: without the table's lock both find no row and both insert.
    schema = canary_tenants.a.schema_name
    with schema_context(schema):
        bot = Bot.objects.create(name="race")
    ids = [f"id-{n}" for n in range(40)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def save_all(worker: int) -> None:
        try:
            with schema_context(schema):
                host = BotHost(Bot.objects.get(pk=bot.pk))
                for row_id in ids:
                    barrier.wait(timeout=30)
                    host.save("orders", [row_id, {"by": worker}])
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
            barrier.abort()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=save_all, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        with schema_context(schema):
            stored = list(BotTableRow.objects.filter(bot=bot, table="orders").values_list("data", flat=True))
        assert sorted(r["id"] for r in stored) == sorted(ids)  # each id once
    finally:
        with schema_context(schema):
            Bot.objects.filter(pk=bot.pk).delete()


def test_a_row_erased_while_update_scans_is_skipped_not_an_error(canary_tenants, monkeypatch):
    """A data-subject erasure deletes table rows without the table's lock: a row UPDATE matched may be gone by
    the time it is written. The script goes on; the row stays deleted."""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        first = BotTableRow.objects.create(bot=bot, table="t", data={"k": "v", "n": 1})
        erased = BotTableRow.objects.create(bot=bot, table="t", data={"k": "v", "n": 2})
        matches = host_module.row_matches_filter

        def erasure_meanwhile(row, filter_text):
            if row.get("n") == 1:
                BotTableRow.objects.filter(pk=erased.pk).delete()
            return matches(row, filter_text)

        monkeypatch.setattr(host_module, "row_matches_filter", erasure_meanwhile)
        assert BotHost(bot).update("t", "k=v", {"seen": True}) == 1
        assert list(BotTableRow.objects.filter(bot=bot, table="t").values_list("pk", "data")) == [
            (first.pk, {"k": "v", "n": 1, "seen": True})]
