"""Code fingerprints: what a function's compiled code does, without lines or docstrings.

A function is fingerprinted by its code object (instructions, names, constants, nested
code), not by its source file: the code object is what runs, so a file edited after its
module was imported (in a notebook, during a run) cannot give a version to code that is
not running. Comments, formatting and docstrings do not reach the bytecode.
"""

from __future__ import annotations

import ast
import dis
import linecache
import sys
import types

__all__ = ["bytecode_fingerprint", "class_line", "global_loads"]

_LOAD_GLOBAL = dis.opmap["LOAD_GLOBAL"]
_EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]
_GLOBAL_SHIFT = 1 if sys.version_info >= (3, 11) else 0  # the low bit says: push a NULL

# Code objects of comprehensions: their first constant is not a docstring slot.
_COMPREHENSIONS = frozenset({"<listcomp>", "<setcomp>", "<dictcomp>", "<genexpr>"})


def bytecode_fingerprint(code: types.CodeType) -> bytes:
    """Instructions, argument shape, names and constants of ``code`` and the code nested
    in it; not line numbers, and not the docstring (a function's first constant)."""
    consts = code.co_consts
    if code.co_name not in _COMPREHENSIONS and consts and isinstance(consts[0], (str, type(None))):
        consts = consts[1:]  # the docstring slot: None when there is none
    parts = [
        code.co_code,
        f"{code.co_argcount} {code.co_posonlyargcount} {code.co_kwonlyargcount} "
        f"{code.co_flags} {code.co_names} {code.co_varnames} {code.co_freevars} "
        f"{code.co_cellvars}".encode(),
    ]
    for const in consts:
        if isinstance(const, types.CodeType):
            parts.append(bytecode_fingerprint(const))
        else:
            parts.append(_stable_repr(const).encode())
    return b"\0".join(parts)


def global_loads(code: types.CodeType) -> set[str]:
    """The names ``code`` and the code nested in it read as globals (not as attributes,
    which ``co_names`` also holds)."""
    found: set[str] = set()
    stack = [code]
    while stack:
        current = stack.pop()
        raw, names, extended = current.co_code, current.co_names, 0
        for at in range(0, len(raw), 2):
            op = raw[at]
            if op == _EXTENDED_ARG:
                extended = (extended | raw[at + 1]) << 8
                continue
            if op == _LOAD_GLOBAL:
                found.add(names[(extended | raw[at + 1]) >> _GLOBAL_SHIFT])
            extended = 0
        stack.extend(c for c in current.co_consts if isinstance(c, types.CodeType))
    return found


def _stable_repr(const: object) -> str:
    """A constant's repr, the same in every process: a frozenset's order is its hashes'."""
    if isinstance(const, frozenset):
        return "frozenset({" + ", ".join(sorted(map(_stable_repr, const))) + "})"
    if isinstance(const, tuple):
        return "(" + ", ".join(map(_stable_repr, const)) + ",)"
    return repr(const)


# Per source file: its lines as linecache holds them, and its classes' first lines.
_classes: dict[str, tuple[list[str], dict[str, int]]] = {}


def class_line(cls: type) -> int | None:
    """The line a class's definition starts on, to say where it is: read once per file."""
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if not file or module is None:
        return None
    lines = linecache.getlines(file, vars(module))
    known = _classes.get(file)
    if known is None or known[0] is not lines:
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return None
        known = _classes[file] = (lines, _class_lines(tree))
    return known[1].get(cls.__qualname__)


def _class_lines(tree: ast.Module) -> dict[str, int]:
    """Qualified name -> first line, of the classes defined in statements (not expressions)."""
    found: dict[str, int] = {}
    stack: list[tuple[ast.AST, str]] = [(tree, "")]
    while stack:
        node, prefix = stack.pop()
        if isinstance(node, ast.ClassDef):
            found.setdefault(prefix + node.name, node.lineno)
            prefix = f"{prefix}{node.name}."
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            prefix = f"{prefix}{node.name}.<locals>."
        for block in ("body", "orelse", "finalbody", "handlers", "cases"):
            stack.extend((child, prefix) for child in getattr(node, block, ()))
    return found
