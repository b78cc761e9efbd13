"""Code versions follow the project's code (transitively); data versions and keys are stable."""

from __future__ import annotations

import importlib.util
import itertools
import json
import sys
import textwrap
from typing import TYPE_CHECKING

import attrs
import pytest

import flowdeco as fd
from flowdeco._core._fingerprint import cache_key, code_version, data_version
from flowdeco._core._references import is_own

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

_counter = itertools.count()


def _module(tmp_path: Path, source: str) -> ModuleType:
    """Import ``source`` as a fresh module from a file, as a project module would be: under
    one name (a version names the code it reaches by module), from a new file each time."""
    name = "cache_case"
    file = tmp_path / f"{name}_{next(_counter)}.py"
    file.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


BASE = """
    import json
    import flowdeco as fd

    RATE = 0.2

    def helper(x):
        return x * 2

    class Scaler:
        def scale(self, x):
            return x * 3

    @fd.node
    def total(x):
        '''Docstring.'''
        # a comment
        return helper(x) + Scaler().scale(x) + RATE + len(json.dumps(x))
"""


def _version(tmp_path: Path, source: str) -> str:
    return code_version(_module(tmp_path, source).total).version


class TestCodeVersion:
    def test_same_code_same_version(self, tmp_path: Path) -> None:
        assert _version(tmp_path, BASE) == _version(tmp_path, BASE)

    @pytest.mark.parametrize(
        "edit",
        [
            pytest.param(("'''Docstring.'''", "'''Another docstring.'''"), id="docstring"),
            pytest.param(("# a comment", "# another comment"), id="comment"),
            pytest.param(("@fd.node\n    def total", "@fd.node()\n    def total"), id="decorator"),
            pytest.param(("return helper(x) +", "return helper(x)  +"), id="spacing"),
        ],
    )
    def test_cosmetic_edits_keep_the_version(self, tmp_path: Path, edit: tuple[str, str]) -> None:
        assert edit[0] in BASE
        assert _version(tmp_path, BASE) == _version(tmp_path, BASE.replace(*edit))

    @pytest.mark.parametrize(
        "edit",
        [
            pytest.param(("return helper(x) +", "return helper(x) - "), id="body"),
            pytest.param(("return x * 2", "return x * 4"), id="helper-function"),
            pytest.param(("return x * 3", "return x * 5"), id="helper-class-method"),
            pytest.param(("RATE = 0.2", "RATE = 0.3"), id="module-constant"),
        ],
    )
    def test_real_edits_change_the_version(self, tmp_path: Path, edit: tuple[str, str]) -> None:
        assert edit[0] in BASE
        assert _version(tmp_path, BASE) != _version(tmp_path, BASE.replace(*edit))

    def test_closure_values_count(self) -> None:
        def make(factor: int) -> fd.Node[..., int]:
            def scaled(x: int) -> int:
                return x * factor

            return fd.node(scaled)

        assert code_version(make(2)).version == code_version(make(2)).version
        assert code_version(make(2)).version != code_version(make(3)).version

    def test_rebinding_a_helper_changes_the_version(self, tmp_path: Path) -> None:
        module = _module(tmp_path, BASE)
        before = code_version(module.total).version
        assert code_version(module.total).version == before  # cached
        module.helper = lambda x: x * 10  # a notebook cell redefining the helper
        assert code_version(module.total).version != before

    def test_user_version_wins(self, tmp_path: Path) -> None:
        module = _module(tmp_path, BASE)
        assert code_version(attrs.evolve(module.total, version="v2")).version == "user:v2"

    def test_installed_code_is_not_walked(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # json belongs to the environment, not the project: replacing what it holds leaves
        # the node's version alone, while replacing a project helper does not.
        module = _module(tmp_path, BASE)
        before = code_version(module.total).version
        monkeypatch.setattr(json, "dumps", lambda value: "changed")
        assert code_version(_module(tmp_path, BASE).total).version == before
        assert not is_own(json.loads)
        assert not is_own(json.JSONEncoder)
        assert is_own(module.helper)

    def test_a_global_bound_only_at_run_time_is_not_trusted(self, tmp_path: Path) -> None:
        """A node reading a global that no one had bound when its key was taken (another
        node binds it as the run goes) is not reused across runs, with a warning; bound
        before the run starts (as in a later run of the same process), it is versioned
        by its value like any other."""
        module = _module(
            tmp_path,
            """
            import flowdeco as fd

            @fd.node(run_in="inline")
            def loaded() -> None:
                global MODEL
                MODEL = 3

            @fd.node(run_in="inline")
            def scored(x):
                return x * MODEL
            """,
        )
        pipe = fd.Pipeline([module.scored, module.loaded])  # both ready at once: no edge
        store = tmp_path / "store"
        with pytest.warns(fd.CheckpointWarning, match=r"the global 'MODEL' \(bound by nothing"):
            first = pipe.run({"x": 2}, store=store)
        assert first["scored"] == 6
        assert first.explain("scored").reason == "unversionable"
        del module.MODEL  # as in a new process
        with pytest.warns(fd.CheckpointWarning, match="MODEL"):
            again = pipe.run({"x": 2}, store=store)
        assert again.status["scored"] is fd.Status.SUCCEEDED
        bound = pipe.run({"x": 2}, store=store)  # MODEL is bound now, by the run before
        assert bound.status["scored"] is fd.Status.SUCCEEDED  # a new version: with MODEL
        assert pipe.run({"x": 2}, store=store).status["scored"] is fd.Status.CACHED


class TestKeys:
    def test_data_version_is_a_hash_of_bytes(self) -> None:
        assert data_version(b"abc") == data_version(b"abc")
        assert data_version(b"abc") != data_version(b"abd")

    def test_key_depends_on_name_code_and_inputs_not_their_order(self) -> None:
        key = cache_key("n", "c", [("a", "1"), ("b", "2")])
        assert key == cache_key("n", "c", [("b", "2"), ("a", "1")])
        assert key != cache_key("m", "c", [("a", "1"), ("b", "2")])
        assert key != cache_key("n", "d", [("a", "1"), ("b", "2")])
        assert key != cache_key("n", "c", [("a", "1"), ("b", "3")])
        assert len(key) == 40 and int(key, 16) >= 0
