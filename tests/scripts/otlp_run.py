"""Call ``fd.tracing.setup()`` and run a small pipeline, for ``tests/test_otlp.py``.

Usage: python otlp_run.py URL [--service-name NAME] [--exporter otlp|console] [--setup-twice]
       [--runs N] [--linger SECONDS] [--exit-normally]

``URL`` is the collector's base URL, passed as ``endpoint=``; ``env`` passes no endpoint, so
the exporter reads ``OTEL_EXPORTER_OTLP_ENDPOINT``. ``setup`` installs a global provider,
which a process can do once: hence a process of its own.

Prints one JSON line: the provider's type (null when setup returned None), whether a second
setup returned the same provider, the last run's id and value, and how long each of the
``--runs`` runs took (s). ``--linger`` waits that long after the runs, for exports still
under way to end. Then leaves with ``os._exit``: no atexit handler runs (the SDK's shutdown
would flush the batch processor), so whatever the collector received was sent before the
run returned; ``--exit-normally`` exits as scripts do, the SDK's shutdown exporting the
metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import anyio

import flowdeco as fd


@fd.node(run_in="thread")
def load(size: int) -> list[int]:
    time.sleep(0.01)
    return list(range(size))


@fd.node
async def parse(size: int) -> int:
    await anyio.sleep(0.01)
    return size * 2


@fd.node(run_in="inline")
def report(load: list[int], parse: int) -> int:
    return sum(load) + parse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--service-name")
    parser.add_argument("--exporter", default="otlp", choices=["otlp", "console"])
    parser.add_argument("--setup-twice", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--linger", type=float, default=0.0)
    parser.add_argument("--exit-normally", action="store_true")
    args = parser.parse_args()

    endpoint = None if args.url == "env" else args.url
    provider = fd.tracing.setup(
        service_name=args.service_name, endpoint=endpoint, exporter=args.exporter
    )
    same = None
    if args.setup_twice:
        again = fd.tracing.setup(service_name="other", endpoint=endpoint, exporter=args.exporter)
        same = again is provider
    pipe = fd.Pipeline([load, parse, report], name="otlp")
    took = []
    for _ in range(args.runs):
        start = time.perf_counter()
        result = pipe.run({"size": 4}, cache=False)
        took.append(time.perf_counter() - start)
    time.sleep(args.linger)
    line = {
        "provider": None if provider is None else type(provider).__name__,
        "same": same,
        "run_id": result.run_id,
        "report": result["report"],
        "took": took,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    if not args.exit_normally:
        os._exit(0)


if __name__ == "__main__":
    main()
