"""OpenTelemetry: a span per run and per planned node, metrics, and a setup helper for OTLP.

The tracer comes from the global provider unless one is passed in; flowdeco never installs
a provider itself except through :func:`setup`. With no SDK configured, runs record nothing
and pay nothing but one check per run.

A run never waits on the network for long: its closing flush waits at most
:data:`FLUSH_SECONDS`, and not at all while the collector is known to be failing, which
:func:`setup`'s exporters report once, in one log line, instead of at every export.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any, Literal, NamedTuple
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, StatusCode

from ._errors import ConfigurationError, describe
from ._hooks import Hooks
from ._result import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from opentelemetry.sdk.metrics.export import MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from ._graph import Graph
    from ._node import Node

__all__ = [
    "DURATION_BUCKETS",
    "EXPORT_SECONDS",
    "FLUSH_SECONDS",
    "RunTracer",
    "attach",
    "detach",
    "setup",
]

_SCOPE = "flowdeco"
#: Histogram buckets for durations in seconds: node bodies range from microseconds to hours.
DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
#: The most the end of a run waits for its spans to be exported, in seconds.
FLUSH_SECONDS = 1.0
#: How long one OTLP export may take, retries included, in seconds, unless
#: ``OTEL_EXPORTER_OTLP_TIMEOUT`` (or the signal's own variable) says otherwise. The SDK's
#: default, 10 s, kept a process exiting with its collector down for 10 s per signal.
EXPORT_SECONDS = 2.0
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_NO_METER_SDK = ("_ProxyMeterProvider", "NoOpMeterProvider")  # the API's, by name: private
_BATCH_SIZE = 512  # the SDK's default export batch, in spans
_log = logging.getLogger("flowdeco.tracing")


class _Instruments:
    """The metric instruments of one meter provider, created once."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        meter = provider.get_meter(_SCOPE)
        self.node_duration = meter.create_histogram(
            "flowdeco.node.duration",
            unit="s",
            description="Time a node's function ran",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.node_runs = meter.create_counter(
            "flowdeco.node.runs", unit="{node}", description="Nodes that ended, by outcome"
        )
        self.run_duration = meter.create_histogram(
            "flowdeco.run.duration",
            unit="s",
            description="Time a whole run took",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self.active = meter.create_up_down_counter(
            "flowdeco.node.active", unit="{node}", description="Nodes running now"
        )


_instruments: dict[int, tuple[metrics.MeterProvider, _Instruments]] = {}


def _instruments_for(provider: metrics.MeterProvider) -> _Instruments:
    found = _instruments.get(id(provider))
    if found is None or found[0] is not provider:
        found = _instruments[id(provider)] = (provider, _Instruments(provider))
    return found[1]


def _metered(provider: metrics.MeterProvider) -> bool:
    """Whether ``provider`` records anything: not the API's proxy or no-op one."""
    return type(provider).__name__ not in _NO_METER_SDK


class RunTracer(Hooks):
    """Spans and metrics of one run: fed by the engine's status changes, as a hook."""

    @classmethod
    def create(
        cls,
        graph: Graph,
        run_id: str,
        tracer_provider: trace.TracerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> RunTracer | None:
        """A tracer for this run, or None when neither traces nor metrics are recorded."""
        tracer_provider = tracer_provider or trace.get_tracer_provider()
        meter_provider = meter_provider or metrics.get_meter_provider()
        traced = not isinstance(tracer_provider, _NO_SDK)
        metered = _metered(meter_provider)
        if not (traced or metered):
            return None
        return cls(
            graph,
            run_id,
            tracer_provider if traced else None,
            _instruments_for(meter_provider) if metered else None,
        )

    def __init__(
        self,
        graph: Graph,
        run_id: str,
        provider: trace.TracerProvider | None,
        instruments: _Instruments | None,
    ) -> None:
        self.pipeline = graph.name
        self.run_id = run_id
        self.provider = provider
        self.tracer = provider.get_tracer(_SCOPE) if provider is not None else None
        self.instruments = instruments
        self.metric_attributes = {"flowdeco.pipeline": graph.name}
        self.static = graph.derived(_static_attributes)
        self.run_span: trace.Span | None = None
        self.run_context: otel_context.Context | None = None
        self.spans: dict[str, trace.Span] = {}
        self.opened_at: dict[str, float] = {}  # perf_counter() when each node that ran started
        self.run_started = 0.0
        # What the run span counts: the failed nodes (with their errors), in order.
        self.failures: list[tuple[str, BaseException | None]] = []
        self.skipped: list[tuple[str, int]] = []  # and when: their spans open at the end
        self.cached = 0
        # The checkpoints' attributes of a node's span (why it ran, what its key holds).
        self.cache_attributes: Callable[[str], Mapping[str, Any]] | None = None

    # -- the run ----------------------------------------------------------------------------

    def start_run(self) -> None:
        """Open the run span, parent of every node span."""
        self.run_started = time.perf_counter()
        if self.tracer is None:
            return
        self.run_span = self.tracer.start_span(
            f"flowdeco.run {self.pipeline}",
            kind=SpanKind.INTERNAL,
            attributes={"flowdeco.pipeline": self.pipeline, "flowdeco.run_id": self.run_id},
        )
        self.run_context = trace.set_span_in_context(self.run_span)

    def finish_run(self, raised: BaseException | None) -> None:
        """Close the run span and record the run's duration.

        ``raised`` is what the run raises, None when it returns. Only then is the run span
        an ERROR: a run under ``on_error="continue"`` that returns is OK, its failed nodes
        carry the errors, and the run span counts and names them. Jaeger counts the errors
        of a trace by its spans: one failed node is one error, not two.
        """
        if self.instruments is not None:
            outcome = "ok" if raised is None and not self.failures else "error"
            self.instruments.run_duration.record(
                time.perf_counter() - self.run_started,
                {**self.metric_attributes, "flowdeco.outcome": outcome},
            )
        span = self.run_span
        if span is None:
            return
        for node, at in self.skipped:  # in the order skipped: a parent before its children
            self._never_ran(node, at, Status.SKIPPED)
        span.set_attributes(
            {
                "flowdeco.run.failed": len(self.failures),
                "flowdeco.run.skipped": len(self.skipped),
                "flowdeco.run.cached": self.cached,
            }
        )
        if self.failures:
            span.set_attribute("flowdeco.run.failed_nodes", [node for node, _ in self.failures])
        if raised is None:
            span.set_status(StatusCode.OK)
        else:
            span.set_status(StatusCode.ERROR, self._describe(raised))
        span.end()

    def _describe(self, raised: BaseException) -> str:
        """The run span's status description: a failed node's error says which node."""
        text = f"{type(raised).__name__}: {describe(raised)}"
        failed = [node for node, error in self.failures if error is raised]
        return f"node {failed[0]!r} failed: {text}" if failed else text

    def flush(self) -> None:
        """Export what the run recorded now, so short scripts and notebook cells lose nothing.

        Waits at most :data:`FLUSH_SECONDS` (call it off the event loop), and not at all
        while a flush another run gave up waiting for lasts, or the exporter is failing.
        """
        if self.provider is not None and hasattr(self.provider, "force_flush"):
            _flusher.flush(self.provider, FLUSH_SECONDS)

    def node_context(self, node: str) -> otel_context.Context | None:
        """The context to make current while ``node``'s function runs."""
        span = self.spans.get(node)
        return None if span is None else trace.set_span_in_context(span, self.run_context)

    # -- nodes, as a hook -------------------------------------------------------------------

    def status_changed(self, node: str, status: Status, error: BaseException | None) -> None:
        if status is Status.RUNNING:
            self._open(node, None)
            if self.instruments is not None:
                self.instruments.active.add(1, self.metric_attributes)
            return
        if self.instruments is not None:
            self._count(node, status)
        if node not in self.opened_at:  # skipped or cached: never ran, still shown
            if status is Status.SKIPPED:
                # Its span opens as the run ends: another of its parents may not have
                # started yet, and a span's links are fixed when it starts.
                self.skipped.append((node, time.time_ns()))
            else:
                self.cached += 1
                self._never_ran(node, time.time_ns(), status)
            return
        if status is Status.FAILED:
            self.failures.append((node, error))
        span = self.spans.get(node)
        if span is None:
            return
        if status is not Status.SUCCEEDED:  # the span started saying so, as most nodes end
            span.set_attribute("flowdeco.node.status", status.value)
            if status is Status.FAILED and error is not None:
                _record_exception(span, error)
                span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {describe(error)}")
            elif status is Status.CANCELLED:
                span.update_name(_marked(self.static[node].name, status))
                # The SDK records nothing for a BaseException such as a cancellation: say it.
                span.add_event("cancelled")
        span.end()

    def _count(self, node: str, status: Status) -> None:
        """The metrics of a node that ended: its outcome, and how long it ran if it did."""
        assert self.instruments is not None
        attributes = {**self.metric_attributes, "flowdeco.node": node}
        started = self.opened_at.get(node)
        if started is not None:
            self.instruments.active.add(-1, self.metric_attributes)
            self.instruments.node_duration.record(time.perf_counter() - started, attributes)
        self.instruments.node_runs.add(1, {**attributes, "flowdeco.outcome": status.value})

    def _never_ran(self, node: str, at: int, status: Status) -> None:
        """The span of a node that was cached or skipped at ``at`` (ns since the epoch).

        It lasts 1 ns, not 0: Jaeger flags a span that ends when it starts ("Negative
        duration detected") and moves its end itself.
        """
        span = self._open(node, at, status)
        if span is not None:
            span.end(at + 1)

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        span = self.spans.get(node)
        if span is not None:
            span.add_event(
                "retry",
                {
                    "flowdeco.attempt": attempt,
                    "exception.type": type(error).__qualname__,
                    "exception.message": describe(error),
                    "flowdeco.retry.delay": delay,
                },
            )

    def record_inputs(
        self, spec: Node[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        """Record each input's type and size (never its value) on the node's span."""
        span = self.spans.get(spec.name)
        if span is None:
            return
        positional = (p.name for p in spec.params if not p.keyword_only)
        for name, value in (*zip(positional, args, strict=False), *kwargs.items()):
            span.set_attribute(f"flowdeco.input.{name}.type", type(value).__qualname__)
            if hasattr(value, "__len__"):
                with contextlib.suppress(Exception):  # a broken __len__ must not fail the node
                    span.set_attribute(f"flowdeco.input.{name}.size", len(value))

    def set_attempts(self, node: str, attempts: int) -> None:
        """Record how many attempts the node took, before its span ends."""
        span = self.spans.get(node)
        if span is not None:
            span.set_attribute("flowdeco.attempts", attempts)

    def _open(
        self, node: str, at: int | None, never_ran: Status | None = None
    ) -> trace.Span | None:
        """Start a node's span (at ``at`` ns since the epoch, or now).

        ``never_ran`` is the status of a node that did not run (cached or skipped): its
        span's name says so, and it has no attempts. A node that runs starts with the
        status ``succeeded`` and 1 attempt, changed at its end if need be: one
        ``set_attribute`` less per node (a lock and a copy in the SDK), as most succeed.
        """
        if self.tracer is None:
            if never_ran is None:
                self.opened_at[node] = time.perf_counter()
            return None
        name, fixed, running, parents = self.static[node]
        links = [Link(span.get_span_context()) for p in parents if (span := self.spans.get(p))]
        if never_ran is None:
            attributes = {**running, "flowdeco.run_id": self.run_id}
        else:
            name = _marked(name, never_ran)
            attributes = {
                **fixed,
                "flowdeco.run_id": self.run_id,
                "flowdeco.node.status": never_ran.value,
                "flowdeco.cache.hit": never_ran is Status.CACHED,
            }
        if self.cache_attributes is not None:
            attributes.update(self.cache_attributes(node))
        span = self.tracer.start_span(
            name,
            context=self.run_context,  # explicitly: not whatever context is current
            links=links,
            attributes=attributes,
            start_time=at,
        )
        self.spans[node] = span
        if never_ran is None:
            self.opened_at[node] = time.perf_counter()
        return span


class _Static(NamedTuple):
    """What a node's spans share in every run of a graph."""

    name: str  # ``<pipeline>.<node>``
    fixed: dict[str, Any]  # the pipeline, the node, where its function is
    running: dict[str, Any]  # and as a node that runs starts: succeeded, 1 attempt
    parents: tuple[str, ...]


def _static_attributes(graph: Graph) -> dict[str, _Static]:
    """Per node: its span's name and the attributes every run shares.

    The span is named ``<pipeline>.<node>``: a name per node of the code, not per run or
    value (OpenTelemetry's low-cardinality rule), which keeps the nodes of two pipelines
    of one service apart in Jaeger's Operation list.
    """
    names = graph.names
    found = {}
    for i, (name, spec) in enumerate(zip(names, graph.specs, strict=True)):
        fixed = {**_code_attributes(spec), "flowdeco.pipeline": graph.name, "flowdeco.node": name}
        running = {
            **fixed,
            "flowdeco.node.status": Status.SUCCEEDED.value,
            "flowdeco.cache.hit": False,
            "flowdeco.attempts": 1,
        }
        parents = tuple(names[p] for p in graph.parents[i])
        found[name] = _Static(f"{graph.name}.{name}", fixed, running, parents)
    return found


def _marked(name: str, status: Status) -> str:
    """A node span's name for a node that did not run to its end: ``orders.load (cached)``.

    Jaeger's trace view lists spans by service and name alone, and a cached or skipped
    node's span lasts no time: the name is what shows at a glance.
    """
    return f"{name} ({status.value})"


def _code_attributes(spec: Node[..., Any]) -> dict[str, str | int]:
    func = spec.func
    code = getattr(func, "__code__", None)
    attributes: dict[str, str | int] = {
        "code.function.name": getattr(func, "__qualname__", spec.name)
    }
    if code is not None:
        attributes["code.file.path"] = code.co_filename
        attributes["code.line.number"] = code.co_firstlineno
    return attributes


def attach(context: otel_context.Context | None) -> object | None:
    """Make ``context`` current; returns the token to :func:`detach` with."""
    return None if context is None else otel_context.attach(context)


def detach(token: object | None) -> None:
    if token is not None:
        otel_context.detach(token)  # type: ignore[arg-type]


# -- flushing within a deadline ------------------------------------------------------------


class _Flusher:
    """Flushes tracer providers in a thread of its own, so that a run waits only so long.

    ``BatchSpanProcessor.force_flush`` ignores its timeout: it exports under a lock, each
    export lasting up to the exporter's timeout, retries included. Called by the run, a
    collector that was down held every run for seconds. One thread serves every provider,
    one flush after the other, and lives as long as the process, holding no provider while
    idle: starting a thread per run cost milliseconds on a busy machine.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):  # a child has no thread, and maybe a held lock
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self.lock = threading.Condition()
        self.pending: dict[Any, threading.Event] = {}  # providers to flush, in order
        self.flushing: threading.Event | None = None  # set when the flush under way ends
        self.overdue = False  # a run gave up waiting: the flush under way hangs
        self.thread: threading.Thread | None = None

    def flush(self, provider: Any, seconds: float) -> None:
        """Flush ``provider``, waiting at most ``seconds``.

        Not at all while the flush under way is overdue (its spans and this run's go with
        the processor's next export), nor while the provider's exporter is failing. A run
        asking while another one's flush of the same provider waits to start shares it.
        """
        watch = _span_watches.get(provider)
        with self.lock:
            if self.overdue or (watch is not None and watch.failing):
                return
            done = self.pending.get(provider)
            if done is None:
                done = self.pending[provider] = threading.Event()
                self.lock.notify()
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._serve, name="flowdeco flush", daemon=True
                )
                self.thread.start()
        if not done.wait(seconds):
            with self.lock:
                self.overdue = True

    def stop_waiting(self) -> None:
        """An exporter started failing: whoever waits for a flush returns now."""
        with self.lock:
            for done in (self.flushing, *self.pending.values()):
                if done is not None:
                    done.set()

    def _serve(self) -> None:
        while True:
            with self.lock:
                while not self.pending:
                    self.lock.wait()
                provider = next(iter(self.pending))
                done = self.flushing = self.pending.pop(provider)
            try:
                provider.force_flush()
            except Exception:  # noqa: BLE001 - a provider's own: the thread serves the others
                _log.exception("flowdeco: flushing %r failed", provider)
            finally:
                del provider  # idle, the thread holds no provider
                done.set()
                with self.lock:
                    self.flushing = None
                    self.overdue = False


_flusher = _Flusher()
# The span watch of each provider setup() made; weakly: it goes with its provider.
_span_watches: weakref.WeakKeyDictionary[Any, _Watch] = weakref.WeakKeyDictionary()


def _watch_flushes(provider: Any, watch: _Watch) -> None:
    """Runs do not flush ``provider`` while ``watch`` sees its exporter failing, and stop
    waiting for a flush when a failure starts."""
    _span_watches[provider] = watch
    watch.holds_runs = True


# -- exporters that report failures once -----------------------------------------------------


_exporting = threading.local()  # .watch: the _Watch whose exporter this thread is running


class _Watches:
    """The watches of one :func:`setup`: one lock, and who reported what.

    Spans and metrics usually go to one collector: when it is down, both fail, and the
    second failure is that collector's, reported already.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.all: list[_Watch] = []


class _Watch:
    """One OTLP exporter's health: a failure is reported once, in one line, not per export.

    The SDK's exporters log every failed attempt of every batch ("Transient error ...
    retrying in 1.04s", then "Failed to export"): each run, and each metrics export, said
    it again. While a watched exporter runs, those records are held back by
    :class:`_HeldBack`; the first one becomes this watch's single warning, unless another
    watch of the same collector (scheme, host and port) is failing and said so. A later
    success ends the failure, which is logged too (at INFO).
    """

    def __init__(self, signal: Literal["spans", "metrics"], url: str, peers: _Watches) -> None:
        self.signal = signal
        self.url = url
        self.collector = urlsplit(url)[:2]
        self.peers = peers
        peers.all.append(self)
        self.failing = False
        self.covered_by: _Watch | None = None  # the failing peer that reported this failure
        self.holds_runs = False  # whether runs wait on its exports: they stop when it fails

    @contextlib.contextmanager
    def exporting(self) -> Iterator[None]:
        """Around one call of the exporter: its log records in this thread come here."""
        _exporting.watch = self
        try:
            yield
        finally:
            _exporting.watch = None

    def failed(self, detail: str) -> None:
        with self.peers.lock:
            if self.failing:
                return
            self.failing = True
            reporting = [w for w in self.peers.all if w.failing and w.covered_by is None]
            self.covered_by = next(
                (w for w in reporting if w is not self and w.collector == self.collector), None
            )
        if self.holds_runs:
            _flusher.stop_waiting()
        if self.covered_by is not None:
            return
        meanwhile = "runs do not wait for it and " if self.signal == "spans" else ""
        _log.warning(
            "flowdeco: cannot export %s to %s; until an export succeeds, %s%s that cannot "
            "be sent are dropped (said once). The exporter said: %s",
            self.signal,
            self.url,
            meanwhile,
            self.signal,
            detail,
        )

    def ended(self, succeeded: bool) -> None:
        """An export ended: a success ends a failure, a failure starts one if none did.

        The failures this watch reported for its peers end too: a peer failing still
        (metrics refused by a collector that takes spans) then says so at its next export.
        """
        if not succeeded:
            self.failed("the exporter gave no reason")
            return
        with self.peers.lock:
            reported = self.failing and self.covered_by is None
            self.failing, self.covered_by = False, None
            for peer in self.peers.all:
                if peer.covered_by is self:
                    peer.failing, peer.covered_by = False, None
        if reported:
            _log.info("flowdeco: %s are exported to %s again", self.signal, self.url)


class _HeldBack(logging.Filter):
    """Holds back an OTLP exporter's warnings while a :class:`_Watch` runs it: the watch
    reports the first of them, once. The exporter's records at other times pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        watch: _Watch | None = getattr(_exporting, "watch", None)
        if watch is None or record.levelno < logging.WARNING:
            return True
        watch.failed(record.getMessage())
        return False


_held_back = _HeldBack()


def _watched_spans(exporter: SpanExporter, watch: _Watch) -> SpanExporter:
    """``exporter``, an OTLP span exporter, with its failures reported by ``watch``.

    The class is made here, not at import: the SDK is imported only once it is set up.
    """
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class WatchedSpans(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            with watch.exporting():
                result = exporter.export(spans)
            watch.ended(result is SpanExportResult.SUCCESS)
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return exporter.force_flush(timeout_millis)

    _hold_back_logs_of(exporter)
    return WatchedSpans()


def _watched_metrics(exporter: MetricExporter, watch: _Watch) -> MetricExporter:
    """``exporter``, an OTLP metric exporter, with its failures reported by ``watch``."""
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    class WatchedMetrics(MetricExporter):
        def export(
            self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
        ) -> MetricExportResult:
            with watch.exporting():
                result = exporter.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
            watch.ended(result is MetricExportResult.SUCCESS)
            return result

        def force_flush(self, timeout_millis: float = 10_000) -> bool:
            return exporter.force_flush(timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            exporter.shutdown(timeout_millis=timeout_millis, **kwargs)

    _hold_back_logs_of(exporter)
    # The exporter's temporality and aggregation (from OTEL_EXPORTER_OTLP_METRICS_*): the
    # reader reads these attributes of the exporter it is given, as here.
    return WatchedMetrics(
        preferred_temporality=exporter._preferred_temporality,
        preferred_aggregation=exporter._preferred_aggregation,
    )


def _hold_back_logs_of(exporter: object) -> None:
    """Hold back the warnings of the module logger ``exporter``'s class logs through."""
    logging.getLogger(type(exporter).__module__).addFilter(_held_back)  # once: a no-op after


# -- setup -----------------------------------------------------------------------------------


def setup(
    service_name: str | None = None,
    endpoint: str | None = None,
    exporter: Literal["otlp", "console"] = "otlp",
    *,
    max_queue_size: int | None = None,
) -> SdkTracerProvider | None:
    """Send spans and metrics somewhere: OTLP over HTTP (to Jaeger, say) or the console.

    Installs, as the global ones, an SDK tracer provider with a batch span processor and
    an SDK meter provider with a periodic reader (every ``OTEL_METRIC_EXPORT_INTERVAL``
    ms, 60 s by default, and at exit), both with the same resource and exporter kind. The
    ``OTEL_*`` variables apply (``OTEL_EXPORTER_OTLP_ENDPOINT`` and its ``_TRACES_`` and
    ``_METRICS_`` forms, ``OTEL_SERVICE_NAME``, ``OTEL_BSP_MAX_QUEUE_SIZE``,
    ``OTEL_EXPORTER_OTLP_TIMEOUT``...); ``OTEL_METRICS_EXPORTER=none`` leaves metrics out
    and ``OTEL_SDK_DISABLED=true`` makes this do nothing. A provider already installed is
    left alone (the tracer provider is returned if it is an SDK one).

    An OTLP export takes at most :data:`EXPORT_SECONDS` unless ``OTEL_EXPORTER_OTLP_TIMEOUT``
    says otherwise; a failing export is logged once (logger ``flowdeco.tracing``), and
    runs then do not wait for the collector until an export succeeds.

    Args:
        service_name: The ``service.name`` resource attribute (Jaeger's service list).
        endpoint: OTLP/HTTP base URL such as ``http://localhost:4318``.
        exporter: ``"otlp"`` (needs ``pip install flowdeco[otlp]``) or ``"console"``.
        max_queue_size: Spans the batch processor holds before dropping; raise it for
            DAGs of many thousands of nodes.

    Raises:
        ConfigurationError: An argument has a value it cannot take; the message names it.
    """
    _check_setup(service_name, endpoint, exporter, max_queue_size)
    if _environ("OTEL_SDK_DISABLED") == "true":
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider

    if exporter == "otlp":
        try:
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "the OTLP exporter is not installed; pip install 'flowdeco[otlp]'"
            ) from None
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    watches = _Watches()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        installed = _install_traces(resource, endpoint, exporter, max_queue_size, watches)
        if installed is None:
            return None
        provider = installed
    if _environ("OTEL_METRICS_EXPORTER") != "none" and not _metered(metrics.get_meter_provider()):
        _install_metrics(resource, endpoint, exporter, watches)
    return provider


def _install_traces(
    resource: Resource,
    endpoint: str | None,
    exporter: Literal["otlp", "console"],
    max_queue_size: int | None,
    watches: _Watches,
) -> SdkTracerProvider | None:
    """A tracer provider, installed as the global one; None (and nothing left running) if
    the API refused it: it keeps the first provider set and only logs about another."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    watch = None
    span_exporter: SpanExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = _signal_url(endpoint, "traces")
        watch = _Watch("spans", url, watches)
        span_exporter = _watched_spans(
            OTLPSpanExporter(endpoint=url, timeout=_export_seconds("TRACES")), watch
        )
    else:
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    provider = TracerProvider(resource=resource)
    # The SDK refuses a queue smaller than its export batch (512 spans): send smaller batches.
    small = max_queue_size is not None and max_queue_size < _BATCH_SIZE
    batch = max_queue_size if small else None
    provider.add_span_processor(
        BatchSpanProcessor(
            span_exporter, max_queue_size=max_queue_size, max_export_batch_size=batch
        )
    )
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        provider.shutdown()
        return None
    if watch is not None:
        _watch_flushes(provider, watch)
    return provider


def _install_metrics(
    resource: Resource,
    endpoint: str | None,
    exporter: Literal["otlp", "console"],
    watches: _Watches,
) -> None:
    """A meter provider exporting periodically, installed as the global one."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import (
        ConsoleMetricExporter,
        PeriodicExportingMetricReader,
    )

    metric_exporter: MetricExporter
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        url = _signal_url(endpoint, "metrics")
        metric_exporter = _watched_metrics(
            OTLPMetricExporter(endpoint=url, timeout=_export_seconds("METRICS")),
            _Watch("metrics", url, watches),
        )
    else:
        metric_exporter = ConsoleMetricExporter(out=sys.stderr)
    reader = PeriodicExportingMetricReader(metric_exporter)
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=[reader]))


def _environ(name: str) -> str:
    return os.environ.get(name, "").strip().lower()


def _export_seconds(signal: Literal["TRACES", "METRICS"]) -> float | None:
    """The exporter's timeout: :data:`EXPORT_SECONDS`, or None for the exporter to read
    the ``OTEL_EXPORTER_OTLP_<SIGNAL>_TIMEOUT`` or ``OTEL_EXPORTER_OTLP_TIMEOUT`` set."""
    names = (f"OTEL_EXPORTER_OTLP_{signal}_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT")
    return None if any(os.environ.get(name) for name in names) else EXPORT_SECONDS


def _check_setup(
    service_name: object, endpoint: object, exporter: object, max_queue_size: object
) -> None:
    """Refuse a bad argument to :func:`setup` before anything is installed."""
    if service_name is not None and not isinstance(service_name, str):
        raise ConfigurationError(
            f"setup(service_name=...) must be a string or None, got {service_name!r}"
        )
    if endpoint is not None and (
        not isinstance(endpoint, str) or not endpoint.lower().startswith(("http://", "https://"))
    ):
        raise ConfigurationError(
            "setup(endpoint=...) must be an http(s) URL such as 'http://localhost:4318', or "
            f"None for OTEL_EXPORTER_OTLP_ENDPOINT, got {endpoint!r}"
        )
    if exporter not in ("otlp", "console"):
        raise ConfigurationError(
            f"setup(exporter=...) must be 'otlp' or 'console', got {exporter!r}"
        )
    if max_queue_size is not None and (
        isinstance(max_queue_size, bool)
        or not isinstance(max_queue_size, int)
        or max_queue_size < 1
    ):
        raise ConfigurationError(
            "setup(max_queue_size=...) must be a whole number >= 1, or None, "
            f"got {max_queue_size!r}"
        )


_SIGNAL_PATHS = ("/v1/traces", "/v1/metrics")


def _signal_url(endpoint: str | None, signal: Literal["traces", "metrics"]) -> str:
    """The URL a signal's exporter posts to. Users know the collector's base URL; the
    exporters want the signal's own. Without ``endpoint``, the variables decide as the
    exporters read them: ``OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT`` as is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` with the path, else ``http://localhost:4318``."""
    if endpoint is None:
        own = os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT")
        if own:
            return own
        endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    base = endpoint.rstrip("/")
    for path in _SIGNAL_PATHS:  # a signal's URL given as the endpoint: its collector's base
        base = base.removesuffix(path)
    return f"{base}/v1/{signal}"


def _record_exception(span: trace.Span, error: BaseException) -> None:
    """The ``exception`` event of a failed node's span, as ``Span.record_exception`` makes it.

    Not that method: it calls ``str(error)`` unguarded, and a node's exception whose
    ``__str__`` raises would then become a hook's error, stopping the run.
    """
    cls = type(error)
    module = cls.__module__
    span.add_event(
        "exception",
        {
            "exception.type": cls.__qualname__
            if module in (None, "builtins")
            else f"{module}.{cls.__qualname__}",
            "exception.message": describe(error),
            "exception.stacktrace": "".join(traceback.format_exception(error)),
            "exception.escaped": "False",
        },
    )
