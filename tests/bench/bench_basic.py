"""Benchmark of the BASIC engine: `python -m tests.bench.bench_basic` (also `make bench`).

Prints VM instructions per second on a loop-heavy script (goal >= 1M/s), the compile time of a large
generated script, the cost of saving + restoring the state at a HEAR, and the time the engine's guards take
on the hostile inputs of tests/basic (the tests check the bound by counts; the time is printed here). Not a
pytest test.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from apps.basic import values
from apps.basic.builtins import BUILTINS, MAX_BUILTIN_ITEMS, BuiltinError, FixedContext
from apps.basic.cli import main as cli_main
from apps.basic.compiler import compile_source
from apps.basic.errors import BasicRuntimeError
from apps.basic.host import MAX_FILTER_CHARS, HostError, InMemoryHost, parse_filter
from apps.basic.vm import VM
from tests.basic.test_limits import NESTED_CALLS_IN_EXPRESSIONS as NESTED_CALLS  # the limits test's script

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


HUGE = 10**12
# The refusals of tests/basic/test_builtins.py::test_builtin_refuses_results_beyond_the_size_limits.
SIZE_REFUSALS = [("SPACE", (HUGE,)), ("REPEAT", ("ab", HUGE)), ("STRING", (HUGE, "x")), ("RANGE", (1, HUGE)),
                 ("RANGE", (0, -HUGE, -1)), ("FILL", (0, HUGE)), ("SPLIT", ("x" * (MAX_BUILTIN_ITEMS + 1), "")),
                 ("REPLACE", ("a" * 1000, "a", "b" * 10_000)), ("FORMAT", ("x" * 10_000, "@" * 1000)),
                 ("JOIN", (["x" * 1000] * 2000, "-")), ("CONCAT", ("x" * 600_000, "y" * 600_000)),
                 ("CONCAT", ([0] * 60_000, [1] * 60_000)), ("PUSH", ([0] * MAX_BUILTIN_ITEMS, 1))]


def _timed(action: Callable[[], object], *expected: type[BaseException]) -> float:
    """Seconds `action` takes, an exception of the `expected` types (a refusal) included."""
    started = time.perf_counter()
    with contextlib.suppress(*expected):
        action()
    return time.perf_counter() - started


def _tower(levels: int, leaf: object = 1) -> list:
    value: list = [leaf]
    for _ in range(levels):
        value = [value, value]
    return value


def bench_guards() -> None:
    ctx = FixedContext(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))

    def builtin(name: str, *args: object) -> Callable[[], object]:
        return lambda: BUILTINS[name].fn(ctx, *args)

    worst = max((_timed(builtin(name, *args), BuiltinError), name) for name, args in SIZE_REFUSALS)
    print(f"builtin size refusals ({len(SIZE_REFUSALS)} cases): slowest {worst[1]} {worst[0] * 1000:.1f} ms  "
          "goal < 1 s each")
    pow_round = sum(_timed(action, BuiltinError) for action in (
        builtin("POW", 1, HUGE), builtin("POW", 2, 100), builtin("POW", 10, 10**6),
        builtin("ROUND", 5, -(10**9)), builtin("ROUND", 1.23456, 10**9)))
    print(f"POW and ROUND with extreme exponents/digits: {pow_round * 1000:.2f} ms  goal < 1 s")
    big = " " * 999_000
    repeated = sum(_timed(action, BuiltinError) for action in (
        builtin("UNIQUE", [big] * 2000), builtin("UNIQUE", [[big]] * 2000), builtin("SORT", [[big]] * 2000),
        builtin("UNIQUE", [[big, i] for i in range(30)]), builtin("SORT", [[big, i] for i in range(30)])))
    print(f"UNIQUE/SORT of 2000 copies of a 1 MB value, and past the key-text bound: {repeated:.3f} s  goal < 5 s")

    half = (MAX_FILTER_CHARS - 10) // 2
    spaces = _timed(lambda: parse_filter("a=" + " " * half + "x" + " " * half + "y"))
    spaces += _timed(lambda: parse_filter("a" + " " * (MAX_FILTER_CHARS - 10)), HostError)
    print(f"FIND filter of {MAX_FILTER_CHARS} characters of space runs: {spaces * 1000:.2f} ms  goal < 1 s "
          "(31 s at 40 000 characters when it was quadratic)")
    long_filter = compile_source('x = FIND "t", "a=" & SPACE(20000) & "x" & SPACE(20000) & "y"')
    refused = _timed(lambda: VM(long_filter, InMemoryHost()).start())
    print(f"FIND with a 40 000-character filter, refused: {refused * 1000:.2f} ms  goal < 1 s")

    like = _timed(lambda: values.like("a" * 1_000_000, "%a%" * 300 + "b"))
    like += _timed(lambda: values.like("a" * 45, "%a%a%a%a%a%a%a%a%b"))
    print(f"LIKE with hundreds of %: {like * 1000:.2f} ms  goal < 2 s (39 s for 45 characters as a regex)")
    power = _timed(lambda: values.power(3, 30_000_000), BasicRuntimeError)
    print(f"3 ^ 30000000 refused: {power * 1e6:.1f} us  goal < 2 s for 40 of them")
    towers = _timed(lambda: values.equals(_tower(60), _tower(60)))
    towers += _timed(lambda: values.contains([_tower(40, 2)] * 1000 + [_tower(40)], _tower(40)))
    print(f"equality of separately built 2^60-element towers, and IN over 1000 of them: {towers * 1000:.1f} ms  "
          "goal < 2 s")

    program = compile_source(NESTED_CALLS)
    budget = _timed(lambda: VM(program, InMemoryHost(), max_instructions=200_000).start())
    print(f"200 000-instruction budget through functions called in expressions: {budget:.3f} s  goal < 5 s")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "loop.bas"
        script.write_text("i = 0\nWHILE TRUE\ni = i + 1\nWEND\n", encoding="utf-8")
        cli = _timed(lambda: cli_main(["run", str(script), "--json"], out=io.StringIO()))
    print(f"`basic run` of an endless loop, to the default instruction budget: {cli:.2f} s  goal < 20 s")


def main() -> None:
    instructions, elapsed = bench_loop()
    print(f"vm: {instructions} instructions in {elapsed:.3f} s = {instructions / elapsed / 1e6:.2f} M instructions/s")
    lines, compile_time = bench_compile()
    print(f"compile: {lines} lines in {compile_time * 1000:.1f} ms ({lines / compile_time:,.0f} lines/s)")
    size, per_round = bench_hear_roundtrip()
    print(f"hear state: {size} bytes, save+restore {per_round * 1e6:.0f} us per HEAR")
    bench_guards()


if __name__ == "__main__":
    main()
