"""A process executor's worker, and how calls and values travel to and from it.

This file is loaded twice: in the parent, as a module of flowdeco (for :func:`dumps`,
:func:`send` and :func:`receive`), and in each worker process, by its path and alone, so
that a worker starts in the time Python does (about 30 ms), without importing flowdeco.
So it imports a few modules of the standard library only, and more as they are needed:
cloudpickle when a value needs it, anyio when a body is async, traceback when one fails.

Messages are pickles, each after its length (8 bytes). The parent sends the worker's
``sys.path`` first, then one call at a time, ``(func, args, kwargs, backend, trace)``
(``trace``: the node span's W3C headers, or None when nothing is traced); the worker
answers each with a status byte and a pickle: the value, or ``(error, text, traceback)``,
where ``error`` is None when the exception itself could not be pickled.
"""

from __future__ import annotations

import importlib
import io
import marshal
import operator
import os
import pickle
import signal
import socket
import struct
import sys
import threading
import time
import types
from typing import Any

__all__ = ["FAILED", "RETURNED", "Channel", "dumps", "serve"]

RETURNED = b"\x00"  # status byte: a value follows
FAILED = b"\x01"  # status byte: (error, text, traceback) follows

_LENGTH = struct.Struct("!Q")
_SMALL = 64 * 1024  # a message this long, with its length, is sent and read in one piece
_MAIN = ("__main__", "__mp_main__")


# -- pickling --------------------------------------------------------------------------------


def dumps(value: Any) -> bytes:
    """``value`` pickled so that a process with the same ``sys.path`` can load it.

    Functions and classes go by reference (module and name) where that process can import
    them; a node's function is found through its node (``@fd.node`` binds the module's name
    to the Node, whose ``__wrapped__`` it is). What it cannot import (defined in
    ``__main__`` or a notebook cell, a lambda, a local function, and what refers to them)
    goes by value, with cloudpickle.

    Raises:
        ImportError: Something needs pickling by value and cloudpickle is not installed.
    """
    buffer = io.BytesIO()
    try:
        _ReferencePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    except _NeedsValue as needs:
        return _dumps_by_value(value, needs.what)
    return buffer.getvalue()


class _NeedsValue(Exception):
    """Raised by the pickler at the first object that only cloudpickle can carry."""

    def __init__(self, what: object) -> None:
        self.what = what


def _by_reference(obj: object) -> Any:
    """How ``obj`` is pickled by reference: NotImplemented (pickle's own way, or not a
    function, class or module), a reduce tuple, or None when it cannot be."""
    if isinstance(obj, types.ModuleType):
        name = obj.__name__
        if name in _MAIN or sys.modules.get(name) is not obj:
            return None
        return importlib.import_module, (name,)
    if not isinstance(obj, (types.FunctionType, type)):
        return NotImplemented
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", "")
    module = sys.modules.get(module_name) if isinstance(module_name, str) else None
    if module is None or module_name in _MAIN or "<" in qualname:  # <locals>, <lambda>
        return None
    found: Any = module
    try:
        for part in qualname.split("."):
            found = getattr(found, part)
    except AttributeError:
        return None
    if found is obj:
        return NotImplemented
    if getattr(found, "__wrapped__", None) is obj:  # a node's function, or a wrapper's
        return operator.attrgetter(f"{qualname}.__wrapped__"), (module,)
    return None


class _ReferencePickler(pickle.Pickler):
    def reducer_override(self, obj: Any) -> Any:
        reduce = _by_reference(obj)
        if reduce is None:
            raise _NeedsValue(obj)
        return reduce


def _dumps_by_value(value: Any, what: object) -> bytes:
    try:
        import cloudpickle  # type: ignore[import-untyped]
    except ImportError:
        name = getattr(what, "__qualname__", None) or repr(what)
        module = getattr(what, "__module__", "?")
        raise ImportError(
            f"{module}.{name} cannot be imported by another process (it is defined in "
            "__main__ or a notebook cell, or is a lambda or a local function), so it must "
            "be sent by value, which needs cloudpickle: pip install 'flowdeco[process]'"
        ) from None

    class ValuePickler(cloudpickle.Pickler):  # type: ignore[misc]  # untyped
        def reducer_override(self, obj: Any) -> Any:
            if isinstance(obj, types.CodeType):  # whole: cloudpickle drops the file's name,
                return marshal.loads, (marshal.dumps(obj),)  # which tracebacks show
            reduce = _by_reference(obj)
            if reduce is None or reduce is NotImplemented:
                return super().reducer_override(obj)
            return reduce

    buffer = io.BytesIO()
    ValuePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


# -- framing ---------------------------------------------------------------------------------


class Channel:
    """One end of a worker's socket: messages, each sent after its length (8 bytes).

    A message that fits in :data:`_SMALL` with its length is sent in one system call and
    usually read in one: reads fill a buffer, whose bytes past a message start the next.
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray(_SMALL)
        self.view = memoryview(self.buffer)
        self.start = self.end = 0  # the bytes read and not yet handed out

    def send(self, message: bytes) -> None:
        header = _LENGTH.pack(len(message))
        if len(message) <= _SMALL:
            self.sock.sendall(header + message)
        else:  # not copied to prepend 8 bytes
            self.sock.sendall(header)
            self.sock.sendall(message)

    def receive(self) -> memoryview:
        """The next message, valid until the next call. Raises EOFError when the other
        side is gone."""
        view, start = self.view, self.start
        if start:  # what was read past the last message moves to the front
            view[: self.end - start] = view[start : self.end]
            self.start, self.end = 0, self.end - start
        while self.end < _LENGTH.size:
            self.end += self._receive_into(view[self.end :])
        (length,) = _LENGTH.unpack_from(self.buffer)
        end = _LENGTH.size + length
        if end <= len(view):
            while self.end < end:
                self.end += self._receive_into(view[self.end :])
            self.start = end
            return view[_LENGTH.size : end]
        message = bytearray(length)  # a large one gets a buffer of its own
        have = self.end - _LENGTH.size
        message[:have] = view[_LENGTH.size : self.end]
        self.start = self.end = 0
        rest = memoryview(message)[have:]
        while rest:
            rest = rest[self._receive_into(rest) :]
        return memoryview(message)

    def _receive_into(self, view: memoryview) -> int:
        got = self.sock.recv_into(view)
        if not got:
            raise EOFError("the other end of the worker's socket closed")
        return got


# -- the worker ------------------------------------------------------------------------------


def serve(fd: int) -> None:
    """Answer calls on socket ``fd`` until the parent closes it or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it stops us
    channel = Channel(socket.socket(fileno=fd))
    parent = os.getppid()
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    try:
        sys.path[:] = pickle.loads(channel.receive())
        while True:
            reply = _answer(channel.receive())
            for stream in (sys.stdout, sys.stderr):  # what the body printed shows now
                if stream is not None:
                    stream.flush()
            channel.send(reply)
    except (EOFError, ConnectionError):
        pass  # the parent closed the socket (its pool shut down) or is gone


def _answer(message: memoryview) -> bytes:
    """The reply to one call: run it, pickle what it returned or raised."""
    try:
        func, args, kwargs, backend, trace = pickle.loads(message)
        del message
        token = None if trace is None else _attach(trace)
        try:
            value = func(*args, **kwargs)
            if isinstance(value, types.CoroutineType):
                value = _await(func, value, backend)
        finally:
            if token is not None:
                sys.modules["opentelemetry.context"].detach(token)
        reply = RETURNED + dumps(value)
    except BaseException as exc:  # noqa: BLE001 - all the body raises goes back to the parent
        reply = FAILED + _pickled_error(exc)
    return reply


def _attach(trace: dict[str, str]) -> object:
    """Make the node's span current, from its W3C headers: a span the body opens (with a
    tracer provider of the worker's own) is its child."""
    from opentelemetry import context, propagate

    return context.attach(propagate.extract(trace))


def _await(func: Any, coroutine: types.CoroutineType[Any, Any, Any], backend: str) -> Any:
    """The value of an async body's coroutine, run in a new event loop of ``backend``."""
    import inspect  # here, as traceback below: a worker starts without them

    is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004  # async callable objects
    )
    if not is_async:
        coroutine.close()
        raise TypeError(
            f"{getattr(func, '__qualname__', func)} returned a coroutine: its function is "
            "sync (a sync wrapper around an async def?); make the wrapper async, or "
            "decorate the async function"
        )
    import anyio

    async def wait() -> Any:
        return await coroutine

    return anyio.run(wait, backend=backend)


def _pickled_error(exc: BaseException) -> bytes:
    try:
        text = f"{type(exc).__qualname__}: {exc}"
    except Exception:  # noqa: BLE001 - an error whose str() raises
        text = type(exc).__qualname__
    import traceback

    trace = "".join(traceback.format_exception(exc))
    try:
        return dumps((exc, text, trace))
    except Exception:  # noqa: BLE001 - the error is sent as text then
        return dumps((None, text, trace))


def _exit_when_orphaned(parent: int) -> None:
    """End this process soon after its parent ends, even in the middle of a call."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)
