"""The benchmarks still run (smoke runs: they assert nothing about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_tracing_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove the tracing report\n")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK.with_name("tracing.py")),
            "--quick",
            "--append",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove the tracing report")
    assert "# Tracing overhead" in text
    assert "| inline |" in text


def test_checkpoint_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove\n\n<!-- benchmarks/tracing.py -->\n\n# Tracing\n")
    done = subprocess.run(
        [
            sys.executable,
            str(BENCHMARK.with_name("checkpoints.py")),
            "--quick",
            "--dir",
            str(tmp_path),
            "--append",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove")
    assert "# Tracing" in text  # another benchmark's section is kept
    assert "# Checkpoint overhead" in text
    assert "| working directory |" in text
    assert "\n### Warm re-run" in text  # headings are demoted under the section's
    assert "\n## Warm re-run" not in text


def test_peers_benchmark_runs_smoke(tmp_path: Path) -> None:
    for peer in ("hamilton", "pipefunc", "dask"):  # benchmark-only: the `bench` extra
        pytest.importorskip(peer)
    report = tmp_path / "performance-peers.md"
    done = subprocess.run(
        [sys.executable, str(BENCHMARK.with_name("peers.py")), "--smoke", "--write", str(report)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = report.read_text()
    for heading in ("## Targets", "## 1. Build", "## 2. Run", "## 3. I/O", "## 6. Peak memory"):
        assert heading in text
    assert "| chain | 100 |" in text
    assert "| flowdeco | defaults:" in text
