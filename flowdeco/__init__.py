"""flowdeco: pipelines of plain functions, inferred from signatures, run on anyio."""

from __future__ import annotations

from . import middleware, tracing
from .codec import register_type
from .engine import DEFAULT_CONCURRENCY
from .errors import (
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
from .graph import Input, Pipeline, Plan
from .hooks import Hooks
from .middleware import Call, CallNext, Middleware
from .node import Node, Param, RunIn, node
from .options import Options
from .result import TRANSITIONS, RunResult, Status
from .store import CheckpointWarning, FileStore, MemoryStore, RunRecord, Store

__all__ = [
    "DEFAULT_CONCURRENCY",
    "TRANSITIONS",
    "Call",
    "CallNext",
    "CheckpointWarning",
    "ConfigurationError",
    "CorruptDataError",
    "CycleError",
    "DuplicateNodeError",
    "FileStore",
    "FlowdecoError",
    "GraphError",
    "HookError",
    "Hooks",
    "Input",
    "InputError",
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
    "RunIn",
    "RunRecord",
    "RunResult",
    "Status",
    "Store",
    "UnknownInputsError",
    "UnknownNodeError",
    "UnsupportedValueError",
    "middleware",
    "node",
    "register_type",
    "tracing",
]

__version__ = "0.1.0.dev0"
