"""Checkpoint stores: where packed node values and run records live.

``FileStore`` (the default, ``.flowdeco/`` in the working directory) writes each value to
its own file: a header (magic, format version, body length, checksum) and the body. Writes
go to a temporary file in the same directory and are renamed into place, so a reader sees
a whole file or none; a file that fails any check raises :class:`CorruptDataError` naming
the file, which a run turns into a warning and a recomputed node, never a wrong value.
``MemoryStore`` keeps everything in a dict, for tests and throwaway runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import attrs

from ._errors import ConfigurationError, CorruptDataError, FlowdecoError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = ["CheckpointWarning", "FileStore", "MemoryStore", "RunRecord", "Store", "open_store"]

MAGIC = b"FDCK"
FORMAT_VERSION = 1
# magic, format version, body length, blake2b-128 of the body
_HEADER = struct.Struct(">4sBQ16s")
_KEY = re.compile(r"^[0-9a-f]{16,128}$")
# One encoder for every record line: json.dumps with options builds a new one per call.
_to_json = json.JSONEncoder(separators=(",", ":"), default=str).encode
_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0)
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
_ORPHAN_AGE = 3600.0  # seconds after which a leftover temporary file is swept


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used or written (damaged, unreadable, unencodable)."""


@runtime_checkable
class Store(Protocol):
    """Where checkpoints go: values by key, and one record per run.

    A run calls ``load`` from its scheduler and ``save``/``record`` from one writer thread.
    """

    def load(self, key: str) -> bytes | None:
        """The body stored under ``key``, or None if there is none.

        Raises:
            CorruptDataError: The stored body is damaged; the message names where it is.
        """

    def save(self, key: str, body: bytes) -> None:
        """Store ``body`` under ``key``, atomically: a reader sees all of it or nothing."""

    def contains(self, key: str) -> bool:
        """Whether ``key`` has a body stored (it may still fail its checks on load)."""

    def record(self, pipeline: str, run_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        """Append entries (a node finished, the run started or ended) to a run's record."""

    def runs(self, pipeline: str) -> list[RunRecord]:
        """The pipeline's run records, oldest first."""

    def run(self, pipeline: str, run_id: str) -> RunRecord | None:
        """One run's record, or None if the store has none by that id."""


@attrs.frozen
class RunRecord:
    """What a run left behind: its entries in order, and whether it finished."""

    pipeline: str
    run_id: str
    entries: tuple[Mapping[str, Any], ...]

    @property
    def finished(self) -> bool:
        """Whether the run recorded its end (a crashed or killed run did not)."""
        return any(e.get("event") == "end" for e in self.entries)

    @property
    def ok(self) -> bool:
        """Whether the run ended with every planned node succeeded or cached."""
        return any(e.get("event") == "end" and e.get("ok") is True for e in self.entries)

    @property
    def nodes(self) -> dict[str, Mapping[str, Any]]:
        """The last entry recorded for each node."""
        return {e["node"]: e for e in self.entries if "node" in e}


def pack_file(body: bytes) -> bytes:
    """Header and body, as written to a checkpoint file."""
    digest = hashlib.blake2b(body, digest_size=16).digest()
    return _HEADER.pack(MAGIC, FORMAT_VERSION, len(body), digest) + body


def unpack_file(data: bytes) -> bytes | str:
    """The body of a checkpoint file, or why it cannot be trusted."""
    if len(data) < _HEADER.size:
        return "truncated header"
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        return "not a flowdeco checkpoint"
    if version != FORMAT_VERSION:
        return f"format version {version}, this flowdeco reads {FORMAT_VERSION}"
    body = data[_HEADER.size :]
    if len(body) != length:
        return f"body is {len(body)} bytes, header says {length}"
    if hashlib.blake2b(body, digest_size=16).digest() != digest:
        return "checksum mismatch"
    return body


@attrs.define(eq=False)
class FileStore:
    """Checkpoints as files under ``path`` (created on first use, with a ``.gitignore``).

    Args:
        path: The store's directory.
        fsync: Flush each file to disk before renaming it into place. Off by default: the
            checksum already guarantees a damaged file is never used, and fsync costs
            milliseconds per file; turn it on to also keep the last writes across a power
            loss.
    """

    path: Path = attrs.field(converter=Path, default=Path(".flowdeco"))
    fsync: bool = False
    _ready: bool = attrs.field(default=False, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _shards: set[str] = attrs.field(factory=set, init=False, repr=False)  # made already

    def load(self, key: str) -> bytes | None:
        file = self._object(key)
        try:
            data = _read_all(file)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CorruptDataError(f"cannot read checkpoint {file}: {exc}") from exc
        body = unpack_file(data)
        if isinstance(body, str):
            raise CorruptDataError(f"damaged checkpoint {file} ({body})")
        return body

    def save(self, key: str, body: bytes) -> None:
        file = self._object(key)
        data = pack_file(body)
        try:
            self._write_object(key, file, data)
        except FileNotFoundError:
            # The directory was removed since this store made it (``rm -rf .flowdeco``
            # between runs): forget what it made, and make it again.
            self._ready = False
            self._shards.clear()
            self._write_object(key, file, data)

    def _write_object(self, key: str, file: str, data: bytes) -> None:
        self._prepare()
        shard = key[:2]
        if shard not in self._shards:
            os.makedirs(os.path.dirname(file), exist_ok=True)
            self._shards.add(shard)
        self._write_atomically(file, data)

    def contains(self, key: str) -> bool:
        return os.path.isfile(self._object(key))

    def record(self, pipeline: str, run_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        self._prepare()
        folder = self.path / "runs" / _safe_name(pipeline)
        folder.mkdir(parents=True, exist_ok=True)
        text = "".join([_to_json(e) + "\n" for e in entries])
        # One O_APPEND write per batch of whole lines: a crash loses at most the lines being
        # written, and a torn last line is skipped on reading.
        fd = os.open(folder / f"{run_id}.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _write_all(fd, text.encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def runs(self, pipeline: str) -> list[RunRecord]:
        folder = self.path / "runs" / _safe_name(pipeline)
        if not folder.is_dir():
            return []
        return [
            RunRecord(pipeline, file.stem, tuple(_read_entries(file)))
            for file in sorted(folder.glob("*.jsonl"))  # run ids sort by time
        ]

    def run(self, pipeline: str, run_id: str) -> RunRecord | None:
        file = self.path / "runs" / _safe_name(pipeline) / f"{_safe_name(run_id)}.jsonl"
        if not file.is_file():
            return None
        return RunRecord(pipeline, run_id, tuple(_read_entries(file)))

    def _object(self, key: str) -> str:
        # Strings, not Paths: this runs once per node, and pathlib costs microseconds.
        if not _KEY.match(key):
            raise FlowdecoError(f"invalid checkpoint key {key!r}: expected lowercase hex")
        return f"{self.path}{os.sep}objects{os.sep}{key[:2]}{os.sep}{key}"

    def _prepare(self) -> None:
        """Create the directory with its .gitignore, and sweep orphaned temporary files."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            (self.path / "objects").mkdir(parents=True, exist_ok=True)
            ignore = self.path / ".gitignore"
            if not ignore.exists():
                self._write_atomically(str(ignore), b"# flowdeco checkpoints: not for git\n*\n")
            self._sweep()
            self._ready = True

    def _sweep(self) -> None:
        cutoff = time.time() - _ORPHAN_AGE
        for temp in (self.path / "objects").glob("*/.tmp-*"):
            _remove_if_older(temp, cutoff)

    def _write_atomically(self, file: str, data: bytes) -> None:
        folder, name = os.path.split(file)
        temp = os.path.join(folder, f".tmp-{name}-{os.getpid()}-{threading.get_ident()}")
        fd = os.open(temp, _CREATE, 0o644)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, file)  # atomic on POSIX and Windows


@attrs.define(eq=False)
class MemoryStore:
    """Checkpoints in memory: for tests and for runs that need no files."""

    _objects: dict[str, bytes] = attrs.field(factory=dict)
    _runs: dict[tuple[str, str], list[Mapping[str, Any]]] = attrs.field(factory=dict)

    def load(self, key: str) -> bytes | None:
        return self._objects.get(key)

    def save(self, key: str, body: bytes) -> None:
        self._objects[key] = body

    def contains(self, key: str) -> bool:
        return key in self._objects

    def record(self, pipeline: str, run_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        self._runs.setdefault((pipeline, run_id), []).extend(dict(e) for e in entries)

    def runs(self, pipeline: str) -> list[RunRecord]:
        return [
            RunRecord(p, run_id, tuple(entries))
            for (p, run_id), entries in sorted(self._runs.items())
            if p == pipeline
        ]

    def run(self, pipeline: str, run_id: str) -> RunRecord | None:
        entries = self._runs.get((pipeline, run_id))
        return None if entries is None else RunRecord(pipeline, run_id, tuple(entries))


def _read_all(file: str) -> bytes:
    """A file's bytes, with the fewest system calls: a miss (the usual cold lookup) is one."""
    fd = os.open(file, _READ)
    try:
        want = os.fstat(fd).st_size + 1  # a short read then means the end of the file
        chunks = []
        while True:
            chunk = os.read(fd, want)
            chunks.append(chunk)
            if len(chunk) < want:
                return b"".join(chunks)
            want = 1 << 20  # it grew since fstat: read on (unpack_file will refuse it)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: one call may write less (Linux caps one at about 2 GiB)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_entries(file: Path) -> Iterator[Mapping[str, Any]]:
    try:
        text = file.read_text()
    except OSError:
        return
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue  # the line a crash cut short
        if isinstance(entry, dict):
            yield entry


def _remove_if_older(file: Path, cutoff: float) -> None:
    with contextlib.suppress(OSError):  # another process swept or renamed it first
        if file.stat().st_mtime < cutoff:
            file.unlink()


def _safe_name(name: str) -> str:
    """A pipeline name as one path component."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


#: What ``store=`` takes: a store, a directory for a :class:`FileStore`, or None for none.
StoreLike: TypeAlias = "Store | str | os.PathLike[str] | None"

# One FileStore per directory, so what it learned (directories made, orphans swept) lasts.
_file_stores: dict[str, FileStore] = {}


def open_store(where: StoreLike) -> Store | None:
    """The store ``store=`` names; a relative directory is taken from the working directory.

    Raises:
        ConfigurationError: ``where`` is neither a store, a path, nor None.
    """
    if where is None:
        return None
    if isinstance(where, (str, os.PathLike)):
        path = os.path.abspath(where)
        found = _file_stores.get(path)
        if found is None:
            found = _file_stores[path] = FileStore(path)
        return found
    if not isinstance(where, Store):
        raise ConfigurationError(
            f"store must be a directory, a Store (FileStore, MemoryStore, your own) or None, "
            f"got {where!r}"
        )
    return where
