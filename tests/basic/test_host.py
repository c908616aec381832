"""The host interface's shared helpers (`apps/basic/host.py`): the FIND filter language."""

from __future__ import annotations

import pytest

from apps.basic import host as host_module
from apps.basic.host import MAX_FILTER_CHARS, HostError, InMemoryHost, parse_filter, row_matches_filter
from tests.basic.conftest import run


def test_filter_conditions_operators_and_joins() -> None:
    assert parse_filter("name = 'Ann' AND age>=30, city<>Rio") == (
        ("name", "=", "Ann"), ("age", ">=", "30"), ("city", "<>", "Rio"))
    assert parse_filter("  ") == ()
    assert row_matches_filter({"Name": "Ann", "age": 31}, "name=Ann and AGE > 30")
    assert not row_matches_filter({"name": "Ann"}, "name==Bob")
    assert row_matches_filter({"name": "Ann"}, "name==Ann")  # `==` used to read as `=` with the value "=Ann"


@pytest.mark.parametrize("bad", ["name", "=1", "a=1,", "a=1\nb"])
def test_malformed_filters_are_refused(bad: str) -> None:
    with pytest.raises(HostError, match="COLUMN=VALUE"):
        parse_filter(bad)


def test_filters_with_long_runs_of_spaces_parse_in_linear_time() -> None:
    half = (MAX_FILTER_CHARS - 10) // 2
    assert parse_filter("a=" + " " * half + "x" + " " * half + "y") == (("a", "=", "x" + " " * half + "y"),)
    with pytest.raises(HostError, match="COLUMN=VALUE"):
        parse_filter("a" + " " * (MAX_FILTER_CHARS - 10))
    # What keeps it linear (a 40 000-character filter took 31 s): a separator match can start only at the first
    # space of a run, so a run is scanned once, not once per space...
    text = "a=1" + " " * 50 + "AND b=2"
    assert [p for p in range(len(text)) if host_module._JOIN.match(text, p)] == [3]
    # ...and a condition's pattern stops at its operator: the value (and its spaces) is never matched by a regex.
    assert host_module._CONDITION.match("a=" + " " * 50 + "x").end() == 2


def test_find_refuses_a_filter_past_the_limit() -> None:
    r = run('x = FIND "t", "a=" & SPACE(20000) & "x" & SPACE(20000) & "y"')
    assert r.result.status == "error"
    assert f"FIND filter longer than {MAX_FILTER_CHARS} characters" in r.result.error["message"]


def test_find_parses_its_filter_once_not_per_row(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    parse = host_module.parse_filter
    monkeypatch.setattr(host_module, "parse_filter", lambda text: calls.append(text) or parse(text))
    host = InMemoryHost(tables={"t": [{"id": i, "k": i % 2} for i in range(100)]})
    assert len(host.find("t", "k=1")) == InMemoryHost.FIND_LIMIT
    assert host.update("t", "k=0", {"seen": 1}) == 50
    assert host.delete("t", "k=0") == 50
    assert calls == ["k=1", "k=0", "k=0"]
