"""flowdeco against its peers (Hamilton, pipefunc, dask) and hand-written floors.

Run ``python benchmarks/peers.py [--quick | --smoke] [--write docs/performance-peers.md]``
after ``pip install -e '.[bench]'``; see ``benchmarks/README.md``. Each measurement runs in
a child process with a time budget per call, so a peer that hangs, recurses too deep or
crashes is reported in the tables instead of stopping the suite. Within a child, variants
are interleaved repeat by repeat; every figure is a median (min and max shown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import importlib.metadata
import inspect
import json
import logging
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio
from overhead import (
    GRAPHS,
    SCALING_TARGET,
    Graph,
    build,
    environment,
    generate,
    load_average,
    n_label,
    plain_floor,
    repeats_for,
    source_text,
    task_floor,
    wire_floor,
)
from tracing import OVERHEAD_TARGET, Stat, sdk_provider, span_floor

import flowdeco as fd

try:
    import dask
    from hamilton import ad_hoc_utils, async_driver, driver
    from hamilton.plugins.h_opentelemetry import OpenTelemetryTracer
    from hamilton.plugins.h_threadpool import FutureAdapter
    from pipefunc import Pipeline, pipefunc
except ImportError as missing:
    raise SystemExit(
        f"{missing}; install the peers with: .venv/bin/pip install -e '.[bench]'"
    ) from missing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence
    from types import ModuleType

SHAPES = ("chain", "fan", "dag")
US = 1e6
FEATURE_SHAPE = "dag"  # tracing and caching run on the random DAG: every peer survives it
SLEEPERS = 50  # the I/O figure: this many independent nodes, each sleeping NAP seconds
NAP = 0.1
IO_FINAL = f"n{SLEEPERS}"
IO_EXPECTED = sum(1 + i for i in range(SLEEPERS))  # each sleeper returns x + i, x = 1

# flowdeco writes checkpoints by default once runs take store=; the run figures leave them
# off, so that every library does the same work.
HAS_STORE = "store" in inspect.signature(fd.Pipeline.run).parameters
NO_CHECKPOINTS: dict[str, Any] = {"store": None} if HAS_STORE else {}

# Targets, evaluated in targets().
BUILD_TARGET = 5.0  # Hamilton's build time over flowdeco's, at 1,000 nodes and more
RUN_TARGET = 0.5  # flowdeco's inline run time over Hamilton's
SYNC_IO_TARGET_S = 0.15
ASYNC_IO_TARGET_S = 0.11
TRACING_VS_HAMILTON = 0.5  # flowdeco's tracing overhead over Hamilton's tracer's
WARM_CACHE_TARGET = 0.5  # flowdeco's warm run over Hamilton's warm run


@dataclass(frozen=True)
class Mode:
    """How much a run measures, and the time budgets that bound it."""

    name: str
    sizes: tuple[int, ...]
    call_budget: float  # seconds one call may take before it counts as a timeout
    variant_budget: float  # seconds of timed calls per variant: caps its repeat count
    max_repeats: Callable[[int], int]  # repeats for a graph of n nodes, before the cap
    io_repeats: int
    feature_n: int  # nodes in the tracing and caching graphs
    memory_n: int  # depth of the chain whose peak memory is measured
    child_timeout: float  # seconds after which a child process is killed


MODES = {
    "full": Mode(
        "full", (100, 1_000, 5_000, 10_000), 30, 10, lambda n: repeats_for(n, False),
        5, 1_000, 5_000, 1_800,
    ),
    "quick": Mode(
        "quick", (100, 1_000), 3, 2, lambda n: repeats_for(n, True), 2, 1_000, 1_000, 300
    ),
    "smoke": Mode("smoke", (100,), 2, 1, lambda n: 1, 1, 100, 100, 120),
}  # fmt: skip


# -- the libraries, each its own documented way ------------------------------------------


@dataclass
class Case:
    """One generated graph, its node functions in the forms the libraries take, the answer."""

    graph: Graph
    funcs: list[Callable[..., Any]]  # plain functions: flowdeco, pipefunc, dask, floors
    async_funcs: list[Callable[..., Any]]
    module: ModuleType  # the same functions with type hints, as a module, for Hamilton
    expected: Any  # the final node's value, from plain calls

    @property
    def final(self) -> str:
        """The one sink: every node is its ancestor."""
        return f"n{self.graph.n - 1}"


def single_sink(shape: str, n: int) -> Graph:
    """overhead.py's graph of ``n`` nodes ending in one final node: a random DAG's sinks all
    feed an extra last node, so every library computes every node for one checked answer."""
    graph = GRAPHS[shape](n)
    if graph.sinks == [n - 1]:
        return graph
    graph = GRAPHS[shape](n - 1)
    return Graph(shape, n, [*graph.parents, graph.sinks])


def make_case(shape: str, n: int) -> Case:
    """Generate the graph's functions (codegen is not timed) and the expected answer."""
    graph = single_sink(shape, n)
    funcs, _ = generate(graph, is_async=False)
    async_funcs, _ = generate(graph, is_async=True)
    expected = plain_floor(graph, funcs, 1)[-1]
    return Case(graph, funcs, async_funcs, hamilton_module(graph), expected)


def hamilton_module(graph: Graph) -> ModuleType:
    """The functions as a module, as Hamilton takes a dataflow, with the type hints Hamilton
    requires (it refuses a function without a return annotation): ints in, int out."""
    module = ad_hoc_utils.module_from_source(source_text(graph, is_async=False))
    for i in range(graph.n):
        func = getattr(module, f"n{i}")
        code = func.__code__
        params = code.co_varnames[: code.co_argcount]
        func.__annotations__ = {**dict.fromkeys(params, int), "return": int}
    return module


def build_flowdeco(case: Case) -> fd.Pipeline:
    """``fd.Pipeline`` of ``@fd.node(run_in="inline")`` functions."""
    return build(case.funcs, run_in="inline")


def run_flowdeco(pipe: fd.Pipeline, case: Case, **options: Any) -> Any:
    """``pipe.run`` asking for the final node, checkpoints off unless ``options`` say."""
    options = {**NO_CHECKPOINTS, **options}
    return pipe.run(inputs={"x": 1}, outputs=[case.final], **options)[case.final]


def build_hamilton(case: Case) -> driver.Driver:
    """``driver.Builder().with_modules(module).build()``."""
    return driver.Builder().with_modules(case.module).build()


def run_hamilton(dr: driver.Driver, case: Case) -> Any:
    """``dr.execute([final], inputs=...)``."""
    return dr.execute([case.final], inputs={"x": 1})[case.final]


def build_pipefunc(case: Case) -> Pipeline:
    """``Pipeline`` of ``@pipefunc(output_name=...)`` functions."""
    return Pipeline([pipefunc(output_name=f.__name__)(f) for f in case.funcs])


def call_pipefunc(pipeline: Pipeline, case: Case) -> Any:
    """``pipeline(final, x=1)``: pipefunc's call for one output."""
    return pipeline(case.final, x=1)


def map_pipefunc(pipeline: Pipeline, case: Case) -> Any:
    """``pipeline.map(inputs, parallel=False)``: pipefunc's run of every node, generation by
    generation (its default, parallel=True, would ship each trivial call to a process)."""
    return pipeline.map({"x": 1}, parallel=False)[case.final].output


def build_dask(case: Case) -> Any:
    """``dask.delayed`` calls, parents' Delayed objects passed positionally: the final one."""
    nodes: list[Any] = []
    for func, parents in zip(case.funcs, case.graph.parents, strict=True):
        args = [nodes[p] for p in parents] if parents else [1]
        nodes.append(dask.delayed(func)(*args))
    return nodes[-1]


def dask_sync(final: Any, case: Case) -> Any:
    """``final.compute(scheduler="sync")``."""
    return final.compute(scheduler="sync")


def dask_threads(final: Any, case: Case) -> Any:
    """``final.compute()``: delayed's default, the threaded scheduler."""
    return final.compute(scheduler="threads")


BUILDERS: dict[str, Callable[[Case], Any]] = {
    "flowdeco": build_flowdeco,
    "Hamilton": build_hamilton,
    "pipefunc": build_pipefunc,
    "dask": build_dask,
}
FIRST_RUNS: dict[str, Callable[[Any, Case], Any]] = {
    "flowdeco": run_flowdeco,
    "Hamilton": run_hamilton,
    "pipefunc": call_pipefunc,
}  # dask builds no reusable state for a first run to fill
RUNS: dict[str, tuple[str, Callable[[Any, Case], Any]]] = {
    "flowdeco inline": ("flowdeco", run_flowdeco),
    "Hamilton": ("Hamilton", run_hamilton),
    "pipefunc call": ("pipefunc", call_pipefunc),
    "pipefunc map": ("pipefunc", map_pipefunc),
    "dask sync": ("dask", dask_sync),
    "dask threads": ("dask", dask_threads),
}
FLOORS = ("plain calls", "flowdeco async", "anyio tasks", "asyncio TaskGroup")
MEMORY_RUNS = ("flowdeco inline", "Hamilton", "pipefunc call", "dask sync")


async def asyncio_floor(graph: Graph, funcs: Sequence[Callable[..., Any]], x: int) -> Any:
    """A raw ``asyncio.TaskGroup``: every node's task started at once, awaiting its parents'
    futures (events for dependencies, where overhead.task_floor counts readiness)."""
    loop = asyncio.get_running_loop()
    done = [loop.create_future() for _ in range(graph.n)]

    async def run(i: int) -> None:
        args = [await done[p] for p in graph.parents[i]] if graph.parents[i] else [x]
        done[i].set_result(await funcs[i](*args))

    async with asyncio.TaskGroup() as tg:
        for i in range(graph.n):
            tg.create_task(run(i))
    return done[-1].result()


# -- measuring, in a child process -------------------------------------------------------


class NotRun(Exception):
    """A variant that cannot run because what it needs failed first."""


class OverBudget(BaseException):
    """Raised by SIGALRM in a call that took longer than its budget (a BaseException, so
    that a library's ``except Exception`` does not swallow it)."""


class Alarm:
    """Whether the last budget ran out, even if a library turned the exception into another."""

    fired = False


def on_alarm(signum: int, frame: object) -> None:
    """SIGALRM handler: the running call is over budget."""
    Alarm.fired = True
    raise OverBudget


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise OverBudget in the main thread if the block runs longer than ``seconds``."""
    Alarm.fired = False
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)


def stopwatch(call: Callable[[], Any], expected: Any = None) -> Callable[[], float]:
    """A variant's call: collect garbage, time ``call()``, check its answer unless there is
    none to check (a build); returns seconds."""

    def timed() -> float:
        gc.collect()
        start = time.perf_counter()
        value = call()
        elapsed = time.perf_counter() - start
        if inspect.iscoroutine(value):
            value.close()
            raise TypeError("the answer is an un-awaited coroutine: async def nodes not awaited")
        if expected is not None and value != expected:
            raise AssertionError(f"wrong answer: {value!r}, expected {expected!r}")
        return elapsed

    return timed


class Variant(NamedTuple):
    """One measured thing: a call returning its sample (seconds, or bytes for memory)."""

    call: Callable[[], float]
    warmup: bool = True  # the first call is not counted (the later ones are compared)
    after: str | None = None  # runs right after this variant, as often, using what it made


@dataclass
class Outcome:
    """A variant's samples, or why it has none."""

    values: list[float] = field(default_factory=list)
    error: str | None = None


class Log:
    """JSON lines to the parent: the variant about to run (to name the culprit of a crash),
    and at the end the results."""

    def __init__(self, path: Path) -> None:
        self.file = path.open("a", encoding="utf-8")

    def write(self, event: dict[str, Any]) -> None:
        """One event, flushed at once: the process may die right after."""
        self.file.write(json.dumps(event) + "\n")
        self.file.flush()


def describe(exc: BaseException, budget: float) -> str:
    """``Kind: detail`` of a failure; the kind goes in the table, the rest under Failures."""
    if Alarm.fired:
        return f"timeout: a call took more than the {budget:g} s budget"
    if isinstance(exc, NotRun):
        return f"not run: {exc}"
    while len(getattr(exc, "exceptions", ())) == 1:  # an exception group of one: show that one
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    if isinstance(exc, RecursionError):
        return f"RecursionError: at the default recursion limit ({sys.getrecursionlimit():,})"
    detail = str(exc).splitlines()[0][:160] if str(exc) else "no message"
    return f"{type(exc).__name__}: {detail}"


def attempt(key: str, variant: Variant, outcome: Outcome, budget: float, log: Log) -> float | None:
    """One call of a variant within ``budget`` seconds: its sample, or None when it failed
    (the failure is then the outcome's error)."""
    log.write({"running": key})
    try:
        with time_limit(budget):
            return variant.call()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001  # how a peer fails is a result to report
        outcome.error = describe(exc, budget)
        return None


def measure(
    variants: Mapping[str, Variant], repeats: int, mode: Mode, log: Log
) -> dict[str, Outcome]:
    """Probe each variant once, then time them interleaved, round by round. A variant gets
    ``repeats`` timed calls, fewer if they would take more than the mode's variant budget.

    What is alive by then (the peers' imports, the graph, what was built) is frozen out of
    the collector's reach, so that neither the collection before each call nor those during
    it walk pandas and friends: every library gets the same, smaller heap.
    """
    gc.collect()
    gc.freeze()
    outcomes = {key: Outcome() for key in variants}
    wanted: dict[str, int] = {}
    for key, variant in variants.items():
        if variant.after is not None and variant.after not in wanted:
            outcomes[key].error = f"not run: needs {variant.after}"
            continue
        start = time.perf_counter()
        sample = attempt(key, variant, outcomes[key], mode.call_budget, log)
        if sample is None:
            continue
        if not variant.warmup:
            outcomes[key].values.append(sample)
        fits = int(mode.variant_budget / max(time.perf_counter() - start, 1e-9))
        wanted[key] = wanted[variant.after] if variant.after else max(1, min(repeats, fits))
    while True:
        due = [
            key
            for key in wanted
            if outcomes[key].error is None and len(outcomes[key].values) < wanted[key]
        ]
        if not due:
            return outcomes
        for key in due:
            sample = attempt(key, variants[key], outcomes[key], mode.call_budget, log)
            if sample is not None:
                outcomes[key].values.append(sample)


def graph_task(case: Case, mode: Mode, skip: set[str], log: Log) -> dict[str, Outcome]:
    """Figures 1 and 2 on one graph: builds (each followed by its first run), then runs."""
    warm_up()
    made: dict[str, Any] = {}  # each library's last build, for the run variants
    fresh: dict[str, Any] = {}  # a build not run yet, for the first-run variants

    def building(lib: str) -> Callable[[], None]:
        def call() -> None:
            made[lib] = fresh[lib] = BUILDERS[lib](case)

        return call

    def first_run(lib: str) -> Callable[[], Any]:
        def call() -> Any:
            if lib not in fresh:
                raise NotRun(f"no new {lib} build")
            return FIRST_RUNS[lib](fresh.pop(lib), case)

        return call

    def using(lib: str, run: Callable[[Any, Case], Any]) -> Callable[[], Any]:
        def call() -> Any:
            if lib not in made:
                raise NotRun(f"no {lib} build")
            return run(made[lib], case)

        return call

    expected = case.expected
    builds: dict[str, Variant] = {}
    for lib in BUILDERS:
        builds[f"build: {lib}"] = Variant(stopwatch(building(lib)), warmup=False)
        if lib in FIRST_RUNS:
            call = stopwatch(first_run(lib), expected)
            builds[f"first run: {lib}"] = Variant(call, warmup=False, after=f"build: {lib}")
    builds["build: floor"] = Variant(stopwatch(lambda: wire_floor(case.funcs)), warmup=False)

    async_pipe = functools.cache(lambda: build(case.async_funcs))  # built by the warm-up
    graph, funcs = case.graph, case.async_funcs
    floors: dict[str, Callable[[], Any]] = {
        "plain calls": lambda: plain_floor(graph, case.funcs, 1)[-1],
        "flowdeco async": lambda: run_flowdeco(async_pipe(), case),
        "anyio tasks": lambda: anyio.run(task_floor, graph, funcs, 1, backend="asyncio")[-1],
        "asyncio TaskGroup": lambda: asyncio.run(asyncio_floor(graph, funcs, 1)),
    }
    runs = {f"run: {key}": using(lib, run) for key, (lib, run) in RUNS.items()}
    runs.update({f"run: {key}": call for key, call in floors.items()})

    repeats = mode.max_repeats(case.graph.n)
    results = measure(unskipped(builds, skip), repeats, mode, log)
    variants = {key: Variant(stopwatch(call, expected)) for key, call in runs.items()}
    results.update(measure(unskipped(variants, skip), repeats, mode, log))
    return results


def unskipped(variants: dict[str, Variant], skip: set[str]) -> dict[str, Variant]:
    """The variants the parent did not rule out (it reports those itself)."""
    return {key: v for key, v in variants.items() if key not in skip}


def warm_up() -> None:
    """Build and run a 3-node chain with every library, so that one-time costs (lazy imports,
    first-use caches) do not land in the first timed build."""
    case = make_case("chain", 3)
    for lib, builder in BUILDERS.items():
        built = builder(case)
        for owner, run in RUNS.values():
            if owner == lib:
                assert run(built, case) == case.expected


def sleepers_module(sleep: str) -> ModuleType:
    """SLEEPERS independent nodes that each ``sleep(NAP)`` and return ``x + i``, and a final
    node summing them, as a module with type hints. ``sleep`` is ``time.sleep`` or an async
    sleep (every node is then ``async def``, the sleepers awaiting it)."""
    is_async = sleep != "time.sleep"
    kw, wait = ("async def", "await ") if is_async else ("def", "")
    names = [f"n{i}" for i in range(SLEEPERS)]
    source = f"import {sleep.split('.')[0]}\n\n" + "".join(
        f"{kw} {name}(x: int) -> int:\n    {wait}{sleep}({NAP})\n    return x + {i}\n"
        for i, name in enumerate(names)
    )
    params = ", ".join(f"{name}: int" for name in names)
    source += f"{kw} {IO_FINAL}({params}) -> int:\n    return sum(({', '.join(names)},))\n"
    return ad_hoc_utils.module_from_source(source)


def io_task(mode: Mode, skip: set[str], log: Log) -> dict[str, Outcome]:
    """Figure 3: 50 sleeping nodes feeding one, with each library's defaults and tuning."""
    graph = Graph("io", SLEEPERS + 1, [[] for _ in range(SLEEPERS)] + [list(range(SLEEPERS))])
    by_sleep = {s: sleepers_module(s) for s in ("time.sleep", "anyio.sleep", "asyncio.sleep")}
    funcs = {s: [getattr(m, f"n{i}") for i in range(graph.n)] for s, m in by_sleep.items()}
    sync, anyio_funcs, aio = funcs["time.sleep"], funcs["anyio.sleep"], funcs["asyncio.sleep"]
    io = Case(graph, sync, aio, by_sleep["time.sleep"], IO_EXPECTED)
    async_io = Case(graph, aio, aio, by_sleep["asyncio.sleep"], IO_EXPECTED)
    sync_pipe = fd.Pipeline([fd.node(f) for f in sync])
    async_pipe = fd.Pipeline([fd.node(f) for f in anyio_funcs])
    pool = ThreadPoolExecutor(SLEEPERS)
    store_dir = tempfile.TemporaryDirectory()
    store = fd.FileStore(store_dir.name) if HAS_STORE else None
    sequential = build_hamilton(io)
    threaded = driver.Builder().with_modules(io.module)
    threaded = threaded.with_adapters(FutureAdapter(max_workers=SLEEPERS)).build()
    async_dr = asyncio.run(async_driver.Builder().with_modules(async_io.module).build())
    pipeline, async_pipeline = build_pipefunc(io), build_pipefunc(async_io)
    delayed, async_delayed = build_dask(io), build_dask(async_io)

    calls: dict[str, Callable[[], Any]] = {
        "flowdeco sync": lambda: run_flowdeco(sync_pipe, io),
        "flowdeco async": lambda: run_flowdeco(async_pipe, io),
        # Checkpoints are on by default; cache=False keeps the sleeps from being reused.
        "flowdeco sync stored": lambda: run_flowdeco(sync_pipe, io, store=store, cache=False),
        "flowdeco async stored": lambda: run_flowdeco(async_pipe, io, store=store, cache=False),
        "Hamilton sync": lambda: run_hamilton(sequential, io),
        "Hamilton sync tuned": lambda: run_hamilton(threaded, io),
        "Hamilton async": lambda: asyncio.run(async_dr.execute([IO_FINAL], inputs={"x": 1}))[
            IO_FINAL
        ],
        "pipefunc sync": lambda: call_pipefunc(pipeline, io),
        "pipefunc sync tuned": lambda: pipeline.map({"x": 1}, executor=pool)[IO_FINAL].output,
        "pipefunc async": lambda: call_pipefunc(async_pipeline, async_io),
        "dask sync": lambda: delayed.compute(),
        "dask sync tuned": lambda: delayed.compute(scheduler="threads", num_workers=SLEEPERS),
        "dask async": lambda: async_delayed.compute(),
        "floor anyio threads": lambda: anyio.run(
            functools.partial(task_floor, graph, sync, 1, threads=SLEEPERS), backend="asyncio"
        )[-1],
        "floor anyio": lambda: anyio.run(task_floor, graph, anyio_funcs, 1, backend="asyncio")[-1],
        "floor asyncio": lambda: asyncio.run(asyncio_floor(graph, aio, 1)),
    }
    variants = {f"io: {key}": Variant(stopwatch(c, IO_EXPECTED)) for key, c in calls.items()}
    try:
        return measure(unskipped(variants, skip), mode.io_repeats, mode, log)
    finally:
        pool.shutdown()
        store_dir.cleanup()


def tracing_task(mode: Mode, skip: set[str], log: Log) -> dict[str, Outcome]:
    """Figure 4: runs untraced and traced (one SDK provider each, spans dropped by a null
    exporter) and the raw SDK span floor, interleaved."""
    case = make_case(FEATURE_SHAPE, mode.feature_n)
    n = case.graph.n
    pipe = build_flowdeco(case)
    dr = build_hamilton(case)
    ours, theirs, floor = sdk_provider(), sdk_provider(), sdk_provider()
    tracer = OpenTelemetryTracer(tracer=theirs.get_tracer("hamilton"))
    traced = driver.Builder().with_modules(case.module).with_adapters(tracer).build()
    expected = case.expected
    variants = {
        "tracing: flowdeco off": Variant(stopwatch(lambda: run_flowdeco(pipe, case), expected)),
        "tracing: flowdeco on": Variant(
            stopwatch(lambda: run_flowdeco(pipe, case, tracer_provider=ours), expected)
        ),
        "tracing: Hamilton off": Variant(stopwatch(lambda: run_hamilton(dr, case), expected)),
        "tracing: Hamilton on": Variant(stopwatch(lambda: run_hamilton(traced, case), expected)),
        "tracing: floor": Variant(lambda: span_floor(floor, n)),
    }
    try:
        return measure(unskipped(variants, skip), mode.max_repeats(n), mode, log)
    finally:
        for provider in (ours, theirs, floor):
            provider.shutdown()


def cache_task(mode: Mode, skip: set[str], log: Log) -> dict[str, Outcome]:
    """Figure 5: uncached runs, then cold runs into an empty directory each repeat, each
    followed by an identical warm run; flowdeco's only once its runs take ``store=``."""
    case = make_case(FEATURE_SHAPE, mode.feature_n)
    n, expected = case.graph.n, case.expected
    pipe = build_flowdeco(case)
    dr = build_hamilton(case)
    with tempfile.TemporaryDirectory() as root:
        current: dict[str, Any] = {}

        def empty_dir() -> str:
            """A new empty directory; the previous repeat's one is removed."""
            if "dir" in current:
                shutil.rmtree(current["dir"])
            current["dir"] = tempfile.mkdtemp(dir=root)
            return current["dir"]

        def flowdeco_cold() -> float:
            current["store"] = fd.FileStore(empty_dir())
            return stopwatch(lambda: run_flowdeco(pipe, case, store=current["store"]), expected)()

        def flowdeco_run() -> Any:
            current["result"] = pipe.run(
                inputs={"x": 1}, outputs=[case.final], store=current["store"]
            )
            return current["result"][case.final]

        def flowdeco_warm() -> float:
            elapsed = stopwatch(flowdeco_run, expected)()
            cached = current.pop("result").counts().get(fd.Status.CACHED, 0)
            if cached != n:
                raise AssertionError(f"warm run: {cached} of {n} nodes cached")
            return elapsed

        def hamilton_cold() -> float:
            cached = driver.Builder().with_modules(case.module).with_cache(path=empty_dir())
            current["driver"] = cached.build()  # not timed: the path is fixed at build
            return hamilton_again()

        def hamilton_again() -> float:
            return stopwatch(lambda: run_hamilton(current["driver"], case), expected)()

        variants = {
            "cache: flowdeco off": Variant(stopwatch(lambda: run_flowdeco(pipe, case), expected)),
            "cache: Hamilton off": Variant(stopwatch(lambda: run_hamilton(dr, case), expected)),
            "cache: Hamilton cold": Variant(hamilton_cold),
            "cache: Hamilton warm": Variant(hamilton_again, after="cache: Hamilton cold"),
        }
        if HAS_STORE:
            variants["cache: flowdeco cold"] = Variant(flowdeco_cold)
            variants["cache: flowdeco warm"] = Variant(flowdeco_warm, after="cache: flowdeco cold")
        return measure(unskipped(variants, skip), mode.max_repeats(n), mode, log)


def memory_task(mode: Mode, skip: set[str], log: Log) -> dict[str, Outcome]:
    """Figure 6: tracemalloc peak while building, and while running once, a deep chain."""
    case = make_case("chain", mode.memory_n)
    made: dict[str, Any] = {}

    def peak(call: Callable[[], Any]) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            call()
            return float(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()

    def building(lib: str) -> Callable[[], float]:
        def keep() -> None:
            made[lib] = BUILDERS[lib](case)

        return lambda: peak(keep)

    def running(lib: str, run: Callable[[Any, Case], Any]) -> Callable[[], float]:
        def check() -> None:
            if run(made[lib], case) != case.expected:
                raise AssertionError("wrong answer")

        return lambda: peak(check)

    variants: dict[str, Variant] = {}
    for key in MEMORY_RUNS:
        lib, run = RUNS[key]
        variants[f"memory: {lib} build"] = Variant(building(lib), warmup=False)
        variants[f"memory: {lib} run"] = Variant(
            running(lib, run), warmup=False, after=f"memory: {lib} build"
        )
    variants["memory: plain calls run"] = Variant(
        lambda: peak(lambda: plain_floor(case.graph, case.funcs, 1)), warmup=False
    )
    warm_up()
    outcomes: dict[str, Outcome] = {}
    for key, variant in unskipped(variants, skip).items():
        if variant.after is not None and (
            variant.after not in outcomes or outcomes[variant.after].error
        ):
            outcomes[key] = Outcome(error=f"not run: needs {variant.after}")
            continue
        outcomes[key] = Outcome()
        sample = attempt(key, variant, outcomes[key], mode.call_budget, log)
        if sample is not None:
            outcomes[key].values.append(sample)
    return outcomes


def child_main(args: argparse.Namespace) -> None:
    """Run one task in this (child) process and log its results for the parent."""
    logging.getLogger("hamilton").setLevel(logging.CRITICAL)  # its failures are our results
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
    signal.signal(signal.SIGALRM, on_alarm)
    mode, skip, log = MODES[args.mode], set(args.skip), Log(Path(args.out))
    if args.child == "graph":
        results = graph_task(make_case(args.shape, args.n), mode, skip, log)
    else:
        tasks = {"io": io_task, "tracing": tracing_task, "cache": cache_task, "memory": memory_task}
        results = tasks[args.child](mode, skip, log)
    log.write({"results": {key: asdict(outcome) for key, outcome in results.items()}})


# -- the parent: one child per task -------------------------------------------------------


def in_child(
    mode: Mode, task: str, *args: str, skip: Mapping[str, str] | None = None
) -> dict[str, Outcome]:
    """Run ``task`` in a fresh process. A variant whose call kills the process (or hangs it
    past the mode's child timeout) is reported as such, and the task is run again without it.
    ``skip``: variants not to run, with the reason the table shows instead."""
    skip = dict(skip or {})
    lost: dict[str, str] = {}
    while True:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "events.jsonl"
            command = [sys.executable, __file__, "--child", task, "--mode", mode.name]
            command += ["--out", str(out), *args]
            for key in [*skip, *lost]:
                command += ["--skip", key]
            try:
                done = subprocess.run(  # the child's stdout (peers' chatter) goes to stderr
                    command, stdout=sys.stderr, check=False, timeout=mode.child_timeout
                )
                why = f"crashed: the process exited with code {done.returncode}"
            except subprocess.TimeoutExpired:
                why = f"killed: the process ran past {mode.child_timeout:g} s"
            lines = out.read_text(encoding="utf-8").splitlines() if out.exists() else []
        events = [json.loads(line) for line in lines]
        if events and "results" in events[-1]:
            results = {key: Outcome(**o) for key, o in events[-1]["results"].items()}
            results.update({key: Outcome(error=e) for key, e in [*skip.items(), *lost.items()]})
            return results
        running = [event["running"] for event in events if "running" in event]
        if not running:
            raise RuntimeError(f"{task} {' '.join(args)}: {why}, before measuring anything")
        lost[running[-1]] = why


def carried_failures(previous: Mapping[str, Outcome], n: int) -> dict[str, str]:
    """Variants that failed on the same shape at the next smaller size (``n``): not run again."""
    carried = {}
    for key, outcome in previous.items():
        if outcome.error is not None:
            kind = outcome.error.split(":")[0]
            carried[key] = (
                outcome.error if kind == "not run" else f"not run: {kind} at {n_label(n)}"
            )
    return carried


@dataclass
class Results:
    """Every outcome of a run of this script, by figure."""

    graphs: dict[tuple[str, int], dict[str, Outcome]]
    io: dict[str, Outcome]
    tracing: dict[str, Outcome]
    cache: dict[str, Outcome]
    memory: dict[str, Outcome]


def run_all(mode: Mode, shapes: Sequence[str], sizes: Sequence[int]) -> Results:
    """Every task, each in its child processes; progress on stderr."""
    graphs: dict[tuple[str, int], dict[str, Outcome]] = {}
    for shape in shapes:
        previous: tuple[int, dict[str, Outcome]] | None = None
        for n in sizes:
            skip = carried_failures(previous[1], previous[0]) if previous else {}
            start = time.perf_counter()
            graphs[shape, n] = in_child(mode, "graph", "--shape", shape, "--n", str(n), skip=skip)
            print(f"  {shape} {n_label(n)}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
            previous = (n, graphs[shape, n])
    found = {}
    for task in ("io", "tracing", "cache", "memory"):
        start = time.perf_counter()
        found[task] = in_child(mode, task)
        print(f"  {task}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return Results(graphs, **found)


# -- report ------------------------------------------------------------------------------


def median(outcome: Outcome | None) -> float | None:
    """The median sample, if there is one."""
    if outcome is None or outcome.error is not None or not outcome.values:
        return None
    return statistics.median(outcome.values)


def cell(outcome: Outcome | None, scale: float = US, unit: str = "") -> str:
    """``median (min-max)`` of the samples times ``scale``, or the failure's kind."""
    if outcome is None:
        return "n/a"
    if outcome.error is not None:
        return outcome.error.split(":")[0]
    return Stat([v * scale for v in outcome.values]).cell() + unit


def quotient(a: float | None, b: float | None) -> float | None:
    """a / b, when both were measured."""
    return None if a is None or b is None or b == 0 else a / b


def times(value: float | None) -> str:
    """A ratio cell."""
    return "n/a" if value is None else f"{value:.2f}x"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A markdown table, the first ``left`` columns left-aligned, the rest right-aligned."""
    align = ["---"] * left + ["---:"] * (len(header) - left)
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def build_table(r: Results) -> str:
    """Figure 1: build time per node, and the first run after a build."""
    builds = [*(f"build: {lib}" for lib in BUILDERS), "build: floor"]
    rows = []
    for (shape, n), o in r.graphs.items():
        ratio = quotient(median(o.get("build: Hamilton")), median(o.get("build: flowdeco")))
        rows.append(
            [shape, n_label(n), *(cell(o.get(key), US / n) for key in builds), times(ratio)]
        )
    first = [
        [shape, n_label(n), *(cell(o.get(f"first run: {lib}"), US / n) for lib in FIRST_RUNS)]
        for (shape, n), o in r.graphs.items()
    ]
    header = ["shape", "nodes", *BUILDERS, "floor: signature + Kahn", "Hamilton / flowdeco"]
    return (
        table(header, rows)
        + "\n\nThe first run after a build, where a library does what its build deferred "
        + "(µs per node):\n\n"
        + table(["shape", "nodes", *FIRST_RUNS], first)
    )


def run_table(r: Results) -> str:
    """Figure 2: run time per node, the peers and then the floors."""
    peers, floors = [], []
    for (shape, n), o in r.graphs.items():
        ours = o.get("run: flowdeco inline")
        ratio = quotient(median(ours), median(o.get("run: Hamilton")))
        peers.append(
            [shape, n_label(n), *(cell(o.get(f"run: {key}"), US / n) for key in RUNS), times(ratio)]
        )
        floors.append(
            [shape, n_label(n), cell(ours, US / n)]
            + [cell(o.get(f"run: {key}"), US / n) for key in FLOORS]
        )
    return (
        table(["shape", "nodes", *RUNS, "flowdeco / Hamilton"], peers)
        + "\n\nAgainst the floors (µs per node):\n\n"
        + table(["shape", "nodes", "flowdeco inline", *FLOORS], floors)
    )


# (library, settings, sync key, async key): figure 3's rows.
IO_ROWS: list[tuple[str, str, str | None, str | None]] = [
    (
        "flowdeco",
        (
            "defaults: `@fd.node` (sync nodes in worker threads, async nodes in the loop; "
            f"concurrency {fd.DEFAULT_CONCURRENCY})"
        ),
        "flowdeco sync",
        "flowdeco async",
    ),
    (
        "flowdeco",
        (
            "defaults with checkpoints written (`store=` a `FileStore`, `cache=False` so the "
            "sleeps run every time); the other rows have `store=None`"
        ),
        "flowdeco sync stored",
        "flowdeco async stored",
    ),
    (
        "Hamilton",
        "defaults: `driver.Builder()` (sequential); async nodes: `async_driver.Builder()`",
        "Hamilton sync",
        "Hamilton async",
    ),
    ("Hamilton", "tuned: `FutureAdapter(max_workers=50)`", "Hamilton sync tuned", None),
    ("pipefunc", 'defaults: `pipeline("n50", x=1)`', "pipefunc sync", "pipefunc async"),
    (
        "pipefunc",
        "tuned: `pipeline.map(inputs, executor=ThreadPoolExecutor(50))`",
        "pipefunc sync tuned",
        None,
    ),
    (
        "dask",
        f"defaults: `final.compute()` (threaded scheduler, {os.cpu_count()} workers)",
        "dask sync",
        "dask async",
    ),
    ("dask", 'tuned: `compute(scheduler="threads", num_workers=50)`', "dask sync tuned", None),
    (
        "floor",
        "anyio task group: `to_thread.run_sync` (50 threads); `anyio.sleep`",
        "floor anyio threads",
        "floor anyio",
    ),
    ("floor", "`asyncio.TaskGroup`; `asyncio.sleep`", None, "floor asyncio"),
]


def io_table(r: Results) -> str:
    """Figure 3: seconds per run of the sleeping nodes and the final one."""
    rows = [
        [lib, settings, *(cell(r.io.get(f"io: {key}"), 1, " s") if key else "-" for key in keys)]
        for lib, settings, *keys in IO_ROWS
    ]
    return table(["library", "settings", "sync nodes (time.sleep)", "async nodes"], rows, 2)


def paired(on: Outcome | None, off: Outcome | None) -> Outcome | None:
    """Per-repeat differences on - off (the repeats were interleaved), or the failure."""
    if on is None or off is None:
        return None
    if on.error or off.error:
        return Outcome(error=on.error or off.error)
    return Outcome([a - b for a, b in zip(on.values, off.values, strict=False)])


def tracing_overheads(r: Results) -> dict[str, Outcome | None]:
    """Tracing overhead per run, flowdeco's and Hamilton's."""
    t = r.tracing
    return {
        lib: paired(t.get(f"tracing: {lib} on"), t.get(f"tracing: {lib} off"))
        for lib in ("flowdeco", "Hamilton")
    }


def tracing_table(r: Results, n: int) -> str:
    """Figure 4: µs per node, off, on, the overhead and the floor."""
    floor = r.tracing.get("tracing: floor")
    rows = [
        [
            lib,
            cell(r.tracing.get(f"tracing: {lib} off"), US / n),
            cell(r.tracing.get(f"tracing: {lib} on"), US / n),
            cell(overhead, US / n),
            cell(floor, US / n),
            times(quotient(median(overhead), median(floor))),
        ]
        for lib, overhead in tracing_overheads(r).items()
    ]
    header = ["library", "tracing off", "tracing on", "overhead (on - off)", "floor: SDK span"]
    return table([*header, "overhead / floor"], rows)


def cache_table(r: Results, n: int) -> str:
    """Figure 5: µs per node without a cache, cold and warm."""
    states = ("off", "cold", "warm")
    rows = []
    for lib in ("flowdeco", "Hamilton"):
        o = {state: r.cache.get(f"cache: {lib} {state}") for state in states}
        if lib == "flowdeco" and not HAS_STORE:
            o["cold"] = o["warm"] = Outcome(error="not available yet: Pipeline.run has no store=")
        ratio = quotient(median(o["warm"]), median(o["off"]))
        rows.append([lib, *(cell(o[state], US / n) for state in states), times(ratio)])
    header = ["library", "no cache", "cold (empty store)", "warm (all cached)", "warm / no cache"]
    return table(header, rows)


def memory_table(r: Results, n: int) -> str:
    """Figure 6: tracemalloc peaks, MiB and bytes per node."""

    def mib(key: str) -> str:
        outcome = r.memory.get(key)
        peak = median(outcome)
        if peak is None:
            return cell(outcome)
        return f"{peak / 2**20:.1f} MiB ({peak / n:,.0f} B/node)"

    libs = (*(RUNS[key][0] for key in MEMORY_RUNS), "plain calls")
    rows = [[lib, mib(f"memory: {lib} build"), mib(f"memory: {lib} run")] for lib in libs]
    return table(["library", "build", "one run"], rows)


def verdict(met: bool | None) -> str:
    """A target's result."""
    return "n/a" if met is None else "met" if met else "**missed**"


def targets(r: Results) -> list[list[str]]:
    """[target, measured, result] rows; every ratio is computed from this run's medians."""
    rows: list[list[str]] = []

    def check(
        label: str,
        figures: dict[str, float | None],
        ok: Callable[[float], bool],
        show: Callable[[float | None], str] = times,
    ) -> None:
        measured = [v for v in figures.values() if v is not None]
        text = "; ".join(f"{k}: {show(v)}" if k else show(v) for k, v in figures.items())
        rows.append(
            [label, text or "not measured", verdict(all(map(ok, measured)) if measured else None)]
        )

    def ratios(shape: str, a: str, b: str, least: int = 0) -> dict[str, float | None]:
        return {
            n_label(n): quotient(median(o.get(a)), median(o.get(b)))
            for (s, n), o in r.graphs.items()
            if s == shape and n >= least
        }

    for shape in SHAPES:
        check(
            f"build ≥ {BUILD_TARGET:g}x faster per node than Hamilton, 1,000+ nodes ({shape})",
            ratios(shape, "build: Hamilton", "build: flowdeco", least=1_000),
            lambda v: v >= BUILD_TARGET,
        )
    for shape in ("chain", "dag"):
        check(
            f"inline run ≤ {RUN_TARGET:g}x Hamilton per node ({shape})",
            ratios(shape, "run: flowdeco inline", "run: Hamilton"),
            lambda v: v <= RUN_TARGET,
        )
    fan = {n: o for (s, n), o in r.graphs.items() if s == "fan"}
    big = max(fan, default=0)
    for key in ("build: flowdeco", "run: flowdeco inline"):
        figures = {}
        if big > 1_000 and 1_000 in fan:
            per_node = (quotient(median(fan[n].get(key)), n) for n in (big, 1_000))
            figures[f"{n_label(big)} / 1,000"] = quotient(*per_node)
        check(
            f"{key.split(':')[0]} linear on the wide fan-in: µs/node at the largest size "
            f"≤ {SCALING_TARGET:g}x at 1,000",
            figures,
            lambda v: v <= SCALING_TARGET,
        )
    for kind, limit in (("sync", SYNC_IO_TARGET_S), ("async", ASYNC_IO_TARGET_S)):
        check(
            f"{SLEEPERS} sleeps of {NAP:g} s, {kind} nodes, defaults: ≤ {limit:g} s",
            {"": median(r.io.get(f"io: flowdeco {kind}"))},
            lambda v, limit=limit: v <= limit,
            lambda v: "n/a" if v is None else f"{v:.3f} s",
        )
    overheads = tracing_overheads(r)
    ours = median(overheads["flowdeco"])
    check(
        f"tracing overhead ≤ {OVERHEAD_TARGET:g}x the raw SDK span floor",
        {"": quotient(ours, median(r.tracing.get("tracing: floor")))},
        lambda v: v <= OVERHEAD_TARGET,
    )
    check(
        f"tracing overhead ≤ {TRACING_VS_HAMILTON:g}x Hamilton's tracer's",
        {"": quotient(ours, median(overheads["Hamilton"]))},
        lambda v: v <= TRACING_VS_HAMILTON,
    )
    warm = (median(r.cache.get(f"cache: {lib} warm")) for lib in ("flowdeco", "Hamilton"))
    check(
        f"warm cache per node ≤ {WARM_CACHE_TARGET:g}x Hamilton's",
        {"": quotient(*warm)},
        lambda v: v <= WARM_CACHE_TARGET,
    )
    return rows


def failures(r: Results) -> str:
    """Every failed measurement with its full message, and where it happened."""
    found: dict[tuple[str, str], list[str]] = {}
    for (shape, n), outcomes in r.graphs.items():
        for key, outcome in outcomes.items():
            if outcome.error is not None:
                found.setdefault((key, outcome.error), []).append(f"{shape} {n_label(n)}")
    for outcomes in (r.io, r.tracing, r.cache, r.memory):
        for key, outcome in outcomes.items():
            if outcome.error is not None:
                found[key, outcome.error] = []
    lines = [
        f"- {key}{' (' + ', '.join(places) + ')' if places else ''}: {error}"
        for (key, error), places in found.items()
    ]
    return "\n".join(lines) or "None."


def report(r: Results, mode: Mode, env: dict[str, str], command: str, seconds: float) -> str:
    """The whole markdown report (also written to a file with ``--write``)."""
    checks = targets(r)
    evaluated = [v for _, _, v in checks if v != "n/a"]
    met = evaluated.count("met")
    env_lines = "\n".join(f"- {key}: {value}" for key, value in env.items())
    repeats = ", ".join(f"{mode.max_repeats(n)} at {n_label(n)}" for n in mode.sizes)
    feature_n = mode.feature_n
    return f"""\
# flowdeco and its peers

How flowdeco compares with [Apache Hamilton](https://github.com/apache/hamilton),
[pipefunc](https://github.com/pipefunc/pipefunc) and [dask](https://www.dask.org/)
(`dask.delayed`) on the same generated graphs, and with hand-written floors, measured by
[`benchmarks/peers.py`](../benchmarks/peers.py). flowdeco against its floors alone, in more
detail: [performance.md](performance.md).

## How to reproduce

```console
.venv/bin/pip install -e '.[bench]'   # the peers: benchmark-only, never flowdeco's dependencies
.venv/bin/python benchmarks/peers.py --quick   # 100 and 1,000 nodes, about a minute
.venv/bin/python benchmarks/peers.py --write docs/performance-peers.md   # this page
```

The figures below come from this command, which took {seconds:.0f} s:

```console
{command}
```

They depend on the machine and on what else runs on it (see the load average below):
compare ratios measured in one run rather than absolute figures across machines.

## What is measured

- **Graphs**: overhead.py's shapes, each ending in one final node whose value is checked
  against plain calls for every library and every run: **chain** (`n0 -> n1 -> ...`),
  **fan** (one source, N-2 middle nodes reading it, one sink reading all of them) and
  **dag** (random layered DAG, seed fixed, whose sinks all feed one extra final node).
  The node functions are generated source, `exec`'d once (not timed); every library gets
  the same functions, Hamilton as a module (`ad_hoc_utils.module_from_source`) with
  `int` type hints added, since it refuses functions without them.
- **Each library its documented way**: flowdeco `fd.Pipeline([fd.node(run_in="inline")(f),
  ...])` and `pipe.run(inputs={{"x": 1}}, outputs=[final], store=None)` (checkpoints off
  where runs take `store=`); Hamilton `driver.Builder().with_modules(module).build()` and
  `dr.execute([final], inputs={{"x": 1}})`; pipefunc
  `Pipeline([pipefunc(output_name=name)(f), ...])` and `pipeline(final, x=1)`, and
  `pipeline.map({{"x": 1}}, parallel=False)`; dask `dask.delayed(f)(*parents)` and
  `final.compute(scheduler="sync" | "threads")`.
- **Floors**: signature reading + Kahn's sort for a build; for a run, plain calls in
  topological order, flowdeco's own async nodes, a raw anyio task group (one task per
  node, started by readiness counts) and a raw `asyncio.TaskGroup` (every task started at
  once, awaiting its parents' futures), the last three on `async def` nodes.
- **Budgets**: each measurement runs in a child process. A call longer than
  {mode.call_budget:g} s is a timeout. Timed repeats per variant: up to {repeats} nodes,
  fewer when they would take more than {mode.variant_budget:g} s in all; runs get an
  untimed warm-up first, builds and first runs are timed from the first. A variant that
  fails at one size is not run at the larger sizes of that shape. Python's recursion
  limit is left at its default. Figures are medians, with (min-max).
- **I/O**: {SLEEPERS} independent nodes that each sleep {NAP} s, feeding one final node;
  seconds per run, with each library's defaults and with settings tuned for it.
- **Tracing**: the {n_label(feature_n)}-node dag, untraced and traced with an OpenTelemetry
  SDK `TracerProvider` (a batch span processor, an exporter that drops spans), one
  provider per library: flowdeco `pipe.run(..., tracer_provider=provider)`, Hamilton
  `OpenTelemetryTracer(tracer=provider.get_tracer(...))` as an adapter. The overhead is
  traced minus untraced time, per repeat. Floor: `start_span(...).end()` of one span per node with a
  parent and flowdeco's attributes (benchmarks/tracing.py's floor).
- **Caching**: the {n_label(feature_n)}-node dag. Cold: a run into an empty directory
  (flowdeco `store=fd.FileStore(dir)`, Hamilton `Builder().with_cache(path=dir)`); warm: an
  identical second run with the same pipeline or driver (flowdeco's is checked to have
  every node cached). One untimed cold and warm pair first.
- **Memory**: `tracemalloc` peak while building, and while running once, a
  {n_label(mode.memory_n)}-deep chain (Python allocations, not RSS).

## Environment

{env_lines}

## Targets

{met} of {len(evaluated)} evaluated targets met.

{table(["target", "measured (ratio of medians)", "result"], checks)}

{NOTES}

## 1. Build (µs per node)

{build_table(r)}

## 2. Run, sync nodes called inline (µs per node)

{run_table(r)}

## 3. I/O concurrency: {SLEEPERS} nodes sleeping {NAP} s each (seconds per run)

{io_table(r)}

## 4. Tracing overhead ({n_label(feature_n)}-node dag, µs per node)

{tracing_table(r, feature_n)}

## 5. Checkpoints and caching ({n_label(feature_n)}-node dag, µs per node)

{cache_table(r, feature_n)}

## 6. Peak memory of a {n_label(mode.memory_n)}-deep chain

{memory_table(r, mode.memory_n)}

## Failures

Cells above show the kind of failure; the full messages:

{failures(r)}
"""


NOTES = """\
Where flowdeco's time goes, and what limits the targets:

- **Build**: decorating is most of it: `@fd.node` reads the parameters from the code object
  (no `inspect.signature`), makes one `Param` per parameter and the frozen `Node`; then
  `fd.Pipeline` indexes names, parents and children and sorts (about 1 µs per node). Tuned
  from 9.7 to about 5 µs per decoration (a slotted error label instead of an attrs one, one
  read of the code flags, no work for absent `inputs=`/`after=`). That puts flowdeco's
  build within about 5% of the floor (reading each signature and sorting), and Hamilton at
  about 4x the floor, so 5x would mean building faster than the floor reads signatures:
  1.5-2 µs per node below today's figure. The next cut would be the attrs `Node` and `Param`
  instances themselves (about 1 µs per node and 0.5 µs per parameter). Sharing one `Param`
  per parameter name was tried and dropped: repeated builds of the same functions (as here)
  would have measured the sharing, not a first build.
- **I/O, sync nodes**: each of the 50 sleepers needs a worker thread; the figure is 0.1 s plus
  starting them, which moves with the machine's load exactly as the raw anyio thread floor
  does (compare the two cells). With checkpoints written, the same run also stores 51
  values on the writer thread.
- **Tracing**: flowdeco's overhead is about 1.3x the SDK's own cost for a span (1.28-1.32x
  across runs on this machine, so the target is met or missed by noise); what is above the
  floor is analysed in [performance.md](performance.md#tracing-overhead).
- **Checkpoints**: the cold figures are mostly the file system creating one file per node
  (see [performance.md](performance.md#checkpoint-overhead) for the floor); Hamilton's cache
  writes more per node (metadata in SQLite as well as the result)."""


def versions() -> dict[str, str]:
    """The peers' versions, and the settings that shape every figure."""
    found = {
        name: importlib.metadata.version(name)
        for name in ("sf-hamilton", "apache-hamilton", "pipefunc", "dask", "opentelemetry-sdk")
    }
    found["Recursion limit"] = f"{sys.getrecursionlimit():,} (the default)"
    found["GC"] = (
        "enabled, default thresholds; what is alive before measuring is frozen (gc.freeze()); "
        "gc.collect() before each timed call"
    )
    return found


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments (or run as a child), measure everything, print and write the report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    speed = parser.add_mutually_exclusive_group()
    speed.add_argument("--quick", action="store_true", help="100 and 1,000 nodes, few repeats")
    speed.add_argument("--smoke", action="store_true", help="100 nodes, one repeat (tests)")
    parser.add_argument("--write", metavar="PATH", help="also write the markdown report here")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--sizes", type=int, nargs="+", help="override the graph sizes")
    for name, kind in (("--child", str), ("--mode", str), ("--out", str), ("--shape", str)):
        parser.add_argument(name, type=kind, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child_main(args)
        return

    mode = MODES["quick" if args.quick else "smoke" if args.smoke else "full"]
    start = time.perf_counter()
    env = {**environment(), **versions()}
    for key, value in env.items():
        print(f"{key}: {value}", file=sys.stderr)
    results = run_all(mode, args.shapes, tuple(args.sizes or mode.sizes))
    env["Load average (1, 5, 15 min)"] += f"; {load_average()} at end"
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python benchmarks/peers.py", *given])
    text = report(results, mode, env, command, time.perf_counter() - start)
    print(text)
    if args.write:
        Path(args.write).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
