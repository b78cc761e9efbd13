"""The scheduler: starts each planned node once its parents finished, by counting them down.

A node is ready when its count of unfinished parents reaches zero. Inline nodes are called
by the scheduler itself, in a loop over the ready ones, so a run of cheap functions needs no
task at all; other nodes go to a pool of long-lived worker tasks, at most ``concurrency`` of
them, started only as the ready work needs them. Nothing here recurses, so a 100,000-deep
chain runs. Every method runs in the event loop's thread (or the caller's, with no loop).
"""

from __future__ import annotations

import math
import sys
import time
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from ._checkpoints import Packed, Stored, large
from ._errors import CorruptDataError, HookError
from ._hooks import Hooks
from ._layout import MISSING
from ._node import returned_coroutine
from ._result import Status
from ._tracing import attach, detach

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

    from ._checkpoints import Checkpoints
    from ._graph import Plan
    from ._layout import Layout
    from ._middleware import NodeCalls
    from ._tracing import RunTracer

__all__ = ["MiddlewareHooks", "NodeStates", "Outcome", "Scheduler"]

_UNPLANNED = sys.maxsize  # the readiness count of nodes outside the plan: never reaches zero
_NO_KEYWORDS: dict[str, Any] = {}
_UNSUCCESSFUL = frozenset({Status.FAILED, Status.CANCELLED})


class NodeStates:
    """What happened to each node of a run: lists indexed like the graph's nodes."""

    __slots__ = ("ended_at", "errors", "started_at", "status", "values")

    def __init__(self, n: int) -> None:
        self.values: list[Any] = [MISSING] * n
        self.status = [Status.PENDING] * n
        self.started_at = [0.0] * n  # perf_counter() when the body was called; 0: never
        self.ended_at = [0.0] * n
        self.errors: dict[int, BaseException] = {}


class Outcome:
    """How a run is ending: what stopped it, if anything did."""

    __slots__ = ("first_failure", "hook_error", "interrupt")

    def __init__(self) -> None:
        self.first_failure: int | None = None  # the node that failed first
        self.interrupt: BaseException | None = None  # KeyboardInterrupt, SystemExit
        self.hook_error: HookError | None = None


class MiddlewareHooks(Hooks):
    """The run's hooks as middleware calls them (``Call.hooks``, as ``retry`` does).

    A hook that raises becomes the run's :class:`HookError`, raised into the middleware
    so that the attempt ends; the scheduler then stops the run, as for a status hook.
    """

    def __init__(self, hooks: Hooks, outcome: Outcome) -> None:
        self.hooks = hooks
        self.outcome = outcome

    def status_changed(self, node: str, status: Status, error: BaseException | None) -> None:
        try:
            self.hooks.status_changed(node, status, error)
        except Exception as exc:
            raise self._failed(node, status.value, exc) from exc

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        try:
            self.hooks.node_retrying(node, attempt, error, delay)
        except Exception as exc:
            raise self._failed(node, "retrying", exc) from exc

    def _failed(self, node: str, status: str, exc: Exception) -> HookError:
        failure = HookError(node, status, exc)
        if self.outcome.hook_error is None:
            self.outcome.hook_error = failure
        return failure


class Scheduler:
    """Readiness counts, the ready list, the worker pool, the failure policy, status changes."""

    def __init__(
        self,
        plan: Plan,
        layout: Layout,
        calls: NodeCalls,
        states: NodeStates,
        outcome: Outcome,
        *,
        raise_first: bool,
        concurrency: int,
        hooks: Hooks | None,
        tracer: RunTracer | None,
        trace_inputs: bool,
        checkpoints: Checkpoints | None,
        keep_values: bool = False,
    ) -> None:
        self.plan = plan
        self.layout = layout
        self.calls = calls
        self.states = states
        self.outcome = outcome
        self.raise_first = raise_first
        self.concurrency = concurrency
        self.hooks = hooks
        self.tracer = tracer
        self.trace_inputs = trace_inputs
        self.checkpoints = checkpoints
        self.names = plan.graph.names
        self.children = plan.graph.children
        # The states' lists, held directly: the loops below read them once per node.
        self.values = states.values
        self.status = states.status
        self.started_at = states.started_at
        self.ended_at = states.ended_at
        self.attempts = calls.attempts
        self.waiting = _readiness_counts(plan, states.values)
        self.args, self.kwargs = _argument_templates(plan, layout)
        self.unfinished = len(plan.order)
        self.inline_ready: list[int] = []
        self.served: list[tuple[int, Any]] = []  # values found in the store, to complete
        self.workers: _WorkerPool | None = None  # while run_in_loop() runs
        self.stopped = False
        # Values the result holds; any other is released once no node still to run reads it.
        self.wanted = _wanted(plan, keep_values)
        self.value_parents = _value_parents(layout)
        self.readers = None if all(self.wanted) else _reader_counts(plan, self.value_parents)
        # Cached values left in their files (Stored), read when a node that runs needs them.
        self.reads = None
        if checkpoints is not None and checkpoints.files is not None:
            self.reads = _StoredReads(checkpoints, states.values, layout)
        self.stored_seen = False  # a Stored was served: nodes' arguments may hold one

    @property
    def needs_loop(self) -> bool:
        """Whether some planned node runs outside the scheduler: in a worker, or via middleware."""
        executors = self.layout.executors
        return bool(self.calls.chains) or not all(executors[i].inline for i in self.plan.order)

    async def run_in_loop(self) -> None:
        """Run every planned node, with worker tasks for those that are not inline."""
        send, receive = anyio.create_memory_object_stream[int](math.inf)
        with send, receive:
            async with anyio.create_task_group() as task_group:
                self.workers = _WorkerPool(task_group, send, receive, self.concurrency, self._work)
                self._start()
                if self.unfinished == 0:
                    send.close()
        self.workers = None

    def run_without_loop(self) -> None:
        """Run a plan whose nodes are all inline: they need no event loop, so none is started."""
        self._start()

    def stop(self) -> None:
        """Start no more nodes and cancel the running ones."""
        self.stopped = True
        if self.workers is not None:
            self.workers.stop()

    def _start(self) -> None:
        waiting = self.waiting
        for i in self.plan.order:
            if waiting[i] == 0:
                self._ready(i)
        self._drain()

    def _ready(self, i: int) -> None:
        """Node ``i``'s parents finished: reuse its stored value if it may, else run it."""
        if self.checkpoints is not None:
            value = self.checkpoints.lookup(i)
            if type(value) is Stored:
                self.stored_seen = True
                if self.wanted[i]:  # the result holds it: read it now, off the loop
                    if self.workers is not None:
                        self.workers.submit(~i)
                        return
                    value = self._read_output_now(i, value)
            if value is not MISSING:  # completed by _drain: here would recurse down a chain
                self.served.append((i, value))
                return
        workers = self.workers
        if workers is None or (
            self.layout.executors[i].inline
            and i not in self.calls.chains
            and not (self.stored_seen and self._reads_stored(i))  # read off the loop
        ):
            self.inline_ready.append(i)
        else:
            workers.submit(i)

    def _reads_stored(self, i: int) -> bool:
        values = self.values
        return any(type(values[p]) is Stored for p in self.value_parents[i])

    def _read_output_now(self, i: int, stored: Stored) -> Any:
        """The value of output ``i`` read from its file, in a run with no event loop; MISSING
        (so it runs) if the file cannot be read."""
        assert self.checkpoints is not None
        try:
            return self.checkpoints.read_stored(i, stored)
        except CorruptDataError as exc:
            self.checkpoints.unreadable(i, exc)
            return MISSING

    def _drain(self) -> None:
        """Call ready inline nodes, and complete nodes served from the store, until none is left.

        A loop, not recursion: a chain of 100,000 cached nodes completes here one by one.
        """
        ready, served = self.inline_ready, self.served
        funcs, specs = self.layout.funcs, self.plan.graph.specs
        open_call, succeed, settle_error = self._open_call, self._succeed, self._settle_error
        while (ready or served) and not self.stopped:
            if not ready:
                succeed(*served.pop(), Status.CACHED)
                continue
            i = ready.pop()
            args, kwargs, token = open_call(i)
            try:
                if self.reads is not None and self.stored_seen:  # no loop: read them here
                    self.reads.fill_now(i, args, kwargs)
                value = funcs[i](*args, **kwargs)
                if type(value) is CoroutineType:  # a sync wrapper around an async def?
                    raise returned_coroutine(specs[i], value)
            except BaseException as exc:  # the node's failure, or Ctrl-C in its body
                settle_error(i, exc)
            else:
                succeed(i, value)
            finally:
                detach(token)

    async def _work(self, i: int) -> None:
        """A worker's turn: call node ``i`` where it runs, then what its end made ready.

        A cancellation exception is the run's only if the run (or a scope around it) is
        cancelled; one a node raises itself (asyncio's, from a future someone cancelled)
        is that node's failure. Once the run is cancelled nothing more starts, not even
        the inline children of a node that finished as the cancellation came.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()  # a worker woken with a node, as it came
        if i < 0:  # not a node to run: an output to read from its file
            await self._serve_output(~i)
        else:
            await self._run(i)
        if self.outcome.hook_error is not None:  # raised into middleware, even if it was caught
            self.stop()
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._drain()

    async def _run(self, i: int) -> None:
        """Call node ``i`` where it runs, and settle how it ended."""
        args, kwargs, token = self._open_call(i)
        try:
            if self.reads is not None and self.stored_seen:
                await self.reads.fill(i, args, kwargs)
                if self.trace_inputs and self.tracer is not None:  # the values', not Stored
                    self.tracer.record_inputs(self.plan.graph.specs[i], args, kwargs)
            value = await self.calls.call(i, args, kwargs)
            if type(value) is CoroutineType:  # `return helper()` in an async def
                raise returned_coroutine(self.plan.graph.specs[i], value)
        except anyio.get_cancelled_exc_class() as exc:
            if anyio.current_effective_deadline() != -math.inf:
                self._fail(i, exc)  # the node's own: the run is not cancelled
            else:
                self._end(i, Status.CANCELLED)
                raise
        except BaseException as exc:
            self._settle_error(i, exc)
        else:
            packed = None
            if self.checkpoints is not None and large(value):  # pack and hash it off the loop
                with anyio.CancelScope(shield=True):  # finished: it must be stored
                    packed = await anyio.to_thread.run_sync(self.checkpoints.pack, i, value)
            self._succeed(i, value, packed=packed)
        finally:
            detach(token)

    async def _serve_output(self, i: int) -> None:
        """Read cached output ``i`` from its file, off the loop; run it if that fails."""
        assert self.checkpoints is not None
        stored = self.checkpoints.stored[i]
        assert stored is not None
        try:
            with anyio.CancelScope(shield=True):  # a read in a thread cannot be abandoned
                value = await anyio.to_thread.run_sync(self.checkpoints.read_stored, i, stored)
        except CorruptDataError as exc:
            self.checkpoints.unreadable(i, exc)
            await self._run(i)
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()
            self._succeed(i, value, Status.CACHED)

    def _open_call(self, i: int) -> tuple[list[Any], dict[str, Any], object | None]:
        """Node ``i``'s arguments, from its template and its parents' values; mark it running.

        Returns the arguments and the token of the tracing context made current for it.
        """
        values = self.values
        args = list(self.args[i])
        for position, parent in self.layout.arg_links[i]:
            args[position] = values[parent]
        kwargs = self.kwargs[i]
        if kwargs is None:
            kwargs = _NO_KEYWORDS
        else:
            kwargs = dict(kwargs)
            for keyword, parent in self.layout.kwarg_links[i]:
                kwargs[keyword] = values[parent]
        if self.readers is not None:
            self._done_reading(i)
        self.status[i] = Status.RUNNING
        tracer = self.tracer
        if self.hooks is not None:
            self._notify(i, Status.RUNNING)
            if self.trace_inputs and tracer is not None:
                tracer.record_inputs(self.plan.graph.specs[i], args, kwargs)
        self.started_at[i] = time.perf_counter()
        token = None if tracer is None else attach(tracer.node_context(self.names[i]))
        return args, kwargs, token

    def _settle_error(self, i: int, exc: BaseException) -> None:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):  # stops the run
            self._interrupt(i, exc)
        elif exc is self.outcome.hook_error:
            # A hook middleware called raised (MiddlewareHooks): the run stops, as it does
            # for a status hook; the node did not fail, it was cut short.
            self._end(i, Status.CANCELLED)
            self.stop()
        else:  # an Exception, or a BaseException of the body's own (a CancelledError)
            self._fail(i, exc)

    # Status changes: the only places a node's status moves, along TRANSITIONS.

    def _end(self, i: int, status: Status, ended: float = 0.0) -> None:
        """Node ``i`` ended with ``status`` (at ``ended``, or now): tell everyone."""
        ended = self.ended_at[i] = ended or time.perf_counter()
        self.status[i] = status
        self.unfinished -= 1
        if self.tracer is not None and i in self.attempts:
            self.tracer.set_attempts(self.names[i], self.attempts[i])
        if self.hooks is not None:
            self._notify(i, status)
        if self.checkpoints is not None and status in _UNSUCCESSFUL:
            self.checkpoints.ended(i, status, ended - self.started_at[i])

    def _notify(self, i: int, status: Status) -> None:
        """Tell the hooks; a hook that raises stops the run, which then reports it."""
        assert self.hooks is not None
        try:
            self.hooks.status_changed(self.names[i], status, self.states.errors.get(i))
        except Exception as exc:
            if self.outcome.hook_error is None:
                self.outcome.hook_error = HookError(self.names[i], status.value, exc)
            self.stop()

    def _succeed(
        self, i: int, value: Any, status: Status = Status.SUCCEEDED, packed: Packed | None = None
    ) -> None:
        """Record a node's value (computed, or ``CACHED``) and make ready the children it frees."""
        self.values[i] = value
        ended = time.perf_counter()
        # Queued before anyone hears of it: a node reported finished is written, whatever
        # stops the run next (Ctrl-C can strike between any two lines).
        if self.checkpoints is not None and status is Status.SUCCEEDED:
            self.checkpoints.succeeded(i, value, ended - self.started_at[i], packed)
        self._end(i, status, ended)
        waiting = self.waiting
        for child in self.children[i]:
            waiting[child] -= 1
            if waiting[child] == 0:
                self._ready(child)
        readers = self.readers
        if readers is not None:
            if status is Status.CACHED:  # it read nothing: its parents need not wait for it
                self._done_reading(i)
            if readers[i] == 0 and not self.wanted[i]:
                self.values[i] = MISSING
        if self.unfinished == 0 and self.workers is not None:
            self.workers.close()

    def _done_reading(self, i: int) -> None:
        """Node ``i`` needs its parents' values no more: release those no one else will read."""
        readers, values, wanted = self.readers, self.values, self.wanted
        assert readers is not None
        for parent in self.value_parents[i]:
            readers[parent] -= 1
            if readers[parent] == 0 and not wanted[parent]:
                values[parent] = MISSING

    def _fail(self, i: int, exc: BaseException) -> None:
        self.states.errors[i] = _from_the_node(exc, self.plan.graph.specs[i].func)
        self._end(i, Status.FAILED)
        if self.outcome.first_failure is None:
            self.outcome.first_failure = i
        if self.raise_first:
            self.stop()
            return
        self._skip_descendants(i)
        if self.unfinished == 0 and self.workers is not None:
            self.workers.close()

    def _interrupt(self, i: int, exc: BaseException) -> None:
        self._end(i, Status.CANCELLED)
        if self.outcome.interrupt is None:
            self.outcome.interrupt = exc
        self.stop()

    def _skip_descendants(self, i: int) -> None:
        children, status, waiting = self.children, self.status, self.waiting
        stack = list(children[i])
        while stack:
            child = stack.pop()
            # Nodes outside the plan stay out of it; a descendant of a failed node is pending.
            if status[child] is Status.PENDING and waiting[child] != _UNPLANNED:
                status[child] = Status.SKIPPED
                if self.readers is not None:
                    self._done_reading(child)
                self.unfinished -= 1
                if self.hooks is not None:
                    self._notify(child, Status.SKIPPED)
                if self.checkpoints is not None:
                    self.checkpoints.ended(child, Status.SKIPPED, 0.0)
                stack.extend(children[child])


class _WorkerPool:
    """Long-lived worker tasks fed through a stream, started as ready work needs them."""

    def __init__(
        self,
        task_group: TaskGroup,
        send: MemoryObjectSendStream[int],
        receive: MemoryObjectReceiveStream[int],
        size: int,
        work: Callable[[int], Awaitable[None]],
    ) -> None:
        self.task_group = task_group
        self.send = send
        self.receive = receive
        self.size = size
        self.work = work
        self.started = 0
        self.idle = 0
        self.backlog = 0  # nodes sent while every worker was busy and no more may start
        self.stopped = False

    def submit(self, i: int) -> None:
        """Hand node ``i`` to a worker: an idle one, a new one, or the next to be free."""
        self.send.send_nowait(i)
        if self.idle:
            self.idle -= 1
        elif self.started < self.size:
            self.started += 1
            self.task_group.start_soon(self._worker, name=f"flowdeco worker {self.started}")
        else:
            self.backlog += 1

    def close(self) -> None:
        """No more nodes will come: idle workers end."""
        self.send.close()

    def stop(self) -> None:
        """Workers take no more nodes; the running ones are cancelled."""
        self.stopped = True
        self.task_group.cancel_scope.cancel()

    async def _worker(self) -> None:
        async for i in self.receive:
            if self.stopped:  # handed over before a failure stopped the run: never start it
                return
            await self.work(i)
            if self.backlog:
                self.backlog -= 1
            else:
                self.idle += 1


def _from_the_node(exc: BaseException, func: Any) -> BaseException:
    """``exc`` with its traceback starting at the node's function: the frames above it
    are the engine's and the event loop's, which say nothing about what went wrong."""
    codes = set()
    while func is not None:  # the function and what it wraps: a decorator's frame is the user's
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.add(code)
        func = getattr(func, "__wrapped__", None)
    frame = exc.__traceback__
    while frame is not None and frame.tb_frame.f_code not in codes:
        frame = frame.tb_next
    return exc if frame is None else exc.with_traceback(frame)


def _readiness_counts(plan: Plan, values: list[Any]) -> list[int]:
    """Per node, its parents yet to finish; nodes the run's inputs override get their value."""
    graph, given = plan.graph, plan.given
    waiting = [_UNPLANNED] * len(graph.names)
    overridden = {graph.index[name] for name in given if name in graph.index}
    for i in overridden:
        values[i] = given[graph.names[i]]
    parents = graph.parents
    for i in plan.order:
        ps = parents[i]
        waiting[i] = sum(1 for p in ps if p not in overridden) if overridden else len(ps)
    return waiting


def _argument_templates(
    plan: Plan, layout: Layout
) -> tuple[list[tuple[Any, ...]], list[dict[str, Any] | None]]:
    """The layout's argument templates, with copies filled in for nodes reading run inputs."""
    args, kwargs = list(layout.args), list(layout.kwargs)
    given: Mapping[str, Any] = plan.given
    for i in plan.order:
        if not layout.inputs[i]:
            continue
        positional, template = list(args[i]), kwargs[i]
        keywords = None if template is None else dict(template)
        for slot, source in layout.inputs[i]:
            if source not in given:
                continue  # planning made sure the parameter has a default
            if isinstance(slot, int):
                positional[slot] = given[source]
            else:
                assert keywords is not None
                keywords[slot] = given[source]
        args[i], kwargs[i] = tuple(positional), keywords
    return args, kwargs


def _wanted(plan: Plan, keep_values: bool) -> list[bool]:
    """Per node, whether the result holds its value: an output, or any with ``keep_values``."""
    graph = plan.graph
    wanted = [keep_values] * len(graph.names)
    for name in plan.outputs:
        if name in graph.index:
            wanted[graph.index[name]] = True
    return wanted


def _value_parents(layout: Layout) -> list[tuple[int, ...]]:
    """Per node, the parents whose values it reads, once per parameter they feed."""
    return [
        (*(p for _, p in args), *(p for _, p in kwargs))
        for args, kwargs in zip(layout.arg_links, layout.kwarg_links, strict=True)
    ]


def _reader_counts(plan: Plan, value_parents: Sequence[tuple[int, ...]]) -> list[int]:
    """Per node, how many reads of its value the planned nodes will make."""
    readers = [0] * len(value_parents)
    for i in plan.order:
        for parent in value_parents[i]:
            readers[parent] += 1
    return readers


class _Read:
    """One read of a Stored value, which other nodes needing it wait for."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class _StoredReads:
    """Reads the cached values a running node needs from their files, each once per run,
    off the event loop's thread (in the caller's, in a run without a loop)."""

    def __init__(self, checkpoints: Checkpoints, values: list[Any], layout: Layout) -> None:
        self.checkpoints = checkpoints
        self.values = values
        self.layout = layout
        self.reading: dict[int, _Read] = {}

    async def fill(self, i: int, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Replace the Stored arguments of node ``i`` by their values, each read once (a
        parent may feed two parameters)."""
        read: dict[int, Any] = {}
        for position, parent in self.layout.arg_links[i]:
            if type(args[position]) is Stored:
                if parent not in read:
                    read[parent] = await self._read(parent, args[position])
                args[position] = read[parent]
        for keyword, parent in self.layout.kwarg_links[i]:
            if type(kwargs[keyword]) is Stored:
                if parent not in read:
                    read[parent] = await self._read(parent, kwargs[keyword])
                kwargs[keyword] = read[parent]

    def fill_now(self, i: int, args: list[Any], kwargs: dict[str, Any]) -> None:
        """:meth:`fill`, blocking: for runs without an event loop."""
        read: dict[int, Any] = {}
        for position, parent in self.layout.arg_links[i]:
            if type(args[position]) is Stored:
                if parent not in read:
                    read[parent] = self._now(parent, args[position])
                args[position] = read[parent]
        for keyword, parent in self.layout.kwarg_links[i]:
            if type(kwargs[keyword]) is Stored:
                if parent not in read:
                    read[parent] = self._now(parent, kwargs[keyword])
                kwargs[keyword] = read[parent]

    def _now(self, parent: int, stored: Stored) -> Any:
        return self._keep(parent, stored, self.checkpoints.read_stored(parent, stored))

    async def _read(self, parent: int, stored: Stored) -> Any:
        read = self.reading.get(parent)
        if read is not None:  # another node is reading it: wait, then share
            await read.done.wait()
            if read.error is None:
                return read.value
            return await self._read(parent, stored)  # its read failed: try (and fail) alike
        read = self.reading[parent] = _Read()
        try:
            with anyio.CancelScope(shield=True):  # a read in a thread cannot be abandoned
                read.value = await anyio.to_thread.run_sync(
                    self.checkpoints.read_stored, parent, stored
                )
        except BaseException as exc:
            read.error = exc
            raise
        finally:
            del self.reading[parent]
            read.done.set()
        return self._keep(parent, stored, read.value)

    def _keep(self, parent: int, stored: Stored, value: Any) -> Any:
        """``value``, kept for the other nodes reading it unless the run released it."""
        if self.values[parent] is stored:
            self.values[parent] = value
        return value
