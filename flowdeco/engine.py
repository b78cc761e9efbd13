"""The scheduler: runs a planned graph on an anyio task group with readiness counts.

A node starts when its count of unfinished parents reaches zero. Inline nodes are called
by the scheduler itself, so a run of cheap functions needs no task at all; async and thread
nodes go to a pool of long-lived worker tasks, at most ``concurrency`` of them, started only
as the ready work needs them. Nothing here recurses, so a 100,000-deep chain runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import sys
import threading
import time
import weakref
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import attrs

from .errors import ConfigurationError, NodeFailed
from .result import RunResult, Status, new_run_id

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .graph import Backend, OnError, Pipeline, Plan

__all__ = ["DEFAULT_CONCURRENCY", "run_async", "run_sync"]

#: Nodes (async, and sync ones in threads) running at once unless ``concurrency=`` says.
DEFAULT_CONCURRENCY = 64

_INLINE, _THREAD, _LOOP = 0, 1, 2
_KINDS = {"inline": _INLINE, "thread": _THREAD, "loop": _LOOP}
_MISSING: Any = object()

StatusCallback = Callable[[str, Status], None]


async def run_async(
    plan: Plan,
    *,
    concurrency: int | None = None,
    on_error: OnError = "raise",
    on_status: StatusCallback | None = None,
) -> RunResult:
    """Execute a plan in the current event loop and return its result.

    Raises:
        NodeFailed: With ``on_error="raise"``, the first node that failed.
    """
    run = _Run(plan, _check_concurrency(concurrency), _check_on_error(on_error), on_status)
    await run.execute()
    return run.result()


def run_sync(
    plan: Plan,
    *,
    concurrency: int | None = None,
    on_error: OnError = "raise",
    backend: Backend = "asyncio",
    on_status: StatusCallback | None = None,
) -> RunResult:
    """Execute a plan from synchronous code, in a new event loop.

    When this thread already runs an event loop (a Jupyter cell, an async framework), the
    new loop gets a thread of its own, started in a copy of this context, and the caller
    waits for it; Ctrl-C while waiting cancels the run.
    """
    if backend not in ("asyncio", "trio"):
        raise ConfigurationError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
    call = partial(run_async, plan, concurrency=concurrency, on_error=on_error, on_status=on_status)
    result: RunResult
    if _event_loop_running():
        result = _LoopThread(call, backend).run()
    else:
        result = anyio.run(call, backend=backend)
    return result


def _event_loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
        return True
    except RuntimeError:
        return False


class _LoopThread:
    """Runs one async call in a new event loop on its own thread; cancellable from outside."""

    def __init__(self, call: Callable[[], Any], backend: str) -> None:
        self.call = call
        self.backend = backend
        self.lock = threading.Lock()
        self.scope: anyio.CancelScope | None = None
        self.token: anyio.lowlevel.EventLoopToken | None = None
        self.cancelled = False
        self.outcome: Any = None
        self.error: BaseException | None = None

    def run(self) -> Any:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(self._target,), name="flowdeco run", daemon=True
        )
        thread.start()
        try:
            thread.join()
        except BaseException:  # Ctrl-C while waiting: stop the run, then let it propagate
            self._cancel()
            thread.join()
            raise
        if self.error is not None:
            raise self.error
        return self.outcome

    def _target(self) -> None:
        # The copied context still says which async library the caller's thread runs.
        sniffio = sys.modules.get("sniffio")
        if sniffio is not None:
            sniffio.current_async_library_cvar.set(None)
        try:
            self.outcome = anyio.run(self._main, backend=self.backend)
        except BaseException as exc:
            self.error = exc

    async def _main(self) -> Any:
        with anyio.CancelScope() as scope:
            with self.lock:
                self.scope, self.token = scope, anyio.lowlevel.current_token()
                if self.cancelled:
                    scope.cancel()
            return await self.call()
        return None  # cancelled from the waiting thread, which raises its own interrupt

    def _cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            scope, token = self.scope, self.token
        if scope is not None and token is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                anyio.from_thread.run_sync(scope.cancel, token=token)


def _check_concurrency(concurrency: int | None) -> int:
    if concurrency is None:
        return DEFAULT_CONCURRENCY
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


def _check_on_error(on_error: str) -> bool:
    if on_error not in ("raise", "continue"):
        raise ConfigurationError(f"on_error must be 'raise' or 'continue', got {on_error!r}")
    return on_error == "raise"


@attrs.frozen(eq=False)
class _Layout:
    """A pipeline's per-node tables in the engine's terms, built once per pipeline."""

    names: tuple[str, ...]
    funcs: tuple[Callable[..., Any], ...]
    kinds: tuple[int, ...]
    links: tuple[tuple[tuple[str, int], ...], ...]  # (parameter, parent index) per node
    external: tuple[tuple[tuple[str, str], ...], ...]  # (parameter, input name) per node
    positional: tuple[tuple[tuple[str, Any], ...], ...]  # positional-only (name, default)
    parents: tuple[tuple[int, ...], ...]
    children: tuple[tuple[int, ...], ...]

    @classmethod
    def of(cls, pipeline: Pipeline) -> _Layout:
        layout = _layouts.get(pipeline)
        if layout is None:
            layout = _layouts[pipeline] = cls.build(pipeline)
        return layout

    @classmethod
    def build(cls, pipeline: Pipeline) -> _Layout:
        index = pipeline._index
        specs = pipeline.nodes.values()
        return cls(
            names=tuple(pipeline.nodes),
            funcs=tuple(spec.func for spec in specs),
            kinds=tuple(_KINDS[spec.run_in] for spec in specs),
            links=tuple(
                tuple((p.name, index[p.source]) for p in spec.params if p.source in index)
                for spec in specs
            ),
            external=tuple(
                tuple((p.name, p.source) for p in spec.params if p.source not in index)
                for spec in specs
            ),
            positional=tuple(
                tuple(
                    (p.name, p.default if p.has_default else _MISSING)
                    for p in spec.params
                    if p.positional_only
                )
                for spec in specs
            ),
            parents=pipeline._parents,
            children=pipeline._children,
        )


_layouts: weakref.WeakKeyDictionary[Pipeline, _Layout] = weakref.WeakKeyDictionary()
_NEVER = sys.maxsize  # the readiness count of nodes outside the plan: never reaches zero
_NO_KEYWORDS: dict[str, Any] = {}


def _pop_positional(kw: dict[str, Any], params: tuple[tuple[str, Any], ...]) -> list[Any]:
    """Move positional-only arguments out of ``kw``, filling defaults of those not given."""
    # Defaults are filled explicitly: a later positional-only argument may have a value.
    return [kw.pop(name) if name in kw else default for name, default in params]


class _Run:
    """The state of one run; every method runs in the event loop's thread.

    Per-node lists are indexed like the pipeline's nodes; only planned nodes are used.
    """

    def __init__(
        self, plan: Plan, concurrency: int, raise_first: bool, on_status: StatusCallback | None
    ) -> None:
        layout = _Layout.of(plan.pipeline)
        given = plan.given
        n = len(layout.names)
        self.plan = plan
        self.layout = layout
        self.run_id = new_run_id()
        self.values: list[Any] = [_MISSING] * n
        self.waiting = [_NEVER] * n
        self.keywords: dict[int, dict[str, Any]] = {}
        index = plan.pipeline._index
        overridden = {index[name] for name in given if name in index}
        for g in overridden:
            self.values[g] = given[layout.names[g]]
        parents, external = layout.parents, layout.external
        for g in plan.order:
            ps = parents[g]
            self.waiting[g] = sum(1 for p in ps if p not in overridden) if overridden else len(ps)
            if external[g]:
                self.keywords[g] = {
                    param: given[source] for param, source in external[g] if source in given
                }
        self.status = [Status.PENDING] * n
        self.started = [0.0] * n
        self.finished = [0.0] * n
        self.errors: dict[int, BaseException] = {}
        self.unfinished = len(plan.order)
        self.raise_first = raise_first
        self.first_failure: int | None = None
        self.interrupt: BaseException | None = None
        self.stopped = False
        self.on_status = on_status
        self.concurrency = concurrency
        self.limiter = anyio.CapacityLimiter(concurrency)
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

    async def execute(self) -> None:
        """Run every planned node; raise NodeFailed or an interrupt after cleaning up."""
        self.cancelled_exc = anyio.get_cancelled_exc_class()
        try:
            with self.send, self.receive:
                async with anyio.create_task_group() as tg:
                    self.task_group = tg
                    waiting = self.waiting
                    for k in self.plan.order:
                        if waiting[k] == 0:
                            self._dispatch(k)
                    self._drain()
                    if self.unfinished == 0:
                        self.send.close()
        finally:
            self.clock_end = time.perf_counter()
            self.task_group = None
        if self.interrupt is not None:
            raise self.interrupt
        if self.first_failure is not None and self.raise_first:
            k = self.first_failure
            error = self.errors[k]
            raise NodeFailed(self.layout.names[k], error, self.result()) from error

    # -- scheduling -----------------------------------------------------------------------

    def _dispatch(self, k: int) -> None:
        if self.layout.kinds[k] == _INLINE:
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
        """Call ready inline nodes until none is left (a loop, not recursion)."""
        ready = self.inline_ready
        funcs, positional = self.layout.funcs, self.layout.positional
        while ready and not self.stopped:
            k = ready.pop()
            kw = self._arguments(k)
            self._begin(k)
            try:
                if positional[k]:
                    value = funcs[k](*_pop_positional(kw, positional[k]), **kw)
                else:
                    value = funcs[k](**kw)
            except Exception as exc:
                self._fail(k, exc)
            except BaseException as exc:  # KeyboardInterrupt, SystemExit from the body
                self._interrupt(k, exc)
            else:
                self._succeed(k, value)

    async def _worker(self) -> None:
        async for k in self.receive:
            await self._call(k)
            self._drain()
            if self.backlog:
                self.backlog -= 1
            else:
                self.free_workers += 1

    async def _call(self, k: int) -> None:
        kw = self._arguments(k)
        positional = self.layout.positional[k]
        args = _pop_positional(kw, positional) if positional else ()
        func = self.layout.funcs[k]
        self._begin(k)
        try:
            if self.layout.kinds[k] == _THREAD:
                value = await anyio.to_thread.run_sync(
                    partial(func, *args, **kw), abandon_on_cancel=True, limiter=self.limiter
                )
            else:
                value = await func(*args, **kw)
        except self.cancelled_exc:
            self._end(k, Status.CANCELLED)
            raise
        except Exception as exc:
            self._fail(k, exc)
        except BaseException as exc:
            self._interrupt(k, exc)
        else:
            self._succeed(k, value)

    def _arguments(self, k: int) -> dict[str, Any]:
        kw = self.keywords.get(k, _NO_KEYWORDS).copy()
        values = self.values
        for param, parent in self.layout.links[k]:
            kw[param] = values[parent]
        return kw

    # -- status changes -------------------------------------------------------------------

    def _begin(self, k: int) -> None:
        self.status[k] = Status.RUNNING
        if self.on_status is not None:
            self.on_status(self.layout.names[k], Status.RUNNING)
        self.started[k] = time.perf_counter()

    def _end(self, k: int, status: Status) -> None:
        self.finished[k] = time.perf_counter()
        self.status[k] = status
        self.unfinished -= 1
        if self.on_status is not None:
            self.on_status(self.layout.names[k], status)

    def _succeed(self, k: int, value: Any) -> None:
        self.values[k] = value
        self._end(k, Status.SUCCEEDED)
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
                if self.on_status is not None:
                    self.on_status(self.layout.names[child], Status.SKIPPED)
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
        for k in self.plan.order:
            name = names[k]
            status[name] = self.status[k]
            if self.values[k] is not _MISSING:
                values[name] = self.values[k]
            if self.started[k]:
                started[name] = self.started[k] + to_wall
                if self.status[k].finished:
                    finished[name] = self.finished[k] + to_wall
        return RunResult(
            pipeline=self.plan.pipeline.name,
            run_id=self.run_id,
            outputs=self.plan.outputs,
            values=values,
            status=status,
            errors={names[k]: exc for k, exc in self.errors.items()},
            started_at=started,
            finished_at=finished,
            duration=max(self.clock_end, self.clock_start) - self.clock_start,
        )
