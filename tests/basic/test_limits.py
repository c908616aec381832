"""Sandbox limits of `apps/basic/limits.py`: every resource a script can consume is bounded."""

from __future__ import annotations

import time

from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM

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
    result, seconds = _timed_start(NESTED_CALLS_IN_EXPRESSIONS, max_instructions=200_000)
    assert result.status == "error" and "instruction budget" in result.error["message"]
    assert seconds < QUICK_SECONDS
    assert result.instructions < 200_000 + 200_000  # at most a small overshoot, not millions


def test_wall_clock_limit_applies_inside_functions_called_inside_expressions() -> None:
    result, seconds = _timed_start(NESTED_CALLS_IN_EXPRESSIONS, max_instructions=10**12, max_seconds=0.5)
    assert result.status == "error" and "longer than 0.5 seconds" in result.error["message"]
    assert seconds < QUICK_SECONDS
