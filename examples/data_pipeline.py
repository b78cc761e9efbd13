"""A data pipeline: fetch a CSV, validate it, transform and enrich it in parallel,
aggregate, store the result, report.

Run it with ``python examples/data_pipeline.py``. It writes a CSV of sales, then runs the
pipeline four times to show what checkpoints do:

1. cold: every node runs;
2. warm: nothing changed, every node is reused from its checkpoint;
3. an edit to a row that validation drops: the nodes that read the file run again, but
   validation returns the same rows, so everything after it is reused (early cutoff);
4. an edit to a valid row: what depends on it runs again, and ``explain()`` says why.

The CSV is a ``Path`` input, so its content is part of the nodes' keys. Checkpoints go to
``$FLOWDECO_STORE`` if it is set, else to a temporary directory.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import anyio

import flowdeco as fd

REGIONS = ("north", "south", "east", "west")
PRODUCTS = {"tea": 4.5, "mug": 12.0, "kettle": 39.0}


@fd.node
def raw(source: Path) -> list[dict[str, str]]:
    """Fetch: the CSV's rows as text."""
    with source.open(newline="") as f:
        return list(csv.DictReader(f))


@fd.node
def validated(raw: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Keep rows with a known region and product and a positive quantity, typed."""
    rows = []
    for row in raw:
        units = int(row["units"])
        if row["region"] in REGIONS and row["product"] in PRODUCTS and units > 0:
            rows.append({"region": row["region"], "product": row["product"], "units": units})
    return rows


@fd.node
def transformed(validated: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Revenue per row (in parallel with the enrichment)."""
    return [{**row, "revenue": row["units"] * PRODUCTS[row["product"]]} for row in validated]


@fd.node
async def enriched(validated: list[dict[str, Any]]) -> dict[str, str]:
    """Each region's manager, from a directory service (async, in parallel)."""
    await anyio.sleep(0.05)  # stands in for the service's round trip
    return {
        region: f"{region}-lead@example.com" for region in sorted({r["region"] for r in validated})
    }


@fd.node
def aggregated(transformed: list[dict[str, Any]], enriched: dict[str, str]) -> dict[str, Any]:
    """Revenue and units per region, with the region's manager."""
    totals: dict[str, Any] = {}
    for row in transformed:
        region = totals.setdefault(row["region"], {"revenue": 0.0, "units": 0})
        region["revenue"] += row["revenue"]
        region["units"] += row["units"]
    return {name: {**values, "manager": enriched[name]} for name, values in sorted(totals.items())}


@fd.node
def stored(aggregated: dict[str, Any], out_dir: str) -> Path:
    """Store the aggregate as JSON; the returned ``Path`` is versioned by its content.

    ``out_dir`` is a ``str``: a folder's name. As a ``Path`` its content would count, and
    the file written here would change it, so the node would run again every time.
    """
    target = Path(out_dir) / "revenue_by_region.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(aggregated, indent=2))
    return target


@fd.node(run_in="inline")
def report(aggregated: dict[str, Any], stored: Path) -> str:
    """A printable summary."""
    lines = [
        f"  {name:<6} {v['units']:>5} units {v['revenue']:>10.2f} EUR"
        for name, v in aggregated.items()
    ]
    return "\n".join([*lines, f"  written to {stored.name}"])


pipeline = fd.Pipeline.from_namespace(globals(), name="data_pipeline")


def write_sales(path: Path) -> None:
    """200 rows of made-up sales (the same every time), and one invalid row at the end."""
    rng = random.Random(7)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["region", "product", "units"])
        for _ in range(200):
            writer.writerow([rng.choice(REGIONS), rng.choice(list(PRODUCTS)), rng.randint(1, 9)])
        writer.writerow(["nowhere", "tea", "-1"])


def edit_last_row(path: Path, old: str, new: str) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = lines[-1].replace(old, new)
    path.write_text("\n".join(lines) + "\n")


def run(label: str, inputs: dict[str, Any], store: str) -> fd.RunResult:
    result = pipeline.run(inputs=inputs, store=store)
    counts = ", ".join(f"{n} {status}" for status, n in result.counts().items())
    print(f"{label}: {counts}")
    return result


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="flowdeco-data-") as scratch:
        folder = Path(scratch)
        store = os.environ.get("FLOWDECO_STORE") or str(folder / "store")
        source = folder / "sales.csv"
        write_sales(source)
        inputs = {"source": source, "out_dir": str(folder / "out")}

        cold = run("cold run", inputs, store)
        print(cold["report"])
        run("warm run", inputs, store)

        edit_last_row(source, "-1", "-2")  # a row validation drops either way
        cutoff = run("after editing a dropped row", inputs, store)
        for name in ("raw", "validated", "transformed", "report"):
            print(f"  {name}: {cutoff.explain(name)}")

        edit_last_row(source, "nowhere,tea,-2", "north,kettle,5")  # now a valid row
        edited = run("after editing a valid row", inputs, store)
        for name in ("raw", "enriched", "aggregated", "report"):
            print(f"  {name}: {edited.explain(name)}")
        print(edited["report"])
        return 0 if edited.ok else 1


if __name__ == "__main__":
    sys.exit(main())
