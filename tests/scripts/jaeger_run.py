"""Traced runs for ``tests/test_jaeger.py``: failures, retries, cached and skipped nodes.

Usage: python jaeger_run.py URL SERVICE

Calls ``fd.tracing.setup(service_name=SERVICE, endpoint=URL)``, then runs, with the store
in the working directory:

1. ``orders`` under ``on_error="continue"``: ``flaky`` succeeds at its third attempt,
   ``broken`` fails, ``invoice`` (its child) is skipped, the rest succeed;
2. ``orders`` again: what succeeded comes from checkpoints, ``broken`` fails again;
3. ``audit``, another pipeline with a node named ``load`` too: it succeeds;
4. ``orders`` under ``on_error="raise"``: it raises ``NodeFailed``, and ``invoice`` never
   starts.

Prints one JSON line: per run, its pipeline, id, whether it raised, each node's status and
attempts; and each pipeline's edges (node: its direct parents). Exits normally: the SDK's
shutdown exports the metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import anyio

import flowdeco as fd

calls = {"flaky": 0}


@fd.node(run_in="thread")
def load(size: int) -> list[int]:
    time.sleep(0.01)
    return list(range(size))


@fd.node(run_in="inline", retries=2, retry_delay=0)
def flaky(load: list[int]) -> int:
    calls["flaky"] += 1
    if calls["flaky"] < 3:
        raise ConnectionError(f"attempt {calls['flaky']}: the price service hung up")
    return len(load)


@fd.node
async def prices(size: int) -> dict[str, float]:
    await anyio.sleep(0.01)
    return {"widget": 2.5, "gadget": 4.0 * size}


@fd.node(run_in="inline")
def broken(prices: dict[str, float]) -> float:
    raise ValueError("no price for 'gizmo'")


@fd.node(run_in="inline")
def invoice(broken: float, flaky: int) -> str:
    return f"{broken * flaky:.2f}"


@fd.node(run_in="inline")
def summary(load: list[int], prices: dict[str, float]) -> str:
    return f"{len(load)} rows, {len(prices)} prices"


@fd.node(name="load", run_in="inline")
def audit_load(size: int) -> int:
    return size


@fd.node(run_in="inline")
def checked(load: int) -> bool:
    return load > 0


ORDERS = fd.Pipeline([load, flaky, prices, broken, invoice, summary], name="orders")
AUDIT = fd.Pipeline([audit_load, checked], name="audit")


def run(pipe: fd.Pipeline, on_error: Any) -> dict[str, Any]:
    try:
        result = pipe.run({"size": 3}, on_error=on_error)
        raised = False
    except fd.NodeFailed as failed:
        result, raised = failed.result, True
    return {
        "pipeline": pipe.name,
        "run_id": result.run_id,
        "raised": raised,
        "status": {name: str(status) for name, status in result.status.items()},
        "attempts": dict(result.attempts),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("service")
    args = parser.parse_args()
    fd.tracing.setup(service_name=args.service, endpoint=args.url)
    runs = [
        run(ORDERS, "continue"),
        run(ORDERS, "continue"),
        run(AUDIT, "continue"),
        run(ORDERS, "raise"),
    ]
    edges = {
        pipe.name: {name: sorted(pipe.upstream(name, direct=True)) for name in pipe.nodes}
        for pipe in (ORDERS, AUDIT)
    }
    sys.stdout.write(json.dumps({"runs": runs, "edges": edges}) + "\n")


if __name__ == "__main__":
    main()
