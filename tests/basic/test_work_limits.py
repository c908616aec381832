"""Limits that must hold however a script is written: limit errors are never swallowed, the work of one
instruction is charged to the budget, and text is bounded while it is built (apps/basic/limits.py)."""

from __future__ import annotations

import pytest

from tests.basic.conftest import FIXED_NOW, run

# An 8-million-character text: doubling it once more passes MAX_STRING_CHARS (10 million).
EIGHT_MILLION = 's = SPACE(1000000)\nFOR i = 1 TO 3\n  s = s & s\nNEXT\n'


def test_a_limit_error_inside_a_case_test_ends_the_run() -> None:
    # CASE IS / CASE lo TO hi treat an error as a non-match (a text against a number range), but a limit
    # error is not the script's to handle: it ended as "no match" and the script went on.
    for case in ("CASE IS = LEN(s & s)", "CASE 1 TO LEN(s & s)"):
        r = run(EIGHT_MILLION + f'ON ERROR RESUME NEXT\nSELECT CASE 1\n  {case}\n    TALK "matched"\n'
                '  CASE ELSE\n    TALK "no match"\nEND SELECT\nTALK "went on"')
        assert r.result.status == "error", (case, r.host.messages)
        assert "string longer than" in r.result.error["message"]
        assert r.host.messages == []


def test_integer_functions_stay_within_the_language_numbers() -> None:
    # INT/FIX/FLOOR/CEIL/ROUND of a huge float returned a 1000-bit Python integer; past 63 bits the result is
    # the (whole) float itself, as the arithmetic operators give. CINT/CLNG refuse it (VB: Overflow).
    for fn in ("INT", "FIX", "FLOOR", "CEIL", "ROUND"):
        r = run(f"x = {fn}(1e300)\nRETURN [x, TYPEOF(x), {fn}(-7.5), {fn}(2 ^ 40 + 0.5) > 0]")
        assert r.result.status == "done", (fn, r.result.error)
        value, kind, small, positive = r.result.value
        assert value == 1e300 and kind == "float" and type(small) is int and positive is True
    for fn in ("CINT", "CLNG"):
        r = run(f'RETURN {fn}("1e300")')
        assert r.result.status == "error"
        assert r.result.error["message"] == f"{fn}: number too large for an integer ('1e300')"
        assert run(f"RETURN {fn}(2 ^ 40 + 0.4)").result.value == 2**40


def test_arithmetic_past_the_float_range_is_number_too_large_not_an_internal_error() -> None:
    for expression in ("INT(1e308) * INT(1e308)", "INT(1e308) + INT(1e308)", "FIX(-1e308) - FIX(1e308)",
                       'JSON_PARSE("1" & REPEAT("0", 350)) * 1', 'JSON_PARSE("1" & REPEAT("0", 350)) + 1'):
        r = run(f"RETURN {expression}")
        assert r.result.status == "error" and r.result.error["message"] == "number too large", (expression, r.result)
    trapped = run('ON ERROR RESUME NEXT\nx = INT(1e308) * INT(1e308)\nRETURN ERR.description')
    assert trapped.result.value == "number too large"


def test_the_state_size_limit_counts_utf8_bytes_not_characters() -> None:
    from apps.basic.limits import MAX_STATE_BYTES

    # 1.5 million emoji: 1.5 million characters, 6 million bytes as the state is stored.
    emoji = run('s = REPEAT(CHR(128512), 750000)\ns = s & s\nHEAR z')
    assert emoji.result.status == "error"
    assert emoji.result.error["message"].startswith("suspended state too large (")
    assert int(emoji.result.error["message"].split("(")[1].split()[0]) > MAX_STATE_BYTES
    ascii_text = run('s = REPEAT("a", 750000)\ns = s & s\nHEAR z')
    assert ascii_text.result.status == "waiting"


# One instruction that does much work, repeated 400 times: far fewer instructions than the budget, but far more
# work. The work is charged to the budget (apps/basic/meter.py), so the run ends with the budget error.
SETUP = ('a = RANGE(1, 20000)\nb = RANGE(1, 20000)\nbig = RANGE(1, 100000)\n'
         's = REPEAT("a", 500000)\ns = s & s & s & s & s\nm = {}\nFOR i = 1 TO 100\n  m["Key" & i] = i\nNEXT\n')
COSTLY = ["SORT(a)", "a = b", "JOIN(a)", "big + big", "TOJSON(a)", '"x" & a', "UNIQUE(a)", "CONTAINS(a, -1)",
          "-1 IN a", "SUM(a)", "MAX(a)", 'INSTR(s, "z")', "s & s", 'a = b OR "z" IN s']


def _budget_run(source: str, **limits: object) -> object:
    from apps.basic.compiler import compile_source
    from apps.basic.host import InMemoryHost
    from apps.basic.vm import VM

    return VM(compile_source(source), InMemoryHost(), **limits).start()  # type: ignore[arg-type]


def test_costly_instructions_are_charged_to_the_budget_in_proportion_to_their_work() -> None:
    for expression in COSTLY:
        result = _budget_run(SETUP + f"FOR j = 1 TO 400\n  x = {expression}\nNEXT\nRETURN 1", max_instructions=300_000)
        assert result.status == "error", expression
        assert "instruction budget of 300000 exceeded" in result.error["message"], (expression, result.error)
    cheap = _budget_run(SETUP + "FOR j = 1 TO 200\n  x = LEN(a) + UBOUND(big) + LEN(s) + m.key5\nNEXT\nRETURN x",
                        max_instructions=300_000)
    assert cheap.status == "done" and cheap.value == 20000 + 99999 + 2500000 + 5  # O(1) work is not charged


def test_a_budget_used_up_by_work_on_large_values_says_so_rather_than_endless_loop() -> None:
    worked = _budget_run("a = REVERSE(RANGE(1, 100000))\nFOR j = 1 TO 100\n  b = SORT(a)\nNEXT\nRETURN 1",
                         max_instructions=300_000)
    assert worked.status == "error" and "mostly by work on large values" in worked.error["message"]
    looped = _budget_run("DO\n  x = 1\nLOOP", max_instructions=300_000)
    assert looped.status == "error" and looped.error["message"].endswith("exceeded (endless loop?)")


def test_the_clock_is_looked_at_after_costly_instructions() -> None:
    # 1000 SORTs of 100 000 items are ~3000 instructions: the clock used to be looked at every 4096.
    result = _budget_run("a = REVERSE(RANGE(1, 100000))\nFOR j = 1 TO 1000\n  b = SORT(a)\nNEXT\nRETURN 1",
                         max_instructions=10**12, max_seconds=0.3)
    assert result.status == "error" and result.error["message"] == "run took longer than 0.3 seconds"


def test_an_oversized_sort_is_refused_before_sorting(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.basic import builtins

    keyed = []
    sort_key = builtins._sort_key
    monkeypatch.setattr(builtins, "_sort_key", lambda v, k: keyed.append(1) or sort_key(v, k))
    r = run("a = RANGE(1, 100000) + [0]\nON ERROR RESUME NEXT\nFOR j = 1 TO 1000\n  b = SORT(a, \"DESC\")\n"
            "  c = SORT_ASC(a)\n  d = REVERSE(a)\nNEXT\nRETURN ERR.description")
    assert r.result.status == "done" and r.result.value == "REVERSE: result would exceed 100000 items"
    assert keyed == []  # refused before any item was keyed (sorted, then refused, it took a second a call)
    refused = run("RETURN SORT(RANGE(1, 100000) + [0])").result
    assert refused.error["message"] == "SORT: result would exceed 100000 items"
    assert run("RETURN LEN(SORT(REVERSE(RANGE(1, 100000))))").result.value == 100000


class _Key(str):
    """A map key that counts how often the engine lower-cases it."""

    lowered = 0

    def lower(self) -> str:
        _Key.lowered += 1
        return str.lower(self)


def test_missing_members_of_a_large_map_do_not_lower_every_key_each_time() -> None:
    table = {_Key(f"Key{i}"): i for i in range(1000)}
    _Key.lowered = 0
    r = run('n = 0\nFOR i = 1 TO 200\n  IF m.nothere = NULL THEN n = n + 1\n  x = m["Nothere"]\n'
            '  IF "NOTHERE" IN m THEN n = 0\n  m.added = i\n  m.Key7 = i\nNEXT\n'
            'RETURN [n, m.key5, m.KEY999, m.added, m.key7, "KEY3" IN m, m["Key3"], m["KEY3"], LEN(m)]',
            args={"m": table})
    assert r.result.status == "done"
    assert r.result.value == [200, 5, 999, 200, 200, True, 3, None, 1001]
    assert _Key.lowered <= 1000 + 10  # the keys were lowered once (an index), not 1000 times per miss


def _yaml_lines_before(value: object, indent: int) -> list[str]:
    """TOYAML's lines as they were written before the text was bounded (the reference for its output)."""
    from apps.basic.builtins import _yaml_scalar

    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        lines = []
        for key, item in value.items():
            label = _yaml_scalar(str(key))
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{label}:")
                lines.extend(_yaml_lines_before(item, indent + 1))
            else:
                lines.append(f"{pad}{label}: {_yaml_lines_before(item, 0)[0]}")
        return lines
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            if isinstance(item, dict | list) and item:
                nested = _yaml_lines_before(item, indent + 1)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            else:
                lines.append(f"{pad}- {_yaml_lines_before(item, 0)[0]}")
        return lines
    return [pad + _yaml_scalar(value)]


def test_toyaml_writes_the_same_text_as_before() -> None:
    import random

    from apps.basic.builtins import BUILTINS, FixedContext

    rng = random.Random(3)
    toyaml = BUILTINS["TOYAML"].fn

    def value(depth: int) -> object:
        kind = rng.randrange(8 if depth < 4 else 5)
        scalars = [None, True, 1.5, 7, "a b", "", " x", "null", "k:v"]
        if kind < 5:
            return rng.choice(scalars)
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        return {rng.choice(["a", "B c", "", "1", "-"]) + str(i): value(depth + 1) for i in range(rng.randrange(4))}

    for _ in range(2000):
        v = value(0)
        assert toyaml(FixedContext(FIXED_NOW), v) == "\n".join(_yaml_lines_before(v, 0)), v


DEEP_LIST = 'v = []\nFOR d = 1 TO 300\n  v = PUSH(FILL("", 300), v)\nNEXT\n'  # 360 KB of JSON, 27 MB of YAML


def test_toyaml_is_bounded_as_it_is_written() -> None:
    import tracemalloc

    from apps.basic.builtins import BUILTINS, BuiltinError, FixedContext

    value: list = []
    for _ in range(300):  # DEEP_LIST (a RETURN value may not nest that deep)
        value = [*([""] * 300), value]
    tracemalloc.start()
    try:
        with pytest.raises(BuiltinError, match="TOYAML: result (would exceed|longer than) 1000000 characters"):
            BUILTINS["TOYAML"].fn(FixedContext(FIXED_NOW), value)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # about the 1 MB of text it may write, not the whole 27 MB
    # Under ON ERROR RESUME NEXT the refused calls are charged: the loop ends with the budget.
    loop = _budget_run(DEEP_LIST + "ON ERROR RESUME NEXT\nFOR j = 1 TO 40\n  y = TOYAML(v)\nNEXT\nRETURN 1",
                       max_instructions=1_000_000)
    assert loop.status == "error" and "instruction budget" in loop.error["message"]


def test_filter_compares_by_the_engines_rules_not_pythons_text() -> None:
    r = run('''rows = [{"name": "a", "active": TRUE, "score": 1.0, "n": 10, "t": "10", "tags": [1]},
  {"name": "b", "active": FALSE, "score": 2.5, "n": 9, "t": "9", "tags": []}, {"Name": "c", "n": NULL}]
TALK LEN(FILTER(rows, "active = true"))
TALK LEN(FILTER(rows, "active = TRUE AND score = 1"))
TALK LEN(FILTER(rows, "score = 1.0"))
TALK LEN(FILTER(rows, "score <> 1"))
TALK LEN(FILTER(rows, "n > 9"))
TALK LEN(FILTER(rows, "t > 9"))
TALK LEN(FILTER(rows, "t >= 9.5"))
TALK LEN(FILTER(rows, "name = 'a'"))
TALK LEN(FILTER(rows, "NAME = c"))
TALK LEN(FILTER(rows, "n = ''"))
TALK LEN(FILTER(rows, "tags = [1]"))
TALK LEN(FILTER(rows, "tags > 0"))
TALK LEN(FILTER(rows, "name < b"))''')
    assert r.result.status == "done", r.result.error
    assert r.host.messages == ["1", "1", "1", "2", "1", "1", "1", "1", "1", "1", "0", "0", "1"]


def test_filter_never_turns_a_large_value_into_text() -> None:
    import tracemalloc

    from apps.basic.host import row_matches_filter

    nested: list = [1]
    for _ in range(22):
        nested = [nested, nested]  # small in memory, 4 million leaves as text
    row = {"x": nested, "y": 2}
    tracemalloc.start()
    try:
        assert not row_matches_filter(row, "x = 1")
        assert row_matches_filter(row, "x <> 1 AND y = 2")
        assert not row_matches_filter(row, "x >= 1")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    r = run('a = [1]\nFOR i = 1 TO 24\n  a = [a, a]\nNEXT\nRETURN LEN(FILTER([{"x": a}, {"x": 1}], "x = 1"))')
    assert r.result.status == "done" and r.result.value == 1


def _peak_bytes(source: str) -> tuple[object, int]:
    import tracemalloc

    from apps.basic.host import InMemoryHost

    host = InMemoryHost()
    tracemalloc.start()
    try:
        result = _budget_run_on(source, host)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (result, host), peak


def _budget_run_on(source: str, host: object) -> object:
    from apps.basic.compiler import compile_source
    from apps.basic.vm import VM

    return VM(compile_source(source), host).start()  # type: ignore[arg-type]


# 500 000 characters: two are within the string limit's reach only as twenty pieces (10 million).
HALF_MILLION = 's = SPACE(500000)\n'


def test_interpolation_refuses_as_soon_as_its_pieces_pass_the_string_limit() -> None:
    pieces = "${s}" * 60  # 30 million characters if joined
    (result, host), peak = _peak_bytes(HALF_MILLION + f'FUNCTION G()\n  TALK "evaluated"\n  RETURN 1\nEND FUNCTION\n'
                                       f't = "{pieces}${{G()}}"\nRETURN LEN(t)')
    assert result.status == "error" and result.error["message"] == "string longer than 10000000 characters"
    assert host.messages == []  # the pieces after the limit are not even evaluated
    assert peak < 20_000_000  # not the 30 MB of the joined text
    ok = run(HALF_MILLION + 't = "<${s}|${LEN(s)}>"\nRETURN LEN(t)')
    assert ok.result.value == 500000 + 9


def test_talk_refuses_as_soon_as_its_pieces_pass_the_output_limit() -> None:
    (result, host), peak = _peak_bytes(HALF_MILLION + "TALK " + ", ".join(["s"] * 20))
    assert result.status == "error" and result.error["message"] == "too much output from this script"
    assert host.messages == [] and peak < 5_000_000  # not the 10 MB of the joined text
    ok = run(HALF_MILLION + 'TALK s, "|", LEN(s)')
    assert ok.host.messages == [" " * 500000 + "|500000"]


def test_print_and_log_lines_are_cut_before_their_pieces_are_joined() -> None:
    from apps.basic.limits import MAX_LOG_MESSAGE_CHARS

    (result, host), peak = _peak_bytes(HALF_MILLION + 'PRINT "a", s, s, s, s, s, s, s, s, s, s\n'
                                       'x = LOG_INFO(s, s, s, s, s, s, s, s, s, s)\nPRINT "b", 1')
    assert result.status == "done"
    assert host.logs == ["a " + " " * (MAX_LOG_MESSAGE_CHARS - 2), "b 1"]  # PRINT was never cut
    assert peak < 5_000_000


def test_an_llm_prompt_is_a_string_within_the_string_limit() -> None:
    r = run('s = SPACE(1000000)\nFOR i = 1 TO 3\n  s = s & s\nNEXT\nx = LLM s, s\nRETURN 1')
    assert r.result.status == "error" and r.result.error["message"] == "string longer than 10000000 characters"


@pytest.mark.parametrize("transform", [
    'AGGREGATE "SUM", rows, "x"', 'MAP rows, "x->z"', 'GROUP BY rows, "y"', 'PIVOT rows, "y", "x"',
    'JOIN rows, rows, "x"'])
def test_the_data_transforms_charge_their_rows_to_the_budget(transform: str) -> None:
    """Written beside the work meter, the transforms counted each call as one instruction: a loop of AGGREGATEs
    over 100 000 rows ran 14 s under a 1 s limit, MAP 279 s under 2 s."""
    setup = 'rows = []\nFOR i = 1 TO 2000\n  rows = PUSH(rows, #{x: i MOD 50, y: "g" & (i MOD 7)})\nNEXT\n'
    result = _budget_run(setup + f"FOR j = 1 TO 400\n  r = {transform}\nNEXT\nRETURN 1", max_instructions=300_000)
    assert result.status == "error", transform
    assert "instruction budget of 300000 exceeded" in result.error["message"], (transform, result.error)
