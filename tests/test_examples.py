"""The runnable examples run and print what the README says they print."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parent.parent / "examples"


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run examples/orders.py in ``cwd``, where its checkpoints go."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "orders.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_orders_demo(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert "5 succeeded" in done.stdout


def test_orders_demo_reuses_its_checkpoints_when_run_again(tmp_path: Path) -> None:
    """The second run re-reads the file (cache=False) and reuses everything below it."""
    for _ in range(2):
        done = _demo(tmp_path)
        assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert "1 succeeded, 4 cached" in done.stdout
    assert len(list((tmp_path / ".flowdeco" / "runs").glob("orders-*"))) == 1


def test_orders_demo_reports_a_missing_file(tmp_path: Path) -> None:
    done = _demo(tmp_path, str(tmp_path / "nope.csv"))
    assert done.returncode != 0
    assert "NodeFailed: node 'orders' failed: FileNotFoundError" in done.stderr


def test_orders_demo_prints_spans_with_trace(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--trace")
    assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    for name in ("flowdeco.run orders", "orders", "prices", "by_customer", "total", "report"):
        assert f'"name": "{name}"' in done.stderr
