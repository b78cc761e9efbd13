"""``flowdeco cache``: what the store holds (``ls``, ``show``), and removing it (``clear``,
``prune``) safely while other processes run pipelines on the same store."""

from __future__ import annotations

import argparse
import reprlib
import time
from typing import TYPE_CHECKING, Any

from flowdeco import CorruptDataError, FileStore
from flowdeco._core._codec import decode
from flowdeco._core._store import recorded_runs

from ._history import store_path
from ._inventory import Use, checkpoints, last_used, uses
from ._maintain import clear, exclusive, plan_prune, remove
from ._output import UsageError, ago, dump, listing, plural, size, table, utc
from ._runs import add_store_options
from ._units import age, byte_size

if TYPE_CHECKING:
    from pathlib import Path

    from ._inventory import CheckpointFile

__all__ = ["register"]

_VALUE = reprlib.Repr()
_VALUE.maxstring = _VALUE.maxother = 200
_VALUE.maxlist = _VALUE.maxtuple = _VALUE.maxdict = _VALUE.maxset = 12
_VALUE.maxlevel = 4


def register(commands: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    """Add ``cache ls|show|clear|prune`` to the command line."""
    cache = commands.add_parser(
        "cache",
        help="see and prune what the checkpoint store holds",
        description="What the checkpoint store holds, and removing it. Prune and clear never "
        "remove a file while a run uses the store: they wait (--wait) or refuse.",
    )
    actions = cache.add_subparsers(title="subcommands", metavar="ACTION", required=True)
    ls = actions.add_parser(
        "ls",
        parents=[common],
        help="list checkpoints: node, size, age, last use",
        description="List the store's checkpoints, most recently used first: key, the "
        "node(s) that had it, size, when it was written and when a run last used it.",
    )
    add_store_options(ls)
    ls.set_defaults(handler=_ls)
    show = actions.add_parser(
        "show",
        parents=[common],
        help="one checkpoint: its nodes, runs and value",
        description="One checkpoint: its file, size, the nodes and runs that used it, and "
        "its value (shortened).",
    )
    show.add_argument("key", metavar="KEY", help="a key, or a unique start of one")
    add_store_options(show)
    show.set_defaults(handler=_show)
    wipe = actions.add_parser(
        "clear",
        parents=[common],
        help="remove every checkpoint",
        description="Remove every checkpoint (and the store's file digests); run records "
        "stay unless --runs.",
    )
    wipe.add_argument("--runs", action="store_true", help="remove the run records too")
    _add_safety_options(wipe)
    add_store_options(wipe)
    wipe.set_defaults(handler=_clear)
    prune = actions.add_parser(
        "prune",
        parents=[common],
        help="remove old checkpoints and runs",
        description="Remove what the options name (what any of them names): checkpoints no "
        "run used lately, records of old runs, or the least recently used checkpoints past a "
        "size.",
        epilog="Sizes: 500MB, 1GB (powers of 1000), 1GiB (of 1024). Ages: 90s, 30m, 12h, 7d, "
        "2w, 1h30m.",
    )
    prune.add_argument(
        "--older-than",
        type=age,
        metavar="AGE",
        help="checkpoints no run stored or reused within AGE, and records of runs started before",
    )
    prune.add_argument(
        "--keep-runs",
        type=_count,
        metavar="N",
        help="keep each pipeline's last N run records, and the checkpoints they used",
    )
    prune.add_argument(
        "--max-size",
        type=byte_size,
        metavar="SIZE",
        help="then remove the least recently used checkpoints until the rest fit in SIZE",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would be removed; remove nothing"
    )
    _add_safety_options(prune)
    add_store_options(prune)
    prune.set_defaults(handler=_prune)


def _add_safety_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for runs using the store to end (default: refuse at once)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="skip the check of run records for live runs (a killed run's process id now "
        "reused, or Windows, which has no lock); the lock is still taken",
    )


def _count(text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return number


def _nodes(use: Use | None) -> str:
    """The node that had the key (a key is one node's; pipelines may share it)."""
    return "?" if use is None else listing(list(dict.fromkeys(n for _, n in use.nodes)), 3)


def _pipelines(use: Use | None) -> str:
    return "?" if use is None else listing(list(dict.fromkeys(p for p, _ in use.nodes)), 3)


def _ls(args: argparse.Namespace) -> int:
    store = store_path(args.store)
    used = uses(recorded_runs(store))
    found = sorted(checkpoints(store), key=lambda c: last_used(c, used.get(c.key)), reverse=True)
    if args.json:
        print(dump([_described(c, used.get(c.key)) for c in found]))
        return 0
    if not found:
        print(f"no checkpoints in {store}")
        return 0
    now = time.time()
    rows = []
    for checkpoint in found:
        use = used.get(checkpoint.key)
        rows.append(
            [
                checkpoint.key[:16],
                _nodes(use),
                _pipelines(use),
                size(checkpoint.size),
                ago(checkpoint.written, now),
                ago(last_used(checkpoint, use), now),
            ]
        )
    print(table(["key", "node", "pipeline", "size", "written", "last used"], rows, right={3}))
    total = sum(c.size for c in found)
    print(f"{plural(len(found), 'checkpoint')}, {size(total)} in {store}")
    return 0


def _described(checkpoint: CheckpointFile, use: Use | None) -> dict[str, Any]:
    return {
        "key": checkpoint.key,
        "path": str(checkpoint.path),
        "bytes": checkpoint.size,
        "written": checkpoint.written,
        "last_used": last_used(checkpoint, use),
        "nodes": [{"pipeline": p, "node": n} for p, n in use.nodes] if use else [],
        "runs": use.runs if use else [],
    }


def _show(args: argparse.Namespace) -> int:
    store = store_path(args.store)
    matches = [c for c in checkpoints(store) if c.key.startswith(args.key.lower())]
    if len(matches) != 1:
        if not matches:
            raise UsageError(f"{store} has no checkpoint {args.key!r}")
        keys = listing([c.key[:16] for c in matches])
        raise UsageError(f"{args.key!r} starts {len(matches)} keys: {keys}")
    checkpoint = matches[0]
    use = uses(recorded_runs(store)).get(checkpoint.key)
    value, body = _value(store, checkpoint.key)
    if args.json:
        print(dump({**_described(checkpoint, use), "body_bytes": body, "value": value}))
        return 0
    print(f"key        {checkpoint.key}")
    print(f"file       {checkpoint.path}")
    print(f"size       {size(checkpoint.size)}" + (f" (value {size(body)})" if body else ""))
    print(f"written    {utc(checkpoint.written)} ({ago(checkpoint.written)})")
    last = last_used(checkpoint, use)
    print(f"last used  {utc(last)} ({ago(last)})")
    print(f"node       {_nodes(use) if use else '? (no run record names this key)'}")
    print(f"pipeline   {_pipelines(use)}")
    if use is not None:
        print(f"runs       {listing(use.runs[::-1], limit=3)}")
    print(f"value      {value}")
    return 0


def _value(store: Path, key: str) -> tuple[str, int | None]:
    """The stored value, shortened for reading, and its packed size; or why not."""
    try:
        found = FileStore(store).read(key)
    except CorruptDataError as exc:
        return f"(damaged: {exc})", None
    if found is None or found.body is None:
        return "(gone)", None
    try:
        return _VALUE.repr(decode(found.body)), found.length
    except CorruptDataError as exc:
        return f"(cannot be read here: {exc})", found.length


def _clear(args: argparse.Namespace) -> int:
    store = store_path(args.store)
    if not store.is_dir():
        print(f"nothing to clear: {store} does not exist")
        return 0
    with exclusive(store, args.wait, args.force):
        count, total = clear(store, args.runs)
    if args.json:
        print(dump({"checkpoints": count, "bytes": total, "runs": args.runs}))
    else:
        runs = " and every run record" if args.runs else ""
        print(f"removed {plural(count, 'checkpoint')} ({size(total)}){runs} from {store}")
    return 0


def _prune(args: argparse.Namespace) -> int:
    if args.older_than is None and args.keep_runs is None and args.max_size is None:
        raise UsageError("say what to prune: --older-than AGE, --keep-runs N or --max-size SIZE")
    store = store_path(args.store)
    if not store.is_dir():
        print(f"nothing to prune: {store} does not exist")
        return 0
    with exclusive(store, args.wait, args.force):
        plan = plan_prune(store, args.older_than, args.keep_runs, args.max_size, time.time())
        if not args.dry_run:
            remove(store, plan.checkpoints, plan.records)
    removed = sum(c.size for c in plan.checkpoints)
    kept = sum(c.size for c in plan.kept)
    if args.json:
        data = {
            "dry_run": args.dry_run,
            "removed": {
                "checkpoints": [c.key for c in plan.checkpoints],
                "bytes": removed,
                "runs": [r.run_id for r in plan.records],
            },
            "kept": {"checkpoints": len(plan.kept), "bytes": kept},
        }
        print(dump(data))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    print(
        f"{verb} {plural(len(plan.checkpoints), 'checkpoint')} ({size(removed)}) and "
        f"{plural(len(plan.records), 'run record')} from {store}; "
        f"{plural(len(plan.kept), 'checkpoint')} ({size(kept)}) left"
    )
    return 0
