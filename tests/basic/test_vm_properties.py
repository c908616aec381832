"""Property-based tests of the VM: random expressions fail only with BASIC errors, never internal ones."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM

LITERALS = st.sampled_from(['1', '0', '-3', '2.5', '1e308', '"a"', '""', '"12"', 'TRUE', 'FALSE', 'NULL',
                            '[]', '[1, "b"]', '#{ k: 1 }', 'x', 'x.k', 'x[0]', 'NOW', '"${1 + 1}"'])
BINARY = st.sampled_from(["+", "-", "*", "/", "\\", "MOD", "^", "&", "=", "<>", "<", ">=", "AND", "OR",
                          "IN", "NOT IN", "CONTAINS", "LIKE", "??"])
UNARY = st.sampled_from(["-", "NOT "])
FUNCS = st.sampled_from(["LEN", "UCASE", "STR", "VAL", "ABS", "COUNT", "TRIM", "ISEMPTY", "TYPEOF"])

EXPR = st.recursive(
    LITERALS,
    lambda inner: st.one_of(
        st.tuples(inner, BINARY, inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
        st.tuples(UNARY, inner).map(lambda t: f"({t[0]}{t[1]})"),
        st.tuples(FUNCS, inner).map(lambda t: f"{t[0]}({t[1]})"),
        st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(EXPR, LITERALS)
@example(expr="((1 & 1e308) \\ 1)", init="1")  # "11e308" is past the largest float: was an internal error
@example(expr="((1e308 * 1e308) \\ 1)", init="1")
def test_random_expressions_raise_only_basic_errors(expr: str, init: str) -> None:
    source = f"x = {init}\nTALK {expr}\nRETURN {expr}"
    try:
        program = compile_source(source)
    except CompileError:
        return
    result = VM(program, InMemoryHost(), max_instructions=10_000).start()
    assert result.status in ("done", "error")
    if result.status == "error":
        assert not result.error["message"].startswith("internal error"), (source, result.error)
        assert result.error["line"] in (1, 2, 3)
