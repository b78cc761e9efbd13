"""What checkpoints cost for large values and for small ones: storing, loading, memory.

Run ``python benchmarks/values.py [--quick] [--dir PATH] [--append docs/performance.md]``.
Prints the environment and a markdown report to stdout, progress to stderr. Every figure is
set against a floor measured in the same run, as a ratio; the two are interleaved repeat by
repeat (which goes first alternates) and each figure is a median, with (min-max).

1. **Storing a large value**: a one-node pipeline returning a 100 MB value (10 MB with
   ``--quick``): a numpy float64 array, and a pandas DataFrame (four float64 columns and an
   int64 one). Storing costs the cold run into a fresh ``FileStore`` minus the same run with
   ``store=None`` (the node makes its value from random numbers in both); throughput is MB
   (10**6 bytes) over that. Floor: the same bytes packed by hand, ``msgpack.packb`` of the
   array's ``tobytes()`` (for the DataFrame: pyarrow IPC, if pyarrow is importable; without
   it, no floor), written to a temporary file and ``os.replace``-d into place. Target: at
   least 0.7x the floor's throughput. A value flowdeco cannot store yet (a
   ``CheckpointWarning`` says so) is reported as "not stored".
2. **Loading it**: a warm run asking for that node (``outputs=[node]``, cached), then one
   number read from each 4 KiB page of the value it returns, so a lazily mapped value is
   read in too. Floor: reading the hand-written file's bytes into a preallocated array
   (``readinto`` an ``np.empty``; for the DataFrame: pyarrow IPC read and ``to_pandas``),
   then the same one number per page. Target: at most 1.3x the floor.
3. **A warm run asked for one small output**: ``big1 -> big2 -> big3 -> report`` where the
   big nodes return 25 MB arrays (2.5 MB with ``--quick``) and ``report`` a small dict, all
   cached; ``outputs=["report"]``. Floor: a warm run of a pipeline of ``report`` alone, its
   input ``big3`` given as a 16-float array: the same small file read and key check, with
   no big value behind it. Target: at most 1.2x the floor. Also shown: what each run read
   (``rchar`` of ``/proc/self/io``: bytes read by the process's read calls, page cache or
   not).
4. **A warm small node**: a chain of 1,000 inline nodes (100 with ``--quick``), each
   returning a list of 11 floats (100 bytes packed), all cached; the warm run asks for every
   node and reads each value from its result. Per node: the run's time over the nodes.
   Floor per node: ``open`` + ``read`` + close of a file holding those 100 bytes and
   ``msgpack.unpackb``, for 1,000 such files in 256 subdirectories. Target: at most 2x.
5. **Memory**: a chain of four nodes each returning a new 300 MB float64 array made from
   the previous one (30 MB with ``--quick``) and a last node returning an int, the only
   output asked for. Peak RSS (``VmHWM``) of a fresh process per case: no store; a cold run
   into an empty ``FileStore``; a warm run, in another process, from that store. Target:
   cold and warm each at most 1.3x the run with no store.

Figures 1-3 and 5 use default (thread) nodes defined in this module, so that the processes
of figure 5 give them the same code versions. The directory is a temporary one under
``--dir`` (default: the working directory, where ``.flowdeco`` would be), removed at the
end. Files are read back right after being written: from the page cache, not the disk.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]
import numpy as np
from overhead import Stat, environment, fmt, put_section
from tracing import timed

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

MB = 10**6
PAGE = 4096
STORE_TARGET = 0.7  # at least this share of the floor's throughput
LOAD_TARGET = 1.3
SMALL_OUTPUT_TARGET = 1.2
SMALL_NODE_TARGET = 2.0
MEMORY_TARGET = 1.3
MS = 1_000  # a Stat of seconds over n=1,000 reads as milliseconds
MARKER = "<!-- benchmarks/values.py -->"


@dataclass(frozen=True)
class Sizes:
    value: int  # bytes of each value in figures 1-2
    big: int  # bytes of each big node's array in figure 3
    chain: int  # nodes in figure 4
    memory: int  # bytes of each array in figure 5
    repeats: int


FULL = Sizes(value=100 * MB, big=25 * MB, chain=1_000, memory=300 * MB, repeats=9)
QUICK = Sizes(value=10 * MB, big=25 * MB // 10, chain=100, memory=30 * MB, repeats=3)


# -- nodes (module level: a fresh process gives them the same code versions) ----------------


@fd.node
def array_value(seed: int, size: int) -> np.ndarray:
    """``size`` bytes of float64 random numbers."""
    return np.random.default_rng(seed).random(size // 8)


@fd.node
def frame_value(seed: int, size: int) -> Any:
    """A DataFrame of ``size`` bytes: four float64 columns and an int64 one."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = size // 40
    columns = {name: rng.random(rows) for name in "abcd"}
    return pd.DataFrame({**columns, "n": rng.integers(0, 1 << 40, rows)})


@fd.node
def big1(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).random(size // 8)


@fd.node
def big2(big1: np.ndarray) -> np.ndarray:
    return big1 + 1.0


@fd.node
def big3(big2: np.ndarray) -> np.ndarray:
    return big2 * 0.5


@fd.node
def report(big3: np.ndarray) -> dict[str, Any]:
    return {"mean": float(big3.mean()), "items": int(big3.size), "first": float(big3[0])}


@fd.node
def chunk1(seed: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).random(size // 8)


@fd.node
def chunk2(chunk1: np.ndarray) -> np.ndarray:
    return chunk1 + 1.0


@fd.node
def chunk3(chunk2: np.ndarray) -> np.ndarray:
    return chunk2 + 1.0


@fd.node
def chunk4(chunk3: np.ndarray) -> np.ndarray:
    return chunk3 + 1.0


@fd.node
def count(chunk4: np.ndarray) -> int:
    return int(chunk4.size)


def pipeline(nodes: Sequence[fd.Node[..., Any]], name: str) -> fd.Pipeline:
    """Checkpoints off unless a run gives ``store=``: never the default store."""
    return fd.Pipeline(nodes, name=f"values-{name}", store=None)


def touch(value: Any) -> float:
    """Read one number in each 4 KiB page of an array or a DataFrame's columns."""
    arrays = [value] if isinstance(value, np.ndarray) else [value[c].to_numpy() for c in value]
    return sum(float(a.reshape(-1)[:: PAGE // a.itemsize].sum()) for a in arrays)


def rchar() -> int | None:
    """Bytes this process has read so far (read calls, from any source), if Linux says."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f.read().splitlines():
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


# -- 1 and 2: storing and loading a large value -----------------------------------------------


class Floor:
    """Storing and loading a value by hand, as the floors of figures 1 and 2."""

    label = ""

    def store(self, value: Any, path: Path) -> None:
        raise NotImplementedError

    def load(self, path: Path, like: Any) -> Any:
        raise NotImplementedError


class ArrayFloor(Floor):
    label = "msgpack.packb(tobytes()) + write + rename; readinto np.empty"

    def store(self, value: Any, path: Path) -> None:
        body = msgpack.packb(value.tobytes())
        temp = path.with_name(f".tmp-{path.name}")
        with open(temp, "wb") as f:
            f.write(body)
        os.replace(temp, path)

    def load(self, path: Path, like: Any) -> Any:
        array = np.empty(like.shape, like.dtype)
        view = memoryview(array).cast("B")
        with open(path, "rb", buffering=0) as f:
            f.seek(os.fstat(f.fileno()).st_size - len(view))  # msgpack's bin header
            done = 0
            while done < len(view):
                got = f.readinto(view[done:])
                if not got:
                    raise EOFError(path)
                done += got
        return array


class ArrowFloor(Floor):
    label = "pyarrow IPC file write + rename; IPC read + to_pandas"

    def __init__(self, pa: Any) -> None:
        self.pa = pa

    def store(self, value: Any, path: Path) -> None:
        table = self.pa.Table.from_pandas(value)
        temp = path.with_name(f".tmp-{path.name}")
        with (
            self.pa.OSFile(str(temp), "wb") as sink,
            self.pa.ipc.new_file(sink, table.schema) as writer,
        ):
            writer.write_table(table)
        os.replace(temp, path)

    def load(self, path: Path, like: Any) -> Any:
        with self.pa.OSFile(str(path), "rb") as source:
            return self.pa.ipc.open_file(source).read_all().to_pandas()


@dataclass
class Large:
    """Figures 1 and 2 for one kind of value, in milliseconds."""

    kind: str
    mb: float
    missing: str = ""  # why flowdeco's side was not measured (not stored, no pandas)
    no_floor: str = ""  # why there is no floor
    floor_label: str = ""
    off: Stat | None = None  # run with store=None
    on: Stat | None = None  # cold run into a fresh FileStore
    store_floor: Stat | None = None
    warm: Stat | None = None
    load_floor: Stat | None = None

    @property
    def storing(self) -> Stat | None:
        """Cold minus no store, repeat by repeat."""
        if self.on is None or self.off is None:
            return None
        pairs = zip(self.on.times, self.off.times, strict=True)
        return Stat([on - off for on, off in pairs], MS)


def refused(caught: list[warnings.WarningMessage]) -> str:
    """The first CheckpointWarning among ``caught``, or ''."""
    for w in caught:
        if issubclass(w.category, fd.CheckpointWarning):
            return str(w.message)
    return ""


def same(a: Any, b: Any) -> bool:
    """Equal arrays, or DataFrames with the same columns holding the same numbers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return type(a) is type(b) and bool(np.array_equal(a, b))
    return list(a.columns) == list(b.columns) and all(
        np.array_equal(a[c].to_numpy(), b[c].to_numpy()) for c in a.columns
    )


def measure_large(
    kind: str, node: fd.Node[..., Any], floor: Floor | None, base: Path, size: int, repeats: int
) -> Large:
    """Cold run - run with no store, against the floor's write; warm run against its read."""
    found = Large(kind, size / MB)
    if floor is None:
        found.no_floor = "pyarrow not installed"
    else:
        found.floor_label = floor.label
    pipe = pipeline([node], node.name)
    name = node.name
    inputs = {"seed": 1, "size": size}
    expected = pipe.run(inputs, store=None)[name]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe.run(inputs, store=base / "warm-up")  # code version, page cache, allocator
        again = pipe.run(inputs, outputs=[name], store=base / "warm-up")
    shutil.rmtree(base / "warm-up")
    why = refused(caught)
    stored = not why and again.status[name] is fd.Status.CACHED
    if not stored:
        found.missing = "not stored"
        print(f"  {kind}: not stored ({why[:200] or 'not cached'})", file=sys.stderr)
    elif not same(again[name], expected):
        stored, found.missing = False, "loaded value differs"
        print(f"  {kind}: the value loaded differs from the one stored", file=sys.stderr)
    del again
    if floor is not None:
        probe = base / "probe"
        floor.store(expected, probe)
        assert same(floor.load(probe, expected), expected), f"{kind}: floor read differs"
        probe.unlink()

    def cold(store: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fd.CheckpointWarning)
            pipe.run(inputs, store=store)

    def warm(store: Path) -> None:
        result = pipe.run(inputs, outputs=[name], store=store)
        assert result.status[name] is fd.Status.CACHED
        touch(result[name])

    times: dict[str, list[float]] = {k: [] for k in ("off", "on", "floor", "warm", "read")}
    for r in range(repeats):
        store, by_hand = base / f"store-{r}", base / f"floor-{r}"
        steps: list[tuple[str, Callable[[], Any]]] = []
        if stored:
            steps += [
                ("off", lambda: pipe.run(inputs, store=None)),
                ("on", lambda: cold(store)),  # noqa: B023
            ]
        if floor is not None:
            steps.append(("floor", lambda: floor.store(expected, by_hand)))  # noqa: B023
        for key, call in steps if r % 2 else steps[::-1]:
            times[key].append(timed(call))
        steps = []
        if stored:
            steps.append(("warm", lambda: warm(store)))  # noqa: B023
        if floor is not None:
            steps.append(("read", lambda: touch(floor.load(by_hand, expected))))  # noqa: B023
        for key, call in steps if r % 2 else steps[::-1]:
            times[key].append(timed(call))
        shutil.rmtree(store, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            by_hand.unlink()
    if stored:
        found.off, found.on, found.warm = (Stat(times[k], MS) for k in ("off", "on", "warm"))
    if floor is not None:
        found.store_floor, found.load_floor = (Stat(times[k], MS) for k in ("floor", "read"))
    return found


def measure_frame(base: Path, size: int, repeats: int) -> Large:
    try:
        import pandas  # noqa: F401
    except ImportError:
        missing = "pandas not installed"
        return Large("pandas DataFrame", size / MB, missing=missing, no_floor=missing)
    try:
        import pyarrow as pa
    except ImportError:
        floor: Floor | None = None
    else:
        floor = ArrowFloor(pa)
    return measure_large("pandas DataFrame", frame_value, floor, base, size, repeats)


# -- 3: a warm run asked for one small output -------------------------------------------------


@dataclass
class SmallOutput:
    warm: Stat  # milliseconds
    floor: Stat
    warm_read: int | None  # bytes, median
    floor_read: int | None

    @property
    def ratio(self) -> float:
        return self.warm.median / self.floor.median


def measure_small_output(base: Path, size: int, repeats: int) -> SmallOutput:
    """The four-node pipeline, warm, against ``report`` alone with a small input given."""
    pipe = pipeline([big1, big2, big3, report], "report")
    alone = pipeline([report], "report-alone")
    inputs = {"seed": 1, "size": size}
    stand_in = {"big3": np.full(16, 0.5)}
    store, alone_store = base / "report-store", base / "report-alone"
    expected = pipe.run(inputs, outputs=["report"], store=store)["report"]
    alone_expected = alone.run(stand_in, outputs=["report"], store=alone_store)["report"]

    def warm(p: fd.Pipeline, given: dict[str, Any], where: Path, answer: Any) -> None:
        result = p.run(given, outputs=["report"], store=where)
        assert result.status["report"] is fd.Status.CACHED
        assert result["report"] == answer

    variants = {
        "warm": lambda: warm(pipe, inputs, store, expected),
        "floor": lambda: warm(alone, stand_in, alone_store, alone_expected),
    }
    for call in variants.values():
        call()  # warm up: the run's tables
    times: dict[str, list[float]] = {key: [] for key in variants}
    read: dict[str, list[int]] = {key: [] for key in variants}
    first, second = rchar(), rchar()
    probe = 0 if first is None or second is None else second - first  # reading the counter
    for r in range(repeats):
        order = list(variants.items())
        for key, call in order if r % 2 else order[::-1]:
            before = rchar()
            times[key].append(timed(call))
            after = rchar()
            if before is not None and after is not None:
                read[key].append(after - before - probe)
    shutil.rmtree(store)
    shutil.rmtree(alone_store)

    def median(values: list[int]) -> int | None:
        return sorted(values)[len(values) // 2] if values else None

    return SmallOutput(
        Stat(times["warm"], MS),
        Stat(times["floor"], MS),
        median(read["warm"]),
        median(read["floor"]),
    )


# -- 4: a warm small node ---------------------------------------------------------------------


def small_chain(n: int) -> fd.Pipeline:
    """``s0 -> ... -> s{n-1}``, inline nodes, each returning 11 floats (100 bytes packed)."""
    source = "def s0(x):\n    return x\n" + "".join(
        f"def s{i}(s{i - 1}):\n    return [v + 1.0 for v in s{i - 1}]\n" for i in range(1, n)
    )
    namespace: dict[str, Any] = {}
    exec(compile(source, f"<{n}-node chain>", "exec"), namespace)  # noqa: S102
    nodes = [fd.node(run_in="inline")(namespace[f"s{i}"]) for i in range(n)]
    return pipeline(nodes, f"small-{n}")


def write_small_files(values: Sequence[Any], directory: Path) -> list[str]:
    """Each value packed into its own file, in 256 subdirectories as a store shards them."""
    paths = []
    for i, value in enumerate(values):
        shard = directory / f"{i % 256:02x}"
        shard.mkdir(parents=True, exist_ok=True)
        path = shard / f"{i:040x}"
        path.write_bytes(msgpack.packb(value))
        paths.append(str(path))
    return paths


def read_small_files(paths: Sequence[str]) -> list[Any]:
    """The floor: open, read and close each file, and unpack it."""
    values = []
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            values.append(msgpack.unpackb(f.read()))
    return values


@dataclass
class SmallNodes:
    nodes: int
    repeats: int
    packed: int  # bytes of one value, packed
    warm: Stat  # µs per node
    floor: Stat

    @property
    def ratio(self) -> float:
        return self.warm.median / self.floor.median


def measure_small_nodes(base: Path, n: int, repeats: int) -> SmallNodes:
    pipe = small_chain(n)
    names = list(pipe.nodes)
    inputs = {"x": [0.5] * 11}
    store = base / "small-store"
    result = pipe.run(inputs, store=store)  # cold: every value stored
    values = [result[name] for name in names]
    paths = write_small_files(values, base / "small-floor")
    assert read_small_files(paths) == values

    def warm() -> None:
        result = pipe.run(inputs, store=store)
        if [result[name] for name in names] != values:
            raise AssertionError("wrong values")
        if set(result.status.values()) != {fd.Status.CACHED}:
            raise AssertionError("not all cached")

    warm()
    variants = {"warm": warm, "floor": lambda: read_small_files(paths)}
    times: dict[str, list[float]] = {key: [] for key in variants}
    repeats = max(repeats, 5)  # a run takes milliseconds
    for r in range(repeats):
        order = list(variants.items())
        for key, call in order if r % 2 else order[::-1]:
            times[key].append(timed(call))
    shutil.rmtree(store)
    shutil.rmtree(base / "small-floor")
    packed = len(msgpack.packb(values[-1]))
    return SmallNodes(n, repeats, packed, Stat(times["warm"], n), Stat(times["floor"], n))


# -- 5: memory ----------------------------------------------------------------------------------

CASES = ("none", "cold", "warm")


def peak_rss() -> tuple[int, int]:
    """(peak, current) resident bytes of this process."""
    try:
        with open("/proc/self/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return int(fields["VmHWM"].split()[0]) * 1024, int(fields["VmRSS"].split()[0]) * 1024
    except (OSError, KeyError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak * (1 if sys.platform == "darwin" else 1024), 0


def memory_child(case: str, store: str, size: int) -> None:
    """One run of figure 5's chain in this fresh process; print what it used, as JSON."""
    pipe = pipeline([chunk1, chunk2, chunk3, chunk4, count], "memory")
    _, before = peak_rss()
    result = pipe.run(
        {"seed": 1, "size": size}, outputs=["count"], store=None if case == "none" else store
    )
    peak, _ = peak_rss()
    statuses = sorted({status.value for status in result.status.values()})
    print(
        json.dumps({"peak": peak, "before": before, "count": result["count"], "statuses": statuses})
    )


@dataclass
class Memory:
    mb: float
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def ratio(self, case: str) -> float:
        return float(self.runs[case]["peak"] / self.runs["none"]["peak"])


def measure_memory(base: Path, size: int) -> Memory:
    env = dict(os.environ)  # the child imports the flowdeco measured here
    root = str(Path(fd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    store = base / "memory-store"
    found = Memory(size / MB)
    for case in CASES:
        done = subprocess.run(
            [sys.executable, __file__, "--memory-child", case, str(store), str(size)],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"memory child ({case}) failed:\n{done.stderr}")
        found.runs[case] = json.loads(done.stdout.strip().splitlines()[-1])
        assert found.runs[case]["count"] == size // 8
    shutil.rmtree(store)
    return found


# -- report -------------------------------------------------------------------------------------


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def mbps(stat: Stat | None, mb: float) -> str:
    """MB/s of a Stat in milliseconds for ``mb`` MB."""
    return "n/a" if stat is None else f"{mb / stat.median * 1e3:,.0f}"


def mb(n: float) -> str:
    """Bytes as MB."""
    return f"{n / MB:,.0f}" if n >= 10 * MB else f"{n / MB:.3g}"


Target = tuple[str, str, str, str, str, str]  # figure, measured, floor, ratio, target, result


def compare(measured: str, floor: str, ratio: float | None, met: bool, missing: str) -> list[str]:
    """Measured, floor, ratio and result cells of one row of the targets table."""
    if missing:
        return [missing, floor, "n/a", missing]
    if ratio is None:
        return [measured, floor, "n/a", "no floor"]
    return [measured, floor, f"{ratio:.2f}x", verdict(met)]


def large_targets(large: Large) -> tuple[Target, Target]:
    """Figures 1 and 2 of one kind of value: the rows of the targets table."""
    label = f"{large.mb:g} MB {large.kind}"
    no_floor = f"no floor: {large.no_floor}" if large.no_floor else "n/a"
    storing, warm = large.storing, large.warm
    share = ratio = None
    if storing is not None and large.store_floor is not None:
        share = large.store_floor.median / storing.median
    if warm is not None and large.load_floor is not None:
        ratio = warm.median / large.load_floor.median
    store_cells = compare(
        mbps(storing, large.mb),
        no_floor if large.store_floor is None else mbps(large.store_floor, large.mb),
        share,
        share is not None and share >= STORE_TARGET,
        large.missing,
    )
    load_cells = compare(
        "n/a" if warm is None else fmt(warm.median),
        no_floor if large.load_floor is None else fmt(large.load_floor.median),
        ratio,
        ratio is not None and ratio <= LOAD_TARGET,
        large.missing,
    )
    measured, floor, shown, result = store_cells
    store_target = f">= {STORE_TARGET}x the floor's MB/s"
    stores = (f"1. storing a {label} (MB/s)", measured, floor, shown, store_target, result)
    measured, floor, shown, result = load_cells
    loads = (f"2. loading a {label} (ms)", measured, floor, shown, f"<= {LOAD_TARGET}x", result)
    return stores, loads


def targets(
    larges: list[Large], so: SmallOutput, small: SmallNodes, memory: Memory, big: float
) -> list[Target]:
    pairs = [large_targets(large) for large in larges]  # (storing, loading) of each
    rows = [pair[0] for pair in pairs] + [pair[1] for pair in pairs]
    rows.append(
        (
            f"3. warm run asked for one small output, 3 x {big:g} MB upstream (ms)",
            fmt(so.warm.median),
            fmt(so.floor.median),
            f"{so.ratio:.2f}x",
            f"<= {SMALL_OUTPUT_TARGET}x",
            verdict(so.ratio <= SMALL_OUTPUT_TARGET),
        )
    )
    rows.append(
        (
            f"4. warm small node, {small.nodes:,}-node inline chain (µs per node)",
            fmt(small.warm.median),
            fmt(small.floor.median),
            f"{small.ratio:.2f}x",
            f"<= {SMALL_NODE_TARGET}x",
            verdict(small.ratio <= SMALL_NODE_TARGET),
        )
    )
    none_peak = f"{mb(memory.runs['none']['peak'])} (no store)"
    for case, what in (("cold", "cold run, FileStore"), ("warm", "warm run")):
        r = memory.ratio(case)
        rows.append(
            (
                f"5. peak RSS, {what}, 4 x {memory.mb:g} MB chain (MB)",
                mb(memory.runs[case]["peak"]),
                none_peak,
                f"{r:.2f}x",
                f"<= {MEMORY_TARGET}x",
                verdict(r <= MEMORY_TARGET),
            )
        )
    return rows


def render(
    larges: list[Large], so: SmallOutput, small: SmallNodes, memory: Memory, sizes: Sizes
) -> str:
    repeats = sizes.repeats
    big = sizes.big / MB
    lines = [
        "## Targets",
        "",
        "| figure | measured (median) | floor (median) | ratio | target | result |",
        "|---|---:|---:|---:|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in targets(larges, so, small, memory, big)]
    lines += [
        "",
        f"## 1-2. Large values ({sizes.value / MB:g} MB, ms, median (min-max) of {repeats})",
        "",
        (
            "| value | run, no store | cold run, FileStore | storing: cold - no store | MB/s "
            "| floor: store by hand | floor MB/s | warm run, value read | floor: read by hand "
            "| floor |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for large in larges:
        absent = large.missing or "n/a"

        def cell(stat: Stat | None, absent: str = absent) -> str:
            return absent if stat is None else stat.cell()

        floor_cell = large.floor_label or f"none: {large.no_floor}"
        lines.append(
            f"| {large.kind} | {cell(large.off)} | {cell(large.on)} | {cell(large.storing)} "
            f"| {absent if large.missing else mbps(large.storing, large.mb)} "
            f"| {cell(large.store_floor, 'n/a')} | {mbps(large.store_floor, large.mb)} "
            f"| {cell(large.warm)} | {cell(large.load_floor, 'n/a')} | {floor_cell} |"
        )

    def read(n: int | None) -> str:
        return "n/a" if n is None else f"{n:,}"

    lines += [
        "",
        (
            f"## 3. Warm run asked for one small output (ms, median (min-max) of {repeats}; "
            "bytes read: median of rchar's growth)"
        ),
        "",
        "| pipeline | warm run | bytes read during the run |",
        "|---|---:|---:|",
        (
            f"| big1 -> big2 -> big3 -> report (3 x {big:g} MB arrays), outputs=['report'] "
            f"| {so.warm.cell()} | {read(so.warm_read)} |"
        ),
        (
            f"| floor: report alone, big3 given as 16 floats | {so.floor.cell()} "
            f"| {read(so.floor_read)} |"
        ),
        "",
        (
            f"## 4. Warm small nodes ({small.nodes:,}-node inline chain, {small.packed} bytes "
            f"per value packed, µs per node, median (min-max) of {small.repeats})"
        ),
        "",
        "| warm run, every value read | floor: open + read + close + unpackb | ratio |",
        "|---:|---:|---:|",
        f"| {small.warm.cell()} | {small.floor.cell()} | {small.ratio:.2f}x |",
        "",
        (
            f"## 5. Peak memory (4 x {memory.mb:g} MB arrays and an int, outputs=['count'], "
            "one fresh process each, MB)"
        ),
        "",
        (
            "| run | peak RSS (VmHWM) | RSS before the run | peak - before | peak / no store "
            "| statuses |"
        ),
        "|---|---:|---:|---:|---:|---|",
    ]
    for case, what in (
        ("none", "no store"),
        ("cold", "cold, empty FileStore"),
        ("warm", "warm, same store, new process"),
    ):
        run = memory.runs[case]
        lines.append(
            f"| {what} | {mb(run['peak'])} | {mb(run['before'])} "
            f"| {mb(run['peak'] - run['before'])} | {memory.ratio(case):.2f}x "
            f"| {', '.join(run['statuses'])} |"
        )
    return "\n".join(lines) + NOTES


NOTES = """

Notes:

- Storing is the cold run minus the run with no store, repeat by repeat: the node's own
  work (making random numbers) is in both. A cold run returns once its checkpoints are
  written, so the figure includes the wait for the writer thread.
- Loading is the whole warm run (key, lookup, run record, result) and one read per page of
  the value; the floor reads the same bytes into an array and touches the same pages.
- Every file is read back right after it was written, from the page cache: these figures
  are the copies, hashes and packing, not a disk's speed.
- The peak RSS of each process includes what the interpreter and its imports hold before
  the run (the "before" column), the same in the three processes.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer repeats")
    parser.add_argument("--dir", default=".", help="where the temporary stores go")
    parser.add_argument("--append", metavar="PATH", help="put the report in this markdown file")
    parser.add_argument("--memory-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        case, store, size = args.memory_child
        memory_child(case, store, int(size))
        return
    sizes = QUICK if args.quick else FULL

    print("## Environment\n")
    env = environment()
    for key, value in env.items():
        print(f"- {key}: {value}")
    print(flush=True)
    with tempfile.TemporaryDirectory(prefix="flowdeco-bench-", dir=args.dir) as temp:
        base = Path(temp).resolve()
        start = time.perf_counter()
        larges = [
            measure_large(
                "numpy array", array_value, ArrayFloor(), base, sizes.value, sizes.repeats
            )
        ]
        print(f"  numpy array: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        larges.append(measure_frame(base, sizes.value, sizes.repeats))
        print(f"  + DataFrame: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        small_output = measure_small_output(base, sizes.big, sizes.repeats)
        print(f"  + one small output: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        small = measure_small_nodes(base, sizes.chain, sizes.repeats)
        print(f"  + small nodes: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        memory = measure_memory(base, sizes.memory)
        print(f"  + memory: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    text = render(larges, small_output, small, memory, sizes)
    print(text)
    if args.append:
        intro = (
            "From `python benchmarks/values.py --append docs/performance.md`: storing and "
            "loading large values, a warm run that needs one small value, small cached "
            "nodes, and the memory of a chain of large values.\n\n"
        )
        put_section(Path(args.append), MARKER, "Large and small values", intro + text, env)


if __name__ == "__main__":
    main()
