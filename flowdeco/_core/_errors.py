"""Every error flowdeco raises; a leaf module that imports nothing from flowdeco."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ._result import RunResult

__all__ = [
    "ConfigurationError",
    "CorruptDataError",
    "CycleError",
    "DuplicateNodeError",
    "FlowdecoError",
    "GraphError",
    "HookError",
    "InputError",
    "MissingInputsError",
    "NodeDefinitionError",
    "NodeFailed",
    "NodeTimeoutError",
    "OutputNotAvailableError",
    "UnknownInputsError",
    "UnknownNodeError",
    "UnsupportedValueError",
    "describe",
    "leaves",
]


class FlowdecoError(Exception):
    """Base class of every error flowdeco raises."""


class ConfigurationError(FlowdecoError, ValueError):
    """An option passed to flowdeco has a value it cannot use."""


class NodeDefinitionError(FlowdecoError, TypeError):
    """A function cannot become a node as decorated (bad signature or options), or a node's
    function (or middleware) returned a coroutine instead of a value."""


class GraphError(FlowdecoError, ValueError):
    """The nodes given to a pipeline do not form a valid graph."""


class CycleError(GraphError):
    """The dependencies form a cycle; ``cycle`` holds its path, first node repeated last."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = tuple(cycle)
        path = " -> ".join(self.cycle)
        if len(self.cycle) == 2:
            message = f"node {self.cycle[0]!r} depends on itself: {path}; remove that dependency"
        else:
            message = f"the pipeline has a cycle: {path}; remove one of these dependencies"
        super().__init__(message)


class DuplicateNodeError(GraphError):
    """Two different definitions use the same node name."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name = name
        self.locations = (first, second)
        super().__init__(
            f"two nodes are named {name!r}: one defined at {first}, the other at {second}; "
            "rename one of them (def ... or @node(name=...))"
        )


class UnknownNodeError(GraphError, LookupError):
    """A name that should be a node's is not in the pipeline."""

    def __init__(self, message: str, names: Sequence[str]) -> None:
        self.names = tuple(names)
        super().__init__(message)


class InputError(FlowdecoError, ValueError):
    """The inputs given to a run do not fit the pipeline."""


class MissingInputsError(InputError):
    """Required external inputs were not given; ``missing`` maps each to the nodes needing it.

    ``close`` maps an input to the nodes named like it: a misspelt parameter is an input.
    """

    def __init__(
        self,
        missing: Mapping[str, Sequence[str]],
        close: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.missing = {name: tuple(nodes) for name, nodes in missing.items()}
        lines = []
        for name, nodes in self.missing.items():
            near = (close or {}).get(name)
            hint = (
                f" (did you mean node {' or '.join(map(repr, near))}? a parameter reads the "
                "node it is named after)"
                if near
                else ""
            )
            lines.append(f"  {name!r}, needed by {', '.join(repr(n) for n in nodes)}{hint}")
        plural = "s" if len(lines) > 1 else ""
        super().__init__(
            f"missing required input{plural}:\n"
            + "\n".join(lines)
            + "\npass them with run(inputs={...})"
        )


class UnknownInputsError(InputError):
    """Inputs were given that are neither an external input nor a node of the pipeline."""

    def __init__(self, unknown: Mapping[str, Sequence[str]]) -> None:
        self.unknown = tuple(unknown)
        lines = []
        for name, close in unknown.items():
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            lines.append(f"  {name!r}{hint}")
        super().__init__(
            "unknown input names, neither an input of the pipeline nor a node to override:\n"
            + "\n".join(lines)
        )


def describe(error: BaseException) -> str:
    """``str(error)``, or a note that it failed: a broken ``__str__`` must not hide the error.

    A group (a task group's errors) also names its first leaves: the group's own text
    ("unhandled errors in a TaskGroup") says nothing of what went wrong.
    """
    try:
        text = str(error)
    except Exception as exc:  # noqa: BLE001 - whatever a user's __str__ raises
        return f"<str() raised {type(exc).__name__}>"
    if isinstance(error, BaseExceptionGroup):
        found = leaves(error)
        named = "; ".join(f"{type(leaf).__name__}: {describe(leaf)}" for leaf in found[:3])
        more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
        return f"{text}: {named}{more}"
    return text


def leaves(error: BaseException) -> list[BaseException]:
    """The exceptions a group holds, however deeply nested, in order; ``[error]`` for one."""
    found: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(reversed(error.exceptions))
        else:
            found.append(error)
    return found


class NodeFailed(FlowdecoError):
    """A node raised; the original exception is ``__cause__``, the partial run is ``result``."""

    def __init__(
        self, node: str, error: BaseException, result: RunResult, attempt: int | None = None
    ) -> None:
        self.node = node
        self.error = error
        self.result = result
        self.attempt = attempt  # the attempt that failed, for nodes run with retries
        on = f" on attempt {attempt}" if attempt is not None else ""
        super().__init__(f"node {node!r} failed{on}: {type(error).__name__}: {describe(error)}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.node, self.error, self.result, self.attempt))


class HookError(FlowdecoError):
    """A hook (or ``on_status`` callback) raised; the run was stopped. The cause is chained.

    ``status`` is the status the node was moving to, or ``"retrying"`` for ``node_retrying``.
    """

    def __init__(self, node: str, status: str, error: BaseException) -> None:
        self.node = node
        self.status = status
        self.error = error
        when = "was to retry" if status == "retrying" else f"became {status}"
        super().__init__(
            f"a hook raised when node {node!r} {when}: {type(error).__name__}: "
            f"{describe(error)}; the run was stopped"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.node, self.status, self.error))


class NodeTimeoutError(FlowdecoError, TimeoutError):
    """One attempt of a node took longer than its ``timeout``."""

    def __init__(self, node: str, seconds: float, attempt: int) -> None:
        self.node = node
        self.seconds = seconds
        self.attempt = attempt
        super().__init__(
            f"node {node!r} timed out after {seconds:g}s (attempt {attempt}); raise its "
            "timeout= or make the work faster"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.node, self.seconds, self.attempt))


class OutputNotAvailableError(FlowdecoError, KeyError):
    """An output was asked of a result that does not hold it."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; show the message as written.
        return str(self.args[0])


class UnsupportedValueError(FlowdecoError, TypeError):
    """A value cannot be checkpointed; ``path`` says where inside it, ``value_type`` what it is."""

    def __init__(
        self, value_type: type, problem: str, path: str = "", node: str | None = None
    ) -> None:
        self.value_type = value_type
        self.problem = problem
        self.path = path  # like [3]["when"]; empty for the value itself
        self.node = node
        where = f"node {node!r}: {node}{path}" if node is not None else f"value{path}"
        super().__init__(f"{where} {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.value_type, self.problem, self.path, self.node))


class CorruptDataError(FlowdecoError, ValueError):
    """Bytes given to decode were not written by flowdeco, or were damaged or truncated."""
