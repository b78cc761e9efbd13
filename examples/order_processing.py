"""Order processing: validate, then check stock and take payment at once, allocate, then
invoice and book the shipment at once, then confirm.

Run it with ``python examples/order_processing.py``. It shows:

- sync and async nodes side by side (async ones share the event loop, sync ones get worker
  threads), and independent nodes running in parallel;
- a flaky payment gateway, retried with backoff (a hook prints each retry);
- side effects (an email, an audit line): nodes annotated ``-> None`` run on every run,
  while everything else is reused from its checkpoint when the same order comes again,
  so the card is not charged twice.

Checkpoints go to ``$FLOWDECO_STORE`` if it is set, else to a temporary directory.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
from typing import Any

import anyio

import flowdeco as fd

# Two planned failures of the payment gateway. A queue is versioned by its type only, so
# taking items from it does not count as an edit of the code that reads it.
GATEWAY_ERRORS: queue.Queue[str] = queue.Queue()
PRICES = {"tea": 4.5, "mug": 12.0, "kettle": 39.0}
STOCK = {"tea": 120, "mug": 8, "kettle": 3}


@fd.node
def validated(order: dict[str, Any]) -> dict[str, Any]:
    """Refuse an order that cannot be processed; price its lines."""
    if not order.get("lines"):
        raise ValueError(f"order {order.get('id')} has no lines")
    lines = [{**line, "price": PRICES[line["sku"]]} for line in order["lines"]]
    total = round(sum(line["price"] * line["qty"] for line in lines), 2)
    return {**order, "lines": lines, "total": total}


@fd.node
async def inventory(validated: dict[str, Any]) -> dict[str, int]:
    """Reserve stock (an async call to the warehouse, in parallel with the payment)."""
    await anyio.sleep(0.1)
    short = [line["sku"] for line in validated["lines"] if STOCK[line["sku"]] < line["qty"]]
    if short:
        raise LookupError(f"out of stock: {', '.join(short)}")
    return {line["sku"]: line["qty"] for line in validated["lines"]}


@fd.node(retries=3, retry_delay=0.05, backoff=2.0, retry_on=(ConnectionError,))
async def payment(validated: dict[str, Any]) -> str:
    """Charge the card; the gateway is flaky, so failed attempts are retried. The value
    (an authorization id) is stored: the same order again reuses it instead of charging."""
    await anyio.sleep(0.05)
    try:
        raise ConnectionError(GATEWAY_ERRORS.get_nowait())
    except queue.Empty:
        return f"auth-{validated['id']}-{int(validated['total'] * 100)}"


@fd.node
def allocation(
    validated: dict[str, Any], inventory: dict[str, int], payment: str
) -> dict[str, Any]:
    """Pick the warehouse once stock is held and the payment went through (sync)."""
    return {"order": validated["id"], "warehouse": "north", "items": inventory, "paid": payment}


@fd.node
def invoice(allocation: dict[str, Any], validated: dict[str, Any]) -> dict[str, Any]:
    """The invoice (sync, in parallel with the shipment)."""
    return {
        "number": f"INV-{validated['id']}",
        "total": validated["total"],
        "paid": allocation["paid"],
    }


@fd.node
async def shipment(allocation: dict[str, Any]) -> dict[str, str]:
    """Book a courier (async, in parallel with the invoice)."""
    await anyio.sleep(0.1)
    return {"carrier": "fastship", "tracking": f"FS{allocation['order']}X"}


@fd.node(run_in="inline")
def confirmation(
    invoice: dict[str, Any], shipment: dict[str, str], validated: dict[str, Any]
) -> str:
    """The message for the customer (cheap: it runs inline, in the event loop)."""
    return (
        f"Order {validated['id']} confirmed: {invoice['number']}, {invoice['total']:.2f} EUR, "
        f"tracking {shipment['tracking']}"
    )


@fd.node
def email_customer(confirmation: str, validated: dict[str, Any]) -> None:
    """A side effect: annotated ``-> None``, so it runs on every run."""
    print(f"  email to {validated['email']}: {confirmation}")


@fd.node
def audit(payment: str, validated: dict[str, Any]) -> None:
    """Another side effect: an audit line, written every run."""
    print(f"  audit: order {validated['id']} paid with {payment}")


class RetryPrinter(fd.Hooks):
    """Print each retry as it is scheduled (a hook observes; it does not change the run)."""

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        print(f"  {node}: attempt {attempt} failed ({error}), retrying in {delay:.2f} s")


pipeline = fd.Pipeline.from_namespace(globals(), name="order_processing")

ORDER = {
    "id": "A1001",
    "email": "ada@example.com",
    "lines": [{"sku": "tea", "qty": 3}, {"sku": "mug", "qty": 2}],
}


def show(result: fd.RunResult) -> None:
    for name in pipeline.order:
        print(f"  {name:<15} {result.status[name]!s:<10} {result.explain(name)}")


def main() -> int:
    for message in ("gateway busy", "gateway timeout"):
        GATEWAY_ERRORS.put(message)
    with tempfile.TemporaryDirectory(prefix="flowdeco-orders-") as scratch:
        store = os.environ.get("FLOWDECO_STORE") or os.path.join(scratch, "store")
        print("first run:")
        result = pipeline.run(inputs={"order": ORDER}, store=store, hooks=[RetryPrinter()])
        show(result)
        print(f"  payment took {result.attempts['payment']} attempts")
        print("same order again: only the side effects run")
        again = pipeline.run(inputs={"order": ORDER}, store=store, hooks=[RetryPrinter()])
        show(again)
        print(f"  {again!r}")
        return 0 if result.ok and again.ok else 1


if __name__ == "__main__":
    sys.exit(main())
