"""The demo pipeline: read orders, look up prices concurrently, total them per customer.

Run it with ``python examples/orders.py``; add ``--trace`` to print each node's
OpenTelemetry span to stderr. Each function is a node; a parameter named like another node
receives that node's value, any other parameter is an input of the run.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path

import anyio

import flowdeco as fd

CATALOGUE = {"widget": 2.50, "gadget": 12.00, "gizmo": 7.25}


@fd.node
def orders(source: Path) -> list[dict[str, str]]:
    """Read the order lines (a sync node: it runs in a worker thread).

    ``source`` is a ``Path``, so the file's content is part of the node's key: edit the
    CSV and this node, and what depends on it, runs again.
    """
    with source.open(newline="") as f:
        return list(csv.DictReader(f))


@fd.node
async def prices(orders: list[dict[str, str]]) -> dict[str, float]:
    """Look up each distinct product's price at once (an async node, awaited in the loop)."""

    async def lookup(sku: str) -> None:
        await anyio.sleep(0.05)  # stands in for an HTTP call
        found[sku] = CATALOGUE[sku]

    found: dict[str, float] = {}
    async with anyio.create_task_group() as tg:
        for sku in {line["sku"] for line in orders}:
            tg.start_soon(lookup, sku)
    return found


@fd.node(inputs={"lines": "orders"}, run_in="inline")
def by_customer(lines: list[dict[str, str]], prices: dict[str, float]) -> dict[str, float]:
    """Sum each customer's spend (cheap, so it runs inline in the event loop)."""
    totals: dict[str, float] = {}
    for line in lines:
        amount = prices[line["sku"]] * int(line["quantity"])
        totals[line["customer"]] = totals.get(line["customer"], 0.0) + amount
    return totals


@fd.node(run_in="inline")
def total(by_customer: dict[str, float], vat: float = 0.2) -> float:
    """The grand total with VAT; ``vat`` is an optional input of the run."""
    return round(sum(by_customer.values()) * (1 + vat), 2)


@fd.node(after=["total"], run_in="inline")
def report(by_customer: dict[str, float], total: float) -> str:
    """A printable summary."""
    lines = [f"  {name:<8} {amount:8.2f}" for name, amount in sorted(by_customer.items())]
    return "\n".join(["spend per customer (before VAT):", *lines, f"total with VAT: {total:.2f}"])


pipeline = fd.Pipeline.from_namespace(globals(), name="orders")


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--trace"]
    if "--trace" in sys.argv[1:]:
        fd.tracing.setup(service_name="orders-demo", exporter="console")
    source = Path(args[0]) if args else Path(__file__).with_name("orders.csv")
    started = time.perf_counter()
    result = pipeline.run(inputs={"source": source}, outputs=["report", "total"])
    print(result["report"])
    print()
    print(result)
    for name in pipeline.order:
        took = result.durations.get(name)  # none for a node served from its checkpoint
        shown = "" if took is None else f"{took * 1000:7.2f} ms"
        print(f"  {name:<12} {result.status[name]!s:<10} {shown}")
    print(f"wall time {time.perf_counter() - started:.3f}s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
