"""One compiled Program is shared by the threads of a process (the per-process program cache of
apps/bots/runtime.py): runs of it at the same time must not see each other's values. A long operator chain
(compiled to one loop by `Compiler.binary_chain`) kept its running value in a cell of the compiled program,
so a run could read another run's intermediate value: another user's data, and a wrong result."""

from __future__ import annotations

import sys
import threading

from apps.basic.compiler import _CHAIN_MIN_LINKS, compile_source
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM

THREADS = 8
RUNS_PER_THREAD = 150


def _run_concurrently(source: str, expected: object) -> list[str]:
    program = compile_source(source, "script")
    problems: list[str] = []
    barrier = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(RUNS_PER_THREAD):
            n = t * 1_000_000 + i
            r = VM(program, InMemoryHost()).start({"n": n, "s": f"t{t}-{i}:"})
            want = expected(n, f"t{t}-{i}:")  # type: ignore[operator]
            if r.status != "done" or r.value != want:
                problems.append(f"thread {t} run {i}: {r.status} {r.value!r} {r.error}, wanted {want!r}")
                return

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter allows
    try:
        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    finally:
        sys.setswitchinterval(old)
    return problems


def test_concurrent_runs_of_one_program_keep_their_own_chain_values() -> None:
    links = _CHAIN_MIN_LINKS * 4
    source = ("x = n" + " + 1" * links + "\n"
              "y = s" + ' & "."' * links + "\n"
              "RETURN [x, y]\n")
    problems = _run_concurrently(source, lambda n, s: [n + links, s + "." * links])
    assert not problems, problems[:5]


def test_concurrent_runs_with_function_calls_inside_the_chain() -> None:
    # a FUNCTION call in a right operand runs statements of its own in the middle of the chain
    links = _CHAIN_MIN_LINKS + 8
    source = ("FUNCTION ID(v)\n  w = v\n  RETURN w\nEND FUNCTION\n"
              "x = n" + " + ID(1)" * links + "\n"
              "RETURN x\n")
    problems = _run_concurrently(source, lambda n, s: n + links)
    assert not problems, problems[:5]
