"""OpenTelemetry: a span per run and per planned node, metrics, and a setup helper for OTLP.

The tracer comes from the global provider unless one is passed in; flowdeco never installs
a provider itself except through :func:`setup`. With no SDK configured, runs record nothing
and pay nothing but one check per run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import Link, SpanKind, StatusCode

from ._errors import ConfigurationError, describe
from ._hooks import Hooks
from ._result import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    from ._graph import Graph
    from ._node import Node

__all__ = ["DURATION_BUCKETS", "RunTracer", "attach", "detach", "setup"]

_SCOPE = "flowdeco"
#: Histogram buckets for durations in seconds: node bodies range from microseconds to hours.
DURATION_BUCKETS = (
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)  # fmt: skip
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_FLUSH_MILLIS = 5000  # how long the end of a run waits for its spans to be exported
_BATCH_SIZE = 512  # the SDK's default export batch, in spans


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
        metered = type(meter_provider).__name__ not in ("_ProxyMeterProvider", "NoOpMeterProvider")
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
        self.opened_at: dict[str, float] = {}  # perf_counter() when each node's span opened
        self.run_started = 0.0
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

    def finish_run(self, error: BaseException | None) -> None:
        """Close the run span and record the run's duration."""
        if self.instruments is not None:
            outcome = "ok" if error is None else "error"
            self.instruments.run_duration.record(
                time.perf_counter() - self.run_started,
                {**self.metric_attributes, "flowdeco.outcome": outcome},
            )
        if self.run_span is None:
            return
        if error is not None:
            self.run_span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {describe(error)}")
        self.run_span.end()

    def flush(self) -> None:
        """Export what the run recorded now, so short scripts and notebook cells lose nothing.

        Blocks while the exporter works (up to a few seconds): call it off the event loop.
        """
        flush = getattr(self.provider, "force_flush", None)
        if flush is not None:
            flush(_FLUSH_MILLIS)

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
        span = self.spans.get(node)
        end_time = None
        if node not in self.opened_at:  # skipped or cached: never ran, still shown, zero-length
            end_time = time.time_ns()
            span = self._open(node, end_time, cached=status is Status.CACHED)
        elif self.instruments is not None:
            self.instruments.active.add(-1, self.metric_attributes)
            attributes = {**self.metric_attributes, "flowdeco.node": node}
            self.instruments.node_duration.record(
                time.perf_counter() - self.opened_at[node], attributes
            )
        if self.instruments is not None:
            self.instruments.node_runs.add(
                1,
                {**self.metric_attributes, "flowdeco.node": node, "flowdeco.outcome": status.value},
            )
        if span is None:
            return
        span.set_attribute("flowdeco.node.status", status.value)
        if status is Status.FAILED and error is not None:
            _record_exception(span, error)
            span.set_status(StatusCode.ERROR, f"{type(error).__name__}: {describe(error)}")
        elif status is Status.CANCELLED:
            # The SDK records nothing for a BaseException such as a cancellation: say it.
            span.add_event("cancelled")
        span.end(end_time)

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

    def _open(self, node: str, at: int | None, cached: bool = False) -> trace.Span | None:
        """Start a node's span (at ``at`` ns since the epoch, or now)."""
        if self.tracer is None:
            if self.instruments is not None:
                self.opened_at[node] = time.perf_counter()
            return None
        fixed, parents = self.static[node]
        links = [Link(span.get_span_context()) for p in parents if (span := self.spans.get(p))]
        attributes = {**fixed, "flowdeco.run_id": self.run_id, "flowdeco.cache.hit": cached}
        if self.cache_attributes is not None:
            attributes.update(self.cache_attributes(node))
        span = self.tracer.start_span(
            node,
            context=self.run_context,  # explicitly: not whatever context is current
            links=links,
            attributes=attributes,
            start_time=at,
        )
        self.spans[node] = span
        self.opened_at[node] = time.perf_counter()
        return span


_Static = dict[str, tuple[dict[str, Any], tuple[str, ...]]]


def _static_attributes(graph: Graph) -> _Static:
    """Per node: the span attributes every run shares, and its parents' names."""
    names = graph.names
    return {
        name: (
            {
                **_code_attributes(spec),
                "flowdeco.pipeline": graph.name,
                "flowdeco.node": name,
                "flowdeco.attempts": 1,
            },
            tuple(names[p] for p in graph.parents[i]),
        )
        for i, (name, spec) in enumerate(zip(names, graph.specs, strict=True))
    }


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


def setup(
    service_name: str | None = None,
    endpoint: str | None = None,
    exporter: Literal["otlp", "console"] = "otlp",
    *,
    max_queue_size: int | None = None,
) -> SdkTracerProvider | None:
    """Send spans somewhere: OTLP over HTTP (to Jaeger, say) or the console.

    Installs an SDK tracer provider with a batch span processor as the global one. The
    ``OTEL_*`` variables apply (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_SERVICE_NAME``,
    ``OTEL_BSP_MAX_QUEUE_SIZE``...); ``OTEL_SDK_DISABLED=true`` makes this do nothing. If
    an SDK provider is already installed, it is left alone and returned.

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
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ConfigurationError(
                "the OTLP exporter is not installed; pip install 'flowdeco[otlp]'"
            ) from None
        span_exporter: Any = OTLPSpanExporter(endpoint=_traces_url(endpoint))
    else:
        span_exporter = ConsoleSpanExporter(out=sys.stderr)
    attributes = {SERVICE_NAME: service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    # The SDK refuses a queue smaller than its export batch (512 spans): send smaller batches.
    small = max_queue_size is not None and max_queue_size < _BATCH_SIZE
    batch = max_queue_size if small else None
    provider.add_span_processor(
        BatchSpanProcessor(
            span_exporter, max_queue_size=max_queue_size, max_export_batch_size=batch
        )
    )
    trace.set_tracer_provider(provider)
    return provider


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


def _traces_url(endpoint: str | None) -> str | None:
    """The exporter wants the full traces URL; users know the collector's base URL."""
    if endpoint is None:
        return None  # the exporter reads OTEL_EXPORTER_OTLP_*ENDPOINT itself
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith("/v1/traces") else endpoint + "/v1/traces"


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
