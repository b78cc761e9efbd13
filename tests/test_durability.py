"""Durability: checkpoints survive kills, damage, hostile files, concurrent writers and Ctrl-C.

The crash, race and Ctrl-C tests run ``scripts/crash_pipeline.py`` in real processes on a
store in their working directory; its nodes append ``"<node> <pid>"`` to ``ran.txt`` when
their body runs, and each run record's start entry says which process made it, so a test
can tell which process ran which node.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import pytest

import flowdeco as fd
from flowdeco._core._codec import decode, encode
from flowdeco._core._files import HEADER_SIZE, pack_file, unpack_file
from flowdeco._core._store import FileStore

if TYPE_CHECKING:
    from collections.abc import Callable

SCRIPTS = Path(__file__).parent / "scripts"
CRASH = SCRIPTS / "crash_pipeline.py"
HOSTILE = SCRIPTS / "hostile_checkpoint.py"
#: Seconds any one script process may take before the test gives up on it.
PROCESS_TIMEOUT = 60.0
FINISHED = {"succeeded", "cached"}

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="sends signals")


# -- running the script ----------------------------------------------------------------------


@attrs.frozen
class Exit:
    """How one script process ended."""

    pid: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        """The JSON line the script prints when its run returns."""
        lines = self.stdout.splitlines()
        assert self.returncode == 0 and lines and lines[-1] != "running", self.stderr
        report: dict[str, Any] = json.loads(lines[-1])
        return report


def _start(cwd: Path, shape: str, seed: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CRASH), shape, str(seed), *extra],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_until_running(process: subprocess.Popen[str]) -> None:
    """Block until the script is about to call ``run``."""
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "running\n", line + process.communicate()[1]


def _finish(process: subprocess.Popen[str]) -> Exit:
    try:
        stdout, stderr = process.communicate(timeout=PROCESS_TIMEOUT)
    finally:
        process.kill()
    return Exit(process.pid, process.returncode, stdout, stderr)


def _run(cwd: Path, shape: str, seed: int, *extra: str) -> Exit:
    return _finish(_start(cwd, shape, seed, *extra))


def _ran(cwd: Path) -> list[tuple[str, int]]:
    """``(node, pid)`` for each body that started, in order, from the side file."""
    file = cwd / "ran.txt"
    if not file.exists():
        return []
    # The last piece is "" after a whole line, or a line being appended right now.
    pairs = [line.split() for line in file.read_text().split("\n")[:-1]]
    return [(name, int(pid)) for name, pid in pairs]


def _ran_by(cwd: Path, pid: int) -> list[str]:
    return [name for name, by in _ran(cwd) if by == pid]


def _records(cwd: Path, shape: str, seed: int) -> dict[int, fd.RunRecord]:
    """Each run record of the script's pipeline, by the pid of the process that wrote it."""
    records = {}
    for record in FileStore(cwd / ".flowdeco").runs(f"crash-{shape}-{seed}"):
        starts = [e for e in record.entries if e.get("event") == "start"]
        if not starts:  # killed between creating the file and its first write
            assert not record.entries, record
            continue
        (start,) = starts
        records[start["pid"]] = record
    return records


def _stored(record: fd.RunRecord) -> set[str]:
    """Nodes the run recorded as succeeded with their value stored."""
    return {
        e["node"]
        for e in record.entries
        if e.get("status") == "succeeded" and e.get("stored") is True
    }


def _objects(cwd: Path) -> list[Path]:
    return [f for f in (cwd / ".flowdeco" / "objects").rglob("*") if f.is_file()]


def _assert_store_sound(cwd: Path) -> set[str]:
    """Every checkpoint file (not a temporary one) is whole and decodes; returns their keys."""
    keys = set()
    for file in _objects(cwd):
        if file.name.startswith(".tmp-"):
            continue  # a write a kill cut short, never renamed into place
        body = unpack_file(file.name, file.read_bytes())
        assert isinstance(body, bytes), f"{file}: {body}"
        decode(body)
        assert file.parent.name == file.name[:2]
        keys.add(file.name)
    return keys


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, int], dict[str, Any]]:
    """The values of an uninterrupted run of the script, each in a fresh directory."""
    found: dict[tuple[str, int], dict[str, Any]] = {}

    def values(shape: str, seed: int) -> dict[str, Any]:
        if (shape, seed) not in found:
            done = _run(tmp_path_factory.mktemp(f"reference-{shape}-{seed}"), shape, seed)
            assert set(done.report["status"].values()) == {"succeeded"}
            found[shape, seed] = done.report["values"]
        return found[shape, seed]

    return values


# -- 1. kills ----------------------------------------------------------------------------------


@posix_only
class TestKilledRuns:
    @pytest.mark.parametrize(
        ("shape", "seed", "kills", "pause"),
        [
            pytest.param("layered", 1, 5, 0.1, id="layered-1"),
            pytest.param("layered", 8, 5, 0.1, id="layered-8"),
            # 200 inline nodes of well under a millisecond: the kills land in the writes.
            pytest.param("many", 3, 12, 0.01, id="many-writes"),
        ],
    )
    def test_sigkill_loses_nothing_finished_and_loads_nothing_damaged(
        self,
        tmp_path: Path,
        reference: Callable[[str, int], dict[str, Any]],
        shape: str,
        seed: int,
        kills: int,
        pause: float,
    ) -> None:
        """SIGKILLs at random moments, then a run to the end: the same values as a run never
        killed, no node recorded as stored runs again in a later process, and every file
        left in the store is whole."""
        rng = random.Random(seed)
        size = len(reference(shape, seed))
        exits: list[Exit] = []
        for _ in range(kills):
            stored = set().union(*map(_stored, _records(tmp_path, shape, seed).values()))
            process = _start(tmp_path, shape, seed)
            # Up to two nodes before the end, then up to ``pause`` more seconds.
            started = rng.randint(0, max(0, size - len(stored) - 2))
            _wait_until_running(process)
            # Bounded: a process that ran fewer nodes than ``started`` (some came from the
            # cache) may have finished and be blocked writing its report to the full pipe.
            deadline = time.monotonic() + 3
            while (
                len(_ran_by(tmp_path, process.pid)) < started
                and process.poll() is None
                and time.monotonic() < deadline
            ):
                time.sleep(0.002)
            time.sleep(rng.uniform(0, pause))
            process.kill()
            exits.append(_finish(process))
            _assert_store_sound(tmp_path)  # (c) before the next process could repair a file
        final = _run(tmp_path, shape, seed)
        exits.append(final)

        killed = [e for e in exits if e.returncode == -signal.SIGKILL]
        assert len(killed) >= 2, "too few kills landed mid-run to test anything"
        for done in exits:
            assert done.returncode in (0, -signal.SIGKILL), done.stderr
            assert "CheckpointWarning" not in done.stderr, done.stderr

        # (a) The final run gives what an uninterrupted run gives.
        report = final.report
        assert report["values"] == reference(shape, seed)
        assert set(report["status"].values()) <= FINISHED, report["status"]

        # (b) What a killed process recorded as stored never runs again.
        records = _records(tmp_path, shape, seed)
        later_runs = 0
        for i, done in enumerate(exits[:-1]):
            record = records.get(done.pid)
            stored = set() if record is None else _stored(record)
            later = {name for e in exits[i + 1 :] for name in _ran_by(tmp_path, e.pid)}
            assert not stored & later, f"process {i} stored these, later ones ran them again"
            later_runs += len(stored)
        assert later_runs > 0, "no killed process stored anything: nothing was tested"
        # Every node ran in some process; those that ran in the last one had not been stored.
        assert {name for name, _ in _ran(tmp_path)} == set(report["values"])
        assert set(_ran_by(tmp_path, final.pid)) == {
            name for name, status in report["status"].items() if status == "succeeded"
        }

        # (c) Nothing damaged was there to load: every file is whole, one per node.
        final_record = records[final.pid]
        assert final_record.ok
        assert _assert_store_sound(tmp_path) == {e["key"] for e in final_record.nodes.values()}
        assert len(final_record.nodes) == len(report["values"])


# -- 2. damaged files --------------------------------------------------------------------------


def _flip_a_body_bit(data: bytes) -> bytes:
    at = HEADER_SIZE + (len(data) - HEADER_SIZE) // 2
    return data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]


def _key_of(data: bytes) -> str:
    """The key a checkpoint file's header says it belongs to."""
    return data[7 : 7 + data[6]].decode()  # after magic, version, flags and its length


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "bit-flip": _flip_a_body_bit,
    "truncated": lambda data: data[: len(data) - 3],
    "zero-filled": lambda data: bytes(len(data)),
    "foreign": lambda data: b"<html><body>502 Bad Gateway</body></html>",
    "empty": lambda data: b"",
    "not-a-value": lambda data: pack_file(_key_of(data), b"\xc1garbage"),
}


@attrs.define
class Chain:
    """``a -> b -> c -> d`` and a side branch ``a -> e``; ``ran`` lists the bodies called."""

    pipe: fd.Pipeline
    ran: list[str]


def _chain() -> Chain:
    ran: list[str] = []

    @fd.node(run_in="inline")
    def a() -> list[int]:
        ran.append("a")
        return [3, 1, 4, 1, 5, 9, 2, 6]

    @fd.node
    def b(a: list[int]) -> dict[str, Any]:
        ran.append("b")
        return {"sorted": sorted(a), "sum": sum(a)}

    @fd.node
    async def c(b: dict[str, Any]) -> list[int]:
        ran.append("c")
        return [x * b["sum"] for x in b["sorted"]]

    @fd.node(run_in="inline")
    def d(c: list[int]) -> int:
        ran.append("d")
        return sum(c)

    @fd.node
    def e(a: list[int]) -> str:
        ran.append("e")
        return "-".join(map(str, a))

    return Chain(fd.Pipeline([a, b, c, d, e], name="chain"), ran)


CHAIN_VALUES = {
    "a": [3, 1, 4, 1, 5, 9, 2, 6],
    "b": {"sorted": [1, 1, 2, 3, 4, 5, 6, 9], "sum": 31},
    "c": [31, 31, 62, 93, 124, 155, 186, 279],
    "d": 961,
    "e": "3-1-4-1-5-9-2-6",
}


def _object_file(pipe: fd.Pipeline, name: str) -> Path:
    key = pipe.runs()[-1].nodes[name]["key"]
    return Path(".flowdeco", "objects", key[:2], key).resolve()


class TestDamagedCheckpoints:
    @pytest.mark.parametrize("victim", ["a", "b", "d"])
    @pytest.mark.parametrize("damage", list(DAMAGE))
    def test_damaged_file_is_recomputed_with_a_warning_and_repaired(
        self, damage: str, victim: str
    ) -> None:
        """A damaged checkpoint is never loaded: its node alone runs again, with a warning
        that names it; its children stay cached (same value, same version); the file is
        rewritten whole."""
        chain = _chain()
        first = chain.pipe.run()
        assert dict(first.values) == CHAIN_VALUES
        file = _object_file(chain.pipe, victim)
        good = file.read_bytes()
        file.write_bytes(DAMAGE[damage](good))
        chain.ran.clear()

        with pytest.warns(fd.CheckpointWarning) as caught:
            second = chain.pipe.run()
        (message,) = [str(w.message) for w in caught]
        assert f"node {victim!r}" in message
        assert "recomputed" in message
        if damage != "not-a-value":  # the store's checks name the file; decode only the node
            assert os.path.join("objects", file.name[:2], file.name) in message, message
        assert chain.ran == [victim]
        assert second.status[victim] is fd.Status.SUCCEEDED
        assert {n: s for n, s in second.status.items() if n != victim} == dict.fromkeys(
            set(CHAIN_VALUES) - {victim}, fd.Status.CACHED
        )
        assert dict(second.values) == CHAIN_VALUES
        assert file.read_bytes() == good

        chain.ran.clear()
        third = chain.pipe.run()  # a warning here would fail the test (filterwarnings=error)
        assert chain.ran == []
        assert set(third.status.values()) == {fd.Status.CACHED}
        assert dict(third.values) == CHAIN_VALUES

    def test_early_cutoff_holds_for_a_set_recomputed_in_another_process(
        self, tmp_path: Path
    ) -> None:
        """A damaged checkpoint of a set-valued node, recomputed in a new process: the equal
        set leaves its child cached, as any equal value should."""

        def run(hash_seed: str) -> dict[str, Any]:
            done = subprocess.run(
                [sys.executable, str(SCRIPTS / "set_value_pipeline.py")],
                cwd=tmp_path,
                env={**os.environ, "PYTHONHASHSEED": hash_seed},
                capture_output=True,
                text=True,
                timeout=PROCESS_TIMEOUT,
                check=True,
            )
            report: dict[str, Any] = json.loads(done.stdout)
            return report

        first = run("1")
        assert first["ran"] == ["words", "longest"]
        file = tmp_path / ".flowdeco" / "objects" / first["key"][:2] / first["key"]
        file.write_bytes(_flip_a_body_bit(file.read_bytes()))
        second = run("2")  # iterates the set in another order than hash seed 1
        assert len(second["warnings"]) == 1
        assert second["status"]["words"] == "succeeded"
        assert second["longest"] == "epsilon"
        assert second["ran"] == ["words"]
        assert second["status"]["longest"] == "cached"


# -- 3. hostile files --------------------------------------------------------------------------


#: The key hostile files are made for; the script puts the real key in their header, so that
#: what is tested is the body, not the key check.
HOSTILE_KEY = "0" * 40


def _claims_2_62(body: bytes) -> bytes:
    """A header whose length field says 2**62, around a small valid body and its checksum."""
    data = pack_file(HOSTILE_KEY, body)
    at = HEADER_SIZE - 24  # the length field, before the 16-byte checksum
    return data[:at] + (2**62).to_bytes(8, "big") + data[at + 8 :]


HOSTILE_BODIES = {
    "array32": b"\xdd\xff\xff\xff\xff",
    "map32": b"\xdf\xff\xff\xff\xff",
    "bin32": b"\xc6\xff\xff\xff\xff",
    "str32": b"\xdb\xff\xff\xff\xff",
    "ext32": b"\xc9\xff\xff\xff\xff\x01",
    "array32-then-items": b"\xdd\x7f\xff\xff\xff" + b"\xc0" * 64,
    "nested-100000": b"\x91" * 100_000 + b"\xc0",
    "nested-maps-100000": b"\x81\xc0" * 100_000 + b"\xc0",
}
HOSTILE_FILES = {
    "header-claims-2**62": _claims_2_62(encode({"sum": 45, "count": 10})),
    **{name: pack_file(HOSTILE_KEY, body) for name, body in HOSTILE_BODIES.items()},
}


class TestHostileCheckpoints:
    @pytest.mark.parametrize("body", list(HOSTILE_BODIES.values()), ids=list(HOSTILE_BODIES))
    def test_decode_refuses_fast_without_allocating(self, body: bytes) -> None:
        """Lengths and depths the bytes claim cost neither time nor memory to refuse."""
        tracemalloc.start()
        try:
            start = time.perf_counter()
            with pytest.raises(fd.CorruptDataError):
                decode(body)
            seconds = time.perf_counter() - start
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seconds < 0.5
        assert peak < 16 * 2**20, f"{peak / 2**20:.0f} MiB"

    @posix_only
    @pytest.mark.parametrize("hostile", list(HOSTILE_FILES.values()), ids=list(HOSTILE_FILES))
    def test_hostile_checkpoint_is_recomputed_fast_and_small(
        self, tmp_path: Path, hostile: bytes
    ) -> None:
        """A crafted file where a checkpoint is: the run warns and recomputes that node within
        a couple of seconds, and the process's peak memory barely moves."""
        (tmp_path / "hostile.bin").write_bytes(hostile)
        done = _finish(
            subprocess.Popen(
                [sys.executable, str(HOSTILE), "hostile.bin"],
                cwd=tmp_path,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        growth = report["peak_growth_kib"]
        assert report["seconds"] < 2.0
        assert growth < 64 * 1024, f"peak memory grew {growth / 1024:.0f} MiB"
        (message,) = report["warnings"]
        assert "node 'middle'" in message
        assert report["ran"] == ["middle"]
        assert report["status"] == {"source": "cached", "middle": "succeeded", "sink": "cached"}
        assert report["sink"] == 4.5
        path = Path(report["path"])
        assert unpack_file(path.name, path.read_bytes()) == encode({"sum": 45, "count": 10})


# -- 4. two processes on one store -------------------------------------------------------------


@posix_only
class TestConcurrentProcesses:
    @pytest.mark.parametrize(
        ("shape", "offset"),
        [
            pytest.param("layered", 0.0, id="layered-together"),
            pytest.param("layered", 0.1, id="layered-0.1s-apart"),
            pytest.param("layered", 0.3, id="layered-0.3s-apart"),
            # 200 quick nodes: both processes write the same keys at nearly the same moments.
            pytest.param("many", 0.0, id="many-together"),
        ],
    )
    def test_two_processes_on_one_store(
        self,
        tmp_path: Path,
        reference: Callable[[str, int], dict[str, Any]],
        shape: str,
        offset: float,
    ) -> None:
        """Two runs of one pipeline on one store at once, the second started ``offset``
        seconds later: both succeed with the right values and leave a consistent store that
        a third run is served from entirely."""
        seed = 4
        expected = reference(shape, seed)
        if offset:
            first = _start(tmp_path, shape, seed)
            time.sleep(offset)
            second = _start(tmp_path, shape, seed)
        else:  # both imported and built the pipeline; their runs start within a millisecond
            first, second = (
                _start(tmp_path, shape, seed, "wait"),
                _start(tmp_path, shape, seed, "wait"),
            )
            _wait_until_running(first)
            _wait_until_running(second)
            (tmp_path / "go").touch()
        exits = [_finish(first), _finish(second)]
        for done in exits:
            assert done.returncode == 0, done.stderr
            assert done.stderr == ""
            assert done.report["values"] == expected
            assert set(done.report["status"].values()) <= FINISHED

        records = _records(tmp_path, shape, seed)
        assert set(records) == {done.pid for done in exits}
        assert all(record.ok for record in records.values())
        assert not list((tmp_path / ".flowdeco").rglob(".tmp-*"))
        keys = _assert_store_sound(tmp_path)
        assert len(keys) == len(expected)

        third = _run(tmp_path, shape, seed)
        assert third.returncode == 0, third.stderr
        assert third.stderr == ""
        assert set(third.report["status"].values()) == {"cached"}
        assert third.report["values"] == expected
        assert _ran_by(tmp_path, third.pid) == []
        third_keys = {e["key"] for e in _records(tmp_path, shape, seed)[third.pid].nodes.values()}
        assert third_keys == keys


# -- 5. failures and Ctrl-C --------------------------------------------------------------------


@attrs.define
class Fragile:
    """``a -> e``, ``(a, e, limit) -> b -> c -> d``: ``b`` fails while ``broken`` or when the
    sum exceeds ``limit``."""

    pipe: fd.Pipeline
    ran: list[str]
    broken: dict[str, bool]


def _fragile() -> Fragile:
    ran: list[str] = []
    broken = {"b": False}

    @fd.node(run_in="inline")
    def a() -> list[int]:
        ran.append("a")
        return [1, 2, 3]

    @fd.node
    def e(a: list[int]) -> int:
        ran.append("e")
        return len(a)

    @fd.node
    def b(a: list[int], e: int, limit: int) -> int:
        ran.append("b")
        if broken["b"] or sum(a) > limit:
            raise ValueError("b cannot go on")
        return sum(a) * e

    @fd.node
    async def c(b: int) -> list[int]:
        ran.append("c")
        return [b, b + 1]

    @fd.node(run_in="inline")
    def d(c: list[int]) -> int:
        ran.append("d")
        return sum(c)

    return Fragile(fd.Pipeline([a, e, b, c, d], name="fragile"), ran, broken)


class TestFailureAndInterrupt:
    @pytest.mark.parametrize("fix", ["input", "condition"])
    def test_after_a_failure_only_the_failed_node_and_its_descendants_run(self, fix: str) -> None:
        """Fixing what made ``b`` fail (an input it reads, or something outside the run),
        the next run runs ``b`` and its descendants; its other ancestors are cached."""
        fragile = _fragile()
        fragile.broken["b"] = fix == "condition"
        limit = 1 if fix == "input" else 100
        with pytest.raises(fd.NodeFailed, match="'b'"):
            fragile.pipe.run(inputs={"limit": limit})
        assert sorted(fragile.ran) == ["a", "b", "e"]
        (failed,) = fragile.pipe.runs()
        assert failed.nodes["b"]["status"] == "failed"
        assert not failed.ok

        fragile.broken["b"] = False
        fragile.ran.clear()
        result = fragile.pipe.run(inputs={"limit": 100})
        assert fragile.ran == ["b", "c", "d"]
        assert result.status == {
            "a": fd.Status.CACHED,
            "e": fd.Status.CACHED,
            "b": fd.Status.SUCCEEDED,
            "c": fd.Status.SUCCEEDED,
            "d": fd.Status.SUCCEEDED,
        }
        assert result["d"] == 37

    @posix_only
    @pytest.mark.parametrize(
        ("shape", "resume"),
        [
            pytest.param("layered", False, id="layered-run-again"),
            pytest.param("layered", True, id="layered-resume"),
            # All inline and no event loop: the interrupt may land anywhere in the scheduler.
            pytest.param("many", False, id="many-run-again"),
        ],
    )
    def test_after_ctrl_c_only_the_unfinished_nodes_run(
        self,
        tmp_path: Path,
        reference: Callable[[str, int], dict[str, Any]],
        shape: str,
        resume: bool,
    ) -> None:
        """SIGINT mid-run, then a run again (plain or ``resume=True``): exactly the nodes
        the interrupted run did not record as finished run, once each."""
        seed = 5
        expected = reference(shape, seed)
        process = _start(tmp_path, shape, seed)
        _wait_until_running(process)
        while len(_ran_by(tmp_path, process.pid)) < len(expected) // 3 and process.poll() is None:
            time.sleep(0.002)
        process.send_signal(signal.SIGINT)
        interrupted = _finish(process)
        assert interrupted.returncode != 0
        assert "KeyboardInterrupt" in interrupted.stderr, interrupted.stderr
        record = _records(tmp_path, shape, seed)[interrupted.pid]
        assert record.finished and not record.ok
        done_before = _stored(record)
        assert 0 < len(done_before) < len(expected), "the interrupt did not land mid-run"

        again = _run(tmp_path, shape, seed, *(["resume"] if resume else []))
        report = again.report
        assert report["values"] == expected
        ran = _ran_by(tmp_path, again.pid)
        assert len(ran) == len(set(ran))
        assert set(ran) == set(expected) - done_before
        assert {n for n, s in report["status"].items() if s == "cached"} == done_before
        if resume:
            (start,) = [
                e for e in _records(tmp_path, shape, seed)[again.pid].entries if "resumes" in e
            ]
            assert start["resumes"] == record.run_id
