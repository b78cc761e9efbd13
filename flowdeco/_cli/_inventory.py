"""What a file store holds: its checkpoint files, and which runs used which key, when.

A checkpoint file names only its key; the run records say which node of which pipeline
had that key, and when a run last stored or reused it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, NamedTuple

from flowdeco import Status

from ._history import started

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from flowdeco import RunRecord

__all__ = [
    "CheckpointFile",
    "Use",
    "checkpoints",
    "last_used",
    "record_file",
    "used_keys",
    "uses",
]

_KEY = re.compile(r"^[0-9a-f]{16,128}$")
_USED = frozenset({Status.SUCCEEDED.value, Status.CACHED.value})


class CheckpointFile(NamedTuple):
    """One checkpoint file: its key, where it is, its size and when it was written."""

    key: str
    path: Path
    size: int
    written: float


class Use:
    """Which nodes had a key, in how many runs, and when a run last stored or reused it."""

    __slots__ = ("last", "nodes", "runs")

    def __init__(self) -> None:
        self.nodes: dict[tuple[str, str], None] = {}  # (pipeline, node), in order met
        self.runs: list[str] = []
        self.last: float | None = None


def checkpoints(store: Path) -> list[CheckpointFile]:
    """Every checkpoint file under ``store/objects`` (temporary files of writes aside)."""
    found = []
    objects = store / "objects"
    try:
        shards = sorted(os.listdir(objects))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for shard in shards:
        try:
            entries = list(os.scandir(objects / shard))
        except (NotADirectoryError, FileNotFoundError):
            continue
        for entry in entries:
            if _KEY.match(entry.name) and entry.is_file(follow_symlinks=False):
                try:
                    info = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed meanwhile
                    continue
                found.append(
                    CheckpointFile(
                        entry.name, objects / shard / entry.name, info.st_size, info.st_mtime
                    )
                )
    return found


def last_used(checkpoint: CheckpointFile, use: Use | None) -> float:
    """When a run last stored or reused the checkpoint, or its file was written."""
    return max(checkpoint.written, (use.last or 0.0) if use is not None else 0.0)


def uses(records: Iterable[RunRecord]) -> dict[str, Use]:
    """Per key, the nodes and runs that stored or reused it."""
    found: dict[str, Use] = {}
    for record in records:
        stamp = started(record)
        for entry in record.entries:
            key = entry.get("key")
            if not isinstance(key, str) or entry.get("status") not in _USED:
                continue
            if not (entry.get("stored") or entry.get("status") == Status.CACHED.value):
                continue
            use = found.get(key)
            if use is None:
                use = found[key] = Use()
            use.nodes[(record.pipeline, str(entry.get("node")))] = None
            if not use.runs or use.runs[-1] != record.run_id:
                use.runs.append(record.run_id)
            if stamp is not None and (use.last is None or stamp > use.last):
                use.last = stamp
    return found


def used_keys(records: Sequence[RunRecord]) -> set[str]:
    """The keys these runs stored or reused."""
    return set(uses(records))


def record_file(store: Path, record: RunRecord) -> Path | None:
    """The file holding ``record`` (run ids are unique in a store), if it is still there."""
    return next((store / "runs").glob(f"*/{record.run_id}.jsonl"), None)
