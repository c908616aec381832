"""The CLI contract used by scripts outside the test suite (`basic check|run|tool`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from apps.basic.cli import main
from apps.basic.limits import MAX_INSTRUCTIONS


def call(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(list(argv), out=out)
    return code, out.getvalue()


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_check_reports_file_line_col_message_and_exit_status(tmp_path: Path) -> None:
    good = write(tmp_path, "good.bas", 'TALK "hi"\n')
    bad = write(tmp_path, "bad.bas", 'TALK "hi"\nIF x THEN\n')
    assert call("check", good) == (0, "")
    code, out = call("check", good, bad)
    assert code == 1
    assert out == f"{bad}:2:1: IF is never closed\n"


def test_run_json_answers_hears_in_order_and_reports_everything(tmp_path: Path) -> None:
    f = write(tmp_path, "s.bas", 'PARAM city AS STRING\nTALK "City: " + city\nHEAR a AS "Yes", "No"\n'
                                 'HEAR b\nTALK a + b\nRETURN #{ a: a }\n')
    code, out = call("run", f, "--input", "y", "--input", "second", "--args", '{"city": "Porto"}', "--json")
    assert code == 0
    assert json.loads(out) == {"status": "done", "messages": ["City: Porto", "Yessecond"],
                               "suggestions": ["Yes", "No"], "return": {"a": "Yes"}, "error": None}


def test_run_json_waiting_when_inputs_run_out(tmp_path: Path) -> None:
    f = write(tmp_path, "s.bas", 'HEAR a\nHEAR b\n')
    report = json.loads(call("run", f, "--input", "x", "--json")[1])
    assert report["status"] == "waiting" and report["error"] is None


def test_run_json_compile_error_and_runtime_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.bas", 'x = (1\n')
    report = json.loads(call("run", bad, "--json")[1])
    assert report["status"] == "compile_error" and report["error"]["line"] == 1
    boom = write(tmp_path, "boom.bas", 'TALK "a"\nx = 1 / 0\n')
    code, out = call("run", boom, "--json")
    assert code == 1
    assert json.loads(out)["error"] == {"line": 2, "message": "division by zero"}


def test_run_that_exceeds_its_budget_ends_with_error(tmp_path: Path) -> None:
    f = write(tmp_path, "loop.bas", 'i = 0\nWHILE TRUE\ni = i + 1\nWEND\n')
    report = json.loads(call("run", f, "--json")[1])
    assert report["status"] == "error"
    assert report["error"]["message"] == f"instruction budget of {MAX_INSTRUCTIONS} exceeded (endless loop?)"


def test_tool_prints_openai_schema(tmp_path: Path) -> None:
    f = write(tmp_path, "get-price.bas", 'PARAM product AS STRING DESCRIPTION "Product"\n'
                                         'DESCRIPTION "Price of a product"\nRETURN 1\n')
    code, out = call("tool", f)
    assert code == 0
    schema = json.loads(out)
    assert schema["function"]["name"] == "get-price"
    assert schema["function"]["parameters"]["required"] == ["product"]


def test_run_bad_args_json_is_rejected(tmp_path: Path) -> None:
    f = write(tmp_path, "s.bas", 'TALK 1\n')
    assert call("run", f, "--args", "[1]")[0] == 2
