"""Lexical rules (spec 3.1), parsing and compile errors with positions."""

from __future__ import annotations

import pytest

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from tests.basic.conftest import run


def compile_error(source: str) -> CompileError:
    with pytest.raises(CompileError) as info:
        compile_source(source)
    return info.value


def test_comments_in_every_form_are_ignored() -> None:
    src = "' whole line\nREM remark\n// slash comment\n# hash\nTALK \"a\" ' trailing comment\nTALK \"it's\" // x\n"
    assert run(src).host.messages == ["a", "it's"]


def test_keywords_and_identifiers_are_case_insensitive() -> None:
    assert run('Name = "x"\ntalk NAME\nIf name = "x" Then\n  Talk "yes"\nEnd If').host.messages == ["x", "yes"]


def test_interpolation_in_every_string_literal_evaluates_expressions() -> None:
    src = 'item = #{ id: 7, price: 2.5 }\nTALK "Item ${item.id} costs ${item.price * 2} and $5 stays"'
    assert run(src).host.messages == ["Item 7 costs 5 and $5 stays"]


def test_escape_sequences_and_doubled_quotes() -> None:
    assert run('TALK "Line 1\\nLine 2 ""q"""').host.messages == ['Line 1\nLine 2 "q"']


def test_single_quoted_string_after_keyword() -> None:
    assert run("TALK '\"'\nx = 'abc'\nTALK x").host.messages == ['"', "abc"]


def test_begin_talk_block_is_one_message_with_interpolation() -> None:
    src = 'n = 3\nBEGIN TALK\nYou have ${n} items.\n**Thanks**\nEND TALK'
    assert run(src).host.messages == ["You have 3 items.\n**Thanks**"]


def test_begin_system_prompt_sets_the_prompt() -> None:
    r = run('bot = "Ana"\nBEGIN SYSTEM PROMPT\nYou are ${bot}.\nIF this looks like code it is prose\nEND SYSTEM PROMPT')
    assert r.host.system_prompt == "You are Ana.\nIF this looks like code it is prose"


def test_begin_mail_block_sends_subject_and_body() -> None:
    src = 'name = "Bo"\nBEGIN MAIL "a@example.com"\nSubject: Hi ${name}\n\nBody for ${name}\nEND MAIL'
    assert run(src).host.mails == [{"to": "a@example.com", "subject": "Hi Bo", "body": "Body for Bo",
                                     "attachments": []}]


def test_multiline_map_literal_and_array_literal_with_access() -> None:
    src = 'm = {\n  "a": 1,\n  b: [10, 20, 30]\n}\nTALK m.a + m.b[2]\narr = [1, 2]\narr[1] = "x"\nTALK arr[1]'
    assert run(src).host.messages == ["31", "x"]


def test_with_block_builds_a_map() -> None:
    src = 'WITH ticket\n  number = 42\n  .status = "open"\nEND WITH\nTALK ticket.number + "-" + ticket.status'
    assert run(src).host.messages == ["42-open"]


def test_line_continuation_with_underscore_and_trailing_comma() -> None:
    assert run('x = 1 + _\n  2\nTALK x').host.messages == ["3"]


@pytest.mark.parametrize(("source", "line", "col", "fragment"), [
    ('TALK "ok"\nIF x THEN\nTALK "a"\n', 2, 1, "IF is never closed"),
    ('x = (1 + 2\nTALK x', 1, 5, "never closed"),
    ('TALK "abc', 1, 6, "unterminated string"),
    ('FOR i = 1 TO 3\nNEXT j', 2, 1, "NEXT j does not match FOR i"),
    ('x = 1\nFROBNICATE 3', 2, 1, "unknown keyword or procedure 'FROBNICATE'"),
    ('END IF', 1, 1, "END IF without a matching opening statement"),
    ('GOTO nowhere', 1, 1, "label 'nowhere' is not defined"),
    ('x = LEN(1, 2, 3)', 1, 5, "LEN takes 1 arguments, got 3"),
    ('SET SCHEDULE "whenever you like"', 1, 1, "Could not parse schedule"),
])
def test_compile_errors_carry_line_column_and_message(source: str, line: int, col: int, fragment: str) -> None:
    err = compile_error(source)
    assert (err.line, err.col) == (line, col)
    assert fragment in err.message


@pytest.mark.parametrize("source", ['RUN PYTHON "print(1)"', 'x = RUN BASH "ls"', 'RUN JAVASCRIPT "1"'])
def test_code_execution_keywords_are_refused_at_compile_time(source: str) -> None:
    assert "not allowed in the sandbox" in compile_error(source).message
