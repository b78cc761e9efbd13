"""A real Jaeger shows flowdeco's traces and metrics as a user will see them.

Jaeger v2 is built from its Go module by ``.ci/jaeger.sh`` once per machine (``.ci/run``
does it before the tests; here it is built if missing, which takes minutes) and started on
127.0.0.1 only: memory storage, no tracing of itself, free ports, and a metrics pipeline
to a Prometheus endpoint (Jaeger's default configuration takes traces only). The runs of
``tests/scripts/jaeger_run.py`` (failures, retries, cached and skipped nodes, two
pipelines) are read back through the query API the UI uses (``/api/...``) and through the
OTLP one (``/api/v3/...``).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

# The first test may build Jaeger: minutes, once per machine. The tests take seconds.
pytestmark = pytest.mark.timeout(1800)

BUILD = Path(__file__).parent.parent / ".ci" / "jaeger.sh"
SCRIPT = Path(__file__).parent / "scripts" / "jaeger_run.py"
SERVICE = "flowdeco-jaeger-test"
CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
    metrics: {{receivers: [otlp], exporters: [prometheus]}}
  telemetry: {{metrics: {{level: none}}}}
extensions:
  jaeger_query:
    storage: {{traces: mem}}
    enable_tracing: false
    http: {{endpoint: "127.0.0.1:{query}"}}
    grpc: {{endpoint: "127.0.0.1:{query_grpc}"}}
  jaeger_storage:
    backends: {{mem: {{memory: {{max_traces: 1000}}}}}}
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:{otlp_grpc}"}}
      http: {{endpoint: "127.0.0.1:{otlp}"}}
processors: {{batch: {{timeout: 100ms}}}}
exporters:
  jaeger_storage_exporter: {{trace_storage: mem}}
  prometheus: {{endpoint: "127.0.0.1:{prometheus}"}}
"""
FINAL = {"succeeded", "failed", "cancelled", "skipped", "cached"}
MARKED = {"skipped", "cached", "cancelled"}  # the statuses a node span's name carries


def _build() -> Path:
    """The Jaeger binary, built if this machine has none yet."""
    done = subprocess.run(
        ["bash", str(BUILD)], capture_output=True, text=True, timeout=1700, check=False
    )
    if done.returncode == 2 and "no Go toolchain" in done.stderr:
        pytest.skip(f"Jaeger is not built here and cannot be: {done.stderr.strip()}")
    assert done.returncode == 0, f".ci/jaeger.sh failed:\n{done.stderr[-5000:]}"
    return Path(done.stdout.strip().splitlines()[-1])


def _free_ports(count: int) -> list[int]:
    """Ports free on 127.0.0.1 now, all different (held open together while chosen)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for held in sockets:
            held.bind(("127.0.0.1", 0))
        return [held.getsockname()[1] for held in sockets]
    finally:
        for held in sockets:
            held.close()


def _http(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    """Status and body of a GET (or a POST of ``data``); an HTTP error is an answer too."""
    headers = {"Content-Type": "application/x-protobuf"} if data is not None else {}
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _json(url: str) -> Any:
    status, body = _http(url)
    assert status == 200, f"GET {url}: {status} {body[:500]!r}"
    return json.loads(body)


def _until(found: Callable[[], Any], what: str, seconds: float = 20) -> Any:
    """``found()`` once it is truthy, polled until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    while not (result := found()):
        assert time.monotonic() < deadline, f"no {what} after {seconds} s"
        time.sleep(0.1)
    return result


@dataclass
class Jaeger:
    query: str  # the UI's and the query API's base URL
    otlp: str  # OTLP/HTTP base URL, what fd.tracing.setup(endpoint=...) takes
    prometheus: str  # the metrics it received, as Prometheus text

    def traces(self) -> list[dict[str, Any]]:
        return list(_json(f"{self.query}/api/traces?service={SERVICE}&limit=100")["data"])


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Jaeger]:
    binary = _build()
    here = tmp_path_factory.mktemp("jaeger")
    names = ("query", "query_grpc", "otlp", "otlp_grpc", "prometheus")
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    config = here / "config.yaml"
    config.write_text(CONFIG.format(**ports))
    log = here / "jaeger.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(binary), "--config", str(config)], cwd=here, stdout=out, stderr=out
        )
    try:
        found = Jaeger(
            f"http://127.0.0.1:{ports['query']}",
            f"http://127.0.0.1:{ports['otlp']}",
            f"http://127.0.0.1:{ports['prometheus']}/metrics",
        )

        def ready() -> bool:
            assert process.poll() is None, f"Jaeger exited:\n{log.read_text()[-5000:]}"
            try:
                services, _ = _http(f"{found.query}/api/services")
                receiver, _ = _http(f"{found.otlp}/v1/traces", b"")
            except OSError:
                return False
            return services == 200 and receiver == 200

        _until(ready, "answer from Jaeger", seconds=30)
        yield found
    finally:
        process.terminate()  # by its pid
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@dataclass
class Run:
    """One run of the script, as it reported it, and its trace as Jaeger returns it."""

    pipeline: str
    run_id: str
    raised: bool
    status: dict[str, str]
    attempts: dict[str, int]
    edges: dict[str, list[str]]  # each node's direct parents
    trace: dict[str, Any]

    @property
    def spanned(self) -> set[str]:
        """The nodes that should have a span: those the run gave a final status."""
        return {node for node, status in self.status.items() if status in FINAL}

    @property
    def run_span(self) -> dict[str, Any]:
        (span,) = [s for s in self.trace["spans"] if "flowdeco.node" not in _tags(s)]
        return span

    @property
    def node_spans(self) -> dict[str, dict[str, Any]]:
        spans = [s for s in self.trace["spans"] if "flowdeco.node" in _tags(s)]
        found = {_tags(s)["flowdeco.node"]: s for s in spans}
        assert len(found) == len(spans), "a node has two spans"
        return found


def _tags(span: dict[str, Any]) -> dict[str, Any]:
    return {tag["key"]: tag["value"] for tag in span["tags"]}


def _fields(log: dict[str, Any]) -> dict[str, Any]:
    return {field["key"]: field["value"] for field in log["fields"]}


def _operation(pipeline: str, node: str, status: str) -> str:
    base = f"{pipeline}.{node}"
    return f"{base} ({status})" if status in MARKED else base


@pytest.fixture(scope="module")
def runs(jaeger: Jaeger, tmp_path_factory: pytest.TempPathFactory) -> list[Run]:
    """The script's four runs, each with its trace once Jaeger has all of its spans."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), jaeger.otlp, SERVICE],
        cwd=tmp_path_factory.mktemp("jaeger-run"),  # the store: run 2 reuses run 1's values
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "flowdeco:" not in done.stderr, done.stderr  # no export failed
    output = json.loads(done.stdout.strip().splitlines()[-1])
    reported = [Run(edges=output["edges"][r["pipeline"]], trace={}, **r) for r in output["runs"]]

    def complete() -> dict[str, dict[str, Any]]:
        by_run = {}
        for trace in jaeger.traces():
            (run_id,) = {_tags(s)["flowdeco.run_id"] for s in trace["spans"]}
            by_run[run_id] = trace
        whole = all(
            r.run_id in by_run and len(by_run[r.run_id]["spans"]) == len(r.spanned) + 1
            for r in reported
        )
        return by_run if whole else {}

    by_run = _until(complete, "complete traces in Jaeger")
    for run in reported:
        run.trace = by_run[run.run_id]
    return reported


def test_the_runs_are_what_the_checks_expect(runs: list[Run]) -> None:
    first, second, audit, stopped = runs
    assert first.status["broken"] == "failed"
    assert first.status["invoice"] == "skipped"
    assert first.attempts["flaky"] == 3
    assert second.status["load"] == "cached"
    assert audit.pipeline == "audit"
    assert stopped.raised


def test_the_service_and_its_operations(jaeger: Jaeger, runs: list[Run]) -> None:
    services = _json(f"{jaeger.query}/api/services")["data"]
    assert SERVICE in services
    assert "jaeger" not in services  # it does not trace itself
    operations = set(_json(f"{jaeger.query}/api/services/{SERVICE}/operations")["data"])
    expected = {f"flowdeco.run {r.pipeline}" for r in runs}
    for run in runs:
        expected |= {_operation(run.pipeline, n, run.status[n]) for n in run.spanned}
    assert operations == expected
    assert {"orders.load", "audit.load", "orders.load (cached)"} <= operations


def test_one_trace_per_run_whose_only_root_is_the_run_span(jaeger: Jaeger, runs: list[Run]) -> None:
    assert len(jaeger.traces()) == len(runs)
    assert len({run.trace["traceID"] for run in runs}) == len(runs)
    for run in runs:
        roots = [s for s in run.trace["spans"] if not s["references"]]
        assert roots == [run.run_span]
        assert run.run_span["operationName"] == f"flowdeco.run {run.pipeline}"
        assert _tags(run.run_span)["flowdeco.run_id"] == run.run_id
        process = run.trace["processes"][run.run_span["processID"]]
        assert process["serviceName"] == SERVICE
        assert {"key": "telemetry.sdk.language", "type": "string", "value": "python"} in (
            process["tags"]
        )


def test_one_span_per_planned_node_under_the_run_span(runs: list[Run]) -> None:
    for run in runs:
        spans = run.node_spans
        assert set(spans) == run.spanned, run.pipeline
        for node, span in spans.items():
            tags = _tags(span)
            assert span["operationName"] == _operation(run.pipeline, node, run.status[node])
            assert tags["flowdeco.node.status"] == run.status[node]
            parent, *_ = span["references"]  # the UI takes the first one as the parent
            assert parent["refType"] == "CHILD_OF", node
            assert parent["spanID"] == run.run_span["spanID"], node
            assert not span["warnings"], (node, span["warnings"])


def test_follows_from_references_are_the_dags_edges(runs: list[Run]) -> None:
    for run in runs:
        spans = run.node_spans
        node_of = {span["spanID"]: node for node, span in spans.items()}
        referenced = {
            (node_of[ref["spanID"]], node)
            for node, span in spans.items()
            for ref in span["references"]
            if ref["refType"] == "FOLLOWS_FROM"
        }
        edges = {(parent, node) for node, parents in run.edges.items() for parent in parents}
        assert referenced == {(p, n) for p, n in edges if p in spans and n in spans}
        for span in spans.values():
            assert [r["refType"] for r in span["references"]].count("CHILD_OF") == 1
    first = runs[0]
    assert len(first.node_spans) == len(first.edges)  # every node, every edge, in run 1


def test_error_true_on_exactly_the_failed_nodes(runs: list[Run]) -> None:
    for run in runs:
        for node, span in run.node_spans.items():
            tags = _tags(span)
            assert tags.get("error", False) is (run.status[node] == "failed"), node
            if run.status[node] == "failed":
                assert tags["otel.status_description"] == "ValueError: no price for 'gizmo'"


def test_the_run_span_is_an_error_when_the_run_raised(runs: list[Run]) -> None:
    _, _, audit, stopped = runs
    tags = _tags(stopped.run_span)
    assert tags["error"] is True
    assert tags["otel.status_description"] == (
        "node 'broken' failed: ValueError: no price for 'gizmo'"
    )
    assert "error" not in _tags(audit.run_span)
    assert _tags(audit.run_span)["otel.status_code"] == "OK"


def test_a_run_that_returned_is_no_error_whatever_failed(runs: list[Run]) -> None:
    first, second, _, _ = runs
    for run in (first, second):  # on_error="continue": they returned
        assert "error" not in _tags(run.run_span)
        assert _tags(run.run_span)["otel.status_code"] == "OK"


def test_the_run_span_counts_and_names_what_did_not_succeed(runs: list[Run]) -> None:
    for run in runs:
        tags = _tags(run.run_span)
        counted = Counter(run.status.values())
        assert tags["flowdeco.pipeline"] == run.pipeline
        assert tags["flowdeco.run.failed"] == counted["failed"]
        assert tags["flowdeco.run.skipped"] == counted["skipped"]
        assert tags["flowdeco.run.cached"] == counted["cached"]
        failed = [n for n, s in run.status.items() if s == "failed"]
        if failed:  # an array attribute: Jaeger shows it as JSON
            assert json.loads(tags["flowdeco.run.failed_nodes"]) == failed
        else:
            assert "flowdeco.run.failed_nodes" not in tags


def test_the_exception_log_of_a_failed_node(runs: list[Run]) -> None:
    broken = runs[0].node_spans["broken"]
    (log,) = broken["logs"]
    fields = _fields(log)
    assert fields["event"] == "exception"
    assert fields["exception.type"] == "ValueError"
    assert fields["exception.message"] == "no price for 'gizmo'"
    assert 'raise ValueError("no price for' in fields["exception.stacktrace"]


def test_retry_logs_and_attempts(runs: list[Run]) -> None:
    flaky = runs[0].node_spans["flaky"]
    logs = [_fields(log) for log in flaky["logs"]]
    assert [log["event"] for log in logs] == ["retry", "retry"]
    assert [log["flowdeco.attempt"] for log in logs] == [1, 2]
    assert {log["exception.type"] for log in logs} == {"ConnectionError"}
    assert logs[0]["exception.message"] == "attempt 1: the price service hung up"
    for run in runs:  # only the nodes that ran have attempts
        for node, span in run.node_spans.items():
            assert _tags(span).get("flowdeco.attempts") == run.attempts.get(node), node


def test_node_attributes(runs: list[Run]) -> None:
    first, second, _, _ = runs
    load = _tags(first.node_spans["load"])
    assert load["code.function.name"] == "load"
    assert load["code.file.path"] == str(SCRIPT)
    assert load["flowdeco.pipeline"] == "orders"
    assert load["flowdeco.run_id"] == first.run_id
    assert load["flowdeco.cache.hit"] is False
    assert load["span.kind"] == "internal"
    reused = _tags(second.node_spans["load"])
    assert reused["flowdeco.cache.hit"] is True
    assert reused["flowdeco.cache.reason"] == "reused"
    assert second.node_spans["load"]["duration"] == 0  # µs: it did not run


def test_the_otlp_api_shows_the_same_traces(jaeger: Jaeger, runs: list[Run]) -> None:
    now = datetime.now(timezone.utc)
    window = {
        "query.service_name": SERVICE,
        "query.start_time_min": (now - timedelta(hours=1)).isoformat(),
        "query.start_time_max": (now + timedelta(hours=1)).isoformat(),
        "query.num_traces": "100",  # the memory store refuses a search without it
    }
    query = urllib.parse.urlencode(window)
    found = _json(f"{jaeger.query}/api/v3/traces?{query}")["result"]["resourceSpans"]
    spans: dict[str, list[dict[str, Any]]] = {}
    for resource_spans in found:
        resource = resource_spans["resource"]["attributes"]
        assert {"key": "service.name", "value": {"stringValue": SERVICE}} in resource
        for scope_spans in resource_spans["scopeSpans"]:
            assert scope_spans["scope"]["name"] == "flowdeco"
            for span in scope_spans["spans"]:
                spans.setdefault(span["traceId"], []).append(span)
    assert len(spans) == len(runs)
    for run in runs:
        trace = spans[run.trace["traceID"]]
        assert len(trace) == len(run.spanned) + 1
        (root,) = [s for s in trace if not s.get("parentSpanId")]
        assert root["spanId"] == run.run_span["spanID"]
        expected_links = {
            node: {ref["spanID"] for ref in span["references"] if ref["refType"] == "FOLLOWS_FROM"}
            for node, span in run.node_spans.items()
        }
        for span in trace:
            if span is root:
                continue
            assert span["parentSpanId"] == root["spanId"]
            attributes = {a["key"]: a["value"] for a in span["attributes"]}
            node = attributes["flowdeco.node"]["stringValue"]
            assert {link["spanId"] for link in span.get("links", [])} == expected_links[node]
            failed = run.status[node] == "failed"
            assert (span["status"].get("code") == 2) is failed, node  # STATUS_CODE_ERROR


_SAMPLE = re.compile(r"^(\w+)\{(.*)\} (\S+)$")


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of one metric of the service, in Prometheus text: labels and values."""
    found = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match[1] == name:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match[2]))
            if labels.get("job") == SERVICE:  # the service is the job
                found.append((labels, float(match[3])))
    return found


def test_metrics_reach_the_collector(jaeger: Jaeger, runs: list[Run]) -> None:
    # The script exited: the SDK's shutdown exported the metrics, over OTLP, to Jaeger.
    expected = Counter(
        (run.pipeline, node, status)
        for run in runs
        for node, status in run.status.items()
        if status in FINAL
    )

    def counted() -> dict[tuple[str, str, str], float]:
        status, body = _http(jaeger.prometheus)
        if status != 200:
            return {}
        return {
            (s["flowdeco_pipeline"], s["flowdeco_node"], s["flowdeco_outcome"]): value
            for s, value in _samples(body.decode(), "flowdeco_node_runs_total")
        }

    assert _until(counted, "flowdeco metrics in Jaeger's Prometheus endpoint") == expected
    text = _http(jaeger.prometheus)[1].decode()
    durations = {
        (s["flowdeco_pipeline"], s["flowdeco_outcome"]): value
        for s, value in _samples(text, "flowdeco_run_duration_seconds_count")
    }
    assert durations == {("orders", "error"): 3, ("audit", "ok"): 1}
    timed = _samples(text, "flowdeco_node_duration_seconds_count")
    ran = {(labels["flowdeco_pipeline"], labels["flowdeco_node"]) for labels, _ in timed}
    assert ran == {
        (run.pipeline, node)
        for run in runs
        for node, status in run.status.items()
        if status in ("succeeded", "failed")
    }
    assert [v for _, v in _samples(text, "flowdeco_node_active")] == [0, 0]


DOCS = Path(__file__).parent.parent / "docs" / "tracing.md"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_NOT_RUN = re.compile(r"<!-- not run: (.+) -->\n$")


def _docs_code() -> str:
    """docs/tracing.md's python blocks, in order; every other block says why it is not run."""
    text = DOCS.read_text()
    code = []
    for block in _FENCE.finditer(text):
        line_before = text[text.rindex("\n", 0, block.start() - 1) + 1 : block.start()]
        if _NOT_RUN.match(line_before):
            continue
        assert block[1] == "python", f"a {block[1]} block neither run nor saying why not"
        code.append(block[2])
    assert code, "docs/tracing.md has no python block"
    return "\n".join(code)


def test_the_docs_example_runs_and_jaeger_shows_what_the_docs_say(
    jaeger: Jaeger, tmp_path: Path
) -> None:
    code = _docs_code()
    assert code.count("http://localhost:4318") == 1
    done = subprocess.run(
        [sys.executable, "-c", code.replace("http://localhost:4318", jaeger.otlp)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "flowdeco:" not in done.stderr, done.stderr
    assert done.stdout.splitlines() == [
        str({"orders": "succeeded", "prices": "succeeded", "total": "failed", "report": "skipped"}),
        str({"orders": "cached", "prices": "cached", "total": "failed", "report": "skipped"}),
    ]
    operations = _json(f"{jaeger.query}/api/services/shop/operations")["data"]
    assert set(operations) == {
        "flowdeco.run shop",
        "shop.orders",
        "shop.prices",
        "shop.total",
        "shop.report (skipped)",
        "shop.orders (cached)",
        "shop.prices (cached)",
    }

    def both() -> list[dict[str, Any]]:
        traces = _json(f"{jaeger.query}/api/traces?service=shop&limit=10")["data"]
        return traces if [len(t["spans"]) for t in traces] == [5, 5] else []

    for trace in _until(both, "the docs' two traces"):
        spans = {s["operationName"]: s for s in trace["spans"]}
        (root,) = [s for s in trace["spans"] if not s["references"]]
        assert root["operationName"] == "flowdeco.run shop"
        for span in trace["spans"]:
            if span is not root:
                assert span["references"][0]["spanID"] == root["spanID"]
        failed = spans["shop.total"]
        tags = _tags(failed)
        assert tags["error"] is True
        assert tags["otel.status_description"] == "KeyError: 'gizmo'"
        assert [_fields(log)["event"] for log in failed["logs"]] == ["exception"]
        skipped = spans["shop.report (skipped)"]
        assert [r["spanID"] for r in skipped["references"] if r["refType"] == "FOLLOWS_FROM"] == [
            failed["spanID"]
        ]
        run = _tags(root)
        assert (run["flowdeco.run.failed"], run["flowdeco.run.skipped"]) == (1, 1)
        assert json.loads(run["flowdeco.run.failed_nodes"]) == ["total"]
        assert {"shop.orders", "shop.orders (cached)"} & set(spans)
