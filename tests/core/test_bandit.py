"""bandit finds no high-severity issue in the platform's code (issue 8's acceptance line)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bandit_reports_no_high_severity_finding():
    result = subprocess.run(  # noqa: S603 (our interpreter running bandit on our own code)
        [sys.executable, "-m", "bandit", "-q", "-r", "apps", "gbplatform", "--severity-level", "high"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Issue:" not in result.stdout
