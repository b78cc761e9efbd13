"""Executors: where a node's body runs. Inline in the scheduler, awaited in the loop, or in a thread.

The scheduler knows only this interface: ``await executor.call(func, args, kwargs)``, and
``inline``, which lets it call a node itself, in its loop over ready nodes, without a task.
A run calls the executor ``for_run()`` returns, so what a run needs for its length (a
limiter, a pool) is the run's, never shared with another run in another loop. A new place
to run bodies (a process pool, a cluster) is one more subclass.
"""

from __future__ import annotations

import abc
import math
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.to_thread

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from ._node import RunIn

__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "LoopExecutor", "ThreadExecutor"]


class Executor(abc.ABC):
    """Runs node bodies somewhere; one instance serves every node and run that names it."""

    #: Whether the scheduler calls ``func`` itself, in the event loop's thread, with no task:
    #: only for bodies that never wait (cheap sync functions).
    inline: ClassVar[bool] = False

    @abc.abstractmethod
    def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Awaitable[Any]:
        """``func(*args, **kwargs)`` run where this executor runs things: its value, to await.

        An awaitable rather than a coroutine of its own, so that handing a body on (an async
        function's coroutine, a thread's) costs no extra frame per node.
        """

    def for_run(self) -> Executor:
        """The executor one run calls: this one, or one holding that run's own state."""
        return self


class InlineExecutor(Executor):
    """Calls sync bodies in the event loop's thread: no hand-off, and nothing can stop them."""

    inline = True

    def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Awaitable[Any]:
        return _value_of(func, args, kwargs)


class LoopExecutor(Executor):
    """Awaits async bodies in the run's event loop."""

    def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Awaitable[Any]:
        coroutine: Awaitable[Any] = func(*args, **kwargs)
        return coroutine


class ThreadExecutor(Executor):
    """Runs sync bodies in worker threads; a cancelled call abandons its thread, which runs on."""

    def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Awaitable[Any]:
        return self.for_run().call(func, args, kwargs)

    def for_run(self) -> Executor:
        return _RunThreads()


class _RunThreads(Executor):
    """One run's threads, under a limiter of its own.

    The worker pool bounds concurrency; this limiter only lifts anyio's process-wide default
    of 40 threads. It is unbounded because trio keeps an abandoned thread's token until the
    thread ends, which would starve the run after a timeout. It is made on the first call,
    in the run's event loop, which it belongs to.
    """

    def __init__(self) -> None:
        self.limiter: anyio.CapacityLimiter | None = None

    def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Awaitable[Any]:
        limiter = self.limiter
        if limiter is None:
            limiter = self.limiter = anyio.CapacityLimiter(math.inf)
        return anyio.to_thread.run_sync(
            partial(func, *args, **kwargs), abandon_on_cancel=True, limiter=limiter
        )


async def _value_of(
    func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    return func(*args, **kwargs)


#: The executor each ``run_in=`` names.
EXECUTORS: Mapping[RunIn, Executor] = {
    "inline": InlineExecutor(),
    "loop": LoopExecutor(),
    "thread": ThreadExecutor(),
}
