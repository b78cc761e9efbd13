"""The layout's rules, read from the source: imports point one way, and none hides in a function."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import flowdeco as fd

PACKAGE = Path(fd.__file__).parent
CORE = sorted((PACKAGE / "_core").glob("_*.py"))


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(
        ".__init__"
    )


def _target(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a relative ``from . import`` names."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, node.module] if node.module else base)


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def _runtime_imports(path: Path) -> set[str]:
    """flowdeco modules ``path`` imports when it runs (``if TYPE_CHECKING:`` blocks aside)."""
    found: set[str] = set()
    statements = list(ast.parse(path.read_text()).body)
    while statements:
        node = statements.pop()
        if isinstance(node, ast.If) and not _is_type_checking(node):
            statements.extend([*node.body, *node.orelse])
        elif isinstance(node, ast.ImportFrom) and node.level:
            target = _target(path, node)
            for alias in node.names:  # ``from ._core import _errors`` imports a module
                sub = f"{target}.{alias.name}"
                found.add(
                    sub
                    if (PACKAGE.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                    else target
                )
    return found


def test_modules_found() -> None:
    names = {p.stem for p in CORE}
    assert {"_graph", "_scheduler", "_runner", "_executors", "_pipeline"} <= names


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.stem)
def test_no_import_hides_in_a_function(path: Path) -> None:
    """A function-local import of flowdeco code would hide a back-edge: the layering is wrong."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                assert not (isinstance(inner, ast.ImportFrom) and inner.level), (
                    f"{path.name}:{inner.lineno} imports inside {node.name}()"
                )


def test_the_import_graph_has_no_cycle() -> None:
    graph = {_module_name(p): _runtime_imports(p) for p in CORE}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_imports_point_down() -> None:
    """The graph sits below the run, the run below the facade; only the facade runs runs."""
    graph = {_module_name(p).rsplit(".", 1)[1]: _runtime_imports(p) for p in CORE}
    importers = {
        target.rsplit(".", 1)[1]: {m for m, ts in graph.items() if target in ts}
        for target in {t for ts in graph.values() for t in ts}
    }
    assert importers.get("_pipeline", set()) == set()
    assert importers["_runner"] == {"_pipeline"}
    assert importers["_scheduler"] == {"_runner"}
    assert "_errors" not in importers or graph["_errors"] == set()  # the leaf


def test_faces_import_only_the_core() -> None:
    faces = [PACKAGE / "__init__.py", PACKAGE / "middleware.py", PACKAGE / "tracing.py"]
    for face in faces:
        for target in _runtime_imports(face):
            assert target.startswith("flowdeco._core") or target in (
                "flowdeco.middleware",
                "flowdeco.tracing",
            ), f"{face.name} imports {target}"
