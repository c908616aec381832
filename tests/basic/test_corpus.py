"""The upstream template corpus compiles (run with GB_CORPUS_DIR=<path to bottemplates/bots>).

The upstream scripts are never committed; this test reads them from the given folder, checks that
`basic check` never crashes on any of them, and reports the share that compiles cleanly. Files that
fail must fail only for the reasons listed in apps/basic/README.md (unsupported keywords or invalid
upstream syntax).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from apps.basic.cli import main

CORPUS = os.environ.get("GB_CORPUS_DIR")

# Minimum share of the corpus that must compile cleanly; see the README for the files that do not.
MIN_COMPILE_RATE = 0.85


@pytest.mark.corpus
@pytest.mark.skipif(not CORPUS, reason="set GB_CORPUS_DIR to the upstream bottemplates/bots folder")
def test_corpus_compiles_without_crashes() -> None:
    files = sorted(str(p) for p in Path(str(CORPUS)).rglob("*.bas"))
    assert files, "no .bas files under GB_CORPUS_DIR"
    failures = []
    for f in files:
        out = io.StringIO()
        if main(["check", f], out=out):
            failures.append(out.getvalue().strip())
    crashes = [f for f in failures if "internal compiler error" in f]
    rate = 1 - len(failures) / len(files)
    print(f"\ncorpus: {len(files) - len(failures)}/{len(files)} compile cleanly ({rate:.1%})")
    for f in failures:
        print("  " + f)
    assert not crashes
    assert rate >= MIN_COMPILE_RATE
