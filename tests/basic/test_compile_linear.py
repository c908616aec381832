"""Compiling is linear in the source (it is redone on every resume): crafted lines and sources whose
compilation used to cost the square of their size. Work is counted, not timed: the text is a str that
counts the characters the lexer/parser read from it by indexing, slicing, find and startswith."""

from __future__ import annotations

import contextlib
import random

import pytest

from apps.basic import parser
from apps.basic.compiler import compile_source
from apps.basic.errors import CompileError
from apps.basic.lexer import Lexer


class CountingText(str):
    """A str that adds to `work` the characters each read of it covers."""

    work = 0

    def __getitem__(self, key):  # type: ignore[no-untyped-def]
        result = str.__getitem__(self, key)
        CountingText.work += max(len(result), 1)
        return result

    def find(self, sub, start=None, end=None):  # type: ignore[no-untyped-def,override]
        found = str.find(self, sub, start, end)
        low = start or 0
        high = len(self) if end is None else min(end, len(self))
        CountingText.work += (found - low + len(sub)) if found >= 0 else max(high - low, 0)
        return found

    def startswith(self, prefix, start=None, end=None):  # type: ignore[no-untyped-def,override]
        CountingText.work += 1
        return str.startswith(self, prefix, start, end)


def _lexing_work(source: str) -> int:
    lexer = Lexer(source)
    lexer.src = CountingText(lexer.src)
    CountingText.work = 0
    with contextlib.suppress(CompileError):
        lexer.tokenize()
    return CountingText.work


def _interpolation_work(line: str) -> int:
    CountingText.work = 0
    parser.interpolate(CountingText(line), 1, 1, lenient=True)
    return CountingText.work


def _linear(work: object, make: object, n: int) -> None:
    small, large = work(make(n)), work(make(4 * n))  # type: ignore[operator]
    # Linear work grows 4 times (a little more for longer line numbers); the square grows 16 times.
    assert large <= 6 * small, (small, large)


LENIENT_LINES = {
    "unclosed": lambda n: "${" * n,  # each scanned the rest of the line for its '}'
    "unclosed with quotes": lambda n: "${'" * n,
    "nested, none an expression": lambda n: "${ a b " * n + "}" * n,  # each parsed the rest of the line
    "nested in text": lambda n: "Hi ${ {" * n + " there",
}


@pytest.mark.parametrize("name", sorted(LENIENT_LINES))
def test_failing_interpolations_in_a_talk_block_cost_linear_work(name: str) -> None:
    make = LENIENT_LINES[name]
    _linear(_interpolation_work, make, 1000)
    compile_source("BEGIN TALK\n" + make(4000) + "\nEND TALK\n")  # compiles: the text is kept literally


SOURCES = {
    "TABLE lines without END TABLE": lambda n: "TABLE t\n" * n,  # each searched the rest of the source
    "quotes on one line": lambda n: "x = ['a'" + ", 'a'" * n + "]\n",  # each copied the rest of the line
    "comment quotes on one line": lambda n: "x = 1 ' " + "'" * n + "\n",
    "map literals on one line": lambda n: "x = {}: " * n + "\n",  # each `{` copied the rest of the line
}


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_crafted_sources_cost_linear_work(name: str) -> None:
    _linear(_lexing_work, SOURCES[name], 2000)


def test_crafted_sources_compile_or_fail_cleanly() -> None:
    with pytest.raises(CompileError, match="unknown keyword or procedure 'TABLE'"):
        compile_source(SOURCES["TABLE lines without END TABLE"](20_000))
    compile_source(SOURCES["quotes on one line"](20_000))
    compile_source(SOURCES["map literals on one line"](20_000))
    program = compile_source("TALK 1\n" * 3 + "TABLE u\n  name AS TEXT\nEND TABLE\nTALK 1\n")
    assert [t.get("definition") for t in program.metadata["tables"]] == ["u"]


def _closing_by_scanning(text: str, start: int) -> int:
    """The brace scan interpolation defines: from `start`, outside '...' and "...", counting { and }."""
    depth, quote = 1, ""
    for j in range(start, len(text)):
        ch = text[j]
        if quote:
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return j
    return -1


def test_closing_braces_found_in_one_pass_match_the_scan_from_each_start() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice("${}'\"a ") for _ in range(rng.randint(1, 40)))
        closings = parser._closing_braces(text)
        for i in range(len(text) - 1):
            if text.startswith("${", i):
                assert closings.get(i + 1, -1) == _closing_by_scanning(text, i + 2), (text, i)
