"""OpenTelemetry: the run span, one span per planned node, context, links, metrics.

Every run gets its providers passed explicitly: the global ones can be set only once per
process, and the no-SDK test relies on them being the API's defaults.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conftest import make_node
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import flowdeco as fd
from flowdeco._core._graph import Graph
from flowdeco._core._tracing import (
    FLUSH_SECONDS,
    RunTracer,
    _Watch,
    _watch_flushes,
    _watched_spans,
    _Watches,
)

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from conftest import Kind
    from opentelemetry.sdk.trace import ReadableSpan

RUN_SPAN = "flowdeco.run {}"
NODE_ATTRIBUTES = {
    "flowdeco.pipeline",
    "flowdeco.run_id",
    "flowdeco.node",
    "flowdeco.node.status",
    "flowdeco.cache.hit",
    "flowdeco.cache.reason",
    "flowdeco.cache.manifest",
    "flowdeco.attempts",
    "code.function.name",
    "code.file.path",
    "code.line.number",
}


def _graph_of(pipe: fd.Pipeline) -> Graph:
    """The graph a run of ``pipe`` hands the tracer."""
    return Graph.build(pipe.name, pipe.nodes)


class Telemetry:
    """SDK providers that keep every span and metric of the runs they are passed to."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        self.tracer = self.tracer_provider.get_tracer("user code")

    @property
    def providers(self) -> dict[str, Any]:
        """Keyword arguments for ``run``/``arun``."""
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def run_span(self, pipeline: str = "pipeline") -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.name == RUN_SPAN.format(pipeline)]
        return span

    def node_spans(self) -> dict[str, ReadableSpan]:
        """Node spans by node name; fails if a node has two."""
        spans = [s for s in self.spans() if s.attributes and "flowdeco.node" in s.attributes]
        by_node = {str(s.attributes["flowdeco.node"]): s for s in spans if s.attributes}
        assert len(by_node) == len(spans), f"a node has several spans: {spans}"
        return by_node

    def span(self, name: str) -> ReadableSpan:
        (span,) = [s for s in self.spans() if s.name == name]
        return span

    def metrics(self) -> dict[str, Metric]:
        data = self.reader.get_metrics_data()
        if data is None:
            return {}
        return {
            metric.name: metric
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def points(self, name: str) -> list[Any]:
        metric = self.metrics().get(name)
        return [] if metric is None else list(metric.data.data_points)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    recorded = Telemetry()
    yield recorded
    recorded.shutdown()


def _status(span: ReadableSpan) -> str:
    assert span.attributes is not None
    return str(span.attributes["flowdeco.node.status"])


def _span_name(pipeline: str, node: str, status: str = "succeeded") -> str:
    """A node span's name: ``<pipeline>.<node>``, with the status of a node that did not
    run to its end: ``orders.load (cached)``."""
    marked = status in ("cached", "skipped", "cancelled")
    return f"{pipeline}.{node} ({status})" if marked else f"{pipeline}.{node}"


def _event_names(span: ReadableSpan) -> list[str]:
    return [event.name for event in span.events]


def _assert_tree(telemetry: Telemetry, pipeline: str, nodes: set[str], user_spans: int = 0) -> None:
    """Exactly one run span, and one child span for each of ``nodes``, in one trace.

    ``user_spans`` is how many other spans (opened by the test) there are.
    """
    run = telemetry.run_span(pipeline)
    node_spans = telemetry.node_spans()
    assert set(node_spans) == nodes
    assert len(telemetry.spans()) == len(nodes) + 1 + user_spans
    for name, span in node_spans.items():
        assert span.name == _span_name(pipeline, name, _status(span))
        assert span.parent is not None, f"{name} has no parent"
        assert span.parent.span_id == run.context.span_id, f"{name} is not under the run span"
        assert span.context.trace_id == run.context.trace_id


# -- pipelines ----------------------------------------------------------------------------


def _diamond(kind: Kind = "inline", name: str = "pipeline") -> fd.Pipeline:
    """``root -> left, right -> join``, every node of one kind."""

    def root(x: int) -> int:
        return x

    def left(root: int) -> int:
        return root + 1

    def right(root: int) -> int:
        return root + 2

    def join(left: int, right: int) -> int:
        return left + right

    return fd.Pipeline(
        [make_node(kind, f, name=f.__name__) for f in (root, left, right, join)], name=name
    )


def _chain(n: int) -> fd.Pipeline:
    """``n0 -> n1 -> ...``: inline nodes adding one."""
    nodes = [fd.node(name="n0", run_in="inline")(lambda x: x)]
    nodes += [
        fd.node(name=f"n{i}", inputs={"v": f"n{i - 1}"}, run_in="inline")(lambda v: v + 1)
        for i in range(1, n)
    ]
    return fd.Pipeline(nodes, name="chain")


DIAMOND = {"root", "left", "right", "join"}


class TestRunSpan:
    @pytest.mark.anyio
    async def test_one_span_per_planned_node_under_the_run_span(
        self, kind: Kind, telemetry: Telemetry
    ) -> None:
        result = await _diamond(kind, name="shapes").arun({"x": 1}, **telemetry.providers)
        assert result["join"] == 5
        _assert_tree(telemetry, "shapes", DIAMOND)
        run = telemetry.run_span("shapes")
        assert run.parent is None
        assert run.attributes == {
            "flowdeco.pipeline": "shapes",
            "flowdeco.run_id": result.run_id,
            "flowdeco.run.failed": 0,
            "flowdeco.run.skipped": 0,
            "flowdeco.run.cached": 0,
        }
        assert run.status.status_code is StatusCode.OK
        assert {_status(s) for s in telemetry.node_spans().values()} == {"succeeded"}

    def test_sync_run_on_each_backend(self, backend: str, telemetry: Telemetry) -> None:
        _diamond("thread").run({"x": 1}, backend=backend, **telemetry.providers)
        _assert_tree(telemetry, "pipeline", DIAMOND)

    def test_run_span_covers_its_nodes(self, telemetry: Telemetry) -> None:
        _diamond("thread").run({"x": 1}, **telemetry.providers)
        run = telemetry.run_span()
        assert run.start_time is not None
        assert run.end_time is not None
        for span in telemetry.node_spans().values():
            assert span.start_time is not None
            assert span.end_time is not None
            assert run.start_time <= span.start_time <= span.end_time <= run.end_time

    def test_only_planned_nodes_get_spans(self, telemetry: Telemetry) -> None:
        pipe = _diamond()
        pipe.run({"x": 1}, outputs="left", **telemetry.providers)
        _assert_tree(telemetry, "pipeline", {"root", "left"})
        telemetry.exporter.clear()
        pipe.run({"left": 10, "right": 20}, outputs="join", **telemetry.providers)
        _assert_tree(telemetry, "pipeline", {"join"})

    def test_each_run_is_its_own_trace(self, telemetry: Telemetry) -> None:
        pipe = _diamond()
        first = pipe.run({"x": 1}, **telemetry.providers)
        second = pipe.run({"x": 1}, **telemetry.providers)
        runs = [s for s in telemetry.spans() if s.name == RUN_SPAN.format("pipeline")]
        assert len(runs) == 2
        assert runs[0].context.trace_id != runs[1].context.trace_id
        assert {r.attributes["flowdeco.run_id"] for r in runs if r.attributes} == {
            first.run_id,
            second.run_id,
        }
        assert len(telemetry.spans()) == 2 * (len(DIAMOND) + 1)

    def test_a_long_chain_has_a_span_per_node(self, telemetry: Telemetry) -> None:
        _chain(300).run({"x": 0}, **telemetry.providers)
        _assert_tree(telemetry, "chain", {f"n{i}" for i in range(300)})

    def test_pipeline_providers_apply_and_a_run_overrides_them(self, telemetry: Telemetry) -> None:
        other = Telemetry()
        try:
            pipe = fd.Pipeline(
                _diamond().nodes.values(),
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            )
            pipe.run({"x": 1})
            _assert_tree(telemetry, "pipeline", DIAMOND)
            assert telemetry.points("flowdeco.run.duration")
            pipe.run({"x": 1}, **other.providers)
            assert len(telemetry.spans()) == len(DIAMOND) + 1
            _assert_tree(other, "pipeline", DIAMOND)
        finally:
            other.shutdown()

    @pytest.mark.anyio
    async def test_concurrent_runs_are_separate_traces(self, telemetry: Telemetry) -> None:
        pipe = _diamond("async")
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(partial(pipe.arun, {"x": 1}, **telemetry.providers))
        runs = [s for s in telemetry.spans() if s.name == RUN_SPAN.format("pipeline")]
        assert len({r.context.trace_id for r in runs}) == 3
        for run in runs:
            children = [
                s for s in telemetry.spans() if s.parent and s.parent.span_id == run.context.span_id
            ]
            assert sorted(s.name for s in children) == sorted(
                _span_name("pipeline", n) for n in DIAMOND
            )


class TestWithoutSdk:
    def test_the_global_default_records_nothing_and_runs(self) -> None:
        # Precondition: nobody installed an SDK in this process (setup() runs in subprocesses).
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        assert RunTracer.create(_graph_of(_diamond()), "run") is None
        seen: list[bool] = []

        @fd.node(run_in="inline")
        def probe(x: int) -> int:
            seen.append(trace.get_current_span().is_recording())
            return x

        assert fd.Pipeline([probe]).run({"x": 3})["probe"] == 3
        assert seen == [False]

    def test_a_no_op_tracer_provider_records_nothing(self) -> None:
        assert (
            RunTracer.create(
                _graph_of(_diamond()), "run", tracer_provider=trace.NoOpTracerProvider()
            )
            is None
        )
        result = _diamond("async").run({"x": 1}, tracer_provider=trace.NoOpTracerProvider())
        assert result["join"] == 5


class TestNodeSpans:
    def test_attributes(self, telemetry: Telemetry) -> None:
        pipe = _diamond("thread", name="attrs")
        result = pipe.run({"x": 1}, **telemetry.providers)
        spans = telemetry.node_spans()
        for name, spec in pipe.nodes.items():
            attributes = dict(spans[name].attributes or {})
            assert set(attributes) == NODE_ATTRIBUTES, name
            code = spec.func.__code__
            manifest = attributes.pop("flowdeco.cache.manifest")
            own = f"{spec.func.__module__}.{spec.func.__qualname__}="
            assert isinstance(manifest, tuple) and any(m.startswith(own) for m in manifest)
            inputs = {m.partition("=")[0] for m in manifest if m.startswith("@")}
            assert inputs == {f"@{p.name}" for p in spec.params}, name
            assert attributes == {
                "flowdeco.pipeline": "attrs",
                "flowdeco.run_id": result.run_id,
                "flowdeco.node": name,
                "flowdeco.node.status": "succeeded",
                "flowdeco.cache.hit": False,
                "flowdeco.cache.reason": "not stored",
                "flowdeco.attempts": 1,
                "code.function.name": spec.func.__qualname__,
                "code.file.path": __file__,
                "code.line.number": code.co_firstlineno,
            }
            assert spans[name].kind is trace.SpanKind.INTERNAL

    def test_input_and_output_values_are_not_recorded(self, telemetry: Telemetry) -> None:
        secret = "hunter2-do-not-record"

        @fd.node(run_in="inline")
        def login(password: str) -> str:
            return password.upper()

        @fd.node
        async def session(login: str) -> str:
            return login + secret

        fd.Pipeline([login, session]).run({"password": secret}, **telemetry.providers)
        recorded = []
        for span in telemetry.spans():
            recorded += [span.name, *map(str, (span.attributes or {}).values())]
            for event in span.events:
                recorded += [event.name, *map(str, (event.attributes or {}).values())]
        assert len(telemetry.node_spans()) == 2
        assert not [value for value in recorded if secret.lower() in value.lower()]

    def test_a_failed_node_records_the_exception(self, telemetry: Telemetry) -> None:
        @fd.node(run_in="inline")
        def broken(x: int) -> int:
            raise ValueError("no good")

        with pytest.raises(fd.NodeFailed):
            fd.Pipeline([broken]).run({"x": 1}, **telemetry.providers)
        span = telemetry.node_spans()["broken"]
        assert _status(span) == "failed"
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: no good"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes is not None
        assert event.attributes["exception.type"] == "ValueError"
        assert event.attributes["exception.message"] == "no good"
        run = telemetry.run_span()
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "node 'broken' failed: ValueError: no good"
        assert run.attributes is not None
        assert run.attributes["flowdeco.run.failed"] == 1
        assert run.attributes["flowdeco.run.failed_nodes"] == ("broken",)

    def test_retries_are_events_and_attempts_count(self, kind: Kind, telemetry: Telemetry) -> None:
        calls = 0

        def flaky(x: int) -> int:
            nonlocal calls
            calls += 1
            if calls <= 2:
                raise KeyError(f"attempt {calls}")
            return x

        spec = make_node(kind, flaky, name="flaky", retries=2, retry_delay=0)
        assert fd.Pipeline([spec]).run({"x": 7}, **telemetry.providers)["flaky"] == 7
        span = telemetry.node_spans()["flaky"]
        assert _status(span) == "succeeded"
        assert span.attributes is not None
        assert span.attributes["flowdeco.attempts"] == 3
        assert _event_names(span) == ["retry", "retry"]
        for attempt, event in enumerate(span.events, start=1):
            assert event.attributes is not None
            assert event.attributes["flowdeco.attempt"] == attempt
            assert event.attributes["exception.type"] == "KeyError"
            assert event.attributes["flowdeco.retry.delay"] == 0.0

    def test_retries_exhausted(self, telemetry: Telemetry) -> None:
        @fd.node(run_in="inline", retries=2, retry_delay=0)
        def hopeless(x: int) -> int:
            raise OSError("down")

        with pytest.raises(fd.NodeFailed):
            fd.Pipeline([hopeless]).run({"x": 1}, **telemetry.providers)
        span = telemetry.node_spans()["hopeless"]
        assert _status(span) == "failed"
        assert span.attributes is not None
        assert span.attributes["flowdeco.attempts"] == 3
        assert _event_names(span) == ["retry", "retry", "exception"]
        assert span.status.status_code is StatusCode.ERROR

    def test_links_follow_the_dag_edges(self, kind: Kind, telemetry: Telemetry) -> None:
        pipe = _diamond(kind)
        pipe.run({"x": 1}, **telemetry.providers)
        spans = telemetry.node_spans()
        for name, span in spans.items():
            linked = {(link.context.trace_id, link.context.span_id) for link in span.links}
            parents = {
                (spans[p].context.trace_id, spans[p].context.span_id)
                for p in pipe.upstream(name, direct=True)
            }
            assert linked == parents, name
        assert len(spans["join"].links) == 2
        assert not spans["root"].links

    def test_an_after_edge_is_a_link_too(self, telemetry: Telemetry) -> None:
        @fd.node(run_in="inline")
        def first() -> None:
            return None

        @fd.node(run_in="inline", after=[first])
        def second() -> int:
            return 2

        fd.Pipeline([first, second]).run(**telemetry.providers)
        spans = telemetry.node_spans()
        assert [link.context.span_id for link in spans["second"].links] == [
            spans["first"].context.span_id
        ]

    def test_a_cached_node_gets_a_zero_length_span(self, telemetry: Telemetry) -> None:
        # Driven as the engine drives it, to put a cached node before one that runs.
        pipe = fd.Pipeline(_diamond().nodes.values(), name="cache")
        tracer = RunTracer.create(_graph_of(pipe), "run-1", **telemetry.providers)
        assert tracer is not None
        tracer.start_run()
        tracer.status_changed("root", fd.Status.CACHED, None)
        tracer.status_changed("left", fd.Status.RUNNING, None)
        tracer.status_changed("left", fd.Status.SUCCEEDED, None)
        tracer.finish_run(None)
        spans = telemetry.node_spans()
        _assert_tree(telemetry, "cache", {"root", "left"})
        root = spans["root"]
        assert root.name == "cache.root (cached)"
        assert root.attributes is not None
        assert root.attributes["flowdeco.node.status"] == "cached"
        assert root.attributes["flowdeco.cache.hit"] is True
        assert "flowdeco.attempts" not in root.attributes  # it never ran
        assert root.status.status_code is StatusCode.UNSET
        assert root.start_time is not None
        assert root.end_time is not None
        assert root.end_time - root.start_time == 1  # ns: Jaeger warns about a span of 0
        assert spans["left"].start_time is not None
        assert root.end_time <= spans["left"].start_time
        assert [link.context.span_id for link in spans["left"].links] == [root.context.span_id]
        runs = {
            (p.attributes["flowdeco.node"], p.attributes["flowdeco.outcome"]): p.value
            for p in telemetry.points("flowdeco.node.runs")
        }
        assert runs == {("root", "cached"): 1, ("left", "succeeded"): 1}
        assert [p.value for p in telemetry.points("flowdeco.node.active")] == [0]
        durations = telemetry.points("flowdeco.node.duration")
        assert [p.attributes["flowdeco.node"] for p in durations] == ["left"]

    def test_cached_nodes_are_named_so_and_have_no_attempts(self, telemetry: Telemetry) -> None:
        pipe = _diamond("thread", name="reuse")
        pipe.run({"x": 1}, **telemetry.providers)
        telemetry.exporter.clear()
        result = pipe.run({"x": 1}, **telemetry.providers)
        assert set(result.status.values()) == {fd.Status.CACHED}
        _assert_tree(telemetry, "reuse", DIAMOND)
        for name, span in telemetry.node_spans().items():
            assert span.name == f"reuse.{name} (cached)"
            assert span.attributes is not None
            assert span.attributes["flowdeco.cache.hit"] is True
            assert "flowdeco.attempts" not in span.attributes, name
        run = telemetry.run_span("reuse")
        assert run.attributes is not None
        assert run.attributes["flowdeco.run.cached"] == len(DIAMOND)
        assert run.status.status_code is StatusCode.OK

    def test_operation_names_tell_pipelines_apart_and_not_runs(self, telemetry: Telemetry) -> None:
        # One service, two pipelines with the same node names: Jaeger's Operation list
        # shows each pipeline's nodes apart, and the same few names for every run.
        for name in ("daily", "hourly", "daily"):
            _diamond(name=name).run({"x": 1}, cache=False, **telemetry.providers)
        names = {span.name for span in telemetry.spans()}
        assert names == {
            *(f"flowdeco.run {p}" for p in ("daily", "hourly")),
            *(f"{p}.{n}" for p in ("daily", "hourly") for n in DIAMOND),
        }


def _failing_run(release: threading.Event) -> tuple[fd.Pipeline, threading.Event, anyio.Event]:
    """``bad`` fails while ``slow`` (async) and ``blocked`` (thread) run; ``bad_child`` waits.

    Returns the pipeline and events set once ``blocked`` and ``slow`` have started.
    """
    blocked_started = threading.Event()
    slow_started = anyio.Event()

    @fd.node(run_in="thread")
    def blocked(x: int) -> int:
        blocked_started.set()
        release.wait(10)
        return x

    @fd.node
    async def slow(x: int) -> int:
        slow_started.set()
        await anyio.sleep(10)
        return x

    @fd.node
    async def bad(x: int) -> int:
        await slow_started.wait()
        while not blocked_started.is_set():
            await anyio.sleep(0.005)
        raise ValueError("bad")

    @fd.node(run_in="inline")
    def bad_child(bad: int) -> int:
        return bad

    @fd.node(run_in="inline")
    def slow_child(slow: int) -> int:
        return slow

    @fd.node(run_in="inline")
    def quick(x: int) -> int:
        return x

    pipe = fd.Pipeline([blocked, slow, bad, bad_child, slow_child, quick], name="outcomes")
    return pipe, blocked_started, slow_started


@pytest.mark.anyio
class TestOutcomes:
    """How runs that fail, skip or are cancelled show in the trace."""

    async def test_failure_cancels_running_nodes_and_never_started_ones_have_no_span(
        self, telemetry: Telemetry, release: threading.Event
    ) -> None:
        pipe, _, _ = _failing_run(release)
        with pytest.raises(fd.NodeFailed):
            await pipe.arun({"x": 1}, **telemetry.providers)
        # bad_child and slow_child never started: the run stopped first.
        _assert_tree(telemetry, "outcomes", {"blocked", "slow", "bad", "quick"})
        spans = telemetry.node_spans()
        statuses = {name: _status(span) for name, span in spans.items()}
        assert statuses == {
            "blocked": "cancelled",
            "slow": "cancelled",
            "bad": "failed",
            "quick": "succeeded",
        }
        for name in ("blocked", "slow"):
            assert _event_names(spans[name]) == ["cancelled"], name
        assert _event_names(spans["bad"]) == ["exception"]
        assert spans["blocked"].name == "outcomes.blocked (cancelled)"
        run = telemetry.run_span("outcomes")
        assert run.status.status_code is StatusCode.ERROR
        assert run.status.description == "node 'bad' failed: ValueError: bad"
        assert run.attributes is not None
        assert run.attributes["flowdeco.run.failed_nodes"] == ("bad",)

    async def test_continue_gives_skipped_nodes_zero_length_spans(
        self, telemetry: Telemetry
    ) -> None:
        @fd.node
        async def bad(x: int) -> int:
            await anyio.sleep(0.01)
            raise ValueError("bad")

        @fd.node(run_in="thread")
        def child(bad: int) -> int:
            return bad

        @fd.node
        async def grandchild(child: int) -> int:
            return child

        @fd.node(run_in="inline")
        def fine(x: int) -> int:
            return x

        pipe = fd.Pipeline([bad, child, grandchild, fine], name="skips")
        result = await pipe.arun({"x": 1}, on_error="continue", **telemetry.providers)
        assert result.status["grandchild"] is fd.Status.SKIPPED
        _assert_tree(telemetry, "skips", {"bad", "child", "grandchild", "fine"})
        spans = telemetry.node_spans()
        assert {n: _status(s) for n, s in spans.items()} == {
            "bad": "failed",
            "child": "skipped",
            "grandchild": "skipped",
            "fine": "succeeded",
        }
        bad_end = spans["bad"].end_time
        assert bad_end is not None
        for name in ("child", "grandchild"):
            span = spans[name]
            assert span.start_time is not None
            assert span.end_time is not None
            assert span.start_time >= bad_end, f"{name} started before its ancestor failed"
            assert span.end_time - span.start_time < 50_000_000, f"{name} is not zero-length"
            assert span.status.status_code is StatusCode.UNSET
            assert not span.events
            assert span.attributes is not None
            assert span.attributes["flowdeco.cache.hit"] is False
            assert "flowdeco.attempts" not in span.attributes, f"{name} never ran"
            assert span.name == f"skips.{name} (skipped)"
        assert [link.context.span_id for link in spans["child"].links] == [
            spans["bad"].context.span_id
        ]
        assert [link.context.span_id for link in spans["grandchild"].links] == [
            spans["child"].context.span_id
        ]
        run = telemetry.run_span("skips")
        assert run.attributes is not None
        assert run.attributes["flowdeco.run.failed"] == 1
        assert run.attributes["flowdeco.run.skipped"] == 2
        assert run.attributes["flowdeco.run.failed_nodes"] == ("bad",)

    async def test_a_skipped_node_links_to_a_parent_that_started_after_it_was_skipped(
        self, telemetry: Telemetry
    ) -> None:
        @fd.node(run_in="inline")
        def bad(x: int) -> int:
            raise ValueError("bad")

        @fd.node
        async def first(x: int) -> int:
            await anyio.sleep(0.02)  # bad fails, and child is skipped, meanwhile
            return x

        @fd.node(run_in="inline")
        def late(first: int) -> int:
            return first

        @fd.node(run_in="inline")
        def child(bad: int, late: int) -> int:
            return bad + late

        pipe = fd.Pipeline([bad, first, late, child], name="late")
        await pipe.arun({"x": 1}, on_error="continue", **telemetry.providers)
        spans = telemetry.node_spans()
        assert spans["late"].start_time is not None
        assert spans["child"].start_time is not None
        assert spans["child"].start_time < spans["late"].start_time  # skipped before
        linked = {link.context.span_id for link in spans["child"].links}
        assert linked == {spans["bad"].context.span_id, spans["late"].context.span_id}

    async def test_continue_with_failures_is_an_ok_run(self, telemetry: Telemetry) -> None:
        # The run returned: only its failed node is an error, or Jaeger counts two.
        @fd.node(run_in="inline")
        def bad(x: int) -> int:
            raise ValueError("bad")

        await fd.Pipeline([bad], name="ok").arun(
            {"x": 1}, on_error="continue", **telemetry.providers
        )
        assert telemetry.run_span("ok").status.status_code is StatusCode.OK

    async def test_the_run_span_is_an_error_only_if_the_run_raised(
        self, telemetry: Telemetry
    ) -> None:
        # The engine's side, driven directly: finish_run() gets what the run raises.
        pipe = fd.Pipeline(_diamond().nodes.values(), name="status")
        for raised in (None, ValueError("bad")):
            tracer = RunTracer.create(_graph_of(pipe), "run", **telemetry.providers)
            assert tracer is not None
            tracer.start_run()
            tracer.status_changed("root", fd.Status.CACHED, None)
            tracer.status_changed("left", fd.Status.RUNNING, None)
            tracer.status_changed("left", fd.Status.FAILED, raised or ValueError("left"))
            tracer.status_changed("join", fd.Status.SKIPPED, None)
            tracer.status_changed("right", fd.Status.RUNNING, None)
            tracer.status_changed("right", fd.Status.SUCCEEDED, None)
            tracer.finish_run(raised)
        returned, failed = [s for s in telemetry.spans() if s.name == "flowdeco.run status"]
        assert returned.status.status_code is StatusCode.OK
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "node 'left' failed: ValueError: bad"
        for run in (returned, failed):
            assert run.attributes is not None
            assert {k: v for k, v in run.attributes.items() if k.startswith("flowdeco.run.")} == {
                "flowdeco.run.failed": 1,
                "flowdeco.run.skipped": 1,
                "flowdeco.run.cached": 1,
                "flowdeco.run.failed_nodes": ("left",),
            }

    async def test_cancelled_from_outside(
        self, telemetry: Telemetry, release: threading.Event
    ) -> None:
        blocked_started = threading.Event()
        slow_started = anyio.Event()

        @fd.node(run_in="thread")
        def blocked(x: int) -> int:
            blocked_started.set()
            release.wait(10)
            return x

        @fd.node
        async def slow(x: int) -> int:
            slow_started.set()
            await anyio.sleep(10)
            return x

        @fd.node(run_in="inline")
        def after_slow(slow: int) -> int:
            return slow

        @fd.node(run_in="inline")
        def quick(x: int) -> int:
            return x

        async def expire_once_both_run(scope: anyio.CancelScope) -> None:
            await slow_started.wait()
            while not blocked_started.is_set():
                await anyio.sleep(0.005)
            scope.deadline = anyio.current_time()

        pipe = fd.Pipeline([blocked, slow, after_slow, quick], name="cancel")
        with anyio.move_on_after(10) as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(expire_once_both_run, scope)
                await pipe.arun({"x": 1}, **telemetry.providers)
        assert scope.cancelled_caught
        _assert_tree(telemetry, "cancel", {"blocked", "slow", "quick"})
        spans = telemetry.node_spans()
        assert {n: _status(s) for n, s in spans.items()} == {
            "blocked": "cancelled",
            "slow": "cancelled",
            "quick": "succeeded",
        }
        for name in ("blocked", "slow"):
            assert _event_names(spans[name]) == ["cancelled"], name
        assert telemetry.run_span("cancel").end_time is not None


#: Spans the nodes of TestContext's pipeline open, and the node each must nest under.
USER_SPANS = {
    "user in_thread": "in_thread",
    "user in_loop": "in_loop",
    "user in_loop again": "in_loop",
    "user inline": "inline",
    "user retried_inline": "retried_inline",
}


class TestContext:
    """Node spans hang under the run span; user spans hang under the node that opened them."""

    @staticmethod
    def _nesting_pipeline(telemetry: Telemetry) -> fd.Pipeline:
        tracer = telemetry.tracer

        @fd.node(run_in="thread")
        def in_thread(x: int) -> int:
            with tracer.start_as_current_span("user in_thread"):
                return x

        @fd.node
        async def in_loop(x: int) -> int:
            with tracer.start_as_current_span("user in_loop"):
                await anyio.sleep(0.01)  # other nodes run meanwhile
            with tracer.start_as_current_span("user in_loop again"):
                return x

        @fd.node(run_in="inline")
        def inline(in_thread: int, in_loop: int) -> int:
            with tracer.start_as_current_span("user inline"):
                return in_thread + in_loop

        @fd.node(run_in="inline", retries=1, retry_delay=0)
        def retried_inline(inline: int) -> int:
            with tracer.start_as_current_span("user retried_inline"):
                return inline

        return fd.Pipeline([in_thread, in_loop, inline, retried_inline])

    def _assert_nested(self, telemetry: Telemetry, outer: ReadableSpan) -> None:
        run = telemetry.run_span()
        assert run.parent is not None
        assert run.parent.span_id == outer.context.span_id, "the run is not under the caller"
        _assert_tree(telemetry, "pipeline", set(USER_SPANS.values()), len(USER_SPANS) + 1)
        nodes = telemetry.node_spans()
        for user, node in USER_SPANS.items():
            span = telemetry.span(user)
            assert span.parent is not None
            assert span.parent.span_id == nodes[node].context.span_id, f"{user} not under {node}"

    def _outer(self, telemetry: Telemetry) -> Any:
        return telemetry.tracer.start_as_current_span("user outer")

    @pytest.mark.anyio
    async def test_arun(self, telemetry: Telemetry) -> None:
        pipe = self._nesting_pipeline(telemetry)
        with self._outer(telemetry) as outer:
            await pipe.arun({"x": 1}, **telemetry.providers)
            assert trace.get_current_span() is outer, "the run left its context current"
        self._assert_nested(telemetry, telemetry.span("user outer"))

    def test_sync_run(self, backend: str, telemetry: Telemetry) -> None:
        pipe = self._nesting_pipeline(telemetry)
        with self._outer(telemetry) as outer:
            pipe.run({"x": 1}, backend=backend, **telemetry.providers)
            assert trace.get_current_span() is outer
        self._assert_nested(telemetry, telemetry.span("user outer"))

    @pytest.mark.anyio
    async def test_sync_run_inside_a_running_event_loop(
        self, anyio_backend: str, telemetry: Telemetry
    ) -> None:
        pipe = self._nesting_pipeline(telemetry)
        with self._outer(telemetry) as outer:
            pipe.run({"x": 1}, backend=anyio_backend, **telemetry.providers)  # its own thread
            assert trace.get_current_span() is outer
        self._assert_nested(telemetry, telemetry.span("user outer"))

    def test_inline_run_without_an_event_loop(self, telemetry: Telemetry) -> None:
        tracer = telemetry.tracer

        @fd.node(run_in="inline")
        def first(x: int) -> int:
            with tracer.start_as_current_span("user first"):
                return x

        @fd.node(run_in="inline")
        def second(first: int) -> int:
            with tracer.start_as_current_span("user second"):
                return first

        with tracer.start_as_current_span("user outer") as outer:
            fd.Pipeline([first, second]).run({"x": 1}, **telemetry.providers)
            assert trace.get_current_span() is outer
        run = telemetry.run_span()
        assert run.parent is not None
        assert run.parent.span_id == telemetry.span("user outer").context.span_id
        nodes = telemetry.node_spans()
        for node in ("first", "second"):
            assert nodes[node].parent is not None
            assert nodes[node].parent.span_id == run.context.span_id
            user = telemetry.span(f"user {node}")
            assert user.parent is not None
            assert user.parent.span_id == nodes[node].context.span_id

    @pytest.mark.anyio
    async def test_a_failed_run_restores_the_callers_context(self, telemetry: Telemetry) -> None:
        @fd.node
        async def broken(x: int) -> int:
            raise ValueError("broken")

        with telemetry.tracer.start_as_current_span("user outer") as outer:
            with pytest.raises(fd.NodeFailed):
                await fd.Pipeline([broken]).arun({"x": 1}, **telemetry.providers)
            assert trace.get_current_span() is outer

    @pytest.mark.anyio
    async def test_the_node_span_is_current_in_its_body(self, telemetry: Telemetry) -> None:
        seen: dict[str, int] = {}

        @fd.node(run_in="thread")
        def in_thread(x: int) -> int:
            seen["in_thread"] = trace.get_current_span().get_span_context().span_id
            return x

        @fd.node
        async def in_loop(in_thread: int) -> int:
            seen["in_loop"] = trace.get_current_span().get_span_context().span_id
            return in_thread

        await fd.Pipeline([in_thread, in_loop]).arun({"x": 1}, **telemetry.providers)
        nodes = telemetry.node_spans()
        assert seen == {name: span.context.span_id for name, span in nodes.items()}


def _by_attributes(points: list[Any]) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(p.attributes.items()): p for p in points}


class TestMetrics:
    def test_instruments(self, telemetry: Telemetry) -> None:
        _diamond("async").run({"x": 1}, **telemetry.providers)
        metrics = telemetry.metrics()
        assert set(metrics) == {
            "flowdeco.node.duration",
            "flowdeco.node.runs",
            "flowdeco.run.duration",
            "flowdeco.node.active",
        }
        for name in ("flowdeco.node.duration", "flowdeco.run.duration"):
            metric = metrics[name]
            assert metric.unit == "s"
            assert isinstance(metric.data, Histogram)
            for point in metric.data.data_points:
                assert isinstance(point, HistogramDataPoint)
                assert tuple(point.explicit_bounds) == fd.tracing.DURATION_BUCKETS
        runs = metrics["flowdeco.node.runs"].data
        assert isinstance(runs, Sum)
        assert runs.is_monotonic
        active = metrics["flowdeco.node.active"].data
        assert isinstance(active, Sum)
        assert not active.is_monotonic

    def test_values_after_a_run(self, telemetry: Telemetry) -> None:
        _diamond("thread", name="values").run({"x": 1}, **telemetry.providers)
        durations = _by_attributes(telemetry.points("flowdeco.node.duration"))
        assert set(durations) == {
            frozenset({("flowdeco.pipeline", "values"), ("flowdeco.node", n)}) for n in DIAMOND
        }
        assert all(p.count == 1 and p.sum >= 0 for p in durations.values())
        runs = _by_attributes(telemetry.points("flowdeco.node.runs"))
        assert set(runs) == {
            frozenset(
                {
                    ("flowdeco.pipeline", "values"),
                    ("flowdeco.node", n),
                    ("flowdeco.outcome", "succeeded"),
                }
            )
            for n in DIAMOND
        }
        assert all(p.value == 1 for p in runs.values())
        (run,) = telemetry.points("flowdeco.run.duration")
        assert dict(run.attributes) == {"flowdeco.pipeline": "values", "flowdeco.outcome": "ok"}
        assert run.count == 1
        (active,) = telemetry.points("flowdeco.node.active")
        assert isinstance(active, NumberDataPoint)
        assert dict(active.attributes) == {"flowdeco.pipeline": "values"}
        assert active.value == 0

    def test_outcomes_are_counted(self, telemetry: Telemetry) -> None:
        @fd.node(run_in="inline")
        def bad(x: int) -> int:
            raise ValueError("bad")

        @fd.node(run_in="inline")
        def child(bad: int) -> int:
            return bad

        @fd.node(run_in="inline")
        def fine(x: int) -> int:
            return x

        pipe = fd.Pipeline([bad, child, fine])
        pipe.run({"x": 1}, on_error="continue", **telemetry.providers)
        outcomes = {
            p.attributes["flowdeco.node"]: (p.attributes["flowdeco.outcome"], p.value)
            for p in telemetry.points("flowdeco.node.runs")
        }
        assert outcomes == {
            "bad": ("failed", 1),
            "child": ("skipped", 1),
            "fine": ("succeeded", 1),
        }
        (run,) = telemetry.points("flowdeco.run.duration")
        assert run.attributes["flowdeco.outcome"] == "error"
        durations = {
            p.attributes["flowdeco.node"] for p in telemetry.points("flowdeco.node.duration")
        }
        assert durations == {"bad", "fine"}  # a skipped node never ran

    @pytest.mark.anyio
    async def test_active_is_back_to_zero_after_a_failure_cancels_nodes(
        self, telemetry: Telemetry, release: threading.Event
    ) -> None:
        pipe, _, _ = _failing_run(release)
        with pytest.raises(fd.NodeFailed):
            await pipe.arun({"x": 1}, **telemetry.providers)
        assert [p.value for p in telemetry.points("flowdeco.node.active")] == [0]
        outcomes = {
            p.attributes["flowdeco.node"]: p.attributes["flowdeco.outcome"]
            for p in telemetry.points("flowdeco.node.runs")
        }
        assert outcomes == {
            "blocked": "cancelled",
            "slow": "cancelled",
            "bad": "failed",
            "quick": "succeeded",
        }

    def test_no_run_id_in_metric_attributes(self, telemetry: Telemetry) -> None:
        pipe = _diamond()
        for _ in range(3):
            pipe.run({"x": 1}, cache=False, **telemetry.providers)
        for name, metric in telemetry.metrics().items():
            for point in metric.data.data_points:
                assert "flowdeco.run_id" not in point.attributes, name
        runs = telemetry.points("flowdeco.node.runs")
        assert len(runs) == len(DIAMOND)  # one series per node, not per run
        assert {p.value for p in runs} == {3}
        (run,) = telemetry.points("flowdeco.run.duration")
        assert run.count == 3

    def test_metrics_without_traces(self, kind: Kind, telemetry: Telemetry) -> None:
        _diamond(kind).run(
            {"x": 1},
            tracer_provider=trace.NoOpTracerProvider(),
            meter_provider=telemetry.meter_provider,
        )
        assert not telemetry.spans()
        assert [p.value for p in telemetry.points("flowdeco.node.active")] == [0]
        durations = {
            p.attributes["flowdeco.node"] for p in telemetry.points("flowdeco.node.duration")
        }
        assert durations == DIAMOND
        assert len(telemetry.points("flowdeco.node.runs")) == len(DIAMOND)

    def test_a_run_that_returned_with_a_failed_node_is_counted_as_an_error(
        self, telemetry: Telemetry
    ) -> None:
        # Driven as the engine will: finish_run() gets None, the run returned.
        for tracer_provider in (trace.NoOpTracerProvider(), telemetry.tracer_provider):
            tracer = RunTracer.create(
                _graph_of(_diamond()), "run", tracer_provider, telemetry.meter_provider
            )
            assert tracer is not None
            tracer.start_run()
            tracer.status_changed("root", fd.Status.RUNNING, None)
            tracer.status_changed("root", fd.Status.FAILED, ValueError("root"))
            tracer.finish_run(None)
        (run,) = telemetry.points("flowdeco.run.duration")
        assert dict(run.attributes) == {
            "flowdeco.pipeline": "pipeline",
            "flowdeco.outcome": "error",
        }
        assert run.count == 2

    def test_traces_without_metrics(self, telemetry: Telemetry) -> None:
        _diamond().run({"x": 1}, tracer_provider=telemetry.tracer_provider)
        _assert_tree(telemetry, "pipeline", DIAMOND)
        assert telemetry.metrics() == {}


class _SlowExporter(SpanExporter):
    """Keeps spans, taking ``seconds`` per export as a collector far away would."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        time.sleep(self.seconds)
        self.exported += spans
        return SpanExportResult.SUCCESS


class _StuckExporter(SpanExporter):
    """Keeps spans, but each export waits until ``answer`` is set: a collector that hangs."""

    def __init__(self) -> None:
        self.answer = threading.Event()
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.answer.wait(30)
        self.exported += spans
        return SpanExportResult.SUCCESS


class _DownExporter(SpanExporter):
    """Fails while ``down``, logging each attempt through its module's logger as the SDK's
    OTLP exporter does; keeps the spans once up."""

    def __init__(self) -> None:
        self.down = True
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.down:
            log = logging.getLogger(__name__)
            log.warning("Transient error Connection refused, retrying in 1.00s.")
            log.error("Failed to export spans batch due to timeout, max retries or shutdown.")
            return SpanExportResult.FAILURE
        self.exported += spans
        return SpanExportResult.SUCCESS


def _batching(exporter: SpanExporter) -> TracerProvider:
    """A provider as ``fd.tracing.setup`` makes one, exporting only when flushed."""
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    return provider


class TestFlush:
    """A run flushes its provider when it ends, so short scripts lose no spans."""

    def test_spans_are_exported_when_the_run_returns(self, kind: Kind) -> None:
        exporter = _SlowExporter(0)
        provider = _batching(exporter)
        try:
            _diamond(kind).run({"x": 1}, tracer_provider=provider)
            assert len(exporter.exported) == len(DIAMOND) + 1
        finally:
            provider.shutdown()

    @pytest.mark.anyio
    async def test_flushing_does_not_block_the_event_loop(self) -> None:
        # An async application's other tasks keep running while the collector answers.
        exporter = _SlowExporter(0.6)
        provider = _batching(exporter)
        gaps: list[float] = []

        async def ticker() -> None:
            last = time.perf_counter()
            while True:
                await anyio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                await _diamond("async").arun({"x": 1}, tracer_provider=provider)
                assert len(exporter.exported) == len(DIAMOND) + 1
                await anyio.sleep(0.05)  # the ticker's next tick measures the last gap
                tg.cancel_scope.cancel()
        finally:
            provider.shutdown()
        assert max(gaps) < 0.3, f"the event loop stood still for {max(gaps):.2f} s"


class TestCollectorDown:
    """A collector that hangs or is down never holds a run for more than FLUSH_SECONDS."""

    def test_a_hanging_collector_holds_one_run_for_the_deadline_then_none(self) -> None:
        exporter = _StuckExporter()
        provider = _batching(exporter)
        # If a run waited for the exporter, it would wait these 5 s: the test shows it.
        answer = threading.Timer(5, exporter.answer.set)
        answer.start()
        pipe = _diamond()
        took = []
        try:
            for _ in range(3):
                start = time.perf_counter()
                pipe.run({"x": 1}, cache=False, tracer_provider=provider)
                took.append(time.perf_counter() - start)
            assert FLUSH_SECONDS <= took[0] < FLUSH_SECONDS + 0.5, took
            assert max(took[1:]) < 0.5, f"a run waited behind the first flush: {took}"
        finally:
            exporter.answer.set()
            answer.cancel()
            provider.shutdown()
        assert len(exporter.exported) == 3 * (len(DIAMOND) + 1)  # late, but nothing lost

    def test_a_failing_exporter_is_reported_once_and_runs_do_not_wait(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        url = "http://collector.invalid:4318/v1/traces"
        watch = _Watch("spans", url, _Watches())
        exporter = _DownExporter()
        provider = _batching(_watched_spans(exporter, watch))
        _watch_flushes(provider, watch)
        pipe = _diamond()
        caplog.set_level(logging.INFO)
        try:
            for _ in range(3):
                pipe.run({"x": 1}, cache=False, tracer_provider=provider)
            reports = [r for r in caplog.records if r.name == "flowdeco.tracing"]
            assert len(reports) == 1, [r.getMessage() for r in reports]
            (report,) = reports
            assert report.levelno == logging.WARNING
            assert url in report.getMessage()
            assert "Transient error Connection refused" in report.getMessage()
            assert [r for r in caplog.records if r.name == __name__] == []  # held back
            assert watch.failing
            assert exporter.exported == []  # the runs did not flush: nothing tried since

            exporter.down = False
            provider.force_flush()  # as the processor does on its schedule (5 s by default)
            assert not watch.failing
            assert caplog.records[-1].getMessage() == f"flowdeco: spans are exported to {url} again"
            exporter.exported.clear()
            pipe.run({"x": 1}, cache=False, tracer_provider=provider)
            assert len(exporter.exported) == len(DIAMOND) + 1  # flushed by the run again
        finally:
            provider.shutdown()


class TestTraceInputs:
    def test_types_and_sizes_only_when_asked(self, telemetry: Telemetry) -> None:
        @fd.node(run_in="inline")
        def count(rows: list[int], /, scale: int, *, secret: str) -> int:
            return len(rows) * scale

        pipe = fd.Pipeline([count], name="inputs", **telemetry.providers)
        inputs = {"rows": [1, 2, 3], "scale": 2, "secret": "hunter2"}
        pipe.run(inputs)
        attributes = telemetry.node_spans()["count"].attributes or {}
        assert not [k for k in attributes if k.startswith("flowdeco.input.")]

        telemetry.exporter.clear()
        pipe.run(inputs, trace_inputs=True, cache=False)
        attributes = telemetry.node_spans()["count"].attributes or {}
        recorded = {k: v for k, v in attributes.items() if k.startswith("flowdeco.input.")}
        assert recorded == {
            "flowdeco.input.rows.type": "list",
            "flowdeco.input.rows.size": 3,
            "flowdeco.input.scale.type": "int",
            "flowdeco.input.secret.type": "str",
            "flowdeco.input.secret.size": 7,
        }
        assert "hunter2" not in repr(dict(attributes))
