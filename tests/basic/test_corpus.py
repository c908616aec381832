"""The upstream template corpus compiles (run with GB_CORPUS_DIR=<path to bottemplates/bots>).

The upstream scripts are never committed; this test reads them from the given folder (see
apps/basic/README.md, "Upstream corpus", for how to extract it), checks that `basic check` never
crashes on any of them and prints the share that compiles cleanly. A file that does not compile must
fail with one of the documented messages below (constructs upstream's own engine rejects too, or
keywords refused on purpose); any other failure is a new, undocumented incompatibility and fails
the test.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from apps.basic.cli import main

CORPUS = os.environ.get("GB_CORPUS_DIR")

# Compile errors the corpus may produce, each with its reason (the README's compatibility section).
DOCUMENTED_FAILURES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"unexpected character '\$'$"),
     "`${...}` outside a string (prose on line 1, an interpolation after a string): rejected upstream too"),
    (re.compile(r"expected THEN, found 'TOKEN'$"),
     "`Not CONTINUATION TOKEN` (two words as one variable): rejected upstream too"),
    (re.compile(r"expected a value, found '\*'$"),
     "`HEAR x AS \"done\", *` (a `*` menu option): rejected upstream too"),
    (re.compile(r"unexpected ',' after the end of the statement$"),
     "`a OR GET \"config\", \"k\"` (a keyword with a list inside an expression): rejected upstream too"),
    (re.compile(r"is not allowed in the sandbox$"), "RUN PYTHON/JAVASCRIPT/BASH: code execution is refused"),
]

# The share that compiled when the list above was written (150/155); a drop means a regression.
MIN_COMPILE_RATE = 0.96

_LINE = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?P<col>\d+): (?P<message>.*)$")


@pytest.mark.corpus
@pytest.mark.skipif(not CORPUS, reason="set GB_CORPUS_DIR to the upstream bottemplates/bots folder")
def test_corpus_compiles_or_fails_only_for_documented_reasons() -> None:
    root = Path(str(CORPUS))
    files = sorted(str(p) for p in root.rglob("*.bas"))
    assert files, "no .bas files under GB_CORPUS_DIR"
    failures: list[tuple[str, str, str]] = []  # file, position, message
    for f in files:
        out = io.StringIO()
        if main(["check", f], out=out):
            m = _LINE.match(out.getvalue().strip())
            assert m, out.getvalue()
            failures.append((f, f"{m['line']}:{m['col']}", m["message"]))
    crashes = [f for f in failures if "internal compiler error" in f[2]]
    undocumented = [f for f in failures if not any(p.search(f[2]) for p, _ in DOCUMENTED_FAILURES)]
    rate = 1 - len(failures) / len(files)
    print(f"\ncorpus: {len(files) - len(failures)}/{len(files)} compile cleanly ({rate:.1%})")
    for f, pos, message in failures:
        reason = next((r for p, r in DOCUMENTED_FAILURES if p.search(message)), "UNDOCUMENTED")
        print(f"  {Path(f).relative_to(root)}:{pos}: {message}\n      -> {reason}")
    assert not crashes
    assert not undocumented, f"new compile failures not in DOCUMENTED_FAILURES: {undocumented}"
    assert rate >= MIN_COMPILE_RATE
