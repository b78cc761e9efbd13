"""A checkpointed pipeline for the durability tests, to be killed, interrupted or raced.

Usage: python crash_pipeline.py SHAPE SEED [resume] [wait]

SHAPE is ``layered`` (30 nodes in random layers, a mix of inline, thread and async nodes
that sleep 5 to 60 ms each, so a run lasts about a second) or ``many`` (200 inline nodes
that take a fraction of a millisecond each, so the run is mostly the writer saving them).
SEED fixes the graph, the kinds and the sleeps: every process given the same arguments
builds the same pipeline, with the same code versions and so the same keys. ``resume``
runs with ``resume=True``; ``wait`` waits for a file ``go`` to appear before the run starts,
so that two processes can start their runs at the same moment.

The store is ``.flowdeco`` in the working directory. Every node appends ``"<node> <pid>"``
to ``ran.txt`` there when its body starts. Prints ``running`` just before the run starts (or
waits), then, if it ends, one JSON line: every node's value and status. A CheckpointWarning
is an error: the process then exits non-zero with it on stderr.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import time
import warnings
from typing import Any, Literal

import anyio

import flowdeco as fd

SIDE_FILE = "ran.txt"
MODULUS = 1_000_000_007


def mark(name: str) -> None:
    """Record that the body of ``name`` runs, in this process, in one append."""
    with open(SIDE_FILE, "a") as f:
        f.write(f"{name} {os.getpid()}\n")


def total_of(value: Any) -> int:
    """The number a node's value stands for, whichever shape it has."""
    if isinstance(value, int):
        return value
    if isinstance(value, list):
        return int(value[-1])
    return int(value["total"])


def compute(index: int, parents: list[Any]) -> Any:
    """The value of node ``index``: an int, a list or a dict, from its parents' values."""
    total = index + 1
    for value in parents:
        total = (total * 31 + total_of(value)) % MODULUS
    shape = index % 3
    if shape == 0:
        return total
    if shape == 1:  # a few kilobytes packed, so that writes take a share of the run
        return [index, len(parents), *(total * (k + 1) % 1009 for k in range(1000)), total]
    return {"node": index, "parents": [total_of(v) % 97 for v in parents], "total": total}


def present(*values: Any) -> list[Any]:
    """The parents' values: parameters past a node's parent count keep their default None."""
    return [v for v in values if v is not None]


def make_node(index: int, parents: list[str], kind: str, pause: float) -> fd.Node[..., Any]:
    """Node ``n<index>`` reading ``parents`` through parameters p0, p1, p2 (renamed)."""
    name = f"n{index:03d}"
    renames = {f"p{j}": parent for j, parent in enumerate(parents)}
    if kind == "async":

        async def run_async(p0: Any = None, p1: Any = None, p2: Any = None) -> Any:
            mark(name)
            await anyio.sleep(pause)
            return compute(index, present(p0, p1, p2))

        return fd.node(name=name, inputs=renames)(run_async)

    def run_sync(p0: Any = None, p1: Any = None, p2: Any = None) -> Any:
        mark(name)
        time.sleep(pause)
        return compute(index, present(p0, p1, p2))

    run_in: Literal["inline", "thread"] = "inline" if kind == "inline" else "thread"
    return fd.node(name=name, inputs=renames, run_in=run_in)(run_sync)


def layered(seed: int) -> list[fd.Node[..., Any]]:
    """30 nodes in layers of 1 to 3; each reads one node of the layer before and up to two
    earlier ones."""
    rng = random.Random(seed)
    nodes: list[fd.Node[..., Any]] = []
    layers: list[list[str]] = []
    index = 0
    while index < 30:
        layer = []
        for _ in range(min(rng.randint(1, 3), 30 - index)):
            parents: list[str] = []
            if layers:
                parents.append(rng.choice(layers[-1]))
                earlier = sorted({n for previous in layers for n in previous} - set(parents))
                parents += rng.sample(earlier, min(len(earlier), rng.randint(0, 2)))
            kind = rng.choice(["inline", "thread", "async"])
            nodes.append(make_node(index, parents, kind, rng.uniform(0.005, 0.06)))
            layer.append(nodes[-1].name)
            index += 1
        layers.append(layer)
    return nodes


def many(seed: int) -> list[fd.Node[..., Any]]:
    """200 inline nodes, each reading one or two of the ten nodes before it."""
    rng = random.Random(seed)
    nodes: list[fd.Node[..., Any]] = []
    for index in range(200):
        names = [n.name for n in nodes[-10:]]
        parents = rng.sample(names, min(len(names), rng.randint(1, 2)))
        nodes.append(make_node(index, parents, "inline", rng.uniform(0.0, 0.001)))
    return nodes


def main() -> None:
    # Python leaves SIGINT ignored when it starts ignored, as in a shell's background job.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    shape, seed = sys.argv[1], int(sys.argv[2])
    warnings.simplefilter("error", fd.CheckpointWarning)
    nodes = layered(seed) if shape == "layered" else many(seed)
    pipe = fd.Pipeline(nodes, name=f"crash-{shape}-{seed}")
    options = sys.argv[3:]
    sys.stdout.write("running\n")
    sys.stdout.flush()
    while "wait" in options and not os.path.exists("go"):
        time.sleep(0.0005)
    result = pipe.run(resume="resume" in options)
    report = {
        "values": result.values,
        "status": {name: str(status) for name, status in result.status.items()},
    }
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
