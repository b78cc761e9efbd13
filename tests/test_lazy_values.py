"""Large cached values stay in their files until a node that runs needs them; a value is
released once no node still to run reads it.

Every test runs real pipelines on a real ``FileStore`` in ``tmp_path``. ``SpyStore``
overrides only ``FileStore.read`` (so runs keep the lazy path, which a subclass overriding
``load`` or ``save`` loses) to record which file was read, whether for its header only or
whole, and in which thread.
"""

from __future__ import annotations

import gc
import math
import re
import threading
import time
import tracemalloc
import warnings
import weakref
from typing import TYPE_CHECKING, Any, Literal

import attrs
import numpy as np
import pytest
from conftest import KINDS, make_node

import flowdeco as fd
from flowdeco._core._checkpoints import LAZY_ABOVE
from flowdeco._core._codec import encode
from flowdeco._core._files import FORMAT_VERSION, HEADER_SIZE, NAMES_FILES, Checkpoint
from flowdeco._core._store import FileStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    import numpy.typing as npt
    from conftest import Kind

    Array = npt.NDArray[np.float64]
    Backend = Literal["asyncio", "trio"]

S = fd.Status
N = 3 * 2**20 // 8  # the big values: 3 MiB arrays of float64
assert N * 8 > 10 * LAZY_ABOVE


# -- observing a store ----------------------------------------------------------------------


@attrs.frozen
class Read:
    """One call of ``FileStore.read``."""

    key: str
    header_only: bool  # called with a finite whole_up_to: a lookup, willing to leave the body
    outcome: Literal["missing", "header", "body", "damaged"]  # no file; the header alone was
    # read (the body left); the body was read too; CorruptDataError was raised
    thread: threading.Thread = attrs.field(repr=lambda thread: repr(thread.name))


@attrs.define(eq=False)
class SpyStore(FileStore):
    """A FileStore that records its reads; ``after_header`` runs after each header-only read."""

    reads: list[Read] = attrs.field(factory=list, init=False)
    after_header: Callable[[str], None] | None = attrs.field(default=None, init=False)
    _guard: threading.Lock = attrs.field(factory=threading.Lock, init=False)

    def read(self, key: str, whole_up_to: float = math.inf) -> Checkpoint | None:
        finite = math.isfinite(whole_up_to)
        try:
            found = super().read(key, whole_up_to)
        except fd.CorruptDataError:
            self._note(Read(key, finite, "damaged", threading.current_thread()))
            raise
        if found is None:
            self._note(Read(key, finite, "missing", threading.current_thread()))
        elif found.body is None:
            self._note(Read(key, finite, "header", threading.current_thread()))
            if self.after_header is not None:
                self.after_header(key)
        else:
            self._note(Read(key, finite, "body", threading.current_thread()))
        return found

    def _note(self, read: Read) -> None:
        with self._guard:
            self.reads.append(read)

    def bodies(self, key: str) -> list[Read]:
        """The reads of ``key``'s body: those that read it, and those that found it damaged
        (all but a lookup's, which stops at a damaged header)."""
        return [
            r
            for r in self.reads
            if r.key == key
            and (r.outcome == "body" or (r.outcome == "damaged" and not r.header_only))
        ]

    def file(self, key: str) -> Path:
        return self.path / "objects" / key[:2] / key


def _keys(pipe: fd.Pipeline, store: fd.Store) -> dict[str, str]:
    """Each node's key in the pipeline's latest run."""
    return {name: entry["key"] for name, entry in pipe.runs(store)[-1].nodes.items()}


def _flip(file: Path, offset: int) -> None:
    """Damage one byte of ``file``, in place."""
    data = bytearray(file.read_bytes())
    data[offset] ^= 0xFF
    file.write_bytes(bytes(data))


# -- the chain big1 -> big2 -> big3 -> report ----------------------------------------------


def _big1() -> Array:
    return np.arange(N, dtype=np.float64)


def _big2(big1: Array) -> Array:
    return big1 * 2


def _big3(big2: Array) -> Array:
    return big2 + 1


def _report(big3: Array) -> float:
    return float(big3.sum())


def _report_plus_one(big3: Array) -> float:
    return float(big3.sum()) + 1


BIG1 = np.arange(N, dtype=np.float64)
BIG2 = BIG1 * 2
BIG3 = BIG2 + 1
REPORT = float(BIG3.sum())
BIGS = ("big1", "big2", "big3")


def _chain(
    kind: Kind = "thread",
    report: Callable[[Array], float] = _report,
    *extra: fd.Node[..., Any],
) -> fd.Pipeline:
    """The chain, each node of ``kind``; ``report`` another function makes another report
    (of the same name, with another version)."""
    version = "1" if report is _report else report.__name__
    return fd.Pipeline(
        [
            make_node(kind, _big1, name="big1", version="1"),
            make_node(kind, _big2, name="big2", version="1"),
            make_node(kind, _big3, name="big3", version="1"),
            make_node(kind, report, name="report", version=version),
            *extra,
        ],
        name="chain",
    )


@pytest.fixture
def store(tmp_path: Path) -> SpyStore:
    return SpyStore(tmp_path / "store")


def _warm(pipe: fd.Pipeline, store: SpyStore) -> dict[str, str]:
    """Run every node once, so the store holds them all; forget those reads. The keys."""
    first = pipe.run(store=store)
    assert first.ok, first
    store.reads.clear()
    return _keys(pipe, store)


class TestOnlyWhatRunsIsRead:
    def test_a_fully_cached_run_reads_headers_only(self, store: SpyStore, kind: Kind) -> None:
        pipe = _chain(kind)
        keys = _warm(pipe, store)
        result = pipe.run(outputs=["report"], store=store)
        assert result.status == dict.fromkeys([*BIGS, "report"], S.CACHED)
        assert result["report"] == REPORT
        for name in BIGS:
            assert store.bodies(keys[name]) == [], name
            lookups = [(r.header_only, r.outcome) for r in store.reads if r.key == keys[name]]
            assert lookups == [(True, "header")], name
        # report's value is small: read whole with its header, in the lookup's one call
        assert [(r.header_only, r.outcome) for r in store.reads if r.key == keys["report"]] == [
            (True, "body")
        ]

    def test_every_body_is_read_when_every_node_is_an_output(
        self, store: SpyStore, kind: Kind
    ) -> None:
        pipe = _chain(kind)
        keys = _warm(pipe, store)
        result = pipe.run(outputs=None, store=store)
        assert result.status == dict.fromkeys([*BIGS, "report"], S.CACHED)
        for name, expected in zip(BIGS, (BIG1, BIG2, BIG3), strict=True):
            assert len(store.bodies(keys[name])) == 1, name
            np.testing.assert_array_equal(result[name], expected)
        assert result["report"] == REPORT

    def test_a_changed_report_reads_its_parent_once_and_nothing_above(
        self, store: SpyStore, kind: Kind
    ) -> None:
        keys = _warm(_chain(kind), store)
        result = _chain(kind, _report_plus_one).run(outputs=["report"], store=store)
        assert result.status == {**dict.fromkeys(BIGS, S.CACHED), "report": S.SUCCEEDED}
        assert result["report"] == REPORT + 1
        assert len(store.bodies(keys["big3"])) == 1
        assert store.bodies(keys["big1"]) == store.bodies(keys["big2"]) == []
        assert dict(result.values) == {"report": REPORT + 1}

    @pytest.mark.parametrize("child_kind", KINDS)
    def test_two_children_that_run_read_their_parent_once(
        self, store: SpyStore, backend: Backend, child_kind: Kind
    ) -> None:
        """Both children of one large cached parent re-run (their input changed); the
        parent's body is read once, for both, and both get the right value."""

        def low(big3: Array, shift: int) -> float:
            return float(big3.min()) + shift

        def high(big3: Array, shift: int) -> float:
            return float(big3.max()) + shift

        children = [
            make_node(child_kind, low, name="low", version="1"),
            make_node(child_kind, high, name="high", version="1"),
        ]
        pipe = _chain(child_kind, _report, *children)  # inline: a run without a loop
        pipe.run(inputs={"shift": 0}, store=store, backend=backend)
        keys = _keys(pipe, store)
        store.reads.clear()
        result = pipe.run(
            inputs={"shift": 10}, outputs=["low", "high"], store=store, backend=backend
        )
        assert result.status == {
            **dict.fromkeys(BIGS, S.CACHED),
            "low": S.SUCCEEDED,
            "high": S.SUCCEEDED,
        }
        assert dict(result) == {"low": BIG3.min() + 10, "high": BIG3.max() + 10}
        assert len(store.bodies(keys["big3"])) == 1
        assert store.bodies(keys["big1"]) == store.bodies(keys["big2"]) == []

    def test_one_child_reading_a_parent_twice_reads_its_body_once(
        self, store: SpyStore, kind: Kind
    ) -> None:
        def both(x: Array, y: Array, shift: int) -> tuple[float, bool]:
            return float(x.sum() + y.sum()) + shift, x is y

        pipe = fd.Pipeline(
            [
                make_node(kind, _big1, name="big1", version="1"),
                make_node(kind, both, name="both", version="1", inputs={"x": "big1", "y": "big1"}),
            ],
            name="twice",
        )
        pipe.run(inputs={"shift": 0}, store=store)
        keys = _keys(pipe, store)
        store.reads.clear()
        result = pipe.run(inputs={"shift": 1}, outputs=["both"], store=store)
        assert result.status == {"big1": S.CACHED, "both": S.SUCCEEDED}
        total, same = result["both"]
        assert total == 2 * BIG1.sum() + 1
        assert len(store.bodies(keys["big1"])) == 1
        assert same, "both parameters should get the one value read"

    def test_a_subclass_overriding_load_loads_every_value(self, tmp_path: Path) -> None:
        """The lazy path is FileStore's own: a subclass that changes how values are loaded
        is given every value whole, through its ``load``, as before."""

        @attrs.define(eq=False)
        class Loading(FileStore):
            loaded: list[str] = attrs.field(factory=list, init=False)

            def load(self, key: str) -> bytes | None:
                self.loaded.append(key)
                return super().load(key)

        store = Loading(tmp_path / "store")
        pipe = _chain()
        pipe.run(store=store)
        keys = _keys(pipe, store)
        store.loaded.clear()
        result = pipe.run(outputs=["report"], store=store)
        assert result.counts() == {S.CACHED: 4}
        assert sorted(store.loaded) == sorted(keys.values())
        assert result["report"] == REPORT


# -- where bodies are read ------------------------------------------------------------------


def _loop_thread_node(seen: list[threading.Thread]) -> fd.Node[..., Any]:
    """An async node (so the run has a loop) that notes the thread running the loop."""

    async def loop_thread() -> None:
        seen.append(threading.current_thread())

    return fd.node(name="loop_thread", version="1")(loop_thread)


class TestWhereBodiesAreRead:
    @pytest.mark.anyio
    async def test_off_the_event_loops_thread(self, store: SpyStore, kind: Kind) -> None:
        """An output served from its file, and a parent a running child needs, are read by
        a worker thread, never the loop's; whatever kind the nodes are (inline ones too)."""
        seen: list[threading.Thread] = []
        pipe = _chain(kind, _report, _loop_thread_node(seen))
        await pipe.arun(store=store)
        keys = _keys(pipe, store)
        store.reads.clear()

        served = await pipe.arun(outputs=["big2", "loop_thread"], store=store)
        np.testing.assert_array_equal(served["big2"], BIG2)
        changed = _chain(kind, _report_plus_one, _loop_thread_node(seen))
        ran = await changed.arun(outputs=["report", "loop_thread"], store=store)
        assert ran["report"] == REPORT + 1

        assert set(seen) == {threading.current_thread()}  # the loop runs in the test's thread
        bodies = store.bodies(keys["big2"]) + store.bodies(keys["big3"])
        assert [r.key for r in bodies] == [keys["big2"], keys["big3"]]
        for read in bodies:
            assert read.thread is not threading.current_thread()
        assert store.bodies(keys["big1"]) == []

    def test_off_the_loop_in_a_sync_run(self, store: SpyStore, backend: Backend) -> None:
        seen: list[threading.Thread] = []
        pipe = _chain("thread", _report, _loop_thread_node(seen))
        pipe.run(store=store, backend=backend)
        keys = _keys(pipe, store)
        store.reads.clear()
        changed = _chain("thread", _report_plus_one, _loop_thread_node(seen))
        result = changed.run(
            outputs=["report", "big3", "loop_thread"], store=store, backend=backend
        )
        assert result["report"] == REPORT + 1
        np.testing.assert_array_equal(result["big3"], BIG3)
        (read,) = store.bodies(keys["big3"])  # once: for the output, and for the child
        assert read.thread is not seen[-1]
        assert seen[-1] is threading.current_thread()

    def test_in_the_callers_thread_without_a_loop(self, store: SpyStore) -> None:
        """All nodes inline: the run starts no loop, and reads in the thread that called run."""
        pipe = _chain("inline")
        keys = _warm(pipe, store)
        changed = _chain("inline", _report_plus_one)
        results: dict[str, fd.RunResult] = {}

        def caller() -> None:
            results["served"] = pipe.run(outputs=["big2"], store=store)
            results["ran"] = changed.run(outputs=["report"], store=store)

        thread = threading.Thread(target=caller, name="caller")
        thread.start()
        thread.join()
        np.testing.assert_array_equal(results["served"]["big2"], BIG2)
        assert results["ran"]["report"] == REPORT + 1
        bodies = store.bodies(keys["big2"]) + store.bodies(keys["big3"])
        assert [(r.key, r.thread) for r in bodies] == [
            (keys["big2"], thread),
            (keys["big3"], thread),
        ]


# -- damage found when a body is read ------------------------------------------------------

HOW = ["flipped", "replaced", "removed"]
_WHY = {
    "flipped": r"checksum mismatch",
    "replaced": r"vanished or was replaced since this run found it",
    "removed": r"vanished or was replaced since this run found it",
}


def _damage(store: SpyStore, key: str, how: str) -> None:
    """Damage ``key``'s body: now (a byte past the header), or right after the next run reads
    its header (the file replaced by a valid checkpoint of another value, or removed)."""
    file = store.file(key)
    if how == "flipped":
        _flip(file, HEADER_SIZE + 12345)
        return
    done: list[str] = []

    def strike(read: str) -> None:
        if read != key or done:
            return
        done.append(read)
        if how == "replaced":  # a valid checkpoint of another value: only its digest differs
            store.save(key, encode(np.zeros(N)))
        else:
            file.unlink()

    store.after_header = strike


class TestDamageFoundLate:
    @pytest.mark.parametrize("how", HOW)
    def test_a_damaged_output_is_recomputed_in_the_same_run(
        self, store: SpyStore, kind: Kind, how: str
    ) -> None:
        pipe = _chain(kind)
        keys = _warm(pipe, store)
        _damage(store, keys["big3"], how)
        pattern = (
            rf"the value of node 'big3' cannot be read \(.*{_WHY[how]}.*\); its file was "
            r"removed, so the next run recomputes it; the node was recomputed"
        )
        with pytest.warns(fd.CheckpointWarning, match=pattern):
            result = pipe.run(outputs=["big3"], store=store)
        assert result.status == {"big1": S.CACHED, "big2": S.CACHED, "big3": S.SUCCEEDED}
        np.testing.assert_array_equal(result["big3"], BIG3)
        assert result.explain("big3").reason == "unreadable"
        assert store.bodies(keys["big1"]) == []
        assert len(store.bodies(keys["big2"])) == 1  # read to recompute big3
        # The recomputed value was stored whole: the next run serves it from the file.
        store.after_header = None
        again = pipe.run(outputs=["big3"], store=store)
        assert again.counts() == {S.CACHED: 3}
        np.testing.assert_array_equal(again["big3"], BIG3)

    @pytest.mark.parametrize("how", HOW)
    def test_a_damaged_value_a_child_needs_fails_the_child_and_is_recomputed_next_run(
        self, store: SpyStore, kind: Kind, how: str
    ) -> None:
        keys = _warm(_chain(kind), store)
        _damage(store, keys["big3"], how)
        changed = _chain(kind, _report_plus_one)
        with pytest.raises(fd.NodeFailed) as raised:
            changed.run(outputs=["report"], store=store)
        failed = raised.value
        assert failed.node == "report"
        cause = failed.__cause__
        assert isinstance(cause, fd.CorruptDataError)
        assert cause is failed.result.errors["report"]
        message = str(cause)
        assert message.startswith("the value of node 'big3' cannot be read (")
        assert message.endswith("); its file was removed, so the next run recomputes it")
        assert re.search(_WHY[how], message)
        assert failed.result.status == {**dict.fromkeys(BIGS, S.CACHED), "report": S.FAILED}
        assert not store.file(keys["big3"]).exists()

        store.after_header = None
        store.reads.clear()
        result = changed.run(outputs=["report"], store=store)
        assert result.status == {
            "big1": S.CACHED,
            "big2": S.CACHED,
            "big3": S.SUCCEEDED,
            "report": S.SUCCEEDED,
        }
        assert result["report"] == REPORT + 1
        assert result.explain("big3").outcome == "ran"
        assert store.bodies(keys["big1"]) == []
        assert store.file(keys["big3"]).exists()

    def test_independent_branches_finish_with_on_error_continue(
        self, store: SpyStore, kind: Kind
    ) -> None:
        """report cannot get big3; side (which reads big1, undamaged) and fresh still run."""

        def side(big1: Array, shift: int) -> float:
            return float(big1.max()) + shift

        def fresh(shift: int) -> int:
            return shift * 2

        branches = [
            make_node(kind, side, name="side", version="1"),
            make_node(kind, fresh, name="fresh", version="1"),
        ]
        _chain(kind, _report, *branches).run(inputs={"shift": 0}, store=store)
        keys = _keys(_chain(kind, _report, *branches), store)
        _flip(store.file(keys["big3"]), HEADER_SIZE + 999)
        changed = _chain(kind, _report_plus_one, *branches)
        result = changed.run(
            inputs={"shift": 5},
            outputs=["report", "side", "fresh"],
            store=store,
            on_error="continue",
        )
        assert result.status == {
            **dict.fromkeys(BIGS, S.CACHED),
            "report": S.FAILED,
            "side": S.SUCCEEDED,
            "fresh": S.SUCCEEDED,
        }
        assert dict(result) == {"side": BIG1.max() + 5, "fresh": 10}
        error = result.errors["report"]
        assert isinstance(error, fd.CorruptDataError)
        assert "node 'big3'" in str(error)
        assert not store.file(keys["big3"]).exists()
        assert changed.run(inputs={"shift": 5}, outputs=["report"], store=store).ok


# -- damage found at lookup ----------------------------------------------------------------

# The header: magic (4 bytes), format version, flags, key length, key (128), body length (8),
# digest (16).
# A byte of each header field. The header's own CRC covers every other field, so damage to
# any of them (the digest and the flags too) is found from the header alone.
_HEADER_FIELDS = {
    "magic": 1,
    "format version": 4,
    "flags": 5,
    "key": 7,
    "body crc": 7 + 128 + 1,
    "header crc": 7 + 128 + 4 + 1,
    "body length": 7 + 128 + 8 + 3,
    "digest": HEADER_SIZE - 1,
}


class TestDamagedHeaders:
    @pytest.mark.parametrize("field", list(_HEADER_FIELDS))
    def test_a_damaged_header_is_caught_at_lookup_and_recomputed(
        self, store: SpyStore, kind: Kind, field: str
    ) -> None:
        pipe = _chain(kind)
        keys = _warm(pipe, store)
        file = store.file(keys["big2"])
        _flip(file, _HEADER_FIELDS[field])
        with pytest.warns(
            fd.CheckpointWarning, match=r"node 'big2': damaged checkpoint .*recomputed"
        ):
            result = pipe.run(outputs=["report"], store=store)
        # big2 recomputed (from big1's body) to the same value: big3 and report are reused.
        assert result.status == {
            "big1": S.CACHED,
            "big2": S.SUCCEEDED,
            "big3": S.CACHED,
            "report": S.CACHED,
        }
        assert result["report"] == REPORT
        assert result.explain("big2").reason == "unreadable"
        assert [(r.header_only, r.outcome) for r in store.reads if r.key == keys["big2"]] == [
            (True, "damaged")  # found at lookup: nothing but that one read touched the file
        ]
        assert len(store.bodies(keys["big1"])) == 1
        assert pipe.run(outputs=["report"], store=store).counts() == {S.CACHED: 4}

    def test_a_cleared_names_files_flag_never_serves_a_stale_value(
        self, store: SpyStore, tmp_path: Path
    ) -> None:
        data = tmp_path / "data.txt"
        data.write_text("one")

        def manifest() -> dict[str, Any]:
            return {"path": data, "padding": b"x" * (2 * LAZY_ABOVE)}

        def consume(manifest: dict[str, Any]) -> str:
            path: Path = manifest["path"]
            return path.read_text()

        pipe = fd.Pipeline(
            [fd.node(version="1")(manifest), fd.node(version="1")(consume)], name="files"
        )
        assert pipe.run(outputs=["consume"], store=store)["consume"] == "one"
        file = store.file(_keys(pipe, store)["manifest"])
        _flip(file, 5)  # the flags byte: NAMES_FILES cleared
        seen = []
        with warnings.catch_warnings(record=True):  # a fix may well warn of the damage
            warnings.simplefilter("always")
            for text in ("two", "three"):
                data.write_text(text)
                seen.append(pipe.run(outputs=["consume"], store=store)["consume"])
        assert seen == ["two", "three"]


class TestFormat:
    def test_the_header_says_format_3_and_flags_values_naming_files(
        self, store: SpyStore, tmp_path: Path
    ) -> None:
        data = tmp_path / "data.txt"
        data.write_text("content")

        def names() -> dict[str, Any]:
            return {"path": data, "padding": b"x" * (2 * LAZY_ABOVE)}

        pipe = _chain("thread", _report, fd.node(name="names", version="1")(names))
        pipe.run(store=store)
        keys = _keys(pipe, store)
        flags = {name: store.file(key).read_bytes()[4:6] for name, key in keys.items()}
        assert flags == {
            **dict.fromkeys([*BIGS, "report"], bytes([FORMAT_VERSION, 0])),
            "names": bytes([FORMAT_VERSION, NAMES_FILES]),
        }
        assert FORMAT_VERSION == 3
        # A large value naming files is read whole at lookup: its version covers the file.
        store.reads.clear()
        data.write_text("changed")
        result = pipe.run(outputs=["names"], store=store)
        assert result.status == {"names": S.CACHED}
        assert len(store.bodies(keys["names"])) == 1


# -- reuse stays right ---------------------------------------------------------------------


def _scaled(seed: int) -> Array:
    return np.arange(N, dtype=np.float64) * seed


def _scaled_again(seed: int) -> Array:
    """Another body computing the same value as ``_scaled``."""
    return np.multiply(np.arange(N, dtype=np.float64), seed)


def _stats(scaled: Array, k: int) -> float:
    return float(scaled[-1]) + k


def _expected(seed: int, k: int) -> float:
    return float((N - 1) * seed) + k


class TestReuse:
    def test_children_see_the_new_value_of_a_changed_large_parent(
        self, store: SpyStore, kind: Kind
    ) -> None:
        def pipe(scaled: Callable[[int], Array] = _scaled) -> fd.Pipeline:
            return fd.Pipeline(
                [
                    make_node(kind, scaled, name="scaled", version=scaled.__name__),
                    make_node(kind, _stats, name="stats", version="1"),
                ],
                name="reuse",
            )

        runs = [
            ({"seed": 1, "k": 0}, "succeeded", "succeeded"),
            ({"seed": 2, "k": 0}, "succeeded", "succeeded"),  # a new value: stats re-runs
            ({"seed": 1, "k": 1}, "cached", "succeeded"),  # seed 1's file, read for stats
            ({"seed": 2, "k": 0}, "cached", "cached"),
            ({"seed": 1, "k": 0}, "cached", "cached"),
        ]
        for inputs, scaled_status, stats_status in runs:
            result = pipe().run(inputs=inputs, outputs=["stats"], store=store)
            assert result.status == {"scaled": S(scaled_status), "stats": S(stats_status)}
            assert result["stats"] == _expected(inputs["seed"], inputs["k"]), inputs
        # Another body, the same value: its data version (the header's digest) is unchanged,
        # so stats is reused, and no body but stats' own small one is read.
        store.reads.clear()
        again = pipe(_scaled_again)
        result = again.run(inputs={"seed": 2, "k": 0}, outputs=["stats"], store=store)
        assert result.status == {"scaled": S.SUCCEEDED, "stats": S.CACHED}
        assert result["stats"] == _expected(2, 0)
        bodies = [r.key for r in store.reads if r.outcome == "body"]
        assert bodies == [_keys(again, store)["stats"]]
        # Another body, another value: stats re-runs on it.
        result = pipe(_scaled).run(inputs={"seed": 3, "k": 0}, outputs=["stats"], store=store)
        assert result["stats"] == _expected(3, 0)


# -- what the result holds -----------------------------------------------------------------


class TestResultValues:
    def test_outputs_only_by_default(self, store: SpyStore) -> None:
        pipe = _chain()
        cold = pipe.run(outputs=["report", "big2"], store=store)
        assert set(cold.values) == {"report", "big2"}
        warm = pipe.run(outputs=["report", "big2"], store=store)
        assert set(warm.values) == {"report", "big2"}
        np.testing.assert_array_equal(warm.values["big2"], BIG2)

    @pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
    def test_keep_values_holds_every_node(self, store: SpyStore, warm: bool) -> None:
        pipe = _chain()
        if warm:
            _warm(pipe, store)
        result = pipe.run(outputs=["report"], store=store, keep_values=True)
        assert dict(result) == {"report": REPORT}  # the mapping is still the outputs
        assert set(result.values) == {*BIGS, "report"}
        for name, expected in zip(BIGS, (BIG1, BIG2, BIG3), strict=True):
            np.testing.assert_array_equal(result.values[name], expected)

    def test_no_outputs_named_holds_every_node(self, store: SpyStore) -> None:
        pipe = _chain()
        for _ in range(2):  # cold, then served from the files
            result = pipe.run(store=store)
            assert set(result.values) == set(dict(result)) == {*BIGS, "report"}
            np.testing.assert_array_equal(result.values["big3"], BIG3)

    def test_a_run_that_stopped_holds_no_value_it_did_not_release(self, kind: Kind) -> None:
        """The run stops at the first failure, before the other child of ``base`` starts:
        ``base`` was never released, yet it is no output, so the result does not hold it."""

        def base() -> int:
            return 7

        def bad(base: int) -> int:
            raise ValueError(base)

        def also_bad(base: int) -> int:
            raise ValueError(base)

        pipe = fd.Pipeline(
            [
                make_node(kind, base, name="base", version="1"),
                make_node(kind, bad, name="bad", version="1"),
                make_node(kind, also_bad, name="also_bad", version="1"),
            ],
            name="stopped",
        )
        with pytest.raises(fd.NodeFailed) as raised:
            pipe.run(outputs=["bad", "also_bad"], store=None, concurrency=1)
        partial = raised.value.result
        assert sorted(partial.status.values()) == sorted([S.SUCCEEDED, S.FAILED, S.PENDING])
        assert dict(partial.values) == {}
        kept = pipe.run(outputs=["bad", "also_bad"], store=None, on_error="continue")
        assert dict(kept.values) == {}
        assert dict(
            pipe.run(
                outputs=["bad", "also_bad"], store=None, keep_values=True, on_error="continue"
            ).values
        ) == {"base": 7}

    def test_a_given_value_overriding_a_node_is_held_if_requested(self, store: SpyStore) -> None:
        pipe = _chain()
        given = np.ones(N)
        asked = pipe.run(inputs={"big2": given}, outputs=["big2", "report"], store=store)
        assert set(asked.values) == {"big2", "report"}
        assert asked.values["big2"] is given
        assert asked["report"] == float((given + 1).sum())
        unasked = pipe.run(inputs={"big2": given}, outputs=["report"], store=store)
        assert set(unasked.values) == {"report"}


# -- memory ---------------------------------------------------------------------------------

MEM_N = 50 * 2**20 // 8  # 50 MiB arrays
ARRAY = MEM_N * 8


def _mem_a(seed: int) -> Array:
    return np.full(MEM_N, float(seed))


def _mem_b(a: Array) -> Array:
    return a + 1


def _mem_c(b: Array) -> Array:
    return b + 1


def _mem_d(c: Array) -> Array:
    return c + 1


def _mem_total(d: Array, bump: int) -> int:
    return int(d[0]) + bump


def _mem_chain(kind: Kind = "thread") -> fd.Pipeline:
    bodies: dict[str, Callable[..., Any]] = {
        "a": _mem_a,
        "b": _mem_b,
        "c": _mem_c,
        "d": _mem_d,
        "total": _mem_total,
    }
    return fd.Pipeline(
        [make_node(kind, body, name=name, version="1") for name, body in bodies.items()],
        name="memory",
    )


@pytest.fixture
def traced() -> Iterator[None]:
    """tracemalloc tracing (numpy reports its buffers to it) for the test."""
    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        yield
    finally:
        if started:
            tracemalloc.stop()


@pytest.fixture
def peak(traced: None) -> Callable[..., tuple[fd.RunResult, float]]:
    """Runs a pipeline asked for ``total``: its result, and the peak of traced memory
    during the run, in arrays."""

    def measure(pipe: fd.Pipeline, **options: Any) -> tuple[fd.RunResult, float]:
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        result = pipe.run(outputs=["total"], **options)
        _, top = tracemalloc.get_traced_memory()
        return result, (top - before) / ARRAY

    return measure


INPUTS = {"seed": 1, "bump": 0}


class TestMemory:
    def test_without_a_store_a_value_is_released_once_read(
        self, kind: Kind, peak: Callable[..., tuple[fd.RunResult, float]]
    ) -> None:
        """A node holds its input and its output at once: 2 arrays (measured 2.00), not the
        4 the chain makes (measured 4.00 with keep_values=True, checked here too)."""
        pipe = _mem_chain(kind)
        result, released = peak(pipe, inputs=INPUTS, store=None)
        assert result["total"] == 4
        assert released <= 2.5, f"{released:.2f} arrays"
        result, kept = peak(pipe, inputs=INPUTS, store=None, keep_values=True)
        assert set(result.values) == {"a", "b", "c", "d", "total"}
        assert kept >= 3.5, f"{kept:.2f} arrays: tracemalloc does not see numpy's buffers?"

    def test_with_a_file_store_cold_then_warm(
        self, tmp_path: Path, peak: Callable[..., tuple[fd.RunResult, float]]
    ) -> None:
        """Cold, storing each value costs copies of it on top of the node's input and output:
        encode() makes 3 at its peak (``tobytes()``, msgpack's buffer, its bytes), and the
        writer thread holds the previous body (while writing it, and after: see
        test_a_written_body_is_not_kept_in_memory). Measured: 6.00 arrays, for chains of 2
        to 6 nodes alike (so no value is held). Bound < 7.5: a disk slower than this one
        (50 MiB saved in 0.2 s) can queue one more body, as the writer takes bodies without
        limit. Held values add 2 (measured 8.00 with keep_values=True): checked too, as the
        difference, which does not depend on the disk.

        Warm and fully cached: nothing large is read (measured 0.00; bound 0.25). Warm with
        total changed: d's body alone is read (measured 3.00: the file's buffer, msgpack's
        bytes copy of the array's data, and the array numpy copies from that); bound 3.5,
        which a second body read and held would exceed.
        """
        pipe = _mem_chain()
        result, cold = peak(pipe, inputs=INPUTS, store=tmp_path / "store")
        assert result.counts() == {S.SUCCEEDED: 5}
        assert cold < 7.5, f"{cold:.2f} arrays"
        result, kept = peak(pipe, inputs=INPUTS, store=tmp_path / "kept", keep_values=True)
        assert kept - cold >= 1.5, f"kept {kept:.2f} arrays, released {cold:.2f}"

        result, warm = peak(pipe, inputs=INPUTS, store=tmp_path / "store")
        assert result.counts() == {S.CACHED: 5}
        assert result["total"] == 4
        assert warm < 0.25, f"{warm:.2f} arrays"

        result, rerun = peak(pipe, inputs={"seed": 1, "bump": 1}, store=tmp_path / "store")
        assert result.status == {**dict.fromkeys("abcd", S.CACHED), "total": S.SUCCEEDED}
        assert result["total"] == 5
        assert rerun < 3.5, f"{rerun:.2f} arrays"

    def test_a_written_body_is_not_kept_in_memory(self, tmp_path: Path, traced: None) -> None:
        """While ``b`` runs (for long) after ``a``'s checkpoint was written, the process
        holds ``a``'s value, ``b``'s input: 1 array, not 2 (the body written as well)."""
        objects = tmp_path / "store" / "objects"
        held: list[float] = []

        def written() -> bool:
            return any(
                f.stat().st_size > ARRAY and not f.name.startswith(".")
                for f in objects.rglob("*")
                if f.is_file()
            )

        def b(a: Array) -> float:
            deadline = time.monotonic() + 60
            while not written():
                assert time.monotonic() < deadline, "a's checkpoint was never written"
                time.sleep(0.01)
            gc.collect()
            lowest = math.inf
            for _ in range(50):  # the writer then records the entry: 0.5 s is plenty
                lowest = min(lowest, (tracemalloc.get_traced_memory()[0] - before) / ARRAY)
                time.sleep(0.01)
            held.append(lowest)
            return float(a[0])

        pipe = fd.Pipeline(
            [fd.node(name="a", version="1")(_mem_a), fd.node(name="b", version="1")(b)],
            name="written",
        )
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        assert pipe.run(inputs={"seed": 1}, outputs=["b"], store=tmp_path / "store")["b"] == 1
        (lowest,) = held
        assert lowest < 1.5, f"{lowest:.2f} arrays held while b runs"

    @pytest.mark.parametrize("stored", [False, True], ids=["no store", "file store"])
    def test_a_value_is_dead_while_a_later_node_that_does_not_read_it_runs(
        self, tmp_path: Path, kind: Kind, stored: bool
    ) -> None:
        refs: list[weakref.ref[Array]] = []
        alive: list[bool] = []

        def a(seed: int) -> Array:
            value = np.full(100_000, float(seed))
            refs.append(weakref.ref(value))
            return value

        def b(a: Array) -> float:
            return float(a.sum())

        def c(b: float) -> float:
            gc.collect()
            alive.append(refs[-1]() is not None)
            return b + 1

        pipe = fd.Pipeline(
            [
                make_node(kind, a, name="a", version="1"),
                make_node(kind, b, name="b", version="1"),
                make_node(kind, c, name="c", version="1"),
            ],
            name="weak",
        )
        options: dict[str, Any] = {"store": tmp_path / "store" if stored else None}
        result = pipe.run(inputs={"seed": 1}, outputs=["c"], **options)
        assert result["c"] == 100_001
        # Controls: the same run holding a's value, as an output or with keep_values.
        held = pipe.run(inputs={"seed": 2}, outputs=["a", "c"], **options)
        assert held.values["a"] is refs[-1]()
        kept = pipe.run(inputs={"seed": 3}, outputs=["c"], keep_values=True, **options)
        assert kept.values["a"] is refs[-1]()
        assert alive == [False, True, True]


class TestAValueChangedInPlace:
    """A large array is stored from its own memory, not a copy: it must be on disk before a
    child that changes it in place starts, or the file would hold the changed bytes under
    the unchanged value's digest (a 'damaged' checkpoint at best)."""

    @pytest.mark.parametrize("kind", ["inline", "thread", "async"])
    def test_the_stored_value_is_the_one_returned(self, kind: Kind, tmp_path: Path) -> None:
        original = np.arange(200_000, dtype=np.float64)

        def big() -> np.ndarray:
            return original.copy()

        def doubled(big: np.ndarray, salt: int) -> float:
            big *= 2  # in place: the parent's value itself
            return float(big.sum()) + salt

        nodes = [make_node(kind, big, name="big"), make_node(kind, doubled, name="doubled")]
        pipe = fd.Pipeline(nodes, name="in-place")
        store = tmp_path / "store"
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no damaged checkpoint, now or later
            assert pipe.run({"salt": 0}, store=store)["doubled"] == 2 * original.sum()
            again = pipe.run({"salt": 1}, store=store, keep_values=True)
        assert again.status["big"] is S.CACHED
        assert again["doubled"] == 2 * original.sum() + 1
