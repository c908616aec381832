"""A statement word followed by `[` starts that statement; it is not an assignment to a variable named like it."""

from __future__ import annotations

from tests.basic.conftest import run


def test_return_of_a_comparison_of_arrays_returns() -> None:
    r = run('RETURN [1] = [1]\nTALK "not returned"\n')
    assert r.result.status == "done" and r.result.value is True
    assert r.host.messages == []


def test_return_written_against_the_bracket_returns_too() -> None:
    r = run('x = 2\nRETURN[x] = [2]\nTALK "not returned"\n')
    assert r.result.value is True and r.host.messages == []


def test_talk_and_if_with_a_leading_array() -> None:
    r = run('TALK [1] = [1]\nIF [1, 2] = [1, 2] THEN\n  TALK "same"\nEND IF\nIF [1] = [2] THEN TALK "no"\n')
    assert r.result.status == "done", r.result
    assert r.host.messages == ["true", "same"]


def test_variables_named_like_keywords_are_still_indexed_and_assigned() -> None:
    r = run('list = [0, 0]\nlist[1] = 5\nmap = {"a": 1}\nmap["a"] = 2\nitems = [1]\nitems [0] = 7\n'
            'RETURN [list, map, items]\n')
    assert r.result.status == "done", r.result
    assert r.result.value == [[0, 5], {"a": 2}, [7]]
