"""`make bench`: run every tests/bench/bench_*.py in its own process and let each print its figures.

Benchmarks measure speed and memory targets; they are not part of the test suite (nothing here asserts a
timing). Pass module names to run only some: `python -m tests.bench bench_tenants`.
"""

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    names = argv or sorted(p.stem for p in here.glob("bench_*.py"))
    failed = []
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        result = subprocess.run([sys.executable, "-m", f"tests.bench.{name}"], cwd=here.parent.parent)  # noqa: S603
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
