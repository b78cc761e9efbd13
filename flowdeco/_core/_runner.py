"""The run: its lifecycle around the scheduler, from sync or async code, and its result.

A run opens its tracer and checkpoints, lets the scheduler execute the plan (in an event
loop, or in none when every node is inline), then closes both whatever ended it, and
raises or returns the outcome.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ._checkpoints import Checkpoints, runs_to_resume
from ._errors import NodeFailed
from ._hooks import Hooks, combine_hooks
from ._layout import MISSING, Layout
from ._loops import run_blocking
from ._middleware import NodeCalls
from ._result import RunResult, Status, new_run_id
from ._scheduler import NodeStates, Outcome, Scheduler
from ._store import CheckpointWarning
from ._tracing import RunTracer

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

if TYPE_CHECKING:
    from ._graph import Plan
    from ._options import RunSettings

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
    finally:
        run.warn(stacklevel=1)  # the caller awaiting arun()
    return run.result()


def run_sync(plan: Plan, settings: RunSettings) -> RunResult:
    """Execute a plan from synchronous code, in a new event loop (or none if not needed).

    When this thread already runs an event loop (a Jupyter cell, an async framework), the
    new loop gets a thread of its own, started in a copy of this context, and the caller
    waits for it; Ctrl-C while waiting cancels the run.
    """
    run = Run.open(plan, settings)
    try:
        if run.scheduler.needs_loop:
            run_blocking(run.execute, settings.backend)
        else:
            run.execute_without_loop()
    finally:
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
        calls = NodeCalls(
            plan, layout, settings.middleware, settings.defaults, run_id, hooks or _NO_HOOKS
        )
        # Last: it starts the writer thread, which nothing after it may leave running.
        checkpoints = None
        if settings.store is not None:
            checkpoints = Checkpoints(plan, settings.store, run_id, settings.cache, resumed)
        scheduler = Scheduler(
            plan,
            layout,
            calls,
            NodeStates(len(plan.graph.names)),
            Outcome(),
            raise_first=settings.on_error == "raise",
            concurrency=settings.concurrency,
            hooks=hooks,
            tracer=tracer,
            trace_inputs=settings.trace_inputs,
            checkpoints=checkpoints,
        )
        return cls(plan, run_id, scheduler, tracer, checkpoints)

    async def execute(self) -> None:
        """Run every planned node; raise NodeFailed or an interrupt after cleaning up.

        Returns None, not the result: asyncio formats a main coroutine's result in a debug
        message on the way out, and a RunResult's repr walks every node.
        """
        self._begin()
        ended: BaseException | None = None
        try:
            await self.scheduler.run_in_loop()
        except BaseExceptionGroup as group:
            # trio delivers Ctrl-C to the task waiting on the task group, which wraps it.
            interrupt = _sole_interrupt(group)
            if interrupt is None:
                raise
            self.outcome.interrupt = self.outcome.interrupt or interrupt
        except BaseException as exc:  # cancelled from outside: the trace says so, then it goes on
            ended = exc
            raise
        finally:
            # Shielded: finished work is kept and spans are exported, even now. In a thread:
            # writing files and an exporter's round trip must not stall the caller's loop.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._close, ended)
        self._raise_outcome()

    def execute_without_loop(self) -> None:
        """Run a plan of inline nodes only, in this thread, with no event loop."""
        self._begin()
        try:
            self.scheduler.run_without_loop()
        finally:
            self._close(None)
        self._raise_outcome()

    def _begin(self) -> None:
        if self.tracer is not None:
            self.tracer.start_run()

    def _close(self, ended: BaseException | None) -> None:
        """Wait for the checkpoints to be written and end the trace (blocks: off the loop)."""
        self.clock_end = time.perf_counter()
        outcome = self.outcome
        if self.checkpoints is not None:
            self.checkpoints.close(
                ended is None
                and self.scheduler.unfinished == 0
                and outcome.first_failure is None
                and outcome.interrupt is None
                and outcome.hook_error is None
            )
        if self.tracer is not None:
            failed = outcome.first_failure
            failure = self.states.errors.get(failed) if failed is not None else None
            self.tracer.finish_run(ended or outcome.interrupt or failure)
            self.tracer.flush()

    def warn(self, stacklevel: int) -> None:
        """Tell the caller about checkpoints that could not be used or written.

        ``stacklevel`` counts frames above run_sync/run_async: the warning points there.
        """
        if self.checkpoints is not None:
            for problem in self.checkpoints.problems:
                warnings.warn(problem, CheckpointWarning, stacklevel=stacklevel + 2)

    def _raise_outcome(self) -> None:
        outcome = self.outcome
        if outcome.interrupt is not None:
            if self.checkpoints is not None and sys.version_info >= (3, 11):
                outcome.interrupt.add_note(
                    f"flowdeco: run {self.run_id} stopped; finished nodes are checkpointed, "
                    "so running again resumes where it stopped"
                )
            raise outcome.interrupt
        if outcome.hook_error is not None:
            raise outcome.hook_error from outcome.hook_error.error
        if outcome.first_failure is not None and self.scheduler.raise_first:
            i = outcome.first_failure
            error = self.states.errors[i]
            attempt = self.calls.attempts.get(i) if i in self.calls.retried else None
            raise NodeFailed(self.plan.graph.names[i], error, self.result(), attempt) from error

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
        for i in plan.order:
            name = names[i]
            status[name] = node_status[i]
            if node_values[i] is not MISSING:
                values[name] = node_values[i]
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
        )


def _sole_interrupt(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The KeyboardInterrupt or SystemExit a group holds, if it holds nothing else."""
    interrupts, rest = group.split((KeyboardInterrupt, SystemExit))
    if interrupts is None or rest is not None:
        return None
    found: BaseException = interrupts
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found
