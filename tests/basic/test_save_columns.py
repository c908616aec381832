"""Positional SAVE (spec 3.5.7 form 2): each value's variable name picks its column, then the table's order."""

from __future__ import annotations

import pytest

from apps.basic.host import InMemoryHost, save_row, table_columns_from_metadata
from tests.basic.conftest import run

PEOPLE = {"people": ["id", "Name", "Email", "Phone"]}


def test_variable_names_pick_the_columns_of_the_schema_and_find_sees_the_row() -> None:
    host = InMemoryHost(schemas=PEOPLE)
    r = run('''email = "ann@example.com"
NAME = "Ann"
SAVE "people", email, name
rows = FIND "people", "name=Ann"
RETURN rows[0].email''', host=host)
    assert r.result.status == "done", r.result
    assert r.result.value == "ann@example.com"
    assert host.tables["people"] == [{"Email": "ann@example.com", "Name": "Ann"}]


def test_member_names_count_as_names() -> None:
    host = InMemoryHost(schemas=PEOPLE)
    r = run('lead = #{name: "Bo", phone: "123"}\nSAVE "people", lead.phone, lead.name\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["people"] == [{"Phone": "123", "Name": "Bo"}]


def test_values_with_no_matching_name_fill_the_columns_in_order() -> None:
    host = InMemoryHost(schemas=PEOPLE)
    r = run('a = "x"\nSAVE "people", 7, a, "c@x", NOW()\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["people"] == [{"id": 7, "Name": "x", "Email": "c@x", "Phone": "2024-05-17T10:30:00"}]


def test_without_a_schema_the_variable_names_are_the_keys() -> None:
    host = InMemoryHost()
    r = run('name = "Ann"\ndate = "2026-12-01"\nSAVE "visits", name, date, 1 + 2\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["visits"] == [{"name": "Ann", "date": "2026-12-01", "c2": 3}]


def test_the_scripts_own_table_definition_gives_the_columns() -> None:
    host = InMemoryHost()
    r = run('''TABLE students
    Id uuid key
    FullName string(255)
    Email string(255)
END TABLE
fullname = "Ann"
SAVE "students", "s-1", fullname, "ann@x"
''', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["students"] == [{"Id": "s-1", "FullName": "Ann", "Email": "ann@x"}]


def test_keys_of_stored_rows_match_names_but_give_no_order() -> None:
    host = InMemoryHost(tables={"contacts.csv": [{"FirstName": "Old", "Email": "o@x"}]})
    r = run('firstname = "New"\nSAVE "contacts.csv", firstname, "n@x"\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["contacts.csv"][1] == {"FirstName": "New", "c1": "n@x"}


def test_the_map_forms_are_unchanged() -> None:
    host = InMemoryHost(schemas=PEOPLE)
    r = run('data = #{Name: "Cy"}\nSAVE "people", "p-1", data\nSAVE "people", data\n', host=host)
    assert r.result.status == "done", r.result
    assert host.tables["people"] == [{"id": "p-1", "name": "Cy"}, {"name": "Cy"}]


@pytest.mark.parametrize(("values", "names", "columns", "ordered", "row"), [
    ([1, 2], None, None, True, {"c0": 1, "c1": 2}),
    ([1, 2, 3], ["x", "b", None], ["A", "B", "C"], True, {"x": 1, "B": 2, "C": 3}),
    ([1, 2, 3], ["x", "y", "z"], ["A", "B"], True, {"A": 1, "B": 2, "z": 3}),
    ([1, 2, 3], ["x", "y", "z"], ["A", "B"], False, {"x": 1, "y": 2, "z": 3}),
    ([1, 2, 3], ["name", "name", None], ["Name", "B", "C"], True, {"Name": 1, "c1": 2, "C": 3}),
    ([1, 2], ["c1", None], None, True, {"c1": 1, "c1_": 2}),
])
def test_save_row(values: list, names: list | None, columns: list | None, ordered: bool, row: dict) -> None:
    assert save_row(values, names, columns, ordered) == row


def test_table_columns_from_metadata_reads_both_definition_styles() -> None:
    tables = [{"definition": "leads", "columns": ["id UUID PRIMARY KEY DEFAULT uuid_generate_v4()",
                                                   "company_name VARCHAR(255) NOT NULL", "PRIMARY KEY (id)"]},
              {"definition": "Orders ON erp", "columns": ["FIELD Number AS INTEGER", "Total number"]},
              {"index": "CREATE INDEX x ON leads (email)"}]
    assert table_columns_from_metadata(tables, "LEADS") == ["id", "company_name"]
    assert table_columns_from_metadata(tables, "orders") == ["Number", "Total"]
    assert table_columns_from_metadata(tables, "other") == []
