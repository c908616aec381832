"""Benchmark of the BASIC engine: `python -m tests.bench.bench_basic` (also `make bench`).

Prints VM instructions per second on a loop-heavy script (goal >= 1M/s), the compile time of a large
generated script, and the cost of saving + restoring the state at a HEAR. Not a pytest test.
"""

from __future__ import annotations

import datetime
import json
import time

from apps.basic.builtins import FixedContext
from apps.basic.compiler import compile_source
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM

LOOP_SCRIPT = """total = 0
FOR i = 1 TO 300000
  total = total + i
  IF total > 1000000000 THEN
    total = 0
  END IF
NEXT
j = 0
WHILE j < 100000
  j = j + 1
WEND
RETURN total
"""

# A few hundred distinct statements repeated: about the size of the largest upstream templates x10.
_BLOCK = """
' section {n}
IF choice{n} = "{n}" THEN
  TALK "You picked option {n}: ${{choice{n}}}"
  items{n} = [1, 2, 3]
  FOR EACH it IN items{n}
    total = total + it * {n}
  NEXT
ELSEIF choice{n} = "x" THEN
  SET BOT MEMORY "k{n}", total
ELSE
  rows = FIND "table{n}", "id={n}"
END IF
SELECT CASE total MOD 3
  CASE 0
    TALK "zero"
  CASE 1, 2
    TALK FORMAT(total, "#,##0.00")
END SELECT
"""
LARGE_SCRIPT = "total = 0\n" + "".join(_BLOCK.format(n=n) for n in range(500))

HEAR_SCRIPT = """data = []
FOR i = 1 TO 200
  data = PUSH(data, #{ id: i, name: "row " + i, tags: ["a", "b"] })
NEXT
HEAR answer
TALK answer
"""


def bench_loop() -> tuple[int, float]:
    program = compile_source(LOOP_SCRIPT)
    best = None
    for _ in range(3):
        vm = VM(program, InMemoryHost(), max_instructions=50_000_000)
        started = time.perf_counter()
        result = vm.start()
        elapsed = time.perf_counter() - started
        assert result.status == "done", result
        if best is None or elapsed < best[1]:
            best = (result.instructions, elapsed)
    assert best is not None
    return best


def bench_compile() -> tuple[int, float]:
    started = time.perf_counter()
    compile_source(LARGE_SCRIPT)
    return LARGE_SCRIPT.count("\n"), time.perf_counter() - started


def bench_hear_roundtrip(rounds: int = 200) -> tuple[int, float]:
    program = compile_source(HEAR_SCRIPT)
    ctx = FixedContext(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    first = VM(program, InMemoryHost(), ctx=ctx).start()
    assert first.status == "waiting"
    size = len(json.dumps(first.state))
    started = time.perf_counter()
    for _ in range(rounds):
        saved = json.dumps(first.state)
        state = json.loads(saved)
        vm = VM(program, InMemoryHost(), ctx=ctx)
        vm._load(state)  # restore only, to measure the state overhead rather than the script
    return size, (time.perf_counter() - started) / rounds


def main() -> None:
    instructions, elapsed = bench_loop()
    print(f"vm: {instructions} instructions in {elapsed:.3f} s = {instructions / elapsed / 1e6:.2f} M instructions/s")
    lines, compile_time = bench_compile()
    print(f"compile: {lines} lines in {compile_time * 1000:.1f} ms ({lines / compile_time:,.0f} lines/s)")
    size, per_round = bench_hear_roundtrip()
    print(f"hear state: {size} bytes, save+restore {per_round * 1e6:.0f} us per HEAR")


if __name__ == "__main__":
    main()
