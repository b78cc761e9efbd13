"""Odd but legal code behaves: a node's own cancellation exception, an outside cancel."""

from __future__ import annotations

import asyncio
import functools
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowdeco as fd

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


class TestANodesOwnCancellation:
    """A cancellation exception a node raises itself is that node's failure: the run goes
    on (or raises ``NodeFailed``), and only the run's own cancellation cancels it."""

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_an_async_node_raising_cancelled_error_fails_with_on_error_raise(
        self, anyio_backend: str
    ) -> None:
        @fd.node
        async def cancelled_itself() -> int:
            await anyio.lowlevel.checkpoint()
            raise asyncio.CancelledError

        @fd.node
        async def child(cancelled_itself: int) -> int:
            return cancelled_itself

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([cancelled_itself, child]).arun(store=None)
        assert info.value.node == "cancelled_itself"
        assert isinstance(info.value.error, asyncio.CancelledError)
        assert info.value.result.status["cancelled_itself"] is fd.Status.FAILED

    @pytest.mark.parametrize("anyio_backend", ["asyncio"])
    async def test_awaiting_a_future_someone_cancelled_fails_that_node_only(
        self, anyio_backend: str
    ) -> None:
        @fd.node
        async def waits() -> int:
            future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            future.cancel()  # someone else's cancellation, not the run's
            return await future

        @fd.node
        async def after(waits: int) -> int:
            return waits

        @fd.node
        async def independent() -> int:
            await anyio.sleep(0.01)
            return 7

        result = await fd.Pipeline([waits, after, independent]).arun(
            store=None, on_error="continue"
        )
        assert result.status == {
            "waits": fd.Status.FAILED,
            "after": fd.Status.SKIPPED,
            "independent": fd.Status.SUCCEEDED,
        }
        assert isinstance(result.errors["waits"], asyncio.CancelledError)
        assert result["independent"] == 7

    def test_an_inline_node_raising_cancelled_error_is_its_failure(self) -> None:
        @fd.node(run_in="inline")
        def bare() -> int:
            raise asyncio.CancelledError

        @fd.node(run_in="inline")
        def fine() -> int:
            return 1

        result = fd.Pipeline([bare, fine]).run(store=None, on_error="continue")
        assert result.status == {"bare": fd.Status.FAILED, "fine": fd.Status.SUCCEEDED}
        assert isinstance(result.errors["bare"], asyncio.CancelledError)
        with pytest.raises(fd.NodeFailed, match="node 'bare' failed"):
            fd.Pipeline([bare, fine]).run(store=None)


class TestOutsideCancel:
    async def test_nothing_starts_once_the_run_is_cancelled(self) -> None:
        """A thread node that finishes after the run was cancelled keeps its value, and
        its inline child, ready at that moment, never starts."""
        started: list[str] = []

        @fd.node
        def slow() -> int:
            time.sleep(0.3)  # a thread that cannot be interrupted
            return 1

        @fd.node(run_in="inline")
        def child(slow: int) -> int:
            started.append("child")
            return slow + 1

        pipe = fd.Pipeline([slow, child])
        with anyio.move_on_after(0.05):
            await pipe.arun(store=None)
        assert started == []

    async def test_a_node_finishing_as_the_run_is_cancelled_starts_no_child(self) -> None:
        """The outside cancel comes as a node returns (no await after it): its value is
        kept, and neither its inline child nor its async child begins."""
        started: list[str] = []
        scope = anyio.CancelScope()

        @fd.node
        async def first() -> int:
            await anyio.lowlevel.checkpoint()
            scope.cancel()  # from outside the run, as far as the run can tell
            return 1

        @fd.node
        async def async_child(first: int) -> int:
            started.append("async_child")
            await anyio.lowlevel.checkpoint()
            return first

        @fd.node(run_in="inline")
        def inline_child(first: int) -> int:
            started.append("inline_child")
            return first

        with scope:
            await fd.Pipeline([first, async_child, inline_child]).arun(store=None)
        assert started == []


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class TestWhatAFailureShows:
    def test_an_error_whose_str_raises_still_gives_node_failed(self) -> None:
        """A broken ``__str__`` neither replaces ``NodeFailed`` nor loses the result."""

        @fd.node(run_in="inline")
        def done() -> int:
            return 1

        @fd.node(run_in="inline")
        def broken(done: int) -> int:
            raise Unprintable

        with pytest.raises(fd.NodeFailed) as info:
            fd.Pipeline([done, broken]).run(store=None)
        assert str(info.value) == ("node 'broken' failed: Unprintable: <str() raised RuntimeError>")
        assert info.value.result.values["done"] == 1

    @pytest.mark.parametrize("run_in", ["inline", "thread"])
    def test_the_error_starts_at_the_node_not_in_the_engine(self, run_in: str) -> None:
        """The node's exception carries the user's frames only: from the node's function
        (or the user's decorator around it) down; none of the scheduler's or anyio's."""

        def logged(func: Any) -> Any:
            @functools.wraps(func)
            def wrapper(*args: Any) -> Any:
                return func(*args)

            return wrapper

        @fd.node(run_in=run_in)  # type: ignore[call-overload]
        @logged
        def total(x: int) -> float:
            return x / 0

        result = fd.Pipeline([total]).run({"x": 1}, store=None, on_error="continue")
        frames = traceback.extract_tb(result.errors["total"].__traceback__)
        assert [f.name for f in frames] == ["wrapper", "total"]

    async def test_a_task_groups_error_names_its_leaf(self) -> None:
        """A node using a task group fails with a group; the message says what failed
        inside it, not only "unhandled errors in a TaskGroup"."""

        @fd.node
        async def grouped() -> None:
            async def write() -> None:
                raise OSError("disk full")

            async with anyio.create_task_group() as group:
                group.start_soon(write)

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([grouped]).arun(store=None)
        assert str(info.value).endswith("(1 sub-exception): OSError: disk full")

    @pytest.mark.parametrize("entry", ["run", "arun"])
    def test_node_failed_shows_at_most_two_frames_of_flowdecos(self, entry: str) -> None:
        """Above the node's own error, the user sees the public call and the line raising."""

        @fd.node(run_in="inline")
        def broken() -> int:
            raise ValueError("bad")

        pipe = fd.Pipeline([broken], store=None)
        with pytest.raises(fd.NodeFailed) as info:
            if entry == "run":
                pipe.run()
            else:
                anyio.run(pipe.arun)
        package = str(Path(fd.__file__).parent)
        ours = [
            f
            for f in traceback.extract_tb(info.value.__traceback__)
            if f.filename.startswith(package)
        ]
        assert len(ours) == (2 if entry == "run" else 1), ours
        assert "flowdeco.NodeFailed: node 'broken' failed: ValueError: bad" in "".join(
            traceback.format_exception(info.value)
        )
        assert info.value.__cause__ is info.value.error


def _group_failing(error: Exception, times: int) -> Any:
    """An async node body whose task group fails with ``error`` the first ``times`` calls."""
    calls = []

    async def grouped() -> int:
        calls.append(1)

        async def child() -> None:
            if len(calls) <= times:
                raise error

        async with anyio.create_task_group() as group:
            group.start_soon(child)
        return len(calls)

    return grouped


class TestRetryOnInsideGroups:
    """``retry_on`` matches the errors a group holds, not only the group itself."""

    async def test_a_group_of_matching_errors_is_retried(self) -> None:
        grouped = fd.node(_group_failing(OSError("flaky disk"), 2), retries=3, retry_on=OSError)
        result = await fd.Pipeline([grouped]).arun(store=None)
        assert result["grouped"] == 3
        assert result.attempts["grouped"] == 3

    async def test_a_group_of_other_errors_fails_at_once_naming_the_leaf(self) -> None:
        grouped = fd.node(_group_failing(KeyError("id"), 5), retries=3, retry_on=(OSError,))
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([grouped]).arun(store=None)
        assert info.value.attempt == 1
        assert str(info.value).endswith("(1 sub-exception): KeyError: 'id'")

    async def test_a_group_holding_one_error_not_to_retry_is_not_retried(self) -> None:
        @fd.node(retries=3, retry_on=OSError)
        async def mixed() -> None:
            raise ExceptionGroup("two", [OSError("disk"), ValueError("bug")])

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([mixed]).arun(store=None)
        assert info.value.attempt == 1


class RaisesOnRetry(fd.Hooks):
    def __init__(self) -> None:
        self.heard: list[tuple[str, fd.Status]] = []

    def status_changed(self, node: str, status: fd.Status, error: BaseException | None) -> None:
        self.heard.append((node, status))
        super().status_changed(node, status, error)

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        raise RuntimeError("progress bar broke")


class TestARaisingRetryHook:
    """A ``node_retrying`` hook that raises stops the run with ``HookError``, like a status
    hook; it is not the node's failure, and ``on_error="continue"`` does not hide it."""

    @pytest.mark.parametrize("on_error", ["raise", "continue"])
    async def test_it_stops_the_run_with_hook_error(self, on_error: str) -> None:
        calls = []

        @fd.node(retries=5)
        async def flaky() -> int:
            calls.append(1)
            await anyio.sleep(0.05)  # slow has started
            raise OSError("try again")

        @fd.node
        async def slow() -> int:
            await anyio.sleep(30)
            return 1

        hooks = RaisesOnRetry()
        pipe = fd.Pipeline([flaky, slow], store=None)
        with anyio.fail_after(10), pytest.raises(fd.HookError) as info:
            await pipe.arun(on_error=on_error, hooks=[hooks])  # type: ignore[call-overload]
        assert info.value.node == "flaky"
        assert info.value.status == "retrying"
        assert str(info.value) == (
            "a hook raised when node 'flaky' was to retry: RuntimeError: progress bar broke; "
            "the run was stopped"
        )
        assert isinstance(info.value.__cause__, RuntimeError)
        assert calls == [1]  # not retried after the hook raised
        assert ("flaky", fd.Status.CANCELLED) in hooks.heard
        assert ("slow", fd.Status.CANCELLED) in hooks.heard

    async def test_a_middleware_swallowing_it_does_not_hide_it(self) -> None:
        async def swallow(call: fd.Call, call_next: fd.CallNext) -> object:
            try:
                return await call_next(call)
            except fd.HookError:
                return 0

        @fd.node(retries=2, middleware=[swallow])
        async def flaky() -> int:
            raise OSError("try again")

        @fd.node
        async def after(flaky: int) -> int:
            return flaky + 1

        with pytest.raises(fd.HookError):
            await fd.Pipeline([flaky, after], store=None).arun(hooks=[RaisesOnRetry()])

    async def test_a_nested_runs_hook_error_is_the_outer_nodes_failure(self) -> None:
        """A node running a pipeline whose hook raised fails as any node does."""

        @fd.node(retries=1)
        async def inner() -> int:
            raise OSError("no")

        @fd.node
        async def outer() -> int:
            result = await fd.Pipeline([inner], store=None).arun(hooks=[RaisesOnRetry()])
            return result["inner"]

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([outer], store=None).arun()
        assert info.value.node == "outer"
        assert isinstance(info.value.error, fd.HookError)


class TestTracingAnUnprintableError:
    def test_the_span_says_str_failed_and_the_run_raises_node_failed(self) -> None:
        """The SDK's ``record_exception`` calls ``str()`` unguarded: a broken ``__str__``
        used to turn the node's failure into the tracer's HookError."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))

        @fd.node(run_in="inline")
        def broken() -> int:
            raise Unprintable

        with pytest.raises(fd.NodeFailed):
            fd.Pipeline([broken], store=None).run(tracer_provider=provider)
        (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("broken")]
        (event,) = [e for e in span.events if e.name == "exception"]
        assert event.attributes is not None
        assert event.attributes["exception.message"] == "<str() raised RuntimeError>"
        assert event.attributes["exception.type"] == f"{__name__}.Unprintable"
        assert "raise Unprintable" in str(event.attributes["exception.stacktrace"])
        assert span.status.description == "Unprintable: <str() raised RuntimeError>"
        provider.shutdown()
