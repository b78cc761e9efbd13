"""Removing files from a store without pulling them from under a live run.

A run may look up any key at any moment, and reads a large value's body well after its
header; so nothing is removed while a run is live, and none starts meanwhile. Runs hold the
store's lease (``<store>/lock``) shared; prune and clear take it exclusive, waiting up to
``--wait`` seconds, and refuse if they cannot. Runs that do not take the lease (a flowdeco
from before it) are found by their records: a record with no end whose process is alive on
this machine is a live run, and prune refuses while there is one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from typing import TYPE_CHECKING, NamedTuple

from flowdeco._core._store import StoreLease, recorded_runs

from ._history import is_live, started
from ._inventory import checkpoints, last_used, record_file, used_keys, uses
from ._output import UsageError, listing

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from flowdeco import RunRecord

    from ._inventory import CheckpointFile

__all__ = ["Pruning", "clear", "exclusive", "plan_prune", "remove"]

_POLL = 0.2  # seconds between looks at a store that a run is using


@contextlib.contextmanager
def exclusive(store: Path, wait: float, force: bool) -> Iterator[None]:
    """Hold ``store`` so that no run uses it: its lease exclusive, and no live run found in
    its records (unless ``force``).

    Raises:
        UsageError: Runs used it for all of ``wait`` seconds, or this platform cannot
            lock it and ``force`` was not given.
    """
    if not StoreLease.supported and not force:
        raise UsageError(
            f"cannot tell whether a run is using {store}: this platform has no flock; make "
            "sure none is, then pass --force"
        )
    deadline = time.monotonic() + wait
    while True:
        lease = StoreLease.exclusive(store, max(0.0, deadline - time.monotonic()))
        if lease is None:
            raise UsageError(
                f"a run is using {store} (it holds the store's lock){_named(store)}; nothing "
                "was removed: wait for it to end, or pass --wait SECONDS"
            )
        live = [] if force else [r for r in recorded_runs(store) if is_live(r)]
        if not live:
            break
        lease.release()
        if time.monotonic() >= deadline:
            runs = listing([_describe(r) for r in live], limit=3)
            raise UsageError(
                f"{runs} has not ended and its process is alive, so it may still read "
                f"{store}; nothing was removed: wait for it to end (--wait SECONDS), or pass "
                "--force if that process is no flowdeco run"
            )
        time.sleep(_POLL)
    try:
        yield
    finally:
        lease.release()


def _named(store: Path) -> str:
    live = [r for r in recorded_runs(store) if is_live(r)]
    return f": {listing([_describe(r) for r in live], limit=3)}" if live else ""


def _describe(record: RunRecord) -> str:
    start = next((e for e in record.entries if e.get("event") == "start"), {})
    return f"run {record.run_id} of {record.pipeline} (pid {start.get('pid', '?')})"


class Pruning(NamedTuple):
    """What a prune removes, and what stays."""

    checkpoints: list[CheckpointFile]
    records: list[RunRecord]
    kept: list[CheckpointFile]


def plan_prune(
    store: Path,
    older_than: float | None,
    keep_runs: int | None,
    max_size: int | None,
    now: float,
) -> Pruning:
    """What ``prune`` removes; each option names what goes, and together what any names.

    ``older_than``: checkpoints no run stored or reused in that many seconds, and records
    of runs started before. ``keep_runs``: records of all but each pipeline's last runs,
    and checkpoints those runs did not use. ``max_size``: then the least recently used
    checkpoints until the rest fit in that many bytes.
    """
    records = recorded_runs(store)
    gone: dict[str, RunRecord] = {}
    if keep_runs is not None:
        by_pipeline: dict[str, list[RunRecord]] = {}
        for record in records:
            by_pipeline.setdefault(record.pipeline, []).append(record)
        for runs in by_pipeline.values():
            gone.update((r.run_id, r) for r in runs[: max(0, len(runs) - keep_runs)])
    cutoff = None if older_than is None else now - older_than
    if cutoff is not None:
        gone.update((r.run_id, r) for r in records if (started(r) or now) < cutoff)
    kept_runs = [r for r in records if r.run_id not in gone]
    used = uses(records)
    wanted = used_keys(kept_runs) if keep_runs is not None else None

    def last(checkpoint: CheckpointFile) -> float:
        return last_used(checkpoint, used.get(checkpoint.key))

    remove, keep = [], []
    for checkpoint in sorted(checkpoints(store), key=last):  # least recently used first
        old = cutoff is not None and last(checkpoint) < cutoff
        if old or (wanted is not None and checkpoint.key not in wanted):
            remove.append(checkpoint)
        else:
            keep.append(checkpoint)
    if max_size is not None:
        total, evicted = sum(c.size for c in keep), 0
        while evicted < len(keep) and total > max_size:
            total -= keep[evicted].size
            evicted += 1
        remove, keep = remove + keep[:evicted], keep[evicted:]
    return Pruning(remove, list(gone.values()), keep)


def remove(
    store: Path, checkpoints: Sequence[CheckpointFile], records: Sequence[RunRecord]
) -> None:
    """Remove these checkpoint files, and these runs' records and marks."""
    for checkpoint in checkpoints:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(checkpoint.path)
    for record in records:
        file = record_file(store, record)
        if file is None:
            continue
        with contextlib.suppress(FileNotFoundError):
            (file.parent / "unfinished" / record.run_id).unlink()
        with contextlib.suppress(FileNotFoundError):
            file.unlink()


def clear(store: Path, runs: bool) -> tuple[int, int]:
    """Remove every checkpoint and the file digests (and, with ``runs``, every run record):
    how many checkpoints went, and their bytes. The lock file stays: runs waiting on it
    hold it open."""
    found = checkpoints(store)
    for part in ("objects", "files", *(("runs",) if runs else ())):
        shutil.rmtree(store / part, ignore_errors=True)
    return len(found), sum(c.size for c in found)
