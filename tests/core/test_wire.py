"""apps.core.wire: client JSON with numbers that are numbers and text that is text."""

from __future__ import annotations

import pytest

from apps.core.wire import WireError, json_loads


@pytest.mark.parametrize(("raw", "reason"), [
    ('{"n": 1e400}', "out of range"),
    ('{"n": -1e400}', "out of range"),
    ('[NaN]', "not a number"),
    ('{"n": Infinity}', "not a number"),
    ('{"text": "a\\ud800b"}', "surrogate"),
    ('{"a\\udfff": 1}', "surrogate"),
    ('[[{"deep": ["\\ud83d"]}]]', "surrogate"),
])
def test_non_finite_numbers_and_lone_surrogates_are_refused(raw, reason):
    with pytest.raises(WireError, match=reason):
        json_loads(raw)


def test_ordinary_json_passes_unchanged_pairs_included():
    assert json_loads('{"content": "ol\\u00e1 \\ud83d\\ude00", "n": 1.5e300, "i": 12, "ok": true}') == {
        "content": "olá 😀", "n": 1.5e300, "i": 12, "ok": True}
    assert json_loads(b'{"x": [1, -2.0, null]}') == {"x": [1, -2.0, None]}


def test_malformed_json_is_still_a_value_error():
    with pytest.raises(ValueError):
        json_loads("{not json")


def test_json_nested_past_the_parsers_depth_is_a_clear_error():
    """Thousands of `[` fit in one 64 KiB chat frame: the parser's RecursionError dropped the socket."""
    with pytest.raises(WireError, match="nested too deeply"):
        json_loads("[" * 32000 + "]" * 32000)
    with pytest.raises(WireError, match="surrogate"):
        json_loads("[" * 500 + '"a\\ud800"' + "]" * 500)  # checked without recursing
