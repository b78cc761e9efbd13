"""Ctrl-C (a real SIGINT to a real process) stops a run promptly with KeyboardInterrupt."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import attrs
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "interrupt_pipeline.py"

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")

#: Seconds the thread node blocks: a running thread cannot be stopped, and on asyncio the
#: interpreter waits for anyio's worker threads at exit, so this bounds the exit time.
THREAD_SECONDS = 1.0
#: How long the process may take to exit after SIGINT.
EXIT_WITHIN = 5.0


@attrs.frozen
class Exit:
    seconds: float  # from SIGINT to exit
    returncode: int | None  # None: it hung and was killed
    stdout: list[str]
    stderr: str


def _interrupt(mode: str, backend: str) -> Exit:
    """Start the script, send SIGINT once both long nodes are running, wait for the exit."""
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, backend, str(THREAD_SECONDS)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines: list[str] = []
    both_started = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if {"started blocking", "started waiting"} <= set(lines):
                both_started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert both_started.wait(20), f"the nodes never started: {lines}"
        time.sleep(0.1)  # let the run settle into its awaits
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        try:
            process.wait(EXIT_WITHIN + 1)
            returncode: int | None = process.returncode
        except subprocess.TimeoutExpired:
            returncode = None
        seconds = time.monotonic() - sent
    finally:
        process.kill()
        _, stderr = process.communicate()
        reader.join(5)
    return Exit(seconds, returncode, lines, stderr)


def _assert_interrupted(done: Exit) -> None:
    """The process ended promptly, of an unwrapped KeyboardInterrupt, with the run cancelled."""
    assert done.returncode is not None, f"still running {done.seconds:.1f} s after SIGINT"
    assert done.returncode != 0
    assert done.seconds < EXIT_WITHIN
    assert "run returned" not in done.stdout
    assert "ExceptionGroup" not in done.stderr, done.stderr
    # The traceback ends with the exception, then (3.11+) flowdeco's note on resuming.
    lines = [line for line in done.stderr.rstrip().splitlines() if not line.startswith("flowdeco:")]
    assert lines[-1] == "KeyboardInterrupt", done.stderr
    assert "status waiting cancelled" in done.stdout, done.stdout
    assert "status blocking cancelled" in done.stdout, done.stdout
    assert "status both running" not in done.stdout


class TestInterruptRun:
    def test_ctrl_c_stops_run_from_sync_code(self, backend: str) -> None:
        _assert_interrupted(_interrupt("run", backend))

    @pytest.mark.parametrize(
        "mode",
        [
            pytest.param("in-asyncio-loop", id="in-asyncio-loop"),
            pytest.param("in-anyio-asyncio", id="in-anyio-asyncio"),
            pytest.param("in-anyio-trio", id="in-anyio-trio"),
        ],
    )
    def test_ctrl_c_stops_run_inside_a_running_loop(self, mode: str, backend: str) -> None:
        _assert_interrupted(_interrupt(mode, backend))

    def test_run_raises_after_the_run_was_cancelled(self, backend: str) -> None:
        # The run's own thread finishes cancelling (the async node's cleanup takes 0.3 s)
        # before run() lets the KeyboardInterrupt out to the caller.
        done = _interrupt("in-asyncio-loop", backend)
        assert "caller interrupted" in done.stdout, done.stdout
        assert "status waiting cancelled" in done.stdout, done.stdout
        assert done.stdout.index("status waiting cancelled") < done.stdout.index(
            "caller interrupted"
        ), done.stdout
