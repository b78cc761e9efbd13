"""``flowdeco run --progress``: one line on stderr, redrawn as nodes move, of how many of the
planned nodes are done, reused, running and failed."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import flowdeco as fd

if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["Progress"]

_EVERY = 0.1  # seconds between redraws: a line per node would cost more than small nodes
_ENDED = frozenset({fd.Status.SUCCEEDED, fd.Status.FAILED, fd.Status.CANCELLED})


class Progress(fd.Hooks):
    """Counts of the run's nodes by what they did, drawn over one line (a hook: called in
    the event loop's thread, so it only counts and, now and then, writes)."""

    def __init__(self, planned: int, stream: TextIO) -> None:
        self.planned = planned
        self.stream = stream
        self.done = self.reused = self.running = self.failed = 0
        self.drawn = 0.0

    def status_changed(self, node: str, status: fd.Status, error: BaseException | None) -> None:
        if status is fd.Status.RUNNING:
            self.running += 1
        elif status in _ENDED:
            self.running -= 1
            self.done += 1
            self.failed += status is fd.Status.FAILED
        elif status in (fd.Status.CACHED, fd.Status.SKIPPED):
            self.done += 1
            self.reused += status is fd.Status.CACHED
        now = time.monotonic()
        if now - self.drawn >= _EVERY or self.done == self.planned:
            self.drawn = now
            self._draw()

    def _draw(self) -> None:
        failed = f", {self.failed} failed" if self.failed else ""
        line = f"[{self.done}/{self.planned}] {self.reused} reused, {self.running} running{failed}"
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()

    def close(self) -> None:
        """Draw the last counts and end the line, so what follows starts on its own."""
        self._draw()
        self.stream.write("\n")
        self.stream.flush()
