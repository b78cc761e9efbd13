"""``flowdeco graph``: a pipeline's DAG as Mermaid or Graphviz dot text.

Nodes are boxes, inputs of the run are parallelograms (dashed when optional), an edge is a
value passed on, a dotted edge an ``after=`` ordering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._load import load_pipeline
from ._output import UsageError

if TYPE_CHECKING:
    import argparse

    from flowdeco import Pipeline

__all__ = ["register"]

_FORMATS = ("mermaid", "dot", "svg")


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add ``graph`` to the command line."""
    parser = commands.add_parser(
        "graph",
        parents=[common],
        help="print a pipeline's graph (Mermaid or dot)",
        description="Print the DAG of FILE.py[:PIPELINE]: its nodes, the inputs of a run, and "
        "who feeds whom. Paste Mermaid into a Markdown file, or render dot with Graphviz "
        "(dot -Tsvg).",
    )
    parser.add_argument(
        "target", metavar="FILE.py[:PIPELINE]", help="the file, and a Pipeline in it"
    )
    parser.add_argument(
        "--format", choices=_FORMATS, default="mermaid", help="the notation (default: mermaid)"
    )
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        dest="outputs",
        metavar="NODE",
        help="show only what these nodes need (repeat, or separate with commas)",
    )
    parser.set_defaults(handler=_graph)


def _graph(args: argparse.Namespace) -> int:
    if args.format == "svg":
        raise UsageError("svg: not yet, see issue 15; use --format dot and Graphviz (dot -Tsvg)")
    pipeline = load_pipeline(args.target)
    names = _selected(pipeline, args.outputs)
    print(_mermaid(pipeline, names) if args.format == "mermaid" else _dot(pipeline, names))
    return 0


def _selected(pipeline: Pipeline, asked: list[str] | None) -> list[str]:
    """The nodes shown: those asked for and their ancestors, in order; all by default."""
    if not asked:
        return list(pipeline.order)
    wanted = [name.strip() for item in asked for name in item.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in pipeline.nodes]
    if unknown:
        raise UsageError(f"{', '.join(map(repr, unknown))}: no such node in {pipeline.name!r}")
    keep = set(wanted).union(*(pipeline.upstream(name) for name in wanted))
    return [name for name in pipeline.order if name in keep]


def _edges(
    pipeline: Pipeline, names: list[str]
) -> tuple[dict[str, bool], list[tuple[str, str, bool]]]:
    """The inputs the nodes read (name: required), and the edges ``(from, to, is_data)``."""
    inputs: dict[str, bool] = {}
    edges: list[tuple[str, str, bool]] = []
    for name in names:
        spec = pipeline.nodes[name]
        for param in spec.params:
            if param.source not in pipeline.nodes:
                inputs[param.source] = inputs.get(param.source, False) or not param.has_default
            edge = (param.source, name, True)
            if edge not in edges:
                edges.append(edge)
        edges.extend(
            (before, name, False) for before in spec.after if (before, name, True) not in edges
        )
    return inputs, edges


def _mermaid(pipeline: Pipeline, names: list[str]) -> str:
    inputs, edges = _edges(pipeline, names)
    ids = {name: f"n{i}" for i, name in enumerate(names)}
    ids.update({name: f"i{i}" for i, name in enumerate(inputs)})
    lines = ["flowchart TD"]
    lines += [f'    {ids[name]}[/"{_label(name)}"/]' for name in inputs]
    lines += [f'    {ids[name]}["{_label(name)}"]' for name in names]
    lines += [f"    {ids[a]} {'-->' if data else '-.->'} {ids[b]}" for a, b, data in edges]
    optional = [ids[name] for name, required in inputs.items() if not required]
    if optional:
        lines.append("    classDef optional stroke-dasharray: 4 4")
        lines.append(f"    class {','.join(optional)} optional")
    return "\n".join(lines)


def _label(name: str) -> str:
    """A name inside Mermaid's quotes, which take no double quote of their own."""
    return name.replace('"', "#quot;")


def _dot(pipeline: Pipeline, names: list[str]) -> str:
    inputs, edges = _edges(pipeline, names)
    lines = [f"digraph {_quoted(pipeline.name)} {{", "    node [shape=box];"]
    for name, required in inputs.items():
        style = "" if required else ", style=dashed"
        lines.append(f"    {_quoted(name)} [shape=parallelogram{style}];")
    lines += [f"    {_quoted(name)};" for name in names]
    for a, b, data in edges:
        lines.append(f"    {_quoted(a)} -> {_quoted(b)}{'' if data else ' [style=dotted]'};")
    lines.append("}")
    return "\n".join(lines)


def _quoted(name: str) -> str:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
