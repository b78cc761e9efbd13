"""Run a small pipeline, put a hostile file where one node's checkpoint is, run it again.

Usage: python hostile_checkpoint.py FILE

FILE holds the bytes to put in place of node ``middle``'s checkpoint. The store is
``.flowdeco`` in the working directory. Prints one JSON line about the second run: its
seconds, how much the process's peak resident memory grew during it (KiB), the
CheckpointWarnings it issued, each node's status, and which node bodies ran.

Peak memory is per process, hence a process of its own: a test in pytest's process would
measure whatever ran before it. On Linux it is the address space's high-water mark
(``VmHWM``): ``ru_maxrss`` would start from the parent's size at the fork, so a child of a
large pytest process could allocate that much unseen.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import warnings
from pathlib import Path

import flowdeco as fd

ran: list[str] = []


@fd.node(run_in="inline")
def source() -> list[int]:
    ran.append("source")
    return list(range(10))


@fd.node
def middle(source: list[int]) -> dict[str, int]:
    ran.append("middle")
    return {"sum": sum(source), "count": len(source)}


@fd.node(run_in="inline")
def sink(middle: dict[str, int]) -> float:
    ran.append("sink")
    return middle["sum"] / middle["count"]


def peak_kib() -> int:
    """The most memory this process has held resident so far, in KiB."""
    status = Path("/proc/self/status")
    if status.exists():
        (line,) = [x for x in status.read_text().splitlines() if x.startswith("VmHWM:")]
        return int(line.split()[1])  # "VmHWM:   123456 kB"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS


def _for_key(data: bytes, key: str) -> bytes:
    """``data`` with ``key`` in its header, when it has one: the body is what is tested."""
    if data[:4] != b"FDCK" or len(data) < 134:
        return data
    return data[:5] + bytes([len(key)]) + key.encode().ljust(128, b"\0") + data[134:]


def main() -> None:
    hostile = Path(sys.argv[1]).read_bytes()
    pipe = fd.Pipeline([source, middle, sink], name="hostile")
    pipe.run()
    key = pipe.runs()[-1].nodes["middle"]["key"]
    Path(".flowdeco", "objects", key[:2], key).write_bytes(_for_key(hostile, key))
    ran.clear()
    before = peak_kib()
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.run()
    seconds = time.perf_counter() - start
    after = peak_kib()
    report = {
        "seconds": seconds,
        "peak_growth_kib": after - before,
        "warnings": [
            str(w.message) for w in caught if issubclass(w.category, fd.CheckpointWarning)
        ],
        "status": {name: str(status) for name, status in result.status.items()},
        "ran": ran,
        "sink": result["sink"],
        "path": str(Path(".flowdeco", "objects", key[:2], key).resolve()),
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
