"""Checkpoint stores: atomic, checksummed files; damage is a miss with a warning."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest

import flowdeco as fd
from flowdeco._core._errors import CorruptDataError
from flowdeco._core._files import MAGIC, pack_file, unpack_file
from flowdeco._core._store import FileStore, MemoryStore

KEY = "ab" + "0" * 30
BODY = b"\x93\x01\x02\x03 the packed value"


@pytest.fixture(params=["file", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> FileStore | MemoryStore:
    return FileStore(tmp_path / "store") if request.param == "file" else MemoryStore()


class TestBothStores:
    def test_round_trip(self, store: FileStore | MemoryStore) -> None:
        assert store.load(KEY) is None
        assert not store.contains(KEY)
        store.save(KEY, BODY)
        assert store.contains(KEY)
        assert store.load(KEY) == BODY

    def test_overwrite(self, store: FileStore | MemoryStore) -> None:
        store.save(KEY, BODY)
        store.save(KEY, b"other")
        assert store.load(KEY) == b"other"

    def test_run_records_in_order(self, store: FileStore | MemoryStore) -> None:
        first_id, second_id = "20260101T000000.000000001Z-a", "20260101T000000.000000002Z-b"
        store.record("p", first_id, [{"node": "a", "key": KEY}])
        store.record("p", first_id, [{"node": "b", "key": KEY}])
        store.record("p", second_id, [{"node": "a", "key": KEY}, {"event": "end", "ok": False}])
        store.record("other", "x", [{"node": "z"}])
        first, second = store.runs("p")
        assert first.run_id == first_id and second.run_id == second_id
        assert [e["node"] for e in first.entries] == ["a", "b"]
        assert not first.finished and not first.ok
        assert second.finished and not second.ok
        assert set(first.nodes) == {"a", "b"}
        assert store.runs("missing") == []

    def test_one_run_by_id(self, store: FileStore | MemoryStore) -> None:
        store.record("p", "r1", [{"node": "a"}, {"event": "end", "ok": True}])
        record = store.run("p", "r1")
        assert record is not None and record.ok
        assert store.run("p", "r2") is None
        assert store.run("other", "r1") is None

    def test_the_last_entry_of_a_node_wins(self, store: FileStore | MemoryStore) -> None:
        store.record("p", "r1", [{"node": "a", "status": "failed"}])
        store.record("p", "r1", [{"node": "a", "status": "succeeded"}])
        record = store.run("p", "r1")
        assert record is not None
        assert record.nodes["a"]["status"] == "succeeded"


class TestFileFormat:
    def test_header_then_body(self) -> None:
        data = pack_file(KEY, BODY)
        assert data.startswith(MAGIC)
        assert data.endswith(BODY)
        assert unpack_file(KEY, data) == BODY

    @pytest.mark.parametrize(
        ("damage", "reason"),
        [
            pytest.param(lambda d: d[:10], "truncated header", id="truncated-header"),
            pytest.param(lambda d: d[:-3], "header says", id="truncated-body"),
            pytest.param(lambda d: d + b"x", "header says", id="extended"),
            pytest.param(lambda d: b"\0" * len(d), "not a flowdeco checkpoint", id="zeroed"),
            pytest.param(lambda d: b"PK\x03\x04" + d[4:], "not a flowdeco", id="foreign"),
            pytest.param(lambda d: d[:4] + b"\x63" + d[5:], "format version 99", id="version"),
            pytest.param(
                lambda d: d[:-1] + bytes([d[-1] ^ 0x01]), "checksum mismatch", id="bit-flip"
            ),
        ],
    )
    def test_damage_is_named(self, damage: object, reason: str) -> None:
        verdict = unpack_file(KEY, damage(pack_file(KEY, BODY)))  # type: ignore[operator]
        assert isinstance(verdict, str)
        assert reason in verdict


class TestFileStore:
    def test_writes_gitignore(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path / ".flowdeco")
        store.save(KEY, BODY)
        assert (tmp_path / ".flowdeco" / ".gitignore").read_text().splitlines()[-1] == "*"

    def test_default_path_is_dot_flowdeco(self) -> None:
        assert FileStore().path == Path(".flowdeco")

    @pytest.mark.parametrize(
        "damage",
        [
            pytest.param(lambda d: d[: len(d) // 2], id="truncated"),
            pytest.param(lambda d: bytes(len(d)), id="zero-filled"),
            pytest.param(lambda d: d[:-1] + bytes([d[-1] ^ 0x80]), id="bit-flip"),
            pytest.param(lambda d: b"<html>not ours</html>", id="replaced"),
            pytest.param(lambda d: b"", id="empty"),
        ],
    )
    def test_damaged_file_is_refused_by_name(self, tmp_path: Path, damage: object) -> None:
        store = FileStore(tmp_path)
        store.save(KEY, BODY)
        file = tmp_path / "objects" / KEY[:2] / KEY
        file.write_bytes(damage(file.read_bytes()))  # type: ignore[operator]
        with pytest.raises(CorruptDataError, match=re.escape(str(file))):
            store.load(KEY)

    def test_a_removed_directory_is_made_again(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path / "store")
        store.save(KEY, BODY)
        shutil.rmtree(tmp_path / "store")  # a user clearing the cache between runs
        store.save(KEY, BODY)
        assert store.load(KEY) == BODY
        assert (tmp_path / "store" / ".gitignore").exists()

    def test_no_temporary_files_left(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path, fsync=True)
        for i in range(5):
            store.save(f"{i:02d}" + "f" * 30, BODY)
        assert not list(tmp_path.rglob(".tmp-*"))

    def test_sweeps_orphaned_temporary_files(self, tmp_path: Path) -> None:
        shard = tmp_path / "objects" / "ab"
        shard.mkdir(parents=True)
        old, fresh = shard / ".tmp-old-1-2", shard / ".tmp-fresh-1-2"
        old.write_bytes(b"half a file")
        fresh.write_bytes(b"being written right now")
        hours_ago = time.time() - 2 * 3600
        os.utime(old, (hours_ago, hours_ago))
        FileStore(tmp_path).save(KEY, BODY)
        assert not old.exists()
        assert fresh.exists()  # may belong to a live writer

    def test_rejects_keys_that_are_not_hex(self, tmp_path: Path) -> None:
        with pytest.raises(Exception, match="invalid checkpoint key"):
            FileStore(tmp_path).load("../../etc/passwd")

    def test_run_record_survives_a_torn_last_line(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        store.record("p", "r1", [{"node": "a"}])
        (folder,) = (tmp_path / "runs").glob("p-*")
        with open(folder / "r1.jsonl", "a") as f:
            f.write('{"node": "b", "ke')  # a crash mid-write
        (record,) = store.runs("p")
        assert list(record.nodes) == ["a"]

    def test_concurrent_writers_of_one_key(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        errors: list[BaseException] = []

        def write() -> None:
            try:
                for _ in range(50):
                    store.save(KEY, BODY)
                    assert store.load(KEY) == BODY
            except BaseException as exc:  # noqa: BLE001  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=write) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert store.load(KEY) == BODY


class TestCompactRecords:
    """A warm run's record holds one line for its cached nodes, read back as one entry each."""

    def test_cached_nodes_share_one_line_and_read_back_one_by_one(self, tmp_path: Path) -> None:
        @fd.node(run_in="inline")
        def first() -> int:
            return 1

        @fd.node(run_in="inline")
        def second(first: int) -> int:
            return first + 1

        pipe = fd.Pipeline([first, second], store=tmp_path / "store")
        cold = pipe.run()
        warm = pipe.run()
        assert set(warm.status.values()) == {fd.Status.CACHED}
        store = FileStore(tmp_path / "store")
        (file,) = list((tmp_path / "store" / "runs").rglob(f"{warm.run_id}.jsonl"))
        lines = file.read_text().splitlines()
        assert sum('"event":"cached"' in line for line in lines) == 1
        assert not any('"status":"cached"' in line for line in lines)
        record = store.run(pipe.name, warm.run_id)
        assert record is not None
        cold_record = store.run(pipe.name, cold.run_id)
        assert cold_record is not None
        keys = {name: entry["key"] for name, entry in cold_record.nodes.items()}
        assert record.nodes == {
            name: {
                "node": name,
                "status": "cached",
                "key": keys[name],
                "stored": True,
                "seconds": 0.0,
            }
            for name in ("first", "second")
        }

    def test_a_malformed_compact_line_stands_for_no_node(self, tmp_path: Path) -> None:
        store = FileStore(tmp_path)
        run_id = "20261203T000000.000000000Z-00000000"
        store.record("p", run_id, [{"event": "start"}])
        folder = next((tmp_path / "runs").iterdir())
        with open(folder / f"{run_id}.jsonl", "a") as f:
            f.write('{"event":"cached","nodes":["only-a-name"]}\n')
        record = store.run("p", run_id)
        assert record is not None
        assert record.nodes == {}
