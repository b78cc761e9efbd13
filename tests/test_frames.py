"""DataFrames, Series, indexes and Arrow tables in checkpoints: exact round trips or refusals.

pandas, polars and pyarrow values are stored through Arrow IPC. A value comes back equal and of
the same dtypes, index, labels, names and attrs, or it is refused with advice that works as
written; equal frames give equal bytes in any process; damaged bytes are CorruptDataError.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import math
import os
import re
import subprocess
import sys
import textwrap
import warnings
import zoneinfo
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import numpy as np
import pandas as pd
import polars as pl
import polars.testing
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal, assert_index_equal, assert_series_equal

import flowdeco as fd
from flowdeco._core._codec import decode, encode
from flowdeco._core._errors import CorruptDataError, UnsupportedValueError

SETTINGS = settings(deadline=None, max_examples=200, suppress_health_check=list(HealthCheck))
HOSTILE = settings(SETTINGS, max_examples=100, deadline=2000)
NAT = np.iinfo(np.int64).min
FRAME = msgpack.ExtType(17, b"")


def roundtrip(value: Any) -> Any:
    return decode(encode(value))


# --- exact comparison -------------------------------------------------------------------------


def fingerprint(values: Any) -> tuple[str, list[tuple[type, str]]]:
    """The dtype and each element's type and repr: NaN, NA, None, -0.0 and zones all differ."""
    return repr(values.dtype), [(type(x), repr(x)) for x in values]


def assert_same_index(back: Any, index: Any) -> None:
    assert_index_equal(back, index, exact=True, check_names=True, check_exact=True)
    assert type(back) is type(index)
    assert back.names == index.names
    assert [type(n) for n in back.names] == [type(n) for n in index.names]
    if isinstance(index, pd.MultiIndex):
        assert back.sortorder == index.sortorder
        for got, want in zip(back.levels, index.levels, strict=True):
            assert_same_index(got, want)
        assert [list(c) for c in back.codes] == [list(c) for c in index.codes]
    else:
        assert fingerprint(back) == fingerprint(index)
        assert getattr(back, "freq", None) == getattr(index, "freq", None)
    if isinstance(index.dtype, pd.CategoricalDtype):
        assert_same_index(back.dtype.categories, index.dtype.categories)


def assert_same(back: Any, value: Any) -> None:
    """``back`` is ``value`` for every check pandas, polars or pyarrow has, and then some."""
    assert type(back) is type(value)
    if isinstance(value, pd.DataFrame):
        assert_frame_equal(
            back, value, check_exact=True, check_dtype=True, check_index_type=True,
            check_column_type=True, check_names=True, check_categorical=True, check_freq=True,
            check_flags=True,
        )  # fmt: skip
        assert_same_index(back.index, value.index)
        assert_same_index(back.columns, value.columns)
        for i in range(value.shape[1]):
            assert_same(back.iloc[:, i], value.iloc[:, i])
        assert repr(back.attrs) == repr(value.attrs)
    elif isinstance(value, pd.Series):
        assert_series_equal(
            back, value, check_exact=True, check_dtype=True, check_index_type=True,
            check_series_type=True, check_names=True, check_categorical=True, check_freq=True,
            check_flags=True,
        )  # fmt: skip
        assert_same_index(back.index, value.index)
        assert fingerprint(back) == fingerprint(value)
        assert type(back.name) is type(value.name)
        assert repr(back.attrs) == repr(value.attrs)
        if isinstance(value.dtype, pd.CategoricalDtype):
            assert_same_index(back.cat.categories, value.cat.categories)
            assert back.cat.ordered == value.cat.ordered
        if isinstance(value.dtype, pd.DatetimeTZDtype):
            assert type(back.dtype.tz) is type(value.dtype.tz)
            assert repr(back.dtype.tz) == repr(value.dtype.tz)
    elif isinstance(value, pd.Index):
        assert_same_index(back, value)
    elif isinstance(value, (pl.DataFrame, pl.Series)):
        assert back.equals(value)
        if isinstance(value, pl.DataFrame):
            assert back.schema == value.schema
            polars.testing.assert_frame_equal(back, value, check_exact=True, check_dtypes=True)
        else:
            assert (back.name, back.dtype) == (value.name, value.dtype)
            polars.testing.assert_series_equal(back, value, check_exact=True, check_dtypes=True)
    else:
        assert back.schema.equals(value.schema, check_metadata=True)
        assert back.equals(value, check_metadata=True)


# --- pandas strategies ------------------------------------------------------------------------

LABELS = (
    st.text(max_size=4)
    | st.integers(-3, 3)
    | st.none()
    | st.floats()
    | st.booleans()
    | st.tuples(st.text(max_size=2), st.integers(0, 2))
)
ATTRS = st.dictionaries(
    st.text(max_size=3),
    st.integers() | st.text(max_size=3) | st.lists(st.integers(), max_size=2) | st.tuples(),
    max_size=3,
)
UNITS = st.sampled_from(["s", "ms", "us", "ns"])
PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
# Whole seconds from 1716 to 2286, which every unit holds (ns from 1678 to 2262: clipped).
SECONDS = st.integers(-8 * 10**9, 9 * 10**9)
OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda minutes: dt.timedelta(minutes=minutes))
ZONES = (
    st.timezones()
    | st.just(dt.timezone.utc)
    | st.builds(dt.timezone, OFFSETS)
    | st.builds(dt.timezone, OFFSETS, st.text("ABCXYZ+", min_size=1, max_size=4))
)

WHEN = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2100, 1, 1))
NAMES = (
    st.none()
    | st.text(max_size=3)
    | st.integers(-3, 3)
    | st.tuples(st.text(max_size=2))
    | st.builds(pd.Timestamp, WHEN)
    | st.builds(lambda when, tz: pd.Timestamp(when, tz="UTC").tz_convert(tz), WHEN, ZONES)
)


def rows(n: int, elements: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(elements, min_size=n, max_size=n)


def object_array(values: list[Any]) -> Any:
    array = np.empty(len(values), dtype=object)
    for i, x in enumerate(values):
        array[i] = x
    return array


def instants(draw: st.DrawFn, n: int, unit: str) -> Any:
    seconds = draw(rows(n, SECONDS.map(lambda s: s * PER_SECOND[unit]) | st.just(NAT)))
    clipped = [x if x == NAT or unit != "ns" else max(min(x, 2**62), -(2**62)) for x in seconds]
    return np.array(clipped, dtype=np.int64)


def ints(draw: st.DrawFn, n: int) -> pd.Series:
    dtype = np.dtype(
        draw(st.sampled_from([f"{s}int{b}" for s in ("", "u") for b in (8, 16, 32, 64)]))
    )
    info = np.iinfo(dtype)
    return pd.Series(np.array(draw(rows(n, st.integers(info.min, info.max))), dtype=dtype))


def floats(draw: st.DrawFn, n: int, widths: tuple[int, ...] = (16, 32, 64)) -> pd.Series:
    width = draw(st.sampled_from(widths))
    values = draw(rows(n, st.floats(width=width)))  # type: ignore[arg-type]
    return pd.Series(np.array(values, dtype=f"float{width}"))


def index_floats(draw: st.DrawFn, n: int) -> pd.Series:
    return floats(draw, n, widths=(32, 64))  # no float16 index in pandas


def bools(draw: st.DrawFn, n: int) -> pd.Series:
    return pd.Series(np.array(draw(rows(n, st.booleans())), dtype=bool))


def datetimes(draw: st.DrawFn, n: int) -> pd.Series:
    unit = draw(UNITS)
    return pd.Series(instants(draw, n, unit).view(f"M8[{unit}]"))


def timedeltas(draw: st.DrawFn, n: int) -> pd.Series:
    unit = draw(UNITS)
    return pd.Series(instants(draw, n, unit).view(f"m8[{unit}]"))


def zoned(draw: st.DrawFn, n: int) -> pd.Series:
    unit = draw(UNITS)
    naive = pd.Series(instants(draw, n, unit).view(f"M8[{unit}]"))
    return naive.dt.tz_localize("UTC").dt.tz_convert(draw(ZONES))


def object_texts(draw: st.DrawFn, n: int) -> pd.Series:
    element = draw(st.sampled_from([st.text(max_size=5), st.binary(max_size=5)]))
    missing = draw(st.sampled_from([None, math.nan, pd.NA]))
    return pd.Series(object_array(draw(rows(n, element | st.just(missing)))), dtype=object)


STRING_DTYPES = [
    "str",
    *(pd.StringDtype(s, na_value=na) for s in ("python", "pyarrow") for na in (pd.NA, np.nan)),
]


def strings(draw: st.DrawFn, n: int) -> pd.Series:
    dtype = draw(st.sampled_from(STRING_DTYPES))
    return pd.Series(draw(rows(n, st.text(max_size=5) | st.none())), dtype=dtype)


def masked(draw: st.DrawFn, n: int) -> pd.Series:
    name = draw(
        st.sampled_from(["Int8", "Int64", "UInt16", "UInt64", "Float32", "Float64", "boolean"])
    )
    mask = np.array(draw(rows(n, st.booleans())), dtype=bool)
    dtype = pd.api.types.pandas_dtype(name)
    if name == "boolean":
        data = np.array(draw(rows(n, st.booleans())), dtype=bool)
    elif name.startswith("Float"):  # NaN in the data, unmasked, is a value apart from NA
        width = 32 if name == "Float32" else 64
        data = np.array(draw(rows(n, st.floats(width=width))), dtype=dtype.numpy_dtype)  # type: ignore[arg-type]
    else:
        info = np.iinfo(dtype.numpy_dtype)
        data = np.array(draw(rows(n, st.integers(info.min, info.max))), dtype=dtype.numpy_dtype)
    data[mask] = 0  # pandas keeps 0 (or False) under the mask, as its operations leave it
    return pd.Series(dtype.construct_array_type()(data, mask))


def categoricals(draw: st.DrawFn, n: int) -> pd.Series:
    labels = draw(
        st.sampled_from(
            [st.text(max_size=3), st.integers(-5, 5), st.floats(allow_nan=False), st.dates()]
        )
    )
    categories = draw(st.lists(labels, unique=True, max_size=5))
    if categories and draw(st.booleans()):
        categories = pd.Index(object_array(categories), dtype=object)
    values = draw(
        rows(n, st.sampled_from(list(categories)) | st.none() if len(categories) else st.none())
    )
    dtype = pd.CategoricalDtype(categories, ordered=draw(st.booleans()))
    return pd.Series(pd.Categorical(values, dtype=dtype))


def periods(draw: st.DrawFn, n: int) -> pd.Series:
    freq = draw(st.sampled_from(["D", "M", "Y", "Q-DEC", "W-SUN", "h", "min", "2D"]))
    ordinals = draw(rows(n, st.integers(-(10**5), 10**5) | st.just(NAT)))
    return pd.Series(pd.arrays.PeriodArray(np.array(ordinals), dtype=pd.PeriodDtype(freq)))


def intervals(draw: st.DrawFn, n: int) -> pd.Series:
    closed = draw(st.sampled_from(["left", "right", "both", "neither"]))
    left = np.array(draw(rows(n, st.integers(-100, 100))), dtype=float)
    widths = np.array(draw(rows(n, st.integers(1, 10))), dtype=float)
    missing = np.array(draw(rows(n, st.booleans())), dtype=bool)
    left[missing] = np.nan
    if draw(st.booleans()) and not missing.any():
        left = left.astype(np.int64)
        widths = widths.astype(np.int64)
    return pd.Series(pd.arrays.IntervalArray.from_arrays(left, left + widths, closed=closed))


ARROW_TYPES = {
    pa.int32(): st.integers(-(2**31), 2**31 - 1),
    pa.string(): st.text(max_size=4),
    pa.list_(pa.int64()): st.lists(st.integers(-5, 5), max_size=3),
    pa.timestamp("ms", tz="Europe/Paris"): st.datetimes(timezones=st.just(dt.timezone.utc)),
    pa.dictionary(pa.int8(), pa.string()): st.sampled_from(["a", "b"]),
}


def arrow_backed(draw: st.DrawFn, n: int) -> pd.Series:
    kind = draw(st.sampled_from(list(ARROW_TYPES)))
    values = draw(rows(n, ARROW_TYPES[kind] | st.none()))
    return pd.Series(pd.arrays.ArrowExtensionArray(pa.array(values, kind)))


COLUMNS = [ints, floats, bools, datetimes, timedeltas, zoned, object_texts, strings, masked,
           categoricals, periods, intervals, arrow_backed]  # fmt: skip
INDEX_COLUMNS = [ints, index_floats, bools, datetimes, timedeltas, zoned, object_texts, strings,
                 masked, categoricals, periods, intervals]  # fmt: skip
LEVEL_COLUMNS = [ints, index_floats, datetimes, zoned, strings, periods]


@st.composite
def columns(draw: st.DrawFn, n: int, kinds: list[Any] = COLUMNS) -> pd.Series:
    return draw(st.sampled_from(kinds))(draw, n)  # type: ignore[no-any-return]


@st.composite
def indexes(draw: st.DrawFn, n: int) -> pd.Index:
    kind = draw(st.sampled_from(["range", "column", "multi", "codes", "dates", "objects"]))
    name = draw(NAMES)
    if kind == "range":
        start, step = draw(st.integers(-100, 100)), draw(st.integers(1, 5) | st.integers(-5, -1))
        return pd.RangeIndex(start, start + n * step, step, name=name)
    if kind == "column":
        return pd.Index(draw(columns(n, INDEX_COLUMNS)).array, name=name)
    if kind == "multi":
        arrays = [draw(columns(n, LEVEL_COLUMNS)).array for _ in range(draw(st.integers(1, 3)))]
        names = [draw(NAMES) for _ in arrays]
        return pd.MultiIndex.from_arrays(arrays, names=names)
    if kind == "codes":  # levels out of order, unused ones, missing codes (-1)
        levels = [
            draw(st.lists(st.text(max_size=2), unique=True, min_size=1, max_size=4)),
            draw(st.lists(st.integers(-9, 9), unique=True, min_size=1, max_size=4)),
        ]
        codes = [draw(rows(n, st.integers(-1, len(level) - 1))) for level in levels]
        return pd.MultiIndex(levels=levels, codes=codes, names=[name, draw(NAMES)])
    if kind == "dates":
        freq = draw(st.sampled_from(["D", "h", "2min", "ME", "W-MON", "B", "QS-JAN"]))
        tz = draw(st.sampled_from([None, "UTC", "Asia/Tokyo"]))
        start = pd.Timestamp("2000-01-01") + pd.Timedelta(minutes=draw(st.integers(0, 10**6)))
        if draw(st.booleans()):
            return pd.timedelta_range(start=pd.Timedelta(0), periods=n, freq="h", name=name)
        return pd.date_range(start, periods=n, freq=freq, tz=tz, unit=draw(UNITS), name=name)
    labels = draw(rows(n, LABELS))
    return pd.Index(object_array(labels), dtype=object, name=name, tupleize_cols=False)


@st.composite
def column_labels(draw: st.DrawFn, k: int) -> pd.Index:
    kind = draw(st.sampled_from(["inferred", "objects", "tuples", "range", "index"]))
    if kind == "range":
        return pd.RangeIndex(k)
    if kind == "index":
        return draw(indexes(k))
    if kind == "tuples":
        tuples = draw(rows(k, st.tuples(st.text(max_size=2), st.integers(0, 2))))
        return pd.MultiIndex.from_tuples(tuples, names=[None, None])
    labels = draw(rows(k, LABELS))
    if kind == "objects":
        return pd.Index(object_array(labels), dtype=object, tupleize_cols=False)
    return pd.Index(labels, tupleize_cols=False)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    n, k = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    data = {i: draw(columns(n)) for i in range(k)}
    frame = pd.DataFrame(data) if data else pd.DataFrame(index=pd.RangeIndex(n))
    frame.index = draw(indexes(n))
    frame.columns = draw(column_labels(k))
    frame.attrs = draw(ATTRS)
    if frame.index.is_unique and frame.columns.is_unique and draw(st.booleans()):
        frame = frame.set_flags(allows_duplicate_labels=False)
    return frame


@st.composite
def series(draw: st.DrawFn) -> pd.Series:
    n = draw(st.integers(0, 6))
    value = draw(columns(n))
    value.index = draw(indexes(n))
    value.name = draw(NAMES)
    value.attrs = draw(ATTRS)
    return value


class TestPandas:
    @SETTINGS
    @given(frames())
    def test_any_frame_roundtrips_exactly(self, frame: pd.DataFrame) -> None:
        assert_same(roundtrip(frame), frame)

    @SETTINGS
    @given(series())
    def test_any_series_roundtrips_exactly(self, value: pd.Series) -> None:
        assert_same(roundtrip(value), value)

    @SETTINGS
    @given(st.integers(0, 6).flatmap(indexes))
    def test_any_index_roundtrips_exactly(self, index: pd.Index) -> None:
        assert_same(roundtrip(index), index)

    @pytest.mark.parametrize(
        "frame",
        [
            pytest.param(pd.DataFrame(), id="empty"),
            pytest.param(pd.DataFrame(index=pd.Index(["a", "b"], name="k")), id="no-columns"),
            pytest.param(pd.DataFrame(columns=["a", "b"]), id="no-rows-object-columns"),
            pytest.param(pd.DataFrame([[1, 2]], columns=["a", "a"]), id="duplicate-labels"),
            pytest.param(pd.DataFrame([[1, 2, 3]], columns=[0, "0", (0,)]), id="labels-alike"),
            pytest.param(pd.DataFrame([[1, 2]], columns=[np.int64(1), 1]), id="numpy-label"),
            pytest.param(pd.DataFrame([[1, 2]], columns=[1.0, -0.0]), id="float-labels"),
            pytest.param(
                pd.DataFrame([[1, 2]], columns=pd.Index([dt.date(2020, 1, 1), None])),
                id="date-labels",
            ),
            pytest.param(
                pd.DataFrame({"x": [1]}).set_index(pd.Index([pd.NA], dtype=object)), id="na-label"
            ),
        ],
    )
    def test_edge_frames(self, frame: pd.DataFrame) -> None:
        assert_same(roundtrip(frame), frame)

    @pytest.mark.parametrize(
        "value",
        [
            pd.Timestamp("2020-01-01 00:00:00.5", tz="Europe/Paris"),
            pd.Timestamp(2**62, unit="ns"),
            pd.Timedelta(1, "us"),
            pd.Period("2020-01", "M"),
            pd.Interval(0.5, 1.5, closed="both"),
            pd.NaT,
            pd.NA,
        ],
        ids=repr,
    )
    def test_pandas_scalars(self, value: Any) -> None:
        back = roundtrip({"k": value})["k"]
        assert (type(back), repr(back), getattr(back, "unit", None)) == (
            type(value),
            repr(value),
            getattr(value, "unit", None),
        )
        named = pd.Series([1.5], name=value)  # as df.loc[timestamp] names a row
        assert_same(roundtrip(named), named)

    def test_a_timestamp_a_series_would_change_is_refused(self) -> None:
        """A wall time that does not exist in its zone (skipped by DST): pandas moves it."""
        skipped = pd.Timestamp(
            dt.datetime(2021, 3, 28, 2, 30, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
        )
        message = refusal(pd.Series([1], name=skipped))
        assert "which a Series holds as Timestamp('2021-03-28 03:30:00+0200'" in message
        stores(pd.Series([1], name=pd.Series([skipped]).iloc[0]))

    def test_nan_and_na_and_none_stay_apart(self) -> None:
        nan_na = pd.arrays.FloatingArray(np.array([np.nan, 0.0, -0.0]), np.array([0, 1, 0], bool))
        frame = pd.DataFrame(
            {
                "masked": nan_na,
                "none": pd.Series(object_array(["a", None, None]), dtype=object),
                "nan": pd.Series(object_array(["a", math.nan, "b"]), dtype=object),
                "na": pd.Series(object_array([pd.NA, "a", "b"]), dtype=object),
            }
        )
        back = roundtrip(frame)
        assert_same(back, frame)
        assert back["masked"].isna().tolist() == [False, True, False]
        assert math.isnan(back["masked"].array[0]) and math.copysign(1, back["masked"][2]) == -1
        assert [type(x) for x in back["none"]] == [str, type(None), type(None)]
        assert [type(x) for x in back["nan"]] == [str, float, str]
        assert back["na"][0] is pd.NA

    def test_units_zones_and_freq_kept(self) -> None:
        index = pd.date_range("2021-03-27", periods=4, freq="h", tz="Europe/Paris", unit="s")
        frame = pd.DataFrame(
            {
                "ms": pd.Series(index.tz_localize(None).as_unit("ms")).values,
                "paris": index.as_unit("us"),
                "fixed": index.tz_convert(dt.timezone(dt.timedelta(hours=-3), "BRT")),
                "span": pd.to_timedelta([1, None, 3, 4], unit="s").as_unit("ms"),
            },
            index=index,
        )
        back = roundtrip(frame)
        assert_same(back, frame)
        assert back.index.freq == pd.offsets.Hour()
        assert str(back.index.dtype) == "datetime64[s, Europe/Paris]"
        assert back["fixed"].dt.tz.tzname(None) == "BRT"
        assert back["span"].dtype == np.dtype("m8[ms]")

    def test_attrs_flags_and_names(self) -> None:
        value = pd.Series([1, 2], name=("a", 1), index=pd.Index(["x", "y"], name=0))
        value.attrs = {"source": ["a", (1, 2)], "when": dt.date(2020, 1, 1), "b": [bytearray(b"x")]}
        value = value.set_flags(allows_duplicate_labels=False)
        back = roundtrip(value)
        assert_same(back, value)
        assert back.flags.allows_duplicate_labels is False
        assert back.attrs["source"][1] == (1, 2)
        assert type(back.attrs["b"][0]) is bytearray

    def test_a_frame_inside_attrs_and_containers(self) -> None:
        inner = pd.DataFrame({"a": [1.5]})
        outer = pd.Series([1])
        outer.attrs = {"inner": inner}
        back = roundtrip({"frames": [outer, (inner,)], "index": pd.RangeIndex(3)})
        assert_same(back["frames"][0], outer)
        assert_same(back["frames"][0].attrs["inner"], inner)
        assert_same(back["frames"][1][0], inner)

    def test_decoded_frames_are_new_and_writable(self) -> None:
        frame = pd.DataFrame({"i": [1, 2], "f": [1.0, 2.0], "s": ["a", "b"]})
        back = roundtrip(frame)
        back.iloc[0, 0] = 10
        back.loc[1, "f"] = 5.0
        back.loc[0, "s"] = "z"
        assert back.values.tolist() == [[10, 1.0, "z"], [2, 5.0, "b"]]
        assert frame["i"].tolist() == [1, 2]
        single = roundtrip(pd.Series([1.5, 2.5]))
        single.iloc[0] = 0.5
        single += 1
        assert single.tolist() == [1.5, 3.5]

    def test_same_frame_same_bytes(self) -> None:
        frame = stable_frame()
        again = stable_frame()
        assert encode(frame) == encode(again)
        assert encode(roundtrip(frame)) == encode(frame)

    def test_nulls_leave_no_trace_in_the_bytes(self) -> None:
        """A masked slot's hidden value is not stored: equal frames, equal bytes."""
        a = pd.Series(pd.arrays.IntegerArray(np.array([1, 7]), np.array([False, True])))
        b = pd.Series(pd.arrays.IntegerArray(np.array([1, 0]), np.array([False, True])))
        assert encode(a) == encode(b)


def stable_frame() -> pd.DataFrame:
    """A frame of many kinds, built the same way here and in the subprocess below."""
    frame = pd.DataFrame(
        {
            "i": [1, 2, 3],
            "s": ["b", None, "a"],
            "c": pd.Categorical(["x", "y", "x"], categories=["y", "x"], ordered=True),
            "t": pd.date_range("2020", periods=3, tz="Europe/Paris"),
            "m": pd.array([1, None, 3], dtype="Int64"),
            ("t", 1): [b"x", b"y", b"z"],
        },
        index=pd.MultiIndex.from_product([["k"], [3, 1, 2]], names=["a", None]),
    )
    frame.attrs = {"tags": {"b", "a", "c"}, "n": frozenset({"x", "y"})}
    return frame


def test_equal_frames_give_equal_bytes_in_other_processes() -> None:
    """Strings hash differently in each process; the bytes (so the data version) must not."""
    source = Path(__file__).read_text()
    helper = source[source.index("def stable_frame") : source.index("def test_equal_frames")]
    script = (
        textwrap.dedent(
            """
        import datetime as dt, hashlib, sys
        import numpy as np, pandas as pd, polars as pl, pyarrow as pa
        from flowdeco._core._codec import encode
        """
        )
        + helper
        + textwrap.dedent(
            """
        values = [stable_frame(), pl.DataFrame({"s": ["b", "a"], "c": ["x", "y"]}),
                  pa.table({"a": [1, None]}, metadata={"k": "v"})]
        print(" ".join(hashlib.sha256(encode(v)).hexdigest() for v in values))
        """
        )
    )
    here = " ".join(
        hashlib.sha256(encode(v)).hexdigest()
        for v in [
            stable_frame(),
            pl.DataFrame({"s": ["b", "a"], "c": ["x", "y"]}),
            pa.table({"a": [1, None]}, metadata={"k": "v"}),
        ]
    )
    for seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert done.stdout.split() == here.split()


# --- polars -----------------------------------------------------------------------------------

POLARS_COLUMNS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    *((d, st.integers(-(2**7), 2**7 - 1)) for d in (pl.Int8, pl.Int16, pl.Int32, pl.Int64)),
    *((d, st.integers(0, 2**8 - 1)) for d in (pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)),
    (pl.Float32, st.floats(width=32)),
    (pl.Float64, st.floats()),
    (pl.Boolean, st.booleans()),
    (pl.String, st.text(max_size=4)),
    (pl.Binary, st.binary(max_size=4)),
    (pl.Date, st.dates()),
    (pl.Time, st.times()),
    (pl.Datetime("ms"), st.datetimes(min_value=dt.datetime(1800, 1, 1))),
    (pl.Datetime("us", "Asia/Tokyo"), st.datetimes(timezones=st.just(dt.timezone.utc))),
    (pl.Duration("ns"), st.timedeltas(min_value=dt.timedelta(-999), max_value=dt.timedelta(999))),
    (pl.Categorical, st.sampled_from(["a", "b", "c"])),
    (pl.Enum(["z", "a", "m"]), st.sampled_from(["a", "m"])),
    (pl.Decimal(10, 3), st.decimals(-(10**6), 10**6, places=3)),
    (pl.List(pl.Int64), st.lists(st.integers(-9, 9), max_size=3)),
    (pl.Array(pl.Int16, 2), st.lists(st.integers(-9, 9), min_size=2, max_size=2)),
    (
        pl.Struct({"a": pl.Int8, "b": pl.String}),
        st.fixed_dictionaries({"a": st.integers(0, 9), "b": st.text(max_size=2)}),
    ),
    (pl.Null, st.none()),
]


@st.composite
def polars_series(draw: st.DrawFn, n: int, name: str = "") -> pl.Series:
    dtype, elements = draw(st.sampled_from(POLARS_COLUMNS))
    return pl.Series(name, draw(rows(n, elements | st.none())), dtype=dtype)


@st.composite
def polars_frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 5))
    names = draw(
        st.lists(st.text(max_size=4).filter(lambda s: "\0" not in s), unique=True, max_size=5)
    )
    frame = pl.DataFrame({name: draw(polars_series(n, name)) for name in names})
    return frame if names else pl.DataFrame(height=n)


class TestPolars:
    @SETTINGS
    @given(polars_frames())
    def test_any_frame_roundtrips_exactly(self, frame: pl.DataFrame) -> None:
        assert_same(roundtrip(frame), frame)

    @SETTINGS
    @given(st.integers(0, 5).flatmap(lambda n: polars_series(n, name="s")))
    def test_any_series_roundtrips_exactly(self, value: pl.Series) -> None:
        assert_same(roundtrip(value), value)

    def test_names_polars_would_rename(self) -> None:
        assert_same(roundtrip(pl.DataFrame({"": [1], "b": [2]})), pl.DataFrame({"": [1], "b": [2]}))
        assert_same(roundtrip(pl.Series("", [1])), pl.Series("", [1]))

    def test_frame_without_columns_keeps_its_height(self) -> None:
        frame = pl.DataFrame(height=3)
        assert roundtrip(frame).shape == (3, 0)


# --- pyarrow ----------------------------------------------------------------------------------

ARROW_COLUMNS: list[tuple[Any, st.SearchStrategy[Any]]] = [
    (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    (pa.uint8(), st.integers(0, 255)),
    (pa.float32(), st.floats(width=32, allow_nan=False)),
    (pa.bool_(), st.booleans()),
    (pa.string(), st.text(max_size=4)),
    (pa.large_binary(), st.binary(max_size=4)),
    (
        pa.timestamp("ns", tz="America/New_York"),
        st.datetimes(
            dt.datetime(1800, 1, 1), dt.datetime(2200, 1, 1), timezones=st.just(dt.timezone.utc)
        ),
    ),
    (pa.date32(), st.dates()),
    (pa.decimal128(12, 2), st.decimals(-(10**6), 10**6, places=2)),
    (pa.list_(pa.string()), st.lists(st.text(max_size=2), max_size=2)),
    (pa.struct([("x", pa.int8())]), st.fixed_dictionaries({"x": st.integers(0, 9)})),
    (pa.dictionary(pa.int16(), pa.string()), st.sampled_from(["a", "b"])),
    (
        pa.map_(pa.string(), pa.int8()),
        st.lists(st.tuples(st.text(max_size=1), st.integers(0, 9)), max_size=2),
    ),
    (pa.null(), st.none()),
    (pa.fixed_shape_tensor(pa.int8(), [2]), st.lists(st.integers(0, 9), min_size=2, max_size=2)),
]


def arrow_column(draw: st.DrawFn, n: int) -> Any:
    kind, elements = draw(st.sampled_from(ARROW_COLUMNS))
    values = draw(rows(n, elements | st.none()))
    if isinstance(kind, pa.BaseExtensionType):
        return pa.ExtensionArray.from_storage(kind, pa.array(values, kind.storage_type))
    return pa.array(values, kind)


@st.composite
def arrow_tables(draw: st.DrawFn) -> Any:
    n = draw(st.integers(0, 6))
    names = draw(st.lists(st.text(max_size=3), max_size=4))  # duplicates allowed in Arrow
    arrays = [arrow_column(draw, n) for _ in names]
    metadata = draw(st.none() | st.dictionaries(st.text(max_size=3), st.text(max_size=3)))
    table = pa.Table.from_arrays(arrays, names=names, metadata=metadata)
    if draw(st.booleans()):  # several chunks
        cut = draw(st.integers(0, n))
        table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    return table


class TestArrow:
    @SETTINGS
    @given(arrow_tables())
    def test_any_table_roundtrips_exactly(self, table: Any) -> None:
        assert_same(roundtrip(table), table)

    @SETTINGS
    @given(arrow_tables())
    def test_any_record_batch_roundtrips_exactly(self, table: Any) -> None:
        batch = table.combine_chunks().to_batches()
        assume(len(batch) == 1)
        assert_same(roundtrip(batch[0]), batch[0])

    def test_nan_payloads_and_signs_are_kept(self) -> None:
        values = np.array([np.nan, -np.nan, -0.0, np.inf], dtype=np.float64)
        back = roundtrip(pa.table({"f": values}))
        assert back.column("f").to_numpy().tobytes() == values.tobytes()


# --- in a pipeline ----------------------------------------------------------------------------


@fd.node
def orders() -> pd.DataFrame:
    frame = pd.DataFrame(
        {"sku": ["a", "b", "a"], "qty": [1, 2, 3], "price": pd.array([2.5, None, 1.0], "Float64")},
        index=pd.date_range("2024-01-01", periods=3, freq="D", name="day"),
    )
    frame.attrs = {"source": "shop"}
    return frame


@fd.node
def by_sku(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.groupby("sku").agg(qty=("qty", "sum"), price=("price", "max"))


@fd.node
def totals(by_sku: pd.DataFrame) -> pd.Series:
    return by_sku["qty"].astype("category")


@fd.node
def as_polars(by_sku: pd.DataFrame) -> pl.DataFrame:
    return pl.from_pandas(by_sku.reset_index())


@fd.node
def as_arrow(as_polars: pl.DataFrame) -> pa.Table:
    return as_polars.to_arrow()


def test_a_pipeline_of_frames_is_fully_cached_on_its_second_run(tmp_path: Path) -> None:
    pipe = fd.Pipeline([orders, by_sku, totals, as_polars, as_arrow])
    with warnings.catch_warnings():
        warnings.simplefilter("error", fd.CheckpointWarning)
        first = pipe.run(store=tmp_path)
        second = pipe.run(store=tmp_path)
    assert set(first.status.values()) == {fd.Status.SUCCEEDED}
    assert second.status == dict.fromkeys(first.status, fd.Status.CACHED)
    for name in first.status:
        assert_same(second[name], first[name])


# --- refusals, and the advice they give -------------------------------------------------------


def refusal(value: Any) -> str:
    with pytest.raises(UnsupportedValueError) as info:
        encode(value, node="n")
    message = str(info.value)
    assert message.endswith("set checkpoint=False on the node"), message
    return message


def advice(message: str, pattern: str) -> str:
    found = re.search(pattern, message)
    assert found is not None, message
    return found.group(1)


class Frame(pd.DataFrame):
    pass


class PolarsFrame(pl.DataFrame):
    pass


class Uuidish(pa.ExtensionType):
    def __init__(self) -> None:
        super().__init__(pa.binary(2), "tests.uuidish")

    def __arrow_ext_serialize__(self) -> bytes:
        return b""

    @classmethod
    def __arrow_ext_deserialize__(cls, storage_type: Any, serialized: bytes) -> Uuidish:
        return cls()


def stores(value: Any) -> None:
    """``value`` is stored and comes back exactly."""
    assert_same(roundtrip(value), value)


class TestRefused:
    @pytest.mark.parametrize(
        ("column", "words"),
        [
            pytest.param(pd.Series(object_array([1, "a"])), "holding int, str values", id="mixed"),
            pytest.param(
                pd.Series(object_array([dt.date(2020, 1, 1)])), "holding date", id="dates"
            ),
            pytest.param(
                pd.Series(object_array([np.str_("a")]), dtype=object),
                "holding str_",
                id="str-subclass",
            ),
            pytest.param(
                pd.Series(object_array(["a", None, math.nan]), dtype=object),
                "NoneType, float, str",
                id="two-missing",
            ),
        ],
    )
    def test_object_columns_of_mixed_objects(self, column: pd.Series, words: str) -> None:
        frame = pd.DataFrame({"ok": range(len(column)), ("odd", 1): column})
        message = refusal(frame)
        assert message.startswith("node 'n': n[('odd', 1)] has dtype object holding ")
        assert words in message
        fix = advice(message, r"convert it to one dtype \((\.astype\(str\))")
        stores(frame.assign(odd=eval("column" + fix)).drop(columns=[("odd", 1)]))

    def test_complex_column(self) -> None:
        frame = pd.DataFrame({"z": [1 + 2j]})
        message = refusal(frame)
        assert advice(message, r"(np\.real\(x\), np\.imag\(x\))") == "np.real(x), np.imag(x)"
        x = frame["z"]
        stores(pd.DataFrame({"re": np.real(x), "im": np.imag(x)}))

    def test_non_native_byte_order(self) -> None:
        value = pd.Series(np.array([1, 2], dtype=np.dtype(np.int32).newbyteorder()))
        fix = advice(refusal(value), r"convert it with (\.astype\('\w+'\))")
        stores(eval("value" + fix))

    def test_sparse(self) -> None:
        value = pd.Series([0, 0, 3], dtype=pd.SparseDtype("int64"))
        fix = advice(refusal(value), r"densify it with (\.sparse\.to_dense\(\))")
        stores(eval("value" + fix))

    def test_time_zone_of_another_library(self) -> None:
        dateutil_tz = pytest.importorskip("dateutil.tz")
        value = pd.Series(pd.to_datetime(["2020-06-01"])).dt.tz_localize(
            dateutil_tz.gettz("Europe/Paris")
        )
        fix = advice(refusal(value), r"convert it with (\.tz_convert\('[\w/]+'\))")
        assert fix == ".tz_convert('Europe/Paris')"
        fixed = eval("value.dt" + fix)
        stores(fixed)
        assert isinstance(fixed.dt.tz, zoneinfo.ZoneInfo)

    def test_freq_its_name_does_not_rebuild(self) -> None:
        x = pd.bdate_range("2020-01-01", periods=4, freq="C", holidays=["2020-01-02"])
        fix = advice(
            refusal(pd.Series(range(4), index=x)), r"drop it with (pandas\.\w+\(x, freq=None\))"
        )
        stores(pd.Series(range(4), index=eval(fix, {"pandas": pd, "x": x})))

    def test_categorical_level_of_a_multiindex(self) -> None:
        x = pd.MultiIndex.from_arrays([pd.CategoricalIndex(["a", "b"]), [1, 2]])
        fix = advice(refusal(x), r"convert that level with (\.set_levels\(.*\))")
        stores(eval("x" + fix))

    def test_frame_subclasses(self) -> None:
        for x, module in ((Frame({"a": [1]}), pd), (PolarsFrame({"a": [1]}), pl)):
            message = refusal([x])
            assert "a subclass of" in message
            fix = advice(message, r"store (\w+\.DataFrame\(x\)) instead of x")
            stores(eval(fix, {module.__name__: module, "x": x}))

    @pytest.mark.parametrize(
        "x",
        [
            pytest.param(pd.Interval(0, 1.5), id="interval-of-mixed-bounds"),
            pytest.param(pd.Categorical(["a"]), id="categorical"),
            pytest.param(pl.LazyFrame({"a": [1]}), id="lazyframe"),
            pytest.param(pa.array([1, None]), id="arrow-array"),
            pytest.param(pa.chunked_array([[1], [2]]), id="chunked-array"),
            pytest.param(pa.scalar("a"), id="arrow-scalar"),
        ],
    )
    def test_other_values_of_these_libraries(self, x: Any) -> None:
        fix = advice(refusal(x), r"store (.*) instead of x")
        stores(eval(fix, {"pandas": pd, "pyarrow": pa, "x": x}))

    def test_what_nothing_converts_says_checkpoint_false(self) -> None:
        message = refusal(pd.DataFrame({"a": [1]}).groupby("a"))
        assert message.endswith("DataFrame, Series or Index; set checkpoint=False on the node")

    def test_polars_object_and_int128(self) -> None:
        message = refusal(pl.DataFrame({"o": pl.Series([object()], dtype=pl.Object)}))
        assert message.startswith("node 'n': n[\"o\"] has polars dtype Object")
        x = pl.DataFrame({"i": pl.Series([2**70], dtype=pl.Int128)})
        fix = advice(refusal(x), r"or (\.cast\(pl\.String\))")
        stores(x.with_columns(eval("pl.col('i')" + fix)))

    def test_polars_names_holding_nul(self) -> None:
        x = pl.DataFrame({"a\0b": [1]})
        fix = advice(refusal(x), r"rename it \((\.rename\(.*\))\)")
        stores(eval("x" + fix))
        x = pl.Series("\0", [1])
        fix = advice(refusal(x), r"rename it \((\.rename\(.*\))\)")
        stores(eval("x" + fix))

    def test_arrow_extension_type_of_python(self) -> None:
        x = pa.ExtensionArray.from_storage(Uuidish(), pa.array([b"ab", None], pa.binary(2)))
        fix = advice(
            refusal(pa.table({"u": x})), r"store its storage array instead \((\.storage)\)"
        )
        stores(pa.table({"u": eval("x" + fix)}))

    def test_unstorable_attrs_are_named_by_their_path(self) -> None:
        frame = pd.DataFrame({"a": [1]})
        frame.attrs = {"lock": contextlib.nullcontext()}
        message = refusal(frame)
        assert message.startswith("node 'n': n.attrs[\"lock\"] has type contextlib.nullcontext")

    def test_without_pyarrow(self, tmp_path: Path) -> None:
        """Encoding refuses (pip install, or checkpoint=False, which then works); decoding says
        to install it."""
        data = encode(pd.DataFrame({"a": [1]}))
        script = textwrap.dedent(
            f"""
            import sys, warnings
            sys.modules["pyarrow"] = None  # import pyarrow fails, as where it is not installed
            import pandas as pd
            import flowdeco as fd
            from flowdeco._core._codec import decode, encode
            try:
                encode(pd.DataFrame({{"a": [1]}}), node="n")
            except fd.UnsupportedValueError as error:
                print(error)
            try:
                decode(bytes.fromhex("{data.hex()}"))
            except fd.CorruptDataError as error:
                print(error)

            @fd.node
            def frame() -> pd.DataFrame:
                return pd.DataFrame({{"a": [1]}})

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fd.Pipeline([frame]).run(store={str(tmp_path)!r})
            print(len(caught), caught[0].category.__name__ if caught else "-")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                fd.Pipeline([fd.node(checkpoint=False)(frame.__wrapped__)]).run(store={str(tmp_path)!r})
            print(len(caught))
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        )
        encoded, decoded, warned, fixed = done.stdout.strip().splitlines()
        assert encoded == (
            "node 'n': n is a pandas.DataFrame, which flowdeco stores through Arrow, but pyarrow "
            "is not installed: pip install 'flowdeco[arrow]', or set checkpoint=False on the node"
        )
        assert "pip install 'flowdeco[arrow]' to load it" in decoded
        assert warned == "1 CheckpointWarning"
        assert fixed == "0"

    def test_the_arrow_extra_installs_pyarrow(self) -> None:
        pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
        assert 'arrow = ["pyarrow>=15"]' in pyproject


def test_flowdeco_imports_none_of_these_libraries() -> None:
    code = (
        "import sys, flowdeco, flowdeco._core._codec as c; "
        "assert c.decode(c.encode([1, (2,)])) == [1, (2,)]; "
        "assert not {'pandas', 'polars', 'pyarrow'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_decoding_imports_only_the_library_the_data_names() -> None:
    data = encode(pa.table({"a": [1]}))
    code = (
        "import sys, flowdeco._core._codec as c; "
        f"c.decode(bytes.fromhex('{data.hex()}')); "
        "assert not {'pandas', 'polars'} & set(sys.modules), sys.modules.keys()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hostile bytes ----------------------------------------------------------------------------


def frame_data(state: dict[str, Any]) -> bytes:
    return msgpack.packb([FRAME, state])


def described(value: Any) -> dict[str, Any]:
    """The description the codec packs for ``value`` (decoded, tags built)."""
    state: dict[str, Any] = msgpack.unpackb(encode(value), strict_map_key=False, raw=False)[1]
    return state


def with_data(state: dict[str, Any], key: str, arrays: dict[str, Any]) -> dict[str, Any]:
    batch = pa.RecordBatch.from_pydict(arrays)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write(batch)
    return {**state, key: sink.getvalue().to_pybytes()}


SMALL = pd.DataFrame({"i": [1, 2], "s": ["a", None]}, index=pd.Index([3, 4], name="k"))


class TestHostile:
    @pytest.mark.parametrize(
        "state",
        [
            pytest.param({}, id="empty"),
            pytest.param({"kind": "pandas.Panel"}, id="unknown-kind"),
            pytest.param({"kind": 5}, id="kind-not-str"),
            pytest.param({"kind": "os.system"}, id="another-module"),
            pytest.param({**described(SMALL), "data": b"not arrow"}, id="not-arrow"),
            pytest.param({**described(SMALL), "data": "text"}, id="data-not-bytes"),
            pytest.param(
                {**described(SMALL), "dtypes": [["numpy", "|O"], ["string", "python", "NA"]]},
                id="object-dtype",
            ),
            pytest.param(
                {**described(SMALL), "dtypes": [["numpy", "<f8"], ["string", "python", "NA"]]},
                id="wrong-dtype",
            ),
            pytest.param({**described(SMALL), "dtypes": [["numpy", "<i8"]]}, id="arrays-to-spare"),
            pytest.param(
                {**described(SMALL), "dtypes": [["numpy", "<i8"]] * 3}, id="too-few-arrays"
            ),
            pytest.param(
                {**described(SMALL), "dtypes": [["pickle", "x"]] * 2}, id="unknown-array-kind"
            ),
            pytest.param(
                {**described(SMALL), "index": ["range", 0, 10**18, 1, None]}, id="index-length"
            ),
            pytest.param(
                {**described(SMALL), "index": ["range", 0.5, 2, 1, None]}, id="range-of-floats"
            ),
            pytest.param({**described(SMALL), "index": ["eval", "1"]}, id="unknown-index-kind"),
            pytest.param({**described(SMALL), "attrs": [1]}, id="attrs-not-dict"),
            pytest.param({**described(SMALL), "columns": ["objects", None, [1]]}, id="label-count"),
            pytest.param(
                with_data(described(SMALL), "data", {"k": [1, 2], "i": [1, 2], "s": [1, 2]}),
                id="ints-as-strings",
            ),
            pytest.param(
                with_data(described(SMALL), "data", {"k": [1, 2], "i": [1, None], "s": ["a", "b"]}),
                id="null-in-int64",
            ),
            pytest.param(
                {
                    **described(pd.Series(pd.Categorical(["a"]))),
                    "dtype": ["category", 1, ["index", ["object", "str", None], None, None]],
                },
                id="ordered-not-bool",
            ),
            pytest.param(
                {**described(pd.Series([1])), "dtype": ["masked", "object"]}, id="masked-object"
            ),
            pytest.param(
                {**described(pd.Series([1])), "dtype": ["period", "int64"]}, id="period-of-int"
            ),
            pytest.param(
                {
                    **described(pd.Series(["a"], dtype="string")),
                    "dtype": ["string", "pickle", "NA"],
                },
                id="string-storage",
            ),
            pytest.param(
                {
                    **described(pd.Series(pd.date_range("2020", periods=1, tz="UTC"))),
                    "dtype": ["datetimetz", "ns", ["zone", "../../etc/passwd"]],
                },
                id="zone-path",
            ),
            pytest.param(
                {
                    **described(pd.date_range("2020", periods=3)),
                    "index": ["index", ["numpy", "<M8[ns]"], None, "Q-NOPE"],
                },
                id="bad-freq",
            ),
            pytest.param(
                {
                    **described(pd.date_range("2020", periods=3)),
                    "index": ["index", ["numpy", "<M8[ns]"], None, "h"],
                },
                id="freq-that-does-not-fit",
            ),
            pytest.param(
                {
                    **described(pd.MultiIndex.from_arrays([[1, 2]])),
                    "index": ["multi", [None], None, [["objects", None, [1]]]],
                },
                id="code-out-of-range",
            ),
            pytest.param(
                {**described(pl.DataFrame({"a": [1]})), "schema": ["String"]},
                id="polars-dtype-changed",
            ),
            pytest.param(
                with_data(described(pl.DataFrame({"a": [1]})), "data", {"a": ["x"]}),
                id="polars-other-arrow",
            ),
            pytest.param(
                {**described(pa.table({"a": [1, 2]}).slice(0, 0)), "kind": "pyarrow.RecordBatch"},
                id="no-batch",
            ),
            pytest.param(
                {
                    **described(pa.concat_tables([pa.table({"a": [1]})] * 2)),
                    "kind": "pyarrow.RecordBatch",
                },
                id="two-batches",
            ),
        ],
    )
    def test_malformed_descriptions(self, state: dict[str, Any]) -> None:
        with pytest.raises(CorruptDataError):
            decode(frame_data(state))

    def test_description_not_a_dict(self) -> None:
        with pytest.raises(CorruptDataError, match="malformed DataFrame-like value"):
            decode(msgpack.packb([FRAME, [1]]))

    def test_arrow_data_out_of_bounds_is_caught_by_validation(self) -> None:
        """Offsets pointing past the data: a reader that skipped full validation would crash."""
        state = described(pd.Series(["abcdefgh"], dtype="string"))
        offsets = np.array([0, 8], dtype=np.int64).tobytes() + b"abcdefgh"
        assert state["data"].count(offsets) == 1
        past = np.array([0, 10**6], dtype=np.int64).tobytes() + b"abcdefgh"
        with pytest.raises(CorruptDataError, match="offset"):
            decode(frame_data({**state, "data": state["data"].replace(offsets, past)}))

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(SMALL, id="pandas"),
            pytest.param(pl.DataFrame({"a": [1, None], "s": ["x", "y"]}), id="polars"),
            pytest.param(pa.table({"a": [1, 2], "s": ["x", None]}), id="pyarrow"),
        ],
    )
    def test_every_truncation(self, value: Any) -> None:
        data = encode(value)
        for end in range(0, len(data), 3):
            with pytest.raises(CorruptDataError):
                decode(data[:end])

    @HOSTILE
    @given(
        st.sampled_from(
            [SMALL, stable_frame(), pl.DataFrame({"a": [1.5]}), pa.table({"a": ["x"]})]
        ),
        st.data(),
    )
    def test_damaged_data_decodes_or_is_corrupt(self, value: Any, draw: st.DataObject) -> None:
        data = bytearray(encode(value))
        for _ in range(draw.draw(st.integers(1, 4))):
            data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
        with contextlib.suppress(CorruptDataError):
            decode(bytes(data))


# --- the docs ---------------------------------------------------------------------------------


def test_the_docs_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (Path(__file__).parent.parent / "docs" / "checkpoints.md").read_text()
    start = text.index("## DataFrames and Arrow tables")
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, "the section has no python block"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_frames"}
    for block in blocks:
        exec(compile(block, "docs/checkpoints.md", "exec"), namespace)  # noqa: S102
