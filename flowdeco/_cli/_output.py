"""What commands print: aligned tables, sizes, times, JSON; and the error that is the user's."""

from __future__ import annotations

import datetime as dt
import enum
import json
import os
import time
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

__all__ = ["UsageError", "ago", "dump", "duration", "listing", "plural", "size", "table", "utc"]


class UsageError(Exception):
    """The command cannot do what it was asked; the message is one line for stderr, and the
    process exits with status 2."""


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Collection[int] = ()) -> str:
    """Rows under a header, columns padded to their widest cell (``right``: right-aligned);
    the last column is left ragged."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        cells[-1] = row[-1].rjust(widths[-1]) if len(row) - 1 in right else row[-1]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def dump(data: object) -> str:
    """``data`` as JSON: paths, dates and enums as text, sets as lists, anything else as its
    ``repr``, so that every value a node returns can be shown."""
    return json.dumps(data, indent=2, default=_plain, ensure_ascii=False)


def _plain(value: object) -> object:
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, PurePath):
        return os.fspath(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return value.decode("utf-8", "replace")
    return repr(value)


def size(n: float) -> str:
    """A byte count for people: ``512 B``, ``1.2 kB``, ``34 MB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" or abs(n) >= 100 else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def duration(seconds: float | None) -> str:
    """Seconds for people: ``0.4 ms``, ``12 ms``, ``3.21 s``, ``4 min 5 s``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 0.001:
        return f"{seconds * 1000:.2f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def utc(stamp: float | None) -> str:
    """A time since the epoch as ``2026-12-03 10:15:02 UTC`` (what explain() says too)."""
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(stamp))


def ago(stamp: float | None, now: float | None = None) -> str:
    """How long ago ``stamp`` was: ``12 s``, ``5 min``, ``3 h``, ``2 d``."""
    if stamp is None:
        return "-"
    seconds = max(0.0, (time.time() if now is None else now) - stamp)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds // length:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def plural(n: int, word: str) -> str:
    """``1 checkpoint``, ``2 checkpoints``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def listing(items: Sequence[Any], limit: int = 5) -> str:
    """Items joined by commas, the rest counted: ``a, b, c and 4 more``."""
    shown = ", ".join(str(item) for item in items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown
