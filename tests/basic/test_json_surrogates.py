"""JSON_PARSE and JSON PARSE refuse lone UTF-16 surrogates: such text cannot be stored (UTF-8, PostgreSQL)."""

from __future__ import annotations

import json

import pytest

from apps.basic.builtins import parse_json_text
from tests.basic.conftest import run


@pytest.mark.parametrize("text", ['"\\ud800"', '{"\\udc00k": 1}', '["a", ["\\uDBFF x"]]', '"\\ud83d\\ud83d"',
                                  '"\ud800"'])
def test_lone_surrogates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="lone UTF-16 surrogate"):
        parse_json_text(text)


def test_escaped_pairs_and_ordinary_escapes_still_parse() -> None:
    assert parse_json_text('{"k": "\\ud83d\\ude00 \\u00e9 \\\\ud800"}') == {"k": "\U0001f600 \u00e9 \\ud800"}


@pytest.mark.parametrize("call", ['JSON_PARSE("""\\ud800""")', 'JSON PARSE "{""\\udc00k"": 1}"'])
def test_the_script_gets_a_trappable_error_and_the_saved_state_encodes(call: str) -> None:
    r = run(f'''ON ERROR RESUME NEXT
x = {call}
TALK ERR.description
HEAR z
''')
    assert r.result.status == "waiting", r.result
    assert "lone UTF-16 surrogate" in r.host.messages[0]
    json.dumps(r.result.state, ensure_ascii=False).encode("utf-8")  # PostgreSQL could store it
