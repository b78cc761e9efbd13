"""Executors: where a node's body runs. Inline in the scheduler, awaited in the loop, or in a thread.

The scheduler knows only this interface: ``await executor.call(func, args, kwargs, node)``,
and ``inline``, which lets it call a node itself, in its loop over ready nodes, without a
task. A run calls the executor ``for_run()`` returns, so what a run needs for its length (a
limiter, a pool) is the run's, never shared with another run in another loop. A new place
to run bodies (a process pool, a cluster) is one more subclass.
"""

from __future__ import annotations

import abc
import contextvars
import importlib
import math
import threading
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._threads import LoopInbox, running_asyncio_loop, start_soon

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Awaitable, Callable, Mapping, Sequence

__all__ = ["Executor", "InlineExecutor", "LoopExecutor", "ThreadExecutor"]


class Executor(abc.ABC):
    """Where node bodies run: subclass it to run them somewhere else.

    One instance may serve many nodes and runs. A run asks it for :meth:`for_run` on its
    first call (in the run's event loop) and calls what that returns.
    """

    #: Whether the scheduler calls ``func`` itself, in the event loop's thread, with no task:
    #: only for bodies that never wait (cheap sync functions).
    inline: ClassVar[bool] = False
    #: Whether :meth:`call` takes sync functions.
    runs_sync: ClassVar[bool] = True
    #: Whether :meth:`call` takes async functions, and runs their coroutines itself.
    runs_async: ClassVar[bool] = False

    @abc.abstractmethod
    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        """``func(*args, **kwargs)`` run where this executor runs things: its value, to await.

        ``node`` is the node's name, for errors and for naming work where it runs. An
        awaitable rather than a coroutine of its own, so that handing a body on (an async
        function's coroutine, a thread's) costs no extra frame per node. A cancelled await
        must not wait for the body to finish.
        """

    def for_run(self) -> Executor:
        """The executor one run calls: this one, or one holding that run's own state."""
        return self


class InlineExecutor(Executor):
    """Calls sync bodies in the event loop's thread: no hand-off, and nothing can stop them."""

    inline = True

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        return _value_of(func, args, kwargs)

    def __repr__(self) -> str:
        return "InlineExecutor()"


class LoopExecutor(Executor):
    """Awaits async bodies in the run's event loop."""

    runs_sync = False
    runs_async = True

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        coroutine: Awaitable[Any] = func(*args, **kwargs)
        return coroutine

    def __repr__(self) -> str:
        return "LoopExecutor()"


class ThreadExecutor(Executor):
    """Runs sync bodies in worker threads; a cancelled call abandons its thread, which runs on.

    On asyncio the threads are flowdeco's own daemon threads, so a body still running after
    its run was cancelled (a Ctrl-C, a timeout) does not hold up the interpreter's exit, and
    handing a body over costs a few microseconds. On trio they are trio's, which are daemon
    threads too. Either way ``anyio.from_thread.run()`` and ``run_sync()`` work in the body
    without a token.
    """

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        return self.for_run().call(func, args, kwargs, node)

    def for_run(self) -> Executor:
        loop = running_asyncio_loop()
        if loop is None or _anyio_thread is None:
            return _AnyioThreads()
        return _DaemonThreads(loop, anyio.lowlevel.current_token())

    def __repr__(self) -> str:
        return "ThreadExecutor()"


class _DaemonThreads(Executor):
    """One asyncio run's calls into flowdeco's daemon threads (:mod:`._threads`).

    anyio lets ``anyio.from_thread`` find the loop without a token only in threads it
    started: it reads the loop's token from a thread-local of its own, which is private. A
    call sets it in its thread when the thread's last call came from another loop (and
    ``current_cancel_scope`` to None: a body's ``from_thread.check_cancelled()`` cannot see
    the run's cancellation here, as handing over a cancel scope would cost a scope per
    call). Without that thread-local (a future anyio), :class:`ThreadExecutor` uses anyio's
    threads instead, which is correct but slower.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, token: anyio.lowlevel.EventLoopToken):
        self.loop = loop
        self.inbox = LoopInbox(loop)
        self.token = token

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        future = self.loop.create_future()
        start_soon(_ThreadCall(func, args, kwargs, future, self))
        return future


class _ThreadCall:
    """One body to call in a daemon thread, in the context (tracing, variables) it came from."""

    __slots__ = ("args", "context", "error", "func", "future", "kwargs", "run", "value")

    def __init__(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        future: asyncio.Future[Any],
        run: _DaemonThreads,
    ) -> None:
        self.func = func
        self.args: Sequence[Any] | None = args
        self.kwargs: Mapping[str, Any] | None = kwargs
        self.future = future
        self.run = run
        self.context = contextvars.copy_context()
        self.value: Any = None
        self.error: BaseException | None = None

    def __call__(self) -> Callable[[], None]:
        local, run = _anyio_thread, self.run
        assert local is not None  # or this run would use anyio's threads
        if getattr(local, "current_token", None) is not run.token:
            local.current_token = run.token
            local.current_cancel_scope = None
        # Taken off the call: the loop may start the next node before this thread lets go
        # of the call, which must not hold the inputs then.
        args, kwargs = self.args, self.kwargs
        self.args = self.kwargs = None
        assert args is not None and kwargs is not None  # a call runs once
        try:
            self.value = self.context.run(self.func, *args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the node's failure, settled in the loop
            self.error = exc
        return self.settle

    def settle(self) -> None:
        self.run.inbox.put(self.future, self.value, self.error)


class _AnyioThreads(Executor):
    """One run's calls into anyio's worker threads (trio's, on trio), under a limiter of its own.

    The worker pool bounds concurrency; this limiter only lifts anyio's process-wide default
    of 40 threads. It is unbounded because trio keeps an abandoned thread's token until the
    thread ends, which would starve the run after a timeout. It is made on the first call,
    in the run's event loop, which it belongs to.
    """

    def __init__(self) -> None:
        self.limiter: anyio.CapacityLimiter | None = None

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        limiter = self.limiter
        if limiter is None:
            limiter = self.limiter = anyio.CapacityLimiter(math.inf)
        return _unboxed(
            anyio.to_thread.run_sync(
                partial(_boxing_coroutines, func, args, kwargs),
                abandon_on_cancel=True,
                limiter=limiter,
            )
        )


class _Box:
    """A coroutine a sync body returned, boxed: trio's threads refuse one as a value, and the
    scheduler is the one to fail the node for it."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _boxing_coroutines(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    value = func(*args, **kwargs)
    return _Box(value) if type(value) is CoroutineType else value


async def _unboxed(value: Awaitable[Any]) -> Any:
    found = await value
    return found.value if type(found) is _Box else found


def _anyio_thread_state() -> threading.local | None:
    """anyio's private per-thread state, which ``anyio.from_thread`` reads its token from."""
    try:
        module = importlib.import_module("anyio._core._eventloop")
    except ImportError:
        return None
    state = getattr(module, "threadlocals", None)
    return state if isinstance(state, threading.local) else None


_anyio_thread = _anyio_thread_state()


async def _value_of(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    return func(*args, **kwargs)
