"""Constructs of the upstream templates, each with a script of our own (the templates are never copied).

* calls of functions nobody defines compile and fail only when they run (upstream resolves functions
  at run time);
* `SPLICE` / `list.splice(i, n)`;
* workflows: ORCHESTRATE WORKFLOW, STEP n: BOT / PARALLEL ... END PARALLEL / HUMAN APPROVAL, DELAY;
* inline SQL `x = SELECT ... FROM t` handed to the host as text (never run as SQL);
* Rhai/JavaScript brace blocks `IF cond {` ... `} ELSE {` ... `}`;
* BEGIN TALK lines with a `${...}` that is not an expression (upstream's lenient reading);
* LLM model-routing hints on the lines after `x = LLM "..."`, `WAIT FOR RESPONSE AS x`;
* legacy long-tail words (CHART, RESET REPORT, WEBSITE OF, CREATE_SITE, ESCALATE) reach the host;
* what upstream rejects too stays a clean compile error.
"""

from __future__ import annotations

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.host import InMemoryHost
from tests.basic.conftest import run


class RecordingHost(InMemoryHost):
    """Records long-tail keywords instead of refusing them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list, dict]] = []

    def keyword(self, name: str, args: list, opts: dict) -> object:
        self.calls.append((name, args, opts))
        return f"<{name}>"


def compile_error(source: str) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_source(source)
    return info.value


# -- functions defined nowhere -------------------------------------------------------------------

def test_unknown_function_compiles_with_a_warning_and_fails_only_when_called() -> None:
    src = 'IF FALSE THEN\n  x = NOT_DEFINED_ANYWHERE(1)\nEND IF\nTALK "reached"\ny = ALSO_UNKNOWN(2) + 1\nTALK "never"'
    program = compile_source(src)
    assert [w["message"] for w in program.metadata["warnings"]] == [
        "unknown function NOT_DEFINED_ANYWHERE", "unknown function ALSO_UNKNOWN"]
    r = run(src)
    assert r.host.messages == ["reached"]
    assert r.result.status == "error"
    assert r.result.error == {"line": 5, "message": "unknown function ALSO_UNKNOWN"}


def test_unknown_function_error_can_be_trapped_like_any_runtime_error() -> None:
    src = 'ON ERROR RESUME NEXT\nx = IS_SOMETHING(1)\nTALK "after " + ISERROR()'
    r = run(src)
    assert r.result.status == "done"
    assert r.host.messages[0].startswith("after")


def test_a_sub_defined_later_in_the_script_is_not_an_unknown_function() -> None:
    src = 'TALK DOUBLE(4)\nFUNCTION DOUBLE(n)\n  RETURN n * 2\nEND FUNCTION'
    assert compile_source(src).metadata["warnings"] == []
    assert run(src).host.messages == ["8"]


def test_splice_as_a_method_statement_updates_the_list() -> None:
    src = 'items = ["a", "", "b", ""]\nk = 0\nDO WHILE k < COUNT(items)\n  IF items[k] = "" THEN\n' \
          '    items.splice(k, 1)\n  ELSE\n    k = k + 1\n  END IF\nLOOP\nTALK JOIN(items, "|")\n' \
          'more = SPLICE(items, 1, 0, "x", "y")\nTALK JOIN(more, "|") + " " + JOIN(items, "|")'
    assert run(src).host.messages == ["a|b", "a|x|y|b a|b"]


# -- workflows -----------------------------------------------------------------------------------

WORKFLOW = '''ORCHESTRATE WORKFLOW "refunds"
STEP 1: BOT "triage" "classify the request"
  ' a comment under the step
IF amount > 100 THEN
  STEP 2: HUMAN APPROVAL FROM "boss@example.com"
    TIMEOUT 900  ' seconds
    ON TIMEOUT: ESCALATE TO "ceo@example.com"
END IF
STEP 3: PARALLEL
  BRANCH A: BOT "payer" "pay back"
  BRANCH B: BOT "stock", "restock"
END PARALLEL
STEP 4: BOT "survey" "ask later"
  DELAY 3600
TALK "done"
'''


def test_workflow_statements_reach_the_host_with_structured_options() -> None:
    host = RecordingHost()
    r = run(WORKFLOW, args={"amount": 150}, host=host)
    assert r.result.status == "done", r.result.error
    assert host.messages == ["done"]
    assert host.calls == [
        ("ORCHESTRATE WORKFLOW", ["refunds"], {}),
        ("STEP", [1], {"BOT": "triage", "ACTION": "classify the request"}),
        ("STEP", [2], {"APPROVAL FROM": "boss@example.com", "TIMEOUT": 900,
                       "ON TIMEOUT": 'ESCALATE TO "ceo@example.com"'}),
        ("STEP", [3], {"PARALLEL": [{"branch": "A", "bot": "payer", "action": "pay back"},
                                    {"branch": "B", "bot": "stock", "action": "restock"}]}),
        ("STEP", [4], {"BOT": "survey", "ACTION": "ask later"}),
        ("DELAY", [3600], {}),
    ]


def test_human_approval_options_on_one_line_and_bare_action_words() -> None:
    host = RecordingHost()
    run('STEP 7: HUMAN APPROVAL FROM "a@b.c" TIMEOUT 60 ON TIMEOUT: APPROVE WITH WARNING', host=host)
    assert host.calls == [("STEP", [7], {"APPROVAL FROM": "a@b.c", "TIMEOUT": 60,
                                         "ON TIMEOUT": "APPROVE WITH WARNING"})]


def test_the_in_memory_host_refuses_workflows_at_run_time() -> None:
    r = run('ORCHESTRATE WORKFLOW "w"\nSTEP 1: BOT "a" "b"')
    assert r.result.status == "error"
    assert r.result.error["message"] == "ORCHESTRATE WORKFLOW is not available on this host"


def test_step_as_a_variable_and_for_step_still_work() -> None:
    assert run('step = 2\nFOR i = 0 TO 4 STEP step\n  TALK i\nNEXT i').host.messages == ["0", "2", "4"]


@pytest.mark.parametrize(("source", "fragment"), [
    ('STEP 1: PARALLEL\n  BRANCH A: BOT "a" "b"\n', "PARALLEL is never closed"),
    ('STEP 1: PARALLEL\n  TALK "x"\nEND PARALLEL', "expected BRANCH"),
    ('BRANCH A: BOT "a" "b"', "BRANCH is only allowed inside STEP n: PARALLEL"),
    ('END PARALLEL', "END PARALLEL without a matching opening statement"),
    ('ON TIMEOUT: APPROVE', "ON TIMEOUT is only allowed after STEP n: HUMAN APPROVAL"),
    ('STEP 1: TALK "x"', "expected BOT, PARALLEL or HUMAN APPROVAL"),
    ('STEP 1 BOT "a" "b"', "expected ':'"),
])
def test_malformed_workflow_lines_are_clean_compile_errors(source: str, fragment: str) -> None:
    assert fragment in compile_error(source).message


# -- inline SQL ----------------------------------------------------------------------------------

def test_inline_select_goes_to_the_host_as_text_with_the_named_variables() -> None:
    src = ('sales = [#{ v: 1 }]\nfor_each = 0\n'
           'data = SELECT SUM(v) AS total, region FROM sales\n'
           '    JOIN regions ON sales.rid = regions.id\n'
           '    GROUP BY region\n'
           'TALK data')
    host = RecordingHost()
    r = run(src, host=host)
    assert r.result.status == "done", r.result.error
    name, args, opts = host.calls[0]
    assert name == "SELECT"
    assert args == ["SELECT SUM(v) AS total, region FROM sales JOIN regions ON sales.rid = regions.id "
                    "GROUP BY region"]
    assert opts == {"FROM": {"sales": [{"v": 1}], "regions": None}}
    assert host.messages == ["<SELECT>"]


def test_inline_select_is_refused_by_the_in_memory_host_and_never_executed() -> None:
    r = run('t = []\nx = SELECT * FROM t; DROP TABLE users\nTALK "after"')
    assert r.result.status == "error"
    assert r.result.error["message"] == "SELECT is not available on this host"
    assert r.host.messages == []


def test_select_case_is_unaffected() -> None:
    assert run('x = 2\nSELECT CASE x\n  CASE 2\n    TALK "two"\nEND SELECT').host.messages == ["two"]


# -- brace blocks --------------------------------------------------------------------------------

def test_brace_if_else_if_else_blocks() -> None:
    src = ('FOR EACH n IN [1, 2, 3]\n'
           '  if n == 1 {\n    TALK "one"\n  } else if n = 2 {\n    TALK "two"\n'
           '    IF TRUE {\n      TALK "nested"\n    }\n'
           '  } else {\n    TALK "many"\n  }\n'
           'NEXT n')
    assert run(src).host.messages == ["one", "two", "nested", "many"]


def test_braces_of_map_literals_are_still_maps() -> None:
    src = 'm = {\n  "a": 1,\n  "b": { "c": 2 }\n}\nIF m.b.c = 2 THEN TALK "ok"'
    assert run(src).host.messages == ["ok"]
    src = 'IF TRUE THEN m = {\n  "a": 1\n}\nTALK m.a'
    assert run(src).host.messages == ["1"]


def test_else_on_the_line_after_the_closing_brace() -> None:
    src = 'x = 5\nIF x < 3 {\n  TALK "small"\n}\nELSE {\n  TALK "big"\n}\nTALK "end"'
    assert run(src).host.messages == ["big", "end"]


@pytest.mark.parametrize(("source", "fragment"), [
    ('IF x {\n  TALK "a"\n', "IF { is never closed"),
    ('TALK "a"\n}', "without a matching opening bracket"),
    ('IF x {\n  TALK "a"\n} ELSE TALK "b"', "expected '{'"),
])
def test_malformed_brace_blocks_are_clean_compile_errors(source: str, fragment: str) -> None:
    assert fragment in compile_error(source).message


# -- BEGIN TALK, LLM hints, WAIT FOR RESPONSE, legacy words -------------------------------------

def test_talk_block_reads_a_broken_placeholder_like_upstream() -> None:
    src = 'notes = "N"\nBEGIN TALK\ncall ${notes of today)}\nkeep ${ (} as text\nfine ${notes}!\nEND TALK'
    assert run(src).host.messages == ["call N of today)}\nkeep ${ (} as text\nfine N!"]


def test_a_broken_placeholder_outside_a_talk_block_is_still_an_error() -> None:
    assert "')' without a matching opening bracket" in compile_error('TALK "x ${a b)}"').message


def test_llm_model_routing_hint_lines_continue_the_llm_call() -> None:
    src = 'r = LLM "write a slogan"\n  WITH OPTIMIZE FOR "cost"\n  WITH MAX_COST 0.05\n  WITH MAX_LATENCY 5000\nTALK r'
    host = InMemoryHost(llm_reply="slogan")
    assert run(src, host=host).host.messages == ["slogan"]


def test_a_with_block_is_not_taken_for_an_llm_hint() -> None:
    assert run('WITH cfg\n  cost = 1\nEND WITH\nTALK cfg.cost').host.messages == ["1"]


def test_wait_for_response_is_a_hear() -> None:
    r = run('WAIT FOR RESPONSE AS answer TIMEOUT 60\nTALK "got " + answer', "yes")
    assert r.host.messages == ["got yes"]


def test_legacy_words_reach_the_host() -> None:
    src = ('img = CHART "donut", [1, 2]\nRESET REPORT\nsite = WEBSITE OF "ACME"\n'
           'CREATE_SITE "alias", "base", "prompt"\nESCALATE TO "supervisor"\nTALK img + site')
    host = RecordingHost()
    r = run(src, host=host)
    assert r.result.status == "done", r.result.error
    assert [c[0] for c in host.calls] == ["CHART", "RESET REPORT", "WEBSITE OF", "CREATE_SITE", "ESCALATE"]
    assert host.calls[2][1] == ["ACME"]
    assert host.messages == ["<CHART><WEBSITE OF>"]


# -- rejected upstream too -----------------------------------------------------------------------

@pytest.mark.parametrize(("source", "fragment"), [
    ('Some prose about ${topic}, then more\nTALK "x"', "unexpected character '$'"),
    ('t = REWRITE "summarise" ${TOJSON(items)}', "unexpected character '$'"),
    ('IF a = 1 And Not SOME FLAG Then\n  TALK "x"\nEND IF', "expected THEN"),
    ('HEAR choice AS "done", *', "expected a value, found '*'"),
    ('owner = fallback OR GET "config", "owner"', "unexpected ',' after the end of the statement"),
])
def test_constructs_upstream_rejects_too_are_clean_compile_errors(source: str, fragment: str) -> None:
    assert fragment in compile_error(source).message
