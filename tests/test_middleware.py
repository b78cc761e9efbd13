"""Middleware: order, what a middleware may do to a call, and the built-ins."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from conftest import make_node

import flowdeco as fd

if TYPE_CHECKING:
    from conftest import Kind

pytestmark = pytest.mark.anyio


class Boom(Exception):
    """Raised by the middleware and nodes of these tests."""


class Recorder:
    """Middleware factory: each middleware it makes logs its entries and exits here."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []

    def make(self, tag: str) -> fd.Middleware:
        async def middleware(call: fd.Call, call_next: fd.CallNext) -> Any:
            self.events.append(("enter", tag, call.attempt))
            try:
                value = await call_next(call)
            except Exception:
                self.events.append(("raise", tag, call.attempt))
                raise
            self.events.append(("exit", tag, call.attempt))
            return value

        return middleware


async def _no_sleep(delay: float) -> None:
    """A retry sleep that returns at once."""


class TestOrder:
    async def test_pipeline_outermost_then_node_then_function(self) -> None:
        rec = Recorder()

        @fd.node(middleware=[rec.make("n1"), rec.make("n2")])
        async def leaf() -> int:
            rec.events.append(("call", "leaf", 0))
            return 1

        pipe = fd.Pipeline([leaf], middleware=[rec.make("p1"), rec.make("p2")])
        assert (await pipe.arun())["leaf"] == 1
        assert rec.events == [
            ("enter", "p1", 1),
            ("enter", "p2", 1),
            ("enter", "n1", 1),
            ("enter", "n2", 1),
            ("call", "leaf", 0),
            ("exit", "n2", 1),
            ("exit", "n1", 1),
            ("exit", "p2", 1),
            ("exit", "p1", 1),
        ]

    async def test_option_retries_run_inside_the_node_middleware(self) -> None:
        rec = Recorder()
        calls = 0

        @fd.node(retries=2, middleware=[rec.make("node")])
        async def flaky() -> int:
            nonlocal calls
            calls += 1
            rec.events.append(("call", "flaky", calls))
            if calls < 3:
                raise Boom(calls)
            return calls

        pipe = fd.Pipeline([flaky], middleware=[rec.make("pipe")])
        result = await pipe.arun()
        assert result["flaky"] == 3
        assert result.attempts["flaky"] == 3
        # The middleware outside the retry sees one call, attempt 1, that succeeded.
        assert rec.events == [
            ("enter", "pipe", 1),
            ("enter", "node", 1),
            ("call", "flaky", 1),
            ("call", "flaky", 2),
            ("call", "flaky", 3),
            ("exit", "node", 1),
            ("exit", "pipe", 1),
        ]

    async def test_middleware_inside_a_retry_sees_every_attempt(self) -> None:
        rec = Recorder()
        calls = 0

        @fd.node(
            middleware=[
                rec.make("outer"),
                fd.middleware.retry(3, sleep=_no_sleep),
                rec.make("inner"),
            ]
        )
        async def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                raise Boom(calls)
            return calls

        assert (await fd.Pipeline([flaky]).arun())["flaky"] == 3
        assert rec.events == [
            ("enter", "outer", 1),
            ("enter", "inner", 1),
            ("raise", "inner", 1),
            ("enter", "inner", 2),
            ("raise", "inner", 2),
            ("enter", "inner", 3),
            ("exit", "inner", 3),
            ("exit", "outer", 1),
        ]

    async def test_option_timeout_bounds_each_attempt_not_the_retries(self) -> None:
        # Three attempts of 0.1 s each take longer than the timeout, but none does alone:
        # the timeout sits inside the retry.
        calls = 0

        @fd.node(retries=2, timeout=0.5)
        async def flaky() -> int:
            nonlocal calls
            calls += 1
            await anyio.sleep(0.2)
            if calls < 3:
                raise Boom(calls)
            return calls

        result = await fd.Pipeline([flaky]).arun()
        assert result["flaky"] == 3
        assert result.durations["flaky"] > 0.5

    async def test_option_timeout_does_not_count_middleware_time(self) -> None:
        async def slow_middleware(call: fd.Call, call_next: fd.CallNext) -> Any:
            await anyio.sleep(0.3)
            return await call_next(call)

        @fd.node(timeout=0.2, middleware=[slow_middleware])
        async def quick() -> int:
            return 1

        pipe = fd.Pipeline([quick], middleware=[slow_middleware])
        assert (await pipe.arun())["quick"] == 1

    async def test_pipeline_middleware_wraps_every_node(self) -> None:
        rec = Recorder()

        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        @fd.node
        def b(a: int) -> int:
            return a + 1

        @fd.node
        async def c(b: int) -> int:
            return b + 1

        result = await fd.Pipeline([a, b, c], middleware=[rec.make("p")]).arun()
        assert result["c"] == 3
        assert [e for e in rec.events if e[0] == "enter"] == [("enter", "p", 1)] * 3


class TestCall:
    async def test_fields(self, kind: Kind) -> None:
        seen: list[fd.Call] = []

        async def spy(call: fd.Call, call_next: fd.CallNext) -> Any:
            seen.append(call)
            return await call_next(call)

        leaf = make_node(kind, lambda x: x * 2, name="leaf", middleware=[spy])
        pipe = fd.Pipeline([leaf], name="calls")
        result = await pipe.arun(inputs={"x": 21})
        assert result["leaf"] == 42
        [call] = seen
        assert call.node is leaf
        assert call.pipeline == "calls"
        assert call.run_id == result.run_id
        assert call.attempt == 1
        assert dict(call.inputs) == {"x": 21}
        assert isinstance(call.hooks, fd.Hooks)

    async def test_inputs_name_every_parameter_kind(self) -> None:
        seen: list[dict[str, Any]] = []

        async def spy(call: fd.Call, call_next: fd.CallNext) -> Any:
            seen.append(dict(call.inputs))
            return await call_next(call)

        @fd.node(middleware=[spy])
        def f(a: int, /, b: int, c: int = 3, *, d: int, e: int = 5) -> tuple[int, ...]:
            return (a, b, c, d, e)

        result = await fd.Pipeline([f]).arun(inputs={"a": 1, "b": 2, "d": 4})
        assert result["f"] == (1, 2, 3, 4, 5)
        assert seen == [{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}]

    async def test_inputs_from_parent_nodes(self) -> None:
        seen: list[dict[str, Any]] = []

        async def spy(call: fd.Call, call_next: fd.CallNext) -> Any:
            seen.append(dict(call.inputs))
            return await call_next(call)

        @fd.node
        def parent() -> str:
            return "p"

        @fd.node(inputs={"value": parent}, middleware=[spy])
        def child(value: str) -> str:
            return value * 2

        assert (await fd.Pipeline([parent, child]).arun())["child"] == "pp"
        assert seen == [{"value": "p"}]

    async def test_middleware_may_call_hooks(self) -> None:
        class Retrying(fd.Hooks):
            def __init__(self) -> None:
                self.calls: list[tuple[str, int, BaseException, float]] = []

            def node_retrying(
                self, node: str, attempt: int, error: BaseException, delay: float
            ) -> None:
                self.calls.append((node, attempt, error, delay))

        error = Boom("told")

        async def tells(call: fd.Call, call_next: fd.CallNext) -> Any:
            call.hooks.node_retrying(call.node.name, 7, error, 1.5)
            return await call_next(call)

        @fd.node(middleware=[tells])
        async def leaf() -> int:
            return 1

        hooks = Retrying()
        await fd.Pipeline([leaf]).arun(hooks=[hooks])
        assert hooks.calls == [("leaf", 7, error, 1.5)]


class TestWhatMiddlewareMayDo:
    async def test_short_circuit_skips_the_function(self, kind: Kind) -> None:
        called: list[int] = []

        async def cached(call: fd.Call, call_next: fd.CallNext) -> Any:
            return 99

        leaf = make_node(kind, lambda x: called.append(x), name="leaf", middleware=[cached])

        @fd.node
        def child(leaf: int) -> int:
            return leaf + 1

        result = await fd.Pipeline([leaf, child]).arun(inputs={"x": 1})
        assert called == []
        assert result["leaf"] == 99
        assert result["child"] == 100
        assert result.status["leaf"] is fd.Status.SUCCEEDED

    async def test_replace_the_result(self, kind: Kind) -> None:
        async def tenfold(call: fd.Call, call_next: fd.CallNext) -> Any:
            return 10 * await call_next(call)

        leaf = make_node(kind, lambda x: x + 1, name="leaf", middleware=[tenfold])

        @fd.node
        def child(leaf: int) -> int:
            return leaf

        result = await fd.Pipeline([leaf, child]).arun(inputs={"x": 1})
        assert result["leaf"] == 20
        assert result["child"] == 20, "children read the replaced value"

    async def test_replace_the_inputs(self, kind: Kind) -> None:
        async def override(call: fd.Call, call_next: fd.CallNext) -> Any:
            return await call_next(attrs.evolve(call, inputs={**call.inputs, "x": 5}))

        leaf = make_node(kind, lambda x: x * 100, name="leaf", middleware=[override])
        assert (await fd.Pipeline([leaf]).arun(inputs={"x": 1}))["leaf"] == 500

    async def test_replace_positional_only_and_keyword_only_inputs(self) -> None:
        async def override(call: fd.Call, call_next: fd.CallNext) -> Any:
            return await call_next(attrs.evolve(call, inputs={**call.inputs, "a": 10, "d": 40}))

        @fd.node(middleware=[override])
        async def f(a: int, /, b: int, c: int = 3, *, d: int, e: int = 5) -> tuple[int, ...]:
            return (a, b, c, d, e)

        result = await fd.Pipeline([f]).arun(inputs={"a": 1, "b": 2, "d": 4})
        assert result["f"] == (10, 2, 3, 40, 5)

    async def test_replaced_inputs_do_not_leak_to_the_next_run(self) -> None:
        async def override(call: fd.Call, call_next: fd.CallNext) -> Any:
            if call.inputs["x"] == 1:
                call = attrs.evolve(call, inputs={"x": 2})
            return await call_next(call)

        leaf = make_node("inline", lambda x: x, name="leaf", middleware=[override])
        pipe = fd.Pipeline([leaf])
        assert (await pipe.arun(inputs={"x": 1}))["leaf"] == 2
        assert (await pipe.arun(inputs={"x": 3}))["leaf"] == 3

    async def test_raise_before_the_call(self, kind: Kind) -> None:
        called: list[int] = []
        error = Boom("refused")

        async def refuse(call: fd.Call, call_next: fd.CallNext) -> Any:
            raise error

        leaf = make_node(kind, lambda x: called.append(x), name="leaf", middleware=[refuse])
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([leaf]).arun(inputs={"x": 1})
        assert info.value.__cause__ is error
        assert info.value.node == "leaf"
        assert info.value.result.status["leaf"] is fd.Status.FAILED
        assert info.value.result.errors["leaf"] is error
        assert called == []

    async def test_raise_after_the_call(self) -> None:
        async def reject(call: fd.Call, call_next: fd.CallNext) -> Any:
            value = await call_next(call)
            raise Boom(f"rejected {value}")

        @fd.node
        async def leaf() -> int:
            return 7

        @fd.node
        def child(leaf: int) -> int:
            return leaf

        result = await fd.Pipeline([leaf, child], middleware=[reject]).arun(on_error="continue")
        assert result.status == {"leaf": fd.Status.FAILED, "child": fd.Status.SKIPPED}
        assert str(result.errors["leaf"]) == "rejected 7"

    async def test_translate_an_exception(self) -> None:
        async def translate(call: fd.Call, call_next: fd.CallNext) -> Any:
            try:
                return await call_next(call)
            except KeyError as exc:
                raise Boom("translated") from exc

        @fd.node(middleware=[translate])
        async def leaf() -> int:
            raise KeyError("k")

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([leaf]).arun()
        assert type(info.value.__cause__) is Boom
        assert type(info.value.__cause__.__cause__) is KeyError

    async def test_swallow_an_exception(self) -> None:
        async def fallback(call: fd.Call, call_next: fd.CallNext) -> Any:
            try:
                return await call_next(call)
            except Boom:
                return "fallback"

        @fd.node(middleware=[fallback])
        def leaf() -> str:
            raise Boom

        result = await fd.Pipeline([leaf]).arun()
        assert result["leaf"] == "fallback"
        assert result.ok


class TestInlineNodes:
    async def test_middleware_runs_around_an_inline_node(self) -> None:
        rec = Recorder()
        threads: list[int] = []

        @fd.node(run_in="inline", middleware=[rec.make("n")])
        def leaf() -> int:
            threads.append(threading.get_ident())
            return 1

        loop_thread = threading.get_ident()
        result = await fd.Pipeline([leaf], middleware=[rec.make("p")]).arun()
        assert result["leaf"] == 1
        assert [e[1] for e in rec.events] == ["p", "n", "n", "p"]
        assert threads == [loop_thread], "an inline node still runs in the loop's thread"

    def test_middleware_around_inline_nodes_from_sync_run(self, backend: str) -> None:
        rec = Recorder()

        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        @fd.node(run_in="inline")
        def b(a: int) -> int:
            return a + 1

        result = fd.Pipeline([a, b], middleware=[rec.make("p")]).run(backend=backend)
        assert result["b"] == 2
        assert rec.events == [
            ("enter", "p", 1),
            ("exit", "p", 1),
            ("enter", "p", 1),
            ("exit", "p", 1),
        ]


class TestLogging:
    async def test_success_logs_start_and_end_with_duration(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="flowdeco.tests")

        @fd.node(middleware=[fd.middleware.logging("flowdeco.tests")])
        async def leaf() -> int:
            return 1

        result = await fd.Pipeline([leaf]).arun()
        records = [r for r in caplog.records if r.name == "flowdeco.tests"]
        assert [r.levelno for r in records] == [logging.INFO, logging.INFO]
        start, end = (r.getMessage() for r in records)
        assert start == f"node leaf started (run {result.run_id}, attempt 1)"
        assert end.startswith("node leaf finished in ")
        assert end.endswith("s")
        float(end.removeprefix("node leaf finished in ").removesuffix("s"))

    async def test_failure_logs_start_and_failure(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.DEBUG, logger="flowdeco.tests")

        @fd.node(middleware=[fd.middleware.logging("flowdeco.tests", level=logging.DEBUG)])
        async def leaf() -> int:
            raise Boom("it broke")

        with pytest.raises(fd.NodeFailed):
            await fd.Pipeline([leaf]).arun()
        records = [r for r in caplog.records if r.name == "flowdeco.tests"]
        assert [r.levelno for r in records] == [logging.DEBUG, logging.WARNING]
        failure = records[1].getMessage()
        assert failure.startswith("node leaf failed after ")
        assert failure.endswith("(attempt 1): Boom: it broke")

    async def test_failure_uses_a_level_above_warning(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.DEBUG, logger="flowdeco.tests")
        logger = logging.getLogger("flowdeco.tests")

        @fd.node(middleware=[fd.middleware.logging(logger, level=logging.ERROR)])
        async def leaf() -> int:
            raise Boom

        with pytest.raises(fd.NodeFailed):
            await fd.Pipeline([leaf]).arun()
        assert [r.levelno for r in caplog.records if r.name == "flowdeco.tests"] == [
            logging.ERROR,
            logging.ERROR,
        ]

    async def test_default_logger_is_flowdeco(self, caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="flowdeco")

        @fd.node
        def leaf() -> int:
            return 1

        await fd.Pipeline([leaf], middleware=[fd.middleware.logging()]).arun()
        assert [r.name for r in caplog.records] == ["flowdeco", "flowdeco"]

    async def test_inside_a_retry_each_attempt_is_logged(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        caplog.set_level(logging.INFO, logger="flowdeco.tests")
        calls = 0

        @fd.node(
            middleware=[
                fd.middleware.retry(1, sleep=_no_sleep),
                fd.middleware.logging("flowdeco.tests"),
            ]
        )
        async def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise Boom
            return calls

        await fd.Pipeline([flaky]).arun()
        messages = [r.getMessage() for r in caplog.records if r.name == "flowdeco.tests"]
        assert len(messages) == 4
        assert "attempt 1" in messages[0]
        assert "failed" in messages[1]
        assert "attempt 2" in messages[2]
        assert "finished" in messages[3]

    def test_level_must_be_a_number(self) -> None:
        with pytest.raises(fd.ConfigurationError, match="level"):
            fd.middleware.logging(level="INFO")  # type: ignore[arg-type]


class TestRetryMiddleware:
    async def test_retries_until_success_and_records_attempts(self) -> None:
        delays: list[float] = []

        async def fake_sleep(delay: float) -> None:
            delays.append(delay)

        calls = 0

        @fd.node(middleware=[fd.middleware.retry(5, retry_delay=1.0, sleep=fake_sleep)])
        def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls < 4:
                raise Boom(calls)
            return calls

        result = await fd.Pipeline([flaky]).arun()
        assert result["flaky"] == 4
        assert result.attempts["flaky"] == 4
        assert delays == [1.0, 2.0, 4.0]  # backoff 2.0 by default

    async def test_gives_up_with_the_last_error(self) -> None:
        calls = 0

        @fd.node(middleware=[fd.middleware.retry(2, sleep=_no_sleep)])
        def failing() -> int:
            nonlocal calls
            calls += 1
            raise Boom(f"failure {calls}")

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([failing]).arun()
        assert calls == 3
        assert type(info.value.__cause__) is Boom
        assert str(info.value.__cause__) == "failure 3"
        assert info.value.result.attempts["failing"] == 3

    async def test_retry_on_filters(self) -> None:
        calls = 0

        @fd.node(middleware=[fd.middleware.retry(3, retry_on=KeyError, sleep=_no_sleep)])
        def wrong_kind() -> int:
            nonlocal calls
            calls += 1
            raise Boom

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([wrong_kind]).arun()
        assert calls == 1
        assert type(info.value.__cause__) is Boom

    async def test_as_pipeline_middleware(self) -> None:
        calls: dict[str, int] = {"a": 0, "b": 0}

        def flaky(name: str) -> int:
            calls[name] += 1
            if calls[name] < 2:
                raise Boom(name)
            return calls[name]

        @fd.node
        def a() -> int:
            return flaky("a")

        @fd.node
        async def b() -> int:
            return flaky("b")

        pipe = fd.Pipeline([a, b], middleware=[fd.middleware.retry(1, sleep=_no_sleep)])
        result = await pipe.arun()
        assert dict(result) == {"a": 2, "b": 2}
        assert result.attempts == {"a": 2, "b": 2}

    async def test_large_retry_counts_keep_the_delay_capped(self) -> None:
        # retry_delay * backoff**(n-1) exceeds a float long before n = 400; the cap
        # must still apply rather than the computation failing.
        delays: list[float] = []

        async def fake_sleep(delay: float) -> None:
            delays.append(delay)

        calls = 0

        @fd.node(
            run_in="inline",
            middleware=[
                fd.middleware.retry(
                    400, retry_delay=1.0, backoff=10.0, max_delay=0.01, sleep=fake_sleep
                )
            ],
        )
        def flaky() -> int:
            nonlocal calls
            calls += 1
            if calls <= 400:
                raise Boom(calls)
            return calls

        result = await fd.Pipeline([flaky]).arun()
        assert result["flaky"] == 401
        assert delays == [0.01] * 400

    @pytest.mark.parametrize(
        ("kwargs", "option"),
        [
            pytest.param({"retries": -1}, "retries", id="retries"),
            pytest.param({"retry_delay": -1}, "retry_delay", id="retry_delay"),
            pytest.param({"backoff": 0.5}, "backoff", id="backoff"),
            pytest.param({"max_delay": -1}, "max_delay", id="max_delay"),
            pytest.param({"jitter": 2}, "jitter", id="jitter"),
            pytest.param({"retry_on": KeyboardInterrupt}, "retry_on", id="retry_on"),
        ],
    )
    def test_invalid_arguments(self, kwargs: dict[str, Any], option: str) -> None:
        with pytest.raises(fd.ConfigurationError, match=option):
            fd.middleware.retry(**kwargs)


class TestTimeoutMiddleware:
    async def test_fails_a_slow_call(self) -> None:
        @fd.node(middleware=[fd.middleware.timeout(0.1)])
        async def slow() -> None:
            await anyio.sleep(5)

        with anyio.fail_after(2):
            with pytest.raises(fd.NodeFailed) as info:
                await fd.Pipeline([slow]).arun()
        error = info.value.__cause__
        assert isinstance(error, fd.NodeTimeoutError)
        assert error.node == "slow"
        assert error.seconds == 0.1

    async def test_a_quick_call_is_untouched(self) -> None:
        @fd.node(middleware=[fd.middleware.timeout(5)])
        async def quick() -> int:
            return 1

        assert (await fd.Pipeline([quick]).arun())["quick"] == 1

    async def test_nested_timeouts_report_the_one_that_expired(self) -> None:
        # The pipeline allows 5 s, the node 0.1 s: the node's limit is the one that hit.
        @fd.node(timeout=0.1)
        async def slow() -> None:
            await anyio.sleep(5)

        pipe = fd.Pipeline([slow], middleware=[fd.middleware.timeout(5)])
        with anyio.fail_after(2):
            with pytest.raises(fd.NodeFailed) as info:
                await pipe.arun()
        error = info.value.__cause__
        assert isinstance(error, fd.NodeTimeoutError)
        assert error.seconds == 0.1
        assert "0.1s" in str(error)

    @pytest.mark.parametrize(
        "seconds",
        [
            pytest.param(0, id="zero"),
            pytest.param(-1, id="negative"),
            pytest.param(float("nan"), id="nan"),
        ],
    )
    def test_invalid_seconds(self, seconds: float) -> None:
        with pytest.raises(fd.ConfigurationError, match="timeout"):
            fd.middleware.timeout(seconds)
