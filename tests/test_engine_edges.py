"""Odd but legal code behaves: a node's own cancellation exception, an outside cancel."""

from __future__ import annotations

import asyncio
import functools
import time
import traceback
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import flowdeco as fd

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
