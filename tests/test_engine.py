"""The engine: node kinds, readiness, concurrency, failures, cancellation, deep graphs."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import pytest
import sniffio
from conftest import make_node

import flowdeco as fd

if TYPE_CHECKING:
    from conftest import Kind, StatusLog

pytestmark = pytest.mark.anyio

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("REQUEST_ID", default="unset")


def _living_tasks() -> int:
    """How many tasks the current event loop holds."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_statistics().tasks_living
    return len(asyncio.all_tasks())


def _assert_parents_finished_first(pipe: fd.Pipeline, result: fd.RunResult) -> None:
    for name in pipe.order:
        for parent in pipe.upstream(name, direct=True):
            assert result.started_at[name] >= result.finished_at[parent], (
                f"{name} started before its parent {parent} finished"
            )


class _Gauge:
    """Counts bodies running at once, from the loop thread and from worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.max = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.max = max(self.max, self.now)

    def exit(self) -> None:
        with self.lock:
            self.now -= 1


def _gauged_node(kind: Kind, name: str, gauge: _Gauge, seconds: float) -> fd.Node[..., Any]:
    """A root node that holds the gauge for ``seconds`` (an async or a thread node)."""

    def body() -> str:
        gauge.enter()
        try:
            time.sleep(seconds)
        finally:
            gauge.exit()
        return name

    async def body_async() -> str:
        gauge.enter()
        try:
            await anyio.sleep(seconds)
        finally:
            gauge.exit()
        return name

    return make_node(kind, body, name=name, async_body=body_async)


def _failing_node(kind: Kind, source: str) -> fd.Node[..., Any]:
    """A node named ``bad`` that reads node ``source`` and raises ValueError."""

    def bad(value: int) -> int:
        raise ValueError(f"bad input {value}")

    return make_node(kind, bad, name="bad", inputs={"value": source})


class TestNodeKinds:
    async def test_async_node_is_awaited_in_the_loop(self, anyio_backend: str) -> None:
        @fd.node
        async def probe() -> tuple[threading.Thread, str]:
            await anyio.lowlevel.checkpoint()
            return threading.current_thread(), sniffio.current_async_library()

        result = await fd.Pipeline([probe]).arun(store=None)  # threads cannot be stored
        assert result["probe"] == (threading.current_thread(), anyio_backend)

    async def test_thread_node_runs_in_a_worker_thread_of_the_loop(self) -> None:
        loop_thread = threading.current_thread()

        @fd.node(run_in="thread")
        def probe() -> tuple[threading.Thread, threading.Thread]:
            # from_thread only works in a worker thread that this event loop started.
            return threading.current_thread(), anyio.from_thread.run_sync(threading.current_thread)

        result = await fd.Pipeline([probe]).arun(store=None)
        worker, loop_seen_from_worker = result["probe"]
        assert worker is not loop_thread
        assert loop_seen_from_worker is loop_thread

    async def test_sync_node_defaults_to_a_thread(self) -> None:
        @fd.node
        def probe() -> threading.Thread:
            return threading.current_thread()

        result = await fd.Pipeline([probe]).arun(store=None)
        assert result["probe"] is not threading.current_thread()

    async def test_inline_node_runs_in_the_loop_thread(self, anyio_backend: str) -> None:
        @fd.node(run_in="inline")
        def probe() -> tuple[threading.Thread, str]:
            return threading.current_thread(), sniffio.current_async_library()

        result = await fd.Pipeline([probe]).arun(store=None)
        assert result["probe"] == (threading.current_thread(), anyio_backend)

    async def test_mixed_kinds_pass_values_along(self) -> None:
        @fd.node(run_in="inline")
        def base(start: int) -> int:
            return start + 1

        @fd.node(run_in="thread")
        def doubled(base: int) -> int:
            return base * 2

        @fd.node
        async def squared(base: int) -> int:
            await anyio.sleep(0.01)
            return base**2

        @fd.node(run_in="inline")
        def total(doubled: int, squared: int) -> int:
            return doubled + squared

        @fd.node
        async def report(total: int, base: int) -> str:
            return f"{base} -> {total}"

        pipe = fd.Pipeline([base, doubled, squared, total, report])
        result = await pipe.arun(inputs={"start": 2})
        assert dict(result) == {
            "base": 3,
            "doubled": 6,
            "squared": 9,
            "total": 15,
            "report": "3 -> 15",
        }
        assert result.ok
        assert set(result.status.values()) == {fd.Status.SUCCEEDED}

    def test_mixed_kinds_from_sync_code(self, backend: str) -> None:
        @fd.node(run_in="inline")
        def base(start: int) -> int:
            return start + 1

        @fd.node(run_in="thread")
        def doubled(base: int) -> int:
            return base * 2

        @fd.node
        async def total(base: int, doubled: int) -> int:
            await anyio.lowlevel.checkpoint()
            return base + doubled

        result = fd.Pipeline([base, doubled, total]).run(
            inputs={"start": 4}, outputs="total", backend=backend
        )
        assert dict(result) == {"total": 15}


class TestParameters:
    async def test_positional_only_parameters_keep_their_order(self, kind: Kind) -> None:
        @fd.node(run_in="inline")
        def big() -> int:
            return 10

        @fd.node(run_in="inline")
        def small() -> int:
            return 3

        def diff_of(a: int, b: int, /) -> int:
            return a - b

        diff = make_node(kind, diff_of, name="diff", inputs={"a": "big", "b": "small"})
        result = await fd.Pipeline([big, small, diff]).arun(outputs="diff")
        assert result["diff"] == 7

    async def test_mixed_positional_only_keyword_and_keyword_only(self) -> None:
        @fd.node(run_in="inline")
        def x() -> int:
            return 1

        @fd.node(run_in="inline")
        def y() -> int:
            return 20

        @fd.node(run_in="thread")
        def combine(x: int, /, y: int, *, z: int, w: int = 4000) -> int:
            return x + y + z + w

        pipe = fd.Pipeline([x, y, combine])
        assert (await pipe.arun(inputs={"z": 300}, outputs="combine"))["combine"] == 4321
        result = await pipe.arun(inputs={"z": 300, "w": 0}, outputs="combine")
        assert result["combine"] == 321

    async def test_positional_only_defaults_before_a_given_argument(self, kind: Kind) -> None:
        @fd.node(run_in="inline")
        def second() -> int:
            return 5

        def pair_of(first: int = 1, second: int = 2, /) -> tuple[int, int]:
            return first, second

        pipe = fd.Pipeline([second, make_node(kind, pair_of, name="pair")])
        assert (await pipe.arun(outputs="pair"))["pair"] == (1, 5)
        assert (await pipe.arun(inputs={"first": 9}, outputs="pair"))["pair"] == (9, 5)

    async def test_keyword_only_parameters(self) -> None:
        @fd.node(run_in="inline")
        def a() -> str:
            return "a"

        @fd.node
        async def joined(*, a: str, sep: str) -> str:
            return sep.join([a, a])

        result = await fd.Pipeline([a, joined]).arun(inputs={"sep": "-"})
        assert result["joined"] == "a-a"

    async def test_defaults_apply_when_no_value_is_given(self, kind: Kind) -> None:
        def scaled(scale: int = 10) -> int:
            return scale * 2

        pipe = fd.Pipeline([make_node(kind, scaled, name="scaled")])
        assert (await pipe.arun())["scaled"] == 20
        assert (await pipe.arun(inputs={"scale": 4}))["scaled"] == 8

    async def test_a_node_feeds_a_parameter_that_has_a_default(self) -> None:
        @fd.node(run_in="inline")
        def scale() -> int:
            return 7

        @fd.node(run_in="inline")
        def scaled(scale: int = 10) -> int:
            return scale * 2

        result = await fd.Pipeline([scale, scaled]).arun()
        assert result["scaled"] == 14

    async def test_renamed_inputs_read_from_the_named_node(self) -> None:
        @fd.node(run_in="inline")
        def source() -> int:
            return 5

        @fd.node(run_in="inline")
        def value() -> int:
            return -1  # the parameter of the same name must not read this node

        @fd.node(inputs={"value": source})
        async def product(value: int, factor: int) -> int:
            return value * factor

        @fd.node(inputs={"x": "product"}, run_in="thread")
        def negated(x: int) -> int:
            return -x

        pipe = fd.Pipeline([source, value, product, negated])
        result = await pipe.arun(inputs={"factor": 3})
        assert result["product"] == 15
        assert result["negated"] == -15

    async def test_after_orders_without_passing_a_value(self, kind: Kind) -> None:
        events: list[str] = []

        @fd.node
        async def first() -> str:
            await anyio.sleep(0.05)
            events.append("first done")
            return "value of first"

        def seen() -> list[str]:
            return list(events)

        second = make_node(kind, seen, name="second", after=[first])
        result = await fd.Pipeline([second, first]).arun()
        assert result["second"] == ["first done"]
        assert result.started_at["second"] >= result.finished_at["first"]


class TestPlanExecution:
    async def test_only_requested_outputs_and_their_ancestors_run(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def a() -> int:
            calls.append("a")
            return 1

        @fd.node(run_in="inline")
        def b(a: int) -> int:
            calls.append("b")
            return a + 1

        @fd.node(run_in="inline")
        def unrelated() -> int:
            calls.append("unrelated")
            return 0

        result = await fd.Pipeline([a, b, unrelated]).arun(outputs="b")
        assert calls == ["a", "b"]
        assert set(result.status) == {"a", "b"}
        assert dict(result) == {"b": 2}

    async def test_an_input_named_like_a_node_replaces_it(self) -> None:
        calls: list[str] = []

        @fd.node
        async def a() -> int:
            calls.append("a")
            return 1

        @fd.node(run_in="thread")
        def b(a: int) -> int:
            calls.append("b")
            return a + 1

        result = await fd.Pipeline([a, b]).arun(inputs={"a": 41})
        assert calls == ["b"]
        assert result["b"] == 42
        assert result["a"] == 41
        assert "a" not in result.status


class TestConcurrentRuns:
    async def test_runs_of_one_pipeline_do_not_share_state(self) -> None:
        @fd.node
        async def doubled(x: int) -> int:
            await anyio.sleep(0.01 * (x % 3))
            return x * 2

        @fd.node(run_in="thread")
        def plus_one(doubled: int) -> int:
            return doubled + 1

        @fd.node(run_in="inline")
        def label(plus_one: int, x: int) -> str:
            return f"{x}:{plus_one}"

        pipe = fd.Pipeline([doubled, plus_one, label])
        results: dict[int, fd.RunResult] = {}

        async def one(x: int) -> None:
            results[x] = await pipe.arun(inputs={"x": x}, concurrency=2)

        async with anyio.create_task_group() as tg:
            for x in range(10):
                tg.start_soon(one, x)
        assert {x: r["label"] for x, r in results.items()} == {
            x: f"{x}:{2 * x + 1}" for x in range(10)
        }
        assert len({r.run_id for r in results.values()}) == 10


class TestReadiness:
    async def test_nodes_start_after_all_their_parents_finished(self) -> None:
        @fd.node
        async def root() -> int:
            await anyio.sleep(0.01)
            return 1

        @fd.node
        async def slow(root: int) -> int:
            await anyio.sleep(0.08)
            return root + 1

        @fd.node(run_in="thread")
        def medium(root: int) -> int:
            time.sleep(0.04)
            return root + 2

        @fd.node(run_in="inline")
        def quick(root: int) -> int:
            return root + 3

        @fd.node(run_in="inline")
        def join(slow: int, medium: int, quick: int) -> int:
            return slow + medium + quick

        @fd.node
        async def last(join: int, quick: int) -> int:
            return join * quick

        pipe = fd.Pipeline([root, slow, medium, quick, join, last])
        result = await pipe.arun()
        assert result["last"] == (2 + 3 + 4) * 4
        _assert_parents_finished_first(pipe, result)
        assert result.started_at["join"] >= result.finished_at["slow"] > result.finished_at["quick"]
        assert result.durations["slow"] >= 0.08


INVALID_CONCURRENCY = pytest.mark.parametrize(
    "value",
    [
        pytest.param(0, id="zero"),
        pytest.param(-1, id="negative"),
        pytest.param("x", id="str"),
        pytest.param(2.0, id="float"),
        pytest.param(True, id="bool"),
    ],
)


class TestConcurrency:
    @pytest.mark.parametrize("limit", [pytest.param(1, id="1"), pytest.param(3, id="3")])
    @pytest.mark.parametrize(
        "kinds",
        [
            pytest.param(["async"], id="async"),
            pytest.param(["thread"], id="thread"),
            pytest.param(["async", "thread"], id="mixed"),
        ],
    )
    async def test_concurrency_bounds_running_nodes(self, kinds: list[Kind], limit: int) -> None:
        gauge = _Gauge()
        nodes = [_gauged_node(kinds[i % len(kinds)], f"n{i}", gauge, 0.03) for i in range(12)]
        result = await fd.Pipeline(nodes).arun(concurrency=limit)
        assert result.ok
        assert gauge.max == limit

    async def test_default_bound_is_default_concurrency(self) -> None:
        gauge = _Gauge()
        count = fd.DEFAULT_CONCURRENCY + 16
        nodes = [_gauged_node("async", f"n{i}", gauge, 0.05) for i in range(count)]
        result = await fd.Pipeline(nodes).arun()
        assert len(result) == count
        assert gauge.max == fd.DEFAULT_CONCURRENCY

    def test_concurrency_applies_to_sync_run(self, backend: str) -> None:
        gauge = _Gauge()
        nodes = [_gauged_node("thread", f"n{i}", gauge, 0.02) for i in range(8)]
        fd.Pipeline(nodes).run(concurrency=2, backend=backend)
        assert gauge.max == 2

    @pytest.mark.parametrize(
        "kind", [pytest.param("async", id="async"), pytest.param("thread", id="thread")]
    )
    async def test_fan_out_runs_concurrently(self, kind: Kind) -> None:
        gauge = _Gauge()

        @fd.node(run_in="inline")
        def source() -> int:
            return 0

        def sleeper(source: int) -> None:
            gauge.enter()
            time.sleep(0.1)
            gauge.exit()

        async def sleeper_async(source: int) -> None:
            gauge.enter()
            await anyio.sleep(0.1)
            gauge.exit()

        sleepers = [
            make_node(kind, sleeper, name=f"s{i}", async_body=sleeper_async) for i in range(20)
        ]

        start = time.perf_counter()
        result = await fd.Pipeline([source, *sleepers]).arun()
        elapsed = time.perf_counter() - start
        assert result.ok
        assert elapsed < 0.8, f"20 nodes of 0.1 s took {elapsed:.2f} s: they did not overlap"
        assert gauge.max == 20

    @INVALID_CONCURRENCY
    async def test_invalid_concurrency_is_rejected(self, value: Any) -> None:
        called: list[str] = []

        @fd.node(run_in="inline")
        def a() -> None:
            called.append("a")

        with pytest.raises(fd.ConfigurationError, match="concurrency"):
            await fd.Pipeline([a]).arun(concurrency=value)
        assert called == []

    @INVALID_CONCURRENCY
    def test_invalid_concurrency_is_rejected_by_sync_run(self, value: Any, backend: str) -> None:
        called: list[str] = []

        @fd.node(run_in="inline")
        def a() -> None:
            called.append("a")

        with pytest.raises(fd.ConfigurationError, match="concurrency"):
            fd.Pipeline([a]).run(concurrency=value, backend=backend)
        assert called == []

    async def test_invalid_on_error_is_rejected(self, backend: str) -> None:
        @fd.node(run_in="inline")
        def a() -> None:
            pass

        pipe = fd.Pipeline([a])
        with pytest.raises(fd.ConfigurationError, match="on_error"):
            await pipe.arun(on_error="bogus")  # type: ignore[arg-type]
        with pytest.raises(fd.ConfigurationError, match="on_error"):
            pipe.run(on_error="bogus", backend=backend)  # type: ignore[arg-type]

    def test_invalid_backend_is_rejected(self) -> None:
        @fd.node(run_in="inline")
        def a() -> None:
            pass

        with pytest.raises(fd.ConfigurationError, match="backend"):
            fd.Pipeline([a]).run(backend="bogus")  # type: ignore[arg-type]


def _context_probes() -> list[fd.Node[..., Any]]:
    """Nodes of every kind reporting REQUEST_ID and the thread they run on."""

    @fd.node
    async def in_async() -> tuple[str, threading.Thread]:
        await anyio.lowlevel.checkpoint()
        return REQUEST_ID.get(), threading.current_thread()

    @fd.node(run_in="inline")
    def in_inline() -> tuple[str, threading.Thread]:
        return REQUEST_ID.get(), threading.current_thread()

    @fd.node(run_in="thread")
    def in_thread() -> tuple[str, threading.Thread]:
        return REQUEST_ID.get(), threading.current_thread()

    return [in_async, in_inline, in_thread]


class TestRunSync:
    def test_run_from_plain_sync_code(self, backend: str) -> None:
        def scenario() -> tuple[threading.Thread, fd.RunResult]:
            REQUEST_ID.set("from sync caller")
            result = fd.Pipeline(_context_probes()).run(backend=backend, store=None)
            return threading.current_thread(), result

        # A copy of the context keeps the variable from leaking into other tests.
        caller, result = contextvars.copy_context().run(scenario)
        values = {name: value for name, (value, _) in result.items()}
        threads = {name: thread for name, (_, thread) in result.items()}
        assert values == dict.fromkeys(["in_async", "in_inline", "in_thread"], "from sync caller")
        assert threads["in_async"] is caller
        assert threads["in_inline"] is caller
        assert threads["in_thread"] is not caller

    @pytest.mark.parametrize(
        "inner",
        [pytest.param("asyncio", id="inner-asyncio"), pytest.param("trio", id="inner-trio")],
    )
    def test_run_inside_a_running_loop_gets_its_own_thread(self, backend: str, inner: str) -> None:
        async def main() -> tuple[threading.Thread, fd.RunResult]:
            REQUEST_ID.set("from async caller")
            # A blocking call on purpose: as a Jupyter cell or a sync helper would make it.
            result = fd.Pipeline(_context_probes()).run(backend=inner, store=None)
            return threading.current_thread(), result

        caller, result = anyio.run(main, backend=backend)
        values = {name: value for name, (value, _) in result.items()}
        threads = {name: thread for name, (_, thread) in result.items()}
        assert values == dict.fromkeys(["in_async", "in_inline", "in_thread"], "from async caller")
        assert threads["in_async"] is not caller
        assert threads["in_inline"] is threads["in_async"]
        assert threads["in_thread"] not in (caller, threads["in_async"])

    async def test_arun_sees_context_variables(self) -> None:
        REQUEST_ID.set("from arun caller")
        result = await fd.Pipeline(_context_probes()).arun(store=None)
        assert {name: value for name, (value, _) in result.items()} == dict.fromkeys(
            ["in_async", "in_inline", "in_thread"], "from arun caller"
        )

    def test_failure_inside_a_running_loop_raises_node_failed(self, backend: str) -> None:
        @fd.node
        async def bad() -> None:
            raise ValueError("bad input")

        async def main() -> None:
            fd.Pipeline([bad]).run(backend=backend)

        with pytest.raises(fd.NodeFailed) as info:
            anyio.run(main, backend=backend)
        assert isinstance(info.value.__cause__, ValueError)


def _failure_graph(kind: Kind, release: threading.Event) -> fd.Pipeline:
    """``bad`` (of ``kind``) fails while an async and a thread sibling are still running."""

    @fd.node(run_in="inline")
    def ok() -> int:
        return 1

    @fd.node
    async def tick(ok: int) -> int:
        await anyio.sleep(0.05)
        return ok + 1

    @fd.node(run_in="inline")
    def after_bad(bad: int) -> int:
        return bad

    @fd.node
    async def slow_async() -> int:
        await anyio.sleep(10)
        return 0

    @fd.node(run_in="thread")
    def slow_thread() -> int:
        release.wait(10)
        return 0

    @fd.node(run_in="inline")
    def after_slow(slow_async: int) -> int:
        return slow_async

    return fd.Pipeline(
        [ok, tick, _failing_node(kind, "tick"), after_bad, slow_async, slow_thread, after_slow]
    )


EXPECTED_AFTER_FAILURE = {
    "ok": fd.Status.SUCCEEDED,
    "tick": fd.Status.SUCCEEDED,
    "bad": fd.Status.FAILED,
    "after_bad": fd.Status.PENDING,
    "slow_async": fd.Status.CANCELLED,
    "slow_thread": fd.Status.CANCELLED,
    "after_slow": fd.Status.PENDING,
}


class TestFailFast:
    async def test_first_failure_raises_node_failed(
        self, kind: Kind, release: threading.Event, status_log: StatusLog
    ) -> None:
        pipe = _failure_graph(kind, release)
        tasks_before = _living_tasks()
        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            await pipe.arun(on_status=status_log)
        elapsed = time.perf_counter() - start
        await anyio.sleep(0.05)
        assert _living_tasks() == tasks_before

        error = info.value
        assert type(error) is fd.NodeFailed  # not wrapped in an ExceptionGroup
        assert isinstance(error, fd.FlowdecoError)
        assert error.node == "bad"
        assert "'bad'" in str(error)
        assert "ValueError: bad input 2" in str(error)
        assert elapsed < 2, f"the 10 s siblings delayed the failure by {elapsed:.1f} s"

        cause = error.__cause__
        assert isinstance(cause, ValueError)
        assert str(cause) == "bad input 2"
        assert error.error is cause
        assert traceback.extract_tb(cause.__traceback__)[-1].name == "bad"

        partial = error.result
        assert dict(partial.status) == EXPECTED_AFTER_FAILURE
        assert not partial.ok
        assert partial.values == {"ok": 1, "tick": 2}
        assert partial["tick"] == 2
        assert partial.errors == {"bad": cause}
        assert set(partial.started_at) == {"ok", "tick", "bad", "slow_async", "slow_thread"}
        assert set(partial.finished_at) == set(partial.started_at)
        with pytest.raises(fd.OutputNotAvailableError):
            partial["bad"]

        status_log.assert_legal()
        assert status_log.last() == {
            name: status
            for name, status in EXPECTED_AFTER_FAILURE.items()
            if status is not fd.Status.PENDING
        }

    def test_sync_run_raises_node_failed(
        self, kind: Kind, backend: str, release: threading.Event
    ) -> None:
        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            _failure_graph(kind, release).run(backend=backend)
        assert time.perf_counter() - start < 2
        assert type(info.value) is fd.NodeFailed
        assert isinstance(info.value.__cause__, ValueError)
        assert dict(info.value.result.status) == EXPECTED_AFTER_FAILURE

    async def test_failure_of_a_root_inline_node_cancels_started_siblings(
        self, release: threading.Event
    ) -> None:
        @fd.node
        async def slow() -> None:
            await anyio.sleep(10)

        @fd.node(run_in="inline")
        def bad() -> None:
            raise ValueError("at once")

        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([slow, bad]).arun()
        assert time.perf_counter() - start < 2
        assert info.value.result.status["bad"] is fd.Status.FAILED
        assert info.value.result.status["slow"] is not fd.Status.RUNNING

    async def test_no_node_starts_after_the_first_failure(
        self, kind: Kind, status_log: StatusLog
    ) -> None:
        ran: list[str] = []

        @fd.node
        async def warm() -> None:
            """Finishes at once, so a worker is idle when ``late`` becomes ready."""

        @fd.node(run_in="thread")
        def a() -> int:
            time.sleep(0.05)
            return 1

        def late(a: int) -> None:
            ran.append("late")

        # ``late`` and ``bad`` become ready together; ``bad`` fails first.
        pipe = fd.Pipeline(
            [warm, a, make_node(kind, late, name="late"), _failing_node("inline", "a")]
        )
        with pytest.raises(fd.NodeFailed) as info:
            await pipe.arun(on_status=status_log)
        assert info.value.node == "bad"
        assert ran == []
        assert info.value.result.status["late"] is fd.Status.PENDING
        failed_at = status_log.calls.index(("bad", fd.Status.FAILED))
        assert status_log.calls[failed_at + 1 :] == []


class TestContinueOnError:
    async def test_independent_branches_finish(self, kind: Kind, status_log: StatusLog) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        @fd.node(run_in="inline")
        def child(bad: int) -> int:
            return bad

        @fd.node
        async def grandchild(child: int, a: int) -> int:
            return child + a

        @fd.node
        async def other(a: int) -> int:
            await anyio.sleep(0.1)  # still running when bad fails
            return a + 10

        @fd.node(run_in="thread")
        def after_other(other: int) -> int:
            return other * 2

        pipe = fd.Pipeline([a, _failing_node(kind, "a"), child, grandchild, other, after_other])
        result = await pipe.arun(on_error="continue", on_status=status_log)

        assert not result.ok
        assert dict(result.status) == {
            "a": fd.Status.SUCCEEDED,
            "bad": fd.Status.FAILED,
            "child": fd.Status.SKIPPED,
            "grandchild": fd.Status.SKIPPED,
            "other": fd.Status.SUCCEEDED,
            "after_other": fd.Status.SUCCEEDED,
        }
        assert list(result.errors) == ["bad"]
        assert isinstance(result.errors["bad"], ValueError)
        assert str(result.errors["bad"]) == "bad input 1"
        assert result["after_other"] == 22
        assert dict(result) == {"a": 1, "other": 11, "after_other": 22}
        for name in ("bad", "child", "grandchild"):
            with pytest.raises(fd.OutputNotAvailableError, match=name):
                result[name]
        status_log.assert_legal()
        assert status_log.last() == dict(result.status)

    async def test_skips_only_nodes_of_the_plan(self, status_log: StatusLog) -> None:
        @fd.node(run_in="inline")
        def bad() -> int:
            raise ValueError("nope")

        @fd.node(run_in="inline")
        def wanted(bad: int) -> int:
            return bad

        @fd.node(run_in="inline")
        def unwanted(bad: int) -> int:
            return bad

        @fd.node
        async def fine() -> int:
            return 1

        pipe = fd.Pipeline([bad, wanted, unwanted, fine])
        result = await pipe.arun(
            outputs=["wanted", "fine"], on_error="continue", on_status=status_log
        )
        assert dict(result.status) == {
            "bad": fd.Status.FAILED,
            "wanted": fd.Status.SKIPPED,
            "fine": fd.Status.SUCCEEDED,
        }
        assert "unwanted" not in status_log.last()
        assert dict(result) == {"fine": 1}

    def test_sync_run_continues(self, backend: str) -> None:
        @fd.node(run_in="thread")
        def bad() -> int:
            raise RuntimeError("nope")

        @fd.node
        async def good() -> int:
            return 5

        @fd.node(run_in="inline")
        def needs_both(bad: int, good: int) -> int:
            return bad + good

        result = fd.Pipeline([bad, good, needs_both]).run(on_error="continue", backend=backend)
        assert result.status["needs_both"] is fd.Status.SKIPPED
        assert result["good"] == 5
        assert isinstance(result.errors["bad"], RuntimeError)

    async def test_every_failure_is_recorded(self) -> None:
        @fd.node(run_in="inline")
        def first() -> None:
            raise ValueError("one")

        @fd.node
        async def second() -> None:
            raise KeyError("two")

        @fd.node(run_in="thread")
        def third() -> None:
            raise OSError("three")

        result = await fd.Pipeline([first, second, third]).arun(on_error="continue")
        assert {n: type(e) for n, e in result.errors.items()} == {
            "first": ValueError,
            "second": KeyError,
            "third": OSError,
        }
        assert set(result.status.values()) == {fd.Status.FAILED}


def _long_running_graph(release: threading.Event) -> fd.Pipeline:
    @fd.node(run_in="inline")
    def quick() -> int:
        return 1

    @fd.node
    async def slow_async(quick: int) -> int:
        await anyio.sleep(10)
        return quick

    @fd.node(run_in="thread")
    def slow_thread(quick: int) -> int:
        release.wait(10)
        return quick

    @fd.node(run_in="inline")
    def after_slow(slow_async: int, slow_thread: int) -> int:
        return slow_async + slow_thread

    return fd.Pipeline([quick, slow_async, slow_thread, after_slow])


EXPECTED_AFTER_CANCEL = {
    "quick": fd.Status.SUCCEEDED,
    "slow_async": fd.Status.CANCELLED,
    "slow_thread": fd.Status.CANCELLED,
}


class TestCancellation:
    async def test_cancel_scope_stops_the_run(
        self, release: threading.Event, status_log: StatusLog
    ) -> None:
        pipe = _long_running_graph(release)
        tasks_before = _living_tasks()
        start = time.perf_counter()
        with anyio.move_on_after(0.2) as scope:
            await pipe.arun(on_status=status_log)
        elapsed = time.perf_counter() - start

        assert scope.cancelled_caught, "arun() must re-raise the cancellation"
        assert elapsed < 1.5
        status_log.assert_legal()
        assert status_log.last() == EXPECTED_AFTER_CANCEL  # after_slow never started
        await anyio.sleep(0.05)
        assert _living_tasks() == tasks_before

    async def test_fail_after_raises_timeout(
        self, release: threading.Event, status_log: StatusLog
    ) -> None:
        pipe = _long_running_graph(release)
        start = time.perf_counter()
        with pytest.raises(TimeoutError), anyio.fail_after(0.2):
            await pipe.arun(on_status=status_log)
        assert time.perf_counter() - start < 1.5
        status_log.assert_legal()
        assert status_log.last() == EXPECTED_AFTER_CANCEL

    async def test_task_group_cancellation_stops_the_run(
        self, release: threading.Event, status_log: StatusLog
    ) -> None:
        pipe = _long_running_graph(release)
        started = anyio.Event()

        def record(name: str, status: fd.Status) -> None:
            status_log(name, status)
            if name == "slow_thread" and status is fd.Status.RUNNING:
                started.set()

        async def go() -> None:
            await pipe.arun(on_status=record)

        async with anyio.create_task_group() as tg:
            tg.start_soon(go)
            await started.wait()
            await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
        status_log.assert_legal()
        assert status_log.last() == EXPECTED_AFTER_CANCEL

    def test_pipeline_runs_again_after_a_cancelled_run(
        self, backend: str, release: threading.Event
    ) -> None:
        @fd.node
        async def waits(source: int) -> int:
            if not release.is_set():
                await anyio.sleep(10)
            return source + 1

        @fd.node(run_in="thread")
        def blocks(waits: int) -> int:
            release.wait(10)
            return waits + 1

        pipe = fd.Pipeline([waits, blocks])

        async def cancelled() -> None:
            with anyio.move_on_after(0.1):
                await pipe.arun(inputs={"source": 0})

        anyio.run(cancelled, backend=backend)
        release.set()
        start = time.perf_counter()
        assert pipe.run(inputs={"source": 1}, backend=backend)["blocks"] == 3
        assert time.perf_counter() - start < 2


INTERRUPTS = pytest.mark.parametrize(
    "interrupt",
    [
        pytest.param(KeyboardInterrupt, id="KeyboardInterrupt"),
        pytest.param(SystemExit, id="SystemExit"),
    ],
)


class TestKeyboardInterrupt:
    @staticmethod
    def _graph(release: threading.Event, interrupt: type[BaseException]) -> fd.Pipeline:
        @fd.node
        async def tick() -> int:
            await anyio.sleep(0.05)
            return 1

        @fd.node(run_in="inline")
        def interrupted(tick: int) -> int:
            raise interrupt

        @fd.node
        async def slow_async() -> None:
            await anyio.sleep(10)

        @fd.node(run_in="thread")
        def slow_thread() -> None:
            release.wait(10)

        @fd.node(run_in="inline")
        def after(interrupted: int) -> int:
            return interrupted

        return fd.Pipeline([tick, interrupted, slow_async, slow_thread, after])

    @INTERRUPTS
    async def test_propagates_unwrapped_and_cancels_running_nodes(
        self, interrupt: type[BaseException], release: threading.Event, status_log: StatusLog
    ) -> None:
        tasks_before = _living_tasks()
        start = time.perf_counter()
        with pytest.raises(interrupt) as info:
            await self._graph(release, interrupt).arun(on_status=status_log)
        assert type(info.value) is interrupt
        assert time.perf_counter() - start < 2
        status_log.assert_legal()
        last = status_log.last()
        assert last["tick"] is fd.Status.SUCCEEDED
        assert last["slow_async"] is fd.Status.CANCELLED
        assert last["slow_thread"] is fd.Status.CANCELLED
        assert "after" not in last
        await anyio.sleep(0.05)
        assert _living_tasks() == tasks_before

    @INTERRUPTS
    def test_propagates_from_sync_run(
        self, interrupt: type[BaseException], backend: str, release: threading.Event
    ) -> None:
        start = time.perf_counter()
        with pytest.raises(interrupt) as info:
            self._graph(release, interrupt).run(backend=backend)
        assert type(info.value) is interrupt
        assert time.perf_counter() - start < 2

    @pytest.mark.parametrize(
        "kind", [pytest.param("thread", id="thread"), pytest.param("async", id="async")]
    )
    async def test_from_thread_and_async_nodes(self, kind: Kind, status_log: StatusLog) -> None:
        def interrupted() -> None:
            raise KeyboardInterrupt

        node = make_node(kind, interrupted, name="interrupted")

        @fd.node
        async def slow() -> None:
            await anyio.sleep(10)

        start = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            await fd.Pipeline([slow, node]).arun(on_status=status_log)
        assert time.perf_counter() - start < 2
        status_log.assert_legal()
        assert status_log.last()["slow"] is fd.Status.CANCELLED


class TestStatusCallback:
    async def test_every_change_is_reported_in_order(self, status_log: StatusLog) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        @fd.node(run_in="thread")
        def b(a: int) -> int:
            raise ValueError("b fails")

        @fd.node
        async def c(a: int) -> int:
            return a

        @fd.node(run_in="inline")
        def d(b: int, c: int) -> int:
            return b + c

        @fd.node
        async def e(c: int) -> int:
            return c

        result = await fd.Pipeline([a, b, c, d, e]).arun(on_error="continue", on_status=status_log)
        paths = status_log.paths()
        s = fd.Status
        assert paths == {
            "a": [s.PENDING, s.RUNNING, s.SUCCEEDED],
            "b": [s.PENDING, s.RUNNING, s.FAILED],
            "c": [s.PENDING, s.RUNNING, s.SUCCEEDED],
            "d": [s.PENDING, s.SKIPPED],
            "e": [s.PENDING, s.RUNNING, s.SUCCEEDED],
        }
        status_log.assert_legal()
        assert status_log.last() == dict(result.status)
        # A child is reported running only after its parent is reported done.
        order = status_log.calls
        assert order.index(("c", s.RUNNING)) > order.index(("a", s.SUCCEEDED))
        assert order.index(("e", s.RUNNING)) > order.index(("c", s.SUCCEEDED))

    async def test_callback_runs_in_the_loop_thread(self) -> None:
        threads: set[threading.Thread] = set()

        @fd.node(run_in="thread")
        def a() -> int:
            return 1

        @fd.node
        async def b(a: int) -> int:
            return a

        await fd.Pipeline([a, b]).arun(on_status=lambda *_: threads.add(threading.current_thread()))
        assert threads == {threading.current_thread()}


def _chain(length: int, make: Any) -> fd.Pipeline:
    """A chain n0 -> n1 -> ... where each node adds one to its parent."""
    nodes = [fd.node(name="n0", run_in="inline")(lambda: 0)]
    nodes += [make(f"n{i}", f"n{i - 1}") for i in range(1, length)]
    return fd.Pipeline(nodes)


def _add_one(x: int) -> int:
    return x + 1


async def _add_one_async(x: int) -> int:
    return x + 1


async def _zero_async() -> int:
    return 0


DEEP = 100_000


@pytest.fixture(scope="module")
def deep_inline_chain() -> fd.Pipeline:
    return _chain(
        DEEP,
        lambda name, parent: fd.node(name=name, inputs={"x": parent}, run_in="inline")(_add_one),
    )


class TestDeepGraphs:
    def test_deep_inline_chain_runs_without_recursion(
        self, deep_inline_chain: fd.Pipeline, backend: str
    ) -> None:
        start = time.perf_counter()
        result = deep_inline_chain.run(outputs=f"n{DEEP - 1}", backend=backend, store=None)
        assert result[f"n{DEEP - 1}"] == DEEP - 1
        assert len(result.status) == DEEP
        assert time.perf_counter() - start < 10

    async def test_deep_inline_chain_in_a_running_loop(
        self, deep_inline_chain: fd.Pipeline
    ) -> None:
        result = await deep_inline_chain.arun(outputs=f"n{DEEP - 1}", store=None)
        assert result[f"n{DEEP - 1}"] == DEEP - 1

    async def test_deep_inline_chain_below_an_async_node(self) -> None:
        # The inline nodes then run from a worker task, not from the run's own task.
        nodes = [fd.node(name="n0")(_zero_async)]
        nodes += [
            fd.node(name=f"n{i}", inputs={"x": f"n{i - 1}"}, run_in="inline")(_add_one)
            for i in range(1, 20_000)
        ]
        result = await fd.Pipeline(nodes).arun(outputs="n19999", store=None)
        assert result["n19999"] == 19_999

    async def test_deep_async_chain(self) -> None:
        pipe = _chain(
            2_000, lambda name, parent: fd.node(name=name, inputs={"x": parent})(_add_one_async)
        )
        result = await pipe.arun(outputs="n1999", store=None)
        assert result["n1999"] == 1999

    async def test_deep_chain_of_every_kind(self) -> None:
        def make(name: str, parent: str) -> fd.Node[..., Any]:
            i = int(name[1:])
            if i % 3 == 0:
                return fd.node(name=name, inputs={"x": parent})(_add_one_async)
            kind = "inline" if i % 3 == 1 else "thread"
            return fd.node(name=name, inputs={"x": parent}, run_in=kind)(_add_one)  # type: ignore[arg-type]

        result = await _chain(1_500, make).arun(outputs="n1499", concurrency=1, store=None)
        assert result["n1499"] == 1499

    async def test_wide_fan_in(self) -> None:
        @fd.node(run_in="inline")
        def root() -> int:
            return 1

        leaves = [
            fd.node(name=f"leaf{i}", inputs={"x": "root"})(_add_one_async) for i in range(500)
        ]
        names = [leaf.name for leaf in leaves]
        src = f"def total({', '.join(names)}):\n    return sum([{', '.join(names)}])\n"
        namespace: dict[str, Any] = {}
        exec(src, namespace)  # noqa: S102  # a signature of 500 named parameters
        total = fd.node(run_in="inline")(namespace["total"])
        result = await fd.Pipeline([root, *leaves, total]).arun(outputs="total")
        assert result["total"] == 1000


class TestHookErrors:
    """A hook that raises stops the run and is reported as itself, never in a group."""

    @pytest.mark.parametrize(
        ("kind", "when"),
        [
            pytest.param("async", fd.Status.RUNNING, id="async-start"),
            pytest.param("async", fd.Status.SUCCEEDED, id="async-end"),
            pytest.param("thread", fd.Status.SUCCEEDED, id="thread-end"),
            pytest.param("inline", fd.Status.RUNNING, id="inline-start"),
        ],
    )
    async def test_a_raising_hook_stops_the_run(self, kind: Kind, when: fd.Status) -> None:
        ran: list[str] = []

        def first() -> int:
            ran.append("first")
            return 1

        def second(first: int) -> int:
            ran.append("second")
            return first

        head = make_node(kind, first, name="first")

        def on_status(node: str, status: fd.Status) -> None:
            if node == "first" and status is when:
                raise ValueError("a bug in the hook")

        pipe = fd.Pipeline([head, fd.node(run_in="inline")(second)])
        with pytest.raises(fd.HookError) as info:
            await pipe.arun(on_status=on_status)
        assert info.value.node == "first"
        assert info.value.status == when.value
        assert isinstance(info.value.__cause__, ValueError)
        assert "second" not in ran
