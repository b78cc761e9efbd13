"""What a store's run records say: where the store is, which run an id names, how a run
ended or whether it may still be live, and why a node of a past run ran.

A run's record keeps, per node, its status, key, whether its value was stored, its time and
the manifest of its key; not the word for what its lookup found, nor where code is defined.
So an explanation rebuilt from the record says what the record can support, and what it
cannot say is said too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowdeco import Explanation, Status
from flowdeco._core._explain import parse_manifest

from ._output import UsageError, listing, utc

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from flowdeco import RunRecord

__all__ = [
    "Explainer",
    "counts",
    "earlier",
    "ended",
    "find_run",
    "is_live",
    "outcome",
    "started",
    "store_path",
]

_STORED = frozenset({Status.SUCCEEDED.value, Status.CACHED.value})


def store_path(given: str | None) -> Path:
    """The store a command reads: ``--store``, else ``$FLOWDECO_STORE``, else ``.flowdeco``.

    Raises:
        UsageError: ``--store`` is blank, or ``FLOWDECO_STORE`` says there is no store.
    """
    if given is not None:
        if not given.strip():
            raise UsageError("--store must name a directory")
        return Path(given)
    value = os.environ.get("FLOWDECO_STORE", "").strip()
    if value.lower() == "none":
        raise UsageError("FLOWDECO_STORE is 'none', so there is no store; name one with --store")
    return Path(value or ".flowdeco")


def find_run(records: Sequence[RunRecord], wanted: str, store: Path) -> RunRecord:
    """The run ``wanted`` names: its id, a unique start or end of it, or ``last``.

    Raises:
        UsageError: No run, or more than one, fits.
    """
    if not records:
        raise UsageError(f"{store} holds no run records")
    if wanted == "last":
        return records[-1]
    exact = [r for r in records if r.run_id == wanted]
    found = exact or [
        r for r in records if r.run_id.startswith(wanted) or r.run_id.endswith(wanted)
    ]
    if len(found) == 1:
        return found[0]
    if not found:
        latest = listing([r.run_id for r in records[-3:]])
        raise UsageError(f"{store} has no run {wanted!r}; its latest: {latest}")
    raise UsageError(f"{wanted!r} names {len(found)} runs: {listing([r.run_id for r in found])}")


def _event(record: RunRecord, name: str) -> Mapping[str, Any] | None:
    return next((e for e in record.entries if e.get("event") == name), None)


def started(record: RunRecord) -> float | None:
    """When the run started, from its record."""
    found = _event(record, "start")
    stamp = None if found is None else found.get("time")
    return stamp if isinstance(stamp, (int, float)) else None


def ended(record: RunRecord) -> float | None:
    """When the run ended, or None if its record has no end."""
    found = _event(record, "end")
    stamp = None if found is None else found.get("time")
    return stamp if isinstance(stamp, (int, float)) else None


def counts(record: RunRecord) -> dict[str, int]:
    """How many of the run's recorded nodes ended in each status."""
    found: dict[str, int] = {}
    for entry in record.nodes.values():
        status = str(entry.get("status"))
        found[status] = found.get(status, 0) + 1
    return found


def is_live(record: RunRecord) -> bool:
    """Whether the run may still be going: its record has no end, and the process that
    started it is alive on this machine. (A process that reused the id of a dead run's
    counts as alive: the safe mistake. Windows cannot be asked without side effects.)"""
    if record.finished or sys.platform == "win32":
        return False
    start = _event(record, "start")
    pid = None if start is None else start.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        return True
    return True


def outcome(record: RunRecord) -> str:
    """How the run ended (``ok``, ``failed``, ``interrupted``...), ``running``, or
    ``no end`` for a run killed before it could say."""
    end = _event(record, "end")
    if end is not None:
        return str(end.get("outcome") or ("ok" if end.get("ok") else "failed"))
    return "running" if is_live(record) else "no end"


def earlier(records: Sequence[RunRecord], record: RunRecord) -> list[RunRecord]:
    """The same pipeline's runs before ``record``, oldest first."""
    return [r for r in records if r.pipeline == record.pipeline and r.run_id < record.run_id]


class Explainer:
    """Why nodes of one past run ran or were reused, as the records tell it.

    Built from the run's record and the records of the pipeline's runs before it, indexed
    once: explaining every node of a run costs one pass over those records.
    """

    def __init__(self, record: RunRecord, before: Sequence[RunRecord]) -> None:
        self.record = record
        self.by_id = {r.run_id: r for r in before}
        self.stored_by: dict[object, RunRecord] = {}  # key: the last run that stored it
        self.last: dict[str, tuple[RunRecord, Mapping[str, Any]]] = {}  # node: its last key
        self.manifests: dict[object, tuple[str, list[str]]] = {}  # key: who stored it, how
        self.nodes = set(record.nodes)
        for run in before:
            self.nodes.update(run.nodes)
            for entry in run.entries:
                self._index(run, entry)

    def _index(self, run: RunRecord, entry: Mapping[str, Any]) -> None:
        node, key, manifest = entry.get("node"), entry.get("key"), entry.get("manifest")
        if not isinstance(node, str):
            return
        status = entry.get("status")
        if status == Status.SUCCEEDED.value and entry.get("stored"):
            self.stored_by[key] = run
        if isinstance(manifest, list):
            self.manifests[key] = (run.run_id, manifest)
            self.last[node] = (run, entry)
        elif status == Status.CACHED.value and key:
            self.last[node] = (run, entry)

    def explain(self, node: str) -> tuple[Explanation, str]:
        """Why ``node`` ran or was reused, and what the records cannot tell ("" when nothing
        is missing).

        Raises:
            UsageError: The run recorded no such node.
        """
        record = self.record
        entry = record.nodes.get(node)
        if entry is None:
            nodes = listing(sorted(record.nodes), limit=8)
            raise UsageError(
                f"run {record.run_id} recorded no node {node!r}; its nodes: {nodes or 'none'}"
            )
        status, key = entry.get("status"), entry.get("key")
        if status in (Status.SKIPPED.value, Status.PENDING.value):
            return Explanation(node, "not run", "not run", detail=str(status)), ""
        if status in (Status.FAILED.value, Status.CANCELLED.value):
            done = "failed" if status == Status.FAILED.value else "was cancelled"
            detail = f"it ran and {done}"
            return Explanation(
                node, "ran", "not stored", detail=detail
            ), "the record keeps no error"
        if status == Status.CACHED.value:
            return self._reused(node, key), ""
        if key is None:
            detail = "it had no cache key: an input or a parent's value could not be versioned"
            return Explanation(node, "ran", "unversionable", detail=detail), (
                "which, the record does not say"
            )
        if not entry.get("stored"):
            why = "checkpoint=False, a value the codec cannot carry, or a failed write"
            return Explanation(node, "ran", "checkpoint off", detail="its value was not stored"), (
                f"why not: {why}"
            )
        return self._ran(node, entry)

    def _reused(self, node: str, key: object) -> Explanation:
        chain, resumed = [], self.record.resumes
        while resumed is not None and resumed in self.by_id and self.by_id[resumed] not in chain:
            chain.append(self.by_id[resumed])
            resumed = self.by_id[resumed].resumes
        for run in chain:  # the newest run of the chain that finished the node says its key
            entry = run.nodes.get(node)
            if entry is not None and entry.get("status") in _STORED and entry.get("stored"):
                if entry.get("key") == key:
                    first = chain[0].run_id
                    detail = f"finished in run {first}, which this run resumes"
                    return Explanation(node, "reused", "resumed", run_id=first, detail=detail)
                break
        stored = self.stored_by.get(key)
        if stored is None:
            detail = "same code and inputs as an earlier run"
            return Explanation(node, "reused", "reused", detail=detail)
        stamp = started(stored)
        at = "" if stamp is None else f" at {utc(stamp)}"
        detail = f"same code and inputs as run {stored.run_id}{at}"
        return Explanation(node, "reused", "reused", run_id=stored.run_id, detail=detail)

    def _ran(self, node: str, entry: Mapping[str, Any]) -> tuple[Explanation, str]:
        now = entry.get("manifest")
        found = self._last_manifest(node)
        if found is None or not isinstance(now, list):
            return Explanation(node, "ran", "new", detail="nothing stored"), ""
        last_run, manifest = found
        if sorted(manifest) == sorted(now):
            detail = f"same code and inputs as run {last_run}, yet it ran"
            return Explanation(node, "ran", "not stored", run_id=last_run, detail=detail), (
                "the record does not say why: cache=False on the node or the run, a node "
                "returning None, something that cannot be versioned, or its stored value gone"
            )
        changes = tuple(_changes(manifest, now, self.nodes))
        return Explanation(node, "ran", "changed", changes, run_id=last_run), (
            "the record keeps what changed, not where it is defined"
        )

    def _last_manifest(self, node: str) -> tuple[str, list[str]] | None:
        """The manifest of the last key ``node`` had before, and the run that stored it (a
        reused entry has none: the entry that stored its key has)."""
        found = self.last.get(node)
        if found is None:
            return None
        run, entry = found
        manifest = entry.get("manifest")
        if isinstance(manifest, list):
            return run.run_id, manifest
        return self.manifests.get(entry.get("key"))


def _changes(before: Sequence[str], now: Sequence[str], nodes: set[str]) -> list[str]:
    (old_code, old_inputs), (new_code, new_inputs) = parse_manifest(before), parse_manifest(now)
    found: list[str] = []
    for param in sorted(set(old_inputs) | set(new_inputs)):
        if param.endswith(":files"):
            continue
        if old_inputs.get(param) == new_inputs.get(param):
            if old_inputs.get(f"{param}:files") != new_inputs.get(f"{param}:files"):
                found.append(f"the files that parameter {param!r} names changed")
        elif param not in old_inputs:
            found.append(f"now takes {param!r}")
        elif param not in new_inputs:
            found.append(f"no longer takes {param!r}")
        elif param in nodes:
            found.append(f"parent {param!r} has a new value")
        else:
            found.append(f"parameter {param!r} has a new value")
    own = next(iter(new_code), None)  # the node's own function comes first
    changed = [label for label in new_code if old_code.get(label) != new_code[label]]
    changed += [label for label in old_code if label not in new_code]
    for label in sorted(changed, key=lambda label: label != own):
        if label not in new_code:
            found.append(f"no longer uses {label}")
        elif label not in old_code:
            found.append(f"now uses {label}")
        elif label == own:
            found.append("its code changed")
        else:
            found.append(f"{label} changed")
    return found
