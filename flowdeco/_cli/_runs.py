"""``flowdeco runs``, ``runs show`` and ``why``: past runs, as the store's records tell them."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from flowdeco._core._store import recorded_runs

from ._history import (
    Explainer,
    counts,
    earlier,
    ended,
    find_run,
    outcome,
    started,
    store_path,
)
from ._output import dump, duration, table, utc

if TYPE_CHECKING:
    from collections.abc import Sequence

    from flowdeco import RunRecord

__all__ = ["add_store_options", "register"]


def add_store_options(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """``--store`` and ``--json``; ``nested``: on a subcommand of a command that has them
    too, where a default would overwrite what was given before the subcommand."""
    default: Any = argparse.SUPPRESS if nested else None
    parser.add_argument(
        "--store",
        metavar="DIR",
        default=default,
        help="the checkpoint store (default: $FLOWDECO_STORE, else .flowdeco)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if nested else False,
        help="print JSON",
    )


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add ``runs`` (with ``runs show``) and ``why`` to the command line."""
    runs = commands.add_parser(
        "runs",
        parents=[common],
        help="list past runs; 'runs show ID' shows one",
        description="List the runs recorded in the store, oldest first: id, pipeline, start, "
        "time taken, how it ended, and how many nodes ended in each status.",
    )
    add_store_options(runs)
    runs.add_argument("--pipeline", metavar="NAME", help="only this pipeline's runs")
    runs.add_argument(
        "-n",
        "--last",
        type=int,
        default=20,
        metavar="N",
        help="show the last N runs (default 20; 0 for all)",
    )
    runs.set_defaults(handler=_list)
    shows = runs.add_subparsers(title="subcommands", metavar="[show]")
    show = shows.add_parser(
        "show",
        help="one run, node by node",
        description="One run node by node: status, time, key, whether its value was stored, "
        "and why it ran or was reused.",
    )
    show.add_argument(
        "run_id", metavar="ID", help="a run id, a unique start or end of one, or 'last'"
    )
    add_store_options(show, nested=True)
    show.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,  # `runs --debug show` sets it too
        help="show the traceback of an error, not one line",
    )
    show.set_defaults(handler=_show)
    why = commands.add_parser(
        "why",
        parents=[common],
        help="why a node of a past run ran or was reused",
        description="Why NODE ran or was reused in run ID, rebuilt from the run records (as "
        "result.explain() says it at the end of a run, less what the records do not keep).",
    )
    why.add_argument(
        "run_id", metavar="ID", help="a run id, a unique start or end of one, or 'last'"
    )
    why.add_argument("node", metavar="NODE", help="the node's name")
    add_store_options(why)
    why.set_defaults(handler=_why)


def _list(args: argparse.Namespace) -> int:
    store = store_path(args.store)
    records = recorded_runs(store, args.pipeline)
    if args.last > 0:
        records = records[-args.last :]
    if args.json:
        print(dump([_summary(r) for r in records]))
        return 0
    if not records:
        print(f"no runs recorded in {store}")
        return 0
    rows = [
        [
            r.run_id,
            r.pipeline,
            utc(started(r)),
            duration(_took(r)),
            outcome(r),
            ", ".join(f"{n} {s}" for s, n in counts(r).items()),
        ]
        for r in records
    ]
    print(table(["run", "pipeline", "started", "took", "outcome", "nodes"], rows, right={3}))
    return 0


def _took(record: RunRecord) -> float | None:
    start, end = started(record), ended(record)
    return None if start is None or end is None else end - start


def _summary(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "pipeline": record.pipeline,
        "started": started(record),
        "ended": ended(record),
        "seconds": _took(record),
        "outcome": outcome(record),
        "ok": record.ok,
        "resumes": record.resumes,
        "counts": counts(record),
    }


def _found(args: argparse.Namespace) -> tuple[RunRecord, Sequence[RunRecord]]:
    store = store_path(args.store)
    records = recorded_runs(store)
    record = find_run(records, args.run_id, store)
    return record, earlier(records, record)


def _show(args: argparse.Namespace) -> int:
    record, before = _found(args)
    start = next((e for e in record.entries if e.get("event") == "start"), {})
    nodes: dict[str, dict[str, Any]] = {}
    explainer = Explainer(record, before)
    for name, entry in record.nodes.items():
        explanation, missing = explainer.explain(name)
        nodes[name] = {
            "status": entry.get("status"),
            "seconds": entry.get("seconds"),
            "key": entry.get("key"),
            "stored": bool(entry.get("stored")),
            "why": str(explanation),
            "not_recorded": missing or None,
        }
    if args.json:
        print(dump({**_summary(record), "outputs": start.get("outputs"), "nodes": nodes}))
        return 0
    outputs = start.get("outputs")
    print(f"run       {record.run_id}")
    print(f"pipeline  {record.pipeline}")
    print(f"started   {utc(started(record))} (pid {start.get('pid', '?')})")
    print(f"took      {duration(_took(record))}")
    print(f"outcome   {outcome(record)}")
    print(f"outputs   {', '.join(outputs) if isinstance(outputs, list) else '-'}")
    print(f"resumes   {record.resumes or '-'}")
    print()
    rows = [
        [
            name,
            str(node["status"]),
            duration(node["seconds"] if node["status"] != "cached" else None),
            "yes" if node["stored"] else "no",
            str(node["why"]),
        ]
        for name, node in nodes.items()
    ]
    print(table(["node", "status", "time", "stored", "why"], rows, right={2}))
    return 0


def _why(args: argparse.Namespace) -> int:
    record, before = _found(args)
    explanation, missing = Explainer(record, before).explain(args.node)
    status = record.nodes[args.node].get("status")
    if args.json:
        data = {
            "run_id": record.run_id,
            "pipeline": record.pipeline,
            "node": args.node,
            "status": status,
            "outcome": explanation.outcome,
            "reason": explanation.reason,
            "changes": list(explanation.changes),
            "compared_with": explanation.run_id,
            "why": str(explanation),
            "not_recorded": missing or None,
        }
        print(dump(data))
        return 0
    print(f"{args.node} in run {record.run_id} of {record.pipeline}: {status}")
    print(explanation)
    if len(explanation.changes) > 3:  # str() shows three
        print("\n".join(f"  - {change}" for change in explanation.changes))
    if missing:
        print(f"(from the run record: {missing})")
    return 0
