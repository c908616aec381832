"""Sandbox limits of `apps/basic/limits.py`: every resource a script can consume is bounded."""

from __future__ import annotations

import time

import pytest

from apps.basic import values as V
from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
from apps.basic.limits import CLOCK_CHECK_INTERVAL, MAX_VALUE_DEPTH
from apps.basic.vm import VM
from tests.basic.conftest import run

# A slice that takes longer than this in a limits test means the limit was not enforced (the
# limits under test are set far below it).
QUICK_SECONDS = 5.0

NESTED_CALLS_IN_EXPRESSIONS = '''FUNCTION g()
  FOR i = 1 TO 1000
  NEXT
  RETURN 1
END FUNCTION
FUNCTION f()
  FOR j = 1 TO 1000
    x = g() + 0
  NEXT
  RETURN 1
END FUNCTION
DO
  y = f() + 0
LOOP'''


def _timed_start(source: str, **vm_kwargs: object) -> tuple[object, float]:
    t0 = time.monotonic()
    result = VM(compile_source(source), InMemoryHost(), **vm_kwargs).start()  # type: ignore[arg-type]
    return result, time.monotonic() - t0


def test_instruction_budget_counts_functions_called_inside_expressions() -> None:
    result = VM(compile_source(NESTED_CALLS_IN_EXPRESSIONS), InMemoryHost(), max_instructions=200_000).start()
    assert result.status == "error" and "instruction budget of 200000 exceeded" in result.error["message"]
    # Stopped at the budget (counted in steps of one clock check), not millions of instructions later.
    assert 200_000 < result.instructions <= 200_000 + CLOCK_CHECK_INTERVAL


def test_wall_clock_limit_applies_inside_functions_called_inside_expressions() -> None:
    result, seconds = _timed_start(NESTED_CALLS_IN_EXPRESSIONS, max_instructions=10**12, max_seconds=0.5)
    assert result.status == "error" and "longer than 0.5 seconds" in result.error["message"]
    assert seconds < QUICK_SECONDS


def test_a_deeply_nested_value_is_a_basic_error_at_hear_not_a_crash() -> None:
    r = run('a = []\nFOR i = 1 TO 5000\na = [a]\nNEXT\nHEAR x')
    assert r.result.status == "error" and r.result.error["line"] == 5
    assert r.result.error["message"] == (
        f"cannot save the suspended state: value nested deeper than {MAX_VALUE_DEPTH} levels")


def test_talk_and_return_of_a_deeply_nested_value_are_basic_errors() -> None:
    talk = run('a = []\nFOR i = 1 TO 5000\na = [a]\nNEXT\nTALK a')
    assert talk.result.status == "error" and talk.result.error["line"] == 5
    assert "nested deeper than" in talk.result.error["message"]
    returned = run('a = []\nFOR i = 1 TO 5000\na = [a]\nNEXT\nRETURN a')
    assert returned.result.status == "error" and "nested deeper than" in returned.result.error["message"]
    cyclic = run('a = [1]\na[0] = a\nRETURN a')
    assert cyclic.result.status == "error" and "contains itself" in cyclic.result.error["message"]


def test_nesting_up_to_the_limit_still_suspends_and_resumes() -> None:
    src = f'a = []\nFOR i = 1 TO {MAX_VALUE_DEPTH - 1}\na = [a]\nNEXT\nHEAR x\nRETURN a'
    r = run(src, "hi")
    assert r.result.status == "done" and str(r.result.value).count("[") == MAX_VALUE_DEPTH


def test_a_shared_array_reached_deeper_still_counts_its_full_depth() -> None:
    deep: list = []
    for _ in range(MAX_VALUE_DEPTH - 2):
        deep = [deep]
    V.check_depth([deep])  # MAX_VALUE_DEPTH levels
    with pytest.raises(V.ValueTooDeep):
        V.check_depth([deep, [deep]])  # visited first at depth 1, then again at depth 2
