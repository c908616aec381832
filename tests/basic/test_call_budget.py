"""A script run by CALL runs on its caller's instruction budget and clock: the whole run, caller and every
script it calls, is bounded by one budget and one deadline. Each CALL used to get a fresh budget and time
limit of its own and only the CALL instruction counted against the caller, so a loop of CALLs of a costly
script was bounded by neither (1M CALLs of a script running 4M instructions)."""

from __future__ import annotations

from apps.basic import limits
from apps.basic.compiler import compile_source
from apps.basic.host import HostError, InMemoryHost
from apps.basic.vm import VM

COSTLY = compile_source("""n = 0
FOR j = 1 TO 5000
  n = n + 1
NEXT j
RETURN n
""", "costly")
ENDLESS = compile_source("""n = 0
DO
  n = n + 1
LOOP
""", "endless")
MAX_CALLS = 200  # where the host stops a run the old engine did not bound


def _host(program: object, calls: list[int], **vm_kwargs: object) -> InMemoryHost:
    """An InMemoryHost whose CALL "costly" runs `program` in a VM of its own (as apps.bots.runtime.script_call
    does) and counts the calls; past MAX_CALLS it refuses, so an unbounded caller still ends."""
    host = InMemoryHost()

    def costly(args: list) -> object:
        calls.append(1)
        if len(calls) > MAX_CALLS:
            raise HostError(f"more than {MAX_CALLS} calls")
        result = VM(program, host, **vm_kwargs).start({})  # type: ignore[arg-type]
        if result.status != "done":
            raise HostError(f"costly: {(result.error or {}).get('message')}")
        return result.value

    host.scripts["costly"] = costly
    return host


LOOP_OF_CALLS = """total = 0
FOR i = 1 TO 1000000
  total = total + 1
  CALL "costly"
NEXT i
RETURN total
"""


def test_a_loop_of_calls_ends_at_the_callers_instruction_budget() -> None:
    calls: list[int] = []
    budget = 100_000
    result = VM(compile_source(LOOP_OF_CALLS, "caller"), _host(COSTLY, calls), max_instructions=budget).start()
    assert result.status == "error", result
    assert result.error["message"].startswith(f"instruction budget of {budget} exceeded"), result.error
    # ~10 000 instructions per call: the budget is spent in the called scripts, about budget / 10 000 calls
    assert 5 <= len(calls) <= 12, len(calls)
    assert budget < result.instructions <= budget + 2 * limits.CLOCK_CHECK_INTERVAL, result.instructions


def test_on_error_resume_next_does_not_trap_the_budget_of_a_called_script() -> None:
    calls: list[int] = []
    budget = 100_000
    source = "ON ERROR RESUME NEXT\n" + LOOP_OF_CALLS
    result = VM(compile_source(source, "caller"), _host(COSTLY, calls), max_instructions=budget).start()
    assert result.status == "error", result
    assert result.error["message"].startswith(f"instruction budget of {budget} exceeded"), result.error
    assert len(calls) <= 12, len(calls)


def test_a_called_script_stops_at_the_callers_deadline() -> None:
    calls: list[int] = []
    # the called script's own limits are far away; the caller's clock is what ends the run
    host = _host(ENDLESS, calls, max_instructions=10**12, max_seconds=30.0)
    result = VM(compile_source(LOOP_OF_CALLS, "caller"), host, max_instructions=10**12, max_seconds=0.5).start()
    assert result.status == "error", result
    assert result.error["message"] == "run took longer than 0.5 seconds", result.error
    assert len(calls) == 1


def test_an_ordinary_call_returns_its_value_and_counts_in_the_run() -> None:
    calls: list[int] = []
    source = 'x = 0\nCALL "costly"\nRETURN x + 1\n'
    host = _host(COSTLY, calls)
    host.scripts["value"] = lambda args: VM(COSTLY, host).start({}).value
    result = VM(compile_source('a = CALL "value"\nCALL "costly"\nRETURN a + 1\n', "caller"), host).start()
    assert result.status == "done", result
    assert result.value == 5001
    assert len(calls) == 1
    assert result.instructions > 2 * 10_000  # both called scripts' instructions are the run's
    assert VM(compile_source(source, "caller"), host).start().value == 1
