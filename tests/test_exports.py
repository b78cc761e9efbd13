"""The public surface: ``flowdeco.__all__`` is what users import, and nothing is missing."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import flowdeco as fd
from flowdeco import errors

# Submodules users import from directly; their names need not be re-exported at the top.
PUBLIC_SUBMODULES = {"tracing", "middleware"}

# Public names defined in flowdeco modules that users do not need from ``flowdeco``,
# with the reason. Listed explicitly so that a new public class or function fails the
# test until someone decides where it belongs.
SUBMODULES = {"middleware", "tracing"}  # fd.middleware.logging(), fd.tracing.setup(), ...

NOT_EXPORTED = {
    ("flowdeco.engine", "run_async"): "called by Pipeline.arun",
    ("flowdeco.engine", "run_sync"): "called by Pipeline.run",
    ("flowdeco.result", "new_run_id"): "the engine's; users read RunResult.run_id",
    ("flowdeco.hooks", "combine_hooks"): "the engine's; users pass hooks=[...]",
    ("flowdeco.cache", "cache_key"): "the engine's; run records carry keys",
    ("flowdeco.cache", "code_version"): "the engine's; node(version=...) overrides it",
    ("flowdeco.cache", "data_version"): "the engine's",
    **{
        ("flowdeco.calls", name): "the engine's call layout"
        for name in ("INLINE", "KINDS", "LOOP", "MISSING", "THREAD", "Layout")
    },
    ("flowdeco.calls", "middleware_chains"): "the engine's; users pass middleware=",
    ("flowdeco.calls", "split_inputs"): "the engine's",
    ("flowdeco.codec", "encode"): "the checkpoint format; stores and the cache call it",
    ("flowdeco.codec", "decode"): "the checkpoint format; stores and the cache call it",
    ("flowdeco.store", "pack_file"): "the checkpoint file format, for stores",
    ("flowdeco.store", "unpack_file"): "the checkpoint file format, for stores",
    ("flowdeco.checkpoint", "Checkpoints"): "the engine's; users pass store=, cache=, resume=",
    ("flowdeco.checkpoint", "resumable"): "the engine's; users pass resume=",
    ("flowdeco.store", "open_store"): "Pipeline and run accept a store, a path or None",
    ("flowdeco.engine", "RunSettings"): "built by Pipeline.run/arun from their arguments",
    ("flowdeco.tracing", "RunTracer"): "the engine's; users read spans in their backend",
    ("flowdeco.tracing", "attach"): "the engine's context helper",
    ("flowdeco.tracing", "detach"): "the engine's context helper",
    ("flowdeco.tracing", "setup"): "reached as fd.tracing.setup()",
    ("flowdeco.tracing", "DURATION_BUCKETS"): "reached as fd.tracing.DURATION_BUCKETS",
    ("flowdeco.loops", "run_blocking"): "called by Pipeline.run",
    ("flowdeco.options", "as_options"): "Pipeline and run accept an Options or a dict",
    ("flowdeco.options", "NO_OPTIONS"): "the default of Node.options",
}


def _modules() -> list[ModuleType]:
    names = [
        info.name
        for info in pkgutil.iter_modules(fd.__path__)
        if not info.name.startswith("_") and info.name not in PUBLIC_SUBMODULES
    ]
    return [importlib.import_module(f"flowdeco.{name}") for name in sorted(names)]


def _defined_public(module: ModuleType) -> list[str]:
    """Public classes and functions defined in ``module`` itself (not imported into it)."""
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == module.__name__
    ]


def test_modules_found() -> None:
    names = {m.__name__ for m in _modules()}
    assert {"flowdeco.errors", "flowdeco.node", "flowdeco.graph", "flowdeco.result"} <= names


@pytest.mark.parametrize("name", fd.__all__)
def test_every_exported_name_exists_and_is_public(name: str) -> None:
    assert not name.startswith("_")
    assert hasattr(fd, name)
    value = getattr(fd, name)
    if isinstance(value, ModuleType):  # public submodules users reach as fd.<name>
        assert name in SUBMODULES, f"{name} is a module"


def test_no_duplicates_in_all() -> None:
    assert len(fd.__all__) == len(set(fd.__all__))


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_public_definitions_are_exported(module: ModuleType) -> None:
    missing = [
        name
        for name in _defined_public(module)
        if (module.__name__, name) not in NOT_EXPORTED and name not in fd.__all__
    ]
    assert not missing, f"{module.__name__} defines public {missing} not in flowdeco.__all__"


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_module_all_is_exported(module: ModuleType) -> None:
    """What a module declares public is either re-exported or listed as not for users."""
    missing = [
        name
        for name in getattr(module, "__all__", ())
        if (module.__name__, name) not in NOT_EXPORTED and name not in fd.__all__
    ]
    assert not missing, f"{module.__name__}.__all__ has {missing}, not in flowdeco.__all__"


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_exported_objects_are_the_modules_objects(module: ModuleType) -> None:
    for name in _defined_public(module):
        if name in fd.__all__:
            assert getattr(fd, name) is getattr(module, name), name


@pytest.mark.parametrize("module", _modules(), ids=lambda m: m.__name__)
def test_module_all_names_exist(module: ModuleType) -> None:
    for name in getattr(module, "__all__", ()):
        assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


@pytest.mark.parametrize(("module", "name"), sorted(NOT_EXPORTED))
def test_not_exported_list_is_current(module: str, name: str) -> None:
    assert hasattr(importlib.import_module(module), name)
    assert name not in fd.__all__


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(errors).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == errors.__name__
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
