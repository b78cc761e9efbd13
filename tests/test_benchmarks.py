"""The benchmarks still run (smoke runs: they assert nothing about speed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def _run(script: str, *args: str) -> None:
    """Run a benchmark script to its end; fail with its stderr if it fails."""
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_overhead_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    _run("overhead.py", "--quick", "--sizes", "100", "--write", str(report))
    text = report.read_text()
    assert "## Targets" in text
    assert "| chain | 100 |" in text


def test_tracing_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove the tracing report\n")
    _run("tracing.py", "--quick", "--append", str(report))
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove the tracing report")
    assert "# Tracing overhead" in text
    assert "| inline |" in text


def test_checkpoint_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove\n\n<!-- benchmarks/tracing.py -->\n\n# Tracing\n")
    _run("checkpoints.py", "--quick", "--dir", str(tmp_path), "--append", str(report))
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove")
    assert "# Tracing" in text  # another benchmark's section is kept
    assert "# Checkpoint overhead" in text
    assert "| working directory |" in text
    assert "\n### Warm re-run" in text  # headings are demoted under the section's
    assert "\n## Warm re-run" not in text


def test_files_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove\n")
    _run("files.py", "--quick", "--dir", str(tmp_path), "--append", str(report))
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove")
    assert "# File versions" in text
    assert "\n### First version (10 MiB file" in text
    assert "| first call in the process |" in text
    assert not list(tmp_path.glob("flowdeco-bench-*"))  # its file is removed


def test_values_benchmark_runs_quick(tmp_path: Path) -> None:
    pytest.importorskip("numpy")  # the values measured; pandas and pyarrow are optional
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove\n\n<!-- benchmarks/files.py -->\n\n# File versions\n")
    _run("values.py", "--quick", "--dir", str(tmp_path), "--append", str(report))
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove")
    assert "# File versions" in text  # another benchmark's section is kept
    assert "<!-- benchmarks/values.py -->\n\n# Large and small values" in text
    assert "\n### Targets\n" in text
    for row in (
        "| 1. storing a 10 MB numpy array (MB/s) |",
        "| 1. storing a 10 MB pandas DataFrame (MB/s) |",  # "not stored" until it can be
        "| 2. loading a 10 MB numpy array (ms) |",
        "| 2. loading a 10 MB pandas DataFrame (ms) |",
        "| 3. warm run asked for one small output, 3 x 2.5 MB upstream (ms) |",
        "| 4. warm small node, 100-node inline chain (µs per node) |",
        "| 5. peak RSS, cold run, FileStore, 4 x 30 MB chain (MB) |",
        "| 5. peak RSS, warm run, 4 x 30 MB chain (MB) |",
        "| warm, same store, new process |",
    ):
        assert row in text
    assert not list(tmp_path.glob("flowdeco-bench-*"))  # its stores are removed


def test_peers_benchmark_runs_smoke(tmp_path: Path) -> None:
    for peer in ("hamilton", "pipefunc", "dask"):  # benchmark-only: the `bench` extra
        pytest.importorskip(peer)
    report = tmp_path / "performance-peers.md"
    _run("peers.py", "--smoke", "--write", str(report))
    text = report.read_text()
    for heading in ("## Targets", "## 1. Build", "## 2. Run", "## 3. I/O", "## 6. Peak memory"):
        assert heading in text
    assert "| chain | 100 |" in text
    assert "| flowdeco | defaults:" in text


def test_executors_benchmark_runs_quick(tmp_path: Path) -> None:
    report = tmp_path / "performance.md"
    report.write_text("# Performance\n\nabove\n")
    _run("executors.py", "--quick", "--append", str(report))
    text = report.read_text()
    assert text.startswith("# Performance\n\nabove")
    assert "<!-- benchmarks/executors.py -->\n\n# Executors" in text
    for heading in ("### Thread nodes", "### CPU-bound nodes", "### A process node's round trip"):
        assert heading in text
    assert "| fan | trio |" in text
    assert '| `executor="process"` |' in text
