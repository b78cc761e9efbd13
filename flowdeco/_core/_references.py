"""What a node's code depends on: the project code and values it reaches, each versioned.

A walk from the node's function through its globals, closures, module attributes,
classes (methods, properties, attributes, bases), instances, containers, partials,
wrappers and defaults. Each function, class and module-level value it reaches becomes an
entry of a manifest, ``label -> digest`` of that object's own content, so a change is
named where it happened. Installed packages are entries by distribution and version, the
standard library by Python's version: they are not walked. What cannot be versioned (an
object whose state the codec cannot pack) is named, never guessed at.
"""

from __future__ import annotations

import builtins
import enum
import functools
import hashlib
import importlib.metadata
import logging
import os
import platform
import re
import sys
import sysconfig
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._codec import encode
from ._errors import UnsupportedValueError
from ._filedigest import path_version
from ._node import Node
from ._source import bytecode_fingerprint, class_line, global_loads

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["ABSENT", "Walk", "digest_of", "is_own", "recheck"]

_SCALARS = (int, float, complex, str, bytes, bool, type(None), range, slice)
_CONTAINERS = (dict, list, set, bytearray, tuple, frozenset, types.SimpleNamespace)
_CALLABLES = (
    types.BuiltinFunctionType,
    types.MethodDescriptorType,
    types.WrapperDescriptorType,
    types.MethodWrapperType,
    types.ClassMethodDescriptorType,
)
# Where installed code lives: anything under these is not the project's own.
_INSTALLED = tuple(
    os.path.realpath(p)
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)
_PYTHON = ("python", platform.python_version())
_LIBRARY = "flowdeco"  # installed or not, versioned as a package: its code is not the user's
# Class attributes Python's machinery keeps: not what the class computes.
_CLASS_MACHINERY = frozenset({"_abc_impl", "__dict__", "__weakref__", "__doc__", "__module__"})
_INERT = (types.MemberDescriptorType, types.GetSetDescriptorType)  # slots' accessors
# Packages whose objects coordinate work (locks, events, queues, executors) or report it
# (tracers, meters) rather than hold what a node computes from: they count by their type.
_BY_TYPE = frozenset(
    {"threading", "_thread", "asyncio", "queue", "multiprocessing", "concurrent", "anyio"}
    | {"trio", "opentelemetry", "warnings"}
)


class _Absent:
    """A global name the code uses that was not bound when the version was computed."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


_Key = int | tuple[int, str]


class _Record:
    """What walking one function or class found, to merge into later walks of one batch:
    its own entries, the lookups and values to recheck, and the objects it reached."""

    __slots__ = ("bindings", "children", "key", "label", "obj", "own", "unversionable", "volatile")

    def __init__(self, obj: Any, label: str, key: _Key) -> None:
        self.obj = obj
        self.label = label
        self.key = key  # the object's id; a module-level name's (namespace id, name)
        self.own: list[tuple[str, str, str | None]] = []
        self.bindings: list[tuple[Mapping[str, Any], str, Any]] = []
        self.volatile: list[tuple[Any, str]] = []
        self.unversionable: list[str] = []
        self.children: list[_Record] = []


class Walk:
    """One walk: the manifest, and what a cached version must recheck to stay true.

    ``bindings`` are the namespace lookups made (a notebook may rebind a name);
    ``volatile`` the mutable values hashed, with their digest (a cell may mutate one);
    ``unversionable`` what could not be versioned. Walks sharing a ``memo`` (the nodes of
    one run, versioned together before any runs) walk each helper once.
    """

    def __init__(self, memo: dict[_Key, _Record] | None = None) -> None:
        self.entries: dict[str, str] = {}
        self.where: dict[str, str] = {}
        self.bindings: list[tuple[Mapping[str, Any], str, Any]] = []
        self.volatile: list[tuple[Any, str]] = []
        self.unversionable: list[str] = []
        self._memo: dict[_Key, _Record] = {} if memo is None else memo
        self._labels: dict[int, str] = {}  # id -> label, of functions and classes walked
        self._records: dict[_Key, _Record] = {}  # what walking each object or name found
        self._keep: list[Any] = []  # keeps the objects behind those ids alive
        self._stack: list[_Record] = []  # the functions and classes being walked
        self._active: set[int] = set()  # containers and instances being tokenized
        self._names: set[str] = set()  # names the function being walked uses

    # -- what a walk finds, recorded for the function or class being walked ---------------

    def _add(self, label: str, digest: str, where: str | None = None, own: bool = False) -> None:
        """Enter ``label``: ``own`` fills the label :meth:`_enter` reserved for the object
        being walked; any other gets a ``#n`` if an object of that name is entered already."""
        unique, n = label, 1
        while not own and self.entries.get(unique, digest) != digest:
            n += 1
            unique = f"{label}#{n}"
        self.entries[unique] = digest
        if where:
            self.where[unique] = where
        if self._stack:
            self._stack[-1].own.append((unique, digest, where))

    def _set(self, label: str, content: bytes, where: str | None = None, own: bool = False) -> None:
        self._add(label, hashlib.blake2b(content, digest_size=8).hexdigest(), where, own)

    def _bind(self, namespace: Mapping[str, Any], name: str, value: Any) -> None:
        self.bindings.append((namespace, name, value))
        if self._stack:
            self._stack[-1].bindings.append((namespace, name, value))

    def _recheck(self, value: Any, digest: str) -> None:
        self.volatile.append((value, digest))
        if self._stack:
            self._stack[-1].volatile.append((value, digest))

    def _cannot(self, what: str) -> None:
        self.unversionable.append(what)
        if self._stack:
            self._stack[-1].unversionable.append(what)

    def _enter(self, obj: Any, label: str) -> tuple[str, _Record | None]:
        """The label of ``obj``, and a record to fill if it is new to the walk and memo."""
        known = self._labels.get(id(obj))
        if known is not None:  # walked already, or being walked (recursion): a child still
            if self._stack and id(obj) in self._records:
                self._stack[-1].children.append(self._records[id(obj)])
            return known, None
        record = self._memo.get(id(obj))
        if record is not None and record.obj is obj:
            self._merge(record)
            return record.label, None
        unique, n = label, 1
        while unique in self.entries:  # two objects of one name: a factory's closures
            n += 1
            unique = f"{label}#{n}"
        self.entries[unique] = ""  # reserved; set once its content is known
        self._labels[id(obj)] = unique
        self._keep.append(obj)
        record = self._records[id(obj)] = _Record(obj, unique, id(obj))
        if self._stack:
            self._stack[-1].children.append(record)
        self._stack.append(record)
        return unique, record

    def _leave(self, record: _Record) -> None:
        self._stack.pop()
        self._memo[record.key] = record

    def _merge(self, record: _Record) -> None:
        """Add what an earlier walk of the batch found under ``record``, and its children."""
        if self._stack:
            self._stack[-1].children.append(record)
        pending = [record]
        while pending:
            current = pending.pop()
            if current.key in self._records:
                continue
            if isinstance(current.key, int):
                self._labels[current.key] = current.label
            self._records[current.key] = current
            self._keep.append(current.obj)
            for label, digest, where in current.own:
                self.entries[label] = digest
                if where:
                    self.where[label] = where
            self.bindings.extend(current.bindings)
            self.volatile.extend(current.volatile)
            self.unversionable.extend(current.unversionable)
            pending.extend(current.children)

    # -- code ------------------------------------------------------------------------------

    def function(self, func: types.FunctionType, top: bool = False) -> str:
        """Walk a function: its code, closure, defaults, wrapped function, and globals."""
        label, record = self._enter(func, f"{func.__module__}.{func.__qualname__}")
        if record is None:
            return label
        code = func.__code__
        names, outer = _names(code), self._names
        self._names = names
        try:
            parts = [bytecode_fingerprint(code)]  # decorators are not in it: they ran at def
            if not top:  # a node's own defaults are its inputs, versioned by the run
                parts.append(self.token(func.__defaults__, label))
                parts.append(self.token(func.__kwdefaults__, label))
            for name, cell in zip(code.co_freevars, func.__closure__ or (), strict=False):
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell
                    continue
                parts.append(name.encode() + b"=" + self.token(value, name))
            wrapped = getattr(func, "__wrapped__", None)
            if wrapped is not None:  # a decorator's wrapper: both compute
                parts.append(b"wraps " + self.token(wrapped, label, top=top))
            where = f"{os.path.basename(code.co_filename)}:{code.co_firstlineno}"
            self._set(label, b"\0".join(parts), where, own=True)
            unbound = self._lookup(func.__globals__, func.__module__, names, absent=True)
            if unbound:  # names no one has bound: a global read is one bound only as it runs
                for name in sorted(unbound & global_loads(code)):
                    self._cannot(f"the global {name!r} (bound by nothing when versioned)")
        finally:
            self._names = outer
            self._leave(record)
        return label

    def _lookup(
        self, namespace: Mapping[str, Any], module: str, names: set[str], absent: bool
    ) -> set[str]:
        """Version the names of ``namespace`` the code uses (a module's, or globals); with
        ``absent``, note those it lacks, and return them."""
        unbound = set()
        for name in sorted(names):
            if name in namespace:
                self._named(namespace, module, name, names)
            elif absent and not hasattr(builtins, name):
                # Bound later (by a cell, or at run time): then the version is computed again.
                self._bind(namespace, name, ABSENT)
                unbound.add(name)
        return unbound

    def _named(self, namespace: Mapping[str, Any], module: str, name: str, names: set[str]) -> None:
        """A module-level name the code uses: looked up, and its value versioned, once per
        batch of walks (a module is followed through the names of the code that names it)."""
        key = (id(namespace), name)
        value = namespace[name]
        if isinstance(value, types.ModuleType):
            self._bind(namespace, name, value)
            self.module(value, names)
            return
        if key in self._records:  # in this walk already: still what this code depends on
            if self._stack:
                self._stack[-1].children.append(self._records[key])
            return
        record = self._memo.get(key)
        if record is not None and record.obj is namespace:
            self._merge(record)
            return
        record = self._records[key] = _Record(namespace, f"{module}.{name}", key)
        if self._stack:
            self._stack[-1].children.append(record)
        self._stack.append(record)
        try:
            self._bind(namespace, name, value)
            token = self.token(value, name)
            if token != b"ref " + record.label.encode():  # not just the function of that name
                self._set(record.label, token)
        finally:
            self._leave(record)

    def module(self, module: types.ModuleType, names: set[str]) -> None:
        """A module the code names: the project's is followed through the names the code
        uses (``utils.f``, ``pkg.mod.CONST``); an installed one is its package's version."""
        if not is_own(module):
            self._package(module.__name__)
            return
        self._lookup(vars(module), module.__name__, names, absent=False)

    def cls(self, value: type) -> str:
        """Walk a class: its methods (dunders too), properties, attribute values and bases."""
        label, record = self._enter(value, f"{value.__module__}.{value.__qualname__}")
        if record is None:
            return label
        try:
            parts = []
            for name, member in vars(value).items():
                if name in _CLASS_MACHINERY or (_is_dunder(name) and not _is_code(member)):
                    continue
                if name.startswith("_") and name.endswith("_") and not _is_dunder(name):
                    continue  # enum's bookkeeping (_member_map_...): its members are attributes
                parts.append(name.encode() + b"=" + self.token(member, name))
            parts.extend(b"base " + self.token(base, label) for base in value.__mro__[1:])
            file = getattr(sys.modules.get(value.__module__), "__file__", None)
            line = class_line(value)
            where = f"{os.path.basename(file)}:{line}" if file and line else None
            self._set(label, b"\0".join(parts), where, own=True)
            self._recheck(value, _class_state(value))
        finally:
            self._leave(record)
        return label

    def _package(self, module_name: str) -> str:
        label, version, digest = _distribution(module_name)
        self._add(label, digest, f"{label} {version}")
        return label

    # -- values ----------------------------------------------------------------------------

    def token(self, value: Any, name: str, top: bool = False) -> bytes:
        """Bytes that stand for ``value``: by value for data, by reference for code.

        ``name`` is what the value is bound to, for the message if it cannot be versioned.
        """
        if isinstance(value, _SCALARS):
            return f"{type(value).__name__} {value!r}".encode()
        if type(value) is object:  # a sentinel: compared by identity, nothing to version
            return b"object()"
        if isinstance(value, Node):
            value = value.func
        if isinstance(value, types.FunctionType):
            if not is_own(value):
                return b"pkg " + self._package(value.__module__).encode()
            return b"ref " + self.function(value, top=top).encode()
        if isinstance(value, type):
            if not is_own(value):
                package = self._package(value.__module__)
                return f"pkg {package} {value.__qualname__}".encode()
            return b"ref " + self.cls(value).encode()
        if isinstance(value, _CONTAINERS) or _is_instance(value):
            return self._composite(value, name)
        if isinstance(value, types.MethodType):
            return b"method " + self.token(value.__func__, name) + self.token(value.__self__, name)
        if isinstance(value, functools.partial):
            held = (value.func, value.args, value.keywords)
            return b"partial " + b",".join(self.token(p, name) for p in held)
        if isinstance(value, (staticmethod, classmethod)):
            return type(value).__name__.encode() + b" " + self.token(value.__func__, name)
        if isinstance(value, property):
            accessors = (value.fget, value.fset, value.fdel)
            return b"property " + b",".join(self.token(p, name) for p in accessors)
        if isinstance(value, types.ModuleType):
            self.module(value, self._names)
            return b"module " + value.__name__.encode()
        if isinstance(value, Path):
            return self._path(value, name)
        if isinstance(value, enum.Enum):
            return self.token(type(value), name) + b"." + value.name.encode()
        if isinstance(value, _INERT):
            return f"{type(value).__name__} {value.__name__}".encode()
        if isinstance(value, logging.Logger):
            return b"logger " + value.name.encode()  # where messages go, not what is computed
        kind = type(value)
        if kind.__module__.partition(".")[0] in _BY_TYPE:
            return f"{kind.__module__}.{kind.__qualname__}".encode()
        if isinstance(value, re.Pattern):
            return f"re {value.pattern!r} {value.flags}".encode()
        if isinstance(value, (typing.TypeVar, types.GenericAlias, types.UnionType)) or (
            type(value).__module__ == "typing"
        ):
            return b"typing " + repr(value).encode()
        if isinstance(value, _CALLABLES) or _is_named_in_package(value):
            package = self._package(getattr(value, "__module__", None) or "builtins")
            bound = getattr(value, "__self__", None)
            on = (
                b""
                if bound is None or isinstance(bound, types.ModuleType)
                else self.token(bound, name)
            )
            return f"pkg {package} {getattr(value, '__qualname__', '')} ".encode() + on
        return self._data(value, name)

    def _composite(self, value: Any, name: str) -> bytes:
        """A container or a project instance, by its items or state; cycles are cut.

        The outermost one is kept to recheck: it may be mutated without being rebound.
        """
        key = id(value)
        if key in self._active:
            return b"<cycle>"
        outermost = not self._active
        self._active.add(key)
        try:
            if isinstance(value, dict):
                body = b",".join(
                    self.token(k, name) + b":" + self.token(v, f"{name}[{k!r}]")
                    for k, v in value.items()
                )
            elif isinstance(value, (set, frozenset)):
                body = b",".join(sorted(self.token(v, f"{name}{{...}}") for v in value))
            elif isinstance(value, (tuple, list, bytearray)):
                body = b",".join(self.token(v, f"{name}[{i}]") for i, v in enumerate(value))
            else:  # a project instance, a namespace: its class and its state
                body = self.token(type(value), name) + b"".join(
                    f" {attr}=".encode() + self.token(v, f"{name}.{attr}")
                    for attr, v in _state(value).items()
                )
        finally:
            self._active.discard(key)
        token = f"{type(value).__qualname__}(".encode() + body + b")"
        if outermost and not _immutable(value):
            self._recheck(value, _digest(token))
        return token

    def _path(self, value: Path, name: str) -> bytes:
        """A path by its file's or directory's content, rechecked (cheaply) at every run."""
        try:
            content = path_version(value)
        except OSError as exc:
            self._cannot(f"{name!r} (path {value}: {exc.strerror or exc})")
            return b"<unversionable>"
        self._recheck(value, content)
        return f"path {value} {content}".encode()

    def _data(self, value: Any, name: str) -> bytes:
        """Any other value: by its packed bytes if the codec can pack it, else named."""
        try:
            body = encode(value)
        except UnsupportedValueError:
            kind = type(value)
            self._cannot(f"{name!r} (a {kind.__module__}.{kind.__qualname__} object)")
            return b"<unversionable>"
        token = b"data " + hashlib.blake2b(body, digest_size=16).digest()
        if type(value).__hash__ is None:  # mutable: an array, say
            self._recheck(value, _digest(token))
        return token


def recheck(value: Any, digest: str) -> bool:
    """Whether a value kept to recheck still has the digest it was versioned with."""
    try:
        return digest_of(value) == digest
    except OSError:  # a path that cannot be read any more
        return False


def digest_of(value: Any) -> str:
    """The digest :class:`Walk` keeps of a mutable value, to recheck it."""
    if isinstance(value, type):
        return _class_state(value)
    if isinstance(value, Path):
        return path_version(value)
    return _digest(Walk().token(value, ""))


def _digest(token: bytes) -> str:
    return hashlib.blake2b(token, digest_size=8).hexdigest()


def _class_state(value: type) -> str:
    """A digest of which objects a class's attributes hold, to notice one rebound."""
    parts = [f"{name}:{id(member)}" for name, member in vars(value).items()]
    return _digest("\0".join(parts).encode())


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _is_code(member: Any) -> bool:
    """A class member that runs: a function, or a descriptor or wrapper of one."""
    return isinstance(member, (types.FunctionType, staticmethod, classmethod, property)) or (
        callable(member) and not isinstance(member, type)
    )


def _immutable(value: Any) -> bool:
    return isinstance(value, (tuple, frozenset)) and all(
        isinstance(v, _SCALARS) or _immutable(v) for v in value
    )


def _is_instance(value: Any) -> bool:
    """An instance of a project class."""
    kind = type(value)
    return is_own(kind) and not isinstance(value, enum.Enum)


def _is_named_in_package(value: Any) -> bool:
    """A callable an installed module defines by name (``numpy.sqrt``): the package's code."""
    module = sys.modules.get(getattr(value, "__module__", None) or "")
    name = getattr(value, "__name__", None)
    return (
        callable(value)
        and module is not None
        and isinstance(name, str)
        and getattr(module, name, None) is value
        and not is_own(module)
    )


def _state(value: Any) -> dict[str, Any]:
    state = dict(getattr(value, "__dict__", {}))
    for kind in type(value).__mro__:
        slots = kind.__dict__.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(value, slot):
                state[slot] = getattr(value, slot)
    return state


def is_own(value: Any) -> bool:
    """Whether ``value`` (a module, or what it defines) is the project's own code, rather
    than Python's, an installed package's, or flowdeco's."""
    name = (
        value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", "")
    ) or ""
    if name.partition(".")[0] == _LIBRARY:
        return False
    module = sys.modules.get(name)
    if module is None:
        return True  # defined in a namespace that is no module (exec, a notebook)
    file = getattr(module, "__file__", None)
    if file is None:
        return module.__name__ == "__main__"  # builtins have no file; a notebook's main neither
    return not _installed_file(file)


@functools.lru_cache(maxsize=4096)
def _installed_file(file: str) -> bool:
    return os.path.realpath(file).startswith(_INSTALLED)


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names the code and its nested functions use."""
    names: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        names.update(current.co_names)
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return names


@functools.cache
def _distribution(module_name: str) -> tuple[str, str, str]:
    """The (label, version, digest of the version) an installed module is versioned by."""
    label, version = _find_distribution(module_name)
    return label, version, hashlib.blake2b(version.encode(), digest_size=8).hexdigest()


def _find_distribution(module_name: str) -> tuple[str, str]:
    top = module_name.partition(".")[0]
    if top in sys.stdlib_module_names or top in ("builtins", ""):
        return _PYTHON
    version = _installed(top)  # most distributions are named like what they install
    if version is not None:
        return top, version
    for dist in sorted(_distributions_by_import_name().get(top, ())):
        version = _installed(dist)
        if version is not None:
            return dist, version
    # No metadata (a vendored or copied package): its file's identity stands for a version.
    file = getattr(sys.modules.get(top), "__file__", None)
    try:
        stat = os.stat(file) if file else None
    except OSError:
        stat = None
    return top, f"{file} {stat.st_size} {stat.st_mtime_ns}" if stat else "no version"


def _installed(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.cache
def _distributions_by_import_name() -> Mapping[str, list[str]]:
    """Read once, and only for a module not named like its distribution (yaml: PyYAML)."""
    return importlib.metadata.packages_distributions()
