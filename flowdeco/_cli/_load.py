"""A pipeline from a Python file: ``flow.py`` (its nodes) or ``flow.py:name`` (an object).

The file is imported as a module named after it (``flow``), with its directory first on
``sys.path`` as ``python flow.py`` would have it, so its own imports work. Its nodes' code
versions then name it ``flow.total``, not ``__main__.total``: a run from the command line
and a run of ``python flow.py`` do not share checkpoints.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from flowdeco import Node, Pipeline

from ._output import UsageError, listing

if TYPE_CHECKING:
    from types import ModuleType

__all__ = ["load_pipeline", "split_target"]


def split_target(target: str) -> tuple[Path, str | None]:
    """``flow.py:pipe`` as the file and the object's name; a drive letter is no name."""
    head, sep, tail = target.rpartition(":")
    if sep and head and tail.isidentifier():
        return Path(head), tail
    return Path(target), None


def load_pipeline(target: str) -> Pipeline:
    """The pipeline ``target`` names: the Pipeline object after the colon, or else every
    node the file binds, as a pipeline named after the file.

    Raises:
        UsageError: The file is missing or fails to import, or names no pipeline.
    """
    path, attribute = split_target(target)
    module = load_module(path)
    if attribute is not None:
        found = getattr(module, attribute, None)
        if not isinstance(found, Pipeline):
            pipelines = [n for n, v in vars(module).items() if isinstance(v, Pipeline)]
            known = f"; it has: {listing(pipelines)}" if pipelines else "; it binds none"
            what = "nothing" if found is None else f"a {type(found).__name__}"
            raise UsageError(f"{path}:{attribute} is {what}, not a flowdeco Pipeline{known}")
        return found
    if not any(isinstance(v, Node) for v in vars(module).values()):
        raise UsageError(f"{path} defines no nodes (functions decorated with @fd.node)")
    return Pipeline.from_namespace(vars(module), name=module.__name__)


def load_module(path: Path) -> ModuleType:
    """Import the file at ``path`` as a module named after it.

    Raises:
        UsageError: It is missing, its name cannot be a module's, or importing it raised.
    """
    if not path.is_file():
        raise UsageError(f"{path}: no such file")
    name = path.stem
    if not name.isidentifier():
        raise UsageError(f"{path}: {name!r} cannot be a module name; rename the file")
    resolved = path.resolve()
    seen = sys.modules.get(name)
    if seen is not None:
        if Path(getattr(seen, "__file__", "") or "").resolve() == resolved:
            return seen
        raise UsageError(f"{path}: a module named {name!r} is imported already; rename the file")
    if name in sys.stdlib_module_names:
        raise UsageError(f"{path}: {name!r} is a standard library module; rename the file")
    spec = importlib.util.spec_from_file_location(name, resolved)
    assert spec is not None and spec.loader is not None  # a .py file always has both
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, os.fspath(resolved.parent))
    argv, sys.argv = sys.argv, [os.fspath(path)]
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(f"cannot load {path}: {_where(exc, resolved)}") from exc
    finally:
        sys.argv = argv
    return module


def _where(exc: Exception, file: Path) -> str:
    """The error, and the line of ``file`` it came from."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    line = None
    frame = exc.__traceback__
    while frame is not None:
        if Path(frame.tb_frame.f_code.co_filename) == file:
            line = frame.tb_lineno
        frame = frame.tb_next
    at = f" ({file.name}:{line})" if line is not None else ""
    return f"{type(exc).__name__}: {exc}{at}"
