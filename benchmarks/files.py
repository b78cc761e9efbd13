"""What versioning a file by its content costs: hashing it once, and not hashing it again.

Run ``python benchmarks/files.py [--quick] [--dir PATH] [--append docs/performance.md]``.
Prints the environment and a markdown report to stdout, progress to stderr.

- **First version**: ``path_version`` of a 100 MiB file (10 MiB with ``--quick``) whose
  stat is not cached yet (its mtime is moved before each repeat), cache entry written,
  against the floor of reading the file in 1 MiB chunks and feeding them to
  ``hashlib.blake2b`` by hand, interleaved repeat by repeat. Target: <= 1.1x the floor,
  a hash at the speed of reading.
- **Unchanged, same process**: a call that finds the file's stat unchanged in the
  in-process cache, against ``os.stat`` alone and ``os.path.abspath`` + ``os.stat``.
- **Unchanged, new process**: the first call in a fresh interpreter, which finds the
  digest in the cache directory, then a call for a second such file; timed inside that
  process, so startup is left out.

The file (random bytes) is written in a temporary directory under ``--dir`` (default: the
working directory) and dated an hour back, out of the racy window. Having just been
written, it is in the page cache: the first version measures hashing, not the disk.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from overhead import Stat, environment, put_section
from tracing import timed

import flowdeco as fd
from flowdeco._core._filedigest import path_version

if TYPE_CHECKING:
    from collections.abc import Sequence

MIB = 1 << 20
CALLS = 10_000  # calls per timed repeat of a cache hit
HASH_TARGET = 1.1
HOUR_NS = 3600 * 10**9
MARKER = "<!-- benchmarks/files.py -->"
# Run in a fresh interpreter: version argv[1], then argv[2], with the cache in argv[3];
# print each version and the seconds it took, then the bytes hashed.
CHILD = """
import sys, time
from pathlib import Path
from flowdeco._core import _filedigest
cache = Path(sys.argv[3])
for path in sys.argv[1:3]:
    start = time.perf_counter()
    version = _filedigest.path_version(Path(path), cache)
    print(version, time.perf_counter() - start, end=" ")
print(_filedigest._hashed_bytes)
"""


def make_file(path: Path, mib: int) -> None:
    """``mib`` MiB of random bytes, dated an hour back so its digest may be cached."""
    with open(path, "wb") as f:
        f.writelines(os.urandom(MIB) for _ in range(mib))
    date(path, time.time_ns() - HOUR_NS)


def date(path: Path, mtime_ns: int) -> None:
    os.utime(path, ns=(mtime_ns, mtime_ns))


def floor(path: Path) -> str:
    """The version by hand: read in 1 MiB chunks, hash with blake2b."""
    hasher = hashlib.blake2b(digest_size=16)
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(MIB):
            hasher.update(chunk)
    return "f" + hasher.hexdigest()


@dataclass
class First:
    version: Stat  # µs per MiB
    floor: Stat

    @property
    def ratio(self) -> float:
        return self.version.median / self.floor.median


def measure_first(path: Path, cache: Path, mib: int, repeats: int) -> First:
    """``path_version`` of a file whose stat changed, against reading and hashing by hand."""
    expected = floor(path)
    versions: list[float] = []
    by_hand: list[float] = []
    answers: list[str] = []
    steps = [
        (versions, lambda: answers.append(path_version(path, cache))),
        (by_hand, lambda: answers.append(floor(path))),
    ]
    mtime_ns = path.stat().st_mtime_ns
    for r in range(repeats):
        date(path, mtime_ns + r + 1)  # a new stat: the next call hashes the file
        for times, call in steps if r % 2 else steps[::-1]:  # alternate which goes first
            times.append(timed(call))
    assert answers == [expected] * 2 * repeats, answers
    return First(Stat(versions, mib), Stat(by_hand, mib))


def measure_hit(path: Path, cache: Path, repeats: int) -> dict[str, Stat]:
    """A call that finds the file's stat unchanged, against its system-level steps."""
    version = path_version(path, cache)
    assert path_version(path, cache) == version
    variants = {
        "version": lambda: [path_version(path, cache) for _ in range(CALLS)],
        "stat": lambda: [os.stat(path) for _ in range(CALLS)],
        "abspath + stat": lambda: [os.stat(os.path.abspath(path)) for _ in range(CALLS)],
    }
    times: dict[str, list[float]] = {key: [] for key in variants}
    for _ in range(repeats):
        for key, call in variants.items():
            times[key].append(timed(call))
    return {key: Stat(ts, CALLS) for key, ts in times.items()}


def measure_new_process(path: Path, second: Path, cache: Path, repeats: int) -> tuple[Stat, Stat]:
    """The first call in a fresh interpreter, with the digest in the cache directory, and
    the call for a second file after it."""
    versions = [path_version(path, cache), path_version(second, cache)]
    env = dict(os.environ)  # the child imports the flowdeco measured here
    root = str(Path(fd.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    first, then = [], []
    for _ in range(repeats):
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(second), str(cache)],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        )
        version, seconds, second_version, second_seconds, hashed = done.stdout.split()
        assert [version, second_version, hashed] == [*versions, "0"], done.stdout
        first.append(float(seconds))
        then.append(float(second_seconds))
    return Stat(first, 1), Stat(then, 1)


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def report(
    first: First, hit: dict[str, Stat], new: tuple[Stat, Stat], mib: int, repeats: int
) -> str:
    def speed(stat: Stat) -> str:
        return f"{1e6 / stat.median:,.0f}"

    lines = [
        f"## First version ({mib} MiB file, µs per MiB, median (min-max) of {repeats})",
        "",
        (
            "| path_version | floor: read + blake2b by hand | ratio | "
            f"target <= {HASH_TARGET}x | MiB/s (path_version) | MiB/s (floor) |"
        ),
        "|---:|---:|---:|---|---:|---:|",
        (
            f"| {first.version.cell()} | {first.floor.cell()} | {first.ratio:.2f}x "
            f"| {verdict(first.ratio <= HASH_TARGET)} | {speed(first.version)} "
            f"| {speed(first.floor)} |"
        ),
        "",
        (
            f"## Unchanged file, same process (µs per call, {CALLS:,} calls per repeat, "
            f"median (min-max) of {repeats})"
        ),
        "",
        "| path_version (stat cache hit) | os.stat | os.path.abspath + os.stat |",
        "|---:|---:|---:|",
        f"| {hit['version'].cell()} | {hit['stat'].cell()} | {hit['abspath + stat'].cell()} |",
        "",
        (
            "## Unchanged files, new process (µs per call, cache directory on, 0 bytes "
            f"hashed, median (min-max) of {repeats})"
        ),
        "",
        "| first call in the process | then another file |",
        "|---:|---:|",
        f"| {new[0].cell()} | {new[1].cell()} |",
    ]
    return "\n".join(lines) + NOTES


NOTES = """

Notes:

- The file is in the page cache, having just been written: the first version measures
  the hash and the reads from memory, not a disk. A file read from a cold disk costs the
  disk's speed on top, in both columns alike.
- A call whose stat is unchanged makes the path absolute, stats the file once and looks
  the result up. Resolving links first (`os.path.realpath`, an `lstat` per component)
  cost 12 µs more and is not needed: the stat's inode and device tell a link that now
  points elsewhere.
- In a new process, a call also reads the file's cache entry (open, read, msgpack); the
  first one also runs its code for the first time in that interpreter, which is most of
  its figure: the second file's call shows the cost once the code has run.
"""


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 10 MiB file, fewer repeats")
    parser.add_argument("--dir", default=".", help="where the temporary file goes")
    parser.add_argument("--append", metavar="PATH", help="put the report in this markdown file")
    args = parser.parse_args(argv)
    mib, repeats = (10, 3) if args.quick else (100, 9)

    print("## Environment\n")
    env = environment()
    for key, value in env.items():
        print(f"- {key}: {value}")
    print(flush=True)
    with tempfile.TemporaryDirectory(prefix="flowdeco-bench-", dir=args.dir) as base:
        base_dir = Path(base).resolve()
        path, second, cache = base_dir / "data.bin", base_dir / "second.bin", base_dir / "cache"
        make_file(path, mib)
        make_file(second, 1)
        start = time.perf_counter()
        first = measure_first(path, cache, mib, repeats)
        print(f"  first version: {time.perf_counter() - start:.1f} s", file=sys.stderr)
        hit = measure_hit(path, cache, repeats)
        new = measure_new_process(path, second, cache, repeats)
        print(f"  all: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    text = report(first, hit, new, mib, repeats)
    print(text)
    if args.append:
        intro = (
            "From `python benchmarks/files.py --append docs/performance.md`: the cost of "
            "versioning a `pathlib.Path` by its content.\n\n"
        )
        put_section(Path(args.append), MARKER, "File versions", intro + text, env)


if __name__ == "__main__":
    main()
