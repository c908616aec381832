"""The memory a run holds is bounded (limits.MAX_HELD_BYTES, apps/basic/memory.py): a script storing big texts
in a map ends with the memory-limit error once it holds about the limit, while one building and dropping big
texts runs on; a MemoryError inside a run is the same clean limit error, not "internal error".

The limit is lowered to 32 MiB here (as a host may set it), so these tests allocate tens of megabytes, not the
gigabytes the default limit is about. Counts are asserted, never timings.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from apps.basic import limits
from apps.basic.builtins import BUILTINS, Builtin, _guarded
from apps.basic.compiler import compile_source
from apps.basic.host import HostError, InMemoryHost
from apps.basic.vm import VM, RunResult
from tests.bench.bench_basic import LOOP_SCRIPT

LIMIT = 32 * 1024 * 1024
LIMIT_ERROR = "memory limit: this script holds more than 32 MiB of values (texts, arrays and maps)"
OUT_OF_MEMORY = "memory limit: the server ran out of memory while running this script"
# A text of a million characters (a builtin's result is at most that long): about 1 MB held.
MEGA = "s = SPACE(1000000)\n"
MEGA_BYTES = 1_000_000 + 49  # what a text of a million ASCII characters takes
# The reviewer's 9 MB text.
NINE = MEGA + "big = s & s & s & s & s & s & s & s & s\n"


@pytest.fixture(autouse=True)
def small_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """The host's override of the default limit (the VM reads limits.MAX_HELD_BYTES when it is made)."""
    monkeypatch.setattr(limits, "MAX_HELD_BYTES", LIMIT, raising=False)


def _run(source: str, host: InMemoryHost | None = None, **vm_kwargs: object) -> tuple[RunResult, InMemoryHost]:
    host = host or InMemoryHost()
    return VM(compile_source(source), host, **vm_kwargs).start(), host  # type: ignore[arg-type]


def _stored(host: InMemoryHost) -> int:
    """How many items the script stored before it stopped: it TALKs the count after each store."""
    return int(host.messages[-1]) if host.messages else 0


def test_the_reviewers_script_ends_at_the_memory_limit_after_holding_about_the_limit() -> None:
    # 9 MB texts stored in a map, one per iteration: this held 2.6 GB in 1.8 s, and at 1000 iterations died as
    # "internal error" (MemoryError).
    result, host = _run(NINE + 'm = #{}\nFOR i = 1 TO 8\n  m["k" & i] = big & i\n  TALK i\nNEXT\nTALK "all stored"')
    assert result.status == "error" and result.error == {"line": 5, "message": LIMIT_ERROR}
    # s and big hold 10 MB; each stored text 9 MB; the one being built counts too (it exists).
    held_before = 10 * MEGA_BYTES
    assert (LIMIT - held_before) // (9 * MEGA_BYTES) - 1 <= _stored(host) <= (LIMIT - held_before) // (9 * MEGA_BYTES)


def test_the_count_stored_before_the_error_matches_the_limit() -> None:
    result, host = _run(MEGA + "a = []\nFOR i = 1 TO 60\n  a[i - 1] = s & i\n  TALK i\nNEXT")
    assert result.status == "error" and result.error["message"] == LIMIT_ERROR and result.error["line"] == 4
    # 1 MB held by s, then 1 MB per stored text: stopped when the next one would pass 32 MiB (33.5 MB).
    assert LIMIT // MEGA_BYTES - 3 <= _stored(host) <= LIMIT // MEGA_BYTES - 1


def test_the_vm_argument_overrides_the_limit() -> None:
    source = MEGA + "a = []\nFOR i = 1 TO 60\n  a[i - 1] = s & i\n  TALK i\nNEXT"
    result, host = _run(source, max_memory=16 * 1024 * 1024)
    assert result.status == "error" and result.error["message"] == (
        "memory limit: this script holds more than 16 MiB of values (texts, arrays and maps)")
    assert 13 <= _stored(host) <= 16


def test_building_and_dropping_big_texts_many_times_is_not_holding_them() -> None:
    # 400 texts of a million characters built and dropped (400 MB allocated in all, ~12 times the limit), and a
    # text grown to 8 MB and started again, ten times: only what is held at once counts.
    result, _host = _run(MEGA + textwrap.dedent("""\
        FOR i = 1 TO 400
          x = s & i
        NEXT
        FOR round = 1 TO 10
          t = ""
          FOR j = 1 TO 8
            t = t & s
          NEXT
        NEXT
        RETURN LEN(x) + LEN(t)"""))
    assert result.status == "done" and result.value == 1_000_003 + 8_000_000


def test_a_script_just_under_the_limit_completes() -> None:
    # 28 texts of a million characters and s: ~29 MB of 33.5.
    big, _ = _run(MEGA + "a = []\nFOR i = 1 TO 28\n  a[i - 1] = s & i\nNEXT\nRETURN UBOUND(a) + 1")
    assert big.status == "done" and big.value == 28
    # 10 000 texts of 2 000 characters in a map (~21 MB, below the tracked size: found by measuring).
    small, _ = _run('s = SPACE(2000)\nm = #{}\nFOR i = 1 TO 10000\n  m["k" & i] = s & i\nNEXT\nRETURN LEN(m["k1"])')
    assert small.status == "done" and small.value == 2001


def test_many_small_texts_past_the_limit_are_found_by_measuring() -> None:
    result, host = _run('s = SPACE(2000)\nm = #{}\nFOR i = 1 TO 40000\n  m["k" & i] = s & i\n  n = i\nNEXT\n'
                        'TALK "all stored"')
    assert result.status == "error" and result.error["message"] == LIMIT_ERROR
    assert "all stored" not in host.messages


@pytest.mark.parametrize("trap", ["ON ERROR RESUME NEXT\n", "ON ERROR GOTO handler\n"])
def test_the_memory_limit_cannot_be_trapped_by_on_error(trap: str) -> None:
    result, host = _run(trap + MEGA + 'a = []\nFOR i = 1 TO 60\n  a[i - 1] = s & i\nNEXT\nTALK "after"\nEND\n'
                        'handler:\nTALK "handled"\nRESUME NEXT')
    assert result.status == "error" and result.error["message"] == LIMIT_ERROR
    assert host.messages == []


def test_the_memory_limit_cannot_be_caught_by_try() -> None:
    result, host = _run(MEGA + 'a = []\nTRY\n  FOR i = 1 TO 60\n    a[i - 1] = s & i\n  NEXT\nCATCH e\n'
                        '  TALK "caught " & e\nEND TRY\nTALK "after"')
    assert result.status == "error" and result.error["message"] == LIMIT_ERROR
    assert host.messages == []


def test_values_not_stored_yet_count_an_array_literal_being_filled() -> None:
    items = ", ".join(f"s & {i}" for i in range(60))  # 60 MB before anything is stored
    result, _host = _run(MEGA + f"x = [{items}]\nRETURN 1")
    assert result.status == "error" and result.error == {"line": 2, "message": LIMIT_ERROR}


def test_values_from_the_host_count() -> None:
    class FreshTexts(InMemoryHost):
        served = 0

        def http(self, method: str, url: str, data: object, headers: dict) -> object:
            self.served += 1
            return {"body": str(self.served % 10) * 1_000_000}  # a new text each time, as a real response is

    result, host = _run('a = []\nFOR i = 1 TO 60\n  a[i - 1] = GET "https://93.184.216.34/x"\n  TALK i\nNEXT',
                        host=FreshTexts())
    assert result.status == "error" and result.error["message"] == LIMIT_ERROR
    assert LIMIT // MEGA_BYTES - 3 <= _stored(host) <= LIMIT // MEGA_BYTES


def test_a_script_run_by_call_counts_with_its_caller() -> None:
    callee = compile_source(MEGA + "b = []\nFOR i = 1 TO 20\n  b[i - 1] = s & i\nNEXT\nRETURN 1")

    class Calls(InMemoryHost):
        def call_script(self, name: str, args: list) -> object:  # as apps.bots.runtime.script_call runs one
            result = VM(callee, self).start()
            if result.status == "error":
                raise HostError(f"{name}: {result.error['message']}")
            return result.value

    # Caller and callee each hold ~21 MB, under the limit alone and over it together.
    caller = MEGA + 'a = []\nFOR i = 1 TO 20\n  a[i - 1] = s & i\nNEXT\nx = CALL "other"\nTALK "after"'
    result, host = _run(caller, host=Calls())
    assert result.status == "error" and result.error["message"] == f"other: {LIMIT_ERROR}"
    assert host.messages == []
    alone, _ = _run(MEGA + 'x = CALL "other"\nRETURN x', host=Calls())
    assert alone.status == "done" and alone.value == 1


class _OutOfMemoryHost(InMemoryHost):
    def http(self, method: str, url: str, data: object, headers: dict) -> object:
        raise MemoryError


def test_a_memory_error_in_a_run_is_the_memory_limit_error_not_an_internal_error() -> None:
    result, host = _run('ON ERROR RESUME NEXT\nx = GET "https://93.184.216.34/x"\nTALK "after"',
                        host=_OutOfMemoryHost())
    assert result.status == "error" and result.error == {"line": 2, "message": OUT_OF_MEMORY}
    assert host.messages == []  # not trapped: the run ends
    following, _ = _run(MEGA + "RETURN LEN(s & s)")  # the next run in the process is fine
    assert following.status == "done" and following.value == 2_000_000


def test_a_memory_error_in_a_builtin_is_the_memory_limit_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def exhausted(c: object) -> object:
        raise MemoryError

    monkeypatch.setitem(BUILTINS, "EXHAUSTED", Builtin("EXHAUSTED", _guarded("EXHAUSTED", exhausted), 0, 0))
    result, host = _run('TRY\n  x = EXHAUSTED()\nCATCH e\n  TALK "caught"\nEND TRY')
    assert result.status == "error" and result.error == {
        "line": 2, "message": "memory limit: the server ran out of memory in EXHAUSTED while running this script"}
    assert host.messages == []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit and /proc/self/statm")
def test_running_out_of_memory_for_real_ends_the_run_and_the_process_runs_the_next_one() -> None:
    # The reviewer's case: under an address-space limit (the 3 GB ulimit, here 160 MB above what the process
    # has), with a memory limit far above it, the run ends with the limit error and the next script runs.
    program = textwrap.dedent(f"""\
        import json, resource
        from apps.basic import limits
        from apps.basic.compiler import compile_source
        from apps.basic.host import InMemoryHost
        from apps.basic.vm import VM
        hoard = compile_source({NINE + 'm = #{}' + chr(10) + 'FOR i = 1 TO 1000' + chr(10) + 'm["k" & i] = big & i'
                                + chr(10) + 'NEXT'!r})
        after = compile_source('s = SPACE(1000000)' + chr(10) + 'RETURN LEN(s & s & s)')
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * resource.getpagesize()
        cap = size + 160 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        limits.MAX_HELD_BYTES = 1 << 40
        first = VM(hoard, InMemoryHost()).start()
        second = VM(after, InMemoryHost()).start()
        print(json.dumps([first.status, first.error, second.status, second.value]))
        """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", program], cwd=root, capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    status, error, next_status, next_value = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == "error" and error == {"line": 5, "message": OUT_OF_MEMORY}
    assert next_status == "done" and next_value == 3_000_000


def test_measuring_costs_an_ordinary_script_almost_nothing() -> None:
    program = compile_source(LOOP_SCRIPT)  # the benchmark's loop: ~1.1M instructions, a few variables
    bounded = VM(program, InMemoryHost(), max_instructions=50_000_000, max_memory=limits.MAX_HELD_BYTES).start()
    never = VM(program, InMemoryHost(), max_instructions=50_000_000, max_memory=1 << 60).start()  # never measured
    assert bounded.status == never.status == "done" and bounded.value == never.value
    assert bounded.instructions - never.instructions <= never.instructions // 1000


def test_held_bytes_counts_shared_values_once_and_stops_past_the_limit() -> None:
    from apps.basic import memory

    text = "x" * 10_000
    row = {"name": text, "n": 10**6}
    shared = [row] * 1000 + [text] * 1000
    size, _visited = memory.held_bytes([shared, shared], 1 << 40)
    assert size < 60_000  # one row, one text, the array's slots: not 1000 copies of 10 KB
    cyclic: list = [text]
    cyclic.append(cyclic)
    assert memory.held_bytes([cyclic], 1 << 40)[0] < 11_000
    many = [str(i) * 1000 for i in range(1000)]  # distinct texts: each counted, as CPython sizes them
    roots = [many]
    assert memory.held_bytes(roots, 1 << 40) == (
        sys.getsizeof(roots) + sys.getsizeof(many) + sum(map(sys.getsizeof, many)), 1 + 1000)
    stopped, visited = memory.held_bytes([many, list(many)], 100_000)  # the first array passes the limit
    assert stopped > 100_000 and visited == 2 + 1000


def test_a_tracked_value_is_let_go_once_nothing_else_holds_it() -> None:
    from apps.basic import memory

    gauge = memory.Gauge(LIMIT, lambda: [])
    kept, dropped = "k" * 5000, "d" * 5000
    gauge.track(kept, 5049)
    gauge.track(dropped, 5049)
    del dropped
    gauge.prune()
    assert [value for value, _size in gauge.fresh.values()] == [kept]
    assert gauge.fresh_bytes == gauge.tracked_bytes == 5049
