"""Graph: the validated DAG a pipeline's nodes form, as index tables; Plan, one run's selection.

GraphWarning: what builds but likely is not meant, such as a parameter one typo from a node.

Every module below the pipeline facade reads the graph through these public attributes.
Nodes are numbered in definition order; a node's number is its *index* in every table here
and in every per-node list of a run.
"""

from __future__ import annotations

import difflib
import os
import sys
import warnings
from collections import deque
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from ._errors import CycleError, MissingInputsError, UnknownInputsError, UnknownNodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence
    from types import FrameType

    from ._node import Node
    from ._pipeline import Pipeline

__all__ = ["Graph", "GraphWarning", "Input", "Plan"]

T = TypeVar("T")

_SELECTIONS_KEPT = 64  # distinct (outputs, input names) selections remembered per graph
# Names this short are one edit from too many others (x and y, df and dt) for a near miss
# to mean a typo.
_NEAR_MISS_LENGTH = 4
# Frames that are not the user's: flowdeco's own, and the __init__ attrs generates.
_NOT_THE_CALLER = (f"{Path(__file__).parent.parent}{os.sep}", "<attrs generated")


class GraphWarning(UserWarning):
    """The nodes form a valid graph that likely does not do what was meant."""


@attrs.frozen
class Input:
    """An external input: a parameter name that no node provides."""

    name: str
    required: bool
    nodes: tuple[str, ...]


@attrs.frozen(eq=False)
class Plan:
    """What one run executes: the selected nodes in topological order and the given values."""

    pipeline: Pipeline
    graph: Graph
    order: tuple[int, ...]  # indices of the selected nodes, parents first
    outputs: tuple[str, ...]
    given: Mapping[str, object]


@attrs.frozen(eq=False)
class Graph:
    """A pipeline's nodes as flat tables, validated once; what runs read, never rebuild.

    ``derived`` keeps what modules above compute from a graph (argument layouts, span
    attributes), so each is built once per graph, by the module that knows how.
    """

    name: str  # the pipeline's, for messages
    specs: tuple[Node[..., Any], ...]
    names: tuple[str, ...]
    index: Mapping[str, int]
    parents: tuple[tuple[int, ...], ...]  # distinct: data parents, then after= ones
    children: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]  # topological, definition order breaking ties
    inputs: Mapping[str, Input]
    _derived: dict[Callable[[Graph], Any], Any] = attrs.field(factory=dict, repr=False)
    _selections: dict[tuple[tuple[str, ...], frozenset[str]], tuple[int, ...]] = attrs.field(
        factory=dict, repr=False
    )

    @classmethod
    def build(cls, name: str, nodes: Mapping[str, Node[..., Any]]) -> Graph:
        """The graph of ``nodes`` (keyed by name, in definition order).

        Raises:
            UnknownNodeError: ``after=`` or ``inputs=`` names a node that is not there.
            CycleError: The dependencies form a cycle (including a node depending on itself).

        Warns:
            GraphWarning: An optional input is named one edit away from a node (a typo?).
        """
        names = tuple(nodes)
        index = {node_name: i for i, node_name in enumerate(names)}
        parents = tuple(_parents_of(spec, index) for spec in nodes.values())
        children: list[list[int]] = [[] for _ in names]
        for child, ps in enumerate(parents):
            for parent in ps:
                children[parent].append(child)
        children_t = tuple(map(tuple, children))
        inputs = _external_inputs(nodes.values(), index)
        _warn_of_near_misses(inputs, nodes)
        return cls(
            name=name,
            specs=tuple(nodes.values()),
            names=names,
            index=index,
            parents=parents,
            children=children_t,
            order=_topological_order(names, parents, children_t),
            inputs=MappingProxyType(inputs),
        )

    def derived(self, build: Callable[[Graph], T]) -> T:
        """``build(self)``, computed on first use and kept with the graph."""
        try:
            found: T = self._derived[build]
        except KeyError:
            found = self._derived[build] = build(self)
        return found

    def related(self, name: str, edges: Sequence[tuple[int, ...]], direct: bool) -> tuple[str, ...]:
        """Names reachable from ``name`` along ``edges`` in topological order, or one step."""
        start = self.index_of(name)
        if direct:
            return tuple(self.names[i] for i in edges[start])
        seen = _reachable(edges, [start])
        seen.discard(start)
        return tuple(self.names[i] for i in self.order if i in seen)

    def index_of(self, name: str) -> int:
        """The index of node ``name``.

        Raises:
            UnknownNodeError: The graph has no such node (the message suggests close names).
        """
        try:
            return self.index[name]
        except KeyError:
            raise UnknownNodeError(
                f"pipeline {self.name!r} has no node {name!r}{_suggest(name, self.names)}",
                [name],
            ) from None

    def select(
        self, given: Mapping[str, object], outputs: Iterable[str] | str | None
    ) -> tuple[tuple[int, ...], tuple[str, ...]]:
        """The nodes a run of ``outputs`` with ``given`` inputs executes, and the outputs.

        Raises:
            UnknownNodeError: An output is not a node.
            UnknownInputsError: An input is neither an external input nor a node.
            MissingInputsError: Required inputs of the selected nodes were not given.
        """
        unknown = {
            k: _close(k, [*self.inputs, *self.names])
            for k in given
            if k not in self.inputs and k not in self.index
        }
        if unknown:
            raise UnknownInputsError(unknown)
        if outputs is None:
            wanted = self.names
        else:
            wanted = (outputs,) if isinstance(outputs, str) else tuple(dict.fromkeys(outputs))
            missing_outputs = [o for o in wanted if o not in self.index]
            if missing_outputs:
                hints = "".join(f"\n  {o!r}{_suggest(o, self.names)}" for o in missing_outputs)
                raise UnknownNodeError(
                    f"pipeline {self.name!r} has no node for these outputs:{hints}",
                    missing_outputs,
                )
        # The selection depends only on names, so repeated runs reuse it.
        key = (wanted, frozenset(given))
        order = self._selections.get(key)
        if order is None:
            order = self._select(wanted, given)
            if len(self._selections) >= _SELECTIONS_KEPT:
                self._selections.clear()
            self._selections[key] = order
        return order, wanted

    def _select(self, wanted: tuple[str, ...], given: Mapping[str, object]) -> tuple[int, ...]:
        overridden = [i for i in map(self.index.get, given) if i is not None]
        selected = _reachable(self.parents, [self.index[o] for o in wanted], set(overridden))
        selected.difference_update(overridden)
        order = tuple(i for i in self.order if i in selected)
        missing: dict[str, list[str]] = {}
        for i in order:
            spec = self.specs[i]
            for p in spec.params:
                if not p.has_default and p.source not in given and p.source not in self.index:
                    missing.setdefault(p.source, []).append(spec.name)
        if missing:
            # A node cannot read itself: `def scaled(scale)` is no typo of `scaled`.
            close = {
                name: _close(name, [n for n in self.names if n not in readers])
                for name, readers in missing.items()
            }
            raise MissingInputsError(missing, close)
        return order


def _parents_of(spec: Node[..., Any], index: Mapping[str, int]) -> tuple[int, ...]:
    """Distinct parent indices of a node: data parents, then ``after=`` ones."""
    parents: dict[int, None] = {}
    for p in spec.params:
        i = index.get(p.source)
        if i is None:
            if p.source != p.name:
                raise UnknownNodeError(
                    f"node {spec.name!r}: inputs= feeds parameter {p.name!r} from "
                    f"{p.source!r}, which is not a node of the pipeline"
                    f"{_suggest(p.source, index)}",
                    [p.source],
                )
            continue
        if p.source == spec.name:
            raise CycleError([spec.name, spec.name])
        parents[i] = None
    for name in spec.after:
        i = index.get(name)
        if i is None:
            raise UnknownNodeError(
                f"node {spec.name!r}: after= names {name!r}, which is not a node of the "
                f"pipeline{_suggest(name, index)}",
                [name],
            )
        if name == spec.name:
            raise CycleError([spec.name, spec.name])
        parents[i] = None
    return tuple(parents)


def _topological_order(
    names: Sequence[str],
    parents: Sequence[tuple[int, ...]],
    children: Sequence[tuple[int, ...]],
) -> tuple[int, ...]:
    """Kahn's algorithm in definition order; a leftover node means a cycle."""
    waiting = [len(ps) for ps in parents]
    ready = deque(i for i, n in enumerate(waiting) if n == 0)
    order: list[int] = []
    while ready:
        i = ready.popleft()
        order.append(i)
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    if len(order) < len(names):
        raise CycleError([names[i] for i in _find_cycle(parents, waiting)])
    return tuple(order)


def _find_cycle(parents: Sequence[tuple[int, ...]], waiting: Sequence[int]) -> list[int]:
    """A cycle among nodes Kahn could not order, in data-flow order, first node repeated."""
    # Every unordered node has an unordered parent, so walking parents must revisit a node.
    start = min(i for i, n in enumerate(waiting) if n > 0)
    path: list[int] = []
    position: dict[int, int] = {}
    i = start
    while i not in position:
        position[i] = len(path)
        path.append(i)
        i = next(p for p in parents[i] if waiting[p] > 0)
    cycle = path[position[i] :][::-1]  # parents walk backwards; flip to data-flow order
    first = cycle.index(min(cycle))
    cycle = cycle[first:] + cycle[:first]
    return [*cycle, cycle[0]]


def _reachable(
    edges: Sequence[tuple[int, ...]], starts: Iterable[int], stop: set[int] | None = None
) -> set[int]:
    """Nodes reachable from ``starts`` along ``edges``, not walking past ``stop`` nodes."""
    seen = set(starts)
    stack = list(seen)
    stop = stop or set()
    while stack:
        i = stack.pop()
        if i in stop:
            continue
        for j in edges[i]:
            if j not in seen:
                seen.add(j)
                stack.append(j)
    return seen


def _external_inputs(nodes: Iterable[Node[..., Any]], index: Mapping[str, int]) -> dict[str, Input]:
    users: dict[str, list[str]] = {}
    required: dict[str, bool] = {}
    for spec in nodes:
        for p in spec.params:
            if p.source not in index:
                users.setdefault(p.source, []).append(spec.name)
                required[p.source] = required.get(p.source, False) or not p.has_default
    return {name: Input(name, required[name], tuple(by)) for name, by in users.items()}


def _warn_of_near_misses(inputs: Mapping[str, Input], nodes: Mapping[str, Node[..., Any]]) -> None:
    """Warn of each optional input named one edit away from a node: a typo of its name?

    A misspelt parameter with a default builds and runs without a word, on its default; a
    misspelt one without a default at least fails as a missing input.
    """
    optional = [p for p in inputs.values() if not p.required and len(p.name) >= _NEAR_MISS_LENGTH]
    if not optional:
        return
    by_length: dict[int, list[str]] = {}
    for name in nodes:
        if len(name) >= _NEAR_MISS_LENGTH:
            by_length.setdefault(len(name), []).append(name)
    for put in optional:
        node = _near_miss(put, by_length)
        if node is not None:
            warnings.warn(
                _near_miss_message(put, node, nodes),
                GraphWarning,
                stacklevel=_caller_outside_flowdeco(),
            )


def _near_miss(put: Input, by_length: Mapping[int, Sequence[str]]) -> str | None:
    """The first node named one edit away from ``put``, but not one of its readers: a node
    cannot read itself (``def scaled(scale=10)`` is no typo)."""
    typed = put.name
    size, first, last = len(typed), typed[0], typed[-1]
    for length in (size - 1, size, size + 1):
        for name in by_length.get(length, ()):
            # One edit keeps the first or the last letter: a cheap test rules most names out.
            if (
                (name[0] == first or name[-1] == last)
                and _one_edit_apart(typed, name)
                and name not in put.nodes
            ):
                return name
    return None


def _near_miss_message(put: Input, node: str, nodes: Mapping[str, Node[..., Any]]) -> str:
    readers = ", ".join(f"{n!r} ({nodes[n].location})" for n in put.nodes)
    plural = "s" if len(put.nodes) > 1 else ""
    return (
        f"node{plural} {readers}: parameter {put.name!r} names no node and has a default, so "
        f"the run passes that default; did you mean node {node!r}? To read that node, name "
        f"the parameter {node!r} (or rename it with @fd.node(inputs={{{put.name!r}: "
        f"{node!r}}})); if {put.name!r} is meant as an input, rename it further from the "
        "node's name"
    )


def _one_edit_apart(a: str, b: str) -> bool:
    """Whether one insertion, deletion, change or swap of neighbours makes ``a`` into ``b``."""
    if len(a) > len(b):
        a, b = b, a
    if a == b or len(b) - len(a) > 1:
        return False
    i = 0  # the first difference
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) < len(b):
        return a[i:] == b[i + 1 :]
    if a[i + 1 :] == b[i + 1 :]:  # one change
        return True
    swapped = i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i]
    return swapped and a[i + 2 :] == b[i + 2 :]


def _caller_outside_flowdeco() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside flowdeco.

    Graphs are built under ``Pipeline(...)``, ``from_namespace``... (and attrs' generated
    ``__init__``): the line to show is the user's, however deep below it the warning is.
    """
    level = 1
    frame: FrameType | None = sys._getframe(1)  # the function that warns: level 1
    while frame is not None and frame.f_code.co_filename.startswith(_NOT_THE_CALLER):
        level += 1
        frame = frame.f_back
    return level


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = _close(name, candidates)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
