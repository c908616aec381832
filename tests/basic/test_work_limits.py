"""Limits that must hold however a script is written: limit errors are never swallowed, the work of one
instruction is charged to the budget, and text is bounded while it is built (apps/basic/limits.py)."""

from __future__ import annotations

from tests.basic.conftest import run

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
