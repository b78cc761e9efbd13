"""Engine properties over random DAGs of inline, thread and async nodes (hypothesis)."""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import anyio
import attrs
import pytest
from conftest import BACKENDS, KINDS, make_node
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Collection

    from conftest import Kind

SETTINGS = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])


@attrs.frozen
class Dag:
    """Node ``i`` is named ``n{i}`` and reads its parents, all of lower index."""

    parents: tuple[tuple[int, ...], ...]
    kinds: tuple[Kind, ...]
    delays: tuple[float, ...]
    listed: tuple[int, ...]  # the order the nodes are given to Pipeline

    def __len__(self) -> int:
        return len(self.parents)

    def descendants(self, starts: Collection[int]) -> set[int]:
        """Nodes reachable from ``starts`` along at least one edge."""
        found: set[int] = set()
        frontier = set(starts)
        for i in range(len(self)):  # parents have lower indices: one pass suffices
            if frontier.intersection(self.parents[i]):
                found.add(i)
                frontier.add(i)
        return found


@st.composite
def dags(draw: st.DrawFn, max_nodes: int = 50, delays: tuple[float, ...] = (0.0,)) -> Dag:
    size = draw(st.integers(1, max_nodes))
    parents = tuple(
        tuple(sorted(draw(st.sets(st.integers(0, i - 1), max_size=4)))) if i else ()
        for i in range(size)
    )
    kinds = tuple(draw(st.lists(st.sampled_from(KINDS), min_size=size, max_size=size)))
    pauses = tuple(draw(st.lists(st.sampled_from(delays), min_size=size, max_size=size)))
    listed = tuple(draw(st.permutations(range(size))))
    return Dag(parents, kinds, pauses, listed)


class NodeError(Exception):
    """Raised by the nodes a test chose to fail."""


def _value(i: int, parent_values: list[int], seed: int) -> int:
    """A node's value: a deterministic function of its index, parents' values and the seed."""
    total = seed * 31 + i * 17
    for k, v in enumerate(parent_values):
        total += (k + 1) * v
    return total % 1_000_003


def _expected(dag: Dag, seed: int) -> dict[str, int]:
    values: list[int] = []
    for i, ps in enumerate(dag.parents):
        values.append(_value(i, [values[p] for p in ps], seed))
    return {f"n{i}": v for i, v in enumerate(values)}


def _build_node(
    i: int, parents: tuple[int, ...], kind: Kind, delay: float, fails: bool
) -> fd.Node[..., Any]:
    """``n{i}``, taking its parents as keyword-only parameters ``n{p}`` plus ``seed``.

    Its pause blocks (``time.sleep``) in a sync node and awaits ``anyio.sleep`` in an async
    one, so the source defines both: ``n{i}`` and ``n{i}_async``.
    """
    names = [f"n{p}" for p in parents]
    params = ", ".join([*names, "seed"])
    src = ""
    for header, suffix, pause in (("def", "", "_block"), ("async def", "_async", "await _sleep")):
        body = f"    {pause}({delay!r})\n" if delay else ""
        body += "    raise _Error(name)\n" if fails else ""
        src += f"{header} n{i}{suffix}(*, {params}):\n"
        src += f"{body}    return _value({i}, [{', '.join(names)}], seed)\n"
    namespace: dict[str, Any] = {
        "_sleep": anyio.sleep,
        "_block": time.sleep,
        "_value": _value,
        "_Error": NodeError,
        "name": f"n{i}",
    }
    exec(src, namespace)  # noqa: S102  # one signature per node: parameters name the parents
    return make_node(kind, namespace[f"n{i}"], name=f"n{i}", async_body=namespace[f"n{i}_async"])


def _pipeline(dag: Dag, failing: Collection[int] = ()) -> fd.Pipeline:
    nodes = [
        _build_node(i, dag.parents[i], dag.kinds[i], dag.delays[i], i in failing)
        for i in range(len(dag))
    ]
    # A fresh store per example: examples share a directory, and nodes of one would be
    # served from the checkpoints of another.
    return fd.Pipeline([nodes[i] for i in dag.listed], store=fd.MemoryStore())


class _StatusLog:
    def __init__(self) -> None:
        self.paths: dict[str, list[fd.Status]] = {}

    def __call__(self, name: str, status: fd.Status) -> None:
        self.paths.setdefault(name, [fd.Status.PENDING]).append(status)

    def assert_legal(self) -> None:
        for name, path in self.paths.items():
            for before, after in itertools.pairwise(path):
                assert after in fd.TRANSITIONS[before], f"{name}: illegal {before} -> {after}"
            assert path[-1].finished, f"{name} was left {path[-1]}: {path}"


class TestReadiness:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(dag=dags(delays=(0.0, 0.001, 0.003)))
    def test_nodes_start_after_their_parents_finished(self, backend: str, dag: Dag) -> None:
        result = _pipeline(dag).run(inputs={"seed": 1}, backend=backend)
        assert result.ok
        for i, ps in enumerate(dag.parents):
            for p in ps:
                assert result.started_at[f"n{i}"] >= result.finished_at[f"n{p}"], (
                    f"n{i} started before its parent n{p} finished"
                )


class TestDeterminism:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(dag=dags(delays=(0.0, 0.0, 0.002)), seed=st.integers(0, 10**6))
    def test_outputs_do_not_depend_on_concurrency(self, backend: str, dag: Dag, seed: int) -> None:
        pipe = _pipeline(dag)
        expected = _expected(dag, seed)
        for concurrency in (1, 16):
            result = pipe.run(
                inputs={"seed": seed}, concurrency=concurrency, backend=backend, cache=False
            )
            assert dict(result) == expected
        # And served from checkpoints, every value comes back the same.
        warm = pipe.run(inputs={"seed": seed}, backend=backend)
        assert dict(warm) == expected
        assert set(warm.status.values()) == {fd.Status.CACHED}


class TestCycles:
    @settings(deadline=None, max_examples=50)
    @given(data=st.data(), dag=dags())
    def test_a_back_edge_is_a_cycle_error(self, data: st.DataObject, dag: Dag) -> None:
        # Pick an ancestor and feed it from one of its descendants (or from itself).
        pairs = [(a, d) for a in range(len(dag)) for d in [a, *sorted(dag.descendants([a]))]]
        ancestor, descendant = data.draw(st.sampled_from(pairs), label="back edge")
        parents = list(dag.parents)
        parents[ancestor] = (*parents[ancestor], descendant)
        cyclic = attrs.evolve(dag, parents=tuple(parents))

        with pytest.raises(fd.CycleError) as info:
            _pipeline(cyclic)
        cycle = info.value.cycle
        assert isinstance(info.value, fd.GraphError)
        assert len(cycle) >= 2
        assert cycle[0] == cycle[-1]
        assert len(set(cycle[:-1])) == len(cycle) - 1, f"{cycle} repeats a node"
        edges = {(f"n{p}", f"n{c}") for c, ps in enumerate(parents) for p in ps}
        steps = list(itertools.pairwise(cycle))
        for step in steps:
            assert step in edges, f"{step} in {cycle} is not an edge"
        assert (f"n{descendant}", f"n{ancestor}") in steps


class TestCancellation:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(
        dag=dags(max_nodes=30, delays=(0.0, 0.002, 0.01, 0.02)),
        cancel_after=st.floats(0, 0.05),
    )
    def test_cancelling_at_any_moment_leaves_nothing_running(
        self, backend: str, dag: Dag, cancel_after: float
    ) -> None:
        pipe = _pipeline(dag)
        log = _StatusLog()

        async def main() -> bool:
            with anyio.move_on_after(cancel_after) as scope:
                await pipe.arun(inputs={"seed": 0}, on_status=log)
            return scope.cancelled_caught

        cancelled = anyio.run(main, backend=backend)
        log.assert_legal()
        final = {name: path[-1] for name, path in log.paths.items()}
        if not cancelled:
            assert final == dict.fromkeys(pipe.order, fd.Status.SUCCEEDED)
        assert set(final.values()) <= {fd.Status.SUCCEEDED, fd.Status.CANCELLED}
        for name, path in log.paths.items():
            i = int(name[1:])
            assert fd.Status.RUNNING in path
            for p in dag.parents[i]:
                assert final.get(f"n{p}") is fd.Status.SUCCEEDED, f"{name} ran before n{p}"


class TestContinueOnError:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(data=st.data(), dag=dags(delays=(0.0, 0.0, 0.002)))
    def test_exactly_the_descendants_of_failures_are_skipped(
        self, backend: str, data: st.DataObject, dag: Dag
    ) -> None:
        failing = data.draw(st.sets(st.integers(0, len(dag) - 1)), label="failing")
        skipped = dag.descendants(failing)
        failed = failing - skipped  # a failing node below another failure never runs
        log = _StatusLog()

        result = _pipeline(dag, failing).run(
            inputs={"seed": 3}, on_error="continue", on_status=log, backend=backend
        )

        def status(i: int) -> fd.Status:
            if i in skipped:
                return fd.Status.SKIPPED
            return fd.Status.FAILED if i in failed else fd.Status.SUCCEEDED

        assert dict(result.status) == {f"n{i}": status(i) for i in range(len(dag))}
        assert result.ok == (not failing)
        assert set(result.errors) == {f"n{i}" for i in failed}
        assert all(isinstance(e, NodeError) for e in result.errors.values())
        expected = _expected(dag, 3)
        assert dict(result) == {
            name: value
            for name, value in expected.items()
            if result.status[name] is fd.Status.SUCCEEDED
        }
        log.assert_legal()
        assert {name: path[-1] for name, path in log.paths.items()} == dict(result.status)


class TestFailFast:
    @pytest.mark.parametrize("backend", BACKENDS)
    # No shrinking: a timing-dependent failure shrinks for minutes. TestFailFast in
    # test_engine.py holds minimal, deterministic cases.
    @settings(SETTINGS, phases=[Phase.explicit, Phase.reuse, Phase.generate])
    @given(data=st.data(), dag=dags(max_nodes=30, delays=(0.0, 0.002, 0.01)))
    def test_first_failure_stops_the_run(self, backend: str, data: st.DataObject, dag: Dag) -> None:
        failing = data.draw(st.sets(st.integers(0, len(dag) - 1), min_size=1), label="failing")
        log = _StatusLog()
        calls: list[tuple[str, fd.Status]] = []

        def record(name: str, status: fd.Status) -> None:
            log(name, status)
            calls.append((name, status))

        with pytest.raises(fd.NodeFailed) as info:
            _pipeline(dag, failing).run(inputs={"seed": 5}, on_status=record, backend=backend)

        error = info.value
        assert type(error) is fd.NodeFailed
        assert isinstance(error.__cause__, NodeError)
        status = error.result.status
        assert status[error.node] is fd.Status.FAILED
        assert int(error.node[1:]) in failing
        # Another failing node may have raised before the cancellation reached it: it
        # failed too. The error names the first failure reported.
        failed = [n for n, s in status.items() if s is fd.Status.FAILED]
        assert all(int(n[1:]) in failing for n in failed)
        assert next(n for n, s in calls if s is fd.Status.FAILED) == error.node
        assert fd.Status.RUNNING not in status.values()
        for i in dag.descendants([int(error.node[1:])]):
            assert status[f"n{i}"] is fd.Status.PENDING
        # Nothing starts once the failure is reported.
        failed_at = calls.index((error.node, fd.Status.FAILED))
        assert fd.Status.RUNNING not in [s for _, s in calls[failed_at:]], calls
        log.assert_legal()
        assert {n: path[-1] for n, path in log.paths.items()} == {
            n: s for n, s in status.items() if s is not fd.Status.PENDING
        }
        expected = _expected(dag, 5)
        assert error.result.values == {
            n: expected[n] for n, s in status.items() if s is fd.Status.SUCCEEDED
        }
