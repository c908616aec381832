"""`manage.py basic` is a thin wrapper around the CLI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command


def test_manage_py_basic_run_json_and_check_exit_status(tmp_path: Path) -> None:
    script = tmp_path / "s.bas"
    script.write_text('HEAR n AS INTEGER\nTALK "n=" + n\n', encoding="utf-8")
    out = io.StringIO()
    call_command("basic", "run", str(script), "--input", "1.000", "--json", stdout=out)
    assert json.loads(out.getvalue())["messages"] == ["n=1000"]
    bad = tmp_path / "bad.bas"
    bad.write_text("WHILE 1\n", encoding="utf-8")
    out = io.StringIO()
    with pytest.raises(SystemExit) as info:
        call_command("basic", "check", str(bad), stdout=out)
    assert info.value.code == 1
    assert out.getvalue() == f"{bad}:1:1: WHILE is never closed\n"
