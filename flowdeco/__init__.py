"""flowdeco: pipelines of plain functions, inferred from signatures, run on anyio."""

from __future__ import annotations

from . import middleware, tracing
from ._core import _errors
from ._core._codec import register_type
from ._core._errors import (
    ConfigurationError,
    CorruptDataError,
    CycleError,
    DuplicateNodeError,
    FlowdecoError,
    GraphError,
    HookError,
    InputError,
    MissingInputsError,
    NodeDefinitionError,
    NodeFailed,
    NodeTimeoutError,
    OutputNotAvailableError,
    UnknownInputsError,
    UnknownNodeError,
    UnsupportedValueError,
)
from ._core._executors import Executor, InlineExecutor, LoopExecutor, ThreadExecutor
from ._core._explain import REASONS, Explanation
from ._core._graph import GraphWarning, Input, Plan
from ._core._hooks import Hooks
from ._core._middleware import Call, CallNext, Middleware
from ._core._node import Node, Param, RunIn, node
from ._core._options import DEFAULT_CONCURRENCY, Options
from ._core._pipeline import Pipeline
from ._core._process import ProcessExecutor, WorkerCrashed
from ._core._result import TRANSITIONS, RunResult, Status
from ._core._store import CheckpointWarning, FileStore, MemoryStore, RunRecord, Store

__all__ = [
    "DEFAULT_CONCURRENCY",
    "REASONS",
    "TRANSITIONS",
    "Call",
    "CallNext",
    "CheckpointWarning",
    "ConfigurationError",
    "CorruptDataError",
    "CycleError",
    "DuplicateNodeError",
    "Executor",
    "Explanation",
    "FileStore",
    "FlowdecoError",
    "GraphError",
    "GraphWarning",
    "HookError",
    "Hooks",
    "InlineExecutor",
    "Input",
    "InputError",
    "LoopExecutor",
    "MemoryStore",
    "Middleware",
    "MissingInputsError",
    "Node",
    "NodeDefinitionError",
    "NodeFailed",
    "NodeTimeoutError",
    "Options",
    "OutputNotAvailableError",
    "Param",
    "Pipeline",
    "Plan",
    "ProcessExecutor",
    "RunIn",
    "RunRecord",
    "RunResult",
    "Status",
    "Store",
    "ThreadExecutor",
    "UnknownInputsError",
    "UnknownNodeError",
    "UnsupportedValueError",
    "WorkerCrashed",
    "middleware",
    "node",
    "register_type",
    "tracing",
]

__version__ = "0.1.0.dev0"

# Errors and warnings show as ``flowdeco.NodeFailed`` in tracebacks, where they are caught.
for _public in (
    *(getattr(_errors, name) for name in _errors.__all__),
    CheckpointWarning,
    GraphWarning,
    WorkerCrashed,
):
    if isinstance(_public, type):
        _public.__module__ = __name__
del _public
