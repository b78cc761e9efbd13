"""flowdeco's worker threads, and handing what one computed to a task waiting in the loop.

The threads are daemon threads shared by every run and event loop of the process: a call
that a cancelled run abandoned runs on, but never keeps the interpreter from exiting. They
are started as calls need them and end after :data:`IDLE_SECONDS` without work.

A :class:`Handoff` is made in the event loop, settled from any thread, and awaited in the
loop; it reaches the loop through the loop's own thread-safe call (asyncio's
``call_soon_threadsafe``, through the loop's :class:`LoopInbox`; trio's
``TrioToken.run_sync_soon``): anyio's cross-thread calls block the calling thread until the
loop has run them, which is a round trip where one message is enough.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Generator

    import trio

__all__ = ["IDLE_SECONDS", "Handoff", "LoopInbox", "handoff", "running_asyncio_loop", "start_soon"]

#: Seconds a worker thread waits for work before it ends.
IDLE_SECONDS = 10.0


class Handoff:
    """A value or an error that a thread settles once and a task in the loop awaits.

    A task that stops waiting (it was cancelled) abandons it: what comes later is dropped.
    """

    __slots__ = ()

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        """Hand ``value`` (or raise ``error``) to the waiting task; from any thread, once."""
        raise NotImplementedError

    def __await__(self) -> Generator[Any, None, Any]:
        raise NotImplementedError


def handoff() -> Handoff:
    """A new :class:`Handoff` for a task of the event loop (asyncio or trio) of this thread."""
    loop = running_asyncio_loop()
    return _TrioHandoff() if loop is None else _LoopHandoff(_inbox_of(loop))


_INBOXES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopInbox] = (
    weakref.WeakKeyDictionary()
)


def _inbox_of(loop: asyncio.AbstractEventLoop) -> LoopInbox:
    inbox = _INBOXES.get(loop)
    if inbox is None:
        inbox = _INBOXES[loop] = LoopInbox(loop)
    return inbox


def running_asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The asyncio loop running in this thread; None when it is trio's."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _LoopHandoff(Handoff):
    """A :class:`Handoff` to a task of an asyncio loop: a future, settled through the
    loop's :class:`LoopInbox`."""

    __slots__ = ("future", "inbox")

    def __init__(self, inbox: LoopInbox) -> None:
        self.inbox = inbox
        self.future: asyncio.Future[Any] = inbox.loop.create_future()

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        self.inbox.put(self.future, value, error)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.future.__await__()


class LoopInbox:
    """What threads hand to one asyncio loop's futures, delivered in batches: the loop is
    woken (a write to its self-pipe, a turn of its loop) once per batch, not per result."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.lock = threading.Lock()
        self.results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self.waking = False  # a delivery is scheduled and has not started

    def put(self, future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
        with self.lock:
            self.results.append((future, value, error))
            if self.waking:
                return
            self.waking = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            results, self.results, self.waking = self.results, [], False
        for future, value, error in results:
            if future.done():  # cancelled: the task stopped waiting
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)


class _TrioHandoff(Handoff):
    __slots__ = ("outcome", "task", "token")

    def __init__(self) -> None:
        self.token = _trio().lowlevel.current_trio_token()
        self.task: trio.lowlevel.Task | None = None
        self.outcome: Any = None  # an outcome.Outcome once settled, until delivered

    def settle(self, value: Any = None, error: BaseException | None = None) -> None:
        outcome = sys.modules["outcome"]  # trio's own dependency, imported with it
        result = outcome.Value(value) if error is None else outcome.Error(error)
        with contextlib.suppress(_trio().RunFinishedError):  # nobody waits any more
            self.token.run_sync_soon(self._deliver, result)

    def _deliver(self, result: Any) -> None:  # in trio's thread
        if self.task is not None:
            _trio().lowlevel.reschedule(self.task, result)
            self.task = None
        else:
            self.outcome = result

    def __await__(self) -> Generator[Any, None, Any]:
        return self._wait().__await__()

    async def _wait(self) -> Any:
        lowlevel = _trio().lowlevel
        if self.outcome is not None:
            return self.outcome.unwrap()
        self.task = lowlevel.current_task()

        def abandon(_: object) -> trio.lowlevel.Abort:
            self.task = None  # what comes later is dropped
            succeeded: trio.lowlevel.Abort = lowlevel.Abort.SUCCEEDED
            return succeeded

        return await lowlevel.wait_task_rescheduled(abandon)


def _trio() -> Any:
    """The trio module: imported by whoever runs trio, so it is there when a run uses it."""
    return sys.modules["trio"]


class _Workers:
    """The daemon threads, fed through one queue.

    ``idle`` counts threads that are waiting for work or will be, less the work queued for
    them: a call starts a thread only when it is zero, and a thread whose wait timed out
    ends only when it is not, so queued work always has a thread to take it.
    """

    def __init__(self) -> None:
        self.work: queue.SimpleQueue[Callable[[], Callable[[], object] | None]] = (
            queue.SimpleQueue()
        )
        self.lock = threading.Lock()
        self.idle = 0
        self.started = 0

    def start_soon(self, job: Callable[[], Callable[[], object] | None]) -> None:
        with self.lock:
            start = not self.idle
            if start:
                self.started += 1
            else:
                self.idle -= 1
        self.work.put(job)
        if start:
            threading.Thread(
                target=self._serve, name=f"flowdeco worker {self.started}", daemon=True
            ).start()

    def _serve(self) -> None:
        work, lock = self.work, self.lock
        while True:
            try:
                job = work.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with lock:
                    if self.idle:
                        self.idle -= 1
                        return
                continue
            then = job()  # jobs handle their own errors: a thread outlives them all
            del job
            with lock:
                self.idle += 1
            if then is not None:  # last, so that the thread waits again right after
                then()
            del then


_WORKERS = _Workers()


def start_soon(job: Callable[[], Callable[[], object] | None]) -> None:
    """Call ``job()`` in one of flowdeco's worker threads; it must not raise. What it
    returns, if not None, is called once the thread counts itself idle: handing a result
    to the loop last lets the thread wait again before the loop needs the GIL."""
    _WORKERS.start_soon(job)
