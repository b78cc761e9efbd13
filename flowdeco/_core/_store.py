"""Checkpoint stores: where packed node values and run records live.

``FileStore`` (the default: ``$FLOWDECO_STORE``, else ``.flowdeco/`` in the working
directory) writes each value to its own checkpoint file (see ``_files``) and each run's
record to a JSON-lines file; a file that fails any check raises :class:`CorruptDataError`
naming the file, which a run turns into a warning and a recomputed node, never a wrong
value. A damaged run record is skipped with a :class:`CheckpointWarning` naming it.
``MemoryStore`` keeps everything in a dict, for tests and throwaway runs.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import math
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeAlias, runtime_checkable

import attrs

from ._errors import ConfigurationError, FlowdecoError
from ._files import (
    NAMES_FILES,
    Checkpoint,
    body_crc,
    checksum,
    pack_header,
    read_checkpoint,
    write_all,
    write_atomically,
)

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from typing_extensions import Self

__all__ = [
    "DEFAULT_STORE",
    "LEASE_FILE",
    "CheckpointWarning",
    "DefaultStore",
    "FileStore",
    "MemoryStore",
    "RunRecord",
    "Store",
    "StoreLease",
    "StoreLike",
    "open_store",
    "recorded_runs",
    "shorten",
]

_KEY = re.compile(r"^[0-9a-f]{16,128}$")
# What a run id may be: one safe path component, as new_run_id makes them.
_RUN_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_UNFINISHED = "unfinished"  # a folder of empty files named by the runs that did not end well
_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_BINARY", 0)
# One encoder for every record line: json.dumps with options builds a new one per call.
_to_json = json.JSONEncoder(separators=(",", ":"), default=str).encode
_ORPHAN_AGE = 3600.0  # seconds after which a leftover temporary file is swept


class CheckpointWarning(UserWarning):
    """A checkpoint could not be used or written (damaged, unreadable, unencodable)."""


@runtime_checkable
class Store(Protocol):
    """Where checkpoints go: values by key, and one record per run.

    A run calls ``load`` from its scheduler and ``save``/``record`` from one writer thread.
    A store may also have ``latest_unfinished(pipeline) -> RunRecord | None``, the newest
    run that did not end well, which ``resume=True`` then uses instead of reading ``runs``.
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

    @property
    def resumes(self) -> str | None:
        """The id of the run this one resumed, if it resumed one."""
        for e in self.entries:
            if e.get("event") == "start":
                resumed = e.get("resumes")
                return resumed if isinstance(resumed, str) else None
        return None


def _directory(where: str | os.PathLike[str], option: str) -> str:
    """``where`` as a path, refused if it cannot be the store's directory.

    An empty path would be the working directory itself (with a ``.gitignore`` of ``*``
    written into it), and a NUL character fails every write, each as a warning.
    """
    path = os.fspath(where)
    if not isinstance(path, str):
        raise ConfigurationError(f"{option} must be a text path, got {where!r}")
    if not path.strip():
        raise ConfigurationError(
            f"{option} must name a directory, got {path!r}: an empty path would make the "
            "working directory the store; name one such as '.flowdeco'"
        )
    if "\0" in path:
        raise ConfigurationError(
            f"{option} must name a directory, got {shorten(path)}: a path cannot hold a NUL "
            "character"
        )
    return path


def _store_path(path: str | os.PathLike[str]) -> Path:
    """``FileStore(path=...)`` as a ``Path``, checked."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigurationError(
            f"FileStore(path=...) must be a directory (a str or a Path), got {path!r}"
        )
    return Path(_directory(path, "FileStore(path=...)"))


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

    path: Path = attrs.field(converter=_store_path, default=Path(".flowdeco"))
    fsync: bool = False
    _ready: bool = attrs.field(default=False, init=False, repr=False)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, init=False, repr=False)
    _shards: set[str] = attrs.field(factory=set, init=False, repr=False)  # made already

    def load(self, key: str) -> bytes | None:
        found = self.read(key)
        return None if found is None or found.body is None else bytes(found.body)

    def read(self, key: str, whole_up_to: float = math.inf) -> Checkpoint | None:
        """What ``key``'s file holds: its digest and flags, and its body unless it is
        larger than ``whole_up_to`` bytes (a run reads large bodies only when needed).

        Raises:
            CorruptDataError: The file cannot be trusted; the message names it and says why.
        """
        return read_checkpoint(self._object(key), key, whole_up_to)

    def save(
        self,
        key: str,
        body: bytes | Sequence[bytes | memoryview],
        *,
        digest: bytes | None = None,
        names_files: bool = False,
    ) -> None:
        """Store ``body`` (or its parts, written one after the other) under ``key``; a run
        passes the digest it computed already, and whether the value names files."""
        file = self._object(key)
        flags = NAMES_FILES if names_files else 0
        digest = checksum(body) if digest is None else digest
        body_parts = (body,) if isinstance(body, bytes) else tuple(body)
        length = sum(memoryview(part).nbytes for part in body_parts)
        parts = (pack_header(key, length, digest, body_crc(body_parts), flags), *body_parts)
        try:
            self._write_object(key, file, parts)
        except FileNotFoundError:
            # The directory was removed since this store made it (``rm -rf .flowdeco``
            # between runs): forget what it made, and make it again.
            self._ready = False
            self._shards.clear()
            self._write_object(key, file, parts)

    def _write_object(self, key: str, file: str, parts: Sequence[bytes | memoryview]) -> None:
        self._prepare()
        shard = key[:2]
        if shard not in self._shards:
            os.makedirs(os.path.dirname(file), exist_ok=True)
            self._shards.add(shard)
        write_atomically(file, parts, self.fsync)

    def contains(self, key: str) -> bool:
        return os.path.isfile(self._object(key))

    def discard(self, key: str) -> None:
        """Remove ``key``'s file, if there is one: it was found damaged."""
        with contextlib.suppress(OSError):
            os.unlink(self._object(key))

    def record(self, pipeline: str, run_id: str, entries: Iterable[Mapping[str, Any]]) -> None:
        if not _RUN_ID.match(run_id):
            raise ConfigurationError(f"invalid run id {shorten(run_id)}")
        self._prepare()
        folder = self._records(pipeline)
        folder.mkdir(parents=True, exist_ok=True)
        unfinished = folder / _UNFINISHED
        batch = list(entries)
        if any(e.get("event") == "start" for e in batch):
            # Before the record: a crash in between leaves a mark with no record, skipped.
            unfinished.mkdir(exist_ok=True)
            (unfinished / run_id).touch()
        text = "".join([_to_json(e) + "\n" for e in _compact(batch)])
        # One O_APPEND write per batch of whole lines: a crash loses at most the lines being
        # written, and a torn last line is skipped on reading.
        fd = os.open(folder / f"{run_id}.jsonl", _APPEND, 0o644)
        try:
            write_all(fd, text.encode())
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        if any(e.get("event") == "end" and e.get("ok") is True for e in batch):
            with contextlib.suppress(FileNotFoundError):
                (unfinished / run_id).unlink()

    def runs(self, pipeline: str) -> list[RunRecord]:
        folder = self._records(pipeline)
        if not folder.is_dir():
            return []
        found = [_read_record(pipeline, file) for file in sorted(folder.glob("*.jsonl"))]
        return [record for record in found if record is not None]  # run ids sort by time

    def run(self, pipeline: str, run_id: str) -> RunRecord | None:
        if not _RUN_ID.match(run_id):
            return None
        return _read_record(pipeline, self._records(pipeline) / f"{run_id}.jsonl")

    def latest_unfinished(self, pipeline: str) -> RunRecord | None:
        """The newest run that did not end well, found without reading the runs that did."""
        unfinished = self._records(pipeline) / _UNFINISHED
        try:
            marked = sorted(os.listdir(unfinished), reverse=True)
        except FileNotFoundError:
            return None
        for run_id in marked:
            record = self.run(pipeline, run_id)
            if record is not None and not record.ok:
                return record
            with contextlib.suppress(OSError):  # ended well after all, or never recorded
                (unfinished / run_id).unlink()
        return None

    def _records(self, pipeline: str) -> Path:
        return self.path / "runs" / _record_folder(pipeline)

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
                write_atomically(str(ignore), [b"# flowdeco checkpoints: not for git\n*\n"], False)
            self._sweep()
            self._ready = True

    def _sweep(self) -> None:
        cutoff = time.time() - _ORPHAN_AGE
        for temp in (self.path / "objects").glob("*/.tmp-*"):
            _remove_if_older(temp, cutoff)


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

    def latest_unfinished(self, pipeline: str) -> RunRecord | None:
        """The newest run that did not end well."""
        return next((r for r in reversed(self.runs(pipeline)) if not r.ok), None)


def _read_record(pipeline: str, file: Path) -> RunRecord | None:
    """The record in ``file``; None if there is none, or if it is damaged (with a warning)."""
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _warn_damaged(file, f"it cannot be read: {exc}")
        return None
    lines = data.split(b"\n")
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):  # invalid UTF-8 or JSON, or nested too deep
            if number == len(lines):
                continue  # the last line, with no newline: a crash cut it short
            _warn_damaged(file, f"line {number} is not a JSON object")
            return None
        problem = _entry_problem(entry)
        if problem is not None:
            _warn_damaged(file, f"line {number} {problem}")
            return None
        if entry.get("event") == _CACHED_EVENT:
            entries.extend(_cached_entries(entry.get("nodes")))
        else:
            entries.append(entry)
    return RunRecord(pipeline, file.stem, tuple(entries))


# Nodes served from the store make the bulk of a warm run's record: consecutive ones are
# written as one line, ``{"event": "cached", "nodes": [name, key, name, key, ...]}``, a
# fifth of the bytes and of the JSON work of one line each, and read back as one entry each.
_CACHED_EVENT = "cached"
_CACHED_SHAPE = {"node", "status", "key", "stored", "seconds"}


def _compact(batch: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``batch`` with each run of plain cached entries written as one line."""
    out: list[Mapping[str, Any]] = []
    names: list[str] = []
    for entry in batch:
        if (
            entry.get("status") == "cached"
            and entry.keys() == _CACHED_SHAPE
            and entry["stored"] is True
            and entry["seconds"] == 0.0
            and isinstance(entry["key"], str)
        ):
            names += (entry["node"], entry["key"])
            continue
        if names:
            out.append({"event": _CACHED_EVENT, "nodes": names})
            names = []
        out.append(entry)
    if names:
        out.append({"event": _CACHED_EVENT, "nodes": names})
    return out


def _cached_entries(nodes: object) -> list[dict[str, Any]]:
    """The entries a compact cached line stands for (none if it is malformed)."""
    if not isinstance(nodes, list) or len(nodes) % 2:
        return []
    return [
        {"node": name, "status": "cached", "key": key, "stored": True, "seconds": 0.0}
        for name, key in zip(nodes[::2], nodes[1::2], strict=True)
    ]


_TEXT_FIELDS = ("node", "event", "status", "resumes")


def _entry_problem(entry: object) -> str | None:
    """Why ``entry`` is not a record entry flowdeco writes, or None if it is one."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__}, not an object"
    for name, value in entry.items():
        if isinstance(value, list):
            if not all(isinstance(v, str) for v in value):
                return f"has a list {name!r} of more than names"
        elif not isinstance(value, (str, int, float, bool, type(None))):
            return f"has a nested {name!r}"
    for name in _TEXT_FIELDS:
        if name in entry and not isinstance(entry[name], (str, type(None))):
            return f"has a {name!r} that is not text"
    return None


def _warn_damaged(file: Path, why: str) -> None:
    warnings.warn(
        f"run record {file} is damaged ({why}); it was skipped",
        CheckpointWarning,
        stacklevel=4,  # the caller of runs(), or of the run that resumes
    )


def _remove_if_older(file: Path, cutoff: float) -> None:
    with contextlib.suppress(OSError):  # another process swept or renamed it first
        if file.stat().st_mtime < cutoff:
            file.unlink()


def _record_folder(pipeline: str) -> str:
    """Where a pipeline's records live: one path component, safe, and unique to the name.

    A readable prefix for people, and a hash of the whole name so that names that read
    alike ("a b" and "a_b") never share records.
    """
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", pipeline)[:48]
    digest = hashlib.blake2b(pipeline.encode("utf-8", "surrogatepass"), digest_size=8)
    return f"{readable}-{digest.hexdigest()}"


def shorten(text: str, limit: int = 80) -> str:
    """``repr(text)``, cut to about ``limit`` characters for a message."""
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 5]}...' ({len(text)} characters)"


#: What ``store=`` takes: a store, a directory for a :class:`FileStore`, or None for none.
StoreLike: TypeAlias = "Store | str | os.PathLike[str] | None"


class DefaultStore(enum.Enum):
    """The type of ``DEFAULT_STORE``: a pipeline's store when none is given, found per run."""

    DEFAULT = "default"

    def __repr__(self) -> str:
        return "<$FLOWDECO_STORE, else '.flowdeco'>"


#: A pipeline's store when none is given: ``FLOWDECO_STORE`` (a directory, or ``none`` for
#: no store) as it is when a run starts, else ``.flowdeco`` in the working directory.
DEFAULT_STORE = DefaultStore.DEFAULT

# One FileStore per directory, so what it learned (directories made, orphans swept) lasts.
_file_stores: dict[str, FileStore] = {}


def check_store(where: StoreLike | DefaultStore, option: str = "store") -> None:
    """Refuse what ``store=`` cannot be, without opening anything.

    Raises:
        ConfigurationError: ``where`` is neither a store, a directory, nor None; the
            message names it as ``option``.
    """
    if isinstance(where, (str, os.PathLike)):
        _directory(where, option)
    elif not (where is None or where is DEFAULT_STORE or isinstance(where, Store)):
        raise ConfigurationError(
            f"{option} must be a directory, a Store (FileStore, MemoryStore, your own) or None, "
            f"got {where!r}"
        )


def open_store(where: StoreLike | DefaultStore) -> Store | None:
    """The store ``store=`` names; a relative directory is taken from the working directory.

    Raises:
        ConfigurationError: ``where`` is neither a store, a directory, nor None.
    """
    if where is DEFAULT_STORE:
        where = _default_store()
    check_store(where)
    if not isinstance(where, (str, os.PathLike)):
        return where
    path = os.path.abspath(where)
    found = _file_stores.get(path)
    if found is None:
        found = _file_stores[path] = FileStore(path)
    return found


def _default_store() -> StoreLike:
    """``FLOWDECO_STORE``: a directory, ``none`` for no store; unset or empty: ``.flowdeco``."""
    value = os.environ.get("FLOWDECO_STORE", "")
    if not value.strip():
        return ".flowdeco"
    return None if value.strip().lower() == "none" else value


# -- The store's lease, and its records as maintenance reads them ---------------------------

#: The file under a store's directory that runs lock shared and maintenance exclusive.
LEASE_FILE = "lock"


class StoreLease:
    """A lock on a file store's directory: who may remove files from it, and when.

    A run may look up any key at any moment, and reads a large value's body well after its
    header, so no file can be removed while a run is live. Runs hold the lease **shared**
    for as long as they may read or write the store; removing files (``flowdeco cache
    prune`` and ``clear``) needs it **exclusive**, which no run holds meanwhile. The lock
    is ``flock(2)`` on ``<store>/lock``: the kernel drops it when its holder exits, however
    it exits, so a killed run never leaves the store locked. Where ``flock`` does not exist
    (Windows), a lease locks nothing and :attr:`supported` is False: maintenance must then
    find another way to know that no run is live.
    """

    supported: ClassVar[bool] = sys.platform != "win32"

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    @classmethod
    def shared(cls, store: object, on_wait: Callable[[], None] | None = None) -> StoreLease:
        """Hold ``store``'s lease shared (a run's): wait while maintenance holds it.

        Anything but a :class:`FileStore` gets a lease that locks nothing, as does a store
        whose directory cannot be made or locked: a lease never stops a run. ``on_wait``
        is called once before waiting, if waiting is needed.
        """
        if sys.platform == "win32" or not isinstance(store, FileStore):
            return cls(None)
        try:
            fd = _open_lease(store.path)
        except OSError:
            return cls(None)
        try:
            if not _try_lock(fd, fcntl.LOCK_SH):
                if on_wait is not None:
                    on_wait()
                fcntl.flock(fd, fcntl.LOCK_SH)
        except BaseException:  # an OSError, or Ctrl-C while waiting
            os.close(fd)
            raise
        return cls(fd)

    @classmethod
    def exclusive(cls, path: str | os.PathLike[str], wait: float = 0.0) -> StoreLease | None:
        """Hold the lease of the store at ``path`` exclusive (maintenance's), or None if
        runs held it for all of ``wait`` seconds.

        Raises:
            OSError: The lock file cannot be made or opened.
        """
        if sys.platform == "win32":
            return cls(None)
        fd = _open_lease(Path(path))
        deadline = time.monotonic() + wait
        try:
            while not _try_lock(fd, fcntl.LOCK_EX):
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return None
                time.sleep(0.05)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd)

    def release(self) -> None:
        """Let go of the lease; again is a no-op. Unlocked before closing, so a forked child
        that inherited the descriptor does not keep holding it."""
        fd, self._fd = self._fd, None
        if fd is not None and sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def _open_lease(directory: Path) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    return os.open(directory / LEASE_FILE, flags, 0o644)


def _try_lock(fd: int, mode: int) -> bool:
    """Take ``mode`` on ``fd`` if no other holder is in the way; False if one is."""
    if sys.platform == "win32":
        return True
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def recorded_runs(path: str | os.PathLike[str], pipeline: str | None = None) -> list[RunRecord]:
    """Every run record in the file store at ``path`` (or only ``pipeline``'s), by run id.

    What maintenance needs to see which runs used which keys and which may still be live,
    without knowing the pipelines' names. A record's ``pipeline`` is the name when its
    folder says it (names of letters, digits, ``-`` and ``_``, up to 48), else the folder's
    name. Damaged records are skipped with a :class:`CheckpointWarning`.
    """
    runs = Path(path) / "runs"
    if pipeline is not None:
        folders = [(pipeline, runs / _record_folder(pipeline))]
    else:
        try:
            names = sorted(os.listdir(runs))
        except (FileNotFoundError, NotADirectoryError):
            return []
        folders = [(_folder_label(name), runs / name) for name in names]
    found = [
        _read_record(label, file)
        for label, folder in folders
        if folder.is_dir()
        for file in sorted(folder.glob("*.jsonl"))
    ]
    return sorted((r for r in found if r is not None), key=lambda r: r.run_id)


def _folder_label(folder: str) -> str:
    """The pipeline's name if ``folder`` (its records' folder) spells it, else ``folder``."""
    readable = folder.rpartition("-")[0]
    return readable if readable and _record_folder(readable) == folder else folder
