"""Six nodes that finish at once, then a store that takes 0.3 s per file: Ctrl-C twice.

Usage: python slow_writes.py BACKEND

Prints ``finished`` once every node succeeded (the writes are then still going on); the
test sends Ctrl-C, and again a little later, while the run waits for its writer. Then,
in this process, it prints which of the six values are in the store.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import flowdeco as fd
from flowdeco._core._codec import decode
from flowdeco._core._store import FileStore


class SlowStore(FileStore):
    """A disk that is slow to write to."""

    def save(self, key: str, body: bytes) -> None:
        time.sleep(0.3)
        super().save(key, body)


def main() -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)
    backend = sys.argv[1]
    nodes: list[fd.Node[..., Any]] = []
    for i in range(6):

        def body(x: int, i: int = i) -> int:
            return x + i

        nodes.append(fd.node(name=f"n{i}")(body))

    def seen(name: str, status: fd.Status) -> None:
        finished.append(name)
        if len(finished) == 12:  # running and succeeded, six times
            sys.stdout.write("finished\n")
            sys.stdout.flush()

    finished: list[str] = []
    store = SlowStore(".flowdeco")
    pipe = fd.Pipeline(nodes, name="slow", store=store)
    outcome, note = "returned", ""
    try:
        try:
            pipe.run({"x": 10}, backend=backend, on_status=seen)  # type: ignore[arg-type]
        except KeyboardInterrupt as exc:
            outcome, note = "interrupted", " ".join(getattr(exc, "__notes__", []))
            time.sleep(0.5)  # a second Ctrl-C that came late lands here
    except KeyboardInterrupt:
        outcome = "interrupted"
    (record,) = FileStore(".flowdeco").runs("slow")
    stored = {}
    for name, entry in record.nodes.items():
        body = FileStore(".flowdeco").load(entry["key"]) if entry.get("stored") else None
        stored[name] = None if body is None else decode(body)
    end = [e for e in record.entries if e.get("event") == "end"]
    report = {"outcome": outcome, "note": note, "stored": stored, "end": end}
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
