"""Sizes (``1GB``, ``500MiB``) and ages (``7d``, ``1h30m``) as options give them."""

from __future__ import annotations

import argparse
import re

__all__ = ["age", "byte_size"]

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?i?)b?\s*$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4}
_AGE_PART = re.compile(r"(\d+(?:\.\d*)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def byte_size(text: str) -> int:
    """``1GB`` and ``1G`` are 10**9 bytes, ``1GiB`` 2**30; a plain number is bytes.

    Raises:
        argparse.ArgumentTypeError: ``text`` is no size.
    """
    found = _SIZE.match(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size: write a number and a unit, such as 500MB, 1GB or 2GiB"
        )
    number, unit = float(found.group(1)), found.group(2).lower()
    base = 1024 if unit.endswith("i") else 1000
    return int(number * base ** _POWERS[unit.rstrip("i")])


def age(text: str) -> float:
    """Seconds in ``7d``, ``12h``, ``1h30m``, ``90s`` or ``2w``; ``0`` alone is zero.

    Raises:
        argparse.ArgumentTypeError: ``text`` is no age.
    """
    compact = text.strip().replace(" ", "")
    if compact == "0":
        return 0.0
    parts = _AGE_PART.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: write a number and a unit (s, m, h, d, w), such as 7d, "
            "12h or 1h30m"
        )
    return sum(float(n) * _SECONDS[u.lower()] for n, u in parts)
