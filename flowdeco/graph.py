"""Pipeline: edges inferred from signatures, validated at construction, planned per run."""

from __future__ import annotations

import difflib
import enum
import importlib
from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import attrs

from .errors import (
    CycleError,
    DuplicateNodeError,
    MissingInputsError,
    UnknownInputsError,
    UnknownNodeError,
)
from .node import Node, node
from .options import NO_OPTIONS, Options, as_options
from .store import open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
    from types import ModuleType

    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .engine import RunSettings
    from .hooks import Hooks
    from .middleware import Middleware
    from .result import RunResult, Status
    from .store import RunRecord, StoreLike

__all__ = ["Input", "Pipeline", "Plan"]

_SELECTIONS_KEPT = 64  # distinct (outputs, input names) selections remembered per pipeline

OnError = Literal["raise", "continue"]
Backend = Literal["asyncio", "trio"]


class _Unset(enum.Enum):
    """Marks a run argument not given, where None has a meaning of its own."""

    UNSET = "the pipeline's"

    def __repr__(self) -> str:
        return "<the pipeline's>"


_UNSET = _Unset.UNSET


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
    order: tuple[int, ...]
    outputs: tuple[str, ...]
    given: Mapping[str, object]


def _collect(
    nodes: Iterable[Node[..., Any] | Callable[..., Any]],
) -> Mapping[str, Node[..., Any]]:
    """Key nodes by name; plain functions become nodes; two definitions of a name clash."""
    by_name: dict[str, Node[..., Any]] = {}
    for item in nodes:
        spec = item if isinstance(item, Node) else node(item)
        seen = by_name.get(spec.name)
        if seen is not None and seen != spec:  # the same spec listed twice is one node
            raise DuplicateNodeError(spec.name, seen.location, spec.location)
        by_name[spec.name] = spec
    return MappingProxyType(by_name)


def _middleware_tuple(middleware: Iterable[Middleware]) -> tuple[Middleware, ...]:
    return tuple(middleware)


def _hooks_tuple(hooks: Iterable[Hooks]) -> tuple[Hooks, ...]:
    return tuple(hooks)


@attrs.frozen(eq=False)
class Pipeline:
    """A validated DAG of nodes, ready to run any number of times.

    Args:
        nodes: Nodes (or plain functions, which become nodes) in definition order.
        name: The pipeline's name, shown in results, traces and errors.
        defaults: Retry and timeout options for every node (an :class:`Options` or a dict
            of its keys); a node's own options win.
        middleware: Async callables wrapped around every node call, outermost first.
        hooks: :class:`Hooks` observing every run.
        tracer_provider, meter_provider: OpenTelemetry providers for every run's spans
            and metrics; the global ones when not given.
        trace_inputs: Record each node input's type and size (never its value) on the
            node's span.
        store: Where checkpoints go: a directory (default ``.flowdeco`` in the working
            directory at run time), a :class:`Store`, or None to store nothing.

    Raises:
        DuplicateNodeError: Two different definitions share a name.
        UnknownNodeError: ``after=`` or ``inputs=`` names a node that is not there.
        CycleError: The dependencies form a cycle (including a node depending on itself).
    """

    nodes: Mapping[str, Node[..., Any]] = attrs.field(converter=_collect)
    name: str = "pipeline"
    defaults: Options = attrs.field(default=NO_OPTIONS, converter=as_options)
    middleware: tuple[Middleware, ...] = attrs.field(default=(), converter=_middleware_tuple)
    hooks: tuple[Hooks, ...] = attrs.field(default=(), converter=_hooks_tuple)
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    trace_inputs: bool = False
    store: StoreLike = ".flowdeco"
    _names: tuple[str, ...] = attrs.field(init=False, repr=False)
    _index: dict[str, int] = attrs.field(init=False, repr=False)
    _parents: tuple[tuple[int, ...], ...] = attrs.field(init=False, repr=False)
    _children: tuple[tuple[int, ...], ...] = attrs.field(init=False, repr=False)
    _order: tuple[int, ...] = attrs.field(init=False, repr=False)
    _inputs: Mapping[str, Input] = attrs.field(init=False, repr=False)
    _selections: dict[tuple[tuple[str, ...], frozenset[str]], tuple[int, ...]] = attrs.field(
        init=False, repr=False, factory=dict
    )

    def __attrs_post_init__(self) -> None:
        # Derived once here so every run starts from flat index tables.
        set_ = object.__setattr__
        names = tuple(self.nodes)
        index = {name: i for i, name in enumerate(names)}
        parents = [_parents_of(spec, index) for spec in self.nodes.values()]
        children: list[list[int]] = [[] for _ in names]
        for child, ps in enumerate(parents):
            for parent in ps:
                children[parent].append(child)
        set_(self, "_names", names)
        set_(self, "_index", index)
        set_(self, "_parents", tuple(parents))
        set_(self, "_children", tuple(map(tuple, children)))
        set_(self, "_order", _topological_order(names, self._parents, self._children))
        set_(self, "_inputs", MappingProxyType(_external_inputs(self.nodes.values(), index)))

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, object], *, name: str = "pipeline") -> Pipeline:
        """Collect the nodes bound in a namespace such as ``globals()``.

        When several nodes share a name, the newest definition wins, so re-running a
        notebook cell that redefines a node replaces it.
        """
        newest: dict[str, Node[..., Any]] = {}
        for value in list(namespace.values()):
            if isinstance(value, Node):
                seen = newest.get(value.name)
                if seen is None or value.serial > seen.serial:
                    newest[value.name] = value
        ordered: list[Node[..., Any]] = sorted(newest.values(), key=lambda n: n.serial)
        return cls(ordered, name=name)

    @classmethod
    def from_module(cls, module: ModuleType | str, *, name: str | None = None) -> Pipeline:
        """Collect the nodes bound in a module (or a module's dotted name), in source order."""
        if isinstance(module, str):
            module = importlib.import_module(module)
        found = [v for v in vars(module).values() if isinstance(v, Node)]
        return cls(found, name=name or module.__name__)

    @property
    def inputs(self) -> Mapping[str, Input]:
        """External inputs by name, each marked required or optional."""
        return self._inputs

    @property
    def order(self) -> tuple[str, ...]:
        """Node names in a topological order (parents before children)."""
        return tuple(self._names[i] for i in self._order)

    def upstream(self, name: str, *, direct: bool = False) -> tuple[str, ...]:
        """Nodes ``name`` depends on, all ancestors in topological order (or only its parents)."""
        return self._related(name, self._parents, direct)

    def downstream(self, name: str, *, direct: bool = False) -> tuple[str, ...]:
        """Nodes depending on ``name``: all descendants in topological order (or its children)."""
        return self._related(name, self._children, direct)

    def _related(
        self, name: str, edges: Sequence[tuple[int, ...]], direct: bool
    ) -> tuple[str, ...]:
        start = self._node_index(name)
        if direct:
            return tuple(self._names[i] for i in edges[start])
        seen = _reachable(edges, [start])
        seen.discard(start)
        return tuple(self._names[i] for i in self._order if i in seen)

    def _node_index(self, name: str) -> int:
        try:
            return self._index[name]
        except KeyError:
            raise UnknownNodeError(
                f"pipeline {self.name!r} has no node {name!r}{_suggest(name, self._names)}",
                [name],
            ) from None

    def plan(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
    ) -> Plan:
        """Select what a run executes, checking names and required inputs before anything runs.

        Inputs named like a node override that node: it is not run, and neither are the
        ancestors that only it needed.

        Raises:
            UnknownNodeError: An output is not a node.
            UnknownInputsError: An input is neither an external input nor a node.
            MissingInputsError: Required inputs of the selected nodes were not given.
        """
        given = dict(inputs or {})
        unknown = {
            k: _close(k, [*self._inputs, *self._names])
            for k in given
            if k not in self._inputs and k not in self._index
        }
        if unknown:
            raise UnknownInputsError(unknown)

        if outputs is None:
            wanted = self._names
        else:
            wanted = (outputs,) if isinstance(outputs, str) else tuple(dict.fromkeys(outputs))
            missing_outputs = [o for o in wanted if o not in self._index]
            if missing_outputs:
                hints = "".join(f"\n  {o!r}{_suggest(o, self._names)}" for o in missing_outputs)
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
        return Plan(pipeline=self, order=order, outputs=wanted, given=given)

    def _select(self, wanted: tuple[str, ...], given: Mapping[str, object]) -> tuple[int, ...]:
        overridden = [i for i in map(self._index.get, given) if i is not None]
        selected = _reachable(self._parents, [self._index[o] for o in wanted], set(overridden))
        selected.difference_update(overridden)
        order = tuple(i for i in self._order if i in selected)

        missing: dict[str, list[str]] = {}
        nodes = list(self.nodes.values())
        for i in order:
            spec = nodes[i]
            for p in spec.params:
                if not p.has_default and p.source not in given and p.source not in self._index:
                    missing.setdefault(p.source, []).append(spec.name)
        if missing:
            raise MissingInputsError(missing)
        return order

    def run(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
        *,
        concurrency: int | None = None,
        on_error: OnError = "raise",
        backend: Backend = "asyncio",
        on_status: Callable[[str, Status], None] | None = None,
        hooks: Sequence[Hooks] = (),
        defaults: Options | Mapping[str, Any] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_inputs: bool | None = None,
        store: StoreLike | _Unset = _UNSET,
        cache: bool = True,
        resume: str | bool | None = None,
    ) -> RunResult:
        """Run the pipeline from synchronous code and return its result.

        Works in scripts and where an event loop is already running in this thread (as in
        Jupyter): the run then gets its own thread and loop, with this context's variables.
        See :meth:`arun` for the arguments.
        """
        from .engine import run_sync  # engine sits above graph; imported on use

        settings = self._settings(
            concurrency=concurrency,
            on_error=on_error,
            on_status=on_status,
            hooks=hooks,
            defaults=defaults,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            trace_inputs=trace_inputs,
            store=store,
            cache=cache,
            resume=resume,
        )
        return run_sync(self.plan(inputs, outputs), settings, backend)

    def arun(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
        *,
        concurrency: int | None = None,
        on_error: OnError = "raise",
        on_status: Callable[[str, Status], None] | None = None,
        hooks: Sequence[Hooks] = (),
        defaults: Options | Mapping[str, Any] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        trace_inputs: bool | None = None,
        store: StoreLike | _Unset = _UNSET,
        cache: bool = True,
        resume: str | bool | None = None,
    ) -> Awaitable[RunResult]:
        """Run the pipeline in the current event loop (asyncio or trio).

        Args:
            inputs: External inputs by name; a node's name overrides that node's value.
            outputs: Nodes whose values the result maps; only they and their ancestors run.
                ``None`` runs every node.
            concurrency: How many nodes (async, and threads for sync nodes) run at once.
            on_error: ``"raise"`` cancels the run at the first failure and raises
                :class:`NodeFailed`; ``"continue"`` finishes independent branches and marks
                the failed node's descendants ``skipped``.
            on_status: Called with ``(node, status)`` on every status change, in the loop.
            hooks: :class:`Hooks` observing this run, after the pipeline's own.
            defaults: Retry and timeout options (an :class:`Options` or a dict of its keys)
                for this run: they win over the pipeline's defaults, nodes' own win over
                both.
            tracer_provider, meter_provider: Where this run's spans and metrics go,
                instead of the pipeline's or the global OpenTelemetry providers.
            trace_inputs: Record inputs' types and sizes on node spans (``None``: the
                pipeline's setting).
            store: Where this run's checkpoints go, instead of the pipeline's: a
                directory, a :class:`Store`, or None to store nothing.
            cache: Reuse values stored by earlier runs for nodes whose code and inputs are
                unchanged (``False``: run every node; values are still stored).
            resume: A run id, or True for the latest run of this pipeline that did not
                finish well: every node that finished in it is reused, ``cache=False``
                nodes included, as long as its code and inputs are unchanged.

        Raises:
            NodeFailed: With ``on_error="raise"``, the first node that failed.
        """
        from .engine import run_async

        settings = self._settings(
            concurrency=concurrency,
            on_error=on_error,
            on_status=on_status,
            hooks=hooks,
            defaults=defaults,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            trace_inputs=trace_inputs,
            store=store,
            cache=cache,
            resume=resume,
        )
        return run_async(self.plan(inputs, outputs), settings)

    def _settings(
        self,
        *,
        concurrency: int | None,
        on_error: OnError,
        on_status: Callable[[str, Status], None] | None,
        hooks: Sequence[Hooks],
        defaults: Options | Mapping[str, Any] | None,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
        trace_inputs: bool | None,
        store: StoreLike | _Unset,
        cache: bool,
        resume: str | bool | None,
    ) -> RunSettings:
        from .engine import RunSettings

        return RunSettings(
            concurrency=concurrency,
            on_error=on_error,
            on_status=on_status,
            hooks=(*self.hooks, *hooks),
            defaults=as_options(defaults).over(self.defaults),
            tracer_provider=tracer_provider or self.tracer_provider,
            meter_provider=meter_provider or self.meter_provider,
            trace_inputs=self.trace_inputs if trace_inputs is None else trace_inputs,
            store=open_store(self.store if store is _UNSET else store),
            cache=cache,
            resume=resume,
        )

    def runs(self, store: StoreLike | _Unset = _UNSET) -> list[RunRecord]:
        """This pipeline's recorded runs, oldest first (from its store, or ``store``)."""
        found = open_store(self.store if store is _UNSET else store)
        return [] if found is None else found.runs(self.name)


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


def _close(name: str, candidates: Iterable[str]) -> list[str]:
    return difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)


def _suggest(name: str, candidates: Iterable[str]) -> str:
    close = _close(name, candidates)
    return f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
