"""SET SCHEDULE natural language -> cron (spec 3.8) and other compile-time metadata."""

from __future__ import annotations

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.schedule import ScheduleError, to_cron
from tests.basic.conftest import run


@pytest.mark.parametrize(("text", "cron"), [
    ("every minute", "* * * * *"), ("every 5 minutes", "*/5 * * * *"), ("every hour", "0 * * * *"),
    ("hourly", "0 * * * *"), ("every 2 hours", "0 */2 * * *"), ("every day", "0 0 * * *"),
    ("daily", "0 0 * * *"), ("every week", "0 0 * * 0"), ("weekly", "0 0 * * 0"),
    ("every month", "0 0 1 * *"), ("monthly", "0 0 1 * *"), ("every year", "0 0 1 1 *"),
    ("annually", "0 0 1 1 *"), ("at 9am", "0 9 * * *"), ("at 9:30am", "30 9 * * *"),
    ("at 2pm", "0 14 * * *"), ("at 14:00", "0 14 * * *"), ("at noon", "0 12 * * *"),
    ("at midnight", "0 0 * * *"), ("every monday", "0 0 * * 1"), ("every sunday", "0 0 * * 0"),
    ("every tues", "0 0 * * 2"), ("every monday at 9am", "0 9 * * 1"), ("weekdays", "0 0 * * 1-5"),
    ("every weekday", "0 0 * * 1-5"), ("weekdays at 8am", "0 8 * * 1-5"), ("weekends", "0 0 * * 0,6"),
    ("weekends at 10am", "0 10 * * 0,6"), ("every day at 9am", "0 9 * * *"),
    ("every day at 6:30pm", "30 18 * * *"), ("every hour from 9 to 17", "0 9-17 * * *"),
    ("business hours", "0 9-17 * * 1-5"), ("every hour during business hours", "0 9-17 * * 1-5"),
    ("every 30 minutes during business hours", "*/30 9-17 * * 1-5"),
    ("59 * * * *", "59 * * * *"), ("0 0 */4 * * *", "0 */4 * * *"), ("0 9 * *", "0 9 * * *"),
    ("0 8 * * MON-FRI", "0 8 * * mon-fri"), ("Every Day At 9AM", "0 9 * * *"),
])
def test_natural_language_and_cron(text: str, cron: str) -> None:
    assert to_cron(text) == cron


@pytest.mark.parametrize("text", ["sometimes", "every 0 minutes", "every 99 hours", "at 25:00", "every fortnight",
                                  # Cron-shaped but out of range, a zero step, a day that never comes: these
                                  # compiled and then failed saving the script (an internal error, the old
                                  # version and its schedule kept running).
                                  "0 25 * * *", "*/0 * * * *", "0 0 30 2 *", "every hour from 9 to 30",
                                  "61 * * * *", "0 0 * 13 *"])
def test_unparseable_schedules_are_errors(text: str) -> None:
    with pytest.raises(ScheduleError, match="Could not parse schedule"):
        to_cron(text)


def test_literal_schedule_is_metadata_and_not_run() -> None:
    src = 'SET SCHEDULE "every 5 minutes"\nTALK "tick"'
    assert compile_source(src).metadata["schedules"] == [
        {"expression": "every 5 minutes", "cron": "*/5 * * * *", "line": 1}]
    r = run(src)
    assert r.host.messages == ["tick"] and r.host.schedules == []


def test_unquoted_schedule_text_is_accepted() -> None:
    assert compile_source("SET SCHEDULE every 1 hour").metadata["schedules"][0]["cron"] == "0 */1 * * *"


def test_bad_schedule_error_points_at_the_line() -> None:
    with pytest.raises(CompileError) as info:
        compile_source('TALK 1\nSET SCHEDULE "whenever"')
    assert info.value.line == 2 and "Could not parse schedule 'whenever'" in info.value.message


def test_tables_webhooks_triggers_and_handlers_are_listed() -> None:
    src = '''WEBHOOK "order-received"
TABLE customers
    id UUID PRIMARY KEY
    name VARCHAR(100)
END TABLE
ON INSERT OF "orders"
ON EVENT "paid" DO
  TALK "paid!"
END ON
TALK "main"'''
    meta = compile_source(src).metadata
    assert meta["webhooks"] == ["order-received"]
    assert meta["tables"][0]["definition"] == "customers"
    assert meta["tables"][0]["columns"] == ["id UUID PRIMARY KEY", "name VARCHAR(100)"]
    assert meta["triggers"][0]["trigger"] == "INSERT"
    assert meta["handlers"][0]["trigger"] == "EVENT" and meta["handlers"][0]["args"] == ["paid"]
    assert run(src).host.messages == ["main"]


def test_event_handler_unit_can_be_run_as_an_entry_point() -> None:
    from apps.basic.host import InMemoryHost
    from apps.basic.vm import VM

    program = compile_source('ON EVENT "paid" DO\n  TALK "paid " + amount\nEND ON\nTALK "main"')
    host = InMemoryHost()
    unit = program.metadata["handlers"][0]["unit"]
    assert VM(program, host).start({"amount": 3}, entry=unit).status == "done"
    assert host.messages == ["paid 3"]


def test_interpolation_errors_point_at_the_string() -> None:
    with pytest.raises(CompileError) as info:
        compile_source('x = 1\nTALK "value ${x +}"')
    assert (info.value.line, info.value.col) == (2, 6)
    assert "in 'x +'" in info.value.message


def test_nested_interpolation_with_quotes_and_braces() -> None:
    assert run('m = #{ a: "z" }\nTALK "v=${m[\'a\'] + \'}\'}!"').host.messages == ["v=z}!"]


def _daily(i: int) -> str:
    """The i-th of many different daily times (minute i % 60 of hour i // 60)."""
    return f'SET SCHEDULE "{i % 60} {i // 60} * * *"'


def test_more_schedules_than_the_limit_are_a_compile_error_at_the_line() -> None:
    from apps.basic.limits import MAX_SCHEDULES

    assert len(compile_source("\n".join(_daily(i) for i in range(MAX_SCHEDULES))).metadata["schedules"]) == 100
    with pytest.raises(CompileError) as info:
        compile_source("\n".join(_daily(i) for i in range(MAX_SCHEDULES + 1)))
    assert info.value.line == MAX_SCHEDULES + 1
    assert "at most 100 different SET SCHEDULE times (MAX_SCHEDULES)" in info.value.message


def test_a_repeated_schedule_registers_once() -> None:
    # 40,000 lines of the same cron were 40,000 schedules (a job each, every minute, on the shared queue).
    src = 'SET SCHEDULE "every minute"\n' + 'SET SCHEDULE "* * * * *"\n' * 40_000 + 'TALK "x"'
    meta = compile_source(src).metadata
    assert meta["schedules"] == [{"expression": "every minute", "cron": "* * * * *", "line": 1}]
    assert meta["warnings"] == [{"line": 2, "message": "SET SCHEDULE repeats the schedule of line 1 (* * * * *); "
                                                       "the script runs once"}]


def test_a_cron_longer_than_its_storage_is_a_compile_error_at_the_line() -> None:
    # A valid cron of 177 characters compiled, then the deploy failed with "internal error: DataError" (the
    # schedule's columns hold 100).
    every_minute = ",".join(str(m) for m in range(60)) + " * * * *"
    with pytest.raises(CompileError) as info:
        compile_source(f'TALK 1\nSET SCHEDULE "{every_minute}"')
    assert info.value.line == 2
    assert info.value.message == (f"Schedule '{every_minute[:40]}...' is 177 characters as a cron; the limit is "
                                  f"100 (CRON_MAX_CHARS): use ranges or steps (0-59, */5)")
    longest = ",".join(str(m) for m in range(33)) + ",35 10 * * *"
    assert len(longest) == 100 and to_cron(longest) == longest
