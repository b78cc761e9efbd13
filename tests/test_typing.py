"""What a type checker sees of the public API: every run option, typed, on run() and arun()."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

mypy_api = pytest.importorskip("mypy.api")

ROOT = Path(__file__).resolve().parent.parent

USER_CODE = """
import flowdeco as fd

@fd.node
def double(x: int) -> int:
    return 2 * x

pipe = fd.Pipeline([double])

async def main() -> None:
    good: fd.RunResult = pipe.run(
        {"x": 1}, concurrency=4, on_error="continue", backend="trio", cache=False,
        resume=True, store=None, trace_inputs=True, defaults={"retries": 1},
        hooks=[fd.Hooks()], on_status=lambda node, status: None,
    )
    awaited: fd.RunResult = await pipe.arun({"x": 1}, on_error="raise", store=fd.MemoryStore())
    pipe.run(concurency=4)  # error: a misspelt option
    pipe.run(on_error="ignore")  # error: not one of the literals
    pipe.run(cache="yes")  # error: not a bool
    await pipe.arun(backend="trio")  # error: arun runs in the caller's loop
"""


def test_mypy_sees_every_run_option(tmp_path: Path) -> None:
    code = textwrap.dedent(USER_CODE).lstrip()
    expected = [str(n) for n, line in enumerate(code.splitlines(), 1) if "# error" in line]
    user = tmp_path / "user.py"
    user.write_text(code)
    out, err, status = mypy_api.run(
        ["--strict", "--cache-dir", str(ROOT / ".mypy_cache"), "--no-error-summary", str(user)]
    )
    assert status == 1, out + err
    lines = sorted({line.split(":")[1] for line in out.splitlines() if ": error:" in line}, key=int)
    assert lines == expected, out
    assert '"concurency"' in out, out
