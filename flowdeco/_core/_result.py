"""RunResult: a run's outputs, statuses, errors and timings; Status and its transitions."""

from __future__ import annotations

import enum
import os
import threading
import time
from collections.abc import ItemsView, Iterator, KeysView, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from ._errors import OutputNotAvailableError, UnknownNodeError

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._explain import Explanation

__all__ = ["TRANSITIONS", "RunResult", "Status", "new_run_id"]


class Status(str, enum.Enum):
    """Where a node is in a run."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    CACHED = "cached"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """Whether the status is final for this run."""
        return self not in (Status.PENDING, Status.RUNNING)


#: The legal status changes: a node only ever moves along these edges.
TRANSITIONS: Mapping[Status, frozenset[Status]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.SKIPPED, Status.CACHED}),
    Status.RUNNING: frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED}),
    Status.SUCCEEDED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.SKIPPED: frozenset(),
    Status.CACHED: frozenset(),
}


def new_run_id() -> str:
    """A unique id whose string order is its creation order (UTC time, then randomness).

    Within a process the time part never repeats or goes back, even for ids made in the
    same nanosecond or across a clock adjustment.
    """
    global _last_stamp
    with _stamp_lock:
        now = _last_stamp = max(time.time_ns(), _last_stamp + 1)
    seconds, nanos = divmod(now, 1_000_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(seconds))
    return f"{stamp}.{nanos:09d}Z-{os.urandom(4).hex()}"


_last_stamp = 0
_stamp_lock = threading.Lock()


@attrs.frozen(repr=False)
class RunResult:
    """What a run produced: a read-only mapping of the requested outputs, and the details.

    ``result["total"]`` gives an output's value, and ``keys()``, ``items()``, ``get()``,
    ``in`` and ``dict(result)`` work as on a mapping. ``values`` is not the mapping method:
    it is a dict of the outputs' values, or of every computed node's with
    ``keep_values=True`` (other values are released during the run, once no node needs them). ``status``, ``errors``,
    ``started_at``/``finished_at`` (seconds since the epoch) and ``durations`` (seconds)
    are keyed by node name.
    """

    pipeline: str
    run_id: str
    outputs: tuple[str, ...]
    values: Mapping[str, Any]
    status: Mapping[str, Status]
    errors: Mapping[str, BaseException]
    attempts: Mapping[str, int]
    started_at: Mapping[str, float]
    finished_at: Mapping[str, float]
    duration: float
    _explainer: Callable[[str], Explanation] | None = attrs.field(
        default=None, alias="explainer", eq=False
    )

    def explain(self, name: str) -> Explanation:
        """Why node ``name`` ran or was reused in this run, e.g. ``ran: helper
        utils.scale changed (utils.py:12)``: a record whose ``str()`` says it in a line.

        Raises:
            UnknownNodeError: ``name`` is not a node of this run.
        """
        if name not in self.status or self._explainer is None:
            raise UnknownNodeError(
                f"{name!r} is not a node of run {self.run_id}; its nodes: {', '.join(self.status)}",
                [name],
            )
        return self._explainer(name)

    @property
    def ok(self) -> bool:
        """Whether every planned node succeeded (or came from a checkpoint)."""
        return all(s in (Status.SUCCEEDED, Status.CACHED) for s in self.status.values())

    @property
    def durations(self) -> Mapping[str, float]:
        """Seconds each node ran, for nodes that started."""
        ends = self.finished_at
        return {name: ends[name] - start for name, start in self.started_at.items() if name in ends}

    def __getitem__(self, name: str) -> Any:
        if name in self.outputs:
            try:
                return self.values[name]
            except KeyError:
                pass
            status = self.status.get(name)
            raise OutputNotAvailableError(
                f"output {name!r} of run {self.run_id} has no value: the node is {status}"
                + (f" ({self.errors[name]!r})" if name in self.errors else "")
            )
        raise OutputNotAvailableError(
            f"{name!r} is not an output of run {self.run_id}; outputs: {', '.join(self.outputs)}"
        )

    def __contains__(self, name: object) -> bool:
        return name in self.outputs and name in self.values

    def __iter__(self) -> Iterator[str]:
        return (name for name in self.outputs if name in self.values)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def keys(self) -> KeysView[str]:
        """Names of the requested outputs that have a value."""
        return KeysView(dict.fromkeys(self))

    def items(self) -> ItemsView[str, Any]:
        """``(name, value)`` of the requested outputs that have a value."""
        return ItemsView({name: self.values[name] for name in self})

    def get(self, name: str, default: Any = None) -> Any:
        """An output's value, or ``default`` when it has none."""
        return self.values[name] if name in self else default

    def counts(self) -> dict[Status, int]:
        """How many planned nodes ended in each status."""
        counts: dict[Status, int] = {}
        for s in self.status.values():
            counts[s] = counts.get(s, 0) + 1
        return counts

    def __repr__(self) -> str:
        summary = ", ".join(f"{n} {s}" for s, n in self.counts().items())
        failed = [n for n, s in self.status.items() if s is Status.FAILED]
        tail = f"; failed: {', '.join(failed)}" if failed else ""
        state = "ok" if self.ok else "not ok"
        return (
            f"<RunResult {self.pipeline!r} {self.run_id} {state} in {self.duration:.3f}s: "
            f"{summary or 'nothing to run'}{tail}>"
        )
