"""Operators on BASIC values (`apps/basic/values.py`)."""

from __future__ import annotations

import itertools
import re
import time

import pytest

from apps.basic import values as V
from apps.basic.errors import LimitExceeded
from tests.basic.conftest import run

# An operator that takes longer than this on the inputs below has gone super-linear again.
QUICK_SECONDS = 2.0


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


def test_like_with_many_percent_signs_is_not_exponential() -> None:
    t0 = time.monotonic()
    r = run('IF REPEAT("a", 45) LIKE "%a%a%a%a%a%a%a%a%b" THEN\nTALK "match"\nEND IF\nTALK "done"')
    assert r.host.messages == ["done"]
    assert V.like("a" * 1_000_000, "%a%" * 300 + "b") is False
    assert time.monotonic() - t0 < QUICK_SECONDS


def test_like_refuses_patterns_whose_worst_case_is_too_costly() -> None:
    with pytest.raises(LimitExceeded):
        V.like("a", "a" * (V.MAX_LIKE_PATTERN_CHARS + 1))
    with pytest.raises(LimitExceeded):
        V.like("a" * 10_000_000, "%" + "a_" * 400 + "b%")
    assert V.like("a" * 1000 + "b", "%" + "a_" * 10 + "b") is True
