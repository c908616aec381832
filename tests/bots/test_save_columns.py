"""A positional SAVE in a bot stores each value under its column: from the bot's TABLE definitions (tables.bas),
else the keys of the table's stored rows (a .gbdata CSV), else the variable names."""

import pytest
from django_tenants.utils import schema_context

from apps.basic.vm import run_source
from apps.bots.host import BotHost
from apps.bots.models import Bot, BotTableRow
from apps.bots.services import data_csv_sync, script_sync

pytestmark = pytest.mark.django_db

TABLES = b"""TABLE people
    id UUID PRIMARY KEY
    FullName VARCHAR(100)
    Email VARCHAR(100)
END TABLE
"""


def _rows(bot: Bot, table: str) -> list[dict]:
    return list(BotTableRow.objects.filter(bot=bot, table=table).order_by("id").values_list("data", flat=True))


def test_columns_come_from_the_bots_tables_bas_then_by_position(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="crm")
        assert script_sync(bot=bot, path="crm.gbai/crm.gbdialog/tables.bas", data=TABLES).ok
        result = run_source('''email = "ann@example.com"
fullname = "Ann"
SAVE "people", email, fullname
SAVE "people", "p-2", "Bo", "bo@example.com"
rows = FIND "people", "fullname=Ann"
RETURN rows[0].email''', BotHost(bot))
        assert result.status == "done", result.error
        assert result.value == "ann@example.com"
        assert _rows(bot, "people") == [{"Email": "ann@example.com", "FullName": "Ann"},
                                         {"id": "p-2", "FullName": "Bo", "Email": "bo@example.com"}]


def test_a_gbdata_tables_columns_match_by_name_and_unknown_tables_use_the_names(canary_tenants):
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="shop")
        data_csv_sync(bot=bot, path="shop.gbai/shop.gbdata/contacts.csv", data=b"FirstName,Email\nOld,o@x\n")
        result = run_source('firstname = "New"\nemail = "n@x"\nSAVE "contacts.csv", firstname, email\n'
                            'SAVE "visits", firstname, email\n', BotHost(bot))
        assert result.status == "done", result.error
        assert _rows(bot, "contacts.csv")[1] == {"FirstName": "New", "Email": "n@x"}
        assert _rows(bot, "visits") == [{"firstname": "New", "email": "n@x"}]


def test_a_loop_of_positional_saves_reads_the_tables_first_row_once(canary_tenants):
    """Each positional SAVE of a table without a TABLE block read its first stored row again: a loop of SAVEs
    doubled its queries."""
    with schema_context(canary_tenants.a.schema_name):
        bot = Bot.objects.create(name="looper")
        BotTableRow.objects.create(bot=bot, table="visits", data={"who": "seed", "day": 0})
        host = BotHost(bot)
        run_source('who = "ann"\nday = 1\nSAVE "visits", who, day\n', host=host)  # reads the definitions, the row
        from django.db import connection
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as one:
            run_source('who = "bo"\nday = 2\nSAVE "visits", who, day\n', host=host)
        with CaptureQueriesContext(connection) as ten:
            run_source('FOR day = 3 TO 12\n  who = "cy"\n  SAVE "visits", who, day\nNEXT\n', host=host)
        assert len(ten) == 10 * len(one)
        assert not any("ORDER BY" in q["sql"] and '"bots_bottablerow"."id" ASC' in q["sql"] and "LIMIT 1" in q["sql"]
                       for q in one.captured_queries)
        assert {tuple(sorted(row)) for row in _rows(bot, "visits")} == {("day", "who")}
