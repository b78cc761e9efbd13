"""Middleware: Call, the protocol and the built-ins (see :mod:`flowdeco.middleware`); NodeCalls."""

from __future__ import annotations

import logging as _logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from types import CoroutineType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import attrs

from ._errors import ConfigurationError, NodeDefinitionError, NodeTimeoutError, describe, leaves
from ._node import returned_coroutine
from ._options import Options

if TYPE_CHECKING:
    from collections.abc import Coroutine, Iterable, Sequence

    from ._executors import Executor
    from ._graph import Plan
    from ._hooks import Hooks
    from ._layout import Layout
    from ._node import Node

__all__ = ["Call", "CallNext", "Middleware", "NodeCalls", "logging", "retry", "timeout"]


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


#: What a middleware calls to go on: the next middleware, or the node's function itself.
CallNext = Callable[[Call], Awaitable[Any]]


class Middleware(Protocol):
    """What a middleware is: ``await middleware(call, call_next)`` returns the node's value."""

    def __call__(self, call: Call, call_next: CallNext, /) -> Awaitable[Any]: ...


async def _call_chain(chain: tuple[Middleware, ...], call: Call, innermost: CallNext) -> Any:
    """Call ``innermost`` through ``chain``, the first middleware outermost.

    What each middleware returns is checked as it returns, inner ones first, so a coroutine
    is blamed on the middleware that returned ``call_next(call)`` without awaiting it.
    """

    def at(position: int) -> CallNext:
        if position == len(chain):
            return innermost
        middleware, call_next = chain[position], at(position + 1)

        async def step(c: Call) -> Any:
            value = await middleware(c, call_next)
            if type(value) is CoroutineType:
                raise _unawaited(middleware, c.node, value)
            return value

        return step

    return await at(0)(call)


def _unawaited(
    middleware: Middleware, spec: Node[..., Any], coroutine: Coroutine[Any, Any, Any]
) -> NodeDefinitionError:
    """The failure of node ``spec`` when ``middleware`` returned a coroutine as its value.

    The coroutine is closed, so that Python does not also warn that it was never awaited.
    """
    coroutine.close()
    name = getattr(middleware, "__qualname__", None) or repr(middleware)
    code = getattr(middleware, "__code__", None) or getattr(
        type(middleware).__call__, "__code__", None
    )
    where = "" if code is None else f" ({code.co_filename}:{code.co_firstlineno})"
    return NodeDefinitionError(
        f"middleware {name}{where} returned a coroutine as the value of node {spec.name!r} "
        f"({spec.location}): it returns call_next(call) without awaiting it; write "
        "`return await call_next(call)`"
    )


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

    def retries_on(self, error: Exception) -> bool:
        """Whether ``error`` is one to retry: it, or every error its group holds, is in
        ``retry_on`` (a node using a task group fails with a group around the real error)."""
        retry_on = self.retry_on
        return isinstance(error, retry_on) or all(
            isinstance(leaf, retry_on) for leaf in leaves(error)
        )

    async def __call__(self, call: Call, call_next: CallNext) -> Any:
        attempt = call.attempt
        while True:
            try:
                return await call_next(attrs.evolve(call, attempt=attempt))
            except Exception as exc:  # cancellation is a BaseException: never retried
                retry = attempt - call.attempt + 1
                if retry > self.retries or not self.retries_on(exc):
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
    checked = Options(timeout=seconds).timeout  # the one check of a timeout's seconds
    assert checked is not None
    return _Timeout(checked)


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
                describe(exc),
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


class NodeCalls:
    """How one run calls its planned nodes: straight to their executor, or through middleware.

    A node's chain is the pipeline's middleware, the node's own, then retry and timeout as
    its layered options ask; nodes without any stay on the fast path. A node runs in the
    executor it chose, else in the run's (or the pipeline's) if that runs its kind of
    function, else in its kind's (the layout's).
    """

    def __init__(
        self,
        plan: Plan,
        layout: Layout,
        middleware: tuple[Middleware, ...],
        defaults: Options,
        run_id: str,
        hooks: Hooks,
    ) -> None:
        self.layout = layout
        self.specs = plan.graph.specs
        self.pipeline = plan.graph.name
        self.run_id = run_id
        self.hooks = hooks
        self.chains: dict[int, tuple[Middleware, ...]] = {}
        self.retried: set[int] = set()  # nodes whose failure says "on attempt N"
        self.attempts: dict[int, int] = {}  # by node, for nodes called through a chain
        self.executors: dict[Executor, Executor] = {}  # each executor, as this run calls it
        self.node_executors: Sequence[Executor] = layout.executors  # each node's
        if defaults.executor is not None:
            self.node_executors = _with_default(plan, layout, defaults.executor)
        candidates: Iterable[int]
        if middleware or defaults.wraps_calls:
            candidates = plan.order
        elif layout.own_chains:  # only nodes with options or middleware of their own
            planned = set(plan.order)
            candidates = [i for i in layout.own_chains if i in planned]
        else:
            return
        for i in candidates:
            spec = self.specs[i]
            options = spec.options.over(defaults)
            chain = (*middleware, *spec.middleware)
            if options.retries:
                chain += (retry_from(options),)
                self.retried.add(i)
            if options.timeout is not None and not self.node_executors[i].inline:  # cannot stop
                chain += (timeout(options.timeout),)
            if chain:
                self.chains[i] = chain

    def call(self, i: int, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Awaitable[Any]:
        """Node ``i``'s value, from its body called with these arguments, to await.

        Not a coroutine itself: a node without middleware awaits its executor directly.
        """
        chain = self.chains.get(i)
        if chain is None:
            executor = self.node_executors[i]
            run_executor = self.executors.get(executor) or self._for_run(executor)
            return run_executor.call(self.layout.funcs[i], args, kwargs, self.specs[i].name)
        spec = self.specs[i]
        inputs = dict(zip((p.name for p in spec.params if not p.keyword_only), args, strict=True))
        inputs.update(kwargs)
        call = Call(spec, self.pipeline, self.run_id, 1, inputs, self.hooks)
        return _call_chain(chain, call, partial(self._attempt, i))

    async def _attempt(self, i: int, call: Call) -> Any:
        """The innermost call: one attempt of the body, with the inputs middleware left."""
        self.attempts[i] = call.attempt
        spec = self.specs[i]
        args, kwargs = _split_inputs(spec, call.inputs)
        executor = self.node_executors[i]
        run_executor = self.executors.get(executor) or self._for_run(executor)
        value = await run_executor.call(self.layout.funcs[i], args, kwargs, spec.name)
        if type(value) is CoroutineType:  # a sync function's (a wrapper around an async def?)
            raise returned_coroutine(spec, value)
        return value

    def _for_run(self, executor: Executor) -> Executor:
        found = self.executors[executor] = executor.for_run()
        return found


def _with_default(plan: Plan, layout: Layout, default: Executor) -> list[Executor]:
    """Each node's executor in a run whose default is ``default``: the node's own choice,
    else ``default`` where it runs the node's kind of function, else the layout's."""
    executors = list(layout.executors)
    specs = plan.graph.specs
    for i in plan.order:
        spec = specs[i]
        if spec.options.executor is None and (
            default.runs_async if spec.run_in == "loop" else default.runs_sync
        ):
            executors[i] = default
    return executors


def _split_inputs(
    spec: Node[..., Any], inputs: Mapping[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Arguments for ``spec.func`` from parameter names, as middleware left them."""
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for p in spec.params:
        if p.keyword_only or (p.name not in inputs and not p.has_default):
            if p.name in inputs:
                kwargs[p.name] = inputs[p.name]
        else:
            args.append(inputs.get(p.name, p.default))
    known = {p.name for p in spec.params}
    kwargs.update((k, v) for k, v in inputs.items() if k not in known)  # Python will object
    return args, kwargs
