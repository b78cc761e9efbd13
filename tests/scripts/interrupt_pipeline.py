"""A pipeline with a long thread node and a long async node, for the Ctrl-C tests.

Usage: python interrupt_pipeline.py MODE BACKEND THREAD_SECONDS

MODE says where the sync ``Pipeline.run(backend=BACKEND)`` is called from:

- ``run``: plain sync code, so ``run`` starts the event loop in this thread;
- ``in-asyncio-loop``: a coroutine on a bare asyncio loop (``run_until_complete``, which
  keeps Python's SIGINT handler, as a Jupyter kernel does), so the run gets its own thread;
- ``in-anyio-asyncio`` / ``in-anyio-trio``: a coroutine under ``anyio.run``, as in an async
  application; each loop installs its own SIGINT handling.

Prints ``started <node>`` from inside each long node, ``status <node> <status>`` on every
status change and ``caller interrupted`` when ``run`` raises KeyboardInterrupt. The caller
then waits a moment before re-raising, so that a run cancelled in the background still
gets to report its statuses before the process exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time

import anyio

import flowdeco as fd

GRACE = 0.5  # seconds the caller waits after the interrupt, before re-raising it
CLEANUP = 0.3  # seconds the async node spends cleaning up once cancelled


def say(line: str) -> None:
    """Print a whole line in one write: the run's threads print concurrently."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    # Python leaves SIGINT ignored when it starts ignored, as in a shell's background job;
    # the test sends Ctrl-C as a terminal would to a program in the foreground.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    mode, backend, thread_seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])

    @fd.node(run_in="thread")
    def blocking() -> str:
        say("started blocking")
        time.sleep(thread_seconds)
        say("finished blocking")
        return "blocking"

    @fd.node
    async def waiting() -> str:
        say("started waiting")
        try:
            await anyio.sleep(30)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(CLEANUP)
        return "waiting"

    @fd.node(run_in="inline")
    def both(blocking: str, waiting: str) -> str:
        return blocking + waiting

    def report(name: str, status: fd.Status) -> None:
        say(f"status {name} {status}")

    pipe = fd.Pipeline([blocking, waiting, both])

    def call() -> None:
        try:
            pipe.run(backend=backend, on_status=report)  # type: ignore[arg-type]
        except KeyboardInterrupt:
            say("caller interrupted")
            time.sleep(GRACE)
            raise
        say("run returned")

    async def caller() -> None:
        call()  # blocking on purpose: a sync helper called from async code

    if mode == "run":
        call()
    elif mode == "in-asyncio-loop":
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(caller())
        finally:
            loop.close()
    elif mode.startswith("in-anyio-"):
        anyio.run(caller, backend=mode.removeprefix("in-anyio-"))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
