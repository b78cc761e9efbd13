"""Shared fixtures: every engine test runs on asyncio and on trio; node kinds; status logs.

Test modules import the constants and helpers below with ``from conftest import ...``:
``tests`` is no package, so pytest (in its default ``prepend`` import mode) puts it on
``sys.path`` and loads this file as the top-level module ``conftest``, which such an
import then finds.
"""

from __future__ import annotations

import inspect
import itertools
import threading
from typing import TYPE_CHECKING, Any, Literal, get_args

import anyio.lowlevel
import pytest

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from pathlib import Path

#: The event loops. Hypothesis tests parametrize ``backend`` with this directly, as
#: hypothesis refuses a function-scoped fixture (one value shared by all its examples).
BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]

#: The node kinds, one definition for every test that runs on each kind:
#: inline: a sync body that the scheduler calls itself (``run_in="inline"``);
#: thread: a sync body run in a worker thread (the default, ``run_in="thread"``);
#: async: an ``async def`` awaited in the event loop.
Kind = Literal["inline", "thread", "async"]
KINDS: tuple[Kind, ...] = get_args(Kind)
_RUN_IN: dict[Kind, str] = {"inline": "inline", "thread": "thread", "async": "loop"}


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backend anyio's pytest plugin runs ``pytest.mark.anyio`` tests on."""
    backend: str = request.param
    return backend


@pytest.fixture(params=KINDS, ids=KINDS)
def kind(request: pytest.FixtureRequest) -> Kind:
    """Each node kind in turn: build the node under test with ``make_node(kind, ...)``."""
    node_kind: Kind = request.param
    return node_kind


def make_node(
    kind: Kind,
    body: Callable[..., Any],
    *,
    name: str,
    async_body: Callable[..., Coroutine[Any, Any, Any]] | None = None,
    **node_options: Any,
) -> fd.Node[..., Any]:
    """``body``, a plain sync function, as a node of ``kind`` that takes the same parameters.

    An async node is an ``async def`` of ``body``'s signature that awaits one checkpoint
    (so it truly suspends in the loop), then calls ``body``. Where the async node must
    await what ``body`` blocks on (``anyio.sleep`` for ``time.sleep``, say), pass that
    ``async def`` as ``async_body``: it is used as is, and must take the same parameters.
    """
    if kind == "async":
        if async_body is None:
            async_body = _async_twin(body)
        else:
            ours, theirs = inspect.signature(async_body), inspect.signature(body)
            assert _shape(ours) == _shape(theirs), f"{name}: async_body {ours}, body {theirs}"
        spec = fd.node(name=name, **node_options)(async_body)
    elif kind == "inline":
        spec = fd.node(name=name, run_in="inline", **node_options)(body)
    elif kind == "thread":
        spec = fd.node(name=name, **node_options)(body)
    else:
        raise ValueError(f"unknown node kind {kind!r}; the kinds are {KINDS}")
    assert spec.run_in == _RUN_IN[kind], f"{name}: a {kind} node runs in {spec.run_in}"
    return spec


def _shape(signature: inspect.Signature) -> list[tuple[str, Any, Any]]:
    """Each parameter's name, kind and default: what a node reads of its function."""
    return [(p.name, p.kind, p.default) for p in signature.parameters.values()]


class _Name:
    """A default value that ``inspect.Signature`` prints as a bare name, for generated code."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


def _async_twin(body: Callable[..., Any]) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A plain ``async def`` with ``body``'s parameters: awaits a checkpoint, calls ``body``.

    Generated rather than a ``functools.wraps`` wrapper of ``(*args, **kwargs)``, so that
    flowdeco reads its parameters from its code object, as from any ``async def``.
    """
    namespace: dict[str, Any] = {
        "__name__": __name__,
        "_body_": body,
        "_checkpoint_": anyio.lowlevel.checkpoint,
    }
    params: list[inspect.Parameter] = []
    args: list[str] = []
    for p in inspect.signature(body).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"make_node: {body!r} takes *args or **kwargs, which nodes cannot")
        default: Any = p.default
        if default is not p.empty:
            namespace[f"_default_{p.name}_"] = default
            default = _Name(f"_default_{p.name}_")
        params.append(p.replace(annotation=p.empty, default=default))
        args.append(p.name if p.kind is p.POSITIONAL_ONLY else f"{p.name}={p.name}")
    name = getattr(body, "__name__", "")
    name = f"{name}_async" if name.isidentifier() else "body_async"
    source = (
        f"async def {name}{inspect.Signature(params)}:\n"
        "    await _checkpoint_()\n"
        f"    return _body_({', '.join(args)})\n"
    )
    exec(compile(source, f"<make_node {name}>", "exec"), namespace)  # noqa: S102
    twin: Callable[..., Coroutine[Any, Any, Any]] = namespace[name]
    return twin


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory, so the default ``.flowdeco`` store is its own."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def backend(anyio_backend: str) -> str:
    """The same backend, for sync tests that pass ``backend=`` to ``Pipeline.run``."""
    return anyio_backend


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event that long-running thread nodes wait on; set at teardown.

    A thread node cannot be cancelled, only abandoned: setting the event lets the abandoned
    thread end with the test instead of outliving it.
    """
    event = threading.Event()
    yield event
    event.set()


class StatusLog:
    """Records ``on_status`` calls and checks them against ``fd.TRANSITIONS``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, fd.Status]] = []

    def __call__(self, name: str, status: fd.Status) -> None:
        self.calls.append((name, status))

    def paths(self) -> dict[str, list[fd.Status]]:
        """Each node's statuses in order, starting from the implicit PENDING."""
        paths: dict[str, list[fd.Status]] = {}
        for name, status in self.calls:
            paths.setdefault(name, [fd.Status.PENDING]).append(status)
        return paths

    def last(self) -> dict[str, fd.Status]:
        """Each reported node's latest status."""
        return {name: path[-1] for name, path in self.paths().items()}

    def assert_legal(self) -> None:
        """Every node moved only along ``fd.TRANSITIONS`` and ended in a final status."""
        for name, path in self.paths().items():
            for before, after in itertools.pairwise(path):
                assert after in fd.TRANSITIONS[before], f"{name}: illegal {before} -> {after}"
            assert path[-1].finished, f"{name} was left {path[-1]}: {path}"


@pytest.fixture
def status_log() -> StatusLog:
    """A fresh ``on_status`` recorder."""
    return StatusLog()
