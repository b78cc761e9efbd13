"""How a node is called: its arguments laid out once per pipeline, and its middleware.

Arguments are passed positionally wherever the signature allows: CPython matches keyword
arguments one by one against the parameter names, which makes a call with k keywords cost
O(k^2) (seconds for a sink reading 100,000 nodes).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import attrs

from .middleware import retry_from, timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from .graph import Pipeline, Plan
    from .middleware import Middleware
    from .node import Node
    from .options import Options

__all__ = [
    "INLINE",
    "KINDS",
    "LOOP",
    "MISSING",
    "THREAD",
    "Layout",
    "middleware_chains",
    "split_inputs",
]

#: Where a node body runs, as the engine dispatches it.
INLINE, THREAD, LOOP = 0, 1, 2
KINDS = {"inline": INLINE, "thread": THREAD, "loop": LOOP}
#: A slot with no value yet (an argument template's, or a node's before it ran).
MISSING: Any = object()


@attrs.frozen(eq=False)
class Layout:
    """A pipeline's per-node tables in the engine's terms, built once per pipeline."""

    specs: tuple[Node[..., Any], ...]
    own_chains: tuple[int, ...]  # nodes with options or middleware of their own
    names: tuple[str, ...]
    funcs: tuple[Callable[..., Any], ...]
    kinds: tuple[int, ...]
    parents: tuple[tuple[int, ...], ...]
    children: tuple[tuple[int, ...], ...]
    args: tuple[tuple[Any, ...], ...]  # positional arguments: defaults, MISSING to fill
    arg_links: tuple[tuple[tuple[int, int], ...], ...]  # (position, parent node)
    kwargs: tuple[dict[str, Any] | None, ...]  # keyword-only defaults; None: no such params
    kwarg_links: tuple[tuple[tuple[str, int], ...], ...]  # (keyword, parent node)
    inputs: tuple[tuple[tuple[int | str, str], ...], ...]  # (position or keyword, input)

    @classmethod
    def of(cls, pipeline: Pipeline) -> Layout:
        layout = _layouts.get(pipeline)
        if layout is None:
            layout = _layouts[pipeline] = cls.build(pipeline)
        return layout

    @classmethod
    def build(cls, pipeline: Pipeline) -> Layout:
        specs = tuple(pipeline.nodes.values())
        calls = [_call_layout(spec, pipeline._index) for spec in specs]
        columns = zip(*calls, strict=True) if calls else ((),) * 5
        args, arg_links, kwargs, kwarg_links, inputs = columns
        return cls(
            specs=specs,
            own_chains=tuple(
                g for g, spec in enumerate(specs) if spec.middleware or spec.options.is_set
            ),
            names=tuple(pipeline.nodes),
            funcs=tuple(spec.func for spec in specs),
            kinds=tuple(KINDS[spec.run_in] for spec in specs),
            parents=pipeline._parents,
            children=pipeline._children,
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


_layouts: weakref.WeakKeyDictionary[Pipeline, Layout] = weakref.WeakKeyDictionary()


def middleware_chains(
    plan: Plan, layout: Layout, defaults: Options
) -> tuple[dict[int, tuple[Middleware, ...]], set[int]]:
    """Middleware around each planned node that has any, and the nodes that retry.

    A chain is the pipeline's middleware, the node's own, then retry and timeout as the
    layered options ask. Nodes without any stay on the fast path.
    """
    outer = tuple(plan.pipeline.middleware)
    chains: dict[int, tuple[Middleware, ...]] = {}
    retried: set[int] = set()
    if outer or defaults.is_set:
        candidates: Iterable[int] = plan.order
    elif layout.own_chains:  # only nodes with options or middleware of their own
        planned = set(plan.order)
        candidates = [g for g in layout.own_chains if g in planned]
    else:
        return chains, retried
    for g in candidates:
        spec = layout.specs[g]
        options = spec.options.over(defaults)
        chain = (*outer, *spec.middleware)
        if options.retries:
            chain += (retry_from(options),)
            retried.add(g)
        if options.timeout is not None and spec.run_in != "inline":  # inline cannot stop
            chain += (timeout(options.timeout),)
        if chain:
            chains[g] = chain
    return chains, retried


def split_inputs(
    spec: Node[..., Any], inputs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for ``spec.func`` from parameter names, as middleware left them."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in spec.params:
        if p.keyword_only or (p.name not in inputs and not p.has_default):
            if p.name in inputs:
                kwargs[p.name] = inputs[p.name]
        else:
            args.append(inputs.get(p.name, p.default))
    known = {p.name for p in spec.params}
    kwargs.update((k, v) for k, v in inputs.items() if k not in known)  # Python will object
    return args, kwargs
