"""The runnable examples run and print what the README says they print."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

EXAMPLES = Path(__file__).parent.parent / "examples"


def _demo(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run examples/orders.py in ``cwd``, where its checkpoints go."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "orders.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_orders_demo(tmp_path: Path) -> None:
    done = _demo(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert "5 succeeded" in done.stdout


def test_orders_demo_reuses_its_checkpoints_when_run_again(tmp_path: Path) -> None:
    """The second run reuses every node: the CSV's content is part of the key."""
    for _ in range(2):
        done = _demo(tmp_path)
        assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert "5 cached" in done.stdout
    assert len(list((tmp_path / ".flowdeco" / "runs").glob("orders-*"))) == 1


def test_orders_demo_sees_an_edited_csv(tmp_path: Path) -> None:
    """Editing the CSV (a Path input) re-runs what reads it, with the new figures."""
    csv_file = tmp_path / "orders.csv"
    original = (EXAMPLES / "orders.csv").read_text()
    csv_file.write_text(original)
    os.utime(csv_file, (time.time() - 60, time.time() - 60))
    first = _demo(tmp_path, str(csv_file))
    assert "total with VAT: 120.00" in first.stdout, first.stderr
    lines = original.splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    row[header.index("quantity")] = str(int(row[header.index("quantity")]) + 1)
    csv_file.write_text("\n".join([lines[0], ",".join(row), *lines[2:]]) + "\n")
    os.utime(csv_file, (time.time() - 30, time.time() - 30))
    edited = _demo(tmp_path, str(csv_file))
    assert edited.returncode == 0, edited.stderr
    assert "total with VAT: 123.00" in edited.stdout  # one more widget: 2.50 and VAT
    assert set(_statuses(edited.stdout).values()) == {"succeeded"}  # all depend on orders
    again = _demo(tmp_path, str(csv_file))
    assert "5 cached" in again.stdout


def _statuses(stdout: str) -> dict[str, str]:
    """Each node's status, from the demo's table of nodes."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if line.startswith("  ") and len(parts) >= 2 and parts[1] in ("succeeded", "cached"):
            found[parts[0]] = parts[1]
    return found


def test_orders_demo_reports_a_missing_file(tmp_path: Path) -> None:
    done = _demo(tmp_path, str(tmp_path / "nope.csv"))
    assert done.returncode != 0
    assert "NodeFailed: node 'orders' failed: FileNotFoundError" in done.stderr


def test_orders_demo_prints_spans_with_trace(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--trace")
    assert done.returncode == 0, done.stderr
    assert "total with VAT: 120.00" in done.stdout
    assert '"name": "flowdeco.run orders"' in done.stderr
    for name in ("orders", "prices", "by_customer", "total", "report"):
        assert f'"name": "orders.{name}"' in done.stderr


# -- The workflow examples: each runs offline, in a few seconds, and leaves nothing behind --


def _example(name: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>.py`` in ``cwd`` with no ``FLOWDECO_STORE``: it must use a
    temporary store of its own."""
    environment = {k: v for k, v in os.environ.items() if k != "FLOWDECO_STORE"}
    environment.update(env)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py")],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert list(cwd.iterdir()) == [], "the example wrote into the working directory"
    return done


def test_order_processing(tmp_path: Path) -> None:
    out = _example("order_processing", tmp_path).stdout
    first, again = out.split("same order again")
    assert "payment: attempt 1 failed (gateway busy), retrying in 0.05 s" in first
    assert "payment: attempt 2 failed (gateway timeout), retrying in 0.10 s" in first
    assert "payment took 3 attempts" in first
    assert "email to ada@example.com: Order A1001 confirmed: INV-A1001, 37.50 EUR" in first
    assert "attempt" not in again  # the payment is reused: the card is not charged twice
    statuses = _statuses(again)
    assert statuses["email_customer"] == statuses["audit"] == "succeeded"
    assert {statuses[n] for n in statuses if n not in ("email_customer", "audit")} == {"cached"}
    assert "email to ada@example.com" in again and "audit: order A1001" in again


def test_data_pipeline(tmp_path: Path) -> None:
    out = _example("data_pipeline", tmp_path).stdout
    assert "cold run: 7 succeeded" in out
    assert "warm run: 7 cached" in out
    assert "after editing a dropped row: 2 succeeded, 5 cached" in out  # early cutoff
    assert "raw: ran: input 'source' changed (sales.csv content)" in out
    assert "report: reused: same code and inputs as run " in out
    assert "after editing a valid row: 7 succeeded" in out
    assert "aggregated: ran: parent 'transformed' has a new value" in out
    assert "north    298 units    5505.00 EUR" in out  # five kettles more


def test_api_workflow(tmp_path: Path) -> None:
    out = _example("api_workflow", tmp_path).stdout
    assert "edsger  4 orders   207.50 USD" in out
    assert "attempts: rates 3, recommendations 2" in out  # two 503s; one timeout
    peak = int(out.split("order requests in flight at once: ")[1].split()[0])
    assert peak >= 2, out  # the orders of different users were fetched concurrently
    second = out.split("second run")[1]
    assert "summary          cached" in second
    assert "users            succeeded" in second  # cache=False: the API is asked again


def test_error_handling(tmp_path: Path) -> None:
    out = _example("error_handling", tmp_path).stdout
    assert "NodeFailed: node 'charge' failed: ValueError: card 4000-0000-0000-0002 declined" in out
    assert "caused by: ValueError" in out
    assert "statuses: order cached, charge failed, pick_list succeeded, receipt skipped" in out
    assert "flaky = 'answered' after 3 attempts" in out
    assert "NodeTimeoutError: node 'slow_service' timed out after 0.2s (attempt 1)" in out
    assert "first run: node 'upload' failed: ConnectionError: upload service unavailable" in out
    assert "resumed run: upload = 'uploaded 42'" in out
    assert "expensive: reused: finished in run " in out
    assert "expensive ran 1 time(s) in all" in out


def test_comprehensive_traces_to_the_console(tmp_path: Path) -> None:
    done = _example("comprehensive", tmp_path)
    out = done.stdout
    assert "spans go to the console (stderr)" in out
    assert "cold run: 9 ran, 0 reused, 9 calls seen" in out
    assert "warm run: 4 ran, 5 reused, 4 calls seen" in out
    assert "published_at: ran: cache=False" in out
    assert "anomalies    succeeded  ran: input 'threshold' changed" in out
    assert "8 anomalies at [12, 16, 17, 27, 39, 43, 45, 46]" in out
    assert done.stderr.count('"name": "flowdeco.run comprehensive"') == 3
    for node in ("readings", "calibrated", "stats", "anomalies", "report", "publish"):
        assert f'"name": "comprehensive.{node}' in done.stderr  # cached ones say so after


def test_comprehensive_traces_over_otlp_when_an_endpoint_is_set(tmp_path: Path) -> None:
    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":  # metrics go to /v1/metrics
                received.append(body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        done = _example(
            "comprehensive",
            tmp_path,
            OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        )
    finally:
        server.shutdown()
        server.server_close()
    assert f"spans go to OTLP at {endpoint}" in done.stdout
    names = set()
    for body in received:
        request = ExportTraceServiceRequest.FromString(body)
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                names.update(span.name for span in scope.spans)
    assert {"flowdeco.run comprehensive", "comprehensive.calibrated"} <= names
    assert '"name"' not in done.stderr  # nothing went to the console
