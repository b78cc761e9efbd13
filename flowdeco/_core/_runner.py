"""The run: its lifecycle around the scheduler, from sync or async code, and its result.

A run opens its tracer and checkpoints, lets the scheduler execute the plan (in an event
loop, or in none when every node is inline), then closes both whatever ended it, and
raises or returns the outcome.
"""

from __future__ import annotations

import sys
import threading
import time
import warnings
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ._checkpoints import Checkpoints, Stored, runs_to_resume
from ._errors import NodeFailed
from ._explain import explain
from ._hooks import Hooks, combine_hooks
from ._layout import MISSING, Layout
from ._loops import ctrl_c_held, run_blocking
from ._middleware import NodeCalls
from ._result import RunResult, Status, new_run_id
from ._scheduler import MiddlewareHooks, NodeStates, Outcome, Scheduler
from ._store import CheckpointWarning
from ._tracing import RunTracer

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._explain import Explanation
    from ._graph import Plan
    from ._options import Backend, RunSettings

__all__ = ["Run", "run_async", "run_sync"]

_NO_HOOKS = Hooks()
_UNFINISHED = frozenset({Status.PENDING, Status.RUNNING})


async def run_async(plan: Plan, settings: RunSettings) -> RunResult:
    """Execute a plan in the current event loop and return its result.

    Raises:
        NodeFailed: With ``on_error="raise"``, the first node that failed.
    """
    run = Run.open(plan, settings)
    try:
        await run.execute()
    except BaseException as exc:
        run.annotate(exc)
        raise
    finally:
        run.warn(stacklevel=1)  # the caller awaiting arun()
    failure = run.failure()
    if failure is not None:
        raise failure
    return run.result()


def run_sync(plan: Plan, settings: RunSettings) -> RunResult:
    """Execute a plan from synchronous code, in a new event loop (or none if not needed).

    When this thread already runs an event loop (a Jupyter cell, an async framework), the
    new loop gets a thread of its own, started in a copy of this context, and the caller
    waits for it; Ctrl-C while waiting cancels the run.
    """
    run: Run | None = None
    try:
        try:
            with ctrl_c_held():  # obeyed once the run exists, so that it can be closed
                run = Run.open(plan, settings)
            run.run_here(settings.backend)
            run.close(None)  # Ctrl-C is held while it writes, then obeyed
        except BaseException as exc:  # Ctrl-C, or a cancellation of the loop's own
            if run is not None:
                while True:  # a second Ctrl-C before the close could hold it: close again
                    try:
                        run.close(exc)
                        break
                    except KeyboardInterrupt:
                        continue
                run.annotate(exc)
            raise
        failure = run.failure()
        if failure is not None:
            raise failure
    finally:
        if run is not None:
            run.warn(stacklevel=2)  # the caller of Pipeline.run()
    return run.result()


class Run:
    """One run's lifecycle: its collaborators, how it ended, and what it produced."""

    def __init__(
        self,
        plan: Plan,
        run_id: str,
        scheduler: Scheduler,
        tracer: RunTracer | None,
        checkpoints: Checkpoints | None,
    ) -> None:
        self.plan = plan
        self.run_id = run_id
        self.scheduler = scheduler
        self.states = scheduler.states
        self.outcome = scheduler.outcome
        self.calls = scheduler.calls
        self.tracer = tracer
        self.checkpoints = checkpoints
        self.wall_start = time.time()
        self.clock_start = time.perf_counter()
        self.clock_end = self.clock_start
        self.close_lock = threading.Lock()
        self.close_started = False
        self.closed = threading.Event()

    @classmethod
    def open(cls, plan: Plan, settings: RunSettings) -> Run:
        """A run of ``plan``, ready to execute; its checkpoints' writer thread is started.

        Raises:
            ConfigurationError: ``resume=`` names a run the store does not have.
        """
        # First, as it may refuse the run: nothing is allocated yet.
        resumed, resume = [], settings.resume
        if settings.store is not None and (resume is True or isinstance(resume, str)):
            resumed = runs_to_resume(settings.store, plan.graph.name, resume)
        run_id = new_run_id()
        layout = Layout.of(plan.graph)
        tracer = RunTracer.create(
            plan.graph, run_id, settings.tracer_provider, settings.meter_provider
        )
        hooks = combine_hooks(
            [tracer, *settings.hooks] if tracer else settings.hooks, settings.on_status
        )
        outcome = Outcome()
        calls = NodeCalls(
            plan,
            layout,
            settings.middleware,
            settings.defaults,
            run_id,
            _NO_HOOKS if hooks is None else MiddlewareHooks(hooks, outcome),
        )
        # Last: it starts the writer thread, which nothing after it may leave running.
        checkpoints = None
        if settings.store is not None:
            checkpoints = Checkpoints(plan, settings.store, run_id, settings.cache, resumed)
            if tracer is not None:
                tracer.cache_attributes = checkpoints.span_attributes
        scheduler = Scheduler(
            plan,
            layout,
            calls,
            NodeStates(len(plan.graph.names)),
            outcome,
            raise_first=settings.on_error == "raise",
            concurrency=settings.concurrency,
            hooks=hooks,
            tracer=tracer,
            trace_inputs=settings.trace_inputs,
            checkpoints=checkpoints,
            keep_values=settings.keep_values,
        )
        return cls(plan, run_id, scheduler, tracer, checkpoints)

    async def execute(self) -> None:
        """Run every planned node in this loop and close the run (see :meth:`failure`).

        Returns None, not the result: asyncio formats a main coroutine's result in a debug
        message on the way out, and a RunResult's repr walks every node.
        """
        ended: BaseException | None = None
        try:
            await self.run_nodes()
        except BaseException as exc:  # cancelled from outside: the trace says so, then it goes on
            ended = exc
            raise
        finally:
            # Shielded: finished work is kept and spans are exported, even now. In a thread:
            # writing files and an exporter's round trip must not stall the caller's loop.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.close, ended)

    def run_here(self, backend: Backend) -> None:
        """Run every planned node from sync code: in a new event loop, or in none if all are
        inline. The caller closes the run: once the loop is gone, nothing can interrupt the
        writing of what finished but Ctrl-C, which the close holds."""
        if self.scheduler.needs_loop:
            run_blocking(self.run_nodes, backend)
        else:
            self._begin()
            self.scheduler.run_without_loop()

    async def run_nodes(self) -> None:
        """Run every planned node in this event loop."""
        self._begin()
        try:
            await self.scheduler.run_in_loop()
        except BaseExceptionGroup as group:
            # trio delivers Ctrl-C to the task waiting on the task group, which wraps it.
            interrupt = _sole_interrupt(group)
            if interrupt is None:
                raise
            self.outcome.interrupt = self.outcome.interrupt or interrupt

    def _begin(self) -> None:
        if self.tracer is not None:
            self.tracer.start_run()

    def close(self, ended: BaseException | None) -> None:
        """Write the checkpoints and the record's end, and end the trace; once, from any thread.

        Blocks (call it off the event loop). A second caller waits for the first to finish.
        In the main thread, Ctrl-C is held until everything finished is written, then obeyed,
        unless the run is already ending by an exception (``ended``).
        """
        with ctrl_c_held(obey=ended is None):
            with self.close_lock:
                first, self.close_started = not self.close_started, True
            if not first:
                self.closed.wait()
                return
            try:
                self.clock_end = time.perf_counter()
                outcome = self.outcome
                if self.checkpoints is not None:
                    self.checkpoints.close(self._how_it_ended(ended))
                if self.tracer is not None:
                    # What the run raises, if anything: under on_error="continue" a failed
                    # node is no error of the run's (its span says so, and the counts).
                    failed = outcome.first_failure if self.scheduler.raise_first else None
                    failure = self.states.errors.get(failed) if failed is not None else None
                    raised = ended or outcome.interrupt or outcome.hook_error or failure
                    self.tracer.finish_run(raised)
                    self.tracer.flush()
            finally:
                self.closed.set()

    def _how_it_ended(self, ended: BaseException | None) -> str:
        """One word for the run record: ok, failed, interrupted, cancelled, stopped."""
        outcome = self.outcome
        if isinstance(ended, (KeyboardInterrupt, SystemExit)) or outcome.interrupt is not None:
            return "interrupted"
        if ended is not None:
            return "cancelled"
        if outcome.hook_error is not None:
            return "hook failed"
        if outcome.first_failure is not None:
            return "failed"
        return "ok" if self.scheduler.unfinished == 0 else "stopped"

    def annotate(self, exc: BaseException) -> None:
        """Say on a KeyboardInterrupt that the run can be resumed (Python 3.11+ notes)."""
        if (
            isinstance(exc, KeyboardInterrupt)
            and self.checkpoints is not None
            and sys.version_info >= (3, 11)
        ):
            note = (
                f"flowdeco: run {self.run_id} stopped; finished nodes are checkpointed, "
                "so running again resumes where it stopped"
            )
            if note not in getattr(exc, "__notes__", ()):
                exc.add_note(note)

    def warn(self, stacklevel: int) -> None:
        """Tell the caller about checkpoints that could not be used or written.

        ``stacklevel`` counts frames above run_sync/run_async: the warning points there.
        """
        if self.checkpoints is not None:
            for problem in self.checkpoints.problems:
                warnings.warn(problem, CheckpointWarning, stacklevel=stacklevel + 2)

    def failure(self) -> BaseException | None:
        """What the run's caller raises, if it did not end well: an interrupt, a hook's
        error, NodeFailed (each with its cause chained).

        Returned, not raised: the caller raises it, so that a user's traceback shows one
        frame of flowdeco's above the node's own.
        """
        outcome = self.outcome
        if outcome.interrupt is not None:
            self.annotate(outcome.interrupt)
            return outcome.interrupt
        if outcome.hook_error is not None:
            outcome.hook_error.__cause__ = outcome.hook_error.error
            return outcome.hook_error
        if outcome.first_failure is not None and self.scheduler.raise_first:
            i = outcome.first_failure
            error = self.states.errors[i]
            attempt = self.calls.attempts.get(i) if i in self.calls.retried else None
            failed = NodeFailed(self.plan.graph.names[i], error, self.result(), attempt)
            failed.__cause__ = error
            return failed
        return None

    def result(self) -> RunResult:
        """A snapshot of the run as it stands."""
        plan, states = self.plan, self.states
        names, given = plan.graph.names, plan.given
        to_wall = self.wall_start - self.clock_start
        values = {name: given[name] for name in plan.outputs if name in given}
        status: dict[str, Status] = {}
        started: dict[str, float] = {}
        finished: dict[str, float] = {}
        attempts: dict[str, int] = {}
        node_values, node_status = states.values, states.status
        started_at, ended_at, called = states.started_at, states.ended_at, self.calls.attempts
        wanted = self.scheduler.wanted
        for i in plan.order:
            name = names[i]
            status[name] = node_status[i]
            value = node_values[i]
            if wanted[i] and value is not MISSING and type(value) is not Stored:
                values[name] = value
            if started_at[i]:
                attempts[name] = called.get(i, 1)
                started[name] = started_at[i] + to_wall
                if node_status[i] not in _UNFINISHED:
                    finished[name] = ended_at[i] + to_wall
        return RunResult(
            pipeline=plan.graph.name,
            run_id=self.run_id,
            outputs=plan.outputs,
            values=values,
            status=status,
            errors={names[i]: exc for i, exc in states.errors.items()},
            attempts=attempts,
            started_at=started,
            finished_at=finished,
            duration=max(self.clock_end, self.clock_start) - self.clock_start,
            explainer=self.explain,
        )

    def explain(self, name: str) -> Explanation:
        """Why node ``name`` ran or was reused (see :meth:`RunResult.explain`)."""
        i = self.plan.graph.index[name]
        return explain(self.checkpoints, self.run_id, name, i, self.states.status[i])


def _sole_interrupt(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The KeyboardInterrupt or SystemExit a group holds, if it holds nothing else."""
    interrupts, rest = group.split((KeyboardInterrupt, SystemExit))
    if interrupts is None or rest is not None:
        return None
    found: BaseException = interrupts
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
