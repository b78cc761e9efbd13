"""Source fingerprints: a function's or class's syntax tree without docstrings or comments.

Each source file is parsed once and its definitions indexed, so versioning thousands of
functions from one file parses it once (``inspect.getsource`` tokenizes the file anew for
every function, about 100 us each). Code with no source falls back to its bytecode.
"""

from __future__ import annotations

import ast
import copy
import linecache
import sys
import types
from typing import Any

__all__ = ["bytecode_fingerprint", "class_line", "source_fingerprint"]

_Definition = ast.FunctionDef | ast.AsyncFunctionDef
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")


class _Index:
    """One parsed file: its functions by first line, its classes by qualified name."""

    __slots__ = ("classes", "functions", "lines")

    def __init__(self, lines: list[str], tree: ast.Module) -> None:
        self.lines = lines
        self.functions: dict[int, _Definition] = {}
        self.classes: dict[str, ast.ClassDef] = {}
        # Statements only: a def sits in a block, never inside an expression, and skipping
        # expressions makes this several times faster than ``ast.walk``.
        stack: list[tuple[ast.AST, str]] = [(tree, "")]
        while stack:
            node, prefix = stack.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                _strip_docstring(node)
                if isinstance(node, ast.ClassDef):
                    self.classes.setdefault(prefix + node.name, node)
                    prefix = f"{prefix}{node.name}."
                else:
                    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                    self.functions.setdefault(first, node)
                    prefix = f"{prefix}{node.name}.<locals>."
            for block in _BLOCKS:
                stack.extend((child, prefix) for child in getattr(node, block, ()))


_indexes: dict[str, _Index] = {}


def _index(filename: str, module_globals: Any = None) -> _Index | None:
    """The index of a source file, parsed again if the file changed since it was read."""
    linecache.checkcache(filename)
    lines = linecache.getlines(filename, module_globals)
    if not lines:
        return None
    known = _indexes.get(filename)
    if known is None or known.lines is not lines:
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return None
        known = _indexes[filename] = _Index(lines, tree)
    return known


def source_fingerprint(obj: Any, strip_decorators: bool = False) -> bytes | None:
    """The syntax tree of a function or class, without docstrings; None if its source
    cannot be found (a lambda, code made by ``exec``, a class without a file)."""
    definition: ast.AST | None
    if isinstance(obj, type):
        definition = _class_definition(obj)
    else:
        code = getattr(obj, "__code__", None)
        if code is None or code.co_name == "<lambda>":
            return None
        index = _index(code.co_filename, getattr(obj, "__globals__", None))
        found = index.functions.get(code.co_firstlineno) if index else None
        definition = found if found is not None and found.name == code.co_name else None
        if definition is not None and strip_decorators and definition.decorator_list:
            # The node's own decorator holds options (retries, names), not computation.
            definition = copy.copy(definition)
            definition.decorator_list = []
    if definition is None:
        return None
    return ast.dump(definition, annotate_fields=False, include_attributes=False).encode()


def bytecode_fingerprint(code: types.CodeType) -> bytes:
    """Instructions, names and constants of ``code`` and the code nested in it, not lines."""
    parts = [code.co_code, repr(code.co_names).encode()]
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            parts.append(bytecode_fingerprint(const))
        elif not (isinstance(const, str) and const is code.co_consts[0]):  # the docstring
            parts.append(_stable_repr(const).encode())
    return b"\0".join(parts)


def _stable_repr(const: object) -> str:
    """A constant's repr, the same in every process: a frozenset's order is its hashes'."""
    if isinstance(const, frozenset):
        return "frozenset({" + ", ".join(sorted(map(_stable_repr, const))) + "})"
    if isinstance(const, tuple):
        return "(" + ", ".join(map(_stable_repr, const)) + ")"
    return repr(const)


def class_line(cls: type) -> int | None:
    """The line a class's definition starts on, from its file's index."""
    definition = _class_definition(cls)
    return None if definition is None else definition.lineno


def _class_definition(cls: type) -> ast.ClassDef | None:
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    index = _index(file, vars(module)) if file and module else None
    return index.classes.get(cls.__qualname__) if index else None


def _strip_docstring(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
    body = node.body
    first = body[0] if body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        node.body = body[1:] or [ast.Pass()]
