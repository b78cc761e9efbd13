"""Whatever is on disk, a store never serves a wrong value, hangs, balloons or loses work.

Each case was found by a hostile pass over the store: files swapped between keys, a FIFO or a
link to ``/dev/zero`` where a checkpoint is, huge files, planted links, full disks, damaged and
oddly named run records.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from conftest import KINDS, make_node

import flowdeco as fd
from flowdeco._core import _files
from flowdeco._core._files import HEADER_SIZE, pack_header
from flowdeco._core._result import new_run_id
from flowdeco._core._store import FileStore

if TYPE_CHECKING:
    from conftest import Kind

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX file types and limits")

KEY = "ab" + "0" * 38
OTHER = "cd" + "1" * 38
BODY = b"\x93\x01\x02\x03 a packed value"


def _object(root: Path, key: str) -> Path:
    return root / "objects" / key[:2] / key


def _kinded(kind: Kind, name: str, value: int) -> fd.Node[..., Any]:
    """A node of ``kind`` named ``name`` returning ``value``, with no inputs."""

    def body() -> int:
        return value

    body.__name__ = name
    return make_node(kind, body, name=name, version=name)


class TestAFileProvesItsKey:
    def test_a_file_under_another_key_is_refused(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        store.save(OTHER, b"another value")
        _object(tmp_path, OTHER).write_bytes(_object(tmp_path, KEY).read_bytes())
        with pytest.raises(fd.CorruptDataError, match=f"belongs to key '{KEY}'"):
            store.load(OTHER)
        assert store.load(KEY) == BODY

    @pytest.mark.parametrize(
        ("first", "second"),
        [pytest.param(a, b, id=f"{a}-{b}") for a, b in itertools.product(KINDS, KINDS)],
    )
    @pytest.mark.parametrize("how", ["swap", "copy"])
    def test_swapped_or_copied_files_are_recomputed_never_served(
        self, tmp_path: Path, first: Kind, second: Kind, how: str
    ) -> None:
        pipe = fd.Pipeline([_kinded(first, "one", 1), _kinded(second, "two", 2)], name="p")
        assert dict(pipe.run().values) == {"one": 1, "two": 2}
        keys = pipe.runs()[-1].nodes
        one, two = (_object(tmp_path / ".flowdeco", keys[n]["key"]) for n in ("one", "two"))
        one_bytes, two_bytes = one.read_bytes(), two.read_bytes()
        two.write_bytes(one_bytes)
        if how == "swap":
            one.write_bytes(two_bytes)
        with pytest.warns(fd.CheckpointWarning, match="belongs to key"):
            result = pipe.run()
        assert dict(result.values) == {"one": 1, "two": 2}
        assert result.status["two"] is fd.Status.SUCCEEDED
        expected = fd.Status.SUCCEEDED if how == "swap" else fd.Status.CACHED
        assert result.status["one"] is expected
        assert pipe.run().counts() == {fd.Status.CACHED: 2}  # repaired


@posix_only
class TestOnlyRegularFilesAreRead:
    @pytest.mark.timeout(30)
    def test_a_fifo_is_refused_without_waiting(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        _object(tmp_path, KEY).unlink()
        os.mkfifo(_object(tmp_path, KEY))
        with pytest.raises(fd.CorruptDataError, match="not a regular file"):
            store.load(KEY)

    def test_a_link_to_dev_zero_is_refused(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        _object(tmp_path, KEY).unlink()
        _object(tmp_path, KEY).symlink_to("/dev/zero")
        with pytest.raises(fd.CorruptDataError, match="symbolic link"):
            store.load(KEY)

    def test_a_link_to_a_valid_checkpoint_is_refused_too(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        elsewhere = tmp_path / "elsewhere"
        _object(tmp_path, KEY).rename(elsewhere)
        _object(tmp_path, KEY).symlink_to(elsewhere)
        with pytest.raises(fd.CorruptDataError, match="symbolic link"):
            store.load(KEY)

    def test_a_huge_file_is_refused_before_it_is_read(self, tmp_path: Path) -> None:
        """3 GiB (sparse) behind a header that promises a few bytes: nothing is read."""
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        with open(_object(tmp_path, KEY), "r+b") as f:
            f.truncate(3 * 2**30)
        tracemalloc.start()
        try:
            with pytest.raises(fd.CorruptDataError, match="header says"):
                store.load(KEY)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2**20, f"{peak / 2**20:.0f} MiB"

    def test_a_huge_file_with_no_header_is_refused_before_it_is_read(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        with open(_object(tmp_path, KEY), "wb") as f:
            f.truncate(3 * 2**30)  # zeros: not a checkpoint
        tracemalloc.start()
        try:
            with pytest.raises(fd.CorruptDataError, match="not a flowdeco checkpoint"):
                store.load(KEY)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 2**20, f"{peak / 2**20:.0f} MiB"


def _available_memory() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@posix_only
@pytest.mark.skipif(_available_memory() < 8 * 2**30, reason="needs 8 GiB of free memory")
def test_a_body_over_2_gib_loads_back(tmp_path: Path) -> None:
    """One read call returns at most about 2 GiB on Linux: larger bodies still load whole."""
    size = 2**31 + 2**20
    zeros = bytes(2**24)
    digest = hashlib.blake2b(digest_size=16)
    for start in range(0, size, len(zeros)):
        digest.update(zeros[: size - start])
    store = FileStore(tmp_path)
    store.save(KEY, b"placeholder")
    crc = 0
    for start in range(0, size, len(zeros)):
        crc = zlib.crc32(zeros[: size - start], crc)
    header = pack_header(KEY, size, digest.digest(), crc)
    file = _object(tmp_path, KEY)
    with open(file, "wb") as f:
        f.write(header)
        f.truncate(HEADER_SIZE + size)  # sparse: the body is zeros, and costs no disk
    body = store.load(KEY)
    assert body is not None
    assert len(body) == size
    assert body[:16] == bytes(16)
    assert body[-16:] == bytes(16)


class TestWrites:
    def test_temporary_files_are_made_exclusively_never_through_a_link(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A link planted at the temporary name is not followed, and its target is untouched."""
        store = FileStore(tmp_path)
        store.save(KEY, BODY)  # the directories exist
        target = tmp_path / "victim.txt"
        target.write_text("precious")
        monkeypatch.setattr(_files.secrets, "token_hex", lambda n: "predictable")
        planted = _object(tmp_path, OTHER).parent
        planted.mkdir(parents=True, exist_ok=True)
        (planted / f".tmp-{OTHER}-predictable").symlink_to(target)
        with pytest.raises(FileExistsError):
            store.save(OTHER, b"attacker wants this in victim.txt")
        assert target.read_text() == "precious"
        assert store.load(OTHER) is None

    def test_temporary_names_are_not_predictable(self, tmp_path: Path) -> None:
        seen = set()
        for _ in range(20):
            name = _files.secrets.token_hex(8)
            seen.add(name)
        assert len(seen) == 20

    @posix_only
    def test_a_failed_write_leaves_no_temporary_file(self, tmp_path: Path) -> None:
        """A file size limit (as a full disk) fails the write: its partial file goes at once."""
        script = textwrap.dedent(
            """
            import resource, sys, warnings
            from pathlib import Path
            import flowdeco as fd

            @fd.node(run_in="inline")
            def big() -> bytes:
                return b"x" * 1_000_000

            resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = fd.Pipeline([big], name="p").run()
            print(len(result["big"]))
            print([str(w.message) for w in caught][0])
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        length, warning = done.stdout.splitlines()
        assert length == "1000000"
        assert "node 'big': checkpoint not written" in warning
        assert not list((tmp_path / ".flowdeco").rglob(".tmp-*"))


def _damaged_records() -> dict[str, bytes]:
    deep = b"[" * 100_000 + b"]" * 100_000
    return {
        "invalid-utf8": b'{"node": "a", "status": "\xff\xfe"}\n',
        "a-list": b"[1, 2, 3]\n",
        "a-string": b'"hello"\n',
        "node-a-list": b'{"node": ["a"], "status": "succeeded"}\n',
        "nested-object": b'{"node": "a", "key": {"x": 1}}\n',
        "deeply-nested": deep + b"\n",
        "deeply-nested-value": b'{"node": "a", "key": ' + deep + b"}\n",
    }


class TestRunRecords:
    @pytest.mark.parametrize("damage", list(_damaged_records()))
    def test_a_damaged_record_is_skipped_with_a_warning_naming_it(
        self, tmp_path: Path, damage: str
    ) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        pipe = fd.Pipeline([a], name="p", store=tmp_path)
        pipe.run()
        good = pipe.runs()[-1].run_id
        bad_id = "20200101T000000.000000000Z-00000000"
        (file,) = (tmp_path / "runs").glob(f"p-*/{good}.jsonl")
        bad = file.with_name(f"{bad_id}.jsonl")
        bad.write_bytes(_damaged_records()[damage] + b'{"event": "end", "ok": false}\n')
        (file.parent / "unfinished").mkdir(exist_ok=True)
        (file.parent / "unfinished" / bad_id).touch()  # as a run that did not end well has
        with pytest.warns(fd.CheckpointWarning, match=f"run record {bad}.* damaged"):
            assert [r.run_id for r in pipe.runs()] == [good]
        with pytest.warns(fd.CheckpointWarning, match="damaged"):
            assert pipe.run(resume=True).status["a"] is fd.Status.CACHED
        with (
            pytest.warns(fd.CheckpointWarning, match="damaged"),
            pytest.raises(fd.ConfigurationError, match="has no run"),
        ):
            pipe.run(resume=bad_id)

    def test_a_long_resume_id_is_no_run_not_an_os_error(self, tmp_path: Path) -> None:
        pipe = fd.Pipeline([], name="p", store=tmp_path)
        with pytest.raises(fd.ConfigurationError, match=r"has no run .*\(5000 characters\)"):
            pipe.run(resume="x" * 5000)

    @pytest.mark.parametrize(
        ("one", "two"),
        [
            pytest.param("a b", "a_b", id="space"),
            pytest.param("x/y", "x_y", id="slash"),
            pytest.param("é", "_", id="accent"),
            pytest.param("..", "__", id="dots"),
        ],
    )
    def test_names_that_read_alike_keep_their_own_records(
        self, tmp_path: Path, one: str, two: str
    ) -> None:
        for name in (one, two):
            fd.Pipeline([], name=name, store=tmp_path).run()
        assert len(fd.Pipeline([], name=one, store=tmp_path).runs()) == 1
        assert len(fd.Pipeline([], name=two, store=tmp_path).runs()) == 1
        records = list(tmp_path.rglob("*.jsonl"))
        assert len(records) == 2
        assert all((tmp_path / "runs") in f.parents for f in records)

    def test_a_long_pipeline_name_has_records(self, tmp_path: Path) -> None:
        pipe = fd.Pipeline([], name="n" * 300, store=tmp_path)
        pipe.run()
        assert len(pipe.runs()) == 1

    def test_resume_carries_work_forward_along_a_chain_of_resumed_runs(
        self, tmp_path: Path
    ) -> None:
        """Run 2 resumed run 1 and was killed before its record said what it reused: run 3,
        resuming run 2, still reuses what run 1 finished."""
        calls: list[str] = []
        fail = [True]

        @fd.node(run_in="inline", cache=False)
        def fetch() -> int:
            calls.append("fetch")
            return 7

        @fd.node(run_in="inline")
        def use(fetch: int) -> int:
            if fail[0]:
                raise RuntimeError("first time")
            return fetch * 2

        pipe = fd.Pipeline([fetch, use], name="p", store=tmp_path)
        assert pipe.run(on_error="continue").status["use"] is fd.Status.FAILED
        first = pipe.runs()[-1].run_id
        second = new_run_id()
        # What a run killed right after it started leaves: its start, naming what it resumed.
        FileStore(tmp_path).record("p", second, [{"event": "start", "resumes": first}])
        fail[0] = False
        result = pipe.run(resume=True)
        assert pipe.runs()[-1].entries[0]["resumes"] == second
        assert result["use"] == 14
        assert result.status["fetch"] is fd.Status.CACHED
        assert calls == ["fetch"]

    def test_finding_the_run_to_resume_reads_no_run_that_ended_well(self, tmp_path: Path) -> None:
        """Records of runs that ended well are not read: damage them all and nothing warns."""

        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        pipe = fd.Pipeline([a], name="p", store=tmp_path)
        for _ in range(30):
            pipe.run()
        for file in (tmp_path / "runs").glob("p-*/*.jsonl"):
            file.write_bytes(b"\xff not json\n{}\n")
        assert pipe.run(resume=True).status["a"] is fd.Status.CACHED  # filterwarnings=error

    def test_resume_true_picks_the_newest_run_that_did_not_end_well(self, tmp_path: Path) -> None:
        boom = [True]

        @fd.node(run_in="inline")
        def a() -> int:
            if boom[0]:
                raise ValueError("no")
            return 1

        pipe = fd.Pipeline([a], name="p", store=tmp_path)
        pipe.run(on_error="continue")
        failed = pipe.runs()[-1].run_id
        boom[0] = False
        pipe.run()
        pipe.run(resume=True)
        assert pipe.runs()[-1].entries[0]["resumes"] == failed


MODULE = """
import time
from pathlib import Path

import flowdeco as fd


@fd.node(cache=False)
def first(x: int) -> int:
    return x


@fd.node(run_in="inline")
def late(first: int) -> int:
    return first * 2
"""

RUN = """
import json, sys, warnings
import flowdeco as fd
import time
from pathlib import Path
import edited

while not Path("go").exists():  # imported; the test edits the module meanwhile
    time.sleep(0.01)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    result = fd.Pipeline.from_module(edited).run({"x": 5})
print(json.dumps({
    "late": result["late"],
    "status": {n: str(s) for n, s in result.status.items()},
    "warnings": [str(w.message) for w in caught],
}))
"""


class TestTheCodeThatRan:
    """A value is stored under the version of the code that computed it, never another's."""

    def _start(self, tmp_path: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", RUN],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(tmp_path)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def _finish(self, process: subprocess.Popen[str]) -> dict[str, Any]:
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        report: dict[str, Any] = json.loads(out)
        return report

    def test_a_module_edited_after_import_leaves_no_stale_value(self, tmp_path: Path) -> None:
        """A version is taken from the code that runs, never from the file: edited after
        the import, the old code runs and gets the old code's stored value; a new process
        runs the new code, and stores it under a version of its own."""
        module = tmp_path / "edited.py"
        module.write_text(MODULE)
        (tmp_path / "go").touch()
        first_run = self._finish(self._start(tmp_path))  # stored
        assert first_run["late"] == 10
        (tmp_path / "go").unlink()

        running = self._start(tmp_path)  # imports late() as first * 2, waits to run
        time.sleep(1.0)
        module.write_text(MODULE.replace("first * 2", "first * 3"))
        (tmp_path / "go").touch()
        during = self._finish(running)
        assert during["late"] == 10  # the code that ran
        assert during["status"]["late"] == "cached"  # the same code as the first run's
        assert during["warnings"] == []

        after = self._finish(self._start(tmp_path))  # a new process: the new code
        assert after["late"] == 15
        assert after["status"]["late"] == "succeeded"
        again = self._finish(self._start(tmp_path))
        assert again["late"] == 15
        assert again["status"]["late"] == "cached"
        assert again["warnings"] == []
