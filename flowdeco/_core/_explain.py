"""Why a node ran or was reused: a run's reasons, compared with the store's records.

A run keeps per node a word for what its lookup found (:data:`REASONS`) and the manifest
of its key: a digest per piece of code the node reaches, a version per input. Most
reasons say all there is to say; a node whose key was not in the store is compared,
when asked, with the manifest of the node's last key in an earlier run, so the answer
names what changed: a helper, a constant, an input, a parent, a package.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Literal

import attrs

from ._result import Status

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._checkpoints import Checkpoints
    from ._store import RunRecord

__all__ = ["REASONS", "Explanation", "explain", "parse_manifest"]

#: What a node's lookup found, and what each word means.
REASONS: Mapping[str, str] = {
    "reused": "the store held a value under the same code and inputs",
    "resumed": "the run this one resumes finished it",
    "not stored": "no value was stored under its code and inputs (explain() says why)",
    "changed": "its code or an input differs from its last run",
    "new": "nothing was stored for it before",
    "gone": "the value stored under the same code and inputs is gone",
    "no store": "the run had no store",
    "run cache off": "the run was started with cache=False",
    "cache off": "the node says cache=False",
    "effect": "the node returns None: it runs for its effect",
    "checkpoint off": "the node says checkpoint=False: nothing is stored",
    "unversionable": "it depends on something that cannot be versioned",
    "input not versioned": "an input cannot be checkpointed",
    "parent not versioned": "a parent's value has no version",
    "unreadable": "its stored value could not be read",
    "output file missing": "a file its stored value names is missing",
    "not run": "it did not run in this run (skipped, or the run stopped first)",
}
_MAX_CHANGES = 3


@attrs.frozen
class Explanation:
    """Why a node of a run ran or was reused; ``str()`` says it in one line.

    ``outcome`` is ``"ran"``, ``"reused"`` or ``"not run"``; ``reason`` a word of
    :data:`REASONS`; ``changes`` what differs from the node's last run, one phrase each;
    ``run_id`` the run whose value was reused, or that last run.
    """

    node: str
    outcome: Literal["ran", "reused", "not run"]
    reason: str
    changes: tuple[str, ...] = ()
    run_id: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        if self.changes:
            shown = list(self.changes[:_MAX_CHANGES])
            if len(self.changes) > _MAX_CHANGES:
                shown.append(f"and {len(self.changes) - _MAX_CHANGES} more")
            return f"{self.outcome}: {'; '.join(shown)}"
        return f"{self.outcome}: {self.detail or REASONS[self.reason]}"


def explain(
    checkpoints: Checkpoints | None, run_id: str, name: str, i: int, status: Status
) -> Explanation:
    """Why node ``name`` (index ``i``) of run ``run_id`` ended as ``status``."""
    if status in (Status.SKIPPED, Status.PENDING):
        return Explanation(name, "not run", "not run", detail=f"{status.value}")
    if checkpoints is None:
        return Explanation(name, "ran", "no store", detail="the run had no store (store=None)")
    why = checkpoints.why[i]
    if status is Status.CACHED:
        return _reused(checkpoints, run_id, name, i, why)
    if why == "not stored":
        return _compared(checkpoints, run_id, name, i)
    if why == "unversionable":
        what = checkpoints.unversionable[i]
        return Explanation(name, "ran", why, detail=f"depends on {what}, which cannot be versioned")
    if why == "effect":
        detail = "it returns None, so it runs for its effect (cache=True to reuse it)"
        return Explanation(name, "ran", why, detail=detail)
    if why == "parent not versioned":
        spec, index = checkpoints.specs[i], checkpoints.index
        parents = [p.source for p in spec.params if p.source in index]
        unversioned = [p for p in parents if checkpoints.versions[index[p]] is None]
        detail = (
            f"parent {unversioned[0]!r} has no version (its value was not checkpointed)"
            if unversioned
            else ""
        )
        return Explanation(name, "ran", why, detail=detail)
    if why == "input not versioned":
        given, inputs = checkpoints.given, checkpoints.input_versions
        sources = [p.source for p in checkpoints.specs[i].params]
        bad = [s for s in sources if s in given and inputs.get(s) is None]
        detail = f"input {bad[0]!r} cannot be checkpointed" if bad else ""
        return Explanation(name, "ran", why, detail=detail)
    if why in REASONS:
        detail = "cache=False" if why == "cache off" else ""
        return Explanation(name, "ran", why, detail=detail)
    return Explanation(name, "ran", "new", detail="it ran before it could be looked up")


def _reused(checkpoints: Checkpoints, run_id: str, name: str, i: int, why: str) -> Explanation:
    if why == "resumed" and checkpoints.resumed_from is not None:
        return Explanation(
            name,
            "reused",
            "resumed",
            run_id=checkpoints.resumed_from,
            detail=f"finished in run {checkpoints.resumed_from}, which this run resumes",
        )
    key = checkpoints.keys[i]
    for record in reversed(_earlier(checkpoints, run_id)):
        for entry in record.entries:
            if (
                entry.get("node") == name
                and entry.get("key") == key
                and entry.get("status") == Status.SUCCEEDED.value  # the run that stored it
                and entry.get("stored")
            ):
                return Explanation(
                    name,
                    "reused",
                    "reused",
                    run_id=record.run_id,
                    detail=f"same code and inputs as run {record.run_id} at {_when(record)}",
                )
    return Explanation(name, "reused", "reused", detail="same code and inputs as an earlier run")


def _compared(checkpoints: Checkpoints, run_id: str, name: str, i: int) -> Explanation:
    """A node whose key the store did not hold, against its last key in an earlier run."""
    found = _last_manifest(_earlier(checkpoints, run_id), name)
    if found is None:
        return Explanation(name, "ran", "new", detail="nothing stored")
    last_run, manifest = found
    now = checkpoints.manifest(i)
    if sorted(manifest) == sorted(now):
        return Explanation(
            name,
            "ran",
            "gone",
            run_id=last_run,
            detail=f"the value stored by run {last_run} under the same code and inputs is gone",
        )
    changes = _changes(checkpoints, i, parse_manifest(manifest), parse_manifest(now))
    return Explanation(name, "ran", "changed", tuple(changes), run_id=last_run)


def _earlier(checkpoints: Checkpoints, run_id: str) -> list[RunRecord]:
    """The records of the runs before ``run_id``: a result may be explained after later runs."""
    store, pipeline = checkpoints.store, checkpoints.writer.pipeline
    return [r for r in store.runs(pipeline) if r.run_id < run_id]  # ids sort by time


def _last_manifest(records: Sequence[RunRecord], name: str) -> tuple[str, list[str]] | None:
    """The manifest of the last key node ``name`` had, and the run that had it.

    A reused entry carries no manifest: the entry that stored its key does.
    """
    wanted: str | None = None
    for record in reversed(records):
        for entry in reversed(record.entries):
            if entry.get("node") != name:
                continue
            manifest = entry.get("manifest")
            if wanted is None:
                if isinstance(manifest, list):
                    return record.run_id, manifest
                if entry.get("status") == Status.CACHED.value and entry.get("key"):
                    wanted = entry["key"]
            elif entry.get("key") == wanted and isinstance(manifest, list):
                return record.run_id, manifest
    return None


def parse_manifest(manifest: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Code entries and input versions, from ``label=digest`` and ``@param=version``."""
    code: dict[str, str] = {}
    inputs: dict[str, str] = {}
    for item in manifest:
        label, _, digest = item.rpartition("=")
        if label.startswith("@"):
            inputs[label[1:]] = digest
        else:
            code[label] = digest
    return code, inputs


def _changes(
    checkpoints: Checkpoints,
    i: int,
    before: tuple[dict[str, str], dict[str, str]],
    now: tuple[dict[str, str], dict[str, str]],
) -> list[str]:
    spec = checkpoints.specs[i]
    code = checkpoints.code[i]
    where: Mapping[str, str] = {} if code is None else code.where
    own = next(iter(code.entries), None) if code is not None else None
    found: list[str] = []
    sources = {p.name: p.source for p in spec.params}
    for param in sorted(set(before[1]) | set(now[1])):
        if param.endswith(":files"):
            continue
        if before[1].get(param) == now[1].get(param):
            if before[1].get(param + ":files") != now[1].get(param + ":files"):
                source = sources.get(param, param)
                found.append(f"input {source!r} changed ({_files(checkpoints, source)})")
            continue
        source = sources.get(param, param)
        if source in checkpoints.given:
            found.append(f"input {source!r} changed")
        elif source in checkpoints.index:
            found.append(f"parent {source!r} has a new value")
        else:
            found.append(f"the default of {param!r} changed")
    for label in _code_order(before[0], now[0], own):
        place = where.get(label, "")
        if label not in now[0]:
            found.append(f"no longer uses {label}")
        elif label not in before[0]:
            found.append(f"now uses {label}" + (f" ({place})" if place else ""))
        elif label == own:
            found.append(f"its code changed ({place})" if place else "its code changed")
        elif ":" in place:
            found.append(f"helper {label} changed ({place})")
        elif place:
            found.append(f"{label} changed (now {place})")  # a package: "numpy 2.1.0"
        else:
            found.append(f"value {label} changed")
    return found


def _code_order(before: Mapping[str, str], now: Mapping[str, str], own: str | None) -> list[str]:
    """Changed code labels, the node's own first, then in the order the walk met them."""
    changed = [label for label in now if before.get(label) != now[label]]
    changed += [label for label in before if label not in now]
    return sorted(changed, key=lambda label: label != own)


def _files(checkpoints: Checkpoints, source: str) -> str:
    """What changed in an input whose value is the same but whose files are not."""
    value: Any = checkpoints.given.get(source)
    name = getattr(value, "name", None)
    return f"{name} content" if isinstance(name, str) and name else "the files it names"


def _when(record: RunRecord) -> str:
    started = next((e.get("time") for e in record.entries if e.get("event") == "start"), None)
    if not isinstance(started, (int, float)):
        return "an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))
