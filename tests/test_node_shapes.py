"""Functions of the wrong shape for a node, each refused where the mistake is made.

Generator functions, sync wrappers around ``async def``, middleware that forgets to await
``call_next``, re-decoration that dropped options, and parameter names one typo away from a
node: each used to pass silently and fail (or answer wrongly) somewhere else.
"""

from __future__ import annotations

import functools
import gc
import warnings
from typing import TYPE_CHECKING, Any

import pytest
from conftest import make_node

import flowdeco as fd
from flowdeco._core._graph import GraphWarning

if TYPE_CHECKING:
    from collections.abc import Iterator

    from conftest import Kind


def _failure(pipe: fd.Pipeline, backend: str = "asyncio", **inputs: object) -> fd.NodeFailed:
    """The ``NodeFailed`` of a run of ``pipe``, checking that no coroutine was left unawaited."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(fd.NodeFailed) as info:
            pipe.run(inputs=inputs, store=None, backend=backend)  # type: ignore[arg-type]
        gc.collect()  # a coroutine dropped unclosed warns "never awaited" when collected
    assert [str(w.message) for w in caught] == []
    return info.value


class TestGenerators:
    """A generator is drained by the first child that iterates it: refused at decoration."""

    def test_generator_function_is_refused(self) -> None:
        def rows() -> Iterator[int]:
            yield 1

        with pytest.raises(fd.NodeDefinitionError) as info:
            fd.node(rows)
        message = str(info.value)
        assert "node 'rows'" in message
        assert f"{rows.__code__.co_filename}:{rows.__code__.co_firstlineno}" in message
        assert "is a generator function" in message
        assert "return a list (list(...)) instead" in message

    def test_async_generator_function_is_refused(self) -> None:
        async def rows() -> Any:
            yield 1

        with pytest.raises(fd.NodeDefinitionError, match=r"'rows'.* is an async generator func"):
            fd.node(run_in=None)(rows)

    def test_a_plain_generator_function_in_a_pipeline_is_refused(self) -> None:
        def rows() -> Iterator[int]:
            yield 1

        with pytest.raises(fd.NodeDefinitionError, match=r"'rows'.* is a generator function"):
            fd.Pipeline([rows])

    def test_generator_callable_object_and_partial_are_refused(self) -> None:
        class Rows:
            def __call__(self) -> Iterator[int]:
                yield 1

        def numbered(start: int) -> Iterator[int]:
            yield start

        with pytest.raises(fd.NodeDefinitionError, match="is a generator function"):
            fd.node(name="rows")(Rows())
        with pytest.raises(fd.NodeDefinitionError, match="is a generator function"):
            fd.node(name="numbered")(functools.partial(numbered, 1))

    def test_a_function_returning_a_list_is_fine(self) -> None:
        @fd.node(run_in="inline")
        def rows() -> list[int]:
            return list(range(3))

        @fd.node(run_in="inline")
        def first(rows: list[int]) -> int:
            return sum(rows)

        @fd.node(run_in="inline")
        def second(rows: list[int]) -> int:
            return sum(rows)

        result = fd.Pipeline([rows, first, second], store=None).run()
        assert (result["first"], result["second"]) == (3, 3)


async def fetch(count: int) -> int:
    """An async function, wrapped below by a sync decorator that forgot to be async."""
    return count + 1


@functools.wraps(fetch)
def _sync_wrapper(*args: Any, **kwargs: Any) -> Any:
    return fetch(*args, **kwargs)


def _handing_on(call: fd.Call, call_next: fd.CallNext) -> Any:
    """A sync middleware that hands on ``call_next``'s awaitable: allowed, it is awaited."""
    return call_next(call)


class TestSyncNodeReturningACoroutine:
    """A sync node's value is checked: a coroutine fails that node, not its child."""

    @pytest.mark.parametrize("kind", ["inline", "thread"])
    @pytest.mark.parametrize("middleware", [False, True], ids=["fast path", "middleware"])
    def test_fails_that_node_and_closes_the_coroutine(
        self, kind: Kind, middleware: bool, backend: str
    ) -> None:
        spec = make_node(kind, _sync_wrapper, name="fetch")

        @fd.node(run_in="inline")
        def doubled(fetch: int) -> int:
            return fetch * 2

        pipe = fd.Pipeline([spec, doubled], middleware=[_handing_on] if middleware else [])
        failure = _failure(pipe, backend, count=1)
        assert failure.node == "fetch"  # not its child, which would get the coroutine
        error = failure.__cause__
        assert isinstance(error, fd.NodeDefinitionError)
        assert str(error) == (
            f"node 'fetch' ({spec.location}) returned a coroutine: its function is sync (a sync "
            "wrapper around an async def?); make the wrapper async, or decorate the async "
            "function"
        )

    def test_decorating_the_async_function_works(self) -> None:
        pipe = fd.Pipeline([fd.node(fetch)], store=None)
        assert pipe.run(inputs={"count": 1})["fetch"] == 2

    @pytest.mark.parametrize("middleware", [False, True], ids=["fast path", "middleware"])
    def test_an_async_node_returning_a_coroutine_is_the_nodes_fault(
        self, middleware: bool, backend: str
    ) -> None:
        @fd.node(middleware=[_handing_on] if middleware else [])
        async def outer(count: int) -> Any:
            return fetch(count)  # not awaited

        @fd.node(run_in="inline")
        def doubled(outer: int) -> int:
            return outer * 2

        failure = _failure(fd.Pipeline([outer, doubled]), backend, count=1)
        assert failure.node == "outer"
        error = failure.__cause__
        assert isinstance(error, fd.NodeDefinitionError)
        assert str(error).startswith(f"node 'outer' ({outer.location}) returned a coroutine")
        assert "`return await ...`" in str(error)
        assert "middleware" not in str(error)


async def _forgetful(call: fd.Call, call_next: fd.CallNext) -> Any:
    return call_next(call)  # not awaited: its value is a coroutine


async def _careful(call: fd.Call, call_next: fd.CallNext) -> Any:
    return await call_next(call)


class TestMiddlewareThatDoesNotAwait:
    """A middleware's value is checked as it returns: the one that forgot to await is named."""

    @staticmethod
    def _expected(spec: fd.Node[..., Any], middleware: Any) -> str:
        code = middleware.__code__
        return (
            f"middleware {middleware.__qualname__} ({code.co_filename}:{code.co_firstlineno}) "
            f"returned a coroutine as the value of node {spec.name!r} ({spec.location}): it "
            "returns call_next(call) without awaiting it; write `return await call_next(call)`"
        )

    def test_a_node_middleware(self, kind: Kind, backend: str) -> None:
        spec = make_node(kind, lambda count: count, name="count_", middleware=[_forgetful])
        failure = _failure(fd.Pipeline([spec]), backend, count=1)
        assert failure.node == "count_"
        assert isinstance(failure.__cause__, fd.NodeDefinitionError)
        assert str(failure.__cause__) == self._expected(spec, _forgetful)

    @pytest.mark.parametrize(
        "chain", [[_careful, _forgetful], [_forgetful, _careful]], ids=["inner", "outer"]
    )
    def test_the_one_that_forgot_is_named(self, chain: list[Any]) -> None:
        @fd.node(run_in="inline")
        def one() -> int:
            return 1

        error = _failure(fd.Pipeline([one], middleware=chain)).__cause__
        assert str(error) == self._expected(one, _forgetful)

    def test_a_retried_node(self) -> None:
        @fd.node(middleware=[_forgetful], retries=2)
        async def one() -> int:
            return 1

        error = _failure(fd.Pipeline([one])).__cause__
        assert str(error) == self._expected(one, _forgetful)


class TestRedecoration:
    """Decorating a node again keeps every option; the ones given win."""

    def test_keeps_every_option(self) -> None:
        async def audit(call: fd.Call, call_next: fd.CallNext) -> Any:
            return await call_next(call)

        @fd.node(
            name="total",
            inputs={"rows": "orders"},
            after=["setup"],
            retries=2,
            retry_delay=0.5,
            timeout=3.0,
            middleware=[audit],
            cache=True,
            checkpoint=False,
            version="v1",
        )
        def total_rows(rows: list[int]) -> int:
            return sum(rows)

        for again in (fd.node(total_rows), fd.node()(total_rows)):
            assert again is not total_rows
            assert again == total_rows  # every field but the serial
            assert again.serial > total_rows.serial  # the newest definition
            assert again.func is total_rows.func

    def test_given_options_win(self) -> None:
        @fd.node(inputs={"rows": "orders"}, run_in="inline", retries=2, checkpoint=False)
        def total(rows: list[int], scale: int) -> int:
            return sum(rows) * scale

        again = fd.node(name="total_v2", inputs={"scale": "factor"}, retries=4, checkpoint=True)(
            total
        )
        assert again.name == "total_v2"
        assert again.sources == ("rows", "factor")  # inputs= given: it replaces the renames
        assert again.run_in == "inline"
        assert (again.options.retries, again.checkpoint) == (4, True)
        # The original is untouched.
        assert (total.name, total.sources, total.options.retries) == (
            "total",
            ("orders", "scale"),
            2,
        )

    def test_keeps_an_async_nodes_options(self) -> None:
        @fd.node(inputs={"rows": "orders"}, timeout=2.0)
        async def total(rows: list[int]) -> int:
            return sum(rows)

        again = fd.node(name="total_v2")(total)
        assert (again.run_in, again.sources, again.options.timeout) == ("loop", ("orders",), 2.0)

    def test_the_result_is_checked_again(self) -> None:
        @fd.node(timeout=2.0)
        def slow() -> int:
            return 1

        with pytest.raises(fd.NodeDefinitionError, match=r"'slow'.*timeout= cannot stop an inline"):
            fd.node(run_in="inline")(slow)

    def test_a_renamed_node_still_reads_its_renamed_inputs(self) -> None:
        @fd.node(run_in="inline")
        def orders() -> list[int]:
            return [1, 2]

        @fd.node(inputs={"rows": "orders"}, run_in="inline")
        def total(rows: list[int]) -> int:
            return sum(rows)

        pipe = fd.Pipeline([orders, fd.node(name="total_v2")(total)], store=None)
        assert dict(pipe.inputs) == {}  # not an external input `rows`
        assert pipe.run()["total_v2"] == 3


@fd.node(run_in="inline")
def orders() -> list[float]:
    return [1.0, 2.0]


def _reading(name: str, parameter: str) -> fd.Node[..., Any]:
    """Node ``name``, whose one parameter, ``parameter``, has a default."""
    namespace: dict[str, Any] = {}
    exec(f"def {name}({parameter}=0):\n    return {parameter}\n", namespace)  # noqa: S102
    return fd.node(run_in="inline")(namespace[name])


class TestNamesOneTypoFromANode:
    """A parameter misspelling a node's name is an external input: say so."""

    def test_the_missing_input_error_suggests_the_node(self) -> None:
        @fd.node(run_in="inline")
        def total(ordres: list[float]) -> float:
            return sum(ordres)

        with pytest.raises(fd.MissingInputsError, match=r"'ordres'.*did you mean .*'orders'"):
            fd.Pipeline([orders, total]).plan()

    def test_an_optional_input_one_edit_from_a_node_warns(self) -> None:
        @fd.node(run_in="inline")
        def total(ordres: list[float] = ()) -> float:  # type: ignore[assignment]
            return sum(ordres)

        with pytest.warns(GraphWarning) as caught:
            fd.Pipeline([orders, total])
        (warning,) = caught
        assert str(warning.message) == (
            f"node 'total' ({total.location}): parameter 'ordres' names no node and has a "
            "default, so the run passes that default; did you mean node 'orders'? To read that "
            "node, name the parameter 'orders' (or rename it with @fd.node(inputs={'ordres': "
            "'orders'})); if 'ordres' is meant as an input, rename it further from the node's "
            "name"
        )
        assert warning.filename == __file__  # the line that built the pipeline, not flowdeco's

    def test_from_namespace_points_at_its_caller(self) -> None:
        @fd.node(run_in="inline")
        def total(order: list[float] = ()) -> float:  # type: ignore[assignment]
            return sum(order)

        with pytest.warns(GraphWarning, match="did you mean node 'orders'") as caught:
            fd.Pipeline.from_namespace({"orders": orders, "total": total})
        assert caught[0].filename == __file__

    @pytest.mark.parametrize(
        "parameter",
        ["ordres", "order", "orderss", "ordets", "rorders"],
        ids=["swap", "deletion", "insertion", "change", "insertion-first"],
    )
    def test_one_edit(self, parameter: str) -> None:
        with pytest.warns(GraphWarning, match=f"parameter '{parameter}' names no node"):
            fd.Pipeline([orders, _reading("total", parameter)])

    @pytest.mark.parametrize(
        ("node", "parameter"),
        [
            pytest.param("orders", "odrers_", id="two edits"),
            pytest.param("orders", "sredro", id="reversed"),
            pytest.param("df", "dt", id="short"),  # names this short are not compared
            pytest.param("rows", "row", id="short parameter"),
        ],
    )
    def test_no_warning(self, node: str, parameter: str) -> None:
        source = fd.node(name=node, run_in="inline")(lambda: 1)
        fd.Pipeline([source, _reading("reader", parameter)])  # filterwarnings=error: no warning

    def test_no_warning_for_the_node_itself(self) -> None:
        fd.Pipeline([_reading("scaled", "scale")])  # a node cannot read itself

    def test_a_required_input_does_not_warn(self) -> None:
        @fd.node(run_in="inline")
        def total(ordres: list[float]) -> float:
            return sum(ordres)

        pipe = fd.Pipeline([orders, total])  # it fails as a missing input instead
        assert pipe.inputs["ordres"].required
