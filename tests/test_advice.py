"""Every piece of advice a warning gives works as written (issue 18): each test takes the
warning's own words, applies exactly that, and checks the warning is gone and the fix does
what it says. The codec's advice (``register_type``, ``checkpoint=False``) is tested in
test_codec.py."""

from __future__ import annotations

import io
import re
import warnings
from typing import TYPE_CHECKING

import pytest

import flowdeco as fd

if TYPE_CHECKING:
    from pathlib import Path

S = fd.Status


class _Unversionable:
    """Holds an ``io.StringIO``: no version can be made of it."""

    def __init__(self) -> None:
        self.buffer = io.StringIO("3")

    def factor(self) -> int:
        return int(self.buffer.getvalue())


HELPER = _Unversionable()


def _advice(caught: list[warnings.WarningMessage]) -> str:
    (warning,) = [w for w in caught if issubclass(w.category, fd.CheckpointWarning)]
    return str(warning.message)


def _run_quietly(pipe: fd.Pipeline, **options: object) -> fd.RunResult:
    """A run that must give no warning at all."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return pipe.run(**options)  # type: ignore[arg-type]


class TestUnversionableDependency:
    """'... cannot be versioned, so it is not reused across runs; give the node
    version="..." to vouch for its code and data yourself, or cache=False to run it every
    time without this warning'."""

    def _warned(self, tmp_path: Path) -> str:
        @fd.node(run_in="inline")
        def scaled(x: int) -> int:
            return x * HELPER.factor()

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fd.Pipeline([scaled]).run({"x": 1}, store=tmp_path / "warned")
        return _advice(caught)

    def test_version_as_advised_makes_it_reused_without_warning(self, tmp_path: Path) -> None:
        advice = self._warned(tmp_path)
        suggested = re.search(r'give the node (version="[^"]*")', advice)
        assert suggested is not None, advice

        @fd.node(run_in="inline", version="...")  # the advice, literally
        def scaled(x: int) -> int:
            return x * HELPER.factor()

        pipe = fd.Pipeline([scaled], store=tmp_path / "store")
        first = _run_quietly(pipe, inputs={"x": 1})
        second = _run_quietly(pipe, inputs={"x": 1})
        assert (first["scaled"], second["scaled"]) == (3, 3)
        assert second.status["scaled"] is S.CACHED

    def test_cache_false_as_advised_runs_it_every_time_without_warning(
        self, tmp_path: Path
    ) -> None:
        advice = self._warned(tmp_path)
        assert "or cache=False to run it every time without this warning" in advice

        @fd.node(run_in="inline", cache=False)
        def scaled(x: int) -> int:
            return x * HELPER.factor()

        pipe = fd.Pipeline([scaled], store=tmp_path / "store")
        runs = [_run_quietly(pipe, inputs={"x": 1}) for _ in range(2)]
        assert [r.status["scaled"] for r in runs] == [S.SUCCEEDED, S.SUCCEEDED]


@fd.node(run_in="inline")
def orders() -> list[int]:
    return [1, 2, 3]


class TestAParameterOneTypoFromANode:
    """'... did you mean node 'orders'? To read that node, name the parameter 'orders' (or
    rename it with @fd.node(inputs={'ordres': 'orders'})); if 'ordres' is meant as an
    input, rename it further from the node's name'."""

    def _advice(self) -> str:
        def total(ordres: list[int] | None = None) -> int:
            return sum(ordres or [])

        with pytest.warns(fd.GraphWarning) as caught:
            fd.Pipeline([orders, fd.node(run_in="inline")(total)], store=None)
        return str(caught[0].message)

    def test_renaming_the_parameter_as_advised(self) -> None:
        assert "name the parameter 'orders'" in self._advice()

        @fd.node(run_in="inline")
        def total(orders: list[int] | None = None) -> int:
            return sum(orders or [])

        assert _run_quietly(fd.Pipeline([orders, total], store=None))["total"] == 6

    def test_the_inputs_rename_as_advised(self) -> None:
        advice = self._advice()
        suggested = re.search(r"@fd\.node\(inputs=(\{.*?\})\)", advice)
        assert suggested is not None, advice
        inputs = eval(suggested.group(1))  # the advice, literally: {'ordres': 'orders'}

        def total(ordres: list[int] | None = None) -> int:
            return sum(ordres or [])

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe = fd.Pipeline([orders, fd.node(run_in="inline", inputs=inputs)(total)])
        assert _run_quietly(pipe, store=None)["total"] == 6

    def test_a_name_further_from_the_node_as_advised(self) -> None:
        assert "rename it further from the node's name" in self._advice()

        @fd.node(run_in="inline")
        def total(extra_orders: list[int] | None = None) -> int:
            return sum(extra_orders or [])

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            pipe = fd.Pipeline([orders, total], store=None)
        assert _run_quietly(pipe, inputs={"extra_orders": [4]})["total"] == 4


class TestMissingInputs:
    """'missing required input: 'x', needed by 'doubled'; pass them with
    run(inputs={...})'."""

    def test_passing_them_as_advised(self) -> None:
        @fd.node(run_in="inline")
        def doubled(x: int) -> int:
            return 2 * x

        pipe = fd.Pipeline([doubled], store=None)
        with pytest.raises(fd.MissingInputsError, match=r"pass them with run\(inputs=\{\.\.\.\}\)"):
            pipe.run()
        assert pipe.run(inputs={"x": 2})["doubled"] == 4
