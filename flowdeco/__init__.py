"""flowdeco: pipelines of plain functions, inferred from signatures, run on anyio."""

from __future__ import annotations

from .engine import DEFAULT_CONCURRENCY
from .errors import (
    ConfigurationError,
    CycleError,
    DuplicateNodeError,
    FlowdecoError,
    GraphError,
    InputError,
    MissingInputsError,
    NodeDefinitionError,
    NodeFailed,
    OutputNotAvailableError,
    UnknownInputsError,
    UnknownNodeError,
)
from .graph import Input, Pipeline, Plan
from .node import Node, Param, RunIn, node
from .result import TRANSITIONS, RunResult, Status

__all__ = [
    "DEFAULT_CONCURRENCY",
    "TRANSITIONS",
    "ConfigurationError",
    "CycleError",
    "DuplicateNodeError",
    "FlowdecoError",
    "GraphError",
    "Input",
    "InputError",
    "MissingInputsError",
    "Node",
    "NodeDefinitionError",
    "NodeFailed",
    "OutputNotAvailableError",
    "Param",
    "Pipeline",
    "Plan",
    "RunIn",
    "RunResult",
    "Status",
    "UnknownInputsError",
    "UnknownNodeError",
    "node",
]

__version__ = "0.1.0.dev0"
