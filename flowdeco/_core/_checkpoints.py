"""Checkpointing one run: cache keys, lookups, and writes off the critical path.

A node's key hashes its name, its code version and the data versions of its inputs; the
data version of a value hashes its packed bytes. So a re-run node that produces the same
bytes as before leaves its descendants' keys unchanged (early cutoff). A value that is not
stored (``checkpoint=False``, or one the codec cannot carry) takes its key as its version:
same code and same inputs stand for the same value.

Values are packed in the scheduler, where a child's key needs them, and written by one
writer thread while the run goes on; the run waits for the writer before it returns.
"""

from __future__ import annotations

import atexit
import collections
import os
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Literal

from ._codec import concrete_paths, decode, encode, encode_parts, names_files
from ._errors import ConfigurationError, CorruptDataError, UnsupportedValueError
from ._filedigest import MISSING as MISSING_PATH
from ._filedigest import path_version
from ._files import NAMES_FILES, checksum
from ._fingerprint import CodeVersion, cache_key, code_version, data_version
from ._layout import MISSING
from ._references import Walk
from ._result import Status
from ._store import FileStore, StoreLease, shorten

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._graph import Graph, Plan
    from ._store import RunRecord, Store

__all__ = ["LAZY_ABOVE", "Checkpoints", "Packed", "Stored", "large", "runs_to_resume"]

_REUSABLE = frozenset({Status.SUCCEEDED.value, Status.CACHED.value})
_MISSING_FILE = "+missing"  # a data version's mark: a file the value names does not exist
#: Stored bodies larger than this (bytes) are read only when something needs the value, and
#: then off the event loop's thread; smaller ones are read with the header, in one call.
LAZY_ABOVE = 1 << 16


class Packed:
    """A value packed for its checkpoint file: the body for the writer (None if it is not
    stored, or was written already), its digest, whether it names files, and the problem to
    report if it could not be packed or written."""

    __slots__ = ("body", "digest", "names_files", "problem", "written")

    def __init__(
        self,
        body: bytes | None,
        digest: bytes,
        names_files: bool,
        problem: str | None,
        written: bool | None = None,
    ) -> None:
        self.body = body
        self.digest = digest
        self.names_files = names_files
        self.problem = problem
        self.written = written  # None: for the writer thread; else pack() wrote it, or failed


def large(value: Any) -> bool:
    """Whether ``value`` is big enough (by what it says of its size: ``len`` of bytes and
    str, ``nbytes`` of arrays, a DataFrame's memory) to pack off the event loop."""
    kind = type(value)
    if kind is bytes or kind is str or kind is bytearray:
        return len(value) > LAZY_ABOVE
    root = kind.__module__.partition(".")[0]
    if root == "numpy" or root == "pyarrow":
        size = getattr(value, "nbytes", 0)
    elif root == "pandas":
        size = getattr(value, "memory_usage", lambda **_: 0)(deep=False)
        size = int(size.sum()) if hasattr(size, "sum") else int(size)
    elif root == "polars":
        size = getattr(value, "estimated_size", lambda: 0)()
    else:
        return False
    return isinstance(size, int) and size > LAZY_ABOVE


class Stored:
    """A cached node's value, left in its file until a node that runs needs it.

    What the scheduler holds in the node's place; ``digest`` is what the header promised,
    checked again when the body is read.
    """

    __slots__ = ("digest", "key", "length")

    def __init__(self, key: str, digest: bytes, length: int) -> None:
        self.key = key
        self.digest = digest
        self.length = length


def runs_to_resume(store: Store, pipeline: str, resume: str | Literal[True]) -> list[RunRecord]:
    """The run to resume, then the run it resumed, and so on: newest first.

    ``resume`` names the run, or (``True``) asks for the latest that did not end well. A
    run killed before its record said what it reused still carries that work forward, from
    the runs it resumed.

    Raises:
        ConfigurationError: No run of this pipeline has that id.
    """
    if resume is True:
        latest = getattr(store, "latest_unfinished", None)  # a store may find it fast
        if latest is not None:
            record = latest(pipeline)
        else:
            unfinished = [r for r in store.runs(pipeline) if not r.ok]
            record = unfinished[-1] if unfinished else None
    else:
        record = store.run(pipeline, resume)
        if record is None:
            recent = [r.run_id for r in store.runs(pipeline)[-3:]]
            known = f"; its latest: {', '.join(recent)}" if recent else "; it has none recorded"
            raise ConfigurationError(
                f"pipeline {pipeline!r} has no run {shorten(resume)} to resume{known}"
            )
    chain: list[RunRecord] = []
    seen: set[str] = set()
    while record is not None and record.run_id not in seen:
        chain.append(record)
        seen.add(record.run_id)
        resumed = record.resumes
        record = None if resumed is None else store.run(pipeline, resumed)
    return chain


class Checkpoints:
    """One run's view of its store; every method but the writer's runs in the scheduler.

    Beside the keys, it keeps per node why it ran or was reused (``why``, a word of
    :data:`~flowdeco._core._explain.REASONS`) and what went into its key (``code``,
    ``inputs``), for :meth:`RunResult.explain` and the run record's manifest.
    """

    def __init__(
        self,
        plan: Plan,
        store: Store,
        run_id: str,
        cache: bool,
        resumed: Sequence[RunRecord],
    ) -> None:
        graph = plan.graph
        n = len(graph.names)
        self.specs = graph.specs
        self.index = graph.index
        self.given = plan.given
        self.cache = cache
        self.reusable = graph.derived(_reusable) if cache else [False] * n
        self.keys: list[str | None] = [None] * n
        self.versions: list[str | None] = [None] * n  # data versions, for children's keys
        self.stored: list[Stored | None] = [None] * n  # values found but left in their files
        self.why: list[str] = ["planned"] * n
        # Computed now, before any node runs: a version stands for the values as the run
        # found them, whatever its nodes then do to them (append to a list, fill a memo).
        self.code: list[CodeVersion | None] = [None] * n
        memo: dict[Any, Any] = {}  # nothing runs meanwhile: each helper is walked once
        for i in plan.order:
            self.code[i] = code_version(graph.specs[i], recheck_values=True, memo=memo)
        self.inputs: list[list[tuple[str, str]]] = [[] for _ in range(n)]
        self.unversionable: list[str | None] = [None] * n
        self.input_versions: dict[str, str | None] = {}
        self.input_files: dict[str, str] = {}  # inputs whose version covers files' content
        self.problems: list[str] = []
        # A FileStore's own reads and writes: headers alone, and digests computed once. Not
        # for a subclass that changes how values are loaded or saved.
        self.files = (
            store
            if isinstance(store, FileStore)
            and type(store).load is FileStore.load
            and type(store).save is FileStore.save
            else None
        )
        self.file_cache = None if self.files is None else self.files.path / "files"
        # Nodes that finished in the resumed runs, by the key they finished with; the
        # newest run's entry wins.
        self.resumed: dict[str, str] = {}
        for record in reversed(resumed):
            for name, entry in record.nodes.items():
                if entry.get("status") in _REUSABLE and entry.get("stored"):
                    self.resumed[name] = entry.get("key") or ""
        self.resumed_from = resumed[0].run_id if resumed else None
        # Held shared until the run is written: `flowdeco cache prune` removes files only
        # while no run may read or write them.
        self.lease = StoreLease.shared(store, on_wait=lambda: _waiting_for(store))
        try:
            self.writer = _Writer(store, graph.name, run_id, self.problems, self.files is not None)
        except BaseException:
            self.lease.release()
            raise
        self.store = store
        self.writer.record(
            {
                "event": "start",
                "time": time.time(),
                "pid": os.getpid(),
                "outputs": list(plan.outputs),
                "resumes": self.resumed_from,
            }
        )

    # -- before a node runs ---------------------------------------------------------------

    def lookup(self, i: int) -> Any:
        """The stored value of node ``i`` if it may be reused, else MISSING.

        A large value is not read: it comes as a :class:`Stored`, for :meth:`read_stored`
        (off the event loop) once a node that runs needs it, or the result does.
        """
        key = self.keys[i] = self._key(i)
        spec = self.specs[i]
        if key is None:
            return MISSING
        if not spec.checkpoint:
            self.why[i] = "checkpoint off"
            return MISSING
        resuming = self.resumed.get(spec.name) == key
        if not resuming and not (self.reusable[i] and self.unversionable[i] is None):
            self.why[i] = self._not_reusable(i)
            return MISSING
        self.why[i] = "resumed" if resuming else "reused"
        value = self._load(i, key)
        if value is MISSING and self.why[i] in ("resumed", "reused"):
            self.why[i] = "not stored"
        return value

    def _not_reusable(self, i: int) -> str:
        spec = self.specs[i]
        if not self.cache:
            return "run cache off"
        if spec.cache is False:
            return "cache off"
        if spec.cache is None and spec.effect:
            return "effect"
        return "unversionable"

    def _load(self, i: int, key: str) -> Any:
        spec = self.specs[i]
        digest: bytes | None = None
        names_files: bool | None = None  # unknown: the body is scanned for paths
        body: bytes | memoryview | None
        try:
            if self.files is None:
                body = self.store.load(key)
            else:
                found = self.files.read(key, LAZY_ABOVE)
                if found is None:
                    return MISSING
                digest, names_files = found.digest, bool(found.flags & NAMES_FILES)
                if found.body is None and names_files:  # its version needs the files' content
                    found = self.files.read(key)
                    assert found is not None
                body = found.body
                if body is None:
                    self.versions[i] = digest.hex()
                    self.writer.record(_entry(spec.name, Status.CACHED, key, True, 0.0))
                    stored = self.stored[i] = Stored(key, digest, found.length)
                    return stored
            if body is None:
                return MISSING
        except CorruptDataError as exc:  # the store names the file
            self.problems.append(f"node {spec.name!r}: {exc}; the node was recomputed")
            self.why[i] = "unreadable"
            return MISSING
        except Exception as exc:  # a store that fails to read is a miss, not a failed run
            self.problems.append(
                f"node {spec.name!r}: checkpoint not read ({type(exc).__name__}: {exc}); "
                "the node was recomputed"
            )
            self.why[i] = "unreadable"
            return MISSING
        try:
            value = decode(body)
        except CorruptDataError as exc:
            self.problems.append(
                f"node {spec.name!r}: checkpoint {key} does not decode ({exc}); the node was "
                "recomputed"
            )
            self.why[i] = "unreadable"
            return MISSING
        version = self._value_version(body, "node", spec.name, digest, names_files)
        if version is None or version.endswith(_MISSING_FILE):
            self.why[i] = "output file missing"
            return MISSING
        self.versions[i] = version
        self.writer.record(_entry(spec.name, Status.CACHED, key, True, 0.0))
        return value

    def _key(self, i: int) -> str | None:
        spec = self.specs[i]
        inputs = self.inputs[i] = []
        given, index, versions = self.given, self.index, self.versions
        for p in spec.params:
            if p.source in given:
                version = self._input_version(p.source)
                if version is None:
                    self.why[i] = "input not versioned"
                    return None
            elif p.source in index:
                version = versions[index[p.source]]
                if version is None:
                    self.why[i] = "parent not versioned"
                    return None
            else:  # a default, evaluated where the function was defined
                version = self._default_version(i, p.name, p.default)
            inputs.append((p.name, version))
        code = self.code[i]
        if code is None or (code.absent and code.bound_since()):  # by a node, as it ran
            code = self.code[i] = code_version(spec)
        if code.unversionable is not None and self.unversionable[i] is None:
            self._cannot_version(i, code.unversionable)
        return cache_key(spec.name, code.version, inputs)

    def _cannot_version(self, i: int, what: str) -> None:
        """Reuse across runs is off for node ``i``; say so, unless ``cache=False`` did."""
        self.unversionable[i] = what
        spec = self.specs[i]
        if spec.cache is not False and self.reusable[i]:
            self.problems.append(
                f"node {spec.name!r} depends on {what}, which cannot be versioned, so it "
                'is not reused across runs; give the node version="..." to vouch for its '
                "code and data yourself, or cache=False to run it every time without this "
                "warning"
            )

    def _input_version(self, name: str) -> str | None:
        try:
            return self.input_versions[name]
        except KeyError:
            pass
        version: str | None = None
        try:
            body = encode(self.given[name])
            version = self._value_version(body, "input", name)
            if version is not None and version != data_version(body):  # it names files
                self.input_files[name] = version
        except UnsupportedValueError as exc:
            users = [s.name for s in self.specs if name in s.sources]
            self.problems.append(
                f"input {name!r} cannot be checkpointed ({exc}); nodes reading it always run "
                f"and are not stored: {', '.join(users)}"
            )
        self.input_versions[name] = version
        return version

    def _default_version(self, i: int, param: str, value: object) -> str:
        """A default's version: its packed bytes, else what the code walk makes of it."""
        try:
            return data_version(encode(value))
        except UnsupportedValueError:
            pass
        walk = Walk()
        token = walk.token(value, param)
        if walk.unversionable:
            self._cannot_version(i, f"the default of {param!r}, {walk.unversionable[0]}")
        return "value:" + data_version(token)

    def _value_version(
        self,
        body: bytes | memoryview,
        kind: str,
        owner: str,
        digest: bytes | None = None,
        names_files: bool | None = None,
    ) -> str | None:
        """A value's data version: its packed bytes (their digest, if known), and the content
        of the files it names (if it names any: None is "scan it").

        None if a file it names cannot be read (a problem says which).
        """
        version = data_version(body) if digest is None else digest.hex()
        if names_files is False:
            return version
        paths = concrete_paths(body)
        if not paths:
            return version
        try:
            contents = [path_version(path, self.file_cache) for path in paths]
        except OSError as exc:
            self.problems.append(
                f"{kind} {owner!r}: {exc.filename or 'a file it names'} cannot be read to version "
                f"it ({exc.strerror or exc}); what depends on it always runs"
            )
            return None
        version = checksum([body, "\0".join(contents).encode()]).hex()
        return version + _MISSING_FILE if MISSING_PATH in contents else version

    # -- after a node ran -----------------------------------------------------------------

    def pack(self, i: int, value: Any) -> Packed:
        """Node ``i``'s value packed for its file: what :meth:`succeeded` needs. Touches no
        state, so that a large value can be packed (and hashed) off the event loop.

        A value whose large buffers are packed as views of its own memory (numpy arrays) is
        written now, before anyone can change it: its children are not started yet.
        """
        spec = self.specs[i]
        if not spec.checkpoint:
            return Packed(None, b"", False, None)
        try:
            parts = encode_parts(value, node=spec.name)
        except UnsupportedValueError as exc:
            return Packed(
                None, b"", False, f"{exc}; the value was passed on in memory but not checkpointed"
            )
        # Hashed once: the data version, and the file's checksum.
        digest, files = checksum(parts), names_files(parts)
        if len(parts) == 1 and type(parts[0]) is bytes:
            return Packed(parts[0], digest, files, None)
        key = self.keys[i]
        if self.files is None or key is None:
            return Packed(b"".join(parts), digest, files, None)
        try:
            self.files.save(key, parts, digest=digest, names_files=files)
        except Exception as exc:  # disk full, permissions: the run goes on
            problem = f"node {spec.name!r}: checkpoint not written ({type(exc).__name__}: {exc})"
            return Packed(None, digest, files, problem, written=False)
        return Packed(None, digest, files, None, written=True)

    def succeeded(self, i: int, value: Any, seconds: float, packed: Packed | None = None) -> None:
        """Version ``value`` (packed already, or now) for the children's keys, and queue it
        to be stored."""
        key = self.keys[i]
        spec = self.specs[i]
        if packed is None:
            packed = self.pack(i, value)
        body, digest, files = packed.body, packed.digest, packed.names_files
        if packed.problem is not None:
            self.problems.append(packed.problem)
        if packed.written is not None:  # written by pack(): a version of its digest
            self.versions[i] = digest.hex() if not files else self._file_version(i, digest)
            stored = packed.written
        elif body is None:
            self.versions[i] = None if key is None else "key:" + key
            stored = False
        else:
            self.versions[i] = self._value_version(body, "node", spec.name, digest, files)
            stored = key is not None
        entry = _entry(spec.name, Status.SUCCEEDED, key, stored, seconds)
        if key is not None:
            entry["manifest"] = self.manifest(i)
        queued = key if stored and packed.written is None else None
        self.writer.put(queued, body or b"", entry, digest, files)

    def _file_version(self, i: int, digest: bytes) -> str | None:
        """The version of node ``i``'s value written by :meth:`pack` that names files: its
        file is read back for the paths (rare: a value with arrays that also names files)."""
        key = self.keys[i]
        assert self.files is not None and key is not None
        found = self.files.read(key)
        if found is None or found.body is None:
            return None
        return self._value_version(found.body, "node", self.specs[i].name, digest, True)

    def read_stored(self, i: int, stored: Stored) -> Any:
        """The value of cached node ``i``, read from its file now; blocks, so call it off the
        event loop's thread.

        Raises:
            CorruptDataError: The file changed or was damaged since the run read its
                header (it is then removed, so that the next run recomputes the node), or
                it holds a class this process has not registered.
        """
        assert self.files is not None
        name = self.specs[i].name
        try:
            found = self.files.read(stored.key)
            if found is None or found.digest != stored.digest or found.body is None:
                raise CorruptDataError(
                    f"checkpoint {stored.key} vanished or was replaced since this run found it"
                )
        except CorruptDataError as exc:
            self.files.discard(stored.key)  # so that the next run recomputes the node
            raise CorruptDataError(
                f"the value of node {name!r} cannot be read ({exc}); its file was removed, so "
                "the next run recomputes it"
            ) from exc
        try:
            return decode(found.body)
        except CorruptDataError as exc:
            raise CorruptDataError(
                f"the value of node {name!r} cannot be read (checkpoint {stored.key}: {exc})"
            ) from exc

    def unreadable(self, i: int, error: CorruptDataError) -> None:
        """Cached node ``i``'s value could not be read, before anything used it: it runs."""
        self.problems.append(f"{error}; the node was recomputed")
        self.why[i] = "unreadable"
        self.versions[i] = None
        self.stored[i] = None

    def span_attributes(self, name: str) -> dict[str, Any]:
        """What a node's span says of its checkpoint: why it ran or was reused, and the
        manifest of its key."""
        i = self.index[name]
        return {"flowdeco.cache.reason": self.why[i], "flowdeco.cache.manifest": self.manifest(i)}

    def manifest(self, i: int) -> list[str]:
        """What went into node ``i``'s key: ``label=digest`` per code entry, then
        ``@param=version`` per input."""
        code = self.code[i]
        found = [] if code is None else code.manifest[:]
        files = self.input_files
        if not files:
            found += [f"@{param}={version[:16]}" for param, version in self.inputs[i]]
            return found
        for (param, version), p in zip(self.inputs[i], self.specs[i].params, strict=False):
            if p.source in files:  # the value alone, and with its files: which one changed
                found.append(f"@{param}={data_version(encode(self.given[p.source]))[:16]}")
                found.append(f"@{param}:files={version[:16]}")
            else:
                found.append(f"@{param}={version[:16]}")
        return found

    def ended(self, i: int, status: Status, seconds: float) -> None:
        """Record a node that failed, was cancelled or was skipped."""
        self.writer.record(_entry(self.specs[i].name, status, self.keys[i], False, seconds))

    def close(self, outcome: str) -> None:
        """Record how the run ended (``"ok"``, ``"failed"``...) and wait until all is written."""
        self.writer.record(
            {"event": "end", "ok": outcome == "ok", "outcome": outcome, "time": time.time()}
        )
        for code in {id(c): c for c in self.code if c is not None and c.volatile}.values():
            code.settle()
        try:
            self.writer.stop()
        finally:
            self.lease.release()


def _waiting_for(store: Store) -> None:
    """Say why a run waits before it starts: someone removes files from its store."""
    sys.stderr.write(
        f"flowdeco: waiting for the store {getattr(store, 'path', store)} (flowdeco cache "
        "prune or clear is removing files from it)\n"
    )


def _reusable(graph: Graph) -> list[bool]:
    """Per node, whether a stored value may be reused (``Node.reusable``: it reads the
    function's annotations, so once per graph)."""
    return [spec.reusable for spec in graph.specs]


def _entry(
    node: str, status: Status, key: str | None, stored: bool, seconds: float
) -> dict[str, Any]:
    return {"node": node, "status": status.value, "key": key, "stored": stored, "seconds": seconds}


_ENTRIES_PER_WAKE = 512
# What the writer is given: key (None: only a record entry), body, entry, digest, names files.
_Pending = tuple[str | None, bytes, dict[str, Any], bytes, bool]


class _Writer:
    """One thread that saves bodies and appends run records, in the order they came.

    The scheduler appends to a deque and wakes the thread only when it is idle; the
    thread takes everything queued at once. Waking it per node would cost the scheduler a
    contended lock, and the GIL hand-over that comes with it, per node.
    """

    def __init__(
        self, store: Store, pipeline: str, run_id: str, problems: list[str], files: bool
    ) -> None:
        self.store = store
        self.pipeline = pipeline
        self.run_id = run_id
        self.problems = problems
        self.files = files  # a FileStore: given each body's digest, which it need not redo
        self.pending: collections.deque[_Pending] = collections.deque()
        self.wake = threading.Event()
        self.idle = False  # set by the thread just before it waits
        self.stopping = False
        # A daemon: a run waits for it, and so does the interpreter's exit (_stop_writers), but
        # a crashed interpreter need not.
        self.thread = threading.Thread(
            target=self._write, name=f"flowdeco writer {run_id}", daemon=True
        )
        _writers.add(self)
        self.thread.start()

    def put(
        self,
        key: str | None,
        body: bytes,
        entry: dict[str, Any],
        digest: bytes = b"",
        names_files: bool = False,
    ) -> None:
        """Queue ``body`` under ``key`` (None: nothing to save), then ``entry`` in the record."""
        pending = self.pending
        pending.append((key, body, entry, digest, names_files))
        # Entries alone need not be written at once: they go with the next body, or when
        # enough are queued, so an all-cached run does not wake the thread per node.
        if self.idle and (key is not None or len(pending) >= _ENTRIES_PER_WAKE):
            self.idle = False
            self.wake.set()

    def record(self, entry: dict[str, Any]) -> None:
        """Queue ``entry`` for the run record, with no body to save."""
        self.put(None, b"", entry)

    def stop(self) -> None:
        """Write what is queued, then end the thread."""
        self.stopping = True
        self.wake.set()
        self.thread.join()
        _writers.discard(self)

    def _write(self) -> None:
        pending, wake = self.pending, self.wake
        while True:
            self.idle = True
            if not pending and not self.stopping:
                wake.wait()
            self.idle = False
            wake.clear()
            stopping = self.stopping  # read before draining: nothing comes after the stop
            batch = []
            while pending:
                batch.append(pending.popleft())
            if batch:
                self._save(batch)
                del batch  # its bodies: not held while the thread waits for more
            if stopping:
                return

    def _save(self, batch: list[_Pending]) -> None:
        entries = []
        for key, body, entry, digest, files in batch:
            if key is not None:
                try:
                    if self.files:
                        store: Any = self.store  # a FileStore
                        store.save(key, body, digest=digest, names_files=files)
                    else:
                        self.store.save(key, body)
                except Exception as exc:  # disk full, permissions: the run goes on
                    entry["stored"] = False
                    self.problems.append(
                        f"node {entry['node']!r}: checkpoint not written "
                        f"({type(exc).__name__}: {exc})"
                    )
            entries.append(entry)
        try:
            self.store.record(self.pipeline, self.run_id, entries)
        except Exception as exc:
            self.problems.append(
                f"run record of {self.run_id} not written ({type(exc).__name__}: {exc})"
            )


# Writers of runs that are still open. A run abandoned without closing (its caller's loop
# torn down by a second Ctrl-C, say) still gets what it finished written before the
# interpreter exits: atexit functions run before daemon threads are stopped.
_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()


@atexit.register
def _stop_writers() -> None:
    for writer in list(_writers):
        writer.stop()
