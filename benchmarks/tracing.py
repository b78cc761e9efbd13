"""What OpenTelemetry tracing costs per node, against the floor of one SDK span per node.

Run ``python benchmarks/tracing.py [--quick] [--profile]``. Prints the environment and a
markdown report to stdout, progress to stderr.

- **Overhead with an SDK**: a 1,000-node chain of inline nodes, and one of async nodes, run
  with tracing off (the API's default providers: the engine skips tracing) and on (an SDK
  ``TracerProvider`` with a ``BatchSpanProcessor`` and an exporter that drops every span),
  interleaved repeat by repeat. The overhead per node is (on - off) / nodes, per repeat.
  The floor is what the SDK itself charges for a node's span: ``tracer.start_span(name,
  context=run, links=[parent], attributes={...}).end()`` with the attributes flowdeco sets,
  timed over 1,000 spans on the same kind of provider. Target: overhead <= 1.3x the floor.
- **No SDK**: in a fresh process (global providers left at the API's defaults), the same
  chains run with the default providers and with ``tracer_provider=NoOpTracerProvider()``.
  Both take the engine's untraced path; target: within 10%.

Every figure is a median over repeats, with (min-max). ``--profile`` adds where the time
goes: the SDK-side steps flowdeco adds to the floor, one at a time, and ``RunTracer``
driven directly without the engine; then a cProfile of traced runs, by own time.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import importlib.metadata
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link
from overhead import environment as base_environment
from overhead import fmt, put_section

import flowdeco as fd
from flowdeco._core._graph import Graph
from flowdeco._core._tracing import RunTracer, attach, detach

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.sdk.trace import ReadableSpan

NODES = 1_000
OVERHEAD_TARGET = 1.3  # traced - untraced, per node, over the floor
NO_SDK_TARGET = 1.10  # default providers over an explicit NoOpTracerProvider
US = 1e6
KINDS = ("inline", "async")


class NullExporter(SpanExporter):
    """Drops every span: the export path costs nothing but the processor's own work."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def sdk_provider() -> TracerProvider:
    """An SDK provider as ``fd.tracing.setup`` makes one, exporting to nowhere.

    The queue holds a whole run, so that no span is dropped (dropping is cheaper).
    """
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(NullExporter(), max_queue_size=4 * NODES))
    return provider


# -- pipelines -----------------------------------------------------------------------------


def chain(kind: str, n: int = NODES) -> fd.Pipeline:
    """``n0 -> n1 -> ... -> n{n-1}``, each node adding one, as real functions."""
    kw = "async def" if kind == "async" else "def"
    source = f"{kw} n0(x):\n    return x\n" + "".join(
        f"{kw} n{i}(n{i - 1}):\n    return n{i - 1} + 1\n" for i in range(1, n)
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{kind} chain>", "exec"), namespace)  # noqa: S102
    options: dict[str, Any] = {"run_in": "inline"} if kind == "inline" else {}
    return fd.Pipeline(
        [fd.node(**options)(namespace[f"n{i}"]) for i in range(n)], name=kind, store=None
    )


def run(pipe: fd.Pipeline, **providers: Any) -> None:
    """One timed run; checks the answer."""
    result = pipe.run(inputs={"x": 0}, outputs=f"n{NODES - 1}", backend="asyncio", **providers)
    if result[f"n{NODES - 1}"] != NODES - 1:
        raise AssertionError("wrong answer")


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Stat:
    """Per-node microseconds of repeated measurements."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def cell(self) -> str:
        """``median (min-max)``."""
        return f"{fmt(self.median)} ({fmt(min(self.values))}-{fmt(max(self.values))})"


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes, after a collection so garbage from before does not count."""
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def span_floor(provider: TracerProvider, n: int = NODES) -> float:
    """Seconds to start and end ``n`` spans as flowdeco's node spans are: same attributes,
    a link to the previous span, the run span's context; the flush is not timed."""
    tracer = provider.get_tracer("floor")
    code = chain.__code__
    run_span = tracer.start_span("flowdeco.run floor")
    context = trace.set_span_in_context(run_span)
    gc.collect()
    start = time.perf_counter()
    previous: trace.Span | None = None
    for i in range(n):
        links = [] if previous is None else [Link(previous.get_span_context())]
        span = tracer.start_span(
            f"floor.n{i}",  # <pipeline>.<node>
            context=context,
            links=links,
            attributes={
                "code.function.name": f"n{i}",
                "code.file.path": code.co_filename,
                "code.line.number": code.co_firstlineno,
                "flowdeco.pipeline": "floor",
                "flowdeco.run_id": "20240601T000000.000000000Z-00000000",
                "flowdeco.node": f"n{i}",
                "flowdeco.attempts": 1,
                "flowdeco.node.status": "succeeded",
                "flowdeco.cache.hit": False,
            },
        )
        span.end()
        previous = span
    elapsed = time.perf_counter() - start
    run_span.end()
    provider.force_flush()
    return elapsed


@dataclass
class Overhead:
    """One chain: untraced and traced runs, their difference and the floor, per node."""

    kind: str
    off: Stat
    on: Stat
    overhead: Stat  # paired: (on - off) of each repeat
    floor: Stat

    @property
    def ratio(self) -> float:
        return self.overhead.median / self.floor.median


def measure_overhead(kind: str, repeats: int) -> Overhead:
    """Interleave untraced runs, traced runs and the span floor, ``repeats`` times."""
    pipe = chain(kind)
    provider = sdk_provider()
    floor_provider = sdk_provider()
    for _ in range(2):  # warm up: the engine's tables, the SDK's tracer, imports
        run(pipe)
        run(pipe, tracer_provider=provider)
        span_floor(floor_provider)
    off, on, floor = [], [], []
    for _ in range(repeats):
        off.append(timed(lambda: run(pipe)) / NODES * US)
        on.append(timed(lambda: run(pipe, tracer_provider=provider)) / NODES * US)
        floor.append(span_floor(floor_provider) / NODES * US)
    provider.shutdown()
    floor_provider.shutdown()
    paired = [b - a for a, b in zip(off, on, strict=True)]
    return Overhead(kind, Stat(off), Stat(on), Stat(paired), Stat(floor))


def measure_no_sdk(repeats: int) -> dict[str, dict[str, list[float]]]:
    """In this process, with untouched global providers: default vs NoOpTracerProvider."""
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        raise SystemExit("a tracer provider is installed: run this in a fresh process")
    noop = trace.NoOpTracerProvider()
    found: dict[str, dict[str, list[float]]] = {}
    for kind in KINDS:
        pipe = chain(kind)
        for _ in range(2):
            run(pipe)
            run(pipe, tracer_provider=noop)
        default: list[float] = []
        explicit: list[float] = []

        def untraced(pipe: fd.Pipeline = pipe) -> None:
            run(pipe)

        def no_op(pipe: fd.Pipeline = pipe) -> None:
            run(pipe, tracer_provider=noop)

        for _ in range(repeats):
            default.append(timed(untraced) / NODES * US)
            explicit.append(timed(no_op) / NODES * US)
        found[kind] = {"default": default, "noop": explicit}
    return found


def no_sdk_in_fresh_process(repeats: int) -> dict[str, dict[str, list[float]]]:
    done = subprocess.run(
        [sys.executable, __file__, "--no-sdk-child", str(repeats)],
        capture_output=True,
        text=True,
        check=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
    )
    result: dict[str, dict[str, list[float]]] = json.loads(done.stdout)
    return result


def _floor_span(tracer: trace.Tracer, context: Any, previous: Any, i: int, late: bool) -> Any:
    """One node's span as the floor makes it; ``late``: the status set after start."""
    attributes: dict[str, Any] = {
        "code.function.name": f"n{i}",
        "code.file.path": __file__,
        "code.line.number": 1,
        "flowdeco.pipeline": "floor",
        "flowdeco.run_id": "20240601T000000.000000000Z-00000000",
        "flowdeco.node": f"n{i}",
        "flowdeco.attempts": 1,
        "flowdeco.cache.hit": False,
    }
    if not late:
        attributes["flowdeco.node.status"] = "succeeded"
    links = [] if previous is None else [Link(previous.get_span_context())]
    return tracer.start_span(f"floor.n{i}", context=context, links=links, attributes=attributes)


def breakdown(repeats: int) -> list[tuple[str, Stat]]:
    """The SDK-side steps flowdeco adds to the floor, added one at a time, and RunTracer
    driven directly (no engine), in µs per node over a 1,000-span run."""
    provider = sdk_provider()
    tracer = provider.get_tracer("breakdown")

    def spans(late: bool = False, attach: bool = False, flush: bool = False) -> float:
        run_span = tracer.start_span("run")
        context = trace.set_span_in_context(run_span)
        gc.collect()
        start = time.perf_counter()
        previous = None
        for i in range(NODES):
            span = _floor_span(tracer, context, previous, i, late)
            if attach:
                otel_context.detach(otel_context.attach(trace.set_span_in_context(span, context)))
            if late:
                span.set_attribute("flowdeco.node.status", "succeeded")
            span.end()
            previous = span
        run_span.end()
        if flush:
            provider.force_flush()
        elapsed = time.perf_counter() - start
        provider.force_flush()
        return elapsed / NODES * US

    pipe = chain("inline")
    graph = Graph.build(pipe.name, pipe.nodes)

    def run_tracer() -> float:
        gc.collect()
        start = time.perf_counter()
        traced = RunTracer.create(graph, "run", provider)
        assert traced is not None
        traced.start_run()
        for name in pipe.nodes:
            traced.status_changed(name, fd.Status.RUNNING, None)
            token = attach(traced.node_context(name))
            detach(token)
            traced.status_changed(name, fd.Status.SUCCEEDED, None)
        traced.finish_run(None)
        return (time.perf_counter() - start) / NODES * US

    variants: dict[str, Callable[[], float]] = {
        "floor: start_span(all attributes, link).end()": spans,
        "+ status set when the node ends (1 set_attribute)": partial(spans, late=True),
        "+ node context attached and detached": partial(spans, late=True, attach=True),
        "+ force_flush at the end of the run": partial(spans, True, True, True),
        "RunTracer driven directly (hook calls, no engine)": run_tracer,
    }
    for call in variants.values():
        call()
    found: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(repeats):
        for key, call in variants.items():
            found[key].append(call())
    provider.shutdown()
    return [(key, Stat(values)) for key, values in found.items()]


def profile(kind: str, runs: int = 20) -> str:
    """cProfile of traced runs of the chain, the top functions by own time."""
    pipe = chain(kind)
    provider = sdk_provider()
    run(pipe, tracer_provider=provider)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(runs):
        run(pipe, tracer_provider=provider)
    profiler.disable()
    provider.shutdown()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime")
    stats.print_stats(25)
    return out.getvalue()


# -- report --------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    """What the figures were measured on: overhead.py's account, plus the SDK's version."""
    return {
        **base_environment(),
        "opentelemetry-sdk": importlib.metadata.version("opentelemetry-sdk"),
    }


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def report(
    overheads: list[Overhead], no_sdk: dict[str, dict[str, list[float]]], repeats: int
) -> str:
    lines = [
        (
            f"## Tracing overhead with an SDK ({NODES:,}-node chains, µs per node, "
            f"median (min-max) of {repeats})"
        ),
        "",
        (
            "| chain | tracing off | tracing on | overhead (on - off) | floor: one SDK span "
            f"| overhead / floor | target <= {OVERHEAD_TARGET}x |"
        ),
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for o in overheads:
        lines.append(
            f"| {o.kind} | {o.off.cell()} | {o.on.cell()} | {o.overhead.cell()} "
            f"| {o.floor.cell()} | {o.ratio:.2f}x | {verdict(o.ratio <= OVERHEAD_TARGET)} |"
        )
    lines += [
        "",
        f"## No SDK configured (fresh process, {NODES:,}-node chains, µs per node)",
        "",
        (
            "| chain | default providers | tracer_provider=NoOpTracerProvider() "
            f"| default / no-op | target <= {NO_SDK_TARGET:.2f}x |"
        ),
        "|---|---:|---:|---:|---|",
    ]
    for kind, figures in no_sdk.items():
        default, noop = Stat(figures["default"]), Stat(figures["noop"])
        r = default.median / noop.median
        lines.append(
            f"| {kind} | {default.cell()} | {noop.cell()} | {r:.2f}x "
            f"| {verdict(r <= NO_SDK_TARGET)} |"
        )
    return "\n".join(lines)


MARKER = "<!-- benchmarks/tracing.py -->"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (under a minute)")
    parser.add_argument("--profile", action="store_true", help="cProfile traced runs too")
    parser.add_argument(
        "--append",
        metavar="PATH",
        help="also put the report at the end of this markdown file, replacing an earlier one",
    )
    parser.add_argument("--no-sdk-child", type=int, metavar="REPEATS", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.no_sdk_child:
        print(json.dumps(measure_no_sdk(args.no_sdk_child)))
        return

    repeats = 7 if args.quick else 31
    print("## Environment\n")
    for key, value in environment().items():
        print(f"- {key}: {value}")
    print(flush=True)
    overheads = []
    for kind in KINDS:
        start = time.perf_counter()
        overheads.append(measure_overhead(kind, repeats))
        print(f"  {kind}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    start = time.perf_counter()
    no_sdk = no_sdk_in_fresh_process(repeats)
    print(f"  no SDK: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    text = report(overheads, no_sdk, repeats)
    print(text)
    if args.append:
        intro = (
            "From `python benchmarks/tracing.py --append docs/performance.md`, run after "
            "`benchmarks/overhead.py --write` (which rewrites what is above).\n\n"
        )
        put_section(Path(args.append), MARKER, "Tracing overhead", intro + text, environment())
    if args.profile:
        print(f"\n## Where the time goes (µs per node, median (min-max) of {repeats})\n")
        print("| step | µs per node |\n|---|---:|")
        for step, stat in breakdown(repeats):
            print(f"| {step} | {stat.cell()} |")
        for kind in KINDS:
            print(f"\n## Profile: traced {kind} chain, top functions by own time\n")
            print("```\n" + profile(kind).strip() + "\n```")


if __name__ == "__main__":
    main()
