"""Shared fixtures: every engine test runs on asyncio and on trio."""

from __future__ import annotations

import itertools
import threading
from typing import TYPE_CHECKING

import pytest

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """The backend anyio's pytest plugin runs ``pytest.mark.anyio`` tests on."""
    backend: str = request.param
    return backend


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
