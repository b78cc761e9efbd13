"""The README's 30-second example runs as written, and does what the text under it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

README = Path(__file__).parent.parent / "README.md"


def _example() -> str:
    text = README.read_text()
    section = text[text.index("## In 30 seconds") :]
    found = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert found is not None, "the README has no python block under 'In 30 seconds'"
    return found.group(1)


def _write_csv(path: Path, qty: int, age: float) -> None:
    path.write_text(f"sku,price,qty\nwidget,2.50,{qty}\n")
    then = time.time() - age  # an old file: a fresh one is hashed again on every run
    os.utime(path, (then, then))


def _run(cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_30_second_example(tmp_path: Path) -> None:
    """First run, rerun (cached), and an edit of the CSV (the new total, and why)."""
    (tmp_path / "example.py").write_text(_example())
    _write_csv(tmp_path / "orders.csv", 4, age=60)
    assert _run(tmp_path) == "12.0 succeeded - ran: nothing stored"
    assert _run(tmp_path).startswith("12.0 cached - reused: same code and inputs as run ")
    _write_csv(tmp_path / "orders.csv", 6, age=30)
    assert _run(tmp_path) == "18.0 succeeded - ran: parent 'orders' has a new value"
