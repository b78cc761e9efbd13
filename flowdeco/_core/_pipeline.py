"""Pipeline: the facade users build and run; the graph it holds is validated at construction."""

from __future__ import annotations

import enum
import importlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ._errors import ConfigurationError, DuplicateNodeError
from ._graph import Graph, Plan
from ._hooks import Hooks
from ._node import Node, node
from ._options import (
    NO_OPTIONS,
    Options,
    RunSettings,
    as_executor,
    as_options,
    check_flag,
    check_provider,
    check_run_options,
)
from ._runner import run_async, run_sync
from ._store import DEFAULT_STORE, DefaultStore, check_store, open_store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable
    from types import ModuleType

    from typing_extensions import Unpack

    from ._executors import Executor
    from ._graph import Input
    from ._middleware import Middleware
    from ._options import Backend, ExecutorChoice, RunOptions
    from ._result import RunResult
    from ._store import RunRecord, StoreLike

__all__ = ["Pipeline"]


class _Own(enum.Enum):
    """The type of ``_OWN``: "the pipeline's own store", where None means "no store"."""

    OWN = "the pipeline's"

    def __repr__(self) -> str:
        return "<the pipeline's>"


_OWN = _Own.OWN


def _collect(
    nodes: Iterable[Node[..., Any] | Callable[..., Any]],
) -> Mapping[str, Node[..., Any]]:
    """Key nodes by name; plain functions become nodes; two definitions of a name clash."""
    listed = _listed(nodes)
    if listed is None:
        raise TypeError(f"Pipeline(nodes) must be a list of nodes or functions, got {nodes!r}")
    by_name: dict[str, Node[..., Any]] = {}
    for position, item in enumerate(listed):
        if not callable(item):  # a Node is callable too
            raise TypeError(
                f"Pipeline(nodes)[{position}] must be a node or a function, got {item!r}"
            )
        spec = item if isinstance(item, Node) else node(item)
        seen = by_name.get(spec.name)
        if seen is not None and seen != spec:  # the same spec listed twice is one node
            raise DuplicateNodeError(spec.name, seen.location, spec.location)
        by_name[spec.name] = spec
    return MappingProxyType(by_name)


def _listed(items: Iterable[Any]) -> tuple[Any, ...] | None:
    """``items`` as a tuple, or None for what is no list of items: one item, a str, a dict."""
    if isinstance(items, (str, bytes, Mapping)) or not hasattr(items, "__iter__"):
        return None
    return tuple(items)


def _pipeline_name(name: str) -> str:
    """A name for results, traces, errors and the store's records: text, not blank."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"Pipeline(name=...) must be a non-empty string, got {name!r}")
    return name


# Typed converters: with ``converter=tuple``, mypy would show ``Pipeline(middleware=...)``
# as taking ``Iterable[_T_co]`` instead of ``Iterable[Middleware]``.
def _middleware_tuple(middleware: Iterable[Middleware]) -> tuple[Middleware, ...]:
    found = _listed(middleware)
    if found is None:
        raise ConfigurationError(
            f"Pipeline(middleware=...) must be a list of middleware, got {middleware!r}"
        )
    for position, item in enumerate(found):
        if not callable(item):
            raise ConfigurationError(
                f"Pipeline(middleware=...)[{position}] must be callable as "
                f"middleware(call, call_next), got {item!r}"
            )
    return found


def _checked_hooks(hooks: Iterable[Hooks], option: str) -> tuple[Hooks, ...]:
    """Each a :class:`Hooks`, whose every method the engine may call."""
    found = _listed(hooks)
    if found is None:
        raise ConfigurationError(f"{option} must be a list of Hooks, got {hooks!r}")
    for position, item in enumerate(found):
        if not isinstance(item, Hooks):
            raise ConfigurationError(
                f"{option}[{position}] must be a Hooks (an instance of a subclass of "
                f"fd.Hooks), got {item!r}"
            )
    return found


def _hooks_tuple(hooks: Iterable[Hooks]) -> tuple[Hooks, ...]:
    return _checked_hooks(hooks, "Pipeline(hooks=...)")


def _pipeline_executor(executor: ExecutorChoice | None) -> Executor | None:
    return None if executor is None else as_executor(executor, "Pipeline(executor=...)")


def _with_executor(defaults: Options, executor: Executor | None, option: str) -> Options:
    """``defaults`` with ``executor`` as theirs; both may not say."""
    if executor is None:
        return defaults
    if defaults.executor is not None and defaults.executor is not executor:
        raise ConfigurationError(
            f"{option} and defaults' executor are both given ({executor!r}, "
            f"{defaults.executor!r}); give one"
        )
    return attrs.evolve(defaults, executor=executor)


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
        store: Where checkpoints go: a directory, a :class:`Store`, or None to store
            nothing. By default the directory ``FLOWDECO_STORE`` names as a run starts
            (``none``: no store), else ``.flowdeco`` in the working directory.
        executor: Where the bodies of nodes that did not choose run (``"thread"``,
            ``"process"``, an :class:`Executor`...); see :class:`Options`. A run's own
            ``executor=`` wins.

    Raises:
        TypeError: ``nodes`` is not a list of nodes and functions.
        ConfigurationError: An option has a value it cannot take; the message names it.
        DuplicateNodeError: Two different definitions share a name.
        UnknownNodeError: ``after=`` or ``inputs=`` names a node that is not there.
        CycleError: The dependencies form a cycle (including a node depending on itself).
    """

    nodes: Mapping[str, Node[..., Any]] = attrs.field(converter=_collect)
    name: str = attrs.field(default="pipeline", converter=_pipeline_name)
    defaults: Options = attrs.field(default=NO_OPTIONS, converter=as_options)
    middleware: tuple[Middleware, ...] = attrs.field(default=(), converter=_middleware_tuple)
    hooks: tuple[Hooks, ...] = attrs.field(default=(), converter=_hooks_tuple)
    tracer_provider: TracerProvider | None = attrs.field(default=None)
    meter_provider: MeterProvider | None = attrs.field(default=None)
    trace_inputs: bool = attrs.field(default=False)
    store: StoreLike | DefaultStore = attrs.field(default=DEFAULT_STORE)
    executor: Executor | None = attrs.field(default=None, converter=_pipeline_executor)
    # Built from the fields above, once: this is where construction validates the DAG.
    _graph: Graph = attrs.field(
        init=False,
        repr=False,
        default=attrs.Factory(lambda self: Graph.build(self.name, self.nodes), takes_self=True),
    )

    @tracer_provider.validator
    def _check_tracer_provider(self, _: object, value: object) -> None:
        check_provider("Pipeline(tracer_provider=...)", value, TracerProvider)

    @meter_provider.validator
    def _check_meter_provider(self, _: object, value: object) -> None:
        check_provider("Pipeline(meter_provider=...)", value, MeterProvider)

    @trace_inputs.validator
    def _check_trace_inputs(self, _: object, value: object) -> None:
        check_flag("Pipeline(trace_inputs=...)", value)

    @store.validator
    def _check_store(self, _: object, value: StoreLike | DefaultStore) -> None:
        check_store(value, "Pipeline(store=...)")

    @executor.validator
    def _check_executor(self, _: object, value: Executor | None) -> None:
        _with_executor(self.defaults, value, "Pipeline(executor=...)")

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, object], *, name: str = "pipeline") -> Pipeline:
        """Collect the nodes bound in a namespace such as ``globals()``.

        When several nodes share a name, the newest definition wins, so re-running a
        notebook cell that redefines a node replaces it.

        Raises:
            TypeError: ``namespace`` is not a mapping.
        """
        if not isinstance(namespace, Mapping):
            raise TypeError(
                f"Pipeline.from_namespace(namespace) must be a mapping such as globals(), "
                f"got {namespace!r}"
            )
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
        return self._graph.inputs

    @property
    def order(self) -> tuple[str, ...]:
        """Node names in a topological order (parents before children)."""
        names = self._graph.names
        return tuple(names[i] for i in self._graph.order)

    def upstream(self, name: str, *, direct: bool = False) -> tuple[str, ...]:
        """Nodes ``name`` depends on, all ancestors in topological order (or only its parents)."""
        return self._graph.related(name, self._graph.parents, direct)

    def downstream(self, name: str, *, direct: bool = False) -> tuple[str, ...]:
        """Nodes depending on ``name``: all descendants in topological order (or its children)."""
        return self._graph.related(name, self._graph.children, direct)

    def plan(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
    ) -> Plan:
        """Select what a run executes, checking names and required inputs before anything runs.

        Inputs named like a node override that node: it is not run, and neither are the
        ancestors that only it needed.

        Raises:
            TypeError: ``inputs`` is not a mapping of names, or ``outputs`` not names.
            UnknownNodeError: An output is not a node.
            UnknownInputsError: An input is neither an external input nor a node.
            MissingInputsError: Required inputs of the selected nodes were not given.
        """
        if inputs is not None and not isinstance(inputs, Mapping):
            raise TypeError(f"inputs must be a mapping of names to values, got {inputs!r}")
        given = dict(inputs or {})
        for name in given:
            if not isinstance(name, str):
                raise TypeError(f"inputs must be keyed by input or node names, got key {name!r}")
        if outputs is not None and not isinstance(outputs, str):
            listed = tuple(outputs) if hasattr(outputs, "__iter__") else None
            if listed is None or not all(isinstance(o, str) for o in listed):
                raise TypeError(
                    f"outputs must be a node name, a list of node names or None, got {outputs!r}"
                )
            outputs = listed
        order, wanted = self._graph.select(given, outputs)
        return Plan(pipeline=self, graph=self._graph, order=order, outputs=wanted, given=given)

    def run(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
        *,
        backend: Backend = "asyncio",
        **options: Unpack[RunOptions],
    ) -> RunResult:
        """Run the pipeline from synchronous code and return its result.

        Works in scripts and where an event loop is already running in this thread (as in
        Jupyter): the run then gets its own thread and loop, with this context's variables.
        ``backend`` is the event loop to start (``"asyncio"`` or ``"trio"``); see
        :meth:`arun` for the other arguments.
        """
        check_run_options("Pipeline.run", options)
        settings = self._settings(options, backend)
        return run_sync(self.plan(inputs, outputs), settings)

    def arun(
        self,
        inputs: Mapping[str, object] | None = None,
        outputs: Iterable[str] | str | None = None,
        **options: Unpack[RunOptions],
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
            keep_values: Keep every node's value for the result's ``values``, for
                debugging. By default the result holds the outputs' values only, and a
                value is released as soon as no node still to run reads it.
            executor: Where this run runs the bodies of nodes that did not choose one
                (``"thread"``, ``"process"``, an :class:`Executor`...), instead of the
                pipeline's executor; see :class:`Options`.

        Raises:
            NodeFailed: With ``on_error="raise"``, the first node that failed.
        """
        check_run_options("Pipeline.arun", options)
        settings = self._settings(options, "asyncio")
        return run_async(self.plan(inputs, outputs), settings)

    def _settings(self, options: RunOptions, backend: Backend) -> RunSettings:
        """The run's options over the pipeline's settings, validated."""
        trace_inputs = options.get("trace_inputs")
        executor = options.get("executor")
        run_defaults = _with_executor(
            as_options(options.get("defaults")),
            None if executor is None else as_executor(executor),
            "executor=",
        )
        tracer_provider = options.get("tracer_provider")
        meter_provider = options.get("meter_provider")
        return RunSettings(
            middleware=self.middleware,
            concurrency=options.get("concurrency"),
            on_error=options.get("on_error", "raise"),
            backend=backend,
            on_status=options.get("on_status"),
            hooks=(*self.hooks, *_checked_hooks(options.get("hooks", ()), "hooks")),
            defaults=run_defaults.over(
                _with_executor(self.defaults, self.executor, "Pipeline(executor=...)")
            ),
            tracer_provider=self.tracer_provider if tracer_provider is None else tracer_provider,
            meter_provider=self.meter_provider if meter_provider is None else meter_provider,
            trace_inputs=self.trace_inputs if trace_inputs is None else trace_inputs,
            store=open_store(options.get("store", self.store)),
            cache=options.get("cache", True),
            resume=options.get("resume"),
            keep_values=options.get("keep_values", False),
        )

    def runs(self, store: StoreLike | _Own = _OWN) -> list[RunRecord]:
        """This pipeline's recorded runs, oldest first (from its store, or ``store``)."""
        found = open_store(self.store if store is _OWN else store)
        return [] if found is None else found.runs(self.name)
