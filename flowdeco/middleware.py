"""Middleware: async callables wrapped around each call of a node, and the built-ins.

A middleware receives the :class:`Call` and ``call_next``; it may act before and after,
replace the result, retry, or raise. The pipeline's middleware is outermost, then the
node's own, then the retry and timeout that ``retries=``/``timeout=`` options ask for::

    async def audit(call: fd.Call, call_next: fd.CallNext) -> Any:
        print("calling", call.node.name, "attempt", call.attempt)
        return await call_next(call)
"""

from __future__ import annotations

import logging as _logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from .errors import ConfigurationError, NodeTimeoutError
from .options import Options

if TYPE_CHECKING:
    from .hooks import Hooks
    from .node import Node

__all__ = ["Call", "CallNext", "Middleware", "logging", "retry", "timeout"]


@attrs.frozen
class Call:
    """One call of a node, as middleware sees it.

    ``inputs`` maps parameter names to the values the function will get; a middleware may
    pass ``attrs.evolve(call, inputs=...)`` on to change them.
    """

    node: Node[..., Any]
    pipeline: str
    run_id: str
    attempt: int
    inputs: Mapping[str, Any]
    hooks: Hooks = attrs.field(repr=False)


CallNext = Callable[[Call], Awaitable[Any]]


class Middleware(Protocol):
    """What a middleware is: ``await middleware(call, call_next)`` returns the node's value."""

    def __call__(self, call: Call, call_next: CallNext, /) -> Awaitable[Any]: ...


async def call_chain(chain: tuple[Middleware, ...], call: Call, innermost: CallNext) -> Any:
    """Call ``innermost`` through ``chain``, the first middleware outermost."""

    def at(position: int) -> CallNext:
        if position == len(chain):
            return innermost
        middleware, call_next = chain[position], at(position + 1)
        return lambda c: middleware(c, call_next)

    return await at(0)(call)


@attrs.frozen
class _Retry:
    """Retries a call; the one implementation behind ``retries=`` and ``retry()``."""

    retries: int
    delay: float
    backoff: float
    max_delay: float
    jitter: float
    retry_on: tuple[type[Exception], ...]
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep
    random: Callable[[], float] = random.random

    def delay_before(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        try:
            grown = self.delay * self.backoff ** (retry - 1)
        except OverflowError:  # thousands of retries: the cap applies
            grown = math.inf
        base = min(self.max_delay, grown)
        if self.jitter:
            base *= 1 + self.jitter * (2 * self.random() - 1)
        return max(0.0, min(self.max_delay, base))

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        attempt = call.attempt
        while True:
            try:
                return await call_next(attrs.evolve(call, attempt=attempt))
            except self.retry_on as exc:
                # Only Exceptions get here: cancellation is a BaseException, never retried.
                retry = attempt - call.attempt + 1
                if retry > self.retries:
                    raise
                delay = self.delay_before(retry)
                call.hooks.node_retrying(call.node.name, attempt, exc, delay)
            await self.sleep(delay)  # a cancellation interrupts the wait
            attempt += 1


def retry(
    retries: int = 3,
    *,
    retry_delay: float = 0.0,
    backoff: float = 2.0,
    max_delay: float = float("inf"),
    jitter: float = 0.0,
    retry_on: type[Exception] | tuple[type[Exception], ...] = (Exception,),
    sleep: Callable[[float], Awaitable[Any]] = anyio.sleep,
) -> Middleware:
    """Retry failed calls: ``1 + retries`` attempts at most.

    The wait before retry n is ``retry_delay * backoff**(n-1)``, capped at ``max_delay``,
    scaled by a random factor in ``1 ± jitter``. Exceptions outside ``retry_on`` fail at
    once; cancellation is never retried and cuts a wait short. ``sleep`` is injectable
    for tests.
    """
    options = Options(
        retries=retries,
        retry_delay=retry_delay,
        backoff=backoff,
        max_delay=max_delay,
        jitter=jitter,
        retry_on=retry_on,
    )
    return retry_from(options, sleep=sleep)


def retry_from(
    options: Options, *, sleep: Callable[[float], Awaitable[Any]] = anyio.sleep
) -> _Retry:
    """The retry middleware for resolved options (unset ones take the defaults)."""
    return _Retry(
        retries=options.retries or 0,
        delay=options.retry_delay or 0.0,
        backoff=2.0 if options.backoff is None else options.backoff,
        max_delay=float("inf") if options.max_delay is None else options.max_delay,
        jitter=options.jitter or 0.0,
        retry_on=(Exception,) if options.retry_on is None else options.retry_on,
        sleep=sleep,
    )


@attrs.frozen
class _Timeout:
    seconds: float

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        # move_on_after, not fail_after: a TimeoutError the node raises itself, or another
        # timeout's, must pass through as it is.
        with anyio.move_on_after(self.seconds):
            return await call_next(call)
        raise NodeTimeoutError(call.node.name, self.seconds, call.attempt)


def timeout(seconds: float) -> Middleware:
    """Fail an attempt that takes longer than ``seconds`` with :class:`NodeTimeoutError`.

    Async nodes are cancelled at the deadline. A sync node in a thread cannot be stopped:
    it is abandoned (it runs on, its result is dropped) and the attempt fails at once.
    """
    Options(timeout=seconds)  # validates
    return _Timeout(seconds)


@attrs.frozen
class _Logging:
    logger: _logging.Logger
    level: int

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        log, name = self.logger, call.node.name
        log.log(self.level, "node %s started (run %s, attempt %d)", name, call.run_id, call.attempt)
        start = time.perf_counter()
        try:
            value = await call_next(call)
        except anyio.get_cancelled_exc_class():
            log.log(self.level, "node %s cancelled after %.3fs", name, time.perf_counter() - start)
            raise
        except BaseException as exc:
            log.log(
                max(self.level, _logging.WARNING),
                "node %s failed after %.3fs (attempt %d): %s: %s",
                name,
                time.perf_counter() - start,
                call.attempt,
                type(exc).__name__,
                exc,
            )
            raise
        log.log(self.level, "node %s finished in %.3fs", name, time.perf_counter() - start)
        return value


def logging(logger: _logging.Logger | str = "flowdeco", level: int = _logging.INFO) -> Middleware:
    """Log each call's start, end and duration, or failure, one line each (stdlib logging).

    Failures are logged at WARNING or ``level``, whichever is higher.
    """
    if isinstance(logger, str):
        logger = _logging.getLogger(logger)
    if not isinstance(level, int):
        raise ConfigurationError(f"level must be a logging level number, got {level!r}")
    return _Logging(logger, level)
