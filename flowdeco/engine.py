"""The scheduler: runs a planned graph on an anyio task group with readiness counts.

A node starts when its count of unfinished parents reaches zero. Inline nodes are called
by the scheduler itself, so a run of cheap functions needs no task at all; async and thread
nodes go to a pool of long-lived worker tasks, at most ``concurrency`` of them, started only
as the ready work needs them. Nothing here recurses, so a 100,000-deep chain runs.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs

from .calls import INLINE, LOOP, MISSING, THREAD, Layout, middleware_chains, split_inputs
from .checkpoint import Checkpoints, resumable
from .errors import ConfigurationError, HookError, NodeFailed
from .hooks import Hooks, combine_hooks
from .loops import run_blocking
from .middleware import Call, Middleware, call_chain
from .options import NO_OPTIONS, Options
from .result import RunResult, Status, new_run_id
from .store import CheckpointWarning
from .tracing import RunTracer, attach, detach

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from anyio.abc import TaskGroup
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

    from .graph import Backend, OnError, Plan
    from .store import Store

__all__ = ["DEFAULT_CONCURRENCY", "run_async", "run_sync"]

#: Nodes (async, and sync ones in threads) running at once unless ``concurrency=`` says.
DEFAULT_CONCURRENCY = 64


def _check_concurrency(concurrency: int | None) -> int:
    if concurrency is None:
        return DEFAULT_CONCURRENCY
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


@attrs.frozen
class RunSettings:
    """How one run goes: everything ``run()``/``arun()`` take besides inputs and outputs."""

    concurrency: int = attrs.field(default=None, converter=_check_concurrency)
    on_error: OnError = attrs.field(default="raise")
    on_status: Callable[[str, Status], None] | None = None
    hooks: Sequence[Hooks] = ()
    defaults: Options = NO_OPTIONS  # the run's over the pipeline's; nodes' own win
    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None
    trace_inputs: bool = False  # record inputs' types and sizes on node spans
    store: Store | None = None  # where checkpoints go; None: nowhere
    cache: bool = attrs.field(default=True)  # reuse stored values across runs
    # A run id to resume, or True for the latest run of the pipeline that did not end well.
    resume: str | bool | None = attrs.field(default=None)

    @resume.validator
    def _check_resume(self, _: object, value: object) -> None:
        if value not in (None, False) and self.store is None:
            raise ConfigurationError("resume= needs a store; this run has store=None")

    @cache.validator
    def _check_cache(self, _: object, value: object) -> None:
        if not isinstance(value, bool):
            raise ConfigurationError(f"cache must be True or False, got {value!r}")

    @on_error.validator
    def _check_on_error(self, _: object, value: str) -> None:
        if value not in ("raise", "continue"):
            raise ConfigurationError(f"on_error must be 'raise' or 'continue', got {value!r}")


async def run_async(plan: Plan, settings: RunSettings) -> RunResult:
    """Execute a plan in the current event loop and return its result.

    Raises:
        NodeFailed: With ``on_error="raise"``, the first node that failed.
    """
    run = _Run(plan, settings)
    try:
        await run.execute()
    finally:
        run.warn(stacklevel=1)  # the caller awaiting arun()
    return run.result()


def run_sync(plan: Plan, settings: RunSettings, backend: Backend = "asyncio") -> RunResult:
    """Execute a plan from synchronous code, in a new event loop (or none if not needed).

    When this thread already runs an event loop (a Jupyter cell, an async framework), the
    new loop gets a thread of its own, started in a copy of this context, and the caller
    waits for it; Ctrl-C while waiting cancels the run.
    """
    if backend not in ("asyncio", "trio"):
        raise ConfigurationError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
    run = _Run(plan, settings)
    # The loop's main coroutine returns None: asyncio formats its result in a debug message
    # on the way out, and a RunResult's repr walks every node.
    try:
        if run.all_inline:
            run.execute_without_loop()
        else:
            run_blocking(run.execute, backend)
    finally:
        run.warn(stacklevel=2)  # the caller of Pipeline.run()
    return run.result()


_NO_HOOKS = Hooks()


def _sole_interrupt(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The KeyboardInterrupt or SystemExit a group holds, if it holds nothing else."""
    interrupts, rest = group.split((KeyboardInterrupt, SystemExit))
    if interrupts is None or rest is not None:
        return None
    found: BaseException = interrupts
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


_NEVER = sys.maxsize  # the readiness count of nodes outside the plan: never reaches zero
_NO_KEYWORDS: dict[str, Any] = {}
_UNFINISHED = frozenset({Status.PENDING, Status.RUNNING})
_UNSUCCESSFUL = frozenset({Status.FAILED, Status.CANCELLED})


class _Run:
    """The state of one run; every method runs in the event loop's thread.

    Per-node lists are indexed like the pipeline's nodes; only planned nodes are used.
    """

    def __init__(self, plan: Plan, settings: RunSettings) -> None:
        # First, as it may refuse the run: nothing is allocated yet.
        resumed = (
            resumable(settings.store, plan.pipeline.name, settings.resume)
            if settings.store is not None and settings.resume not in (None, False)
            else None
        )
        layout = Layout.of(plan.pipeline)
        given = plan.given
        n = len(layout.names)
        self.plan = plan
        self.layout = layout
        self.run_id = new_run_id()
        self.values: list[Any] = [MISSING] * n
        self.waiting = [_NEVER] * n
        # Argument templates; nodes reading run inputs get their own copies, filled in.
        self.args = list(layout.args)
        self.kwargs = list(layout.kwargs)
        index = plan.pipeline._index
        overridden = {index[name] for name in given if name in index}
        for g in overridden:
            self.values[g] = given[layout.names[g]]
        parents, inputs = layout.parents, layout.inputs
        for g in plan.order:
            ps = parents[g]
            self.waiting[g] = sum(1 for p in ps if p not in overridden) if overridden else len(ps)
            if inputs[g]:
                self._fill_inputs(g, given)
        self.status = [Status.PENDING] * n
        self.started = [0.0] * n
        self.finished = [0.0] * n
        self.errors: dict[int, BaseException] = {}
        self.unfinished = len(plan.order)
        self.raise_first = settings.on_error == "raise"
        self.first_failure: int | None = None
        self.interrupt: BaseException | None = None
        self.hook_error: HookError | None = None
        self.stopped = False
        pipeline = plan.pipeline
        self.tracer = RunTracer.create(
            pipeline, self.run_id, settings.tracer_provider, settings.meter_provider
        )
        observers = [self.tracer, *settings.hooks] if self.tracer else settings.hooks
        self.hooks = combine_hooks(observers, settings.on_status)
        self.trace_inputs = settings.trace_inputs
        self.call_hooks = self.hooks or _NO_HOOKS
        self.chains, self.retried = middleware_chains(plan, layout, settings.defaults)
        self.attempts: dict[int, int] = {}
        self.concurrency = settings.concurrency
        self.limiter: anyio.CapacityLimiter | None = None  # made in the loop, by execute()
        self.all_inline = not self.chains and all(layout.kinds[g] == INLINE for g in plan.order)
        self.inline_ready: list[int] = []
        self.workers = 0
        self.free_workers = 0
        self.backlog = 0
        self.cancelled_exc: type[BaseException] = BaseException
        self.send, self.receive = anyio.create_memory_object_stream[int](math.inf)
        self.task_group: TaskGroup | None = None
        self.wall_start = time.time()
        self.clock_start = time.perf_counter()
        self.clock_end = self.clock_start
        # Last: it starts the writer thread, which nothing after it may leave running.
        self.checkpoints: Checkpoints | None = None
        # Where a node goes once its parents finished: first to its checkpoint, if any.
        self._dispatch: Callable[[int], None] = self._route
        self.served: list[tuple[int, Any]] = []  # nodes found in the store, to complete
        if settings.store is not None:
            self.checkpoints = Checkpoints(
                plan, layout, settings.store, self.run_id, settings.cache, resumed
            )
            self._dispatch = self._check

    def _fill_inputs(self, g: int, given: Mapping[str, Any]) -> None:
        args = list(self.args[g])
        kwargs = self.kwargs[g]
        kwargs = None if kwargs is None else dict(kwargs)
        for slot, source in self.layout.inputs[g]:
            if source not in given:
                continue  # planning made sure the parameter has a default
            if isinstance(slot, int):
                args[slot] = given[source]
            else:
                assert kwargs is not None
                kwargs[slot] = given[source]
        self.args[g] = tuple(args)
        self.kwargs[g] = kwargs

    async def execute(self) -> None:
        """Run every planned node; raise NodeFailed or an interrupt after cleaning up."""
        self.cancelled_exc = anyio.get_cancelled_exc_class()
        # The worker pool bounds concurrency. This limiter only lifts anyio's process-wide
        # default of 40 threads; it is unbounded because trio keeps an abandoned thread's
        # token until the thread ends, which would starve the run after a timeout.
        self.limiter = anyio.CapacityLimiter(math.inf)
        if self.tracer is not None:
            self.tracer.start_run()
        ended: BaseException | None = None
        try:
            with self.send, self.receive:
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    self._start()
                    if self.unfinished == 0:
                        self.send.close()
        except BaseExceptionGroup as group:
            # trio delivers Ctrl-C to the task waiting on the task group, which wraps it.
            interrupt = _sole_interrupt(group)
            if interrupt is None:
                raise
            self.interrupt = self.interrupt or interrupt
        except BaseException as exc:  # cancelled from outside: the trace says so, then it goes on
            ended = exc
            raise
        finally:
            self.clock_end = time.perf_counter()
            self.task_group = None
            if self.checkpoints is not None:
                with anyio.CancelScope(shield=True):  # finished work is kept, even now
                    await anyio.to_thread.run_sync(self._close_checkpoints, ended is None)
            if self.tracer is not None:
                self._finish_trace(ended)
                # Shielded: spans of a cancelled run are exported too. In a thread: an
                # exporter's network round trip must not stall the caller's event loop.
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self.tracer.flush, abandon_on_cancel=True)
        self._raise_outcome()

    def execute_without_loop(self) -> None:
        """Run a plan of inline nodes only: they need no event loop, so none is started."""
        if self.tracer is not None:
            self.tracer.start_run()
        try:
            with self.send, self.receive:
                self._start()
        finally:
            self.clock_end = time.perf_counter()
            if self.checkpoints is not None:
                self._close_checkpoints(True)
            if self.tracer is not None:
                self._finish_trace(None)
                self.tracer.flush()
        self._raise_outcome()

    def _close_checkpoints(self, not_cancelled: bool) -> None:
        assert self.checkpoints is not None
        ok = (
            not_cancelled
            and self.unfinished == 0
            and self.first_failure is None
            and self.interrupt is None
            and self.hook_error is None
        )
        self.checkpoints.close(ok)

    def warn(self, stacklevel: int) -> None:
        """Tell the caller about checkpoints that could not be used or written.

        ``stacklevel`` counts frames above run_sync/run_async: the warning points there.
        """
        if self.checkpoints is not None:
            for problem in self.checkpoints.problems:
                warnings.warn(problem, CheckpointWarning, stacklevel=stacklevel + 2)

    def _finish_trace(self, ended: BaseException | None) -> None:
        assert self.tracer is not None
        failure = self.errors.get(self.first_failure) if self.first_failure is not None else None
        self.tracer.finish_run(ended or self.interrupt or failure)

    def _start(self) -> None:
        waiting = self.waiting
        for k in self.plan.order:
            if waiting[k] == 0:
                self._dispatch(k)
        self._drain()

    def _raise_outcome(self) -> None:
        if self.interrupt is not None:
            if self.checkpoints is not None and sys.version_info >= (3, 11):
                self.interrupt.add_note(
                    f"flowdeco: run {self.run_id} stopped; finished nodes are checkpointed, "
                    "so running again resumes where it stopped"
                )
            raise self.interrupt
        if self.hook_error is not None:
            raise self.hook_error from self.hook_error.error
        if self.first_failure is not None and self.raise_first:
            k = self.first_failure
            error = self.errors[k]
            attempt = self.attempts.get(k) if k in self.retried else None
            raise NodeFailed(self.layout.names[k], error, self.result(), attempt) from error

    # -- scheduling -----------------------------------------------------------------------

    def _route(self, k: int) -> None:
        """Hand a node that will run to the scheduler: inline, or to a worker."""
        if self.layout.kinds[k] == INLINE and k not in self.chains:
            self.inline_ready.append(k)
            return
        self.send.send_nowait(k)
        if self.free_workers:
            self.free_workers -= 1
        elif self.workers < self.concurrency:
            self.workers += 1
            assert self.task_group is not None
            self.task_group.start_soon(self._worker, name=f"flowdeco worker {self.workers}")
        else:
            self.backlog += 1

    def _drain(self) -> None:
        """Call ready inline nodes, and complete nodes served from the store, until none is left.

        A loop, not recursion: a chain of 100,000 cached nodes completes here one by one.
        """
        ready, served = self.inline_ready, self.served
        funcs, names, tracer = self.layout.funcs, self.layout.names, self.tracer
        arguments, begin, succeed = self._arguments, self._begin, self._succeed
        while (ready or served) and not self.stopped:
            if not ready:
                self._succeed(*served.pop(), Status.CACHED)
                continue
            k = ready.pop()
            args, kwargs = arguments(k)
            begin(k, args, kwargs)
            token = None if tracer is None else attach(tracer.node_context(names[k]))
            try:
                value = funcs[k](*args, **kwargs)
            except Exception as exc:
                self._fail(k, exc)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit from the body
                self._interrupt(k, exc)
            else:
                succeed(k, value)
            finally:
                detach(token)

    async def _worker(self) -> None:
        async for k in self.receive:
            if self.stopped:  # handed over before a failure stopped the run: never start it
                return
            await self._call(k)
            self._drain()
            if self.backlog:
                self.backlog -= 1
            else:
                self.free_workers += 1

    async def _call(self, k: int) -> None:
        args, kwargs = self._arguments(k)
        func = self.layout.funcs[k]
        self._begin(k, args, kwargs)
        token = (
            None if self.tracer is None else attach(self.tracer.node_context(self.layout.names[k]))
        )
        try:
            chain = self.chains.get(k)
            if chain is not None:
                value = await self._call_through(k, chain, args, kwargs)
            elif self.layout.kinds[k] == THREAD:
                value = await anyio.to_thread.run_sync(
                    partial(func, *args, **kwargs), abandon_on_cancel=True, limiter=self.limiter
                )
            else:
                value = await func(*args, **kwargs)
        except self.cancelled_exc:
            self._end(k, Status.CANCELLED)
            raise
        except Exception as exc:
            self._fail(k, exc)
        except BaseException as exc:
            self._interrupt(k, exc)
        else:
            self._succeed(k, value)
        finally:
            detach(token)

    async def _call_through(
        self, k: int, chain: tuple[Middleware, ...], args: list[Any], kwargs: dict[str, Any]
    ) -> Any:
        """Call node ``k`` through its middleware, which sees parameters by name."""
        spec = self.layout.specs[k]
        inputs = dict(zip((p.name for p in spec.params if not p.keyword_only), args, strict=True))
        inputs.update(kwargs)
        call = Call(spec, self.plan.pipeline.name, self.run_id, 1, inputs, self.call_hooks)
        return await call_chain(chain, call, partial(self._invoke, k))

    async def _invoke(self, k: int, call: Call) -> Any:
        """The innermost call: one attempt of the function, where its kind says."""
        self.attempts[k] = call.attempt
        args, kwargs = split_inputs(self.layout.specs[k], call.inputs)
        func, kind = self.layout.funcs[k], self.layout.kinds[k]
        if kind == THREAD:
            return await anyio.to_thread.run_sync(
                partial(func, *args, **kwargs), abandon_on_cancel=True, limiter=self.limiter
            )
        if kind == LOOP:
            return await func(*args, **kwargs)
        return func(*args, **kwargs)  # inline: in the loop, where the middleware runs

    def _arguments(self, k: int) -> tuple[list[Any], dict[str, Any]]:
        values = self.values
        args = list(self.args[k])
        for position, parent in self.layout.arg_links[k]:
            args[position] = values[parent]
        kwargs = self.kwargs[k]
        if kwargs is None:
            return args, _NO_KEYWORDS
        kwargs = dict(kwargs)
        for keyword, parent in self.layout.kwarg_links[k]:
            kwargs[keyword] = values[parent]
        return args, kwargs

    # -- status changes -------------------------------------------------------------------

    def _begin(self, k: int, args: list[Any], kwargs: dict[str, Any]) -> None:
        self.status[k] = Status.RUNNING
        if self.hooks is not None:
            self._notify(k, Status.RUNNING)
            if self.trace_inputs and self.tracer is not None:
                self.tracer.record_inputs(self.layout.specs[k], args, kwargs)
        self.started[k] = time.perf_counter()

    def _end(self, k: int, status: Status) -> None:
        self.finished[k] = time.perf_counter()
        self.status[k] = status
        self.unfinished -= 1
        if self.tracer is not None and k in self.attempts:
            self.tracer.set_attempts(self.layout.names[k], self.attempts[k])
        if self.hooks is not None:
            self._notify(k, status)
        if self.checkpoints is not None and status in _UNSUCCESSFUL:
            self.checkpoints.ended(k, status, self.finished[k] - self.started[k])

    def _notify(self, k: int, status: Status) -> None:
        """Tell the hooks; a hook that raises stops the run, which then reports it."""
        assert self.hooks is not None
        try:
            self.hooks.status_changed(self.layout.names[k], status, self.errors.get(k))
        except Exception as exc:
            if self.hook_error is None:
                self.hook_error = HookError(self.layout.names[k], status.value, exc)
            self._stop()

    def _check(self, k: int) -> None:
        """Reuse node ``k``'s stored value if its checkpoint allows, else run it."""
        assert self.checkpoints is not None
        value = self.checkpoints.lookup(k)
        if value is MISSING:
            self._route(k)
        else:  # completed by _drain: completing here would recurse down a cached chain
            self.served.append((k, value))

    def _succeed(self, k: int, value: Any, status: Status = Status.SUCCEEDED) -> None:
        """Record a node's value (computed, or ``CACHED``) and dispatch the children it frees."""
        self.values[k] = value
        self._end(k, status)
        if self.checkpoints is not None and status is Status.SUCCEEDED:
            self.checkpoints.succeeded(k, value, self.finished[k] - self.started[k])
        waiting = self.waiting
        for child in self.layout.children[k]:
            waiting[child] -= 1
            if waiting[child] == 0:
                self._dispatch(child)
        if self.unfinished == 0:
            self.send.close()

    def _fail(self, k: int, exc: Exception) -> None:
        self.errors[k] = exc
        self._end(k, Status.FAILED)
        if self.first_failure is None:
            self.first_failure = k
        if self.raise_first:
            self._stop()
            return
        self._skip_descendants(k)
        if self.unfinished == 0:
            self.send.close()

    def _interrupt(self, k: int, exc: BaseException) -> None:
        self._end(k, Status.CANCELLED)
        if self.interrupt is None:
            self.interrupt = exc
        self._stop()

    def _stop(self) -> None:
        """Start no more nodes and cancel the running ones."""
        self.stopped = True
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()

    def _skip_descendants(self, k: int) -> None:
        children = self.layout.children
        stack = list(children[k])
        status = self.status
        while stack:
            child = stack.pop()
            # Nodes outside the plan stay out of it; a descendant of a failed node is pending.
            if status[child] is Status.PENDING and self.waiting[child] != _NEVER:
                status[child] = Status.SKIPPED
                self.unfinished -= 1
                if self.hooks is not None:
                    self._notify(child, Status.SKIPPED)
                if self.checkpoints is not None:
                    self.checkpoints.ended(child, Status.SKIPPED, 0.0)
                stack.extend(children[child])

    # -- the result -----------------------------------------------------------------------

    def result(self) -> RunResult:
        """A snapshot of the run as it stands."""
        names = self.layout.names
        given = self.plan.given
        to_wall = self.wall_start - self.clock_start
        values = {name: given[name] for name in self.plan.outputs if name in given}
        status: dict[str, Status] = {}
        started: dict[str, float] = {}
        finished: dict[str, float] = {}
        attempts: dict[str, int] = {}
        node_values, node_status = self.values, self.status
        for k in self.plan.order:
            name = names[k]
            status[name] = node_status[k]
            if node_values[k] is not MISSING:
                values[name] = node_values[k]
            if self.started[k]:
                attempts[name] = self.attempts.get(k, 1)
                started[name] = self.started[k] + to_wall
                if node_status[k] not in _UNFINISHED:
                    finished[name] = self.finished[k] + to_wall
        return RunResult(
            pipeline=self.plan.pipeline.name,
            run_id=self.run_id,
            outputs=self.plan.outputs,
            values=values,
            status=status,
            errors={names[k]: exc for k, exc in self.errors.items()},
            attempts=attempts,
            started_at=started,
            finished_at=finished,
            duration=max(self.clock_end, self.clock_start) - self.clock_start,
        )
