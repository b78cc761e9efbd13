"""How a node's arguments are laid out: a template per node, built once per graph.

Arguments are passed positionally wherever the signature allows: CPython matches keyword
arguments one by one against the parameter names, which makes a call with k keywords cost
O(k^2) (seconds for a sink reading 100,000 nodes).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._options import EXECUTORS

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from ._executors import Executor
    from ._graph import Graph
    from ._node import Node

__all__ = ["MISSING", "Layout", "Missing"]


class Missing(enum.Enum):
    """The type of :data:`MISSING`; an enum so that type checkers can narrow on it."""

    MISSING = "missing"

    def __repr__(self) -> str:
        return "<missing>"


#: A slot with no value yet: an argument a run fills in, or a node's value before it ran.
MISSING: Final = Missing.MISSING


@attrs.frozen(eq=False)
class Layout:
    """A graph's per-node call tables, indexed like its nodes; ``Layout.of`` builds it once."""

    funcs: tuple[Callable[..., Any], ...]  # what each node calls
    executors: tuple[Executor, ...]  # where each node's body runs: its own, or its kind's
    own_chains: tuple[int, ...]  # nodes with retries, a timeout or middleware of their own
    args: tuple[tuple[Any, ...], ...]  # positional arguments: defaults, MISSING to fill
    arg_links: tuple[tuple[tuple[int, int], ...], ...]  # (position, parent node)
    kwargs: tuple[dict[str, Any] | None, ...]  # keyword-only defaults; None: no such params
    kwarg_links: tuple[tuple[tuple[str, int], ...], ...]  # (keyword, parent node)
    inputs: tuple[tuple[tuple[int | str, str], ...], ...]  # (position or keyword, input)

    @staticmethod
    def of(graph: Graph) -> Layout:
        """The graph's layout, built on its first run."""
        return graph.derived(_build)


def _build(graph: Graph) -> Layout:
    specs = graph.specs
    calls = [_call_layout(spec, graph.index) for spec in specs]
    columns = zip(*calls, strict=True) if calls else ((),) * 5
    args, arg_links, kwargs, kwarg_links, inputs = columns
    return Layout(
        funcs=tuple(spec.func for spec in specs),
        executors=tuple(spec.options.executor or EXECUTORS[spec.run_in] for spec in specs),
        own_chains=tuple(
            i for i, spec in enumerate(specs) if spec.middleware or spec.options.wraps_calls
        ),
        args=args,
        arg_links=arg_links,
        kwargs=kwargs,
        kwarg_links=kwarg_links,
        inputs=inputs,
    )


def _call_layout(spec: Node[..., Any], index: Mapping[str, int]) -> tuple[Any, ...]:
    """One node's argument template, its links to parents' values, and its run inputs."""
    args: list[Any] = []
    arg_links: list[tuple[int, int]] = []
    kwargs: dict[str, Any] | None = None
    kwarg_links: list[tuple[str, int]] = []
    inputs: list[tuple[int | str, str]] = []
    for p in spec.params:
        slot: int | str
        if p.keyword_only:
            kwargs = {} if kwargs is None else kwargs
            slot = p.name
            if p.has_default:
                kwargs[slot] = p.default
        else:
            slot = len(args)
            args.append(p.default if p.has_default else MISSING)
        parent = index.get(p.source)
        if parent is None:
            inputs.append((slot, p.source))
        elif isinstance(slot, int):
            arg_links.append((slot, parent))
        else:
            kwarg_links.append((slot, parent))
    return tuple(args), tuple(arg_links), kwargs, tuple(kwarg_links), tuple(inputs)
