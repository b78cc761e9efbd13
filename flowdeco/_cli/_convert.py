"""Run inputs from the command line: text (or JSON values) converted by the annotation of
the parameter that reads them.

``-i qty=3`` reaches ``def total(qty: int)`` as ``3``: each input takes the annotation of
the first node parameter that reads it (a node's value, overridden by name, takes the node's
return annotation). An unannotated parameter gets the text, or the JSON value, as it is.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import types
import typing
from collections import abc
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from ._output import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from flowdeco import Pipeline

__all__ = ["annotation_of", "convert"]

_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})
_NONE = frozenset({"none", "null"})
_UNIONS = (Union, types.UnionType)
_SEQUENCES: Mapping[object, type] = {
    list: list,
    abc.Sequence: list,
    abc.MutableSequence: list,
    abc.Collection: list,
    abc.Iterable: list,
    set: set,
    abc.Set: set,
    abc.MutableSet: set,
    frozenset: frozenset,
}
_MAPPINGS = frozenset({dict, abc.Mapping, abc.MutableMapping})
_NO_ANNOTATION = object()


class _Unresolved:
    """An annotation written as text that names nothing the function's module binds."""

    def __init__(self, text: str, error: Exception) -> None:
        self.text = text
        self.error = error


class _Bad(Exception):
    """A value that does not fit its annotation; the message says why."""


def annotation_of(pipeline: Pipeline, name: str) -> object:
    """What the value of input ``name`` should be: the annotation of the first parameter
    reading it, or for a node's name, that node's return annotation; ``Any`` if none."""
    spec = pipeline.nodes.get(name)
    if spec is not None:
        found = _resolve(spec.func, "return")
        return Any if found is _NO_ANNOTATION else found
    for spec in pipeline.nodes.values():
        for param in spec.params:
            if param.source == name:
                found = _resolve(spec.func, param.name)
                if found is not _NO_ANNOTATION:
                    return found
    return Any


def _resolve(func: Callable[..., Any], name: str) -> object:
    """The annotation of ``func``'s parameter ``name`` (or ``"return"``), evaluated if it is
    text; one that cannot be evaluated is kept as :class:`_Unresolved`."""
    raw = getattr(func, "__annotations__", {}).get(name, _NO_ANNOTATION)
    if not isinstance(raw, str):
        return raw
    holder = types.SimpleNamespace(__annotations__={name: raw})
    try:
        return typing.get_type_hints(
            holder, globalns=getattr(func, "__globals__", {}), include_extras=True
        )[name]
    except Exception as exc:  # noqa: BLE001 - whatever evaluating the user's text raises
        return _Unresolved(raw, exc)


def convert(name: str, value: object, annotation: object) -> object:
    """``value`` (text from ``-i``, or a JSON value) as ``annotation`` asks.

    Raises:
        UsageError: It does not fit; the message names the input and says why.
    """
    try:
        return _convert(value, annotation)
    except _Bad as exc:
        raise UsageError(f"input {name!r}: {exc}") from None


def _convert(value: object, tp: object) -> object:
    if isinstance(tp, _Unresolved):
        raise _Bad(
            f"its annotation {tp.text!r} cannot be evaluated ({type(tp.error).__name__}: "
            f"{tp.error}), so {_show(value)} cannot be converted"
        )
    if tp is Any or tp is object:
        return value
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return _convert(value, args[0])
    if origin in _UNIONS:
        return _union(value, args)
    if tp is None or tp is type(None):
        if _is_none(value):
            return None
        raise _Bad(f"{_show(value)} is not None")
    if origin is Literal:
        for option in args:
            if value == option or (isinstance(value, str) and value == str(option)):
                return option
        raise _Bad(f"{_show(value)} is not one of {', '.join(map(repr, args))}")
    if tp in _SEQUENCES or tp is tuple:
        origin = tp
    if origin is tuple:
        return _tuple(value, args)
    if origin in _SEQUENCES:
        kind = _SEQUENCES[origin]
        item = args[0] if args else Any
        return kind(_convert(v, item) for v in _items(value))
    if tp in _MAPPINGS or origin in _MAPPINGS:
        return _mapping(value, args)
    if isinstance(tp, type):
        return _scalar(value, tp)
    return value  # a TypeVar, a Protocol...: nothing to convert to


def _union(value: object, members: tuple[object, ...]) -> object:
    if type(None) in members and _is_none(value):
        return None
    for option in members:
        if option is not type(None):
            fits, converted = _attempt(value, option)
            if fits:
                return converted
    raise _Bad(f"{_show(value)} is none of {' | '.join(_type_name(m) for m in members)}")


def _attempt(value: object, tp: object) -> tuple[bool, object]:
    """Whether ``value`` converts to ``tp``, and to what."""
    try:
        return True, _convert(value, tp)
    except _Bad:
        return False, None


def _tuple(value: object, args: tuple[object, ...]) -> tuple[object, ...]:
    items = _items(value)
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = args[0] if args else Any
        return tuple(_convert(v, item) for v in items)
    if len(items) != len(args):
        raise _Bad(f"{_show(value)} has {len(items)} items, expected {len(args)}")
    return tuple(_convert(v, t) for v, t in zip(items, args, strict=True))


def _items(value: object) -> list[object]:
    """A list's items: a JSON list (in JSON, or as text starting with ``[``), or text split
    at commas (``1,2,3``; empty text is no items)."""
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            value = _json(value)
        else:
            return [part.strip() for part in value.split(",")] if value.strip() else []
    if isinstance(value, list):
        return value
    raise _Bad(f"{_show(value)} is not a list (write 1,2,3 or [1, 2, 3])")


def _mapping(value: object, args: tuple[object, ...]) -> dict[object, object]:
    if isinstance(value, str):
        value = _json(value)
    if not isinstance(value, dict):
        raise _Bad(f"{_show(value)} is not a JSON object")
    key_type, item_type = args if len(args) == 2 else (Any, Any)
    return {_convert(k, key_type): _convert(v, item_type) for k, v in value.items()}


def _scalar(value: object, tp: type) -> object:
    text = value if isinstance(value, str) else None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.strip().lower() in _TRUE | _FALSE:
            return text.strip().lower() in _TRUE
        raise _Bad(f"{_show(value)} is not a bool (write true or false)")
    if tp is int or tp is float:
        if isinstance(value, bool):
            raise _Bad(f"{_show(value)} is not {_article(tp)}")
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if text is not None:
            try:
                return tp(text)
            except ValueError:
                pass
        raise _Bad(f"{_show(value)} is not {_article(tp)}")
    if tp is str:
        if text is None:
            raise _Bad(f"{_show(value)} is not a string")
        return text
    if tp is bytes and text is not None:
        return text.encode()
    if issubclass(tp, enum.Enum):
        return _enum(value, tp)
    if tp in (dt.datetime, dt.date, dt.time) and text is not None:
        try:
            return tp.fromisoformat(text)
        except ValueError:
            raise _Bad(
                f"{_show(value)} is not {_article(tp)} (write ISO 8601, such as "
                f"{_ISO_EXAMPLES[tp]})"
            ) from None
    if isinstance(value, tp):
        return value
    if text is not None and (issubclass(tp, str) or not issubclass(tp, abc.Collection)):
        make: Callable[[str], object] = tp  # Path, Decimal, UUID: a class made from text
        try:
            return make(text)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise _Bad(f"{_show(value)} is not {_article(tp)} ({exc})") from None
    raise _Bad(f"{_show(value)} cannot be made {_article(tp)}")


_ISO_EXAMPLES: Mapping[object, str] = {
    dt.datetime: "2026-12-03T10:15:00",
    dt.date: "2026-12-03",
    dt.time: "10:15:00",
}


def _enum(value: object, tp: type[enum.Enum]) -> enum.Enum:
    for member in tp:
        if value in (member.name, member.value) or (
            isinstance(value, str) and value == str(member.value)
        ):
            return member
    names = ", ".join(m.name for m in tp)
    raise _Bad(f"{_show(value)} is not a {tp.__name__} (one of {names})")


def _json(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise _Bad(f"{_show(text)} is not valid JSON ({exc})") from None


def _is_none(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def _show(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:55] + "...'"


def _type_name(tp: object) -> str:
    if tp is type(None):
        return "None"
    return tp.__name__ if isinstance(tp, type) else str(tp).replace("typing.", "")


def _article(tp: type) -> str:
    name = _type_name(tp)
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"
