"""A FUNCTION that HEARs or WAITs, called inside an expression, is an ordinary error at the call site."""

from __future__ import annotations

from tests.basic.conftest import run

ASK = '''FUNCTION AskUser()
  HEAR x
  RETURN x
END FUNCTION
'''


def test_on_error_resume_next_continues_after_the_call_and_does_not_rerun_the_script() -> None:
    r = run(ASK + '''SAVE "log", "once"
ON ERROR RESUME NEXT
TALK "start"
y = 1 + AskUser()
TALK "after: " & ERR.description
''')
    assert r.result.status == "done", r.result
    assert r.host.messages == [
        "start", "after: AskUser waits for input (HEAR/WAIT) but was called inside an expression; "
                 "call it as a statement: x = AskUser(...)"]
    assert len(r.host.tables["log"]) == 1  # nothing above the call ran twice


def test_try_catch_at_the_call_site_catches_it_and_the_run_can_still_hear() -> None:
    r = run(ASK + '''TALK "start"
TRY
  y = 1 + ASKUSER()
CATCH e
  TALK "caught: " & e
END TRY
HEAR z
TALK "z=" & z
''', "hello")
    assert r.result.status == "done", r.result
    assert r.host.messages[0] == "start"
    assert r.host.messages[1].startswith("caught: ASKUSER waits for input")  # the name as the call writes it
    assert r.host.messages[2] == "z=hello"


def test_without_a_handler_the_run_ends_with_the_error_on_the_calling_line() -> None:
    r = run(ASK + '''TALK "start"
y = 1 + AskUser()
TALK "never"
''')
    assert r.result.status == "error"
    assert r.result.error["line"] == 6
    assert "call it as a statement" in r.result.error["message"]
    assert r.host.messages == ["start"]


def test_a_wait_two_calls_deep_unwinds_to_the_outer_call_site() -> None:
    r = run('''FUNCTION Inner()
  WAIT 5
  RETURN 1
END FUNCTION
FUNCTION Outer()
  RETURN 10 + Inner()
END FUNCTION
ON ERROR RESUME NEXT
n = 0
y = 2 * Outer()
n = n + 1
TALK "n=" & n & " y=" & y & " " & ERR.description
''')
    assert r.result.status == "done", r.result
    assert r.host.messages == ["n=1 y= Inner waits for input (HEAR/WAIT) but was called inside an expression; "
                               "call it as a statement: x = Inner(...)"]


def test_the_statement_form_still_suspends_and_resumes() -> None:
    r = run(ASK + '''TALK "start"
y = AskUser()
TALK "got " & y
''', "yes")
    assert r.result.status == "done", r.result
    assert r.host.messages == ["start", "got yes"]
