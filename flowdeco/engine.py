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
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

from .errors import ConfigurationError, NodeFailed
from .result import RunResult, Status, new_run_id

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from .graph import Backend, OnError, Plan

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


class _Run:
    """The state of one run; every method runs in the event loop's thread."""

    def __init__(
        self, plan: Plan, concurrency: int, raise_first: bool, on_status: StatusCallback | None
    ) -> None:
        pipeline = plan.pipeline
        given = plan.given
        specs = list(pipeline.nodes.values())
        local = {g: k for k, g in enumerate(plan.order)}
        n = len(plan.order)

        self.plan = plan
        self.run_id = new_run_id()
        self.names = [specs[g].name for g in plan.order]
        self.funcs: list[Callable[..., Any]] = []
        self.kinds: list[int] = []
        self.consts: list[dict[str, Any]] = []
        self.links: list[tuple[tuple[str, int], ...]] = []
        self.positional: list[tuple[str, ...]] = []
        self.children: list[list[int]] = [[] for _ in range(n)]
        self.waiting = [0] * n
        for k, g in enumerate(plan.order):
            spec = specs[g]
            consts: dict[str, Any] = {}
            links: list[tuple[str, int]] = []
            for p in spec.params:
                parent = local.get(pipeline._index.get(p.source, -1))
                if parent is not None:
                    links.append((p.name, parent))
                elif p.source in given:
                    consts[p.name] = given[p.source]
            for g_parent in pipeline._parents[g]:
                parent = local.get(g_parent)
                if parent is not None:  # overridden parents are done already
                    self.children[parent].append(k)
                    self.waiting[k] += 1
            self.funcs.append(spec.func)
            self.kinds.append(_KINDS[spec.run_in])
            self.consts.append(consts)
            self.links.append(tuple(links))
            self.positional.append(tuple(p.name for p in spec.params if p.positional_only))

        self.values: list[Any] = [_MISSING] * n
        self.status = [Status.PENDING] * n
        self.started = [0.0] * n
        self.finished = [0.0] * n
        self.errors: dict[int, BaseException] = {}
        self.unfinished = n
        self.raise_first = raise_first
        self.first_failure: int | None = None
        self.interrupt: BaseException | None = None
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
                    for k, count in enumerate(self.waiting):
                        if count == 0:
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
            raise NodeFailed(self.names[k], error, self.result()) from error

    # -- scheduling -----------------------------------------------------------------------

    def _dispatch(self, k: int) -> None:
        if self.kinds[k] == _INLINE:
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
        while ready and not self._stopping():
            k = ready.pop()
            kw = self._arguments(k)
            self._begin(k)
            try:
                if self.positional[k]:
                    value = self.funcs[k](*[kw.pop(p) for p in self.positional[k]], **kw)
                else:
                    value = self.funcs[k](**kw)
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
        args = [kw.pop(p) for p in self.positional[k]] if self.positional[k] else ()
        func = self.funcs[k]
        self._begin(k)
        try:
            if self.kinds[k] == _THREAD:
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

    def _stopping(self) -> bool:
        return self.interrupt is not None or (self.raise_first and self.first_failure is not None)

    def _arguments(self, k: int) -> dict[str, Any]:
        kw = self.consts[k].copy()
        values = self.values
        for param, parent in self.links[k]:
            kw[param] = values[parent]
        return kw

    # -- status changes -------------------------------------------------------------------

    def _begin(self, k: int) -> None:
        self.status[k] = Status.RUNNING
        if self.on_status is not None:
            self.on_status(self.names[k], Status.RUNNING)
        self.started[k] = time.perf_counter()

    def _end(self, k: int, status: Status) -> None:
        self.finished[k] = time.perf_counter()
        self.status[k] = status
        self.unfinished -= 1
        if self.on_status is not None:
            self.on_status(self.names[k], status)

    def _succeed(self, k: int, value: Any) -> None:
        self.values[k] = value
        self._end(k, Status.SUCCEEDED)
        waiting = self.waiting
        for child in self.children[k]:
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
            self._cancel()
            return
        self._skip_descendants(k)
        if self.unfinished == 0:
            self.send.close()

    def _interrupt(self, k: int, exc: BaseException) -> None:
        self._end(k, Status.CANCELLED)
        if self.interrupt is None:
            self.interrupt = exc
        self._cancel()

    def _cancel(self) -> None:
        if self.task_group is not None:
            self.task_group.cancel_scope.cancel()

    def _skip_descendants(self, k: int) -> None:
        stack = list(self.children[k])
        status = self.status
        while stack:
            child = stack.pop()
            if status[child] is Status.PENDING:
                status[child] = Status.SKIPPED
                self.unfinished -= 1
                if self.on_status is not None:
                    self.on_status(self.names[child], Status.SKIPPED)
                stack.extend(self.children[child])

    # -- the result -----------------------------------------------------------------------

    def result(self) -> RunResult:
        """A snapshot of the run as it stands."""
        names = self.names
        to_wall = self.wall_start - self.clock_start
        values = {
            name: self.plan.given[name] for name in self.plan.outputs if name in self.plan.given
        }
        started: dict[str, float] = {}
        finished: dict[str, float] = {}
        for k, name in enumerate(names):
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
            status=dict(zip(names, self.status, strict=True)),
            errors={names[k]: exc for k, exc in self.errors.items()},
            started_at=started,
            finished_at=finished,
            duration=max(self.clock_end, self.clock_start) - self.clock_start,
        )
