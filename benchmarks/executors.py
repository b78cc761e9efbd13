"""Executors: thread nodes' hand-off, CPU-bound nodes in processes, a process node's round trip.

Run ``python benchmarks/executors.py [--quick] [--append docs/performance.md]``; see
``benchmarks/README.md``. Each figure is set against a floor timed in the same run,
interleaved repeat by repeat:

1. thread nodes (the default for sync nodes), µs per node, against a
   ``concurrent.futures.ThreadPoolExecutor`` fed by readiness counts: a node is submitted
   when its last parent's future is done, and the caller waits for the results;
2. 8 CPU-bound nodes of about 0.5 s each: ``executor="process"`` against threads (wall
   time, workers started by the run included);
3. a chain of process nodes on a warm ``fd.ProcessExecutor``, µs per node, against
   ``ProcessPoolExecutor.submit(f, value).result()`` of the same function and value.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import queue
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from overhead import (
    GRAPHS,
    Graph,
    Stat,
    Variant,
    build,
    environment,
    generate,
    identity,
    load_average,
    n_label,
    plain_floor,
    put_section,
    timed,
)

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MARKER = "<!-- benchmarks/executors.py -->"
THREAD_TARGET = 1.5  # thread nodes / ThreadPoolExecutor floor, at most
CPU_TARGET = 1.8  # process executor's speed-up over threads, at least
ROUND_TRIP_TARGET = 1.5  # process node / bare ProcessPoolExecutor round trip, at most
CPU_NODES = 8
CPU_SECONDS = 0.5


# -- 1. thread nodes -------------------------------------------------------------------------


def pool_floor(
    graph: Graph, funcs: Sequence[Callable[..., Any]], x: int, pool: concurrent.futures.Executor
) -> list[Any]:
    """Each node submitted to ``pool`` once its parents' values are in (readiness counts)."""
    values: list[Any] = [None] * graph.n
    waiting = [len(ps) for ps in graph.parents]
    parents, children = graph.parents, graph.children
    finished: queue.SimpleQueue[tuple[int, concurrent.futures.Future[Any]]] = queue.SimpleQueue()

    def submit(i: int) -> None:
        args = [values[p] for p in parents[i]] if parents[i] else [x]
        future = pool.submit(funcs[i], *args)
        future.add_done_callback(lambda f: finished.put((i, f)))

    running = 0
    for i, count in enumerate(waiting):
        if count == 0:
            submit(i)
            running += 1
    while running:
        i, future = finished.get()
        running -= 1
        values[i] = future.result()
        for child in children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                submit(child)
                running += 1
    return values


def thread_nodes(n: int, repeats: int) -> dict[tuple[str, str], dict[str, Stat]]:
    """flowdeco's thread nodes on each shape and backend against the pool floor."""
    found = {}
    with concurrent.futures.ThreadPoolExecutor(fd.DEFAULT_CONCURRENCY) as pool:
        for shape in ("chain", "fan", "dag"):
            for backend in ("asyncio", "trio"):
                found[shape, backend] = thread_shape(GRAPHS[shape](n), backend, pool, repeats)
    return found


def thread_shape(
    graph: Graph, backend: str, pool: concurrent.futures.Executor, repeats: int
) -> dict[str, Stat]:
    """Thread nodes on one graph and backend, and the pool floor, interleaved."""
    funcs, _ = generate(graph, is_async=False)
    outputs = [f"n{s}" for s in graph.sinks]
    values = plain_floor(graph, funcs, 1)
    pipe = build(funcs)
    return timed(
        {
            "flowdeco": Variant(
                lambda: pipe.run(inputs={"x": 1}, outputs=outputs, backend=backend),
                lambda r: [r[o] for o in outputs],
            ),
            "floor": Variant(
                lambda: pool_floor(graph, funcs, 1, pool), lambda v: [v[s] for s in graph.sinks]
            ),
        },
        [values[s] for s in graph.sinks],
        repeats,
        graph.n,
    )


# -- 2. CPU-bound nodes ----------------------------------------------------------------------


def burn(rounds: int) -> int:
    """Pure-Python CPU work: ``rounds`` steps of an LCG (the GIL is held throughout)."""
    x = 1
    for _ in range(rounds):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def rounds_for(seconds: float) -> int:
    """How many rounds of :func:`burn` take about ``seconds`` here."""
    rounds = 100_000
    while True:
        start = time.perf_counter()
        burn(rounds)
        took = time.perf_counter() - start
        if took > 0.05:
            return max(1, int(rounds * seconds / took))
        rounds *= 4


def cpu_pipeline(count: int, rounds: int, executor: str) -> fd.Pipeline:
    """``count`` independent nodes, each burning ``rounds``, on ``executor``."""
    nodes = []
    for k in range(count):

        def work(rounds: int) -> int:
            return burn(rounds)

        nodes.append(fd.node(name=f"work{k}", executor=executor)(work))
    return fd.Pipeline(nodes, store=None)


def cpu_bound(seconds: float, repeats: int) -> dict[str, Stat]:
    """Wall time of CPU_NODES nodes of ``seconds`` each, in processes and in threads, and of
    a bare ``ProcessPoolExecutor`` started for the same work: what the machine allows."""
    rounds = rounds_for(seconds)
    expected = burn(rounds)
    processes = cpu_pipeline(CPU_NODES, rounds, "process")
    threads = cpu_pipeline(CPU_NODES, rounds, "thread")

    def same(result: fd.RunResult) -> bool:
        return set(result.values.values()) == {expected}

    def bare() -> bool:
        with concurrent.futures.ProcessPoolExecutor() as pool:
            return set(pool.map(burn, [rounds] * CPU_NODES)) == {expected}

    return timed(
        {
            "process": Variant(lambda: processes.run(inputs={"rounds": rounds}), same),
            "thread": Variant(lambda: threads.run(inputs={"rounds": rounds}), same),
            "pool": Variant(bare, lambda ok: ok),
        },
        True,
        repeats,
        1,
    )


# -- 3. a process node's round trip ----------------------------------------------------------


def round_trips(n: int, repeats: int) -> dict[str, Stat]:
    """A chain of ``n`` process nodes against ``n`` bare round trips, both on warm pools.

    The function is ``overhead.identity``, which both import by reference (a function of
    this script's ``__main__`` would go to flowdeco's workers by value, with its globals).
    """
    value = b"x" * 100
    chain = [fd.node(name="n0")(identity)]  # reads the run's input `x`
    chain += [fd.node(name=f"n{i}", inputs={"x": f"n{i - 1}"})(identity) for i in range(1, n)]
    pipe = fd.Pipeline(chain, store=None)
    last = f"n{n - 1}"
    with (
        fd.ProcessExecutor(max_workers=1) as ours,
        concurrent.futures.ProcessPoolExecutor(max_workers=1) as bare,
    ):
        pipe.run(inputs={"x": value}, outputs=[last], executor=ours)  # warm up
        bare.submit(identity, value).result()

        def bare_chain() -> bytes:
            got = value
            for _ in range(n):
                got = bare.submit(identity, got).result()
            return got

        return timed(
            {
                "flowdeco": Variant(
                    lambda: pipe.run(inputs={"x": value}, outputs=[last], executor=ours),
                    lambda r: r[last],
                ),
                "floor": Variant(bare_chain, lambda v: v),
            },
            value,
            repeats,
            n,
        )


# -- report ----------------------------------------------------------------------------------


def report(
    threads: dict[tuple[str, str], dict[str, Stat]],
    n: int,
    cpu: dict[str, Stat],
    seconds: float,
    trips: dict[str, Stat],
    trip_n: int,
    command: str,
) -> tuple[str, list[tuple[str, str, bool]]]:
    """The markdown section, and each target with its figure and whether it was met."""
    checks: list[tuple[str, str, bool]] = []
    rows = []
    for (shape, backend), s in threads.items():
        r = s["flowdeco"].median / s["floor"].median
        rows.append(
            f"| {shape} | {backend} | {s['flowdeco'].cell()} | {s['floor'].cell()} | {r:.2f}x |"
        )
        if backend == "asyncio":
            checks.append(
                (
                    f"thread nodes / pool floor ≤ {THREAD_TARGET} ({shape})",
                    f"{r:.2f}x",
                    r <= THREAD_TARGET,
                )
            )
    speedup = cpu["thread"].median / cpu["process"].median
    bare = cpu["thread"].median / cpu["pool"].median
    checks.append(
        (f"processes ≥ {CPU_TARGET}x faster than threads", f"{speedup:.2f}x", speedup >= CPU_TARGET)
    )
    trip = trips["flowdeco"].median / trips["floor"].median
    checks.append(
        (
            f"process node / bare round trip ≤ {ROUND_TRIP_TARGET}",
            f"{trip:.2f}x",
            trip <= ROUND_TRIP_TARGET,
        )
    )
    targets = "\n".join(
        f"| {name} | {figure} | {'PASS' if ok else 'MISS'} |" for name, figure, ok in checks
    )

    def seconds_cell(stat: Stat) -> str:
        times = sorted(stat.times)
        return f"{statistics.median(times):.2f} ({times[0]:.2f}-{times[-1]:.2f})"

    text = f"""\
Measured by `{command}`; median (min-max) of repeated runs, each variant against its floor
in the same run, interleaved.

## Thread nodes (µs per node, {n_label(n)} nodes, `store=None`)

Floor: a `concurrent.futures.ThreadPoolExecutor({fd.DEFAULT_CONCURRENCY})` fed by
readiness counts (a node is submitted once its parents' futures are done).

| shape | backend | flowdeco thread nodes | floor: thread pool | flowdeco / floor |
|---|---|---:|---:|---:|
{chr(10).join(rows)}

## CPU-bound nodes (s, wall time)

{CPU_NODES} independent nodes of pure-Python work of about {seconds} s each, the run starting
its own workers; the last row, a `ProcessPoolExecutor` started for the same work (its
default size and start method), says what the machine allows:

| executor | wall time | speed-up |
|---|---:|---:|
| `executor="thread"` | {seconds_cell(cpu["thread"])} | 1.00x |
| `executor="process"` | {seconds_cell(cpu["process"])} | {speedup:.2f}x |
| bare `ProcessPoolExecutor().map` | {seconds_cell(cpu["pool"])} | {bare:.2f}x |

## A process node's round trip (µs per node, a chain of {n_label(trip_n)})

A 100-byte value through `overhead.identity`, on warm pools of one worker each:

| | per node |
|---|---:|
| flowdeco, `fd.ProcessExecutor(max_workers=1)` | {trips["flowdeco"].cell()} |
| floor: `ProcessPoolExecutor(1).submit(identity, value).result()` | {trips["floor"].cell()} |
| flowdeco / floor | {trip:.2f}x |

## Targets

| target | measured (median) | result |
|---|---|---|
{targets}
"""
    return text, checks


def main(argv: Sequence[str] | None = None) -> None:
    """Parse arguments, run the benchmark, print (and optionally append) the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small graphs, short work")
    parser.add_argument("--append", metavar="PATH", help="put the report in this markdown file")
    args = parser.parse_args(argv)
    quick = args.quick
    env = environment()
    for key, value in env.items():
        print(f"{key}: {value}", file=sys.stderr)
    n, repeats = (200, 3) if quick else (1_000, 9)
    threads = thread_nodes(n, repeats)
    seconds = 0.05 if quick else CPU_SECONDS
    cpu = cpu_bound(seconds, 2 if quick else 5)
    trip_n = 50 if quick else 500
    trips = round_trips(trip_n, 3 if quick else 7)
    env["Load average (1, 5, 15 min)"] += f"; {load_average()} at end"
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join(["python benchmarks/executors.py", *given])
    text, _ = report(threads, n, cpu, seconds, trips, trip_n, command)
    print(text)
    if args.append:
        put_section(Path(args.append), MARKER, "Executors", text, env)


if __name__ == "__main__":
    main()
