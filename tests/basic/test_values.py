"""Operators on BASIC values (`apps/basic/values.py`)."""

from __future__ import annotations

import itertools
import math
import re
import tracemalloc

import pytest

from apps.basic import values as V
from apps.basic.errors import LimitExceeded
from tests.basic.conftest import run


def _like_by_regex(text: str, pattern: str) -> bool:
    """The meaning of LIKE, written the obvious (exponential) way; only for short inputs."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.IGNORECASE | re.DOTALL) is not None


@pytest.mark.parametrize(("text", "pattern", "expected"), [
    ("Hello", "h%", True), ("Hello", "%LO", True), ("Hello", "h_llo", True), ("Hello", "h_lo", False),
    ("", "%", True), ("", "", True), ("a", "", False), ("abc", "a%c", True), ("ac", "a%_c", False),
    ("a%b", "a%b", True), ("line\nbreak", "line%break", True), ("abcabd", "%ab_", True),
])
def test_like_wildcards_and_case(text: str, pattern: str, expected: bool) -> None:
    assert V.like(text, pattern) is expected


def test_like_agrees_with_the_regex_meaning_on_every_short_input() -> None:
    texts = ["".join(p) for n in range(5) for p in itertools.product("aAb", repeat=n)]
    patterns = ["".join(p) for n in range(5) for p in itertools.product("a%_b", repeat=n)]
    for text in texts:
        for pattern in patterns:
            assert V.like(text, pattern) == _like_by_regex(text, pattern), (text, pattern)


def test_like_with_many_percent_signs_is_not_exponential(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each segment between two `%` is looked for once, at its leftmost place after the previous one: a failed
    match never goes back to try other places (a regex with `.*` did, 39 s for these 45 characters)."""
    searched: list[str] = []
    segment_find = V._segment_find

    def counted_find(subject: str, seg: str, start: int, end: int) -> int:
        searched.append(seg)
        return segment_find(subject, seg, start, end)

    monkeypatch.setattr(V, "_segment_find", counted_find)
    r = run('IF REPEAT("a", 45) LIKE "%a%a%a%a%a%a%a%a%b" THEN\nTALK "match"\nEND IF\nTALK "done"')
    assert r.host.messages == ["done"]
    assert searched == ["a"] * 8
    searched.clear()
    assert V.like("a" * 1_000_000, "%a%" * 300 + "b") is False
    assert searched == ["a"] * 300


def test_like_refuses_patterns_whose_worst_case_is_too_costly() -> None:
    with pytest.raises(LimitExceeded):
        V.like("a", "a" * (V.MAX_LIKE_PATTERN_CHARS + 1))
    with pytest.raises(LimitExceeded):
        V.like("a" * 10_000_000, "%" + "a_" * 400 + "b%")
    assert V.like("a" * 1000 + "b", "%" + "a_" * 10 + "b") is True


def test_power_refuses_a_huge_integer_result_before_computing_it() -> None:
    # Sized from the operands: the 48-million-bit integer (6 MB) is never built only to be refused afterwards.
    tracemalloc.start()
    try:
        with pytest.raises(V.BasicRuntimeError, match="too large"):
            V.power(3, 30_000_000)
        allocated = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result_bytes = int(30_000_000 * math.log2(3)) // 8
    assert allocated < result_bytes // 100, allocated  # under 1% of what the integer would take
    r = run('ON ERROR RESUME NEXT\nFOR i = 1 TO 40\nx = 3 ^ 30000000\nNEXT\nTALK "done " & x')
    assert r.host.messages == ["done "]
    assert V.power(2, 10) == 1024 and V.power(2, 64) == float(2**64) and V.power(-1, 10**18) == 1
    assert V.power(2, -2) == 0.25 and V.power(1, 10**18) == 1


def _tower(levels: int, leaf: object = 1) -> list:
    a: list = [leaf]
    for _ in range(levels):
        a = [a, a]
    return a


def test_equality_of_separately_built_shared_towers_is_not_exponential(monkeypatch: pytest.MonkeyPatch) -> None:
    """A pair of shared sub-arrays is compared once: the elements visited (the comparison budget used) grow with
    the levels, two a level, not with the 2^60 elements the towers hold."""
    for other, same in ((_tower(60), True), (_tower(60, 2), False)):
        budget = [V.MAX_COMPARE_STEPS]
        assert V.equals(_tower(60), other, budget) is same
        assert V.MAX_COMPARE_STEPS - budget[0] <= 2 * 61
    budgets: list[list[int]] = []
    equals = V.equals
    monkeypatch.setattr(V, "equals", lambda a, b, budget=None: budgets.append(budget) or equals(a, b, budget))
    assert V.contains([_tower(40, 2)] * 1000 + [_tower(40)], _tower(40))
    assert len(budgets) == 1001 and all(b is budgets[0] for b in budgets)  # one budget for the whole IN
    assert V.MAX_COMPARE_STEPS - budgets[0][0] <= 1001 * 2 * 41
    monkeypatch.undo()
    r = run('a = [1]\nb = [1]\nFOR i = 1 TO 60\na = [a, a]\nb = [b, b]\nNEXT\nIF a = b THEN\nTALK "equal"\nEND IF')
    assert r.host.messages == ["equal"]


def test_equality_keeps_python_meaning_for_nested_values() -> None:
    assert V.equals([1, {"a": [True]}], [1.0, {"a": [1]}])
    assert not V.equals([1], ["1"]) and not V.equals({"a": 1}, {"b": 1}) and not V.equals([1], [1, 2])
    cyclic: list = [1]
    cyclic.append(cyclic)
    assert V.equals(cyclic, cyclic)


def test_equality_past_the_comparison_bound_ends_the_run_untrappably() -> None:
    big = list(range(1_500_000))
    with pytest.raises(LimitExceeded, match="too large to compare"):
        V.contains([[*big[:-1], -1], list(big)], big)  # one bound for the whole IN, not one per element
    r = run('ON ERROR RESUME NEXT\na = RANGE(1, 90000)\nb = RANGE(1, 90000)\nc = FILL(a, 30)\nb[89999] = 0\n'
            'IF b IN c THEN\nTALK "found"\nEND IF\nTALK "after"')
    assert r.result.status == "error" and "too large to compare" in r.result.error["message"]
    assert r.host.messages == []


def test_appending_a_scalar_with_plus_respects_the_array_limit() -> None:
    r = run('a = FILL(0, 100000)\nb = a + a + a + a + a + a + a + a + a + a\nTALK COUNT(b)\nc = b + 1\nTALK "grew"')
    assert r.host.messages == ["1000000"]
    assert r.result.status == "error" and "array longer than 1000000 items" in r.result.error["message"]
    assert r.result.error["line"] == 4


def test_maps_are_bounded_however_they_grow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(V, "MAX_MAP_KEYS", 3)
    m = {"Name": 1, "b": 2, "c": 3}
    V.set_member(m, "name", 10)  # an existing key (any case) is not growth
    V.set_index(m, "b", 20)
    assert m == {"Name": 10, "b": 20, "c": 3}
    for grow in (lambda: V.set_member(m, "d", 4), lambda: V.set_index(m, "d", 4), lambda: V.add(m, {"d": 4})):
        with pytest.raises(LimitExceeded, match="map with more than 3 keys"):
            grow()
    assert V.add(m, {"b": 0}) == {"Name": 10, "b": 0, "c": 3}


def test_long_numeric_text_is_a_basic_error_in_arithmetic_and_text_in_comparisons() -> None:
    r = run('x = REPEAT("9", 5000) - 1')
    assert r.result.status == "error" and "number text too long" in r.result.error["message"]
    assert "internal" not in r.result.error["message"]
    assert V.equals("9" * 5000, "9" * 5000) and not V.equals("9" * 5000, 1)
    assert V.as_number("9" * 400) == int("9" * 400)


def test_mod_on_integers_is_exact_with_the_sign_of_the_dividend() -> None:
    assert run("RETURN 9007199254740993 MOD 2").result.value == 1
    assert [V.mod(7, 3), V.mod(-7, 3), V.mod(7, -3), V.mod(-7, -3)] == [1, -1, 1, -1]
    assert V.mod(5.5, 2) == 1.5


def test_fields_written_on_user_are_kept_for_the_run_without_changing_the_host() -> None:
    r = run('user.score = 5\nTALK user.score & " " & user.email\nHEAR x\nTALK user.score')
    assert r.host.messages == ["5 user@example.com"]
    r.answer("go")
    assert r.host.messages == ["5 user@example.com", "5"]
    assert "score" not in r.host.context()["user"]
