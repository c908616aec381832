"""`SAVE "t" WITH col AS expr, ...` (store-server templates) saves the map of column values."""

from __future__ import annotations

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.host import InMemoryHost
from tests.basic.conftest import run


def test_save_with_as_pairs_stores_each_column() -> None:
    host = InMemoryHost()
    r = run('''info = #{name: "Lamp", brand: "Acme", description: "Desk lamp"}
SAVE "products" WITH name AS info.name, category AS "home", brand AS info.brand, description AS info.description, \
  is_active AS true
x = INSERT "products" WITH name AS "Chair", price AS 10 * 2
RETURN FIND "products" WITH "name = '" + info.name + "'"
''', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["products"][0] == {"name": "Lamp", "category": "home", "brand": "Acme",
                                          "description": "Desk lamp", "is_active": True}
    assert host.tables["products"][1]["price"] == 20
    assert r.result.value == [host.tables["products"][0]]  # FIND ... WITH "filter" filters


def test_pairs_may_continue_on_the_next_line_and_a_map_after_with_still_works() -> None:
    host = InMemoryHost()
    r = run('data = #{a: 1}\nSAVE "t" WITH a AS 1,\n    b AS 2\nSAVE "t" WITH data\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["t"] == [{"a": 1, "b": 2}, {"a": 1}]


@pytest.mark.parametrize(("source", "message"), [
    ('SAVE "t" WITH a AS 1, b 2\n', "expected AS after column 'b'"),
    ('SAVE "t" WITH a AS 1, A AS 2\n', "column 'A' is given twice"),
])
def test_malformed_pairs_are_compile_errors(source: str, message: str) -> None:
    with pytest.raises(CompileError, match=message):
        compile_source(source)
