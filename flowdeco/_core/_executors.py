"""Executors: where a node's body runs. Inline in the scheduler, awaited in the loop, or in a thread.

The scheduler knows only this interface: ``await executor.call(func, args, kwargs)``, and
``inline``, which lets it call a node itself, in its loop over ready nodes, without a task.
A new place to run bodies (a process pool, a cluster) is one more subclass.
"""

from __future__ import annotations

import abc
import math
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ._node import RunIn

__all__ = ["EXECUTORS", "Executor", "InlineExecutor", "LoopExecutor", "ThreadExecutor"]


class Executor(abc.ABC):
    """Runs node bodies somewhere; one instance serves every node and run that names it."""

    #: Whether the scheduler calls ``func`` itself, in the event loop's thread, with no task:
    #: only for bodies that never wait (cheap sync functions).
    inline: ClassVar[bool] = False

    @abc.abstractmethod
    async def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """``func(*args, **kwargs)``'s value, run where this executor runs things."""


class InlineExecutor(Executor):
    """Calls sync bodies in the event loop's thread: no hand-off, and nothing can stop them."""

    inline = True

    async def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        return func(*args, **kwargs)


class LoopExecutor(Executor):
    """Awaits async bodies in the run's event loop."""

    async def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        return await func(*args, **kwargs)


# The worker pool bounds concurrency; this limiter only lifts anyio's process-wide default of
# 40 threads. It is unbounded because trio keeps an abandoned thread's token until the thread
# ends, which would starve the run after a timeout. One per event loop, as anyio's own.
_thread_limiter: RunVar[anyio.CapacityLimiter] = RunVar("flowdeco thread limiter")


class ThreadExecutor(Executor):
    """Runs sync bodies in worker threads; a cancelled call abandons its thread, which runs on."""

    async def call(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        try:
            limiter = _thread_limiter.get()
        except LookupError:
            limiter = anyio.CapacityLimiter(math.inf)
            _thread_limiter.set(limiter)
        return await anyio.to_thread.run_sync(
            partial(func, *args, **kwargs), abandon_on_cancel=True, limiter=limiter
        )


#: The executor each ``run_in=`` names.
EXECUTORS: Mapping[RunIn, Executor] = {
    "inline": InlineExecutor(),
    "loop": LoopExecutor(),
    "thread": ThreadExecutor(),
}
