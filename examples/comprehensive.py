"""Everything together: a traced, checkpointed pipeline with sync, async and inline nodes,
inputs and defaults, a renamed input, ordering, retries and a timeout, middleware, hooks,
an unstored resource, a clock read every run, side effects, output selection and explain.

Run it with ``python examples/comprehensive.py``. Spans go to the console (stderr) by
default; set ``OTEL_EXPORTER_OTLP_ENDPOINT`` (``http://localhost:4318`` for a local Jaeger,
with ``pip install -e '.[otlp]'``) to send them over OTLP instead. It runs three times: cold,
warm (only the clock and the side effects run), and with a new threshold, asking for the
report alone (only what the threshold changes runs). Checkpoints go to ``$FLOWDECO_STORE``
if it is set, else to a temporary directory.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import tempfile
import time
from typing import Any

import anyio

import flowdeco as fd


@fd.node
def readings(samples: int = 48, seed: int = 7) -> list[float]:
    """Sensor readings (a sync node: a worker thread runs it). Inputs with defaults."""
    rng = random.Random(seed)
    return [round(20 + rng.gauss(0, 1.5), 3) for _ in range(samples)]


@fd.node(checkpoint=False)
async def limiter() -> anyio.CapacityLimiter:
    """A resource, not a result: never stored (``checkpoint=False``). What reads it can still
    be reused: its version is the node's key."""
    return anyio.CapacityLimiter(4)


@fd.node(retries=2, retry_delay=0.01)
async def calibrated(
    readings: list[float], limiter: anyio.CapacityLimiter, offset: float = 0.5
) -> list[float]:
    """Calibrate in chunks through a remote service, at most four calls at once (async)."""
    chunks = [readings[i : i + 8] for i in range(0, len(readings), 8)]
    done: dict[int, list[float]] = {}

    async def calibrate(index: int, chunk: list[float]) -> None:
        async with limiter:
            await anyio.sleep(0.01)  # stands in for the service's round trip
            done[index] = [round(value - offset, 3) for value in chunk]

    async with anyio.create_task_group() as tg:
        for index, chunk in enumerate(chunks):
            tg.start_soon(calibrate, index, chunk)
    return [value for index in sorted(done) for value in done[index]]


@fd.node(inputs={"values": "calibrated"}, run_in="inline")
def stats(values: list[float]) -> dict[str, float]:
    """Summary statistics; parameter ``values`` reads node ``calibrated`` (a rename). Cheap,
    so it runs inline in the event loop."""
    return {
        "mean": round(statistics.fmean(values), 3),
        "stdev": round(statistics.stdev(values), 3),
        "max": max(values),
    }


@fd.node(timeout=2.0)
def anomalies(
    calibrated: list[float], stats: dict[str, float], threshold: float = 2.0
) -> list[int]:
    """Indices of readings more than ``threshold`` deviations from the mean (a per-attempt
    timeout: a thread that overruns is abandoned and the attempt fails)."""
    limit = threshold * stats["stdev"]
    return [i for i, value in enumerate(calibrated) if abs(value - stats["mean"]) > limit]


@fd.node(run_in="inline")
def report(stats: dict[str, float], anomalies: list[int]) -> str:
    return (
        f"mean {stats['mean']}, stdev {stats['stdev']}, {len(anomalies)} anomalies at {anomalies}"
    )


@fd.node(cache=False, run_in="inline")
def published_at() -> str:
    """Reads the clock: ``cache=False``, so it runs every run."""
    return time.strftime("%H:%M:%S")


@fd.node
def publish(report: str, published_at: str) -> None:
    """A side effect (``-> None``): it runs every run."""
    print(f"  published at {published_at}: {report}")


@fd.node(after=["publish"])
def archive(report: str) -> None:
    """Another effect, ordered after ``publish`` by ``after=`` (it reads nothing of it)."""
    print(f"  archived {len(report)} characters")


class Progress(fd.Hooks):
    """A hook: counts what ran and what was reused, as the run goes."""

    def __init__(self) -> None:
        self.ran = self.reused = 0

    def node_finished(self, node: str) -> None:
        self.ran += 1

    def node_cached(self, node: str) -> None:
        self.reused += 1


CALLS: list[str] = []


async def count_calls(call: fd.Call, call_next: fd.CallNext) -> Any:
    """A middleware: wraps every call of every node (reused nodes are not called)."""
    CALLS.append(call.node.name)
    return await call_next(call)


pipeline = fd.Pipeline(
    [readings, limiter, calibrated, stats, anomalies, report, published_at, publish, archive],
    name="comprehensive",
    defaults={"timeout": 10},  # every node's, unless its own says otherwise
    middleware=[count_calls],
    trace_inputs=True,  # spans record each input's type and size, never its value
)


def run(label: str, store: str, **options: Any) -> fd.RunResult:
    progress = Progress()
    CALLS.clear()
    result = pipeline.run(store=store, hooks=[progress], **options)
    print(f"{label}: {progress.ran} ran, {progress.reused} reused, {len(CALLS)} calls seen")
    return result


def main() -> int:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    fd.tracing.setup(
        service_name="flowdeco-comprehensive", exporter="otlp" if endpoint else "console"
    )
    print(f"spans go to {'OTLP at ' + endpoint if endpoint else 'the console (stderr)'}")
    with tempfile.TemporaryDirectory(prefix="flowdeco-all-") as scratch:
        store = os.environ.get("FLOWDECO_STORE") or os.path.join(scratch, "store")
        cold = run("cold run", store)
        print(f"  report: {cold['report']}")
        warm = run("warm run", store)
        for name in ("readings", "calibrated", "published_at", "publish"):
            print(f"  {name}: {warm.explain(name)}")
        focused = run(
            "new threshold, report only", store, inputs={"threshold": 1.5}, outputs=["report"]
        )
        print(f"  report: {focused['report']}")
        for name in focused.status:
            print(f"  {name:<12} {focused.status[name]!s:<10} {focused.explain(name)}")
        return 0 if cold.ok and warm.ok and focused.ok else 1


if __name__ == "__main__":
    sys.exit(main())
