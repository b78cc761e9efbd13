"""``fd.tracing.setup()`` end to end: spans and metrics on the wire to a real OTLP/HTTP
endpoint, and runs that do not wait for a collector that is down or hangs.

A small collector (``http.server`` on an ephemeral port) decodes what it is sent. Each
case runs ``tests/scripts/otlp_run.py`` in a subprocess, since ``setup`` installs global
providers and a process may do that only once.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from flowdeco._core._tracing import EXPORT_SECONDS, FLUSH_SECONDS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.proto.trace.v1.trace_pb2 import Span

SCRIPT = Path(__file__).parent / "scripts" / "otlp_run.py"
NODES = {"load", "parse", "report"}
RUN_SPAN = "flowdeco.run otlp"
SPANS = {RUN_SPAN, *(f"otlp.{node}" for node in NODES)}  # the node spans: <pipeline>.<node>
METRICS = {
    "flowdeco.node.duration",
    "flowdeco.node.runs",
    "flowdeco.run.duration",
    "flowdeco.node.active",
}


class Received:
    """One span as the collector got it, with its resource's attributes."""

    def __init__(self, span: Span, resource: dict[str, Any]) -> None:
        self.span = span
        self.resource = resource
        self.attributes = _attributes(span.attributes)


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value"))


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


class Collector:
    """What the OTLP endpoint received: requests, decoded.

    ``refuse_metrics`` makes it answer metrics with 404, as Jaeger's default configuration
    does (it has no metrics pipeline).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
        self.metric_requests: list[ExportMetricsServiceRequest] = []
        self.refuse_metrics = False
        self.errors: list[str] = []

    def spans(self) -> list[Received]:
        with self.lock:
            requests = list(self.requests)
        return [
            Received(span, _attributes(resource_spans.resource.attributes))
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def metrics(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Each metric's name: its data points, with their resource's attributes."""
        with self.lock:
            requests = list(self.metric_requests)
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        for request in requests:
            for resource_metrics in request.resource_metrics:
                resource = _attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        data = getattr(metric, metric.WhichOneof("data"))
                        points = found.setdefault(metric.name, [])
                        points += [(resource, point) for point in data.data_points]
        return found

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.metric_requests.clear()
            self.refuse_metrics = False
            self.errors.clear()


class _Handler(BaseHTTPRequestHandler):
    collector: ClassVar[Collector]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        collector = self.collector
        if self.path == "/v1/metrics" and collector.refuse_metrics:
            self.send_error(404)
            return
        if self.path == "/v1/traces":
            request: Any = ExportTraceServiceRequest()
            received: list[Any] = collector.requests
            reply = ExportTraceServiceResponse().SerializeToString()
        elif self.path == "/v1/metrics":
            request = ExportMetricsServiceRequest()
            received = collector.metric_requests
            reply = ExportMetricsServiceResponse().SerializeToString()
        else:
            collector.errors.append(f"POST to {self.path}")
            self.send_error(404)
            return
        request.ParseFromString(body)
        with collector.lock:
            received.append(request)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the test output clean


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Collector]]:
    collector = Collector()
    handler = type("Handler", (_Handler,), {"collector": collector})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="otlp collector", daemon=True)
    thread.start()
    try:
        host, port = httpd.server_address[:2]
        yield f"http://{host!s}:{port}", collector
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


@pytest.fixture
def collector(server: tuple[str, Collector]) -> Iterator[Collector]:
    _, found = server
    found.clear()
    yield found
    assert not found.errors


@pytest.fixture
def url(server: tuple[str, Collector]) -> str:
    return server[0]


class Script:
    """A finished run of ``otlp_run.py``."""

    def __init__(self, done: subprocess.CompletedProcess[str]) -> None:
        assert done.returncode == 0, done.stderr
        self.stderr = done.stderr
        self.output: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])


def run_script(*args: str, **env: str) -> Script:
    """Run the script with ``-W error`` and no ``OTEL_*`` variables but ``env``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-W", "error", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    return Script(done)


def _by_name(spans: list[Received]) -> dict[str, Received]:
    """Spans by node name (the run span by its own name); fails on a name seen twice."""
    found = {str(s.attributes.get("flowdeco.node", s.span.name)): s for s in spans}
    assert len(found) == len(spans), [s.span.name for s in spans]
    return found


class TestOtlp:
    def test_spans_arrive_before_the_process_exits(self, url: str, collector: Collector) -> None:
        script = run_script(url, "--service-name", "otlp-test")
        assert script.output["provider"] == "TracerProvider"
        assert script.output["report"] == 6 + 8
        spans = _by_name(collector.spans())
        assert set(spans) == {RUN_SPAN, *NODES}
        run = spans[RUN_SPAN]
        assert run.span.parent_span_id == b""
        assert run.attributes == {
            "flowdeco.pipeline": "otlp",
            "flowdeco.run_id": script.output["run_id"],
            "flowdeco.run.failed": 0,
            "flowdeco.run.skipped": 0,
            "flowdeco.run.cached": 0,
        }
        for name in NODES:
            span = spans[name]
            assert span.span.name == f"otlp.{name}"
            assert span.span.parent_span_id == run.span.span_id, name
            assert span.span.trace_id == run.span.trace_id
            assert span.attributes["flowdeco.node"] == name
            assert span.attributes["flowdeco.node.status"] == "succeeded"
            assert span.attributes["flowdeco.run_id"] == script.output["run_id"]
            assert span.attributes["code.file.path"] == str(SCRIPT)
        assert {link.span_id for link in spans["report"].span.links} == {
            spans["load"].span.span_id,
            spans["parse"].span.span_id,
        }
        for span in spans.values():
            assert span.resource["service.name"] == "otlp-test"

    def test_service_name_from_the_environment(self, url: str, collector: Collector) -> None:
        run_script(url, OTEL_SERVICE_NAME="from-env")
        spans = collector.spans()
        assert len(spans) == len(NODES) + 1
        assert {s.resource["service.name"] for s in spans} == {"from-env"}

    def test_endpoint_from_the_environment(self, url: str, collector: Collector) -> None:
        run_script("env", "--service-name", "env-endpoint", OTEL_EXPORTER_OTLP_ENDPOINT=url)
        spans = collector.spans()
        assert {s.span.name for s in spans} == SPANS
        assert len(spans) == len(NODES) + 1

    def test_sdk_disabled(self, url: str, collector: Collector) -> None:
        script = run_script(url, "--service-name", "off", OTEL_SDK_DISABLED="true")
        assert script.output["provider"] is None
        assert script.output["report"] == 6 + 8
        assert collector.spans() == []
        with collector.lock:
            assert collector.requests == []

    def test_setup_twice_returns_the_same_provider_quietly(
        self, url: str, collector: Collector
    ) -> None:
        script = run_script(url, "--service-name", "twice", "--setup-twice")
        assert script.output["same"] is True
        assert script.stderr == ""  # no "Overriding of current TracerProvider" warning
        spans = collector.spans()
        assert len(spans) == len(NODES) + 1  # one processor, not two
        assert {s.resource["service.name"] for s in spans} == {"twice"}


class TestConsole:
    def test_spans_are_printed_to_stderr(self, url: str, collector: Collector) -> None:
        script = run_script(url, "--service-name", "console-test", "--exporter", "console")
        decoder = json.JSONDecoder()
        text, spans = script.stderr.strip(), []
        while text:
            span, end = decoder.raw_decode(text)
            spans.append(span)
            text = text[end:].strip()
        assert sorted(s["name"] for s in spans) == sorted(SPANS)
        assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"console-test"}
        assert collector.spans() == []


class TestMetrics:
    """``setup`` sets up metrics too: the same endpoint, resource and variables."""

    def test_metrics_reach_the_collector_when_the_script_exits(
        self, url: str, collector: Collector
    ) -> None:
        run_script(url, "--service-name", "metered", "--runs", "2", "--exit-normally")
        found = collector.metrics()
        assert set(found) == METRICS
        for points in found.values():
            assert {resource["service.name"] for resource, _ in points} == {"metered"}
        runs = {
            (attributes["flowdeco.node"], attributes["flowdeco.outcome"]): point.as_int
            for _, point in found["flowdeco.node.runs"]
            for attributes in [_attributes(point.attributes)]
        }
        assert runs == {(node, "succeeded"): 2 for node in NODES}
        ((_, run),) = found["flowdeco.run.duration"]
        assert run.count == 2
        assert _attributes(run.attributes) == {
            "flowdeco.pipeline": "otlp",
            "flowdeco.outcome": "ok",
        }

    def test_metrics_endpoint_from_the_environment(self, url: str, collector: Collector) -> None:
        run_script(
            "env", "--exit-normally", OTEL_EXPORTER_OTLP_METRICS_ENDPOINT=f"{url}/v1/metrics"
        )
        assert set(collector.metrics()) == METRICS
        assert collector.spans() == []  # spans went to the default endpoint, not here

    def test_metrics_can_be_left_out(self, url: str, collector: Collector) -> None:
        run_script(url, "--exit-normally", OTEL_METRICS_EXPORTER="none")
        assert {s.span.name for s in collector.spans()} == SPANS
        with collector.lock:
            assert collector.metric_requests == []

    def test_a_collector_refusing_metrics_is_reported_once(
        self, url: str, collector: Collector
    ) -> None:
        # Jaeger's default configuration has no metrics pipeline: it answers 404.
        collector.refuse_metrics = True
        script = run_script(
            url, "--runs", "3", "--exit-normally", OTEL_METRIC_EXPORT_INTERVAL="100"
        )
        assert len(collector.spans()) == 3 * (len(NODES) + 1)
        (line,) = script.stderr.splitlines()
        assert line.startswith(f"flowdeco: cannot export metrics to {url}/v1/metrics; "), line
        assert "404" in line


def _took(script: Script) -> list[float]:
    took: list[float] = script.output["took"]
    return took


def _reports(script: Script, url: str) -> list[str]:
    """The lines of the script's stderr, checked to be one report, naming the endpoint."""
    lines = script.stderr.splitlines()
    assert len(lines) == 1, script.stderr
    assert lines[0].startswith(f"flowdeco: cannot export spans to {url}/v1/traces; "), lines
    return lines


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (the kernel does) and never answers."""
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listening:
        port: int = listening.getsockname()[1]
        yield port


class TestCollectorDown:
    """A collector that is down or hangs never stalls a run, and is reported once."""

    def test_a_closed_port_costs_the_runs_nothing(self, closed_port: int) -> None:
        # Before: each run waited 6-8 s on the exporter's retries, and logged them.
        url = f"http://127.0.0.1:{closed_port}"
        # Exiting normally, the metrics fail too: the same collector, reported already.
        script = run_script(url, "--runs", "3", "--exit-normally")
        took = _took(script)
        assert max(took) < FLUSH_SECONDS, took
        assert max(took[1:]) < 0.5, f"a run waited for the collector known down: {took}"
        (report,) = _reports(script, url)
        assert "Connection refused" in report

    def test_a_collector_that_never_answers_holds_one_run_for_the_deadline(
        self, silent_port: int
    ) -> None:
        url = f"http://127.0.0.1:{silent_port}"
        # Linger past the exporter's timeout: its failure is reported then, once.
        script = run_script(url, "--runs", "3", "--linger", str(EXPORT_SECONDS + 1.5))
        took = _took(script)
        assert FLUSH_SECONDS - 0.05 <= took[0] < FLUSH_SECONDS + 0.5, took
        assert max(took[1:]) < 0.5, f"a run waited behind the first one's flush: {took}"
        _reports(script, url)
