"""Running a coroutine from synchronous code: a new event loop here, or on a thread.

When the calling thread already runs an event loop (a Jupyter cell, an async framework
calling sync code), a run gets a new loop on a thread of its own, in a copy of the
caller's context, and the caller waits; Ctrl-C while waiting cancels the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib
import signal
import sys
import threading
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

__all__ = ["ctrl_c_held", "run_blocking"]


def run_blocking(call: Callable[[], Awaitable[None]], backend: str) -> None:
    """Run ``await call()`` to completion in a new event loop of ``backend``."""
    # anyio imports a backend (and trio) on its first run. A Ctrl-C in the middle of an
    # import leaves a half-made module behind, which breaks every later run: hold it.
    with ctrl_c_held():
        importlib.import_module(f"anyio._backends._{backend}")
    if _event_loop_running():
        _LoopThread(call, backend).run()
    else:
        anyio.run(call, backend=backend)


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

    def __init__(self, call: Callable[[], Awaitable[None]], backend: str) -> None:
        self.call = call
        self.backend = backend
        self.lock = threading.Lock()
        self.cancel_soon: Callable[[], None] | None = None  # thread-safe, set by _main
        self.cancelled = False
        self.error: BaseException | None = None
        # An Event, not Thread.join(): a join interrupted by Ctrl-C may return early after.
        self.done = threading.Event()

    def run(self) -> None:
        context = contextvars.copy_context()
        thread = threading.Thread(
            target=context.run, args=(self._target,), name="flowdeco run", daemon=True
        )
        thread.start()
        try:
            with _ctrl_c_interrupts():
                # Wake up now and then: a signal another thread received runs its Python
                # handler only when this thread next runs bytecode.
                while not self.done.wait(_WAKE_SECONDS):
                    pass
        except BaseException:  # Ctrl-C while waiting: stop the run, then let it propagate
            self._cancel()
            self.done.wait()
            raise
        if self.error is not None:
            raise self.error

    def _target(self) -> None:
        # The copied context still says which async library the caller's thread runs.
        sniffio = sys.modules.get("sniffio")
        if sniffio is not None:
            sniffio.current_async_library_cvar.set(None)
        try:
            anyio.run(self._main, backend=self.backend)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    async def _main(self) -> None:
        # Cancelled from the waiting thread, this returns quietly: that thread re-raises.
        with anyio.CancelScope() as scope:
            with self.lock:
                self.cancel_soon = _call_soon_threadsafe(scope.cancel, self.backend)
                if self.cancelled:
                    scope.cancel()
            await self.call()

    def _cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            cancel_soon = self.cancel_soon
        if cancel_soon is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already finished
                cancel_soon()


def _call_soon_threadsafe(func: Callable[[], object], backend: str) -> Callable[[], None]:
    """A function any thread may call to have ``func`` run soon in this event loop.

    Not anyio.from_thread: it refuses to run in a thread that runs an event loop of its
    own, which is exactly the caller of a run on its own thread.
    """
    if backend == "trio":
        import trio

        token = trio.lowlevel.current_trio_token()

        def call_soon() -> None:
            token.run_sync_soon(func)
    else:
        loop = asyncio.get_running_loop()

        def call_soon() -> None:
            loop.call_soon_threadsafe(func)

    return call_soon


_WAKE_SECONDS = 0.1


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Let Ctrl-C raise KeyboardInterrupt in this thread for the duration.

    The caller's event loop may have its own SIGINT handler: asyncio's runner cancels its
    main task, trio defers the interrupt to the next checkpoint. Neither reaches a thread
    blocked waiting for a run, so the default handler stands in while it waits.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are only ever handled in the main thread
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler installed outside Python; leave ours
            signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def ctrl_c_held(obey: bool = True) -> Iterator[None]:
    """Hold Ctrl-C for the duration, then obey it (raise KeyboardInterrupt), unless
    ``obey`` is false (the caller is already stopping): what must finish (writing finished
    work) finishes first. Only the main thread receives signals; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)
    if held and obey:
        raise KeyboardInterrupt
