"""The overhead benchmark still runs (a smoke run: it asserts nothing about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).parent.parent / "benchmarks" / "overhead.py"


def test_overhead_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    done = subprocess.run(
        [sys.executable, str(BENCHMARK), "--quick", "--sizes", "100", "--write", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert "## Targets" in text
    assert "| chain | 100 |" in text
