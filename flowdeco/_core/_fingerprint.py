"""Fingerprints: a node's code version, values' data versions, and the cache key of a call.

The code version hashes the function's source without docstrings and comments (its
bytecode and constants when there is no source), and, transitively, the project's own
functions, classes and module-level constants it refers to through globals and closures,
so editing a helper changes the version of every node that uses it. The standard library
and installed packages are left out: their versions change with the environment, not with
the user's edits.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import hashlib
import inspect
import linecache
import os
import sys
import sysconfig
import textwrap
import types
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._node import Node

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

__all__ = ["cache_key", "code_version", "data_version", "edited_source"]

_CONSTANTS = (int, float, complex, str, bytes, bool, type(None), range)
# Where installed code lives: anything under these is not the project's own.
_INSTALLED = tuple(
    str(Path(p).resolve())
    for key in ("stdlib", "platstdlib", "purelib", "platlib")
    if (p := sysconfig.get_paths().get(key))
)


def data_version(body: bytes) -> str:
    """The version of a value: a hash of its packed bytes."""
    return hashlib.blake2b(body, digest_size=16).hexdigest()


def cache_key(node: str, code: str, inputs: Iterable[tuple[str, str]]) -> str:
    """The key of one call: node name, code version, and each input's data version."""
    parts = [node, code, *(f"{param}={version}" for param, version in sorted(inputs))]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


class _Version:
    """A computed code version and the global bindings it depends on."""

    __slots__ = ("bindings", "edited", "version")

    def __init__(
        self,
        version: str,
        bindings: tuple[tuple[Mapping[str, Any], str, Any], ...],
        edited: str | None,
    ) -> None:
        self.version = version
        self.bindings = bindings
        self.edited = edited  # a source file that changed after the node was defined

    def current(self) -> bool:
        """Whether every global it read still names the same object (a notebook may rebind)."""
        for namespace, name, obj in self.bindings:  # noqa: SIM110  # all() of a generator costs 2x, per node per run
            if namespace.get(name) is not obj:
                return False
        return True


_versions: weakref.WeakKeyDictionary[Any, _Version] = weakref.WeakKeyDictionary()


def code_version(spec: Node[..., Any], version: str | None = None) -> str:
    """The code version of a node: ``version`` if the user gave one, else computed.

    Computed once per definition; recomputed only if a global it depends on was rebound
    (a helper redefined in a notebook cell).
    """
    if version is not None:
        return "user:" + version
    func = spec.func
    try:
        cached = _versions.get(func)
    except TypeError:  # not weak-referenceable: compute every time
        cached = None
    if cached is not None and cached.current():
        return cached.version
    walker = _Walker()
    walker.add_callable(func, top=True)
    edited = next((f for f in sorted(walker.files) if _changed_since(f, spec.defined_at)), None)
    result = _Version(walker.digest(), tuple(walker.bindings), edited)
    with contextlib.suppress(TypeError):
        _versions[func] = result
    return result.version


def edited_source(spec: Node[..., Any]) -> str | None:
    """A source file ``spec``'s code version was read from that changed after the node was
    defined, or None. Then the file no longer holds the code that runs (an edit without a
    reload, in a notebook; an edit while a run goes on), so the version cannot be trusted.

    Answers for the version :func:`code_version` computed last; a user's ``version=``
    takes the responsibility, and is never questioned.
    """
    if spec.version is not None:
        return None
    try:
        cached = _versions.get(spec.func)
    except TypeError:
        return None
    return None if cached is None else cached.edited


def _changed_since(file: str, defined_at: int) -> bool:
    try:
        return os.stat(file).st_mtime_ns > defined_at
    except (OSError, ValueError):  # not a file on disk: a notebook cell, exec'd code
        return False


class _Walker:
    """Hashes a function and, transitively, the project code it refers to."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)
        self.seen: set[int] = set()
        self.bindings: list[tuple[Mapping[str, Any], str, Any]] = []
        self.files: set[str] = set()  # the source files read

    def digest(self) -> str:
        return self.hash.hexdigest()

    def add(self, label: str, data: bytes) -> None:
        self.hash.update(label.encode() + b"\0" + data + b"\0")

    def add_callable(self, func: Any, top: bool = False) -> None:
        func = getattr(func, "func", func) if not top else func  # a Node used as a helper
        func = inspect.unwrap(func)
        if id(func) in self.seen:
            return
        self.seen.add(id(func))
        code = getattr(func, "__code__", None)
        self.add("source", _source_fingerprint(func, strip_decorators=top))
        if code is None:
            return
        self.files.add(code.co_filename)
        namespace = getattr(func, "__globals__", {})
        for name in _names(code):
            if name in namespace:
                self.add_reference(namespace, name, namespace[name])
        for cell in getattr(func, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            self.add_value("closure", value)

    def add_reference(self, namespace: Mapping[str, Any], name: str, value: Any) -> None:
        self.bindings.append((namespace, name, value))
        self.add_value(f"global {name}", value)

    def add_value(self, label: str, value: Any) -> None:
        if isinstance(value, _CONSTANTS) or (
            isinstance(value, (tuple, frozenset)) and all(isinstance(v, _CONSTANTS) for v in value)
        ):
            self.add(label, repr(value).encode())
        elif isinstance(value, (types.FunctionType, types.MethodType)) or _is_node(value):
            if _is_own(value):
                self.add(label, b"function")
                self.add_callable(value)
        elif isinstance(value, type) and _is_own(value) and id(value) not in self.seen:
            self.seen.add(id(value))
            self.add(label, _source_fingerprint(value, strip_decorators=False))
            module_file = getattr(sys.modules.get(value.__module__), "__file__", None)
            if module_file:
                self.files.add(module_file)
            for member in vars(value).values():
                if isinstance(member, (types.FunctionType, staticmethod, classmethod)):
                    self.add_callable(getattr(member, "__func__", member))


def _is_node(value: Any) -> bool:
    return isinstance(value, Node)


def _is_own(value: Any) -> bool:
    """Whether ``value`` is defined in the project rather than Python or an installed package."""
    if _is_node(value):
        value = value.func
    module = sys.modules.get(getattr(value, "__module__", "") or "")
    if module is None:
        return True  # defined in a namespace that is no module (exec, a notebook)
    file = getattr(module, "__file__", None)
    if file is None:
        return module.__name__ == "__main__"  # builtins have no file; a notebook's main neither
    return not str(Path(file).resolve()).startswith(_INSTALLED)


def _names(code: types.CodeType) -> Iterator[str]:
    """Global and attribute names the code and its nested functions use."""
    stack = [code]
    while stack:
        current = stack.pop()
        yield from current.co_names
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))


def _source_fingerprint(obj: Any, strip_decorators: bool) -> bytes:
    """The source without docstrings, comments or formatting; bytecode if there is none."""
    definition = _definition(obj)
    if definition is not None:
        if strip_decorators and definition.decorator_list:
            # The node's own decorator holds options (retries, names), not computation.
            definition = copy.copy(definition)
            definition.decorator_list = []
        return ast.dump(definition, annotate_fields=False, include_attributes=False).encode()
    try:
        source = textwrap.dedent(inspect.getsource(obj))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError, IndentationError):
        return _bytecode_fingerprint(getattr(obj, "__code__", None))
    _strip_docstrings(tree)
    if strip_decorators:
        # The node's own decorator holds options (retries, names), not computation.
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                node.decorator_list = []
    return ast.dump(tree, annotate_fields=False, include_attributes=False).encode()


_Definition = ast.FunctionDef | ast.AsyncFunctionDef
# Per source file: its lines as linecache holds them, and its functions by first line.
_files: dict[str, tuple[list[str], dict[int, _Definition]]] = {}


def _definition(func: Any) -> _Definition | None:
    """The syntax tree of a function, found in its file's tree, parsed once per file.

    ``inspect.getsource`` tokenizes the file anew for every function (about 100 us each);
    a pipeline of thousands of generated nodes would pay that on every first run.
    Lambdas and anything not found fall back to it.
    """
    code = getattr(func, "__code__", None)
    if code is None or code.co_name == "<lambda>":
        return None
    filename = code.co_filename
    linecache.checkcache(filename)  # a file edited since it was read is read again
    lines = linecache.getlines(filename, getattr(func, "__globals__", None))
    if not lines:
        return None
    known = _files.get(filename)
    if known is None or known[0] is not lines:
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return None
        known = _files[filename] = (lines, _index_definitions(tree))
    found = known[1].get(code.co_firstlineno)
    return found if found is not None and found.name == code.co_name else None


_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


def _index_definitions(tree: ast.Module) -> dict[int, _Definition]:
    """Functions by first line (their first decorator's), docstrings stripped.

    Walks statements only: a def sits in a block, never inside an expression, and
    skipping expressions makes this several times faster than ``ast.walk``.
    """
    index: dict[int, _Definition] = {}
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            _strip_docstring(node)
            if not isinstance(node, ast.ClassDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                index.setdefault(first, node)
        for block in _BLOCKS:
            stack.extend(getattr(node, block, ()))
    return index


def _strip_docstring(
    node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module,
) -> None:
    body = node.body
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        node.body = body[1:] or [ast.Pass()]


def _strip_docstrings(tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Module)):
            _strip_docstring(node)


def _bytecode_fingerprint(code: types.CodeType | None) -> bytes:
    if code is None:
        return b"<no code>"
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(_bytecode_fingerprint(const))
        elif not (isinstance(const, str) and const is code.co_consts[0]):  # the docstring
            parts.append(repr(const).encode())
    return b"\0".join(parts)
