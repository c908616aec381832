"""HEAR/WAIT suspension: state is JSON, a fresh VM resumes exactly where the run stopped."""

from __future__ import annotations

import json
import re

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError, StateError
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM
from tests.basic.conftest import Runner, run

SCRIPT = '''count = 0
SUB Ask()
  HEAR answer
  count = count + 1
  TALK "got " + answer
END SUB
FOR i = 1 TO 2
  TALK "question " + i
  CALL Ask()
NEXT
TALK "done after " + count
RETURN count'''


def test_suspended_run_resumes_in_a_fresh_vm_from_json_state() -> None:
    r = Runner(SCRIPT)
    first = r.start()
    assert first.status == "waiting" and first.waiting_for == "hear"
    assert r.host.messages == ["question 1"]
    # the whole state survives a JSON round trip and a brand new VM/host pair
    state = json.loads(json.dumps(first.state))
    host2 = InMemoryHost()
    second = VM(compile_source(SCRIPT), host2).resume(state, "a")
    assert second.status == "waiting"
    assert host2.messages == ["got a", "question 2"]  # code above the HEAR is not re-run
    third = VM(compile_source(SCRIPT), host2).resume(json.loads(json.dumps(second.state)), "b")
    assert third.status == "done" and third.value == 2
    assert host2.messages[-2:] == ["got b", "done after 2"]


def test_typed_hear_normalises_the_answer() -> None:
    r = run('HEAR mail AS EMAIL\nHEAR n AS INTEGER\nHEAR ok AS BOOLEAN\nTALK mail + "|" + n + "|" + ok',
            "  Bob@Example.COM ", "1.234", "sim")
    assert r.host.messages == ["bob@example.com|1234|true"]


def test_typed_hear_reasks_with_the_type_message_then_gives_up_after_three_tries() -> None:
    r = Runner('HEAR d AS DATE\nTALK "date=[" + d + "]"')
    r.start()
    r.answer("not a date")
    assert r.result.status == "waiting"
    assert r.host.messages == ["Please enter a valid date (e.g., 25/12/2024 or 2024-12-25)"]
    r.answer("still no")
    assert r.result.status == "waiting"
    r.answer("nope")
    assert r.result.status == "done"
    assert r.host.messages[-1] == "date=[]"
    assert len(r.host.messages) == 3


def test_typed_hear_accepts_a_valid_answer_after_a_retry() -> None:
    r = run('HEAR d AS DATE\nTALK d', "soon", "25/12/2024")
    assert r.host.messages[-1] == "2024-12-25"


def test_menu_hear_matches_options_and_pushes_suggestions() -> None:
    r = run('HEAR c AS "Sales", "Support", "Billing"\nTALK "chose " + c', "2")
    assert r.host.messages == ["chose Support"]
    assert [s["text"] for s in r.host.suggestions] == ["Sales", "Support", "Billing"]


def test_hear_with_prompt_and_default() -> None:
    r = run('HEAR n AS INTEGER WITH "How many?" DEFAULT 30\nTALK n', "")
    assert r.host.messages == ["How many?", "30"]


def test_legacy_assignment_forms_of_hear_and_ask() -> None:
    r = run('x = HEAR\ny = ASK "Name?"\nTALK x + "/" + y', "one", "two")
    assert r.host.messages == ["Name?", "one/two"]


def test_hear_into_a_member() -> None:
    assert run('HEAR user_data.city\nTALK user_data.city', "Lisbon").host.messages == ["Lisbon"]


def test_wait_suspends_and_resumes() -> None:
    r = Runner('TALK "a"\nWAIT 2\nTALK "b"')
    first = r.start()
    assert first.status == "waiting" and first.waiting_for == "wait" and first.wait_seconds == 2
    assert r.answer(None).status == "done"
    assert r.host.messages == ["a", "b"]


def test_hear_inside_function_used_in_expression_is_a_clear_error() -> None:
    r = run('FUNCTION F()\nHEAR x\nRETURN x\nEND FUNCTION\nTALK "v" + F()')
    assert r.result.status == "error" and "called inside an expression" in r.result.error["message"]


def test_resume_refuses_state_of_another_program() -> None:
    first = Runner('HEAR x\nTALK x').start()
    with pytest.raises(StateError):
        VM(compile_source('HEAR y\nTALK "other"'), InMemoryHost()).resume(first.state, "a")


def test_resume_refuses_a_run_that_is_not_waiting() -> None:
    state = Runner('HEAR x').start().state
    state["waiting"] = None
    with pytest.raises(StateError):
        VM(compile_source('HEAR x'), InMemoryHost()).resume(state, "a")


def test_for_each_loop_state_survives_suspension() -> None:
    r = run('FOR EACH item IN ["x", "y"]\nHEAR a\nTALK item + a\nNEXT', "1", "2")
    assert r.host.messages == ["x1", "y2"] and r.result.status == "done"


RICH = '''ON ERROR RESUME NEXT
m = #{ a: [1, 2.5, "x", TRUE, NULL], b: #{ c: NOW() } }
SUB Inner(k)
  TRY
    HEAR v
    m.b.c = v + k
  CATCH e
    TALK e
  END TRY
END SUB
FOR i = 1 TO 2
  FOR EACH w IN SPLIT("p,q", ",")
    SELECT CASE w
      CASE "p"
        CALL Inner(i)
      CASE ELSE
        WAIT 1
    END SELECT
  NEXT
NEXT
TALK m.b.c'''


def test_every_suspended_state_is_pure_json() -> None:
    r = Runner(RICH)
    result = r.start()
    suspensions = 0
    while result.status == "waiting":
        suspensions += 1
        assert json.loads(json.dumps(result.state)) == result.state
        result = r.answer("in" + str(suspensions))
    assert result.status == "done" and suspensions == 4
    assert r.host.messages == ["in32"]


# --- what PostgreSQL's jsonb refuses never reaches a saved state -------------------------------------


def _jsonb_safe(state: dict) -> str:
    """The state's JSON as the database gets it: no NaN/Infinity, no \\u0000 escape (an escaped backslash
    followed by the text u0000 is fine)."""
    text = json.dumps(state, ensure_ascii=False, allow_nan=False)
    assert not re.search(r"(?<!\\)(\\\\)*\\u0000", text)
    return text


@pytest.mark.parametrize("literal", ["1e999", "9" * 5000, "9" * 400])
def test_a_number_literal_past_the_float_range_is_a_compile_error(literal: str) -> None:
    with pytest.raises(CompileError, match="number too large") as err:
        compile_source(f'TALK "x"\nx = {literal}')
    assert err.value.line == 2
    assert run("RETURN 1e308").result.value == 1e308


def test_json_parse_keyword_reads_nan_and_infinity_as_null_like_the_builtin() -> None:
    r = Runner('x = JSON PARSE "[NaN, Infinity, -Infinity, 1e999, 1.5]"\ny = JSON_PARSE("[NaN, 1e999]")\nHEAR z\n'
               'RETURN [x, y]')
    first = r.start()
    _jsonb_safe(first.state)
    assert r.answer("ok").value == [[None, None, None, None, 1.5], [None, None]]


def test_chr_refuses_nul_and_lone_surrogates() -> None:
    for code, message in ((0, "CHR(0) (NUL) is not allowed"), (55296, "surrogate")):
        r = run(f"x = CHR({code})\nHEAR y")
        assert r.result.status == "error" and message in r.result.error["message"]
    assert run("RETURN CHR(65) & CHR(1)").result.value == "A\x01"


def test_nul_from_other_sources_is_packed_in_the_state_and_restored_on_resume() -> None:
    src = ('x = JSON PARSE "[\\"a\\\\u0000b\\"]"\nm = #{k: x}\nSET HEADER "h", x[0]\nclean = "c"\n'
           'HEAR y\nRETURN [LEN(x[0]), m.k[0], y, clean]')
    r = Runner(src)
    first = r.start()
    assert "vars#json" in _jsonb_safe(first.state)
    assert first.state["waiting"]["type"] == "hear" and first.state["frames"][0]["unit"] == "main"
    assert r.answer("1").value == [3, "a\x00b", "1", "c"]


def test_nan_from_a_host_response_is_a_clear_error_at_suspension() -> None:
    host = InMemoryHost(http_responses={"https://93.184.216.34/api": {"v": float("nan")}})
    r = run('x = GET "https://93.184.216.34/api"\nHEAR y', host=host)
    assert r.result.status == "error" and r.result.error["line"] == 2
    assert "NaN or infinite" in r.result.error["message"]


def test_hear_into_an_element_with_a_non_finite_index_is_a_basic_error() -> None:
    host = InMemoryHost(http_responses={"https://93.184.216.34/api": {"i": float("inf")}})
    r = Runner('a = [0]\nHEAR a[GET("https://93.184.216.34/api").i]', host=host)
    assert r.start().status == "waiting"
    r.host.http_responses["https://93.184.216.34/api"] = {"i": float("inf")}
    result = r.answer("x")
    assert result.status == "error" and "finite" in result.error["message"] and result.error["line"] == 2
