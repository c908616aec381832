"""Storing a HEAR answer that fails (`HEAR a[5]` past the array's end) is an error of the HEAR line that the
script's TRY and ON ERROR handle, like the same assignment without HEAR."""

from __future__ import annotations

from tests.basic.conftest import run


def test_on_error_resume_next_continues_after_the_hear() -> None:
    r = run('''ON ERROR RESUME NEXT
a = [1]
HEAR a[5]
TALK "continued, err=" & ERR.description
''', "x")
    assert r.result.status == "done", r.result
    assert r.host.messages == ["continued, err=index 5 is outside the array (size 1)"]


def test_try_catch_around_the_hear_catches_it() -> None:
    r = run('''a = [1]
TRY
  HEAR a[5]
CATCH e
  TALK "caught " & e
END TRY
TALK "after"
''', "x")
    assert r.result.status == "done", r.result
    assert r.host.messages == ["caught index 5 is outside the array (size 1)", "after"]


def test_a_handler_in_the_caller_of_a_sub_catches_it() -> None:
    r = run('''SUB Ask(a)
  HEAR a[5]
  TALK "not here"
END SUB
ON ERROR GOTO failed
CALL Ask([1])
TALK "after the call"
END
failed:
  TALK "handled on line " & ERR.line
  RESUME NEXT
''', "x")
    assert r.result.status == "done", r.result
    assert r.host.messages == ["handled on line 2", "after the call"]


def test_without_a_handler_the_run_ends_with_the_error_on_the_hear_line() -> None:
    r = run('a = [1]\nHEAR a[5]\nTALK "never"\n', "x")
    assert r.result.status == "error"
    assert r.result.error == {"line": 2, "message": "index 5 is outside the array (size 1)"}
    assert r.host.messages == []
