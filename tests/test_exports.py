"""The public surface: ``flowdeco.__all__`` is what users import, and nothing is missing."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

import flowdeco as fd
from flowdeco._core import _errors as errors

# The public faces: every other module is private (its name, or a package's, starts with "_").
PUBLIC_MODULES = ("flowdeco", "flowdeco.middleware", "flowdeco.tracing")


def _public_modules() -> list[ModuleType]:
    """Every module a user may import: the rule is anyio's, private modules are skipped."""
    found = pkgutil.walk_packages(fd.__path__, "flowdeco.")
    names = ["flowdeco", *(info.name for info in found if "._" not in info.name)]
    return [importlib.import_module(name) for name in names]


def test_public_modules_are_the_faces() -> None:
    assert tuple(m.__name__ for m in _public_modules()) == PUBLIC_MODULES


@pytest.mark.parametrize("module", _public_modules(), ids=lambda m: m.__name__)
def test_all_is_every_public_name(module: ModuleType) -> None:
    """``__all__`` lists exactly the public names a face binds (imports for typing aside)."""
    public = {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and name != "annotations"
        and not (isinstance(value, ModuleType) and name not in getattr(module, "__all__", ()))
    }
    assert sorted(module.__all__) == sorted(public)
    assert len(module.__all__) == len(set(module.__all__))


@pytest.mark.parametrize(
    ("module", "name"),
    [(m, name) for m in _public_modules() for name in m.__all__],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_every_public_name_is_documented(module: ModuleType, name: str) -> None:
    value = getattr(module, name)
    if isinstance(value, ModuleType) or inspect.isclass(value) or inspect.isfunction(value):
        assert (value.__doc__ or "").strip(), f"{module.__name__}.{name} has no docstring"
    else:  # a constant or type alias: documented by a #: comment where it is defined
        assert name in _documented_constants(), f"{module.__name__}.{name} has no #: comment"


def _documented_constants() -> set[str]:
    """Names bound right below a ``#:`` comment anywhere in flowdeco."""
    found: set[str] = set()
    for path in Path(fd.__file__).parent.rglob("*.py"):
        previous = ""
        for line in path.read_text().splitlines():
            if previous.startswith("#:"):
                found.update(n.strip() for n in line.split("=")[0].split(":")[0].split(","))
            previous = line.strip()
    return found


def test_faces_only_re_export() -> None:
    """A public face defines nothing itself: its names come from the private modules."""
    for module in _public_modules():
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, ModuleType):
                continue
            defined_in = getattr(value, "__module__", None)
            if defined_in is not None and (inspect.isclass(value) or inspect.isfunction(value)):
                # Errors and warnings are renamed to the face, for tracebacks: their class
                # must still be one a private module defines.
                private = [
                    m
                    for m in list(sys.modules.values())
                    if m.__name__.startswith("flowdeco._core.") and getattr(m, name, None) is value
                ]
                assert "._" in defined_in or (
                    issubclass(value, (Exception, Warning)) and private
                ), f"{module.__name__}.{name} is defined in {defined_in}"


def test_errors_show_under_the_public_name() -> None:
    """A traceback says ``flowdeco.NodeFailed``, the name a user catches, not the private one."""
    for cls in [*_error_classes(), fd.CheckpointWarning, fd.GraphWarning]:
        assert cls.__module__ == "flowdeco", cls
        assert getattr(fd, cls.__name__) is cls


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ in (errors.__name__, "flowdeco")  # shown under the face's name
    ]


def test_errors_found() -> None:
    names = {cls.__name__ for cls in _error_classes()}
    assert {"FlowdecoError", "CycleError", "NodeFailed", "OutputNotAvailableError"} <= names


@pytest.mark.parametrize("cls", _error_classes(), ids=lambda c: c.__name__)
def test_error_classes_are_flowdeco_errors_and_exported(cls: type[BaseException]) -> None:
    assert issubclass(cls, fd.FlowdecoError)
    assert cls.__name__ in fd.__all__
    assert getattr(fd, cls.__name__) is cls
    assert cls.__name__ in errors.__all__


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        pytest.param(fd.ConfigurationError, ValueError, id="ConfigurationError"),
        pytest.param(fd.NodeDefinitionError, TypeError, id="NodeDefinitionError"),
        pytest.param(fd.GraphError, ValueError, id="GraphError"),
        pytest.param(fd.CycleError, ValueError, id="CycleError"),
        pytest.param(fd.DuplicateNodeError, ValueError, id="DuplicateNodeError"),
        pytest.param(fd.UnknownNodeError, LookupError, id="UnknownNodeError"),
        pytest.param(fd.InputError, ValueError, id="InputError"),
        pytest.param(fd.MissingInputsError, ValueError, id="MissingInputsError"),
        pytest.param(fd.UnknownInputsError, ValueError, id="UnknownInputsError"),
        pytest.param(fd.OutputNotAvailableError, KeyError, id="OutputNotAvailableError"),
    ],
)
def test_errors_also_inherit_their_builtin(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)


def test_errors_module_imports_nothing_from_flowdeco() -> None:
    """The errors module is a leaf at run time (imports for type checking only aside)."""
    tree = ast.parse(inspect.getsource(errors))
    runtime_imports = [stmt for stmt in tree.body if isinstance(stmt, (ast.Import, ast.ImportFrom))]
    assert runtime_imports, "expected at least the __future__ import"
    for stmt in runtime_imports:
        if isinstance(stmt, ast.ImportFrom):
            assert stmt.level == 0, ast.unparse(stmt)
            assert not (stmt.module or "").startswith("flowdeco"), ast.unparse(stmt)
        else:
            assert not any(a.name.startswith("flowdeco") for a in stmt.names), ast.unparse(stmt)
