"""msgpack encoding of checkpointed values, with ext types so each value comes back as it was.

Round-trip with the same type and value: None, bool, int (any size), float (nan, inf, -0.0),
complex, str, bytes, bytearray, list, tuple, dict (any hashable keys, in order), set,
frozenset, datetime, date, time, timedelta, Decimal, UUID, the four pathlib path classes,
numpy arrays and scalars of plain dtypes, ``msgpack.Timestamp``, pandas DataFrames, Series,
indexes and scalars, polars DataFrames and Series, pyarrow Tables and RecordBatches (through
Arrow IPC, with pyarrow installed: see ``_frames``), and classes given to
:func:`register_type`. Only exact types: a subclass of one of these (a str subclass, an
unregistered IntEnum or named tuple, an OrderedDict, a DataFrame subclass) is refused, never
stored as its base.
Time zones: a ``ZoneInfo`` keeps its key; any other tzinfo comes back as a ``datetime.timezone``
of the UTC offset it gave (the name of a fixed ``timezone`` is not kept). A concrete path
written on another system comes back as the pure path of its flavour. Lists, tuples, dicts and
sets nest at most 511 levels deep.

Decoding never unpickles or imports anything but numpy, pyarrow, pandas and polars (only what
the data names), and only builds the types above; malformed or hostile bytes raise
:class:`~flowdeco.errors.CorruptDataError`. A refusal says what to do, in a form that works as
written for that value: the :func:`register_type` call that stores it, a conversion, or
``checkpoint=False``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import gc
import importlib
import itertools
import math
import operator
import pathlib
import reprlib
import sys
import threading
import uuid
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo

import attrs
import msgpack  # type: ignore[import-untyped]

from . import _frames
from ._errors import ConfigurationError, CorruptDataError, UnsupportedValueError, describe

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["concrete_paths", "decode", "encode", "encode_parts", "names_files", "register_type"]

T = TypeVar("T")

# Type tags, written as the first item of an array: [tag, *parts]. Part of the stored format:
# never renumber. Registered classes share one code; their tag's data is the class's name.
_TAGS = [msgpack.ExtType(code, b"") for code in range(1, 16)]
(_TUPLE, _SET, _FROZENSET, _BIGINT, _BYTEARRAY, _COMPLEX, _DATETIME, _DATE, _TIME, _TIMEDELTA,
 _DECIMAL, _UUID, _PATH, _NDARRAY, _NPSCALAR) = _TAGS  # fmt: skip
_REGISTERED = 16
_FRAME = msgpack.ExtType(17, b"")  # a DataFrame-like value: [tag, its description]
# A large buffer (a numpy array's bytes) stored after the packed value instead of inside it,
# so that it is neither copied to be packed nor to be unpacked: the ext's data is its length.
# A body holding any starts with 0xc1, a byte msgpack never uses, then the packed value's
# length (8 bytes) and the packed value; each buffer follows at a multiple of 64 bytes.
_BUFFER = 18
_LAYOUT = b"\xc1"
_LAYOUT_HEAD = 9
_ALIGN = 64
_OUT_OF_BAND = 1 << 16  # buffers at least this large go out of band

# Deepest nesting of lists, tuples, dicts and sets encoded: what msgpack's pure-Python packer
# takes (its C packer and parser take 1024 levels).
_MAX_DEPTH = 511
_INT_MIN, _UINT_MAX = -(2**63), 2**64 - 1
_MICROSECOND = dt.timedelta(microseconds=1)
_PATHS = (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath)
# Types msgpack packs as they are and decodes to the same type.
_NATIVE = frozenset({str, float, bool, type(None), bytes, msgpack.Timestamp})
_CONTAINERS = frozenset({list, dict, tuple, set, frozenset})
_PLAIN = _NATIVE | _CONTAINERS | {int}
# Types msgpack packs itself, even with strict_types, but decodes as something else.
_LOSSY = frozenset({bytearray, memoryview, msgpack.ExtType})
_BASES = (str, int, float, complex, bytes, bytearray, tuple, list, dict, set, frozenset,
          dt.date, dt.time, dt.timedelta, decimal.Decimal, uuid.UUID, pathlib.PurePath)  # fmt: skip
_FIX = "set checkpoint=False on the node"
_TOO_DEEP = f"is nested more than {_MAX_DEPTH} levels deep (does it contain itself?); {_FIX}"
_PROBLEMS = {
    memoryview: f"is a memoryview; store bytes(x) instead of x, or {_FIX}",
    msgpack.ExtType: f"is a msgpack.ExtType, which would be read as a flowdeco tag; {_FIX}",
}


class _Refusal(Exception):
    """A value the codec cannot carry; ``segments`` collects its path, innermost first."""

    def __init__(self, value: object, problem: str | None = None) -> None:
        super().__init__()
        self.value_type = type(value)
        self.problem = problem or _PROBLEMS.get(type(value)) or _cannot_store(value)
        self.segments: list[str] = []


def _cannot_store(value: object) -> str:
    cls = type(value)
    name = cls.__qualname__
    if cls.__module__ != "builtins":
        name = f"{cls.__module__}.{name}"
    what = f"has type {name} ({_short_repr(value)})"
    frame = _frames.frame_base(value)
    if frame is not None:
        return (
            f"{what}, a subclass of {frame}, refused rather than stored as a plain one; store "
            f"{frame}(x) instead of x, or {_FIX}"
        )
    base = next((b for b in _BASES if isinstance(value, b)), None)
    if base is None:
        why = "which flowdeco cannot store"
    else:
        why = (
            f"a subclass of {base.__name__}, refused rather than stored as a plain {base.__name__}"
        )
    call = _registration(value, base)
    if call is not None:
        return f"{what}, {why}; call {call}, or {_FIX}"
    if base in _CONVERSIONS:
        return f"{what}, {why}; store {_CONVERSIONS[base][0]}(x) instead of x, or {_FIX}"
    return f"{what}, {why}; {_FIX}"


# A builtin base: how a subclass's instance becomes a plain one, and the methods that must not
# be overridden for that conversion to copy it as it is.
_CONVERSIONS: dict[type | None, tuple[str, tuple[str, ...]]] = {
    str: ("str", ("__str__",)), int: ("int", ("__int__", "__index__")),
    float: ("float", ("__float__",)), complex: ("complex", ("__complex__",)),
    bytes: ("bytes", ("__bytes__",)), bytearray: ("bytearray", ("__iter__",)),
    tuple: ("tuple", ("__iter__",)), list: ("list", ("__iter__",)),
    dict: ("dict", ("__iter__", "keys", "__getitem__")), set: ("set", ("__iter__",)),
    frozenset: ("frozenset", ("__iter__",)), decimal.Decimal: ("decimal.Decimal", ("__str__",)),
}  # fmt: skip
# How to fill an instance made by the base's __new__, for bases whose value __init__ sets.
_FILL: dict[type, str] = {bytearray: "extend", list: "extend", dict: "update", set: "update"}
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class defined in Python, not in C


def _registration(value: object, base: type | None) -> str | None:
    """The ``register_type`` call that stores every instance of ``value``'s class exactly."""
    cls = type(value)
    name = cls.__name__
    try:
        _field_functions(cls)
    except ConfigurationError:
        pass
    else:
        return f"flowdeco.register_type({name})"
    if cls in (collections.OrderedDict, collections.Counter):
        return f"flowdeco.register_type({name}, encode=dict, decode={name})"
    own = cls.__mro__[: cls.__mro__.index(base) if base else -1]
    if not cls.__flags__ & _HEAP_TYPE or any(vars(k).get("__slots__") for k in own):
        return None  # built in C, or state in slots: no one-line form is sure to keep it
    attributes = hasattr(value, "__dict__")
    if base is None:
        if cls.__new__ is not object.__new__ or not attributes:
            return None
        return (
            f"flowdeco.register_type({name}, encode=vars, decode=lambda state: "
            f"vars(obj := object.__new__({name})).update(state) or obj)"
        )
    if base not in _CONVERSIONS:
        return None
    plain, methods = _CONVERSIONS[base]
    if any(getattr(cls, m, None) is not getattr(base, m, None) for m in methods):
        return None
    custom = any("__new__" in vars(k) or "__init__" in vars(k) for k in own)
    fill = _FILL.get(base)
    if custom and fill:  # bypass __init__: make an empty one, fill it as the base does
        new, part = f"{plain}.__new__({name})", "state[0]" if attributes else "state"
        fill_in = f"{plain}.{fill}(obj, {part}) or obj"
        decode = (
            f"lambda state: vars(obj := {new}).update(state[1]) or {fill_in}"
            if attributes
            else f"lambda state: {plain}.{fill}(obj := {new}, state) or obj"
        )
    else:

        def rebuild(state: str) -> str:
            return f"{plain}.__new__({name}, {state})" if custom else f"{name}({state})"

        decode = name if not custom else f"lambda state: {rebuild('state')}"
        if attributes:
            decode = f"lambda state: vars(obj := {rebuild('state[0]')}).update(state[1]) or obj"
    encode = f"lambda v: ({plain}(v), vars(v))" if attributes else plain
    return f"flowdeco.register_type({name}, encode={encode}, decode={decode})"


def _short_repr(value: object) -> str:
    try:
        return reprlib.repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not hide the real message
        return f"<{type(value).__name__} object>"


@attrs.frozen
class _Entry:
    """How a registered class is encoded."""

    head: Any  # msgpack.ExtType(_REGISTERED, name)
    encode: Callable[[Any], Any]
    fields: bool  # the state is a dict of fields: error paths say .name


class _Mark:
    """What a tag decodes to, until the array it heads is complete and ``build`` replaces it."""

    __slots__ = ("build", "name")

    def __init__(self, name: str, build: Callable[[list[Any]], Any]) -> None:
        self.name = name
        self.build = build


_by_type: dict[type, _Entry] = {}
_by_name: dict[str, _Mark] = {}


def register_type(
    cls: type[T],
    encode: Callable[[T], Any] | None = None,
    decode: Callable[[Any], T] | None = None,
    *,
    name: str | None = None,
) -> type[T]:
    """Let checkpoints carry instances of ``cls``; also usable as a class decorator.

    attrs classes, dataclasses and named tuples need no functions: their init fields are stored
    by name and passed back to the constructor. Enums need none either: members are stored by
    name (Flag members by value). Other classes pass ``encode`` (an instance to a value this
    codec carries) and ``decode`` (the inverse). The data names the class ``name``, by default
    ``module.qualname``, so another process that registered the class decodes it; registering
    a name again replaces the class it decodes to (a notebook cell run twice).

    Returns:
        ``cls``.

    Raises:
        ConfigurationError: ``cls`` is not a class, is stored without registering, or needs
            ``encode`` and ``decode``; ``encode`` or ``decode`` is not a function, or ``name``
            is not a non-empty string.
    """
    if not isinstance(cls, type):
        raise ConfigurationError(f"register_type() takes a class, not {cls!r}")
    if cls in _PLAIN or cls in _ENCODERS:
        raise ConfigurationError(f"{cls.__qualname__} values are stored without register_type()")
    if (encode is None) != (decode is None):
        raise ConfigurationError("register_type() needs both encode= and decode=, or neither")
    for option, function in (("encode", encode), ("decode", decode)):
        if function is not None and not callable(function):
            raise ConfigurationError(
                f"register_type({cls.__qualname__}, {option}=...) must be a function, "
                f"got {function!r}"
            )
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(
            f"register_type({cls.__qualname__}, name=...) must be a non-empty string (the "
            f"name the data carries), got {name!r}"
        )
    name = f"{cls.__module__}.{cls.__qualname__}" if name is None else name
    fields = False
    if encode is None or decode is None:
        encode, decode, fields = _field_functions(cls)
    _by_type[cls] = _Entry(msgpack.ExtType(_REGISTERED, name.encode()), encode, fields)
    _by_name[name] = _Mark(name, _registered_builder(name, decode))
    return cls


def _field_functions(cls: type[Any]) -> tuple[Callable[[Any], Any], Callable[[Any], Any], bool]:
    """encode and decode for an enum, or by fields (then True) for attrs, dataclass, namedtuple."""
    if issubclass(cls, enum.Flag):
        return (lambda member: member.value), cls, False
    if issubclass(cls, enum.Enum):
        return (lambda member: member.name), cls.__getitem__, False
    if attrs.has(cls):
        kwargs = {a.name: a.alias for a in attrs.fields(cls) if a.init}
    elif dataclasses.is_dataclass(cls):
        kwargs = {f.name: f.name for f in dataclasses.fields(cls) if f.init}
    elif issubclass(cls, tuple) and hasattr(cls, "_fields"):
        kwargs = {f: f for f in cls._fields}
    else:
        raise ConfigurationError(
            f"register_type({cls.__qualname__}) needs encode= and decode=: it is not an attrs "
            "class, a dataclass, a named tuple or an enum"
        )
    names = tuple(kwargs)
    return (
        lambda obj: {n: getattr(obj, n) for n in names},
        lambda state: cls(**{kwargs[n]: v for n, v in state.items()}),
        True,
    )


def _registered_builder(name: str, decode: Callable[[Any], Any]) -> Callable[[list[Any]], Any]:
    def build(items: list[Any]) -> Any:
        if len(items) != 2:
            raise CorruptDataError(f"malformed {name} in the data")
        try:
            return decode(items[1])
        except Exception as exc:
            raise CorruptDataError(
                f"cannot rebuild a {name} from the data ({type(exc).__name__}: {describe(exc)}); "
                "did the class change since it was written?"
            ) from exc

    return build


# --- encoding ---------------------------------------------------------------------------------


def encode(value: Any, *, node: str | None = None) -> bytes:
    """Pack ``value`` into bytes that :func:`decode` turns back into an equal value, same types.

    Args:
        value: what to pack.
        node: the node whose output this is, named in the error message.

    Raises:
        UnsupportedValueError: something inside ``value`` cannot be carried; the message says
            where (``node 'orders': orders[3]["when"]``), what it is and what to do.
    """
    parts = encode_parts(value, node=node)
    first = parts[0]
    return first if len(parts) == 1 and type(first) is bytes else b"".join(parts)


def encode_parts(value: Any, *, node: str | None = None) -> list[bytes | memoryview]:
    """:func:`encode`'s bytes in parts, to write one after the other: large buffers (a numpy
    array's) are views of the value's own memory, not copies. The value must not change
    until the parts are written.

    Raises:
        UnsupportedValueError: As :func:`encode`.
    """
    outer = getattr(_local, "buffers", None)
    buffers: list[memoryview] = []
    _local.buffers = buffers
    try:
        head = _pack(_lower(value, 0) if _needs_lowering(value) else value)
    except (_Refusal, ValueError, TypeError, OverflowError, RecursionError) as exc:
        failure = exc
    else:
        return _laid_out(head, buffers) if buffers else [head]
    finally:
        _local.buffers = outer
    raise _unsupported(value, failure, node)


def _laid_out(head: bytes, buffers: list[memoryview]) -> list[bytes | memoryview]:
    """The parts of a body holding out-of-band buffers: the layout mark, the packed value,
    then each buffer at a multiple of 64 bytes."""
    parts: list[bytes | memoryview] = [_LAYOUT + len(head).to_bytes(8, "big"), head]
    at = _LAYOUT_HEAD + len(head)
    for buffer in buffers:
        pad = -at % _ALIGN
        if pad:
            parts.append(bytes(pad))
        parts.append(buffer)
        at += pad + buffer.nbytes
    return parts


class _OutOfBand:
    """A buffer to store after the packed value; packed as a :data:`_BUFFER` ext."""

    __slots__ = ("view",)

    def __init__(self, view: memoryview) -> None:
        self.view = view


def _unsupported(value: Any, failure: BaseException, node: str | None) -> UnsupportedValueError:
    """The error for a ``value`` that failed to pack, saying where inside it and why."""
    # Slow path, for the message only: walk the value to find where the problem is.
    refusal = failure if isinstance(failure, _Refusal) else None
    try:
        _lower(value, 0)
    except _Refusal as found:
        refusal = found
    except RecursionError:
        pass
    if refusal is None:
        problem = f"cannot be packed ({type(failure).__name__}: {failure}); {_FIX}"
        error = UnsupportedValueError(type(value), problem, "", node)
        error.__cause__ = failure
        return error
    path = _join(refusal.segments[::-1])
    error = UnsupportedValueError(refusal.value_type, refusal.problem, path, node)
    error.__cause__ = refusal.__cause__
    return error


_local = threading.local()


def _pack(value: Any) -> bytes:
    # One packer per thread, reused: a third faster than a new one for small values.
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = msgpack.Packer(default=_default, strict_types=True)
    _local.packer = None  # an encode() nested in a user's encode function makes its own
    data: bytes = packer.pack(value)
    if len(data) <= 1 << 20:  # keep no large buffer alive
        _local.packer = packer
    return data


def _needs_lowering(value: object) -> bool:
    """Whether msgpack would pack something in ``value`` as another type, or it is too deep."""
    level = [value]
    for _ in range(_MAX_DEPTH + 1):
        kinds = set(map(type, level))
        if not kinds.isdisjoint(_LOSSY):
            return True
        if not kinds <= _PLAIN:  # other objects' referents are their class, __dict__...
            level = [x for x in level if type(x) in _CONTAINERS]
        level = gc.get_referents(*level)  # the items of containers; none for str, int...
        if not level:
            return False
    return True  # _lower refuses what is deeper, with its path


def _default(value: Any) -> Any:
    """The packer's hook for any value it does not pack itself."""
    if type(value) is _OutOfBand:
        buffers = getattr(_local, "buffers", None)
        if buffers is None:  # packed for another use (a set item's sort key): inline
            return value.view.tobytes()
        buffers.append(value.view)
        return msgpack.ExtType(_BUFFER, value.view.nbytes.to_bytes(8, "big"))
    packed = _reduce(value)
    if (packed[0].code == _REGISTERED or packed[0] is _FRAME) and _needs_lowering(packed[1]):
        packed[1] = _lower(packed[1], 0)
    return packed


def _reduce(value: Any) -> list[Any]:
    """``[tag, *parts]`` for a value msgpack does not pack itself, or a refusal."""
    cls = type(value)
    encoder = _ENCODERS.get(cls)
    if encoder is not None:
        return encoder(value)
    entry = _by_type.get(cls)
    if entry is not None:
        try:
            return [entry.head, entry.encode(value)]
        except Exception as exc:
            problem = f"could not be encoded: its encode function raised {type(exc).__name__}"
            fix = f"fix the encode function given to register_type({cls.__name__}), or {_FIX}"
            raise _Refusal(value, f"{problem}: {describe(exc)}; {fix}") from exc
    library = cls.__module__.partition(".")[0]
    if library == "numpy":
        return _reduce_numpy(value)
    if library in _frames.LIBRARIES:
        try:
            return [_FRAME, _stream_out_of_band(_frames.encode(value))]
        except _frames.Refused as refused:
            fix = f", or {_FIX}" if refused.advised else f"; {_FIX}"
            refusal = _Refusal(value, refused.problem + fix)
            refusal.segments.extend(map(_at_key, refused.column))
            raise refusal from refused.__cause__
    raise _Refusal(value)


def _stream_out_of_band(state: dict[str, Any]) -> dict[str, Any]:
    """A frame's description with its Arrow streams (views of Arrow's buffers) out of band
    if they are large, else copied in."""
    for name, stream in state.items():
        if type(stream) is memoryview:
            state[name] = _OutOfBand(stream) if stream.nbytes >= _OUT_OF_BAND else bytes(stream)
    return state


def _lower(value: Any, depth: int) -> Any:
    """The slow path: ``value`` with its parts reduced, or a refusal that knows its path.

    One Python frame per level, so that values _MAX_DEPTH deep fit the default recursion limit.
    """
    if depth > _MAX_DEPTH:
        raise _Refusal(value, _TOO_DEEP)
    cls = type(value)
    if cls in _NATIVE or cls is _OutOfBand or (cls is int and _INT_MIN <= value <= _UINT_MAX):
        return value
    packed: Any = None
    children: Iterable[tuple[Callable[[Any], str], Any, Any, bool]]
    # Dict keys and set items are hashable, so they hold no bytearray: check them, keep them.
    if cls is list:
        children = ((_at_index, i, x, True) for i, x in enumerate(value))
    elif cls is dict:
        pairs = (((_as_key, k, k, False), (_at_key, k, v, True)) for k, v in value.items())
        children = itertools.chain.from_iterable(pairs)
    else:
        packed = _reduce(value)
        if packed[0] in (_SET, _FROZENSET):
            children = ((_in_set, None, x, False) for x in value)
        elif packed[0] is _TUPLE:
            children = ((_at_index, i, x, True) for i, x in enumerate(value))
        elif _by_fields(packed[0], cls):
            children = ((_at_field, k, v, True) for k, v in packed[1].items())
            depth += 1  # the fields are in a dict in the tagged array
        else:
            children = ((_encoded, None, x, True) for x in packed[1:])
    out = []
    for segment, key, child, keep in children:
        try:
            lowered = _lower(child, depth + 1)
        except _Refusal as refusal:
            refusal.segments.append(segment(key))
            raise
        if keep:
            out.append(lowered)
    if cls is list:
        return out
    if cls is dict:
        return dict(zip(value, out, strict=True))
    if packed[0] in (_SET, _FROZENSET):
        return packed
    if _by_fields(packed[0], cls):
        return [packed[0], dict(zip(packed[1], out, strict=True))]
    return [packed[0], *out]


def _by_fields(tag: Any, cls: type) -> bool:
    """Whether the tagged array holds a dict of named parts: error paths say .name."""
    return tag is _FRAME or (tag.code == _REGISTERED and _by_type[cls].fields)


# How a path names the child of a container; called only to report an error.
_at_index, _at_field = "[{}]".format, ".{}".format
_in_set, _encoded = "<set item>".format, "<encoded>".format


def _at_key(key: object) -> str:
    if type(key) is str:
        return '["' + key.replace("\\", "\\\\").replace('"', '\\"') + '"]'
    return f"[{_short_repr(key)}]"


def _as_key(key: object) -> str:
    return f"<key {_short_repr(key)}>"


def _join(segments: list[str]) -> str:
    if len(segments) > 20:  # a value that contains itself
        segments = [*segments[:8], "...", *segments[-8:]]
    return "".join(segments)


def _tz(value: dt.datetime | dt.time, at: dt.datetime | None) -> int | str | None:
    """A ZoneInfo's key, or the UTC offset in microseconds of any other tzinfo."""
    tz = value.tzinfo
    if tz is None:
        return None
    if type(tz) is ZoneInfo and tz.key is not None:
        return tz.key
    offset = tz.utcoffset(at)
    if offset is None:
        raise _Refusal(value, f"has a tzinfo ({tz!r}) that gives no UTC offset; {_FIX}")
    return offset // _MICROSECOND


def _reduce_numpy(value: Any) -> list[Any]:
    np: Any = sys.modules["numpy"]  # loaded, since value is one of its objects
    if type(value) is np.ndarray or isinstance(value, np.generic):
        if not _plain_dtype(value.dtype):
            raise _Refusal(
                value,
                f"is a numpy value of dtype {value.dtype}, which holds Python objects or pointers "
                f"and cannot be stored without pickle; store x.tolist() instead of x (its items "
                f"are then stored one by one), or {_FIX}",
            )
        descr = np.lib.format.dtype_to_descr(value.dtype)
        order = "F" if value.flags.f_contiguous and not value.flags.c_contiguous else "C"
        tag = _NDARRAY if type(value) is np.ndarray else _NPSCALAR  # a scalar: shape []
        data: Any
        if tag is _NDARRAY and value.nbytes >= _OUT_OF_BAND:
            contiguous = value.flags.c_contiguous or value.flags.f_contiguous
            flat = value.reshape(-1, order=order) if contiguous else value.ravel(order)
            data = _OutOfBand(memoryview(flat.view(np.uint8)))  # its bytes, not a copy
        else:
            data = value.tobytes(order)
        return [tag, descr, list(value.shape), order, data]
    raise _Refusal(value)


def _plain_dtype(dtype: Any) -> bool:
    """Whether the raw bytes of this dtype are the whole value (no objects, no pointers)."""
    if dtype.fields is not None:
        return all(_plain_dtype(field[0]) for field in dtype.fields.values())
    if dtype.subdtype is not None:
        return _plain_dtype(dtype.subdtype[0])
    return dtype.kind in "biufcmMSUV" and not dtype.hasobject


def _set_items(value: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items in an order that does not depend on the process.

    Iteration order follows string hashes, which are salted per process: packed as iterated,
    an equal set would get other bytes (another data version, a cache miss) in every run.
    Items are ordered by their own packed bytes, which works for any mix of types.
    """
    try:
        return sorted(value, key=_item_bytes)
    except _Refusal as refusal:
        refusal.segments.append(_in_set(None))
        raise


def _item_bytes(item: Any) -> bytes:
    return _pack(_lower(item, 0) if _needs_lowering(item) else item)


def _encode_int(value: int) -> list[Any]:
    return [_BIGINT, value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)]


_DATE_PART = operator.attrgetter("year", "month", "day")
_TIME_PART = operator.attrgetter("hour", "minute", "second", "microsecond")
_ENCODERS: dict[type, Callable[[Any], list[Any]]] = {
    tuple: lambda v: [_TUPLE, *v],
    set: lambda v: [_SET, *_set_items(v)],
    frozenset: lambda v: [_FROZENSET, *_set_items(v)],
    int: _encode_int,  # only those beyond 64 bits reach here
    bytearray: lambda v: [_BYTEARRAY, bytes(v)],
    complex: lambda v: [_COMPLEX, v.real, v.imag],
    dt.datetime: lambda v: [_DATETIME, *_DATE_PART(v), *_TIME_PART(v), v.fold, _tz(v, v)],
    dt.date: lambda v: [_DATE, *_DATE_PART(v)],
    dt.time: lambda v: [_TIME, *_TIME_PART(v), v.fold, _tz(v, None)],
    dt.timedelta: lambda v: [_TIMEDELTA, v.days, v.seconds, v.microseconds],
    decimal.Decimal: lambda v: [_DECIMAL, str(v)],
    uuid.UUID: lambda v: [_UUID, v.bytes],
    **{cls: (lambda v: [_PATH, _PATHS.index(type(v)), str(v)]) for cls in _PATHS},
}


# --- decoding ---------------------------------------------------------------------------------


def decode(data: bytes | memoryview) -> Any:
    """Unpack bytes written by :func:`encode`; never runs code the bytes ask for.

    Lengths the data claims are capped by its size and nesting by msgpack's parser, so hostile
    bytes fail fast without taking memory.

    Raises:
        CorruptDataError: the bytes are not a value :func:`encode` wrote, or name a class not
            registered in this process.
    """
    head, decoding = _head(data)
    try:
        # msgpack caps every length the data claims by the data's size: lies fail fast.
        value = msgpack.unpackb(
            head, ext_hook=decoding.tag, list_hook=decoding.array, strict_map_key=False
        )
    except CorruptDataError:
        raise
    except Exception as exc:  # whatever the bytes make msgpack or a constructor raise
        raise CorruptDataError(
            f"the data cannot be decoded ({type(exc).__name__}: {exc}); it was not written "
            "by flowdeco's encode() or was damaged"
        ) from exc
    if decoding.tags != decoding.built:
        raise CorruptDataError("the data holds a type tag out of place; it was damaged")
    if decoding.buffers != decoding.used or (
        decoding.body is not None and decoding.at != len(data)
    ):
        raise CorruptDataError("the data's buffers do not match its value; it was damaged")
    return value


def _head(data: bytes | memoryview) -> tuple[bytes | memoryview, _Decoding]:
    """The packed value in ``data``, and the decoding that finds its out-of-band buffers."""
    if data[:1] != _LAYOUT:
        return data, _Decoding()
    view = memoryview(data)
    length = int.from_bytes(view[1:_LAYOUT_HEAD], "big")
    end = _LAYOUT_HEAD + length
    if len(view) < _LAYOUT_HEAD or end > len(view):
        raise CorruptDataError("the data's layout is truncated; it was damaged")
    return view[_LAYOUT_HEAD:end], _Decoding(view, end)


_PATH_TAG = msgpack.packb(_PATH)
_CONCRETE_PATHS = frozenset({2, 3})  # indexes of PosixPath and WindowsPath in _PATHS


def names_files(parts: list[bytes | memoryview]) -> bool:
    """Whether the value :func:`encode_parts` packed into ``parts`` names file system paths
    (its out-of-band buffers, raw array data, are not scanned)."""
    return bool(concrete_paths(parts[0] if len(parts) == 1 else parts[1]))


def concrete_paths(data: bytes | memoryview) -> list[pathlib.Path]:
    """The file system paths (not pure paths) in bytes :func:`encode` wrote, in order.

    A path names a file whose content a version must cover; a scan for the tag's bytes
    makes this free for the values that hold none.
    """
    if data[:1] == _LAYOUT:
        data = _head(data)[0]
    if type(data) is not bytes:
        data = bytes(data)
    if _PATH_TAG not in data:
        return []
    found: list[pathlib.Path] = []

    def array(items: list[Any]) -> list[Any]:
        if len(items) == 3 and items[0] == _PATH and items[1] in _CONCRETE_PATHS:
            found.append(pathlib.Path(items[2]))
        return items

    with contextlib.suppress(Exception):  # damaged bytes: decode() tells, not this
        msgpack.unpackb(data, list_hook=array, strict_map_key=False)
    return found


class _Decoding:
    """The hooks of one decode; counts tags so that one out of place is caught, and hands
    out the body's out-of-band buffers (views of it, in order)."""

    __slots__ = ("at", "body", "buffers", "built", "tags", "used")

    def __init__(self, body: memoryview | None = None, at: int = 0) -> None:
        self.tags = 0
        self.built = 0
        self.body = body
        self.at = at  # where the next buffer may start
        self.buffers = 0  # handed out
        self.used = 0  # taken by the values they belong to

    def tag(self, code: int, data: bytes) -> _Mark | memoryview:
        if code == _BUFFER:
            return self._buffer(data)
        self.tags += 1
        if code == _REGISTERED:
            name = data.decode()
            mark = _by_name.get(name)
            if mark is None:
                raise CorruptDataError(
                    f"the data holds a {name}, a class not registered in this process; "
                    "call flowdeco.register_type() on it before loading"
                )
            return mark
        mark = _MARKS.get(code)
        if mark is None or data:
            raise CorruptDataError(f"the data holds an unknown ext type {code}; it was damaged")
        return mark

    def _buffer(self, data: bytes) -> memoryview:
        body = self.body
        if body is None or len(data) != 8:
            raise CorruptDataError("the data holds a buffer out of place; it was damaged")
        start = self.at + (-self.at % _ALIGN)
        end = start + int.from_bytes(data, "big")
        if end > len(body):
            raise CorruptDataError("the data's buffers are truncated; it was damaged")
        self.at = end
        self.buffers += 1
        return body[start:end]

    def array(self, items: list[Any]) -> Any:
        if items and type(items[0]) is _Mark:
            self.built += 1
            last = items[-1]  # only a numpy array's data, or a frame's streams, may be buffers
            if type(last) is memoryview:
                self.used += 1
            elif items[0] is _FRAME_MARK and type(last) is dict:
                self.used += sum(type(part) is memoryview for part in last.values())
            return items[0].build(items)
        return items


def _parts(items: list[Any], *kinds: type | tuple[type, ...]) -> list[Any]:
    """The parts after the tag, checked to be exactly of ``kinds`` (no bool for int)."""
    parts = items[1:]
    if len(parts) != len(kinds) or not all(
        type(p) in (k if isinstance(k, tuple) else (k,)) for p, k in zip(parts, kinds, strict=True)
    ):
        raise CorruptDataError(f"malformed {items[0].name} in the data")
    return parts


_TZ, _INT8 = (type(None), int, str), (int,) * 8


def _tzinfo(state: int | str | None) -> dt.tzinfo | None:
    if state is None:
        return None
    if isinstance(state, str):
        return ZoneInfo(state)
    return dt.timezone(state * _MICROSECOND)


def _with_tz(cls: Callable[..., T], parts: list[Any]) -> T:
    """``cls(*fields, tzinfo, fold=fold)`` from ``[*fields, fold, tz]``."""
    return cls(*parts[:-2], _tzinfo(parts[-1]), fold=parts[-2])


def _build_path(items: list[Any]) -> pathlib.PurePath:
    kind, text = _parts(items, int, str)
    if not 0 <= kind < len(_PATHS):
        raise CorruptDataError("malformed path in the data")
    try:
        return _PATHS[kind](text)
    except NotImplementedError:  # a concrete path of another system: its pure flavour
        return _PATHS[kind - 2](text)


def _build_ndarray(items: list[Any], scalar: bool = False) -> Any:
    buffer = memoryview if not scalar and type(items[-1]) is memoryview else bytes
    descr, shape, order, buf = _parts(items, (str, list), list, str, buffer)
    try:
        np: Any = importlib.import_module("numpy")
    except ImportError as exc:
        raise CorruptDataError("the data holds numpy values: pip install numpy to load it") from exc
    dtype = np.lib.format.descr_to_dtype(descr)
    if (
        not _plain_dtype(dtype)
        or order not in ("C", "F")
        or len(shape) > (0 if scalar else 64)
        or not all(type(n) is int and n >= 0 for n in shape)
        or math.prod(shape) * dtype.itemsize != len(buf)
    ):
        raise CorruptDataError(f"malformed {items[0].name} in the data")
    if dtype.itemsize == 0:
        array = np.empty(shape, dtype, order=order)
    else:
        array = np.frombuffer(buf, dtype).reshape(shape, order=order)
        if not array.flags.writeable:  # bytes: a copy, writable as a computed array is
            array = array.copy(order="K")  # (a body read into a buffer of its own needs none)
    return array[()] if scalar else array


_MARKS: dict[int, _Mark] = {
    tag.code: _Mark(name, build)
    for tag, name, build in [
        (_TUPLE, "tuple", lambda items: tuple(items[1:])),
        (_SET, "set", lambda items: set(items[1:])),
        (_FROZENSET, "frozenset", lambda items: frozenset(items[1:])),
        (_BIGINT, "int", lambda items: int.from_bytes(_parts(items, bytes)[0], "big", signed=True)),
        (_BYTEARRAY, "bytearray", lambda items: bytearray(_parts(items, bytes)[0])),
        (_COMPLEX, "complex", lambda items: complex(*_parts(items, float, float))),
        (_DATETIME, "datetime", lambda items: _with_tz(dt.datetime, _parts(items, *_INT8, _TZ))),
        (_DATE, "date", lambda items: dt.date(*_parts(items, int, int, int))),
        (_TIME, "time", lambda items: _with_tz(dt.time, _parts(items, *_INT8[:5], _TZ))),
        (_TIMEDELTA, "timedelta", lambda items: dt.timedelta(*_parts(items, int, int, int))),
        (_DECIMAL, "Decimal", lambda items: decimal.Decimal(_parts(items, str)[0])),
        (_UUID, "UUID", lambda items: uuid.UUID(bytes=_parts(items, bytes)[0])),
        (_PATH, "path", _build_path),
        (_NDARRAY, "numpy array", _build_ndarray),
        (_NPSCALAR, "numpy scalar", lambda items: _build_ndarray(items, scalar=True)),
        (_FRAME, "DataFrame-like value", lambda items: _frames.decode(_parts(items, dict)[0])),
    ]
}
_FRAME_MARK = _MARKS[_FRAME.code]
