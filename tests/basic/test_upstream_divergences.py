"""The deliberate differences from upstream listed in apps/basic/README.md ("Where we differ from upstream")."""

from __future__ import annotations

from tests.basic.conftest import run


def _value(source: str, *inputs: str) -> object:
    r = run(source, *inputs)
    assert r.result.status == "done", r.result
    return r.result.value


def test_arithmetic_and_text_functions() -> None:
    assert _value('RETURN [7 / 2, 7 \\ 2, INT(-2.5), LEN("é"), INSTR("é😀x", "x"), ROUND(1.005, 2), ROUND(2.5)]') == [
        3.5, 3, -3, 1, 3, 1.01, 3]


def test_filter_conditions() -> None:
    assert _value('rows = [#{Name: "A", n: 1}, #{name: "B"}]\n'
                  'RETURN [LEN(FILTER(rows, "NAME = \'A\' AND n=1")), LEN(FILTER(rows, "n="))]') == [1, 1]


def test_a_menu_of_one_string_is_one_option() -> None:
    assert _value('HEAR x AS "a, b"\nRETURN x', "b") == "a, b"


def test_with_updates_the_map_already_in_the_variable() -> None:
    assert _value('''list = []
FOR i = 1 TO 2
  WITH item
    n = i
  END WITH
  list = PUSH(list, item)
NEXT
RETURN list''') == [{"n": 2}, {"n": 2}]
