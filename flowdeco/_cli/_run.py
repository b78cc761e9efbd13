"""``flowdeco run``: load a pipeline, run it, print its outputs and what each node did."""

from __future__ import annotations

import argparse
import json
import pprint
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

import flowdeco as fd
from flowdeco._core._options import EXECUTORS
from flowdeco._core._store import FileStore, open_store

from ._convert import annotation_of, convert
from ._history import Explainer
from ._load import load_pipeline
from ._output import UsageError, dump, duration, listing, table
from ._progress import Progress

if TYPE_CHECKING:
    from flowdeco import Pipeline, RunRecord, RunResult
    from flowdeco._core._options import RunOptions

__all__ = ["register"]

_ROWS = 50  # nodes the summary lists; --json lists every node
_VALUE_LINES = 40  # lines of one output's value shown; --json shows all of it


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add ``run`` to the command line."""
    parser = commands.add_parser(
        "run",
        parents=[common],
        help="run a pipeline and print its outputs",
        description=(
            "Run the nodes of FILE.py (or the Pipeline object FILE.py:PIPELINE) and print the "
            "requested outputs and, per node, its status, its time and why it ran or was "
            "reused. Unchanged nodes come from the store's checkpoints."
        ),
        epilog=(
            "Input values are converted by the annotation of the parameter that reads them "
            "(int, float, bool, str, Path, date, datetime, Enum, list[int] as 1,2,3 or JSON, "
            "dict as JSON, X | None with 'none'). Exit status: 0 every node succeeded or was "
            "reused, 1 a node failed, 2 bad usage or input, 130 interrupted."
        ),
    )
    parser.add_argument(
        "target", metavar="FILE.py[:PIPELINE]", help="the file, and a Pipeline in it"
    )
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        dest="outputs",
        metavar="NODE",
        help="a node whose value to print (repeat, or separate with commas); only what it "
        "needs runs. Default: the nodes nothing else reads",
    )
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        dest="inputs",
        default=[],
        metavar="NAME=VALUE",
        help="an input of the run (repeat); a node's name overrides that node's value",
    )
    parser.add_argument(
        "--inputs-file",
        type=Path,
        metavar="F.json",
        help="inputs as a JSON object; -i wins over it",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_ID|last",
        help="reuse every node that finished in that run ('last': the latest run of this "
        "pipeline that did not end well), cache=False nodes included",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="run every node; values are still stored"
    )
    parser.add_argument(
        "--store",
        metavar="DIR",
        help="the checkpoint store (default: the pipeline's, else $FLOWDECO_STORE, else .flowdeco)",
    )
    parser.add_argument(
        "--concurrency", type=_positive, metavar="N", help="how many nodes run at once"
    )
    parser.add_argument(
        "--keep-going",
        action="store_true",
        help="after a failure, finish the branches that do not depend on it",
    )
    parser.add_argument(
        "--trace",
        choices=("otlp", "console"),
        help="send OpenTelemetry spans to OTLP ($OTEL_EXPORTER_OTLP_ENDPOINT) or to stderr",
    )
    parser.add_argument(
        "--executor",
        choices=tuple(EXECUTORS),
        help="where nodes that chose none run (a node's own executor= or run_in= wins)",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        help="redraw a line of counts on stderr as nodes finish (default: when stderr is a "
        "terminal)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=_run)


def _positive(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return number


def _run(args: argparse.Namespace) -> int:
    pipeline = load_pipeline(args.target)
    inputs = _inputs(pipeline, args.inputs_file, args.inputs)
    outputs = _outputs(pipeline, args.outputs)
    planned = _check(pipeline, inputs, outputs)
    store = open_store(args.store if args.store is not None else pipeline.store)
    if type(store) is FileStore:
        store = _ReadOnce(store.path, fsync=store.fsync)
    if args.trace:
        fd.tracing.setup(service_name=pipeline.name, exporter=args.trace)
    shown = sys.stderr.isatty() if args.progress is None else args.progress
    progress = Progress(planned, sys.stderr) if shown else None
    options: RunOptions = {
        "store": store,
        "cache": not args.no_cache,
        "resume": True if args.resume == "last" else args.resume,
        "concurrency": args.concurrency,
        "on_error": "continue" if args.keep_going else "raise",
        "hooks": [progress] if progress is not None else [],
    }
    if args.executor is not None:
        options["executor"] = args.executor
    failure: fd.NodeFailed | None = None
    try:  # the run holds the store's lease: a prune waits for it, and it for a prune
        result = pipeline.run(inputs, outputs, **options)
    except fd.NodeFailed as exc:
        failure, result = exc, exc.result
    finally:
        if progress is not None:
            progress.close()
    whys = _Whys(result, store)
    print(dump(_as_json(result, failure, whys)) if args.json else _report(result, pipeline, whys))
    if failure is not None or not result.ok:
        if args.debug:
            for error in result.errors.values():
                traceback.print_exception(error)
        print(f"flowdeco: error: {failure or _first_failure(result)}", file=sys.stderr)
        return 1
    return 0


@attrs.define(eq=False)
class _ReadOnce(FileStore):
    """A file store that reads a pipeline's run records once: explaining each node of the
    run compares it with the same earlier runs, which would otherwise be read per node."""

    _read: dict[str, list[RunRecord]] = attrs.field(factory=dict, init=False, repr=False)

    def runs(self, pipeline: str) -> list[RunRecord]:
        found = self._read.get(pipeline)
        if found is None:
            found = self._read[pipeline] = FileStore.runs(self, pipeline)
        return list(found)


def _inputs(pipeline: Pipeline, inputs_file: Path | None, given: list[str]) -> dict[str, object]:
    """The run's inputs: the JSON file's, then each ``-i``, converted by annotation."""
    raw: dict[str, object] = {}
    if inputs_file is not None:
        try:
            loaded = json.loads(inputs_file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise UsageError(f"--inputs-file {inputs_file}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise UsageError(f"--inputs-file {inputs_file} is not valid JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--inputs-file {inputs_file} must hold a JSON object of inputs")
        raw.update(loaded)
    for item in given:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"-i expects NAME=VALUE, got {item!r}")
        raw[name.strip()] = value
    return {
        name: convert(name, value, annotation_of(pipeline, name)) for name, value in raw.items()
    }


def _outputs(pipeline: Pipeline, asked: list[str] | None) -> list[str]:
    """The nodes asked for with ``-o``, or those no other node reads."""
    if asked:
        return [name.strip() for item in asked for name in item.split(",") if name.strip()]
    return [name for name in pipeline.order if not pipeline.downstream(name, direct=True)]


def _check(pipeline: Pipeline, inputs: dict[str, object], outputs: list[str]) -> int:
    """How many nodes the run plans; missing inputs refused as the command line says them,
    before anything runs."""
    try:
        return len(pipeline.plan(inputs, outputs).order)
    except fd.MissingInputsError as exc:
        needs = [
            f"{name!r} (needed by {listing([repr(n) for n in nodes])})"
            for name, nodes in exc.missing.items()
        ]
        example = " ".join(f"-i {name}=VALUE" for name in exc.missing)
        plural = "s" if len(needs) > 1 else ""
        raise UsageError(
            f"missing required input{plural} {', '.join(needs)}; pass {example}"
        ) from None


def _first_failure(result: RunResult) -> str:
    for name, error in result.errors.items():
        return f"node {name!r} failed: {type(error).__name__}: {error}"
    return f"run {result.run_id} did not finish"


class _Whys:
    """Why each node ran or was reused: ``result.explain()`` for nodes that ran, which
    knows most; for nodes reused, the records indexed once (explain() would scan them once
    per node, which a run of thousands of cached nodes feels)."""

    def __init__(self, result: RunResult, store: fd.Store | None) -> None:
        self.result = result
        self.store = store
        self.records: Explainer | None = None

    def of(self, name: str) -> fd.Explanation:
        result = self.result
        if result.status[name] is not fd.Status.CACHED or self.store is None:
            return result.explain(name)
        if self.records is None:
            record = self.store.run(result.pipeline, result.run_id)
            if record is None:  # a store that keeps no records
                return result.explain(name)
            before = [r for r in self.store.runs(result.pipeline) if r.run_id < result.run_id]
            self.records = Explainer(record, before)
        return self.records.explain(name)[0]

    def text(self, name: str) -> str:
        error = self.result.errors.get(name)
        if error is not None:
            return f"failed: {type(error).__name__}: {error}"
        if self.result.status[name] is fd.Status.CANCELLED:
            return "cancelled: the run stopped while it ran"
        return str(self.of(name))


def _report(result: RunResult, pipeline: Pipeline, whys: _Whys) -> str:
    """The outputs' values, then a line for the run and a table of its nodes."""
    parts = [_shown(name, value) for name, value in result.items() if value is not None]
    counts = ", ".join(f"{n} {status}" for status, n in result.counts().items())
    state = "ok" if result.ok else "not ok"
    parts.append(
        f"\nrun {result.run_id} of {result.pipeline}: {state}, {counts or 'nothing to run'}, "
        f"in {duration(result.duration)}"
    )
    names = [name for name in pipeline.order if name in result.status]
    shown = _rows_shown(result, names)
    rows = [
        [name, result.status[name].value, duration(result.durations.get(name)), whys.text(name)]
        for name in names
        if name in shown
    ]
    parts.append(table(["node", "status", "time", "why"], rows, right={2}))
    hidden = [name for name in names if name not in shown]
    if hidden:
        cached = sum(1 for name in hidden if result.status[name] is fd.Status.CACHED)
        parts.append(f"... and {len(hidden)} more nodes ({cached} cached); --json lists all")
    return "\n".join(parts)


def _rows_shown(result: RunResult, names: list[str]) -> set[str]:
    """The nodes the table lists: all, or failures and what ran before what was reused."""
    if len(names) <= _ROWS:
        return set(names)
    order = {"failed": 0, "cancelled": 1, "skipped": 3, "cached": 4}
    return set(sorted(names, key=lambda n: order.get(result.status[n].value, 2))[:_ROWS])


def _shown(name: str, value: object) -> str:
    text = value if isinstance(value, str) else pprint.pformat(value, width=96, sort_dicts=False)
    lines = text.splitlines() or [""]
    if len(lines) == 1:
        return f"{name}: {lines[0]}"
    if len(lines) > _VALUE_LINES:
        rest = len(lines) - _VALUE_LINES
        lines = [*lines[:_VALUE_LINES], f"... ({rest} more lines; --json gives all)"]
    return "\n".join([f"{name}:", *(f"  {line}" for line in lines)])


def _as_json(result: RunResult, failure: BaseException | None, whys: _Whys) -> dict[str, Any]:
    nodes = {}
    for name, status in result.status.items():
        error = result.errors.get(name)
        explanation = whys.of(name)
        nodes[name] = {
            "status": status.value,
            "seconds": result.durations.get(name),
            "attempts": result.attempts.get(name),
            "outcome": explanation.outcome,
            "reason": explanation.reason,
            "why": whys.text(name),
            "error": None if error is None else f"{type(error).__name__}: {error}",
        }
    return {
        "pipeline": result.pipeline,
        "run_id": result.run_id,
        "ok": result.ok,
        "duration": result.duration,
        "outputs": dict(result.items()),
        "nodes": nodes,
        "error": None if failure is None else str(failure),
    }
