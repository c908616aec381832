"""AGGREGATE, JOIN (three arguments), PIVOT, GROUP BY, MAP and FILL run in the engine (spec 3.5.7)."""

from __future__ import annotations

import pytest

from apps.basic import dataops
from apps.basic.host import InMemoryHost
from tests.basic.conftest import run

ROWS = '''rows = [#{id: 1, amount: 10, month: "jan", cust: "a"}, #{id: 2, amount: "5.5", month: "feb", cust: "b"},
        #{id: 3, amount: 4, month: "jan", cust: "a"}, #{id: "", amount: "n/a"}]
custs = [#{cust: "a", name: "Ann"}, #{cust: "b", name: "Bo"}, #{cust: "c", name: "Cy"}]
'''


def _value(source: str, host: InMemoryHost | None = None) -> object:
    r = run(ROWS + source, host=host)
    assert r.result.status == "done", r.result
    return r.result.value


def test_aggregate_operations() -> None:
    assert _value('''s = AGGREGATE "SUM", rows, "amount"
a = AGGREGATE("avg", rows, "amount")
c = AGGREGATE "COUNT", rows, "id"
lo = AGGREGATE "MIN", rows, "Amount"
hi = AGGREGATE "MAX", rows, "amount"
e = AGGREGATE "MAX", [], "amount"
z = AGGREGATE "SUM", NULL, "amount"
RETURN [s, a, c, lo, hi, e, z]''') == [19.5, 6.5, 3, 4, 10, None, 0]


def test_join_is_an_inner_join_on_the_key_and_two_argument_join_still_joins_text() -> None:
    assert _value('''j = JOIN rows, custs, "cust"
k = JOIN(custs, rows, "CUST")
RETURN [j, LEN(k), JOIN(["x", "y"], "-"), JOIN(["x", "y"])]''') == [
        [{"id": 1, "amount": 10, "month": "jan", "cust": "a", "name": "Ann"},
         {"id": 2, "amount": "5.5", "month": "feb", "cust": "b", "name": "Bo"},
         {"id": 3, "amount": 4, "month": "jan", "cust": "a", "name": "Ann"}],
        3, "x-y", "x,y"]


def test_pivot_and_group_by() -> None:
    assert _value('''p = PIVOT rows, "month", "amount"
g = GROUP BY rows, "cust"
h = GROUP_BY(custs, "name")
RETURN [p, g.a, UBOUND(g.b), h.Cy[0].cust]''') == [
        [{"month": "jan", "amount": 14}, {"month": "feb", "amount": 5.5}, {"month": None, "amount": 0}],
        [{"id": 1, "amount": 10, "month": "jan", "cust": "a"}, {"id": 3, "amount": 4, "month": "jan", "cust": "a"}],
        0, "c"]


def test_map_renames_fields_and_fill_fills_a_template_per_row() -> None:
    assert _value('''m = MAP custs, "name->fullName, cust -> customer"
n = MAP(custs, #{name: "who"})
f = FILL m, #{title: "Hi {{fullname}} ({{ customer }}) {{unknown}}", n: 1}
RETURN [m[0], n[2], f[1]]''') == [{"customer": "a", "fullName": "Ann"}, {"cust": "c", "who": "Cy"},
                                   {"title": "Hi Bo (b) {{unknown}}", "n": 1}]


def test_fill_with_parentheses_and_a_template_is_the_transform_too() -> None:
    # It reached the array builtin: "FILL: count must be a number".
    assert _value('RETURN FILL(custs, #{title: "Hi {{name}}"})') == [
        {"title": "Hi Ann"}, {"title": "Hi Bo"}, {"title": "Hi Cy"}]


def test_fill_with_a_count_is_still_the_array_builtin() -> None:
    assert _value('x = FILL "a", 3\ny = FILL("b", 2)\nRETURN [x, y]') == [["a", "a", "a"], ["b", "b"]]


def test_the_table_form_of_aggregate_still_goes_to_the_host() -> None:
    r = run('n = AGGREGATE "leads", "COUNT", "email"\n')
    assert r.result.status == "error"
    assert r.result.error["message"] == "AGGREGATE is not available on this host"


@pytest.mark.parametrize(("line", "message"), [
    ('x = AGGREGATE "MEDIAN", rows, "amount"', "AGGREGATE: unknown operation 'MEDIAN'"),
    ('x = AGGREGATE "SUM", rows', "AGGREGATE needs an operation, the rows and a field"),
    ('x = AGGREGATE "SUM", "rows", "amount"', "AGGREGATE: data must be an array of rows"),
    ('x = PIVOT rows, "month"', "PIVOT needs the rows, a row field and a value field"),
    ('x = MAP rows, "name"', "MAP: expected old->new, got 'name'"),
    ('x = JOIN rows, 5, "id"', "JOIN: the right side must be an array of rows"),
])
def test_bad_arguments_are_trappable_errors(line: str, message: str) -> None:
    r = run(ROWS + f'ON ERROR RESUME NEXT\n{line}\nTALK ERR.description\n')
    assert r.result.status == "done", r.result
    assert r.host.messages[0].startswith(message), r.host.messages


def test_a_join_larger_than_the_result_bound_is_refused_before_it_is_built() -> None:
    r = run('''a = []
FOR i = 1 TO 400
  a = PUSH(a, #{k: 1})
NEXT
ON ERROR RESUME NEXT
j = JOIN a, a, "k"
TALK ERR.description
''')
    assert r.result.status == "done", r.result
    assert r.host.messages == [f"JOIN: result would exceed {dataops.MAX_BUILTIN_ITEMS} rows"]


def test_the_work_bound_ends_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataops, "MAX_DATA_STEPS", 10)
    r = run(ROWS + 'ON ERROR RESUME NEXT\nm = MAP rows, "amount->total"\nTALK "not reached"\n')
    assert r.result.status == "error"
    assert r.result.error["message"] == "MAP: more than 10 fields to process"
    assert r.host.messages == []
