"""A node whose value is a set of strings, and its child: early cutoff across processes.

Usage: python set_value_pipeline.py

The store is ``.flowdeco`` in the working directory. Prints one JSON line: each node's
status, the nodes whose bodies ran, the CheckpointWarnings the run issued, and the key of
``words``. The order a set of strings iterates in depends on the process's hash seed
(``PYTHONHASHSEED``), so two processes may see one value in two orders.
"""

from __future__ import annotations

import json
import sys
import warnings

import flowdeco as fd

ran: list[str] = []


@fd.node
def words() -> set[str]:
    ran.append("words")
    return {"alpha", "beta", "gamma", "delta", "epsilon"}


@fd.node
def longest(words: set[str]) -> str:
    ran.append("longest")
    return max(sorted(words), key=len)


def main() -> None:
    pipe = fd.Pipeline([words, longest], name="sets")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = pipe.run()
    report = {
        "status": {name: str(status) for name, status in result.status.items()},
        "ran": ran,
        "warnings": [str(w.message) for w in caught],
        "key": pipe.runs()[-1].nodes["words"]["key"],
        "longest": result["longest"],
    }
    sys.stdout.write(json.dumps(report) + "\n")


if __name__ == "__main__":
    main()
