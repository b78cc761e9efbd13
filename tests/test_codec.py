"""The checkpoint codec: exact round trips, registered types, clear refusals, hostile bytes."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import math
import pathlib
import pickle
import re
import struct
import subprocess
import sys
import threading
import time
import uuid
import warnings
from typing import TYPE_CHECKING, Any, NamedTuple
from zoneinfo import ZoneInfo

import attrs
import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdeco as fd
from flowdeco._core import _codec
from flowdeco._core import _errors as errors
from flowdeco._core._codec import decode, encode, register_type
from flowdeco._core._errors import ConfigurationError, CorruptDataError, UnsupportedValueError

if TYPE_CHECKING:
    from collections.abc import Iterator

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
HOSTILE = settings(SETTINGS, deadline=1000)  # each example must fail (or pass) within a second


def canon(value: Any) -> object:
    """A hashable form of ``value`` that differs whenever a type or a value differs, at any depth.

    nan equals nan here, -0.0 differs from 0.0, a tz-aware datetime differs from the same
    instant in another zone, and Decimal("1.0") differs from Decimal("1.00").
    """
    cls = type(value)
    if cls in (list, tuple):
        return (cls.__name__, tuple(canon(x) for x in value))
    if cls is dict:
        return ("dict", tuple((canon(k), canon(v)) for k, v in value.items()))
    if cls in (set, frozenset):
        return (cls.__name__, frozenset(canon(x) for x in value))
    if cls in (float, complex, decimal.Decimal, dt.datetime, dt.time, bytearray):
        return (cls.__name__, repr(value))
    return (cls, value)


def roundtrip(value: Any) -> Any:
    return decode(encode(value))


def assert_roundtrips(value: Any) -> None:
    assert canon(roundtrip(value)) == canon(value)


# --- each type ----------------------------------------------------------------------------------


class TestBuiltins:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(None, id="none"),
            pytest.param([True, 1, False, 0, 1.0], id="bool-not-int"),
            pytest.param(
                [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1], id="int-edges"
            ),
            pytest.param([10**1000, -(10**1000), 2**100_000], id="huge-ints"),
            pytest.param([math.nan, math.inf, -math.inf, -0.0, 0.0, 5e-324], id="floats"),
            pytest.param([1 + 2j, complex(math.nan, -0.0), complex(math.inf, 1)], id="complex"),
            pytest.param(["a", b"a", bytearray(b"a"), "", b"", bytearray()], id="str-bytes"),
            pytest.param(([1], (2,), [(3, [4])], ()), id="tuple-vs-list"),
            pytest.param([{1, "a", (2, 3)}, frozenset({frozenset({1})}), set()], id="sets"),
            pytest.param(
                {3: "a", "x": 1, (1, 2): None, None: 0, 1.5: 2, frozenset({1}): 3, True: 4}
            ),
            pytest.param([dt.date(1, 1, 1), dt.date(9999, 12, 31)], id="dates"),
            pytest.param(
                [dt.timedelta(days=-5, microseconds=3), dt.timedelta.max], id="timedeltas"
            ),
            pytest.param(
                [dt.time(23, 59, 59, 999999), dt.time(1, tzinfo=dt.timezone.utc)], id="times"
            ),
            pytest.param([decimal.Decimal(s) for s in ("1.10", "-0", "NaN", "sNaN", "-Inf")]),
            pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
            pytest.param(msgpack.Timestamp(1, 2), id="msgpack-timestamp"),
        ],
    )
    def test_roundtrips(self, value: Any) -> None:
        assert_roundtrips(value)

    def test_dict_keeps_key_order_and_key_types(self) -> None:
        value = {2: "b", 1: "a", "1": "c", 1.5: "d", (1,): "e"}
        back = roundtrip(value)
        assert list(back) == [2, 1, "1", 1.5, (1,)]
        assert [type(k) for k in back] == [int, int, str, float, tuple]

    def test_bytearray_anywhere_comes_back_as_bytearray(self) -> None:
        value = {"top": bytearray(b"x"), "deep": [({"k": (bytearray(b"y"),)},)]}
        assert_roundtrips(value)
        assert_roundtrips(bytearray(b"z"))

    def test_decoded_containers_are_new_and_mutable(self) -> None:
        back = roundtrip({"rows": [1], "buf": bytearray(b"a")})
        back["rows"].append(2)
        back["buf"] += b"b"
        assert back == {"rows": [1, 2], "buf": bytearray(b"ab")}


class TestDatetimes:
    def test_naive_datetime(self) -> None:
        assert_roundtrips(dt.datetime(2024, 2, 29, 12, 30, 15, 123456))

    def test_zoneinfo_keeps_its_key_and_fold(self) -> None:
        # 01:30 happens twice in New York that day; fold=1 is the second, an hour later.
        value = dt.datetime(2020, 11, 1, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1)
        back = roundtrip(value)
        assert type(back.tzinfo) is ZoneInfo
        assert back.tzinfo.key == "America/New_York"
        assert back.fold == 1
        assert back.utcoffset() == dt.timedelta(hours=-5)

    def test_fixed_offset_with_microseconds(self) -> None:
        tz = dt.timezone(dt.timedelta(hours=-3, microseconds=7))
        assert_roundtrips(dt.datetime(2020, 1, 1, tzinfo=tz))
        assert roundtrip(dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)).tzinfo is dt.timezone.utc

    def test_other_tzinfo_becomes_its_fixed_offset(self) -> None:
        class Plus2(dt.tzinfo):
            def utcoffset(self, when: dt.datetime | None) -> dt.timedelta:
                return dt.timedelta(hours=2)

            def dst(self, when: dt.datetime | None) -> dt.timedelta:
                return dt.timedelta(0)

            def tzname(self, when: dt.datetime | None) -> str:
                return "+2"

        value = dt.datetime(2020, 1, 1, 8, tzinfo=Plus2())
        back = roundtrip(value)
        assert back == value
        assert back.tzinfo == dt.timezone(dt.timedelta(hours=2))

    def test_tzinfo_without_offset_is_refused(self) -> None:
        class Nowhere(dt.tzinfo):
            def utcoffset(self, when: dt.datetime | None) -> None:
                return None

            def dst(self, when: dt.datetime | None) -> None:
                return None

            def tzname(self, when: dt.datetime | None) -> str:
                return "?"

        with pytest.raises(UnsupportedValueError, match=r"value\[0\] has .*no UTC offset"):
            encode([dt.datetime(2020, 1, 1, tzinfo=Nowhere())])

    def test_time_with_zoneinfo(self) -> None:
        back = roundtrip(dt.time(9, tzinfo=ZoneInfo("Europe/Paris")))
        assert back.tzinfo == ZoneInfo("Europe/Paris")


class TestPaths:
    @pytest.mark.parametrize(
        "value",
        [
            pathlib.PurePosixPath("/a/b c"),
            pathlib.PureWindowsPath(r"C:\Users\x"),
            pathlib.Path("relative/file.txt"),
            pathlib.Path.cwd(),
        ],
        ids=str,
    )
    def test_roundtrips(self, value: pathlib.PurePath) -> None:
        assert_roundtrips(value)

    def test_concrete_path_of_another_system_comes_back_pure(self) -> None:
        other = 3 if sys.platform != "win32" else 2  # WindowsPath here, PosixPath on Windows
        back = decode(msgpack.packb([msgpack.ExtType(13, b""), other, "x/y"]))
        assert type(back) in (pathlib.PureWindowsPath, pathlib.PurePosixPath)
        assert str(back).replace("\\", "/") == "x/y"


# --- subclasses and other refusals ----------------------------------------------------------------


class Text(str):
    pass


class Level(enum.IntEnum):
    LOW = 1


class Size(enum.IntEnum):  # never registered
    BIG = 1


class Pair(NamedTuple):
    left: int
    right: Any


class TestRefused:
    @pytest.mark.parametrize(
        ("value", "words"),
        [
            pytest.param(Text("x"), "subclass of str", id="str-subclass"),
            pytest.param(Size.BIG, "subclass of int", id="unregistered-intenum"),
            pytest.param(Pair(1, 2), "subclass of tuple", id="unregistered-namedtuple"),
            pytest.param(collections.OrderedDict(a=1), "subclass of dict", id="ordereddict"),
            pytest.param(collections.defaultdict(list), "subclass of dict", id="defaultdict"),
            pytest.param(object(), "which flowdeco cannot store", id="object"),
            pytest.param(memoryview(b"x"), "bytes(x)", id="memoryview"),
            pytest.param(msgpack.ExtType(1, b""), "ExtType", id="ext-type"),
            pytest.param(lambda: None, "cannot store", id="function"),
        ],
    )
    def test_refused_with_a_reason(self, value: object, words: str) -> None:
        with pytest.raises(UnsupportedValueError) as info:
            encode({"k": [value]})
        assert words in str(info.value)
        assert info.value.value_type is type(value)
        assert info.value.path == '["k"][0]'

    def test_error_names_node_path_type_and_fixes(self) -> None:
        class When:
            pass

        value = [{}, {}, {}, {"id": 3, "when": When()}]
        with pytest.raises(UnsupportedValueError) as info:
            encode(value, node="orders")
        error = info.value
        message = str(error)
        assert message.startswith("node 'orders': orders[3][\"when\"] has type ")
        assert "When" in message
        assert "register_type(When, encode=vars, decode=" in message
        assert "checkpoint=False" in message
        assert (error.node, error.path, error.value_type) == ("orders", '[3]["when"]', When)
        assert isinstance(error, TypeError)
        assert isinstance(error, errors.FlowdecoError)

    @pytest.mark.parametrize(
        ("value", "path"),
        [
            pytest.param((1, (2, object())), "[1][1]", id="tuple"),
            pytest.param({"s": {object()}}, '["s"]<set item>', id="set"),
            pytest.param({(1, object()): 1}, "<key (1, <object", id="dict-key"),
            pytest.param({'a"b': object()}, r'["a\"b"]', id="quoted-key"),
            pytest.param({5: object()}, "[5]", id="int-key"),
            pytest.param(object(), "", id="root"),
        ],
    )
    def test_path(self, value: object, path: str) -> None:
        with pytest.raises(UnsupportedValueError) as info:
            encode(value)
        assert info.value.path.startswith(path)
        assert str(info.value).startswith(f"value{path}")

    def test_value_containing_itself(self) -> None:
        loop: list[Any] = []
        loop.append(loop)
        with pytest.raises(
            UnsupportedValueError, match=r"^node 'n': n\[0\]\[0\].*\.\.\..*levels deep"
        ):
            encode(loop, node="n")

    def test_depth_limit(self) -> None:
        deep: Any = "leaf"
        for _ in range(511):
            deep = [deep]
        assert roundtrip(deep) == deep
        with pytest.raises(UnsupportedValueError, match="levels deep"):
            encode([deep])

    def test_unencodable_string(self) -> None:
        with pytest.raises(UnsupportedValueError, match="cannot be packed"):
            encode(["\ud800"], node="n")

    def test_error_pickles(self) -> None:
        with pytest.raises(UnsupportedValueError) as info:
            encode([object()], node="n")
        again = pickle.loads(pickle.dumps(info.value))
        assert str(again) == str(info.value)


# --- the advice refusals give, taken literally ---------------------------------------------------


class Plain:
    def __init__(self, a: int) -> None:
        self.a = a
        self.items = [a, (a,)]


class Marked(str):
    pass


class Code(str):
    def __new__(cls, value: str, suffix: str) -> Code:  # noqa: PYI034
        return super().__new__(cls, value + suffix)


class Rows(list):  # type: ignore[type-arg]
    def __init__(self, source: list[int], *, label: str) -> None:
        super().__init__(source)
        self.label = label


class Fixed(dict):  # type: ignore[type-arg]
    __slots__ = ()


class Amount(decimal.Decimal):
    __slots__ = ()


@dataclasses.dataclass
class Order:
    sku: str
    qty: int


@attrs.define
class Item:
    sku: str


class Moment(dt.datetime):
    pass


class Slotted:
    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x = 1


def marked(text: str) -> Marked:
    value = Marked(text)
    value.note = "kept"  # type: ignore[attr-defined]
    return value


def state_of(value: object) -> object:
    """What makes two instances equal here: the builtin value and the attributes."""
    bases = (str, list, dict, decimal.Decimal, int, tuple)
    plain = next((b(value) for b in bases if isinstance(value, b)), None)
    return (type(value), plain, canon(getattr(value, "__dict__", None)))


@pytest.fixture
def registry() -> Iterator[None]:
    """What a test registers is forgotten after it."""
    by_type, by_name = dict(_codec._by_type), dict(_codec._by_name)
    yield
    _codec._by_type.clear()
    _codec._by_type.update(by_type)
    _codec._by_name.clear()
    _codec._by_name.update(by_name)


def suggested_call(value: object) -> str:
    with pytest.raises(UnsupportedValueError) as info:
        encode({"k": [value]})
    found = re.search(
        r"; call (flowdeco\.register_type\(.*\)), or set checkpoint=False", str(info.value)
    )
    assert found is not None, str(info.value)
    return found.group(1)


class TestAdvice:
    @pytest.mark.parametrize(
        ("value", "form"),
        [
            pytest.param(Plain(3), "encode=vars, decode=lambda state:", id="plain-class"),
            pytest.param(Marked("a"), "encode=lambda v: (str(v), vars(v))", id="str-subclass"),
            pytest.param(marked("b"), "encode=lambda v: (str(v), vars(v))", id="with-attributes"),
            pytest.param(Code("a", "b"), "str.__new__(Code, state[0])", id="own-constructor"),
            pytest.param(Rows([1, 2], label="x"), "list.__new__(Rows)", id="list-own-init"),
            pytest.param(Fixed(a=1), "encode=dict, decode=Fixed)", id="slotted-dict"),
            pytest.param(Amount("1.10"), "encode=decimal.Decimal, decode=Amount)", id="decimal"),
            pytest.param(
                collections.OrderedDict(b=1, a=2), "decode=OrderedDict)", id="ordereddict"
            ),
            pytest.param(collections.Counter("abca"), "decode=Counter)", id="counter"),
            pytest.param(Size.BIG, "register_type(Size)", id="intenum"),
            pytest.param(Pair(1, "x"), "register_type(Pair)", id="namedtuple"),
            pytest.param(Order("a", 2), "register_type(Order)", id="dataclass"),
            pytest.param(Item("a"), "register_type(Item)", id="attrs"),
        ],
    )
    def test_register_type_as_suggested_stores_it(
        self, value: object, form: str, registry: None
    ) -> None:
        call = suggested_call(value)
        assert form in call
        cls = type(value)
        exec(call, {"flowdeco": fd, cls.__name__: cls, "decimal": decimal})  # noqa: S102
        back = roundtrip({"k": [value]})["k"][0]
        assert state_of(back) == state_of(value)

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(Slotted(), id="slotted-class"),
            pytest.param(threading.Lock(), id="lock"),
            pytest.param(lambda: None, id="function"),
            pytest.param(Moment(2020, 1, 1), id="datetime-subclass"),
            pytest.param(msgpack.ExtType(1, b""), id="ext-type"),
            pytest.param(["\ud800"], id="unencodable"),
        ],
    )
    def test_what_nothing_converts_gets_checkpoint_false(self, value: object) -> None:
        with pytest.raises(UnsupportedValueError) as info:
            encode(value)
        message = str(info.value)
        assert message.endswith("; set checkpoint=False on the node"), message
        assert "register_type" not in message

    @pytest.mark.parametrize(
        ("value", "pattern", "namespace"),
        [
            pytest.param(
                memoryview(b"ab"), r"store (bytes\(x\)) instead of x", {}, id="memoryview"
            ),
            pytest.param(
                collections.defaultdict(list, a=[1]),
                r"store (dict\(x\)) instead of x",
                {},
                id="defaultdict",
            ),
            pytest.param(None, r"store (x\.tolist\(\)) instead of x", {}, id="numpy-objects"),
        ],
    )
    def test_conversions_as_suggested_store_it(
        self, value: object, pattern: str, namespace: dict[str, Any]
    ) -> None:
        if value is None:
            np = numpy()
            value = np.array([1, "a", None], dtype=object)
        with pytest.raises(UnsupportedValueError) as info:
            encode(value)
        found = re.search(pattern, str(info.value))
        assert found is not None, str(info.value)
        fixed = eval(found.group(1), {**namespace, "x": value})
        assert_roundtrips(fixed)

    def test_a_failing_encode_function_says_what_to_fix(self, registry: None) -> None:
        class Broken:
            pass

        register_type(Broken, lambda obj: 1 / 0, lambda state: Broken())
        with pytest.raises(UnsupportedValueError, match=r"fix the encode function given to "
                           r"register_type\(Broken\), or set checkpoint=False"):  # fmt: skip
            encode(Broken())

    def test_in_a_pipeline_the_warning_s_advice_works(
        self, tmp_path: pathlib.Path, registry: None
    ) -> None:
        @fd.node
        def made() -> Plain:
            return Plain(7)

        pipe = fd.Pipeline([made])
        with pytest.warns(fd.CheckpointWarning) as caught:
            pipe.run(store=tmp_path)
        message = str(caught[0].message)
        found = re.search(
            r"; call (flowdeco\.register_type\(.*\)), or set checkpoint=False", message
        )
        assert found is not None, message
        exec(found.group(1), {"flowdeco": fd, "Plain": Plain})  # noqa: S102
        with warnings.catch_warnings():
            warnings.simplefilter("error", fd.CheckpointWarning)
            pipe.run(store=tmp_path)
            again = pipe.run(store=tmp_path)
        assert again.status["made"] is fd.Status.CACHED
        assert vars(again["made"]) == vars(Plain(7))

    def test_in_a_pipeline_checkpoint_false_silences_it(self, tmp_path: pathlib.Path) -> None:
        def lock() -> Any:
            return threading.Lock()

        with pytest.warns(fd.CheckpointWarning, match="set checkpoint=False on the node"):
            fd.Pipeline([fd.node(lock)]).run(store=tmp_path)
        with warnings.catch_warnings():
            warnings.simplefilter("error", fd.CheckpointWarning)
            result = fd.Pipeline([fd.node(checkpoint=False)(lock)]).run(store=tmp_path)
        assert result.status["lock"] is fd.Status.SUCCEEDED


# --- registered types -------------------------------------------------------------------------


@attrs.frozen
class Point:
    x: int
    y: float
    _label: str = "p"  # stored by name, passed back as label=
    area: int = attrs.field(init=False, default=0)  # not an init field: not stored


@dataclasses.dataclass(frozen=True)
class Line:
    start: Point
    end: Point
    tags: tuple[str, ...] = ()


class Color(enum.Enum):
    RED = "r"
    GREEN = ("g", 1)  # values need not be storable: members are stored by name


class Perm(enum.Flag):
    R = 4
    W = 2


class Money:
    def __init__(self, cents: int, currency: str) -> None:
        self.cents = cents
        self.currency = currency

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


class City(NamedTuple):
    name: str
    where: tuple[float, float]


register_type(Point)
register_type(Line)
register_type(Color)
register_type(Level)
register_type(Perm)
register_type(City)
register_type(Money, lambda m: (m.cents, m.currency), lambda state: Money(*state))


class TestRegistered:
    def test_attrs_class(self) -> None:
        point = Point(1, 2.5, label="a")
        back = roundtrip([point])
        assert back == [point]
        assert type(back[0]) is Point

    def test_dataclass_holding_attrs_instances(self) -> None:
        line = Line(Point(0, 0.0), Point(1, -0.0), tags=("a",))
        assert_roundtrips({"line": line, "also": (line,)})

    def test_enums(self) -> None:
        value = [Color.RED, Color.GREEN, Level.LOW, Perm.R | Perm.W, Perm(0)]
        back = roundtrip(value)
        assert back == value
        assert [type(v) for v in back] == [Color, Color, Level, Perm, Perm]

    def test_named_tuple(self) -> None:
        assert_roundtrips(City("Oslo", (59.9, 10.7)))

    def test_custom_functions(self) -> None:
        assert roundtrip({"price": Money(150, "EUR")}) == {"price": Money(150, "EUR")}

    def test_decorator_and_own_name(self) -> None:
        @register_type
        @dataclasses.dataclass
        class Cell:
            row: int
            data: bytearray

        back = roundtrip(Cell(1, bytearray(b"x")))
        assert back == Cell(1, bytearray(b"x"))
        assert type(back.data) is bytearray

    def test_another_process_with_the_same_class_name_decodes(self) -> None:
        @dataclasses.dataclass
        class Before:
            n: int

        @dataclasses.dataclass
        class After:  # the same class, defined again (another process, a re-run cell)
            n: int

        register_type(Before, name="tests.shared.Thing")
        data = encode(Before(1))
        register_type(After, name="tests.shared.Thing")
        assert decode(data) == After(1)
        assert b"tests.shared.Thing" in data  # named in the data, not pickled

    def test_unregistered_name_is_a_clear_decode_error(self) -> None:
        data = msgpack.packb([msgpack.ExtType(16, b"nowhere.Gone"), {}])
        with pytest.raises(CorruptDataError, match=r"nowhere\.Gone.*register_type"):
            decode(data)

    def test_fields_that_no_longer_fit_are_a_decode_error(self) -> None:
        data = msgpack.packb([msgpack.ExtType(16, b"tests.test_codec.Point"), {"z": 1}])
        with pytest.raises(CorruptDataError, match="Point"):
            decode(data)

    def test_error_path_goes_through_fields(self) -> None:
        with pytest.raises(UnsupportedValueError) as info:
            encode([Line(Point(0, 0.0), Point(1, 1.0), tags=(Text("t"),))], node="plan")
        assert str(info.value).startswith("node 'plan': plan[0].tags[0] has type")

    def test_encode_function_errors_are_chained(self) -> None:
        class Broken:
            pass

        def fail(obj: Broken) -> Any:
            raise RuntimeError("boom")

        register_type(Broken, fail, lambda state: Broken())
        with pytest.raises(UnsupportedValueError, match="RuntimeError: boom") as info:
            encode([Broken()])
        assert isinstance(info.value.__cause__, RuntimeError)
        assert info.value.path == "[0]"

    @pytest.mark.parametrize(
        ("args", "match"),
        [
            pytest.param((int,), "without register_type", id="builtin"),
            pytest.param((dt.datetime,), "without register_type", id="supported"),
            pytest.param((Money,), "needs encode= and decode=", id="plain-class"),
            pytest.param((Money, str), "both encode= and decode=", id="one-function"),
            pytest.param((Money(1, "x"),), "takes a class", id="instance"),
        ],
    )
    def test_bad_registrations(self, args: tuple[Any, ...], match: str) -> None:
        with pytest.raises(ConfigurationError, match=match):
            register_type(*args)


# --- strategies ---------------------------------------------------------------------------------

PARTS = st.lists(st.text(alphabet="ab._- ", min_size=1, max_size=4), min_size=1, max_size=3)
OFFSETS = st.timedeltas(min_value=dt.timedelta(hours=-23), max_value=dt.timedelta(hours=23))
TIMEZONES = st.none() | st.timezones() | st.builds(dt.timezone, OFFSETS)
HASHABLE_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**200), max_value=2**200)
    | st.floats()
    | st.complex_numbers()
    | st.text()
    | st.binary()
    | st.datetimes(timezones=TIMEZONES)
    | st.dates()
    | st.times(timezones=TIMEZONES)
    | st.timedeltas()
    | st.decimals(allow_nan=False)  # a signalling nan cannot be hashed
    | st.uuids()
    | PARTS.map(lambda p: pathlib.PurePosixPath(*p))
    | PARTS.map(lambda p: pathlib.PureWindowsPath(*p))
    | PARTS.map(lambda p: pathlib.Path(*p))
)
REGISTERED = (
    st.builds(Point, st.integers(), st.floats(allow_nan=False), label=st.text())
    | st.sampled_from(Color)
    | st.sampled_from(Perm)
    | st.builds(City, st.text(), st.tuples(st.floats(allow_nan=False), st.integers()))
)
SCALARS = HASHABLE_SCALARS | REGISTERED | st.binary().map(bytearray) | st.decimals()
HASHABLES = st.recursive(
    HASHABLE_SCALARS,
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=8,
)
KEYS = st.text(max_size=5) | st.integers() | st.tuples(HASHABLES, HASHABLES)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(KEYS, inner, max_size=4)
        | st.sets(HASHABLES, max_size=4)
        | st.frozensets(HASHABLES, max_size=4)
    ),
    max_leaves=20,
)


@SETTINGS
@given(VALUES)
def test_any_value_of_supported_types_roundtrips_with_its_types(value: Any) -> None:
    assert_roundtrips(value)


# --- numpy --------------------------------------------------------------------------------------


def numpy() -> Any:
    return pytest.importorskip("numpy")


def numpy_values() -> Iterator[Any]:
    np = numpy()
    yield np.arange(12, dtype=np.int32).reshape(3, 4)
    yield np.asfortranarray(np.arange(12.0).reshape(3, 4))
    yield np.arange(20)[::3]  # not contiguous
    yield np.arange(24).reshape(2, 3, 4).transpose(1, 0, 2)  # neither C nor F
    yield np.array([1 + 2j, np.nan], dtype=">c16")
    yield np.array([True, False])
    yield np.array(["a", "bcd"])
    yield np.array([b"a", b"bc"])
    yield np.array(["2020-01-01T10", "NaT"], dtype="datetime64[s]")
    yield np.zeros(2, dtype=[("a", "<i4"), ("b", "f8", (2,))])
    yield np.zeros((0, 3), dtype=np.int16)
    yield np.array(7.5)
    yield np.float64(2.5)
    yield np.int8(-3)
    yield np.bool_(True)
    yield np.str_("hé")
    yield np.datetime64("2020-01-01")


class TestNumpy:
    def test_arrays_and_scalars(self) -> None:
        np = numpy()
        for value in numpy_values():
            back = roundtrip({"v": value})["v"]
            assert type(back) is type(value)
            assert back.dtype == value.dtype
            assert back.shape == value.shape
            assert back.tobytes() == value.tobytes()
            if isinstance(value, np.ndarray):
                assert back.flags.writeable
                assert (
                    back.flags.f_contiguous
                    == (value.flags.f_contiguous and not value.flags.c_contiguous)
                    or back.flags.c_contiguous
                )

    def test_fortran_order_is_kept(self) -> None:
        np = numpy()
        back = roundtrip(np.asfortranarray(np.ones((2, 3))))
        assert back.flags.f_contiguous
        assert not back.flags.c_contiguous

    def test_object_dtype_is_refused(self) -> None:
        np = numpy()
        with pytest.raises(UnsupportedValueError, match=r"dtype object.*pickle") as info:
            encode({"a": np.array([object()])}, node="n")
        assert info.value.path == '["a"]'

    def test_array_subclass_is_refused(self) -> None:
        np = numpy()
        with pytest.raises(UnsupportedValueError, match="MaskedArray"):
            encode(np.ma.masked_array([1, 2]))

    @pytest.mark.parametrize(
        "parts",
        [
            pytest.param(["|O", [2], "C", b"\0" * 16], id="object-dtype"),
            pytest.param([[["a", "|O"]], [1], "C", b"\0" * 8], id="object-field"),
            pytest.param(["<i4", [3], "C", b"\0" * 8], id="short-buffer"),
            pytest.param(["<i4", [2**40, 2**40], "C", b""], id="huge-shape"),
            pytest.param(["<i4", [-1], "C", b""], id="negative-shape"),
            pytest.param(["<i4", [1], "X", b"\0" * 4], id="bad-order"),
            pytest.param(["not a dtype", [1], "C", b"\0" * 4], id="bad-dtype"),
        ],
    )
    def test_hostile_arrays(self, parts: list[Any]) -> None:
        numpy()
        with pytest.raises(CorruptDataError):
            decode(msgpack.packb([msgpack.ExtType(14, b""), *parts]))


def test_numpy_is_not_imported_by_flowdeco() -> None:
    code = (
        "import sys, flowdeco, flowdeco._core._codec as c; "
        "assert c.decode(c.encode([1, (2,), {3}])) == [1, (2,), {3}]; "
        "assert 'numpy' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- hostile bytes ------------------------------------------------------------------------------


def assert_corrupt_quickly(data: bytes) -> CorruptDataError:
    start = time.perf_counter()
    with pytest.raises(CorruptDataError) as info:
        decode(data)
    assert time.perf_counter() - start < 1
    return info.value


def tag(code: int) -> bytes:
    return b"\xc7\x00" + bytes([code])


class TestHostile:
    @pytest.mark.parametrize(
        "header",
        [
            pytest.param(b"\xdd", id="array32"),
            pytest.param(b"\xdf", id="map32"),
            pytest.param(b"\xdb", id="str32"),
            pytest.param(b"\xc6", id="bin32"),
        ],
    )
    def test_huge_claimed_lengths(self, header: bytes) -> None:
        assert_corrupt_quickly(header + b"\xff\xff\xff\xff" + b"\x00" * 16)

    def test_huge_claimed_ext_length(self) -> None:
        assert_corrupt_quickly(b"\xc9\xff\xff\xff\xff\x01" + b"\x00" * 16)

    def test_nested_claims_do_not_take_memory(self) -> None:
        # Each level claims as many items as the data has bytes: only lazily zeroed memory.
        size = 2_000_000
        data = (b"\xdd" + struct.pack(">I", size)) * 1000
        assert_corrupt_quickly(data + b"\xc0" * (size - len(data)))

    @pytest.mark.parametrize(
        "level",
        [
            pytest.param(b"\x91", id="arrays"),
            pytest.param(b"\x81\xc0", id="maps"),
            pytest.param(b"\x92" + tag(1), id="tuples"),
            pytest.param(b"\x92" + tag(2), id="sets"),
        ],
    )
    def test_deep_nesting(self, level: bytes) -> None:
        assert_corrupt_quickly(level * 100_000 + b"\xc0")

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(msgpack.ExtType(1, b""), id="tag-alone"),
            pytest.param([1, msgpack.ExtType(1, b"")], id="tag-not-first"),
            pytest.param({"k": msgpack.ExtType(1, b"")}, id="tag-as-map-value"),
            pytest.param([msgpack.ExtType(1, b""), msgpack.ExtType(1, b"")], id="tag-in-tag"),
            pytest.param([msgpack.ExtType(1, b"x")], id="tag-with-data"),
            pytest.param([msgpack.ExtType(99, b"")], id="unknown-code"),
            pytest.param([msgpack.ExtType(5, b""), 10**12], id="bytearray-of-a-length"),
            pytest.param([msgpack.ExtType(4, b""), "12"], id="bigint-from-str"),
            pytest.param([msgpack.ExtType(2, b""), [1]], id="unhashable-set-item"),
            pytest.param([msgpack.ExtType(7, b""), 2020, 13, 1, 0, 0, 0, 0, 0, None], id="month"),
            pytest.param([msgpack.ExtType(7, b""), 2020, 1, 1, 0, 0, 0, 0, 0, "No/Where"]),
            pytest.param([msgpack.ExtType(7, b""), 2020, 1, 1, 0, 0, 0, 0, 0, 10**15]),
            pytest.param([msgpack.ExtType(11, b""), 5], id="decimal-from-int"),
            pytest.param([msgpack.ExtType(12, b""), b"short"], id="uuid"),
            pytest.param([msgpack.ExtType(13, b""), -1, "x"], id="path-kind"),
            pytest.param([msgpack.ExtType(6, b""), True, 1.0], id="bool-for-float"),
        ],
    )
    def test_malformed_tags(self, value: Any) -> None:
        assert_corrupt_quickly(msgpack.packb(value))

    def test_unhashable_map_key(self) -> None:
        assert_corrupt_quickly(b"\x81\x91\x01\x02")  # {[1]: 2}

    def test_trailing_bytes(self) -> None:
        assert_corrupt_quickly(encode([1, 2]) + b"\x00")

    def test_every_truncation(self) -> None:
        data = encode({"a": [1, (2.5, "x")], "b": {dt.date(2020, 1, 1)}, "c": 2**70})
        for end in range(len(data)):
            assert_corrupt_quickly(data[:end])

    @HOSTILE
    @given(st.binary(max_size=200))
    def test_garbage_decodes_or_is_corrupt(self, data: bytes) -> None:
        with contextlib.suppress(CorruptDataError):
            decode(data)

    @HOSTILE
    @given(VALUES, st.data())
    def test_damaged_data_decodes_or_is_corrupt(self, value: Any, draw: st.DataObject) -> None:
        data = bytearray(encode(value))
        for _ in range(draw.draw(st.integers(1, 4))):
            data[draw.draw(st.integers(0, len(data) - 1))] = draw.draw(st.integers(0, 255))
        with contextlib.suppress(CorruptDataError):
            decode(bytes(data))


def test_errors_are_exported_from_errors() -> None:
    assert {"UnsupportedValueError", "CorruptDataError"} <= set(errors.__all__)
    assert issubclass(CorruptDataError, ValueError)
    assert issubclass(CorruptDataError, errors.FlowdecoError)


class TestOutOfBandBuffers:
    """A large numpy array is packed as a view of its own memory and decoded as a view of
    the body it was read into: no copy either way (issue 18)."""

    np = pytest.importorskip("numpy")

    def test_packing_takes_no_copy_and_round_trips(self) -> None:
        from flowdeco._core._codec import encode_parts

        array = self.np.arange(100_000, dtype="<f8")
        parts = encode_parts({"a": array, "tail": [1, "two"]})
        views = [p for p in parts if isinstance(p, memoryview)]
        assert len(views) == 1
        assert self.np.shares_memory(self.np.frombuffer(views[0], dtype="<f8"), array)
        back = decode(b"".join(parts))
        assert back["tail"] == [1, "two"]
        assert self.np.array_equal(back["a"], array)

    def test_decoding_from_a_writable_buffer_takes_no_copy(self) -> None:
        array = self.np.asfortranarray(self.np.arange(60_000.0).reshape(300, 200))
        body = bytearray(encode(array))
        back = decode(memoryview(body))
        assert self.np.array_equal(back, array)
        assert back.flags.f_contiguous and back.flags.writeable
        assert self.np.shares_memory(back, self.np.frombuffer(body, dtype=self.np.uint8))

    def test_decoding_from_bytes_gives_a_writable_copy(self) -> None:
        back = decode(encode(self.np.ones(70_000)))
        back[0] = 5.0  # as writable as a computed array
        assert back[0] == 5.0

    @pytest.mark.parametrize(
        "damage",
        [
            lambda body: body[:5],  # the layout's own header cut short
            lambda body: body[:-1],  # the last buffer cut short
            lambda body: body + b"\0" * 64,  # bytes after the last buffer
            lambda body: body[:1] + (10**9).to_bytes(8, "big") + body[9:],  # head too long
        ],
        ids=["layout", "buffer", "extra", "head"],
    )
    def test_damaged_layouts_are_corrupt_data(self, damage: Any) -> None:
        body = encode([self.np.ones(70_000), "x"])
        with pytest.raises(CorruptDataError):
            decode(damage(body))

    def test_a_buffer_out_of_place_is_corrupt_data(self) -> None:
        import msgpack  # type: ignore[import-untyped]

        head = msgpack.packb([msgpack.ExtType(18, (8).to_bytes(8, "big"))])
        body = (
            b"\xc1" + len(head).to_bytes(8, "big") + head + bytes(-(9 + len(head)) % 64) + bytes(8)
        )
        with pytest.raises(CorruptDataError, match="buffer"):
            decode(body)
