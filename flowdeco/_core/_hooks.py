"""Hooks: observe a run's lifecycle (progress bars, metrics, logs) without wrapping calls."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._result import Status

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["Hooks", "combine_hooks"]


class Hooks:
    """Subclass and override what you need; every method does nothing by default.

    Hooks are called in the event loop's thread, in the order things happen; keep them
    quick. ``status_changed`` sees every change and calls the specific method for it.
    """

    def status_changed(self, node: str, status: Status, error: BaseException | None) -> None:
        """A node moved to ``status``; ``error`` is set for ``failed``."""
        if status is Status.RUNNING:
            self.node_started(node)
        elif status is Status.SUCCEEDED:
            self.node_finished(node)
        elif status is Status.FAILED:
            assert error is not None
            self.node_failed(node, error)
        elif status is Status.CACHED:
            self.node_cached(node)
        elif status is Status.SKIPPED:
            self.node_skipped(node)
        elif status is Status.CANCELLED:
            self.node_cancelled(node)

    def node_started(self, node: str) -> None:
        """A node's function was called (once per node: retries do not start it again)."""

    def node_finished(self, node: str) -> None:
        """A node returned its value."""

    def node_failed(self, node: str, error: BaseException) -> None:
        """A node failed for good (after its last attempt)."""

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        """Attempt ``attempt`` of a node raised ``error``; the next starts in ``delay`` s."""

    def node_cached(self, node: str) -> None:
        """A node's value came from a checkpoint instead of a call."""

    def node_skipped(self, node: str) -> None:
        """A node will not run because an ancestor failed (``on_error="continue"``)."""

    def node_cancelled(self, node: str) -> None:
        """A running node was cancelled."""


class _StatusCallback(Hooks):
    def __init__(self, callback: Callable[[str, Status], None]) -> None:
        self.callback = callback

    def status_changed(self, node: str, status: Status, error: BaseException | None) -> None:
        self.callback(node, status)


class _AllHooks(Hooks):
    def __init__(self, hooks: Sequence[Hooks]) -> None:
        self.hooks = tuple(hooks)

    def status_changed(self, node: str, status: Status, error: BaseException | None) -> None:
        for hooks in self.hooks:
            hooks.status_changed(node, status, error)

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        for hooks in self.hooks:
            hooks.node_retrying(node, attempt, error, delay)


def combine_hooks(
    hooks: Sequence[Hooks], on_status: Callable[[str, Status], None] | None
) -> Hooks | None:
    """One Hooks object calling all of these, or None when there are none."""
    every = [*hooks, _StatusCallback(on_status)] if on_status is not None else list(hooks)
    if not every:
        return None
    return every[0] if len(every) == 1 else _AllHooks(every)
