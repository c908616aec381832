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
