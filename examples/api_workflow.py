"""An API workflow: async nodes calling an HTTP API concurrently, with timeouts and retries.

Run it with ``python examples/api_workflow.py``: it starts a small HTTP server of its own
on 127.0.0.1 (in a thread, stopped at the end), so it needs no network. The server is
made awkward on purpose: ``/rates`` answers 503 twice before it works, and the first call
to ``/recommendations`` hangs for a second.

- ``orders`` fetches every user's orders at once (a task group inside one async node);
- ``rates`` is retried with backoff on 503;
- ``recommendations`` has a 0.3 s timeout per attempt and one retry;
- the fetching nodes say ``cache=False`` (what a server says can change), so a second run
  calls the API again; ``summary`` gets the same bytes, so it is reused (early cutoff).

Checkpoints go to ``$FLOWDECO_STORE`` if it is set, else to a temporary directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio

import flowdeco as fd

USERS = [{"id": i, "name": name} for i, name in enumerate(["ada", "grace", "alan", "edsger"], 1)]


class HTTPError(Exception):
    """The API answered with a status other than 200."""

    def __init__(self, path: str, status: int) -> None:
        super().__init__(f"GET {path}: HTTP {status}")
        self.status = status


async def get_json(api: str, path: str) -> Any:
    """GET ``path`` from ``api`` (``host:port``) and decode its JSON: a minimal async
    HTTP/1.0 client on anyio's sockets, so a timeout can cancel it mid-request."""
    host, port = api.rsplit(":", 1)
    async with await anyio.connect_tcp(host, int(port)) as stream:
        await stream.send(f"GET {path} HTTP/1.0\r\nHost: {api}\r\n\r\n".encode())
        data = b""
        async for chunk in stream:
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        raise HTTPError(path, status)
    return json.loads(body)


@fd.node(cache=False, timeout=2, retries=1)
async def users(api: str) -> list[dict[str, Any]]:
    """Who the users are."""
    result: list[dict[str, Any]] = await get_json(api, "/users")
    return result


@fd.node(cache=False, timeout=2)
async def orders(users: list[dict[str, Any]], api: str) -> dict[int, list[dict[str, Any]]]:
    """Every user's orders, fetched concurrently: one request per user, all at once."""
    found: dict[int, list[dict[str, Any]]] = {}

    async def fetch(user_id: int) -> None:
        found[user_id] = await get_json(api, f"/users/{user_id}/orders")

    async with anyio.create_task_group() as tg:
        for user in users:
            tg.start_soon(fetch, user["id"])
    return dict(sorted(found.items()))


@fd.node(cache=False, retries=3, retry_delay=0.05, backoff=2.0, retry_on=(HTTPError,))
async def rates(api: str) -> dict[str, float]:
    """Exchange rates; the endpoint is flaky, so 503s are retried with backoff."""
    result: dict[str, float] = await get_json(api, "/rates")
    return result


@fd.node(cache=False, timeout=0.3, retries=1)
async def recommendations(users: list[dict[str, Any]], api: str) -> list[str]:
    """Suggestions; an attempt that takes over 0.3 s is cancelled and tried again."""
    result: list[str] = await get_json(api, "/recommendations")
    return result


@fd.node(run_in="inline")
def summary(
    users: list[dict[str, Any]],
    orders: dict[int, list[dict[str, Any]]],
    rates: dict[str, float],
    recommendations: list[str],
) -> str:
    """Spend per user in USD, and the suggestions."""
    lines = []
    for user in users:
        eur = sum(order["total"] for order in orders[user["id"]])
        lines.append(
            f"  {user['name']:<7} {len(orders[user['id']])} orders {eur * rates['USD']:8.2f} USD"
        )
    lines.append(f"  suggested: {', '.join(recommendations)}")
    return "\n".join(lines)


pipeline = fd.Pipeline.from_namespace(globals(), name="api_workflow")


class API(BaseHTTPRequestHandler):
    """The awkward API: counts calls, and tracks how many order requests overlap."""

    lock = threading.Lock()
    calls: dict[str, int] = {}  # noqa: RUF012 - the server's state, shared by its threads
    in_flight = 0
    peak = 0

    def do_GET(self) -> None:
        with API.lock:
            API.calls[self.path] = n = API.calls.get(self.path, 0) + 1
        if self.path == "/users":
            self.reply(200, USERS)
        elif self.path.startswith("/users/") and self.path.endswith("/orders"):
            with API.lock:
                API.in_flight += 1
                API.peak = max(API.peak, API.in_flight)
            time.sleep(0.1)  # a slow backend: concurrency is what makes this fast
            with API.lock:
                API.in_flight -= 1
            user = int(self.path.split("/")[2])
            self.reply(200, [{"id": f"{user}-{k}", "total": 10.0 * user + k} for k in range(user)])
        elif self.path == "/rates":
            if n <= 2:
                self.reply(503, {})
            else:
                self.reply(200, {"EUR": 1.0, "USD": 1.25})
        elif self.path == "/recommendations":
            if n == 1:
                time.sleep(1.0)  # the first call hangs past the node's timeout
            self.reply(200, ["kettle", "mug"])
        else:
            self.reply(404, {})

    def reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (a timeout)
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the example prints what matters."""


def main() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), API)
    server.daemon_threads = True  # a request still hanging does not hold the exit
    thread = threading.Thread(target=server.serve_forever, name="api", daemon=True)
    thread.start()
    api = f"127.0.0.1:{server.server_address[1]}"
    try:
        with tempfile.TemporaryDirectory(prefix="flowdeco-api-") as scratch:
            store = os.environ.get("FLOWDECO_STORE") or os.path.join(scratch, "store")
            started = time.perf_counter()
            first = pipeline.run(inputs={"api": api}, store=store)
            took = time.perf_counter() - started
            print(f"first run ({took:.2f} s):")
            print(first["summary"])
            print(
                f"  attempts: rates {first.attempts['rates']}, recommendations {first.attempts['recommendations']}"
            )
            print(f"  order requests in flight at once: {API.peak} of {len(USERS)}")
            second = pipeline.run(inputs={"api": api}, store=store)
            print("second run: the API is called again (cache=False), the summary is reused")
            for name in pipeline.order:
                print(f"  {name:<16} {second.status[name]}")
            return 0 if first.ok and second.ok else 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


if __name__ == "__main__":
    sys.exit(main())
