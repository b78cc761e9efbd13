"""ProcessExecutor: node bodies in worker processes, which a crash, a timeout or a cancelled
run can stop without stopping the run.

Each worker is a fresh Python process (``python -c``, loading :mod:`._worker` by its path)
with a socket to the parent. A daemon thread of the parent serves each worker: it takes the
next call from the pool's queue, pickles it, sends it and waits for the answer, so the event
loop never blocks on pickling or on a pipe. When a worker ends before answering (a crash, or
a kill), the call fails with :class:`WorkerCrashed` and the thread starts a new worker for
the next call. A cancelled call (its run cancelled, its timeout reached) kills its worker.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pickle
import queue
import signal
import socket
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
from opentelemetry import propagate

from . import _worker
from ._errors import ConfigurationError, FlowdecoError
from ._executors import Executor
from ._threads import IDLE_SECONDS, Handoff, handoff, running_asyncio_loop

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, Sequence
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["OWN_PROCESSES", "ProcessExecutor", "WorkerCrashed"]

#: The longest a cancelled call waits for its killed worker to be gone, in seconds.
REAP_SECONDS = 5.0
#: How long a closing pool lets idle workers exit on their own before killing them.
EXIT_SECONDS = 1.0

_BOOT = (
    "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import sys, importlib.util; "
    "spec = importlib.util.spec_from_file_location('flowdeco_worker', sys.argv[1]); "
    "worker = importlib.util.module_from_spec(spec); spec.loader.exec_module(worker); "
    "worker.serve(int(sys.argv[2]))"
)
_WORKER_FILE = str(Path(_worker.__file__).resolve())


class WorkerCrashed(FlowdecoError):
    """The worker process running a node ended before the node returned: it crashed (a
    segfault, ``os._exit()``), or was killed (SIGKILL, the machine's out-of-memory killer)."""

    def __init__(self, node: str, pid: int, returncode: int) -> None:
        self.node = node
        self.pid = pid
        #: The process's exit code; minus the signal's number when a signal ended it.
        self.returncode = returncode
        if returncode < 0:
            try:
                name = f" ({signal.Signals(-returncode).name})"
            except ValueError:
                name = ""
            how = f"was killed by signal {-returncode}{name}"
        else:
            how = f"exited with code {returncode}"
        super().__init__(
            f"node {node!r}: its worker process (pid {pid}) {how} before the node returned"
        )

    def __reduce__(self) -> tuple[Any, ...]:  # travels between processes as errors do
        return type(self), (self.node, self.pid, self.returncode)


class ProcessExecutor(Executor):
    """Runs node bodies in a pool of worker processes: for CPU-bound Python, and for nodes
    that a timeout must really stop.

    Workers start as calls need them, up to ``max_workers`` (the CPUs this process may use,
    by default), and are reused by later calls; a worker that crashes fails its node only,
    and is replaced. The function, its inputs and its value travel pickled (see
    ``docs/executors.md``). An async function's coroutine runs in a new event loop in the
    worker, of the run's backend.

    An executor you make is yours: its workers live until you call :meth:`close` (or leave
    its ``with`` block), across runs; the interpreter's exit closes it too. ``executor=
    "process"`` is flowdeco's own, closed when the run's event loop ends.
    """

    runs_async = True

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is None:
            max_workers = _usable_cpus()
        elif isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(
                f"ProcessExecutor(max_workers=...) must be a whole number >= 1, got {max_workers!r}"
            )
        if not hasattr(socket, "AF_UNIX"):  # pragma: no cover - Windows
            raise ConfigurationError("ProcessExecutor needs a POSIX system (Linux, macOS)")
        self.max_workers = max_workers
        self._pool = _Pool(max_workers)
        _POOLS.add(self._pool)

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        return self._pool.run(_Job(node, func, args, kwargs))

    def close(self) -> None:
        """Stop the workers: idle ones exit, busy ones are killed (their nodes fail).

        Calls made after this fail. Closing twice does nothing.
        """
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ProcessExecutor(max_workers={self.max_workers})"


class _OwnProcesses(Executor):
    """``executor="process"``: a :class:`ProcessExecutor` of flowdeco's own per event loop.

    It is started by the loop's first process call and closed when the loop ends (for
    ``pipe.run()``, when the run does), by a task of the loop's own (asyncio's tasks are
    cancelled as its loop closes, trio's system tasks as its run ends).
    """

    runs_async = True

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Awaitable[Any]:
        return self.for_run().call(func, args, kwargs, node)

    def for_run(self) -> Executor:
        executor = _LOOP_EXECUTOR.get(None)
        if executor is None:
            executor = ProcessExecutor()
            _LOOP_EXECUTOR.set(executor)
            _close_with_the_loop(executor)
        return executor

    def __repr__(self) -> str:
        return "'process'"


_LOOP_EXECUTOR: anyio.lowlevel.RunVar[ProcessExecutor] = anyio.lowlevel.RunVar(
    "flowdeco process executor"
)
_CLOSERS: set[object] = set()  # asyncio keeps only weak references to its tasks


def _close_with_the_loop(executor: ProcessExecutor) -> None:
    async def close_at_the_end() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            executor.close()

    loop = running_asyncio_loop()
    if loop is None:
        sys.modules["trio"].lowlevel.spawn_system_task(close_at_the_end)
    else:
        task = loop.create_task(close_at_the_end())
        _CLOSERS.add(task)
        task.add_done_callback(_CLOSERS.discard)


#: The executor ``executor="process"`` names.
OWN_PROCESSES: Executor = _OwnProcesses()


class _Job:
    """One call: what to send, who waits for it, and the worker it runs on, to kill it."""

    __slots__ = (
        "abandoned",
        "args",
        "backend",
        "done",
        "func",
        "kwargs",
        "node",
        "reaped",
        "result",
        "trace",
        "worker",
    )

    def __init__(
        self, node: str, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> None:
        self.node = node
        self.func = func
        self.args = args
        self.kwargs = kwargs
        self.backend = "asyncio"  # the caller's, for an async body's event loop in the worker
        self.trace: dict[str, str] | None = None  # the node span's W3C headers
        self.result: Handoff | None = None
        self.worker: _Worker | None = None  # while it runs
        self.abandoned = False  # its caller stopped waiting: never start it, drop its answer
        self.done = False  # answered, or its worker is gone
        self.reaped: Handoff | None = None  # to tell a cancelled caller its worker is gone


class _Pool:
    """The worker processes of one executor, each served by a daemon thread of its own.

    ``idle`` counts the threads that wait, or will wait, for a call, less the calls queued:
    a call starts a thread when it is zero and fewer than ``max_workers`` run; a thread
    whose wait timed out ends only when it is above zero, so a queued call always has one.
    """

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.calls: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.threads = 0
        self.idle = 0
        self.workers: set[_Worker] = set()
        self.closed = False

    async def run(self, job: _Job) -> Any:
        if running_asyncio_loop() is None:
            job.backend = "trio"
        trace: dict[str, str] = {}
        propagate.inject(trace)  # the node's span, current here, as W3C headers
        job.trace = trace or None
        job.result = handoff()
        self._submit(job)
        try:
            return await job.result
        except BaseException:  # cancelled (its run, its timeout), or the job's own error
            reaped = self._abandon(job)
            if reaped is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(REAP_SECONDS):
                    await reaped
            raise

    def _submit(self, job: _Job) -> None:
        with self.lock:
            if self.closed:
                raise RuntimeError(f"node {job.node!r}: its ProcessExecutor was closed")
            start = self.idle <= 0 and self.threads < self.max_workers
            if start:
                self.threads += 1
            else:
                self.idle -= 1
        self.calls.put(job)
        if start:
            threading.Thread(
                target=self._serve, name="flowdeco process worker", daemon=True
            ).start()

    def _abandon(self, job: _Job) -> Handoff | None:
        """Give up on ``job``: kill its worker if it runs. Returns what says it is gone."""
        with self.lock:
            job.abandoned = True
            worker = job.worker
            if worker is None or job.done:
                return None
            reaped = job.reaped = handoff()
        worker.kill()
        return reaped

    def _serve(self) -> None:
        """One thread's life: take calls, run each on its worker, start a new worker when
        the last one ended."""
        worker: _Worker | None = None
        try:
            while True:
                try:
                    job = self.calls.get(timeout=IDLE_SECONDS)
                except queue.Empty:
                    with self.lock:
                        if self.idle > 0:
                            self.idle -= 1
                            self.threads -= 1
                            return
                    continue
                if job is None:  # the pool closed
                    return
                if not job.abandoned:
                    worker = self._run(job, worker)
                del job
                with self.lock:
                    self.idle += 1
        finally:
            if worker is not None:
                worker.stop()

    def _run(self, job: _Job, worker: _Worker | None) -> _Worker | None:
        """Run ``job`` on ``worker`` (or a new one); returns the worker, None if it is gone."""
        assert job.result is not None
        try:
            message = _worker.dumps((job.func, job.args, job.kwargs, job.backend, job.trace))
        except BaseException as exc:  # noqa: BLE001 - the inputs cannot travel: the node fails
            job.result.settle(error=_cannot_send(job.node, exc))
            return worker
        try:
            if worker is None or worker.ended():  # its first call, or it died idle
                if worker is not None:
                    worker.reap()
                worker = _Worker.start(self)
        except OSError as exc:
            job.result.settle(error=exc)
            return None
        with self.lock:
            if job.abandoned:
                return worker
            job.worker = worker
            worker.busy = True
        try:
            worker.channel.send(message)
            del message
            answer = worker.channel.receive()
        except (OSError, EOFError):  # it ended: a crash, or a kill
            returncode = worker.reap()
            with self.lock:
                job.done = True
                reaped = job.reaped
            if reaped is not None:
                reaped.settle()
            elif not job.abandoned:
                error: BaseException = WorkerCrashed(job.node, worker.pid, returncode)
                if self.closed:
                    error = RuntimeError(
                        f"node {job.node!r}: its ProcessExecutor was closed while it ran"
                    )
                job.result.settle(error=error)
            return None
        with self.lock:
            job.done = True
            job.worker = None
            worker.busy = False
        _settle(job, answer, worker.pid)
        return worker

    def close(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.closed = True
            threads = self.threads
            workers = list(self.workers)
        for _ in range(threads):
            self.calls.put(None)
        for worker in workers:  # an idle one reads the closed socket as the end
            if worker.busy:
                worker.kill()
            else:
                with contextlib.suppress(OSError):  # its thread closed it already
                    worker.sock.shutdown(socket.SHUT_RDWR)
        for worker in workers:
            worker.reap(EXIT_SECONDS)


def _settle(job: _Job, answer: memoryview, pid: int) -> None:
    """Hand the worker's answer to the waiting task: the value, or the error raised."""
    assert job.result is not None
    try:
        outcome = pickle.loads(answer[1:])
    except BaseException as exc:  # noqa: BLE001 - a class the parent cannot load, say
        job.result.settle(error=exc)
        return
    if answer[:1] == _worker.RETURNED:
        job.result.settle(outcome)
        return
    error, text, trace = outcome
    if error is None:
        error = RuntimeError(f"{text} (in worker process {pid}; the error could not be pickled)")
    error.__cause__ = _RemoteTraceback(trace)
    job.result.settle(error=error)


class _RemoteTraceback(Exception):
    """The traceback of an error raised in a worker process, shown as its cause."""

    def __init__(self, trace: str) -> None:
        super().__init__(trace)
        self.trace = trace

    def __str__(self) -> str:
        return f"\n\n(in the worker process)\n{self.trace}"


def _cannot_send(node: str, exc: BaseException) -> BaseException:
    if isinstance(exc, ImportError):  # cloudpickle is needed and missing: the message says
        return exc
    error = TypeError(
        f"node {node!r}: its function or inputs cannot be sent to a worker process: "
        f"{type(exc).__name__}: {exc}"
    )
    error.__cause__ = exc
    return error


class _Worker:
    """One worker process and the parent's end of its socket."""

    def __init__(self, process: subprocess.Popen[bytes], sock: socket.socket, pool: _Pool) -> None:
        self.process = process
        self.sock = sock
        self.channel = _worker.Channel(sock)
        self.pid = process.pid
        self.pool = weakref.ref(pool)
        self.busy = False  # running a call: closing the pool kills it

    @classmethod
    def start(cls, pool: _Pool) -> _Worker:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, _WORKER_FILE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        worker = cls(process, ours, pool)
        with pool.lock:
            pool.workers.add(worker)
        try:
            worker.channel.send(pickle.dumps(sys.path))
        except OSError:  # it died at once
            worker.kill()
            worker.reap()
            raise
        return worker

    def ended(self) -> bool:
        return self.process.poll() is not None

    def kill(self) -> None:
        """Kill the process (SIGKILL); whoever waits on its socket then sees it end."""
        with contextlib.suppress(OSError):  # already reaped
            self.process.kill()

    def stop(self) -> None:
        """End an idle worker: close its socket, which it reads as the end."""
        self.sock.close()
        self.reap(EXIT_SECONDS)

    def reap(self, grace: float = 0.0) -> int:
        """Wait for the process to end (killing it after ``grace`` seconds); its return code."""
        try:
            returncode = self.process.wait(grace) if grace else self.process.wait()
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self.process.wait()
        self.sock.close()
        pool = self.pool()
        if pool is not None:
            with pool.lock:
                pool.workers.discard(self)
        return returncode


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1


_POOLS: weakref.WeakSet[_Pool] = weakref.WeakSet()


@atexit.register
def _close_pools() -> None:
    """No worker outlives the interpreter, even of an executor nobody closed."""
    for pool in list(_POOLS):
        pool.close()
