"""The ``@node`` decorator and the ``Node`` spec it returns."""

from __future__ import annotations

import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, Literal

import attrs
import pytest

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Callable

SyncRunIn = Literal["thread", "inline"]


def _run_one(spec: fd.Node[..., Any], **inputs: object) -> object:
    """Run a one-node pipeline and return that node's value."""
    return fd.Pipeline([spec]).run(inputs=inputs)[spec.name]


def _takes_args(a: int, *args: int) -> None:
    pass


def _takes_kwargs(a: int, **kwargs: int) -> None:
    pass


def _takes_both(*rows: int, **opts: int) -> None:
    pass


def _wraps_decorated(f: Any) -> Any:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return f(*args, **kwargs)

    return wrapper


def _mixed(a: int, b: int = 1, /, c: int = 2, *, d: int, e: int = 3) -> None:
    pass


class _Method:
    def method(self, x: int, y: int = 1) -> int:
        return x + y

    def __call__(self, q: int, *, r: str = "r") -> None:
        pass


class TestDecoratorForms:
    def test_bare(self) -> None:
        @fd.node
        def total(x: int) -> int:
            return x + 1

        assert isinstance(total, fd.Node)
        assert total.name == "total"
        assert total.sources == ("x",)
        assert total.after == ()

    def test_empty_parentheses(self) -> None:
        @fd.node()
        def total(x: int) -> int:
            return x + 1

        assert isinstance(total, fd.Node)
        assert total.name == "total"

    def test_called_on_a_function(self) -> None:
        def total(x: int) -> int:
            return x + 1

        spec = fd.node(total)
        assert isinstance(spec, fd.Node)
        assert spec.func is total

    def test_with_options(self) -> None:
        @fd.node(name="sum_of", inputs={"x": "source"}, after=["setup"], run_in="inline")
        def total(x: int) -> int:
            return x + 1

        assert isinstance(total, fd.Node)
        assert total.name == "sum_of"
        assert total.sources == ("source",)
        assert total.after == ("setup",)
        assert total.run_in == "inline"

    def test_not_callable(self) -> None:
        with pytest.raises(fd.NodeDefinitionError, match="needs a function"):
            fd.node(42)  # type: ignore[call-overload]


class TestStillTheFunction:
    def test_calls_the_function(self) -> None:
        @fd.node
        def scale(x: int, factor: int = 2) -> int:
            return x * factor

        assert scale(3) == 6
        assert scale(3, factor=5) == 15
        assert scale(x=4) == 8

    def test_keeps_metadata(self) -> None:
        def scale(x: int, factor: int = 2) -> int:
            """Multiply x."""
            return x * factor

        spec = fd.node(scale)
        assert spec.__name__ == "scale"
        assert spec.__doc__ == "Multiply x."
        assert spec.__qualname__ == scale.__qualname__
        assert spec.__qualname__.endswith("test_keeps_metadata.<locals>.scale")
        assert spec.__module__ == __name__
        assert spec.__wrapped__ is scale
        assert inspect.signature(spec) == inspect.signature(scale)
        assert str(inspect.signature(spec)) == "(x: 'int', factor: 'int' = 2) -> 'int'"

    def test_metadata_follows_the_name_option(self) -> None:
        """``name=`` names the node, not the function: the function keeps its own name."""

        @fd.node(name="renamed")
        def original() -> int:
            return 1

        assert original.name == "renamed"
        assert original.__name__ == "original"

    def test_missing_docstring_is_none(self) -> None:
        @fd.node
        def plain() -> int:
            return 1

        assert plain.__doc__ is None

    def test_is_frozen(self) -> None:
        @fd.node
        def total() -> int:
            return 1

        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            total.name = "other"  # type: ignore[misc]
        assert total.name == "total"

    def test_is_an_attrs_class(self) -> None:
        @fd.node
        def total() -> int:
            return 1

        assert attrs.has(fd.Node)
        assert attrs.evolve(total, name="t2").name == "t2"


class TestParameters:
    def test_param_specs(self) -> None:
        @fd.node
        def f(a: int, /, b: int, c: int = 3, *, d: int, e: int = 5) -> int:
            return a + b + c + d + e

        assert f.params == (
            fd.Param("a", "a", positional_only=True),
            fd.Param("b", "b"),
            fd.Param("c", "c", has_default=True, default=3),
            fd.Param("d", "d", keyword_only=True),
            fd.Param("e", "e", keyword_only=True, has_default=True, default=5),
        )

    @pytest.mark.parametrize(
        "func",
        [
            pytest.param(_mixed, id="function"),
            pytest.param(lambda a, b=1, *, c=2: None, id="lambda"),
            pytest.param(_wraps_decorated(_mixed), id="functools-wraps"),
            pytest.param(_Method().method, id="bound-method"),
            pytest.param(_Method(), id="callable-object"),
            pytest.param(functools.partial(_mixed, 1), id="partial"),
        ],
    )
    def test_params_match_the_signature(self, func: Any) -> None:
        expected = [
            (p.name, p.kind is p.POSITIONAL_ONLY, p.default is not p.empty)
            for p in inspect.signature(func).parameters.values()
        ]
        spec = fd.node(name="f")(func)
        assert [(p.name, p.positional_only, p.has_default) for p in spec.params] == expected
        defaults = {
            p.name: p.default
            for p in inspect.signature(func).parameters.values()
            if p.default is not p.empty
        }
        assert {p.name: p.default for p in spec.params if p.has_default} == defaults

    @pytest.mark.parametrize("run_in", ["inline", "thread"])
    def test_every_kind_receives_its_value(self, run_in: SyncRunIn) -> None:
        @fd.node(run_in=run_in)
        def f(a: int, /, b: int, *, c: int) -> tuple[int, int, int]:
            return (a, b, c)

        assert _run_one(f, a=1, b=2, c=3) == (1, 2, 3)

    @pytest.mark.parametrize(
        "kind",
        [
            pytest.param("positional_or_keyword", id="positional-or-keyword"),
            pytest.param("keyword_only", id="keyword-only"),
            pytest.param("positional_only", id="positional-only"),
        ],
    )
    def test_each_kind_reads_a_node(self, kind: str) -> None:
        @fd.node(run_in="inline")
        def source() -> int:
            return 7

        def pos_or_kw(source: int) -> int:
            return source * 2

        def kw_only(*, source: int) -> int:
            return source * 2

        def pos_only(source: int, /) -> int:
            return source * 2

        funcs: dict[str, Callable[..., Any]] = {
            "positional_or_keyword": pos_or_kw,
            "keyword_only": kw_only,
            "positional_only": pos_only,
        }
        double = fd.node(name="double", run_in="inline")(funcs[kind])
        result = fd.Pipeline([source, double]).run()
        assert result["double"] == 14

    @pytest.mark.parametrize(
        "kind",
        [
            pytest.param("positional_or_keyword", id="positional-or-keyword"),
            pytest.param("keyword_only", id="keyword-only"),
            pytest.param("positional_only", id="positional-only"),
        ],
    )
    @pytest.mark.parametrize("run_in", ["inline", "thread"])
    def test_default_makes_an_input_optional(self, kind: str, run_in: SyncRunIn) -> None:
        def pos_or_kw(rate: float = 0.5) -> float:
            return rate

        def kw_only(*, rate: float = 0.5) -> float:
            return rate

        def pos_only(rate: float = 0.5, /) -> float:
            return rate

        funcs: dict[str, Callable[..., Any]] = {
            "positional_or_keyword": pos_or_kw,
            "keyword_only": kw_only,
            "positional_only": pos_only,
        }
        spec = fd.node(name="f", run_in=run_in)(funcs[kind])
        pipe = fd.Pipeline([spec])
        assert pipe.inputs["rate"].required is False
        assert _run_one(spec) == 0.5
        assert _run_one(spec, rate=0.25) == 0.25

    def test_no_default_makes_an_input_required(self) -> None:
        @fd.node(run_in="inline")
        def f(rate: float) -> float:
            return rate

        assert fd.Pipeline([f]).inputs["rate"].required is True
        with pytest.raises(fd.MissingInputsError, match="'rate'"):
            _run_one(f)

    @pytest.mark.parametrize(
        ("func", "stars"),
        [
            pytest.param(_takes_args, "*args", id="var-positional"),
            pytest.param(_takes_kwargs, "**kwargs", id="var-keyword"),
            pytest.param(_takes_both, "*rows", id="both"),
        ],
    )
    def test_varargs_are_rejected_at_decoration(self, func: Any, stars: str) -> None:
        with pytest.raises(fd.NodeDefinitionError) as info:
            fd.node(func)
        message = str(info.value)
        assert repr(func.__name__) in message
        assert stars in message
        assert "not supported" in message

    def test_definition_error_is_a_type_error(self) -> None:
        def loader(*args: object) -> None:
            pass

        with pytest.raises(TypeError):
            fd.node(loader)
        assert issubclass(fd.NodeDefinitionError, fd.FlowdecoError)


class TestName:
    def test_defaults_to_function_name(self) -> None:
        @fd.node
        def load_orders() -> None:
            pass

        assert load_orders.name == "load_orders"

    def test_name_option(self) -> None:
        @fd.node(name="orders")
        def load_orders() -> None:
            pass

        assert load_orders.name == "orders"
        pipe = fd.Pipeline([load_orders])
        assert list(pipe.nodes) == ["orders"]

    def test_lambda_needs_a_name(self) -> None:
        with pytest.raises(fd.NodeDefinitionError, match=r"name="):
            fd.node(lambda x: x)

    def test_lambda_with_a_name(self) -> None:
        square = fd.node(name="square", run_in="inline")(lambda x: x * x)
        assert square.name == "square"
        assert square(3) == 9
        assert _run_one(square, x=4) == 16

    def test_callable_object_without_name_needs_one(self) -> None:
        class Doubler:
            def __call__(self, x: int) -> int:
                return 2 * x

        with pytest.raises(fd.NodeDefinitionError, match=r"name="):
            fd.node(Doubler())
        spec = fd.node(name="doubler", run_in="inline")(Doubler())
        assert _run_one(spec, x=5) == 10

    @pytest.mark.parametrize("bad", [pytest.param("", id="empty"), pytest.param(3, id="int")])
    def test_bad_name(self, bad: object) -> None:
        def f() -> None:
            pass

        with pytest.raises(fd.NodeDefinitionError, match=r"name="):
            fd.node(name=bad)(f)  # type: ignore[call-overload]


class TestInputsOption:
    def test_rename_by_name(self) -> None:
        @fd.node(inputs={"rows": "orders"})
        def total(rows: list[int], vat: float) -> float:
            return sum(rows) * vat

        assert total.sources == ("orders", "vat")
        assert total.params[0] == fd.Param("rows", "orders")

    def test_rename_by_node(self) -> None:
        @fd.node(name="orders")
        def load() -> list[int]:
            return [1]

        @fd.node(inputs={"rows": load})
        def total(rows: list[int]) -> int:
            return sum(rows)

        assert total.sources == ("orders",)

    def test_renamed_parameter_reads_that_node(self) -> None:
        @fd.node(run_in="inline")
        def orders() -> list[int]:
            return [1, 2, 3]

        @fd.node(inputs={"rows": "orders"}, run_in="inline")
        def total(rows: list[int]) -> int:
            return sum(rows)

        result = fd.Pipeline([orders, total]).run()
        assert result["total"] == 6

    def test_unknown_parameter(self) -> None:
        def total(rows: list[int], vat: float) -> float:
            return sum(rows) * vat

        with pytest.raises(fd.NodeDefinitionError) as info:
            fd.node(inputs={"row": "orders"})(total)
        message = str(info.value)
        assert "'total'" in message
        assert "'row'" in message
        assert "rows, vat" in message  # lists the parameters it does take

    @pytest.mark.parametrize("source", [pytest.param("", id="empty"), pytest.param(1, id="int")])
    def test_bad_source(self, source: object) -> None:
        def total(rows: list[int]) -> int:
            return sum(rows)

        with pytest.raises(fd.NodeDefinitionError, match="expected a node or a node name"):
            fd.node(inputs={"rows": source})(total)  # type: ignore[dict-item]


class TestAfterOption:
    def test_names_and_nodes(self) -> None:
        @fd.node
        def setup() -> None:
            pass

        @fd.node(after=[setup, "migrate"])
        def work() -> None:
            pass

        assert work.after == ("setup", "migrate")
        assert work.params == ()

    def test_duplicates_collapse(self) -> None:
        @fd.node
        def setup() -> None:
            pass

        @fd.node(after=[setup, "setup", "migrate", setup])
        def work() -> None:
            pass

        assert work.after == ("setup", "migrate")

    @pytest.mark.parametrize("entry", [pytest.param("", id="empty"), pytest.param(None, id="none")])
    def test_bad_entry(self, entry: object) -> None:
        def work() -> None:
            pass

        with pytest.raises(fd.NodeDefinitionError, match="'work'"):
            fd.node(after=[entry])(work)  # type: ignore[list-item]


class TestRunIn:
    def test_sync_defaults_to_thread(self) -> None:
        @fd.node
        def f() -> None:
            pass

        assert f.run_in == "thread"

    @pytest.mark.parametrize("run_in", ["thread", "inline"])
    def test_sync_choices(self, run_in: SyncRunIn) -> None:
        def f() -> None:
            pass

        assert fd.node(run_in=run_in)(f).run_in == run_in

    def test_async_runs_in_the_loop(self) -> None:
        @fd.node
        async def fetch() -> int:
            return 1

        assert fetch.run_in == "loop"
        assert _run_one(fetch) == 1

    def test_async_callable_object_runs_in_the_loop(self) -> None:
        class Fetch:
            async def __call__(self, x: int) -> int:
                return x + 1

        spec = fd.node(name="fetch")(Fetch())
        assert spec.run_in == "loop"
        assert _run_one(spec, x=1) == 2

    @pytest.mark.parametrize("run_in", ["thread", "inline"])
    def test_async_rejects_run_in(self, run_in: SyncRunIn) -> None:
        async def fetch() -> int:
            return 1

        with pytest.raises(fd.NodeDefinitionError) as info:
            fd.node(run_in=run_in)(fetch)
        message = str(info.value)
        assert "'fetch'" in message
        assert f"run_in={run_in!r}" in message

    @pytest.mark.parametrize(
        "run_in",
        [
            pytest.param("loop", id="loop-on-sync"),
            pytest.param("process", id="unknown"),
            pytest.param("", id="empty"),
            pytest.param("Thread", id="case"),
        ],
    )
    def test_bad_value(self, run_in: str) -> None:
        def f() -> None:
            pass

        with pytest.raises(fd.NodeDefinitionError) as info:
            fd.node(run_in=run_in)(f)  # type: ignore[call-overload]
        message = str(info.value)
        assert "'f'" in message
        assert repr(run_in) in message
        assert "'thread' or 'inline'" in message

    def test_async_generator_rejected(self) -> None:
        async def stream() -> Any:
            yield 1

        with pytest.raises(fd.NodeDefinitionError, match=r"'stream'.*async generator"):
            fd.node(stream)


class TestRedecorate:
    def test_new_options_same_function(self) -> None:
        @fd.node(inputs={"rows": "orders"}, after=["setup"])
        def total(rows: list[int]) -> int:
            return sum(rows)

        again = fd.node(name="total_v2", run_in="inline")(total)
        assert again is not total
        assert again.name == "total_v2"
        assert again.run_in == "inline"
        # The options of the first decoration carry, under the ones given here.
        assert again.sources == ("orders",)
        assert again.after == ("setup",)
        # Not a node wrapping a node.
        assert again.func is total.func
        assert again.__wrapped__ is total.func
        assert not isinstance(again.func, fd.Node)
        # The original is untouched.
        assert (total.name, total.run_in, total.sources) == ("total", "thread", ("orders",))

    def test_bare_redecoration(self) -> None:
        @fd.node(name="x")
        def f() -> int:
            return 1

        again = fd.node(f)
        assert again.name == "x"  # name= is an option: it carries too
        assert again.func is f.func


class TestLocation:
    def test_file_and_line(self) -> None:
        first_line = sys._getframe().f_lineno + 2

        @fd.node
        def here() -> None:
            pass

        filename, _, line = here.location.rpartition(":")
        assert filename == __file__
        # The decorator's line or the ``def`` line: both point at the definition.
        assert int(line) in (first_line, first_line + 1)

    def test_lambda(self) -> None:
        line = sys._getframe().f_lineno + 1
        spec = fd.node(name="sq")(lambda x: x * x)
        assert spec.location == f"{__file__}:{line}"

    def test_distinct_definitions_have_distinct_locations(self) -> None:
        @fd.node
        def one() -> None:
            pass

        @fd.node
        def two() -> None:
            pass

        assert one.location != two.location
