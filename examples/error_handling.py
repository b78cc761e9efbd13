"""Failures, handled as you say: ``on_error="raise"`` and ``"continue"``, retries, a
timeout, and resuming a run after a failure.

Run it with ``python examples/error_handling.py``. Each part prints what happened:

1. ``on_error="raise"`` (the default): the first failure stops the run and raises
   ``fd.NodeFailed``, which names the node, chains the error and carries the partial result;
2. ``on_error="continue"``: branches that do not depend on the failure finish, and the
   failed node's descendants are ``skipped``;
3. retries: a flaky node succeeds on its third attempt;
4. a timeout: an async node that takes too long fails with ``fd.NodeTimeoutError``;
5. resume: a run fails after an expensive node finished; once the cause is fixed, the run
   with ``resume=True`` reuses that node (even though it says ``cache=False``) and runs the
   rest.

Checkpoints go to ``$FLOWDECO_STORE`` if it is set, else to a temporary directory.
"""

from __future__ import annotations

import os
import queue
import sys
import tempfile
import threading
import time
from typing import Any

import anyio

import flowdeco as fd

# -- 1 and 2: one branch fails, the other does not ------------------------------------------


@fd.node
def order() -> dict[str, Any]:
    return {"id": "A1", "card": "4000-0000-0000-0002", "items": ["tea", "mug"]}


@fd.node
def charge(order: dict[str, Any]) -> str:
    raise ValueError(f"card {order['card']} declined")


@fd.node
def receipt(charge: str) -> str:
    return f"receipt for {charge}"


@fd.node
def pick_list(order: dict[str, Any]) -> list[str]:
    time.sleep(0.1)  # still running when the charge fails
    return sorted(order["items"])


shop = fd.Pipeline([order, charge, receipt, pick_list], name="shop")

# -- 3: retries -------------------------------------------------------------------------------

# Planned failures; a queue is versioned by its type, so taking from it is no code edit.
OUTAGES: queue.Queue[str] = queue.Queue()


@fd.node(retries=3, retry_delay=0.02, backoff=2.0, retry_on=(ConnectionError,), cache=False)
def flaky() -> str:
    try:
        raise ConnectionError(OUTAGES.get_nowait())
    except queue.Empty:
        return "answered"


# -- 4: a timeout -----------------------------------------------------------------------------


@fd.node(timeout=0.2, cache=False)
async def slow_service() -> str:
    await anyio.sleep(5)  # cancelled at the deadline: async nodes can be
    return "too late"


# -- 5: resume after a failure ----------------------------------------------------------------

SERVICE_UP = threading.Event()  # an event is versioned by its type: setting it is no edit
CALLS: queue.Queue[str] = queue.Queue()  # records each call of the expensive node


@fd.node(cache=False)
def expensive() -> int:
    """Slow work that must not be repeated for nothing; cache=False: it runs every run,
    unless a run resumes one where it finished."""
    CALLS.put("expensive")
    time.sleep(0.1)
    return 42


@fd.node
def upload(expensive: int) -> str:
    if not SERVICE_UP.is_set():
        raise ConnectionError("upload service unavailable")
    return f"uploaded {expensive}"


def part(title: str) -> None:
    print(f"\n{title}")


def statuses(result: fd.RunResult) -> str:
    return ", ".join(f"{name} {status}" for name, status in result.status.items())


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="flowdeco-errors-") as scratch:
        store = os.environ.get("FLOWDECO_STORE") or os.path.join(scratch, "store")

        part('1. on_error="raise": the first failure stops the run')
        try:
            shop.run(store=store)
        except fd.NodeFailed as failed:
            print(f"  NodeFailed: {failed}")
            print(f"  caused by: {type(failed.__cause__).__name__}")
            print(f"  statuses: {statuses(failed.result)}")

        part('2. on_error="continue": independent branches finish')
        result = shop.run(store=store, on_error="continue")
        print(f"  statuses: {statuses(result)}")
        print(f"  pick_list = {result['pick_list']}, errors: {list(result.errors)}")

        part("3. retries: a flaky node succeeds on its third attempt")
        for outage in ("connection reset", "connection refused"):
            OUTAGES.put(outage)
        retried = fd.Pipeline([flaky], name="retries").run(store=store)
        print(f"  flaky = {retried['flaky']!r} after {retried.attempts['flaky']} attempts")

        part("4. a timeout: an attempt that takes too long fails")
        try:
            fd.Pipeline([slow_service], name="timeout").run(store=store)
        except fd.NodeFailed as failed:
            print(f"  {type(failed.error).__name__}: {failed.error}")

        part("5. resume: fix the cause, run again, and finished work is reused")
        jobs = fd.Pipeline([expensive, upload], name="resume")
        try:
            jobs.run(store=store)
        except fd.NodeFailed as failed:
            print(f"  first run: {failed}")
        SERVICE_UP.set()
        resumed = jobs.run(store=store, resume=True)
        print(f"  resumed run: upload = {resumed['upload']!r}")
        print(f"  expensive: {resumed.explain('expensive')}")
        print(f"  expensive ran {CALLS.qsize()} time(s) in all")
        return 0 if resumed.ok else 1


if __name__ == "__main__":
    sys.exit(main())
