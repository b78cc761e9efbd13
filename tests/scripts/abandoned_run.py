"""An ``arun`` abandoned by its loop: what finished is still written before the exit.

Usage: python abandoned_run.py

One node finishes at once, into a store that takes 0.5 s to write a file; another waits
forever. The loop stops as soon as the first has finished and the process exits, never
closing the run: the interpreter's exit must still write the first node's value.
"""

from __future__ import annotations

import asyncio
import sys
import time

import anyio

import flowdeco as fd
from flowdeco._core._store import FileStore


class SlowStore(FileStore):
    """A disk that is slow to write to."""

    def save(self, key: str, body: bytes) -> None:
        time.sleep(0.5)
        super().save(key, body)


@fd.node(run_in="inline")
def fast() -> int:
    return 42


@fd.node
async def forever() -> int:
    await anyio.sleep(3600)
    return 0


async def main() -> None:
    finished = asyncio.Event()

    def seen(name: str, status: fd.Status) -> None:
        if name == "fast" and status is fd.Status.SUCCEEDED:
            finished.set()

    pipe = fd.Pipeline([fast, forever], name="abandoned", store=SlowStore(".flowdeco"))
    task = asyncio.ensure_future(pipe.arun(on_status=seen))
    await finished.wait()
    sys.stdout.write("abandoning\n")
    sys.stdout.flush()
    del task  # never awaited again: the loop is left as a second Ctrl-C would leave it


if __name__ == "__main__":
    loop = asyncio.new_event_loop()
    loop.run_until_complete(main())
    # No loop.close(), no cancellation: the run's task is left pending, its close unstarted.
