"""Property-based tests: random and mutated inputs raise only the engine's own CompileError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError

SEED_SCRIPTS = [
    'x = 1\nIF x = 1 THEN\n  TALK "a ${x}"\nELSE\n  TALK "b"\nEND IF\n',
    'FOR EACH i IN [1, 2]\n  TALK i\nNEXT\nFOR j = 1 TO 3 STEP 2\nTALK j\nNEXT j\n',
    'SELECT CASE v\nCASE 1, 2\nTALK "x"\nCASE ELSE\nTALK "y"\nEND SELECT\n',
    'HEAR name AS NAME\nm = #{ a: 1, "b": [1, 2] }\nTALK m.b[0] + LEN(name)\n',
    'BEGIN TALK\nHello ${user.name}\nEND TALK\nSUB S(a)\nRETURN\nEND SUB\nCALL S(1)\n',
    'PARAM p AS STRING DESCRIPTION "d"\nDESCRIPTION "tool"\nSET SCHEDULE "every hour"\nrows = FIND "t", "a=1"\n',
]
TOKENS = ["IF", "THEN", "ELSE", "END", "FOR", "EACH", "IN", "NEXT", "TO", "STEP", "WHILE", "WEND", "DO",
          "LOOP", "SELECT", "CASE", "SUB", "FUNCTION", "RETURN", "CALL", "GOTO", "HEAR", "TALK", "AS",
          "WITH", "BEGIN", "SET", "=", "(", ")", "[", "]", "{", "}", "#{", ",", ".", ":", '"', "'", "${",
          "+", "-", "*", "/", "^", "<>", "\n", " ", "x", "1", "2.5", '"s"', "_", "REM", "//", "ON ERROR",
          "PARAM", "FIND", "GET BOT MEMORY", "RUN PYTHON", "TABLE t", "END TABLE", "\\", "?", "??"]


def _compile_or_compile_error(source: str) -> None:
    try:
        compile_source(source)
    except CompileError as exc:
        assert exc.line >= 1 and exc.col >= 1 and exc.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_raises_only_compile_errors(source: str) -> None:
    _compile_or_compile_error(source)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map(" ".join))
def test_random_token_soup_raises_only_compile_errors(source: str) -> None:
    _compile_or_compile_error(source)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SEED_SCRIPTS), st.data())
def test_mutated_valid_scripts_raise_only_compile_errors(seed: str, data: st.DataObject) -> None:
    chars = list(seed)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["delete", "insert", "replace", "swap"]))
        pos = data.draw(st.integers(0, max(0, len(chars) - 1)))
        if op == "delete" and chars:
            del chars[pos]
        elif op == "insert":
            chars.insert(pos, data.draw(st.sampled_from(TOKENS)))
        elif op == "replace" and chars:
            chars[pos] = data.draw(st.characters())
        elif op == "swap" and len(chars) > 1:
            other = data.draw(st.integers(0, len(chars) - 1))
            chars[pos], chars[other] = chars[other], chars[pos]
    _compile_or_compile_error("".join(chars))


def test_seed_scripts_compile() -> None:
    for seed in SEED_SCRIPTS:
        compile_source(seed)


@pytest.mark.parametrize("source", ["x = " + "(" * 5000 + "1" + ")" * 5000, "IF 1 THEN\n" * 3000 + "END IF\n" * 3000],
                         ids=["parentheses", "blocks"])
def test_deep_nesting_is_a_compile_error_not_a_crash(source: str) -> None:
    with pytest.raises(CompileError, match="nested too deeply") as refused:
        compile_source(source)
    assert refused.value.message == "script is nested too deeply"
    # Where the nesting passed the limit, not 1:1: inside the parentheses of line 1, at a line of the IFs.
    where = (refused.value.line, refused.value.col)
    assert (where[0] == 1 and 5 < where[1] < 5000) if source.startswith("x") else (1 < where[0] <= 3000), where
