"""Long left-to-right operator chains compile and run; a script nested too deeply is refused at its own line."""

from __future__ import annotations

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from tests.basic.conftest import run


def test_a_sum_of_thousands_of_terms() -> None:
    r = run("x = 1" + " + 1" * 3000 + "\nRETURN x\n")
    assert r.result.status == "done", r.result
    assert r.result.value == 3001


def test_long_chains_keep_each_operator_and_left_to_right_order() -> None:
    terms = " & ".join(f'"{i % 10}"' for i in range(600))
    mixed = "10" + " - 1 + 2" * 300  # ((10 - 1) + 2) - 1 + 2 ...
    logic = "FALSE" + " OR FALSE" * 200 + " OR 1 = 1"
    r = run(f"a = {terms}\nb = {mixed}\nc = {logic}\nRETURN [LEN(a), LEFT(a, 12), b, c]\n")
    assert r.result.status == "done", r.result
    assert r.result.value == [600, "012345678901", 310, True]


def test_short_circuit_and_errors_in_a_long_chain() -> None:
    r = run('x = TRUE' + ' AND TRUE' * 100 + ' AND FALSE AND 1 / 0 = 1\nTALK x\n'
            'ON ERROR RESUME NEXT\ny = 1' + ' + 1' * 100 + ' + "a" * 2\nTALK ERR.line\n')
    assert r.result.status == "done", r.result
    assert r.host.messages[0] == "false"  # 1 / 0 never ran
    assert r.host.messages[1] == "4"


def test_a_recursive_function_inside_a_long_chain() -> None:
    r = run('''FUNCTION F(n)
  IF n <= 0 THEN
    RETURN 0
  END IF
  RETURN n''' + " + 0" * 40 + ''' + F(n - 1)''' + " + 0" * 40 + '''
END FUNCTION
RETURN F(20)
''')
    assert r.result.status == "done", r.result
    assert r.result.value == 210


@pytest.mark.parametrize("expression", ["(" * 3000 + "1" + ")" * 3000, "NOT " * 600 + "x"])
def test_too_deep_nesting_is_reported_at_its_line(expression: str) -> None:
    with pytest.raises(CompileError, match="nested too deeply") as info:
        compile_source(f"x = 1\n\nIF x THEN\n  y = {expression}\nEND IF\n")
    assert info.value.line == 4
