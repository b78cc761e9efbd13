"""Run a generated project's pipeline once in this fresh process; write what happened as JSON.

Usage: python reuse_run.py CONFIG OUT

Used by ``tests/test_reuse_edits.py``, whose ``Project`` class starts it with the project
directory as the working directory and on ``PYTHONPATH``. CONFIG is JSON:
``{"module": "flow", "inputs": {...}, "store": "<dir>" or null}``; an input written as
``{"$path": "orders.csv"}`` is passed as ``pathlib.Path("orders.csv")``. The pipeline is
``fd.Pipeline.from_module(module)``, run once with ``store=``. OUT receives
``{"nodes": {name: [status, value]}, "warnings": [[category, message], ...]}`` for every
node in the pipeline's order and every warning raised while importing and running (sets
become sorted lists, anything else JSON cannot hold its ``repr``).
"""

from __future__ import annotations

import importlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return repr(value)


def _input(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"$path"}:
        return Path(value["$path"])
    return value


def main() -> None:
    config = json.loads(sys.argv[1])
    # This script's own directory comes first on sys.path; the project's modules must be
    # found on PYTHONPATH (the project directory), never next to this script.
    del sys.path[0]
    import flowdeco as fd

    inputs = {name: _input(value) for name, value in config["inputs"].items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe = fd.Pipeline.from_module(importlib.import_module(config["module"]))
        result = pipe.run(inputs, store=config["store"])
    report = {
        "nodes": {name: [str(result.status[name]), result.values.get(name)] for name in pipe.order},
        "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    }
    Path(sys.argv[2]).write_text(json.dumps(report, default=_plain))


if __name__ == "__main__":
    main()
