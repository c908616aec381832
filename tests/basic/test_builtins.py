"""Behaviour of the expression-level builtins (apps/basic/builtins.py).

Every registered name (aliases included) appears in CASES with at least one typical call;
edge and invalid inputs follow in ERRORS and the per-topic tests. Hypothesis checks the VM
contract: for any JSON arguments within the arity, a builtin returns a JSON value or raises
BuiltinError, never anything else.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import re
import uuid
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.basic.builtins import (
    BUILTINS,
    MAX_BUILTIN_ITEMS,
    MAX_BUILTIN_RESULT_CHARS,
    MAX_KEY_TEXT_CHARS,
    Builtin,
    BuiltinError,
    BuiltinLimitError,
    FixedContext,
    SystemContext,
    is_truthy,
    value_to_text,
)

# Friday 15 March 2024, 14:30:05 UTC.
NOW = dt.datetime(2024, 3, 15, 14, 30, 5, tzinfo=dt.UTC)


@pytest.fixture
def ctx() -> FixedContext:
    return FixedContext(NOW, seed=7)


def call(name: str, *args, ctx=None):
    return BUILTINS[name].fn(ctx or FixedContext(NOW, seed=7), *args)


# (name, args, expected result)
CASES: list[tuple[str, tuple, object]] = [
    # --- strings
    ("LEN", ("héllo",), 5),
    ("LEN", ([1, 2, 3],), 3),
    ("LENGTH", (None,), 0),
    ("LEFT", ("abcdef", 2), "ab"),
    ("LEFT", ("ab", 10), "ab"),
    ("RIGHT", ("abcdef", 2), "ef"),
    ("RIGHT", ("abcdef", 0), ""),
    ("MID", ("abcdef", 2, 3), "bcd"),
    ("MID", ("abcdef", 3), "cdef"),
    ("MID", ("abc", 10, 2), ""),
    ("SUBSTRING", ("abcdef", 1, 1), "a"),
    ("SUBSTR", ("abcdef", 6, 5), "f"),
    ("INSTR", ("hello world", "o"), 5),
    ("INSTR", (6, "hello world", "o"), 8),
    ("INSTR", ("hello", "z"), 0),
    ("UCASE", ("Olá",), "OLÁ"),
    ("UPPER", (12,), "12"),
    ("LCASE", ("ABC",), "abc"),
    ("LOWER", ("ÀB",), "àb"),
    ("LOWERCASE", ("X",), "x"),
    ("CAPITALIZE", ("joão da silva",), "João Da Silva"),
    ("PROPER", ("mary ann",), "Mary Ann"),
    ("TRIM", ("  a b  ",), "a b"),
    ("LTRIM", ("  a ",), "a "),
    ("RTRIM", ("  a ",), "  a"),
    ("REPLACE", ("a-b-c", "-", "+"), "a+b+c"),
    ("REPLACE", ("abc", "", "x"), "abc"),
    ("SPLIT", ("a,b,,c", ","), ["a", "b", "", "c"]),
    ("SPLIT", ("a b",), ["a", "b"]),
    ("SPLIT", ("abc", ""), ["a", "b", "c"]),
    ("SPLIT", (None, ","), []),
    ("JOIN", (["a", 1, True, None], "-"), "a-1-true-"),
    ("JOIN", (["a", "b"],), "a,b"),
    ("STR", (3.0,), "3"),
    ("STR", (2.5,), "2.5"),
    ("CSTR", (None,), ""),
    ("VAL", ("12abc",), 12),
    ("VAL", (" -3.5kg",), -3.5),
    ("VAL", ("abc",), 0),
    ("TO_NUMBER", ("42",), 42),
    ("CDBL", ("2",), 2.0),
    ("CINT", ("2.5",), 3),
    ("CLNG", (-2.5,), -3),
    ("ISNUMERIC", ("1.5e3",), True),
    ("ISNUMERIC", ("12a",), False),
    ("IS_NUMERIC", (True,), False),
    ("SPACE", (3,), "   "),
    ("SPACE", (-1,), ""),
    ("REPEAT", ("ab", 3), "ababab"),
    ("STRING", (3, "*"), "***"),
    ("CHR", (65,), "A"),
    ("ASC", ("A",), 65),
    # --- math
    ("ABS", (-3,), 3),
    ("ABS", ("-2.5",), 2.5),
    ("INT", (-2.5,), -3),
    ("INT", (2.9,), 2),
    ("FIX", (-2.5,), -2),
    ("ROUND", (2.5,), 3),
    ("ROUND", (-2.5,), -3),
    ("ROUND", (1.005, 2), 1.01),
    ("ROUND", (1234, -2), 1200),
    ("ROUND", (1250, -2), 1300),
    ("FLOOR", (2.7,), 2),
    ("CEIL", (2.1,), 3),
    ("CEILING", (-2.1,), -2),
    ("SGN", (-4,), -1),
    ("SIGN", (0,), 0),
    ("SQR", (16,), 4.0),
    ("SQRT", (2,), math.sqrt(2)),
    ("POW", (2, 10), 1024),
    ("POWER", (4, 0.5), 2.0),
    ("POW", (2, -1), 0.5),
    ("MOD", (7, 3), 1),
    ("MOD", (-7, 3), -1),
    ("MOD", (7.5, 2), 1.5),
    ("MIN", (3, 1, 2), 1),
    ("MIN", ([5, 2, 9],), 2),
    ("MIN", ([],), None),
    ("MAX", ([{"count": 3}, {"count": 8}, {}], "count"), 8),
    ("MAX", ("apple", "pear"), "pear"),
    ("SUM", ([1, 2, 3.5],), 6.5),
    ("SUM", ([{"count": 2}, {"count": 3}], "count"), 5),
    ("SUM", (1, 2, 3), 6),
    ("SUM", ([],), 0),
    ("AVG", ([1, 2, 3, 4],), 2.5),
    ("AVERAGE", ([{"ms": 10}, {"ms": 20}], "ms"), 15.0),
    ("AVG", ([],), 0),
    ("COUNT", ([1, 2],), 2),
    ("COUNT", (None,), 0),
    ("SIZE", ({"a": 1},), 1),
    ("PI", (), math.pi),
    ("SIN", (0,), 0.0),
    ("COS", (0,), 1.0),
    ("TAN", (0,), 0.0),
    ("ATN", (1,), math.pi / 4),
    ("ATAN", (0,), 0.0),
    ("ASIN", (1,), math.pi / 2),
    ("ACOS", (1,), 0.0),
    ("LOG", (math.e,), 1.0),
    ("LN", (1,), 0.0),
    ("LOG10", (1000,), 3.0),
    ("EXP", (0,), 1.0),
    # --- dates (NOW = 2024-03-15T14:30:05 UTC)
    ("NOW", (), "2024-03-15T14:30:05"),
    ("NOW_UTC", (), "2024-03-15T14:30:05"),
    ("NOW_STR", (), "2024-03-15 14:30:05"),
    ("TODAY", (), "2024-03-15"),
    ("CURDATE", (), "2024-03-15"),
    ("TIME", (), "14:30:05"),
    ("TIMESTAMP", (), "2024-03-15T14:30:05+00:00"),
    ("UNIX_TIMESTAMP", (), 1710513005),
    ("YEAR", ("2023-07-04",), 2023),
    ("YEAR", (), 2024),
    ("MONTH", ("04/07/2023",), 7),
    ("DAY", ("2023-07-04T10:11:12",), 4),
    ("HOUR", ("2023-07-04 10:11:12",), 10),
    ("MINUTE", ("2023-07-04T10:11:12",), 11),
    ("SECOND", ("2023-07-04T10:11:12",), 12),
    ("WEEKDAY", ("2024-03-17",), 1),
    ("WEEKDAY", ("2024-03-16",), 7),
    ("DATEADD", ("2024-01-31", 1, "month"), "2024-02-29"),
    ("DATEADD", ("2024-03-15", "day", -30), "2024-02-14"),
    ("DATEADD", ("day", 7, "2024-03-15"), "2024-03-22"),
    ("DATEADD", ("2024-03-15T14:30:05", -30, "day"), "2024-02-14T14:30:05"),
    ("DATEADD", ("2024-03-15", 2, "hour"), "2024-03-15T02:00:00"),
    ("DATEADD", ("2020-02-29", 1, "yyyy"), "2021-02-28"),
    ("DATEADD", ("2024-03-15", 1, "q"), "2024-06-15"),
    ("ADD_DAYS", ("2024-12-31", 1), "2025-01-01"),
    ("DATEDIFF", ("day", "2024-03-01", "2024-03-15"), 14),
    ("DATEDIFF", ("2024-03-01", "2024-03-15", "day"), 14),
    ("DATEDIFF", ("2024-03-15T14:30:05", "2024-03-10"), 5),
    ("DATEDIFF", ("minute", "2024-03-15T14:00:00", "2024-03-15T14:30:05"), 30),
    ("DATEDIFF", ("month", "2024-01-31", "2024-02-29"), 0),
    ("DATEDIFF", ("month", "2024-01-15", "2024-03-15"), 2),
    ("DATEDIFF", ("year", "2000-03-16", "2024-03-15"), 23),
    ("DAYS_BETWEEN", ("2024-03-01", "2024-03-15T14:30:05"), 14),
    ("HOURS_BETWEEN", ("2024-03-15", "2024-03-15T14:30:05"), 14),
    ("MINUTES_BETWEEN", ("2024-03-15T14:00:00", "2024-03-15T14:30:05"), 30),
    ("SECONDS_BETWEEN", ("2024-03-15T14:30:00", "2024-03-15T14:30:05"), 5),
    ("DATEVALUE", ("2024-3-5",), "2024-03-05"),
    ("DATEVALUE", ("25/12/2024",), "2024-12-25"),
    ("ISDATE", ("2024-02-30",), False),
    ("IS_DATE", ("2024-02-29T10:00:00Z",), True),
    ("FORMAT_DATE", ("2024-03-05", "dd/MM/yyyy"), "05/03/2024"),
    # --- FORMAT
    ("FORMAT", (1234.5, "C2[pt]"), "R$ 1.234,50"),
    ("FORMAT", (1234.5, "C2[en]"), "$1,234.50"),
    ("FORMAT", (1234.567, "N2"), "1,234.57"),
    ("FORMAT", (1234.567, "N0[de]"), "1.235"),
    ("FORMAT", (1234.5, "n"), "1234.50"),
    ("FORMAT", (1234.5, "F"), "1234.50"),
    ("FORMAT", (1234.5, "f"), "1234"),
    ("FORMAT", (0.85, "0%"), "85%"),
    ("FORMAT", (1234567.891, "#,##0.00"), "1,234,567.89"),
    ("FORMAT", (1234, "#,##0"), "1,234"),
    ("FORMAT", ("1234.5", "#,##0.0"), "1,234.5"),
    ("FORMAT", (12.5, "#.##"), "12.5"),
    ("FORMAT", (1500000, "$#,###"), "$1,500,000"),
    ("FORMAT", (99.9, "R$ #,##0.00"), "R$ 99.90"),
    ("FORMAT", (-5, "#,##0.00"), "-5.00"),
    ("FORMAT", ("2024-03-15T14:30:05", "YYYYMMDD-HHmmss"), "20240315-143005"),
    ("FORMAT", ("2024-03-15", "MMMM dd, yyyy"), "March 15, 2024"),
    ("FORMAT", ("2024-03-15 09:05:00", "dd/MM/yyyy hh:mm tt"), "15/03/2024 09:05 AM"),
    ("FORMAT", ("2024-03-15T14:30:05", "MMM DD, YYYY HH:mm"), "Mar 15, 2024 14:30"),
    ("FORMAT", ("2024-03-15", "dddd 'the' d"), "Friday the 15"),
    ("FORMAT", ("John", "Hello @!"), "Hello John!"),
    ("FORMAT", ("Maria", "Hello, !"), "Hello, MARIA"),
    ("FORMAT", ("MiXed", "&"), "mixed"),
    ("FORMAT", (4321,), "4321"),
    ("FORMAT", ({"formatted": "2024-01-02 03:04:05"}, "yyyy-MM-dd"), "2024-01-02"),
    # --- arrays
    ("UBOUND", ([1, 2, 3],), 2),
    ("UBOUND", ([],), -1),
    ("LBOUND", ([1],), 0),
    ("PUSH", ([1], 2), [1, 2]),
    ("APPEND", (None, "a"), ["a"]),
    ("ARRAY_PUSH", ([], None), [None]),
    ("UNSHIFT", ([2], 1), [1, 2]),
    ("PREPEND", ([], 1), [1]),
    ("POP", ([1, 2],), 2),
    ("LAST", ([],), None),
    ("SHIFT", ([1, 2],), 1),
    ("FIRST", ([{"id": 1}, {"id": 2}],), {"id": 1}),
    ("FIRST", ({"id": 9},), {"id": 9}),
    ("SORT", ([3, 1, 2],), [1, 2, 3]),
    ("SORT", (["b", "a"], "DESC"), ["b", "a"]),
    ("SORT", ([2, "a", None, True],), [None, True, 2, "a"]),
    ("SORT_ASC", ([2, 1],), [1, 2]),
    ("SORT_DESC", ([1, 2],), [2, 1]),
    ("UNIQUE", ([1, 2, 1, "1", True],), [1, 2, "1", True]),
    ("DISTINCT", ([{"a": 1}, {"a": 1}],), [{"a": 1}]),
    ("REVERSE", ([1, 2, 3],), [3, 2, 1]),
    ("REVERSE", ("abc",), "cba"),
    ("SLICE", ([0, 1, 2, 3], 1, 3), [1, 2]),
    ("SLICE", ([0, 1, 2, 3], -2), [2, 3]),
    ("SPLICE", ([0, 1, 2, 3], 1, 2), [0, 3]),
    ("SPLICE", ([0, 1, 2, 3], 1), [0]),
    ("SPLICE", ([0, 1, 2, 3], -1, 1, "a", "b"), [0, 1, 2, "a", "b"]),
    ("SPLICE", ([0, 1], 5, 1, "x"), [0, 1, "x"]),
    ("SPLICE", (None, 0, 0, 1), [1]),
    ("HEAD", ([5, 6],), 5),
    ("HEAD", ([5, 6, 7], 2), [5, 6]),
    ("TAKE", ([5, 6, 7], 5), [5, 6, 7]),
    ("TAIL", ([5, 6, 7],), [6, 7]),
    ("TAIL", ([5, 6, 7], 2), [6, 7]),
    ("DROP", ([5, 6, 7], 1), [6, 7]),
    ("FLATTEN", ([[1, 2], 3, [[4]]],), [1, 2, 3, [4]]),
    ("CONCAT", ([1], [2, 3]), [1, 2, 3]),
    ("CONCAT", ("a", 1, None), "a1"),
    ("INDEX_OF", (["a", "b"], "b"), 1),
    ("INDEX_OF", (["a"], "z"), -1),
    ("INDEX_OF", ("hello", "l"), 2),
    ("CONTAINS", (["1", "2", "10"], "1"), True),
    ("CONTAINS", (["1", "2"], "3"), False),
    ("CONTAINS", ("hello world", "wor"), True),
    ("HAS", ({"k": 1}, "k"), True),
    ("INCLUDES", ([1, 2], "2"), True),
    ("IN_ARRAY", (None, 1), False),
    ("RANGE", (1, 5), [1, 2, 3, 4, 5]),
    ("RANGE", (10, 0, -5), [10, 5, 0]),
    ("RANGE", (1, 5, 0), []),
    ("CHUNK", ([1, 2, 3, 4, 5], 2), [[1, 2], [3, 4], [5]]),
    ("BATCH", ([], 3), []),
    ("FILL", ("x", 3), ["x", "x", "x"]),
    # --- validation and types
    ("ISEMPTY", ("",), True),
    ("ISEMPTY", ([0],), False),
    ("IS_EMPTY", ({},), True),
    ("ISNULL", (None,), True),
    ("IS_NULL", (0,), False),
    ("NVL", (None, "d"), "d"),
    ("NVL", ("", "d"), "d"),
    ("IFNULL", (0, "d"), 0),
    ("COALESCE", (None, None, 3, 4), 3),
    ("COALESCE", (None,), None),
    ("IIF", ("", "yes", "no"), "no"),
    ("IIF", ([1], "yes", "no"), "yes"),
    ("CHOOSE", (2, "a", "b", "c"), "b"),
    ("CHOOSE", (4, "a", "b", "c"), None),
    ("TYPEOF", (1.5,), "float"),
    ("TYPEOF", (True,), "boolean"),
    ("TYPENAME", ({},), "object"),
    ("ISARRAY", ([],), True),
    ("IS_ARRAY", ("[]",), False),
    ("ISOBJECT", ({},), True),
    ("IS_OBJECT", ([],), False),
    ("ISSTRING", ("",), True),
    ("IS_STRING", (1,), False),
    ("ISNUMBER", (1.5,), True),
    ("IS_NUMBER", ("1",), False),
    ("ISBOOL", (False,), True),
    ("IS_BOOL", (0,), False),
    # --- serialisation
    ("TOJSON", ({"a": [1, "é", None]},), '{"a": [1, "é", null]}'),
    ("TO_JSON", ("x",), '"x"'),
    ("JSON_STRINGIFY", (None,), "null"),
    ("JSON_PARSE", ('{"a": [1, 2.5, true]}',), {"a": [1, 2.5, True]}),
    ("PARSE_JSON", ("NaN",), None),
    ("FROMJSON", ([1],), [1]),
    ("TOYAML", ({"name": "Ann", "tags": ["a", "b c"], "n": 1, "x": None},),
     "name: Ann\ntags:\n  - a\n  - b c\nn: 1\nx: null"),
    ("TO_YAML", ([{"id": 1, "ok": True}, "yes"],), '- id: 1\n  ok: true\n- "yes"'),
    ("LOG_DEBUG", ("x",), None),
    ("LOG_INFO", ("x", 1),  None),
    ("LOG_WARN", ("x",), None),
    ("LOG_WARNING", ("x",), None),
    ("LOG_ERROR", ("x",), None),
]

# Names whose value depends on the random source: checked by property below.
RANDOM_NAMES = {"RANDOM", "RND", "UUID", "GUID"}


@pytest.mark.parametrize(("name", "args", "expected"), CASES, ids=[f"{c[0]}{c[1]!r}"[:60] for c in CASES])
def test_builtin_returns_expected_value(name, args, expected) -> None:
    result = call(name, *args)
    if isinstance(expected, float):
        assert isinstance(result, float)
        assert result == pytest.approx(expected)
    else:
        assert result == expected
        assert type(result) is type(expected)


def test_every_builtin_has_a_value_case() -> None:
    covered = {case[0] for case in CASES} | RANDOM_NAMES
    assert sorted(set(BUILTINS) - covered) == []


def test_registry_entries_are_consistent() -> None:
    for key, builtin in BUILTINS.items():
        assert isinstance(builtin, Builtin)
        assert key == builtin.name == key.upper()
        assert builtin.min_args >= 0
        assert builtin.max_args is None or builtin.max_args >= builtin.min_args


# (name, args, fragment expected in the BuiltinError message)
ERRORS: list[tuple[str, tuple, str]] = [
    ("MID", ("abc", "abc"), "MID: start must be a number, got 'abc'"),
    ("MID", ("abc", 0), "MID: start must be 1 or more"),
    ("MID", ("abc", 1, -1), "MID: length must not be negative"),
    ("LEFT", ("abc", -1), "LEFT: length must not be negative"),
    ("RIGHT", ("abc", None), "RIGHT: length must be a number, got null"),
    ("INSTR", (0, "abc", "a"), "INSTR: start must be 1 or more"),
    ("CDBL", ("12abc",), "CDBL: value must be a number"),
    ("TO_NUMBER", ([1],), "TO_NUMBER: value must be a number, got [1]"),
    ("CINT", (None,), "CINT: value must be a number, got null"),
    ("CHR", (-1,), "CHR: code must be between 0 and 1114111"),
    ("ASC", ("",), "ASC: text must not be empty"),
    ("ABS", ("x",), "ABS: argument must be a number, got 'x'"),
    ("ABS", (float("nan"),), "ABS: argument must be a finite number"),
    ("SQRT", (-1,), "SQRT: cannot take the square root of a negative number"),
    ("POW", (0, -1), "POW: division by zero"),
    ("POW", (-8, 0.5), "POW: negative base"),
    ("POW", (10.0, 400), "POW: number is too large"),
    ("MOD", (1, 0), "MOD: division by zero"),
    ("LOG", (0,), "LOG: argument must be greater than 0"),
    ("ASIN", (2,), "ASIN: argument must be between -1 and 1"),
    ("EXP", (1000,), "EXP: number is too large"),
    ("SUM", (["a"],), "SUM: item must be a number, got 'a'"),
    ("COUNT", (5,), "COUNT: expected an array, got 5"),
    ("YEAR", ("not a date",), "YEAR: date must be a date such as 2024-12-25, got 'not a date'"),
    ("YEAR", (None,), "YEAR: date must be a date"),
    ("DATEADD", ("2024-01-01", 1, "fortnight"), "DATEADD: unit must be one of"),
    ("DATEADD", ("2024-01-01", "x", "day"), "DATEADD: amount must be a number"),
    ("DATEADD", ("9999-12-31", 1, "day"), "DATEADD: number is too large"),
    ("DATEDIFF", ("2024-01-01", "soon"), "DATEDIFF: second date must be a date"),
    ("DATEDIFF", ("2024-01-01", "2024-01-02", "eons"), "DATEDIFF: unit must be one of"),
    ("DATEVALUE", ("2024-02-30",), "DATEVALUE: date must be a date"),
    ("PUSH", ("abc", 1), "PUSH: array must be an array, got 'abc'"),
    ("SORT", ([1], "sideways"), 'SORT: order must be "ASC" or "DESC"'),
    ("CHUNK", ([1], 0), "CHUNK: size must be 1 or more"),
    ("TOJSON", ([float("inf")],), "TOJSON: cannot encode inf as JSON"),
    ("JSON_PARSE", ("{oops",), "JSON_PARSE: text is not valid JSON"),
    ("FORMAT_DATE", ("tomorrow-ish", "yyyy"), "FORMAT_DATE: date must be a date"),
]


@pytest.mark.parametrize(("name", "args", "fragment"), ERRORS, ids=[f"{e[0]}{e[1]!r}"[:60] for e in ERRORS])
def test_builtin_rejects_bad_arguments_with_a_named_message(name, args, fragment) -> None:
    with pytest.raises(BuiltinError) as excinfo:
        call(name, *args)
    assert fragment in str(excinfo.value)
    assert str(excinfo.value).startswith(f"{name}: ")


# --- resource guards -------------------------------------------------------------------

HUGE = 10**12


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("SPACE", (HUGE,)),
        ("REPEAT", ("ab", HUGE)),
        ("STRING", (HUGE, "x")),
        ("RANGE", (1, HUGE)),
        ("RANGE", (0, -HUGE, -1)),
        ("FILL", (0, HUGE)),
        ("SPLIT", ("x" * (MAX_BUILTIN_ITEMS + 1), "")),
        ("REPLACE", ("a" * 1000, "a", "b" * 10_000)),
        ("FORMAT", ("x" * 10_000, "@" * 1000)),
        ("JOIN", (["x" * 1000] * 2000, "-")),
        ("CONCAT", ("x" * 600_000, "y" * 600_000)),
        ("CONCAT", ([0] * 60_000, [1] * 60_000)),
        ("PUSH", ([0] * MAX_BUILTIN_ITEMS, 1)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_builtin_refuses_results_beyond_the_size_limits(name, args) -> None:
    """Refused from the arguments, before the result is built: "would exceed" is the check made in advance (the
    check of a built result says "result longer than" / "has more than", and SPACE(10^12) would not get there)."""
    with pytest.raises(BuiltinError, match=rf"^{name}: result would exceed "):
        call(name, *args)


def test_size_limits_are_generous_for_real_scripts() -> None:
    assert len(call("SPACE", 1000)) == 1000
    assert len(call("RANGE", 1, 10_000)) == 10_000
    assert MAX_BUILTIN_RESULT_CHARS >= 100_000


def test_pow_with_huge_integer_exponent_gives_no_giant_integer() -> None:
    """Exact only up to MAX_EXACT_POW_BITS: past it the result is a float (or too large), so 10 ^ 1000000 is
    never built as a million-digit integer."""
    assert call("POW", 1, 10**12) == 1
    assert call("POW", 2, 62) == 2**62
    assert isinstance(call("POW", 2, 100), float)
    with pytest.raises(BuiltinError, match="POW: number is too large"):
        call("POW", 10, 10**6)


def test_round_with_extreme_digits_is_clamped_not_slow() -> None:
    """Digits are clamped to +-MAX_DECIMALS (15): rounding 5 to -10^9 digits never computes 10^(10^9)."""
    assert call("ROUND", 123456789012345678901, -20) == 123457000000000000000  # rounded at 10^15, not 10^20
    assert call("ROUND", 5, -(10**9)) == 0
    assert call("ROUND", 1.23456, 10**9) == 1.23456


# --- random, uuid and contexts ----------------------------------------------------------


def test_random_forms_stay_in_their_documented_ranges(ctx) -> None:
    for _ in range(200):
        assert 0 <= call("RANDOM", ctx=ctx) < 1
        assert 0 <= call("RND", 5, ctx=ctx) < 1
        assert 0 <= call("RANDOM", 3, ctx=ctx) <= 2
        assert 1000 <= call("RANDOM", 1000, 9999, ctx=ctx) <= 9999
    assert call("RANDOM", 0, ctx=ctx) == 0
    assert call("RANDOM", 5, 5, ctx=ctx) == 5
    assert call("RANDOM", 9, 1, ctx=ctx) == 9
    assert {call("RANDOM", 1, 3, ctx=ctx) for _ in range(200)} == {1, 2, 3}
    with pytest.raises(BuiltinError, match="RANDOM: max must be a number"):
        call("RANDOM", "lots", ctx=ctx)


def test_random_is_reproducible_with_the_same_seed() -> None:
    first = [call("RANDOM", 1, 100, ctx=FixedContext(NOW, seed=3)) for _ in range(3)]
    second = [call("RANDOM", 1, 100, ctx=FixedContext(NOW, seed=3)) for _ in range(3)]
    assert first == second


def test_uuid_and_guid_are_distinct_version_4_uuids(ctx) -> None:
    values = {call("UUID", ctx=ctx) for _ in range(50)} | {call("GUID", ctx=ctx) for _ in range(50)}
    assert len(values) == 100
    for value in values:
        assert uuid.UUID(value).version == 4
        assert value == value.lower()


def test_system_context_uses_the_real_clock_in_the_given_zone() -> None:
    zone = ZoneInfo("America/Sao_Paulo")
    context = SystemContext(zone)
    before = dt.datetime.now(dt.UTC)
    now = context.now()
    assert now.tzinfo is zone
    assert abs((now - before).total_seconds()) < 5
    assert 0 <= context.random() < 1
    assert SystemContext().now().utcoffset() == dt.timedelta(0)


def test_now_and_today_follow_the_context_time_zone() -> None:
    # 02:00 UTC on the 16th is still the 15th in São Paulo (UTC-3).
    late = FixedContext(dt.datetime(2024, 3, 16, 2, 0, tzinfo=dt.UTC).astimezone(ZoneInfo("America/Sao_Paulo")))
    assert call("TODAY", ctx=late) == "2024-03-15"
    assert call("NOW", ctx=late) == "2024-03-15T23:00:00"
    assert call("NOW_UTC", ctx=late) == "2024-03-16T02:00:00"
    assert call("UNIX_TIMESTAMP", ctx=late) == int(dt.datetime(2024, 3, 16, 2, tzinfo=dt.UTC).timestamp())


def test_fixed_context_treats_a_naive_datetime_as_utc() -> None:
    assert FixedContext(dt.datetime(2024, 1, 1, 12, 0)).now().tzinfo is dt.UTC


def test_aware_date_text_is_converted_to_the_context_zone() -> None:
    sao_paulo = FixedContext(NOW.astimezone(ZoneInfo("America/Sao_Paulo")))
    assert call("HOUR", "2024-03-15T12:00:00Z", ctx=sao_paulo) == 9
    assert call("DATEVALUE", "2024-03-16T01:00:00+00:00", ctx=sao_paulo) == "2024-03-15"


# --- semantics worth stating on their own -----------------------------------------------


def test_builtins_never_mutate_their_arguments() -> None:
    items = [3, 1, 2]
    call("PUSH", items, 4)
    call("UNSHIFT", items, 0)
    call("POP", items)
    call("SHIFT", items)
    call("SORT", items)
    call("REVERSE", items)
    assert items == [3, 1, 2]


def test_ubound_is_last_index_so_templates_appending_by_ubound_plus_one_work() -> None:
    parts = call("SPLIT", "2+2", "+")
    assert call("UBOUND", parts) == 1
    assert call("COUNT", parts) == 2


def test_dateadd_and_datediff_round_trip_in_every_unit() -> None:
    start = "2024-01-31T10:00:00"
    for unit in ("year", "quarter", "month", "week", "day", "hour", "minute", "second"):
        later = call("DATEADD", start, 3, unit)
        assert call("DATEDIFF", unit, start, later) == 3 or unit in ("month", "quarter")
        assert call("DATEDIFF", start, later, unit) == call("DATEDIFF", unit, start, later)


def test_datediff_two_argument_form_counts_days_overdue() -> None:
    # Templates: "Dias em atraso: " + DATEDIFF(NOW(), invoice.due_date)
    assert call("DATEDIFF", call("NOW"), "2024-03-08") == 7
    assert call("DATEDIFF", "2024-03-08", call("NOW")) == -7


def test_format_moment_style_and_dotnet_tokens_agree() -> None:
    stamp = "2024-07-04T08:09:10"
    assert call("FORMAT", stamp, "YYYY-MM-DD HH:mm:ss") == call("FORMAT", stamp, "yyyy-MM-dd HH:mm:ss")
    assert call("FORMAT", stamp, "YYYY-MM-DD HH:mm:ss") == "2024-07-04 08:09:10"
    assert call("FORMAT", stamp, "d/M/yy h:m:s t") == "4/7/24 8:9:10 A"
    assert call("FORMAT", "2024-07-04T20:00:00", "hh tt") == "08 PM"
    assert call("FORMAT", "2024-07-04T20:00:00.123", "ss.fff") == "00.123"


def test_format_of_numbers_with_unknown_pattern_returns_the_number_text() -> None:
    assert call("FORMAT", 12.5, "whatever") == "12.5"
    assert call("FORMAT", "abc", "Q") == "Q"
    assert call("FORMAT", -0.001, "#,##0.00") == "0.00"
    assert call("FORMAT", 1234.5, "C2[fr]") == "€1\u202f234,50"
    assert call("FORMAT", -1234.5, "C0[pt]") == "-R$ 1.235"


def test_format_one_argument_is_to_string_including_containers() -> None:
    assert call("FORMAT", None) == ""
    assert call("FORMAT", [1, "a"]) == '[1, "a"]'
    assert call("FORMAT", 1e20) == "1e+20"


def test_value_to_text_and_truthiness_follow_the_spec() -> None:
    assert value_to_text(True) == "true"
    assert value_to_text(10.0) == "10"
    assert value_to_text({"a": 1}) == '{"a": 1}'
    for falsy in ("", None, 0, 0.0, False, []):
        assert not is_truthy(falsy)
    for truthy in ("0", "false", 1, -0.5, [0], {}, True):
        assert is_truthy(truthy)


def test_log_builtins_write_to_the_script_logger(caplog) -> None:
    with caplog.at_level(logging.DEBUG, logger="apps.basic.script"):
        call("LOG_WARN", "disk", 90, "%")
        call("LOG_INFO", "x" * 10_000)
    assert caplog.records[0].levelno == logging.WARNING
    assert caplog.records[0].getMessage() == "script: disk 90 %"
    assert len(caplog.records[1].getMessage()) < 2_100


def test_unexpected_python_errors_are_wrapped_as_builtin_errors() -> None:
    nested: list = []
    for _ in range(5000):
        nested = [nested]
    with pytest.raises(BuiltinError, match=r"^TOJSON: "):
        call("TOJSON", nested)


# --- contract properties ----------------------------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**15), max_value=10**15)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "1", "-3.5", "2024-03-15", "2024-03-15T10:00:00", "25/12/2024", "day",
                       "month", "yyyy", "m", "#,##0.00", "C2[pt]", "N2", "@!", "YYYY-MM-DD", "DESC", ","])
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=5),
    max_leaves=12,
)


def _is_json_value(value) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return True  # callers may pass NaN through identity functions (IIF, FIRST...)
    if isinstance(value, list):
        return all(_is_json_value(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json_value(v) for k, v in value.items())
    return False


@pytest.mark.parametrize("name", sorted(BUILTINS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_builtin_raises_only_builtin_error_for_any_json_arguments(name, data) -> None:
    builtin = BUILTINS[name]
    upper = builtin.max_args if builtin.max_args is not None else builtin.min_args + 4
    count = data.draw(st.integers(min_value=builtin.min_args, max_value=upper), label="argc")
    args = data.draw(st.lists(json_values, min_size=count, max_size=count), label="args")
    try:
        result = builtin.fn(FixedContext(NOW, seed=1), *args)
    except BuiltinError as exc:
        assert str(exc).startswith(f"{name}: ")
        return
    assert _is_json_value(result)
    json.dumps(result, default=None)  # must be serialisable as-is


def test_error_messages_never_leak_python_type_names_for_common_mistakes() -> None:
    for name, args in [("LEFT", ("a", "b")), ("DATEADD", (None, 1, "day")), ("SUM", ([{}],))]:
        try:
            call(name, *args)
        except BuiltinError as exc:
            assert not re.search(r"NoneType|TypeError|Traceback", str(exc))


def _doubling(times: int) -> list:
    """A small value in memory whose text doubles with every level (shared sub-arrays)."""
    value: list = [1]
    for _ in range(times):
        value = [value, value]
    return value


@pytest.mark.parametrize("name", ["TOJSON", "JOIN", "TOYAML", "STR", "UNIQUE", "SORT"])
def test_text_of_huge_shared_arrays_is_refused_quickly(name: str) -> None:
    with pytest.raises(BuiltinError, match=rf"^{name}: .*1000000 characters"):
        call(name, _doubling(60))


def test_unique_and_sort_of_big_repeated_values_do_bounded_work(monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[int] = []  # length of every JSON text the builtins write to compare values
    dumps = json.dumps

    def counted_dumps(value, *args, **kwargs):
        text = dumps(value, *args, **kwargs)
        written.append(len(text))
        return text

    monkeypatch.setattr(json, "dumps", counted_dumps)
    big = " " * 999_000
    assert call("UNIQUE", [big] * 2000) == [big]
    assert written == []  # text keys: hashed, never written as JSON (2000 times)
    assert call("UNIQUE", [[big]] * 2000) == [[big]]
    assert call("SORT", [[big]] * 2000) == [[big]] * 2000
    assert written == [len(big) + 4] * 2  # one shared array: its JSON written once per call, not 2000 times
    distinct = [[big, i] for i in range(30)]
    for name in ("UNIQUE", "SORT"):
        written.clear()
        with pytest.raises(BuiltinLimitError, match=rf"^{name}: arrays or maps too large to compare"):
            call(name, distinct)
        assert sum(written) <= MAX_KEY_TEXT_CHARS + len(big) + 20  # stopped at the bound, not all 30 written
    monkeypatch.undo()
    mixed = [1, 1.0, "1", True, None, None, float("nan"), float("nan"), -0.0, 0.0, [1], [1]]
    assert json.dumps(call("UNIQUE", mixed)) == '[1, 1.0, "1", true, null, NaN, -0.0, 0.0, [1]]'


def test_index_of_and_contains_bound_the_work_of_comparing_arrays() -> None:
    row = list(range(90_000))
    rows = [[*row[:-1], -1]] * 30
    for name in ("INDEX_OF", "CONTAINS"):
        with pytest.raises(BuiltinLimitError, match="too large to compare"):
            call(name, rows, row)
    assert call("INDEX_OF", [[1], [2]], [2]) == 1


@pytest.mark.parametrize("name", ["TOJSON", "JOIN", "TOYAML"])
def test_self_referencing_values_are_refused(name: str) -> None:
    loop: list = [1]
    loop.append(loop)
    selfish: dict = {}
    selfish["me"] = selfish
    for value in (loop, [selfish]):
        with pytest.raises(BuiltinError, match=rf"^{name}: value contains itself"):
            call(name, value)


def test_join_stops_as_soon_as_the_result_is_too_long() -> None:
    big = "x" * 600_000
    assert len(call("JOIN", [big], "")) == 600_000
    with pytest.raises(BuiltinError, match="JOIN: result would exceed"):
        call("JOIN", [big, big, big], "")


def test_shared_values_still_encode_normally() -> None:
    inner = [1, 2]
    assert call("TOJSON", {"a": inner, "b": inner}) == '{"a": [1, 2], "b": [1, 2]}'
    assert call("JOIN", [inner, inner], ";") == "[1, 2];[1, 2]"
