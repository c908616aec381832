"""Command line of the BASIC engine: `check`, `run` and `tool` (used by scripts outside the tests).

`python manage.py basic ...` is a thin wrapper around `main(argv)`; nothing here imports Django.

* `check FILE...` prints `FILE:LINE:COL: message` for each file that does not compile; exit 1 if any.
* `run FILE [--input TEXT]... [--args JSON] [--json]` runs with the in-memory host; `--input` values
  answer HEARs in order, WAITs are skipped. `--json` prints one object:
  `{"status", "messages", "suggestions", "return", "error"}`.
* `tool FILE` prints the tool's JSON schema (OpenAI function format).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TextIO

from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.host import InMemoryHost
from apps.basic.vm import VM

# Resumptions a CLI run allows (HEARs answered plus WAITs skipped) before giving up.
MAX_CLI_RESUMES = 10_000


def _read(path: str) -> str:
    return Path(path).read_text(encoding="utf-8", errors="replace")


def _check(files: list[str], out: TextIO) -> int:
    failed = 0
    for f in files:
        try:
            compile_source(_read(f), Path(f).stem)
        except CompileError as exc:
            failed += 1
            out.write(f"{f}:{exc.line}:{exc.col}: {exc.message}\n")
        except OSError as exc:
            failed += 1
            out.write(f"{f}:0:0: cannot read file: {exc.strerror}\n")
        except Exception as exc:  # noqa: BLE001 - a crash is reported as a finding, never a traceback
            failed += 1
            out.write(f"{f}:0:0: internal compiler error: {type(exc).__name__}: {exc}\n")
    return 1 if failed else 0


def run_file(path: str, inputs: list[str], args: dict | None) -> dict:
    """Run a script with the in-memory host; the result object of `run --json`."""
    try:
        program = compile_source(_read(path), Path(path).stem)
    except CompileError as exc:
        return {"status": "compile_error", "messages": [], "suggestions": [], "return": None,
                "error": {"line": exc.line, "col": exc.col, "message": exc.message}}
    host = InMemoryHost()
    result = VM(program, host).start(args)
    pending = list(inputs)
    for _ in range(MAX_CLI_RESUMES):
        if result.status != "waiting":
            break
        if result.waiting_for == "wait":
            result = VM(program, host).resume(json.loads(json.dumps(result.state)))
            continue
        if not pending:
            break
        result = VM(program, host).resume(json.loads(json.dumps(result.state)), pending.pop(0))
    return {"status": result.status, "messages": list(host.messages),
            "suggestions": [s["text"] for s in host.suggestions],
            "return": result.value if result.status == "done" else None, "error": result.error}


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="basic", description="General Bots BASIC engine")
    sub = parser.add_subparsers(dest="command", required=True)
    p_check = sub.add_parser("check", help="compile scripts and report errors")
    p_check.add_argument("files", nargs="+")
    p_run = sub.add_parser("run", help="run a script with the in-memory host")
    p_run.add_argument("file")
    p_run.add_argument("--input", action="append", default=[], help="answer to the next HEAR")
    p_run.add_argument("--args", default=None, help="tool parameters as a JSON object")
    p_run.add_argument("--json", action="store_true", help="print one JSON object")
    p_tool = sub.add_parser("tool", help="print the tool's JSON schema")
    p_tool.add_argument("file")
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if ns.command == "check":
        return _check(ns.files, out)
    if ns.command == "tool":
        try:
            program = compile_source(_read(ns.file), Path(ns.file).stem)
        except CompileError as exc:
            out.write(f"{ns.file}:{exc.line}:{exc.col}: {exc.message}\n")
            return 1
        out.write(json.dumps(program.metadata["tool"], indent=2, ensure_ascii=False) + "\n")
        return 0
    args = None
    if ns.args:
        try:
            args = json.loads(ns.args)
        except ValueError as exc:
            out.write(f"--args is not valid JSON: {exc}\n")
            return 2
        if not isinstance(args, dict):
            out.write("--args must be a JSON object\n")
            return 2
    report = run_file(ns.file, ns.input, args)
    if ns.json:
        out.write(json.dumps(report, ensure_ascii=False) + "\n")
    else:
        for m in report["messages"]:
            out.write(m + "\n")
        if report["error"]:
            out.write(f"{ns.file}:{report['error']['line']}: {report['error']['message']}\n")
        elif report["status"] == "waiting":
            out.write("(waiting for input)\n")
    return 0 if report["status"] in ("done", "waiting") else 1
