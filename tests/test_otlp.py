"""``fd.tracing.setup()`` end to end: spans on the wire to a real OTLP/HTTP endpoint.

A small collector (``http.server`` on an ephemeral port) decodes what it is sent. Each
case runs ``tests/scripts/otlp_run.py`` in a subprocess, since ``setup`` installs a global
provider and a process may do that only once.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from opentelemetry.proto.trace.v1.trace_pb2 import Span

SCRIPT = Path(__file__).parent / "scripts" / "otlp_run.py"
NODES = {"load", "parse", "report"}
RUN_SPAN = "flowdeco.run otlp"


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
    """What the OTLP endpoint received: requests, decoded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[ExportTraceServiceRequest] = []
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

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()
            self.errors.clear()


class _Handler(BaseHTTPRequestHandler):
    collector: ClassVar[Collector]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path != "/v1/traces":
            self.collector.errors.append(f"POST to {self.path}")
            self.send_error(404)
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        with self.collector.lock:
            self.collector.requests.append(request)
        reply = ExportTraceServiceResponse().SerializeToString()
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
    found = {s.span.name: s for s in spans}
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
        }
        for name in NODES:
            span = spans[name]
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
        assert {s.span.name for s in spans} == {RUN_SPAN, *NODES}
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
        assert sorted(s["name"] for s in spans) == sorted([RUN_SPAN, *NODES])
        assert {s["resource"]["attributes"]["service.name"] for s in spans} == {"console-test"}
        assert collector.spans() == []
