"""Arrow-backed encoding of DataFrame-like values, for the checkpoint codec.

pandas DataFrames, Series and indexes, polars DataFrames and Series, and pyarrow Tables and
RecordBatches are written as an Arrow IPC stream, the columnar format all three read and write
without going through Python objects, plus a small description (a dict the codec packs) of
what Arrow does not say: pandas dtypes, indexes, column labels, names, ``attrs``; the polars
dtypes. The stream format is used because its bytes depend only on the data (no timestamps, no
file offsets), so an equal frame has the same data version in every process.

A value comes back exactly, or is refused with :class:`Refused` saying what and what to do:
never stored changed. Decoding never unpickles, imports only pyarrow and the library the data
names, and turns whatever damaged bytes make those libraries raise into
:class:`~flowdeco.errors.CorruptDataError`. pyarrow, pandas and polars are imported only when
such a value is met: flowdeco does not depend on them.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import sys
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from ._errors import CorruptDataError, describe

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["LIBRARIES", "Refused", "decode", "encode", "frame_base"]

LIBRARIES = frozenset({"pandas", "polars", "pyarrow"})
# The exact classes stored, by library; a pandas index of any of these kinds is a pandas.Index.
_CLASSES = {
    "pandas": ("DataFrame", "Series", "Index", "RangeIndex", "MultiIndex", "DatetimeIndex",
               "TimedeltaIndex", "PeriodIndex", "CategoricalIndex", "IntervalIndex"),
    "polars": ("DataFrame", "Series"),
    "pyarrow": ("Table", "RecordBatch"),
}  # fmt: skip
# What a subclass is a subclass of, for the message that refuses it.
_BASES = {
    "pandas": ("DataFrame", "Series", "Index"),
    **{k: _CLASSES[k] for k in ("polars", "pyarrow")},
}
_STORED_AS = {
    "pandas": "a DataFrame, Series or Index",
    "polars": "a DataFrame or Series",
    "pyarrow": "a Table or RecordBatch",
}
_MASKED = frozenset(
    {"Int8", "Int16", "Int32", "Int64", "UInt8", "UInt16", "UInt32", "UInt64", "Float32",
     "Float64", "boolean"}
)  # fmt: skip
# The missing values an object array of strings or bytes may hold, one kind at a time.
_MISSING = (None, "NoneType", "float", "NAType")
_NAT = -(2**63)  # the int64 pandas stores for NaT
_MICROSECOND = dt.timedelta(microseconds=1)


class Refused(Exception):
    """A value that cannot be stored exactly; ``problem`` says why and, if ``advised``, what to
    do instead. ``column`` holds the label of the DataFrame column at fault, if one is.
    """

    def __init__(
        self, problem: str, column: tuple[object, ...] = (), *, advised: bool = True
    ) -> None:
        super().__init__(problem)
        self.problem = problem
        self.column = column
        self.advised = advised


def frame_base(value: object) -> str | None:
    """``"pandas.DataFrame"`` (or another class stored here) when ``value``'s class subclasses it."""
    for library, names in _BASES.items():
        module = sys.modules.get(library)
        for name in names if module is not None else ():
            if isinstance(value, getattr(module, name)):
                return f"{library}.{name}"
    return None


def _kind(value: object) -> str | None:
    """What the data calls ``value``'s exact class, or None if it is not one stored here."""
    library = type(value).__module__.partition(".")[0]
    module: Any = sys.modules.get(library)
    for name in _CLASSES.get(library, ()) if module is not None else ():
        if type(value) is getattr(module, name):
            return _kind_name(library, name)
    if library == "pandas" and type(value) in _pandas_scalars(module):
        return "pandas.scalar"
    return None


def _pandas_scalars(pd: Any) -> tuple[type, ...]:
    """pandas' scalars: stored as the one item of a Series (a Series' name may be one)."""
    return (pd.Timestamp, pd.Timedelta, pd.Period, pd.Interval, type(pd.NaT), type(pd.NA))


def _kind_name(library: str, name: str) -> str:
    return f"{library}.{'Index' if name.endswith('Index') else name}"


_KINDS = frozenset(
    {_kind_name(library, name) for library, names in _CLASSES.items() for name in names}
    | {"pandas.scalar"}
)


# --- encoding ---------------------------------------------------------------------------------


def encode(value: Any) -> dict[str, Any]:
    """The description of ``value`` (its Arrow stream under ``"data"``), for the codec to pack.

    Raises:
        Refused: ``value`` is not a class stored here, holds what Arrow cannot carry exactly,
            or pyarrow is not installed.
    """
    library = type(value).__module__.partition(".")[0]
    kind = _kind(value)
    if kind is None:
        raise _foreign(value, library)
    try:
        pa = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.ipc")
    except ImportError:
        what = f"pandas.{type(value).__name__}" if kind == "pandas.scalar" else kind
        raise Refused(
            f"is a {what}, which flowdeco stores through Arrow, but pyarrow is not installed: "
            "pip install 'flowdeco[arrow]'"
        ) from None
    try:
        if library == "pandas":
            return _PandasWriter(pa).encode(value, kind)
        if library == "polars":
            return _encode_polars(pa, value, kind)
        _check_types(pa, value.schema.types)
        return {"kind": kind, "data": _stream(pa, value.schema, value)}
    except Refused:
        raise
    except (Exception, _panic(library)) as exc:  # whatever the library raises, as a refusal
        problem = f"could not be written as Arrow ({type(exc).__name__}: {describe(exc)})"
        raise Refused(problem, advised=False) from exc


def _foreign(value: object, library: str) -> Refused:
    """The refusal of another object of these libraries, with the wrapping that stores it."""
    cls = type(value)
    problem = (
        f"has type {cls.__module__}.{cls.__qualname__}, which flowdeco stores only as "
        f"{_STORED_AS[library]}"
    )
    module: Any = sys.modules[library]
    wraps: list[tuple[str, Callable[[Any], Any]]] = {
        "pandas": [("store pandas.Series(x) instead of x", lambda x: module.Series(x))],
        "polars": [("store x.collect() instead of x", lambda x: x.collect())],
        "pyarrow": [
            ("store pyarrow.table({'x': x}) instead of x", lambda x: module.table({"x": x})),
            ("store pyarrow.table({'x': [x]}) instead of x", lambda x: module.table({"x": [x]})),
        ],
    }[library]
    for advice, wrap in wraps:
        try:
            encode(wrap(value))
        except Exception:  # noqa: BLE001, S112 - that wrapping does not store it: try the next
            continue
        return Refused(f"{problem}; {advice}")
    return Refused(problem, advised=False)


def _stream(pa: Any, schema: Any, *values: Any) -> memoryview:
    """The Arrow stream of ``values``: a view of Arrow's buffer, which the codec stores out
    of band (or copies, if it is small)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        for value in values:
            writer.write(value)
    return memoryview(sink.getvalue())


def _single(pa: Any, array: Any) -> Any:
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _check_types(pa: Any, types: Any) -> None:
    """Refuse Arrow extension types defined in Python: only where registered do they load."""
    pending = list(types)
    while pending:
        kind = pending.pop()
        if isinstance(kind, pa.ExtensionType):
            raise Refused(
                f"has Arrow type {kind} ({type(kind).__qualname__}), an extension type defined "
                "in Python, which comes back as itself only where its class is registered; "
                "store its storage array instead (.storage)"
            )
        if isinstance(kind, pa.BaseExtensionType):
            pending.append(kind.storage_type)
        elif isinstance(kind, pa.DictionaryType):
            pending.append(kind.value_type)
        else:
            pending.extend(kind.field(i).type for i in range(kind.num_fields))


def _encode_polars(pa: Any, value: Any, kind: str) -> dict[str, Any]:
    pl: Any = sys.modules["polars"]
    frame = value.to_frame() if kind == "polars.Series" else value
    wide = tuple(getattr(pl, name) for name in ("Int128", "UInt128") if hasattr(pl, name))
    for name, dtype in frame.schema.items():
        column = (name,) if kind == "polars.DataFrame" else ()
        if "\0" in name:  # polars panics handing such a name to Arrow
            clean = name.replace("\0", "")
            rename = f"{{{name!r}: {clean!r}}}" if column else repr(clean)
            raise Refused(
                f"has a name holding a NUL character ({name!r}), which polars cannot hand to "
                f"Arrow; rename it (.rename({rename}))"
            )
        pending = [dtype]
        while pending:
            inner = pending.pop()
            if isinstance(inner, pl.Object):
                raise Refused(
                    "has polars dtype Object, Python objects that Arrow cannot carry; build "
                    "it as a typed column",
                    column,
                )
            if isinstance(inner, wide):
                raise Refused(
                    f"has polars dtype {inner}, which pyarrow cannot read; cast it "
                    "(.cast(pl.Int64) if its values fit, or .cast(pl.String))",
                    column,
                )
            if isinstance(inner, (pl.List, pl.Array)):
                pending.append(inner.inner)
            elif isinstance(inner, pl.Struct):
                pending.extend(field.dtype for field in inner.fields)
    table = frame.to_arrow()
    return {
        "kind": kind,
        "schema": [str(dtype) for dtype in frame.schema.values()],
        "data": _stream(pa, table.schema, table),
    }


class _PandasWriter:
    """Turns pandas values into Arrow arrays and the specs that rebuild them."""

    def __init__(self, pa: Any) -> None:
        self.pa = pa
        self.pd: Any = sys.modules["pandas"]
        self.np: Any = importlib.import_module("numpy")
        arrays = self.pd.arrays
        self.masked = (arrays.IntegerArray, arrays.FloatingArray, arrays.BooleanArray)

    def encode(self, value: Any, kind: str) -> dict[str, Any]:
        if kind == "pandas.scalar":
            series = self.pd.Series([value])
            item = series.iloc[0]
            if [type(item), repr(item), getattr(item, "unit", None)] != [
                type(value),
                repr(value),
                getattr(value, "unit", None),
            ]:
                raise Refused(
                    f"is {value!r}, which a Series holds as {item!r}; store pandas.Series([x]) "
                    "instead of x"
                )
            return {**self.encode(series, "pandas.Series"), "kind": kind}
        if kind == "pandas.Index":
            spec, arrays = self.index(value, "has ")
            return {"kind": kind, "index": spec, "data": self.stream(arrays)}
        index, arrays = self.index(value.index, "has an index of ")
        state: dict[str, Any] = {"kind": kind, "index": index}
        if kind == "pandas.Series":
            state["dtype"], values = self.array(value.array, "has ")
            state["name"] = value.name
            arrays.append(values)
        else:
            state["columns"], labels = self.index(value.columns, "has column labels of ")
            state["labels"] = self.stream(labels)
            state["dtypes"] = []
            for label, column in value.items():
                try:
                    spec, values = self.array(column.array, "has ")
                except Refused as refused:
                    raise Refused(refused.problem, (label,), advised=refused.advised) from (
                        refused.__cause__
                    )
                state["dtypes"].append(spec)
                arrays.append(values)
        state["attrs"] = value.attrs
        state["duplicates"] = value.flags.allows_duplicate_labels
        state["data"] = self.stream(arrays)
        return state

    def stream(self, arrays: list[Any]) -> memoryview:
        batch = self.pa.RecordBatch.from_arrays(arrays, names=[str(i) for i in range(len(arrays))])
        return _stream(self.pa, batch.schema, batch)

    def index(self, index: Any, has: str) -> tuple[list[Any], list[Any]]:
        """The spec of an index and the arrays it needs: none, one, or one per level."""
        pd, pa = self.pd, self.pa
        cls = type(index)
        if cls is pd.RangeIndex:
            return ["range", index.start, index.stop, index.step, index.name], []
        if cls is pd.MultiIndex:
            levels, arrays = [], []
            for i, (level, codes) in enumerate(zip(index.levels, index.codes, strict=True)):
                spec, level_arrays = self.index(level, f"{has}level {i} of ")
                if level_arrays and pa.types.is_dictionary(level_arrays[0].type):
                    raise Refused(
                        f"{has}MultiIndex level {i} of dtype {level.dtype}, which Arrow cannot "
                        f"nest in a dictionary; convert that level with "
                        f".set_levels(x.levels[{i}].astype(object), level={i})"
                    )
                levels.append(spec)
                arrays.append(self.coded(codes, level_arrays))
            return ["multi", list(index.names), index.sortorder, levels], arrays
        freq = None
        if cls in (pd.DatetimeIndex, pd.TimedeltaIndex) and index.freq is not None:
            freq = index.freq.freqstr
            if pd.tseries.frequencies.to_offset(freq) != index.freq:
                raise Refused(
                    f"{has}freq {index.freq!r}, which its name {freq!r} does not rebuild; drop "
                    f"it with pandas.{cls.__name__}(x, freq=None)"
                )
        if self.is_object(index.dtype) and self.object_kind(index.to_numpy()) is None:
            # Labels of mixed types: the codec carries each exactly.
            return ["objects", index.name, list(index.to_numpy())], []
        spec, values = self.array(index.array, has)
        return ["index", spec, index.name, freq], [values]

    def coded(self, codes: Any, categories: list[Any]) -> Any:
        """Codes into categories (-1 for none) as a dictionary array, or as bare integers."""
        indices = self.pa.array(codes, mask=codes < 0)
        if not categories:
            return indices
        return self.pa.DictionaryArray.from_arrays(indices, categories[0])

    def is_object(self, dtype: Any) -> bool:
        return isinstance(dtype, self.np.dtype) and dtype.kind == "O"

    def object_kind(self, data: Any) -> tuple[str, str | None] | None:
        """("str" or "bytes", the missing value's name) if Arrow carries these objects exactly."""
        kinds = set(map(type, data))
        missing = {kind.__name__ for kind in kinds & {type(None), float, type(self.pd.NA)}}
        elements = {kind.__name__ for kind in kinds} - missing
        if len(missing) > 1 or len(elements) > 1 or not elements <= {"str", "bytes"}:
            return None
        if "float" in missing and not all(math.isnan(x) for x in data if type(x) is float):
            return None
        return (elements.pop() if elements else "str"), (missing.pop() if missing else None)

    def array(self, values: Any, has: str) -> tuple[list[Any], Any]:
        """The spec that rebuilds ``values`` (an array of a pandas object) and its Arrow form."""
        pd, pa, np = self.pd, self.pa, self.np
        if type(values) is pd.arrays.NumpyExtensionArray:
            values = values.to_numpy()
        dtype = values.dtype
        if isinstance(dtype, np.dtype):
            data = values if isinstance(values, np.ndarray) else values.to_numpy()
            if dtype.kind in "biufmM" and dtype.isnative:
                return ["numpy", dtype.str], pa.array(data)
            if dtype.kind == "O":
                found = self.object_kind(data)
                if found is None:
                    kinds = sorted({type(x).__qualname__ for x in data})
                    raise Refused(
                        f"{has}dtype object holding {', '.join(kinds)} values, which Arrow cannot "
                        "carry exactly; convert it to one dtype (.astype(str), for one)"
                    )
                element, missing = found
                kind = pa.large_string() if element == "str" else pa.large_binary()
                return ["object", element, missing], pa.array(data, kind, from_pandas=True)
            if dtype.kind == "c":
                raise Refused(
                    f"{has}dtype {dtype}, which Arrow has no type for; store its real and "
                    "imaginary parts as two float columns (np.real(x), np.imag(x))"
                )
            raise Refused(
                f"{has}dtype {dtype}, in non-native byte order; convert it with "
                f".astype('{dtype.newbyteorder('=')}')"
            )
        if type(values) in self.masked:
            fill = False if dtype.kind == "b" else 0
            data = values.to_numpy(dtype=dtype.numpy_dtype, na_value=fill)
            return ["masked", dtype.name], pa.array(data, mask=values.isna())
        if isinstance(dtype, pd.StringDtype):
            na = "nan" if isinstance(dtype.na_value, float) else "NA"
            if self.string_dtype(dtype.storage, na) != dtype:
                raise self.unknown(dtype, has)
            array = _single(pa, pa.array(values, pa.large_string()))
            return ["string", dtype.storage, na], array
        if isinstance(dtype, pd.CategoricalDtype):
            spec, categories = self.index(dtype.categories, f"{has}categories of ")
            return ["category", dtype.ordered, spec], self.coded(values.codes, categories)
        if isinstance(dtype, pd.DatetimeTZDtype):
            tz = self.tz(dtype.tz, has)
            utc = values.tz_convert(None).to_numpy()
            return ["datetimetz", dtype.unit, tz], pa.array(utc)
        if isinstance(dtype, pd.PeriodDtype):
            if pd.api.types.pandas_dtype(str(dtype)) != dtype:
                raise self.unknown(dtype, has)
            return ["period", str(dtype)], pa.array(values.asi8, mask=values.isna())
        if isinstance(dtype, pd.IntervalDtype):
            left_spec, left = self.array(values.left.array, f"{has}interval bounds of ")
            right_spec, right = self.array(values.right.array, f"{has}interval bounds of ")
            array = pa.StructArray.from_arrays(
                [left, right], names=["left", "right"], mask=pa.array(values.isna())
            )
            return ["interval", values.closed, left_spec, right_spec], array
        if isinstance(dtype, pd.ArrowDtype):
            array = _single(pa, pa.array(values))
            _check_types(pa, [array.type])
            return ["arrow"], array
        if isinstance(dtype, pd.SparseDtype):
            raise Refused(f"{has}sparse dtype {dtype}; densify it with .sparse.to_dense()")
        raise self.unknown(dtype, has)

    def unknown(self, dtype: Any, has: str) -> Refused:
        cls = type(dtype)
        return Refused(
            f"{has}dtype {dtype} ({cls.__module__}.{cls.__qualname__}), which flowdeco has no "
            "exact Arrow form for; convert it (.astype(str), for one)"
        )

    def string_dtype(self, storage: str, na: str) -> Any:
        return self.pd.StringDtype(storage, na_value=self.np.nan if na == "nan" else self.pd.NA)

    def tz(self, tz: dt.tzinfo, has: str) -> list[Any]:
        """A zoneinfo key or a fixed offset (and its name, if not the default one)."""
        if type(tz) is ZoneInfo and tz.key is not None:
            return ["zone", tz.key]
        if type(tz) is dt.timezone:
            offset = tz.utcoffset(None)
            name = None if repr(tz) == repr(dt.timezone(offset)) else tz.tzname(None)
            return ["offset", offset // _MICROSECOND, name]
        names = (getattr(tz, "zone", None), str(getattr(tz, "_filename", "")), str(tz))
        keys = (name.rpartition("zoneinfo/")[2] for name in names if name)
        key = next((k for k in keys if _is_zone(k)), "UTC")
        raise Refused(
            f"{has}time zone {tz!r} ({type(tz).__module__}.{type(tz).__qualname__}), while "
            f"flowdeco keeps zoneinfo zones and fixed offsets; convert it with "
            f".tz_convert('{key}') (.dt.tz_convert for a column)"
        )


def _is_zone(key: object) -> bool:
    try:
        ZoneInfo(key)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - not a key, in any of the ways ZoneInfo says so
        return False
    return True


# --- decoding ---------------------------------------------------------------------------------


def decode(state: dict[str, Any]) -> Any:
    """The value :func:`encode` described by ``state``.

    Raises:
        CorruptDataError: ``state`` is not what :func:`encode` writes, or the library it names
            (or pyarrow) is not installed.
    """
    kind = state.get("kind")
    if kind not in _KINDS:
        raise CorruptDataError(
            f"the data holds an unknown kind of frame ({kind!r}); it was damaged"
        )
    library = kind.partition(".")[0]
    try:
        pa = importlib.import_module("pyarrow")
        importlib.import_module("pyarrow.ipc")
        module: Any = importlib.import_module(library)
    except ImportError as exc:
        extra = "'flowdeco[arrow]'" if exc.name in (None, "pyarrow") else library
        raise CorruptDataError(
            f"the data holds a {kind}, stored through Arrow, but {exc.name or 'pyarrow'} is not "
            f"installed: pip install {extra} to load it"
        ) from exc
    try:
        if library == "pandas":
            return _PandasReader(pa, module).decode(state, kind)
        if library == "polars":
            return _decode_polars(pa, module, state, kind)
        schema, batches = _read(pa, state["data"])
        if kind == "pyarrow.RecordBatch":
            (batch,) = batches
            return batch
        return pa.Table.from_batches(batches, schema=schema)
    except CorruptDataError:
        raise
    except (Exception, _panic(library)) as exc:  # whatever the bytes make the libraries raise
        raise CorruptDataError(
            f"cannot rebuild a {kind} from the data ({type(exc).__name__}: {describe(exc)}); "
            "it was damaged"
        ) from exc


def _panic(library: str) -> type[BaseException]:
    """What a library written in Rust raises when it panics (a BaseException), if it is one."""
    exceptions = getattr(sys.modules.get(library), "exceptions", None)
    panic: type[BaseException] = getattr(exceptions, "PanicException", Exception)
    return panic


def _read(pa: Any, data: object) -> tuple[Any, list[Any]]:
    """The schema and the fully validated batches of an Arrow stream."""
    if type(data) is not bytes and type(data) is not memoryview:  # inline, or out of band
        raise CorruptDataError("malformed Arrow stream in the data")
    reader = pa.ipc.open_stream(data)
    batches = list(reader)
    for batch in batches:
        batch.validate(full=True)
    return reader.schema, batches


def _decode_polars(pa: Any, pl: Any, state: dict[str, Any], kind: str) -> Any:
    schema, batches = _read(pa, state["data"])
    frame = pl.from_arrow(pa.Table.from_batches(batches, schema=schema))
    frame.columns = schema.names  # from_arrow renames a column named "" to column_0
    if [str(dtype) for dtype in frame.schema.values()] != state["schema"]:
        raise CorruptDataError(
            f"the data holds a {kind} of dtypes {state['schema']}, which this polars reads as "
            f"{[str(d) for d in frame.schema.values()]}"
        )
    return frame.to_series() if kind == "polars.Series" else frame


class _PandasReader:
    """Rebuilds pandas values from the specs and arrays :class:`_PandasWriter` made."""

    def __init__(self, pa: Any, pd: Any) -> None:
        self.pa = pa
        self.pd = pd
        self.np: Any = importlib.import_module("numpy")

    def decode(self, state: dict[str, Any], kind: str) -> Any:
        pd, np = self.pd, self.np
        arrays = iter(self.batch(state["data"]))
        index = self.index(state["index"], arrays)
        if kind == "pandas.Index":
            value = index
        elif kind in ("pandas.Series", "pandas.scalar"):
            values = self.array(state["dtype"], next(arrays))
            value = pd.Series(values, index=index, dtype=values.dtype, name=state["name"])
        else:
            columns = self.index(state["columns"], iter(self.batch(state["labels"])))
            data = {}
            for i, spec in enumerate(state["dtypes"]):
                values = self.array(spec, next(arrays))
                # pandas would infer strings from an object array: a Series keeps its dtype
                is_object = isinstance(values, np.ndarray) and values.dtype.kind == "O"
                data[i] = pd.Series(values, dtype=object, copy=False) if is_object else values
            # One copy, into consolidated blocks: the arrays may be read-only views of the data.
            value = pd.DataFrame(data, copy=True) if data else pd.DataFrame(index=index)
            value.index = index
            value.columns = columns
        if next(arrays, None) is not None:
            raise CorruptDataError(f"the data holds a {kind} with arrays to spare; it was damaged")
        if kind == "pandas.scalar":
            (item,) = value
            return item
        if kind != "pandas.Index":
            if type(state["attrs"]) is not dict or type(state["duplicates"]) is not bool:
                raise CorruptDataError(f"malformed {kind} in the data")
            value.attrs = state["attrs"]
            value.flags.allows_duplicate_labels = state["duplicates"]
        return value

    def batch(self, data: object) -> list[Any]:
        """The arrays of the one batch a stream holds."""
        _, (batch,) = _read(self.pa, data)
        return list(batch.columns)

    def index(self, spec: list[Any], arrays: Any) -> Any:
        pd, np = self.pd, self.np
        kind, *parts = spec
        if kind == "range":
            start, stop, step, name = parts
            if not all(type(n) is int for n in (start, stop, step)):
                raise CorruptDataError("malformed RangeIndex in the data")
            return pd.RangeIndex(start, stop, step, name=name)
        if kind == "objects":
            name, labels = parts
            values = np.fromiter(labels, dtype=object, count=len(labels))
            return pd.Index(values, dtype=object, name=name, tupleize_cols=False)
        if kind == "index":
            array_spec, name, freq = parts
            values = self.array(array_spec, next(arrays))
            index = pd.Index(values, dtype=values.dtype, name=name, tupleize_cols=False)
            if freq is None:
                return index
            if type(index) not in (pd.DatetimeIndex, pd.TimedeltaIndex) or type(freq) is not str:
                raise CorruptDataError("malformed index frequency in the data")
            return type(index)(index, freq=freq, name=name)
        if kind == "multi":
            names, sortorder, level_specs = parts
            levels, codes = [], []
            for level_spec in level_specs:
                level, level_codes = self.coded(level_spec, next(arrays))
                levels.append(level)
                codes.append(level_codes)
            return pd.MultiIndex(
                levels=levels, codes=codes, names=names, sortorder=sortorder, verify_integrity=True
            )
        raise CorruptDataError(f"unknown kind of index in the data ({kind!r})")

    def coded(self, spec: list[Any], array: Any) -> tuple[Any, Any]:
        """The categories (an index) and the codes of a dictionary array, or of bare codes."""
        if self.pa.types.is_dictionary(array.type):
            categories = self.index(spec, iter([array.dictionary]))
            array = array.indices
        else:
            categories = self.index(spec, iter(()))
        if not self.pa.types.is_integer(array.type):
            raise CorruptDataError("malformed codes in the data")
        return categories, array.fill_null(-1).to_numpy(zero_copy_only=False)

    def array(self, spec: list[Any], array: Any) -> Any:
        """The pandas (or numpy) array a spec and its Arrow array stand for, of exact dtype."""
        pd, pa, np = self.pd, self.pa, self.np
        kind, *parts = spec
        if kind == "numpy":
            (descr,) = parts
            dtype = np.dtype(descr)
            if dtype.kind not in "biufmM" or array.type != pa.from_numpy_dtype(dtype):
                raise CorruptDataError(f"the data holds a {array.type} array as {descr}")
            values = array.to_numpy(zero_copy_only=False)  # read-only: pandas copies on write
            expected = dtype
        elif kind == "object":
            element, missing = parts
            kinds = {"str": pa.large_string(), "bytes": pa.large_binary()}
            if array.type != kinds.get(element) or missing not in _MISSING:
                raise CorruptDataError("malformed object array in the data")
            values = array.to_numpy(zero_copy_only=False, writable=True)
            if missing in ("float", "NAType"):
                values[array.is_null().to_numpy(zero_copy_only=False)] = (
                    np.nan if missing == "float" else pd.NA
                )
            expected = np.dtype(object)
        elif kind == "masked":
            (name,) = parts
            if name not in _MASKED:
                raise CorruptDataError(f"unknown masked dtype {name!r} in the data")
            expected = pd.api.types.pandas_dtype(name)
            if array.type != pa.from_numpy_dtype(expected.numpy_dtype):
                raise CorruptDataError(f"the data holds a {array.type} array as {name}")
            fill = False if expected.kind == "b" else 0
            data = array.fill_null(fill).to_numpy(zero_copy_only=False, writable=True)
            mask = array.is_null().to_numpy(zero_copy_only=False, writable=True)
            values = expected.construct_array_type()(data, mask)
        elif kind == "string":
            storage, na = parts
            if storage not in ("python", "pyarrow") or na not in ("nan", "NA"):
                raise CorruptDataError("malformed string dtype in the data")
            if array.type != pa.large_string():
                raise CorruptDataError(f"the data holds a {array.type} array as strings")
            expected = pd.StringDtype(storage, na_value=np.nan if na == "nan" else pd.NA)
            values = expected.__from_arrow__(array)
        elif kind == "category":
            ordered, categories_spec = parts
            if type(ordered) is not bool:
                raise CorruptDataError("malformed categorical dtype in the data")
            categories, codes = self.coded(categories_spec, array)
            expected = pd.CategoricalDtype(categories, ordered=ordered)
            values = pd.Categorical.from_codes(codes, dtype=expected)
        elif kind == "datetimetz":
            unit, tz_spec = parts
            expected = pd.DatetimeTZDtype(unit, self.tz(tz_spec))
            if array.type != pa.timestamp(unit):
                raise CorruptDataError(f"the data holds a {array.type} array as {expected}")
            utc = pd.array(array.to_numpy(zero_copy_only=False))
            values = utc.tz_localize("UTC").tz_convert(expected.tz)
        elif kind == "period":
            (name,) = parts
            expected = pd.api.types.pandas_dtype(name)
            if not isinstance(expected, pd.PeriodDtype) or array.type != pa.int64():
                raise CorruptDataError(f"malformed {name} array in the data")
            ordinals = array.fill_null(_NAT).to_numpy(zero_copy_only=False, writable=True)
            values = pd.arrays.PeriodArray(ordinals, dtype=expected)
        elif kind == "interval":
            closed, left_spec, right_spec = parts
            if not pa.types.is_struct(array.type) or array.type.num_fields != 2:
                raise CorruptDataError("malformed interval array in the data")
            left = self.array(left_spec, array.field(0))
            right = self.array(right_spec, array.field(1))
            values = pd.arrays.IntervalArray.from_arrays(left, right, closed=closed)
            expected = pd.IntervalDtype(left.dtype, closed)
            if not np.array_equal(values.isna(), array.is_null().to_numpy(zero_copy_only=False)):
                raise CorruptDataError("malformed interval array in the data")
        elif kind == "arrow":
            values = pd.arrays.ArrowExtensionArray(array)
            expected = values.dtype
        else:
            raise CorruptDataError(f"unknown kind of array in the data ({kind!r})")
        if values.dtype != expected:
            raise CorruptDataError(f"the data rebuilds dtype {values.dtype}, not {expected}")
        return values

    def tz(self, spec: list[Any]) -> dt.tzinfo:
        kind, *parts = spec
        if kind == "zone":
            (key,) = parts
            return ZoneInfo(key)
        if kind == "offset":
            microseconds, name = parts
            offset = dt.timedelta(microseconds=microseconds)
            return dt.timezone(offset) if name is None else dt.timezone(offset, name)
        raise CorruptDataError(f"unknown kind of time zone in the data ({kind!r})")
