"""The runnable examples run and print what the README says they print."""

from __future__ import annotations

import os
import subprocess
import sys
import time
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
    """The second run reuses every node: the CSV's content is part of the key."""
    for _ in range(2):
        done = _demo(tmp_path)
        assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert "5 cached" in done.stdout
    assert len(list((tmp_path / ".flowdeco" / "runs").glob("orders-*"))) == 1


def test_orders_demo_sees_an_edited_csv(tmp_path: Path) -> None:
    """Editing the CSV (a Path input) re-runs what reads it, with the new figures."""
    csv_file = tmp_path / "orders.csv"
    original = (EXAMPLES / "orders.csv").read_text()
    csv_file.write_text(original)
    os.utime(csv_file, (time.time() - 60, time.time() - 60))
    first = _demo(tmp_path, str(csv_file))
    assert "total with VAT: 120.00" in first.stdout, first.stderr
    lines = original.splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    row[header.index("quantity")] = str(int(row[header.index("quantity")]) + 1)
    csv_file.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    os.utime(csv_file, (time.time() - 30, time.time() - 30))
    edited = _demo(tmp_path, str(csv_file))
    assert edited.returncode == 0, edited.stderr
    assert "total with VAT: 123.00" in edited.stdout  # one more widget: 2.50 and VAT
    assert set(_statuses(edited.stdout).values()) == {"succeeded"}  # all depend on orders
    again = _demo(tmp_path, str(csv_file))
    assert "5 cached" in again.stdout


def _statuses(stdout: str) -> dict[str, str]:
    """Each node's status, from the demo's table of nodes."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) >= 2 and parts[1] in ("succeeded", "cached"):
            found[parts[0]] = parts[1]
    return found


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
