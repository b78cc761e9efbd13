"""Reuse across runs is never stale: after an edit, what depends on it re-runs; nothing else.

Each test writes a small real project in its ``tmp_path`` (helper modules, a package, a
``flow.py`` holding the nodes), runs its pipeline in a new process with a file store,
edits a file for real, and runs it again in another new process, as a user editing code
between two runs does. The second run must re-run exactly the nodes whose code or inputs
changed, with the value the edited code computes (status ``succeeded``), and serve every
other node from its checkpoint (status ``cached``) with its old value.

Every process runs with ``PYTHONDONTWRITEBYTECODE=1``, so it compiles the source on disk
and never a ``.pyc`` left by the previous one (whose key, mtime and size, may not see an
edit that keeps the size), and with a different ``PYTHONHASHSEED`` each run, as separate
processes have, unless a test fixes the seeds.

The last test is a property: random projects, random edits, and the values of the second
run compared with a run of the edited project without any store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

if TYPE_CHECKING:
    from collections.abc import Mapping

    import pytest

SCRIPT = Path(__file__).parent / "scripts" / "reuse_run.py"
X = 10  # the external input ``x`` of every project but the CSV one


class Outcome(dict[str, list[Any]]):
    """One run: ``{node: [status, value]}``, plus the warnings it raised."""

    def __init__(self, nodes: Mapping[str, list[Any]], warnings: list[list[str]]) -> None:
        super().__init__(nodes)
        self.warnings = [(category, message) for category, message in warnings]

    def checkpoint_warnings(self) -> list[str]:
        """The messages of the ``CheckpointWarning``s the run raised."""
        return [message for category, message in self.warnings if category == "CheckpointWarning"]


class Project:
    """A project directory on disk, and runs of its pipeline, each in a new process.

    The modules live in ``root/project`` (the working directory and ``PYTHONPATH`` of each
    run); the checkpoints in ``root/store``. The pipeline is ``from_module(module)``.
    """

    def __init__(self, root: Path, module: str = "flow") -> None:
        self.dir = root / "project"
        self.store = root / "store"
        self.module = module
        self.runs = 0
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, relpath: str) -> Path:
        return self.dir / relpath

    def write(self, relpath: str, source: str) -> None:
        """Write a file (dedented), creating its directories."""
        file = self.path(relpath)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(textwrap.dedent(source).lstrip("\n"))
        self._forget_bytecode()

    def edit(self, relpath: str, old: str, new: str) -> None:
        """Replace the one occurrence of ``old`` in a file by ``new``, as an editor would."""
        file = self.path(relpath)
        text = file.read_text()
        found = text.count(old)
        assert found == 1, f"test bug: {old!r} occurs {found} times in {relpath}, not once"
        file.write_text(text.replace(old, new))
        self._forget_bytecode()

    def age(self, relpath: str, seconds: float) -> None:
        """Set a file's modification time ``seconds`` into the past."""
        then = time.time() - seconds
        os.utime(self.path(relpath), (then, then))

    def _forget_bytecode(self) -> None:
        # Runs write no bytecode; this only guards against a cache from anywhere else.
        for cache in self.dir.rglob("__pycache__"):
            shutil.rmtree(cache)

    def run(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        store: bool = True,
        hash_seed: int | None = None,
    ) -> Outcome:
        """Run the pipeline once in a new process; ``store=False`` runs with ``store=None``.

        ``inputs`` defaults to ``{"x": X}``; a ``Path`` input is passed on as a ``Path``.
        Each run gets hash seed 1, 2, 3, ... in turn unless ``hash_seed`` is given.
        """
        self.runs += 1
        encoded = {
            name: {"$path": str(value)} if isinstance(value, Path) else value
            for name, value in ({"x": X} if inputs is None else inputs).items()
        }
        config = {
            "module": self.module,
            "inputs": encoded,
            "store": str(self.store) if store else None,
        }
        out = self.dir.parent / f"run-{self.runs}.json"
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(self.dir), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": str(self.runs if hash_seed is None else hash_seed),
        }
        done = subprocess.run(
            [sys.executable, str(SCRIPT), json.dumps(config), str(out)],
            cwd=self.dir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, f"run {self.runs} failed:\n{done.stdout}\n{done.stderr}"
        report = json.loads(out.read_text())
        return Outcome(report["nodes"], report["warnings"])


def assert_ran(outcome: Outcome, values: Mapping[str, Any]) -> None:
    """Every node ran (status ``succeeded``), and the nodes and their values are ``values``."""
    assert outcome == {name: ["succeeded", value] for name, value in values.items()}


def assert_reran(before: Outcome, after: Outcome, reran: Mapping[str, Any]) -> None:
    """``after`` re-ran exactly the nodes of ``reran``, which computed these new values;
    every other node of ``before`` came from its checkpoint with its value of ``before``.
    """
    expected = {name: ["cached", value] for name, (_, value) in before.items()}
    expected.update({name: ["succeeded", value] for name, value in reran.items()})
    problems = []
    for name in sorted(expected.keys() | after.keys()):
        want, got = expected.get(name), after.get(name)
        if want == got:
            continue
        if want is None or got is None:
            problems.append(f"{name}: expected {want}, got {got}")
        elif want[0] == "succeeded" and got[0] == "cached":
            problems.append(
                f"{name}: STALE: served from the cache with {got[1]!r}, but it must run"
                f" (expected value {want[1]!r})"
            )
        elif want[0] == "cached" and got[0] == "succeeded":
            problems.append(
                f"{name}: re-ran (value {got[1]!r}) although nothing it depends on changed"
            )
        else:
            problems.append(f"{name}: expected {want[0]} {want[1]!r}, got {got[0]} {got[1]!r}")
    assert not problems, "\n".join([*problems, f"warnings of the run: {after.warnings}"])


class TestHelpers:
    def test_edited_helper_called_through_a_module_attribute_reruns(self, tmp_path: Path) -> None:
        """``import utils; utils.attr_helper(x)``: editing attr_helper's body re-runs the node
        (and its child, which gets the new value); a node calling another helper of the
        same module through the same attribute is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            def attr_helper(x):
                return x + 1


            def other_helper(x):
                return x * 100
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            import utils


            @fd.node
            def via_attribute(x):
                return utils.attr_helper(x)


            @fd.node
            def child(via_attribute):
                return via_attribute * 2


            @fd.node
            def via_other_attribute(x):
                return utils.other_helper(x)


            @fd.node
            def plain(x):
                return x - 1
            """,
        )
        first = p.run()
        assert_ran(
            first, {"via_attribute": 11, "child": 22, "via_other_attribute": 1000, "plain": 9}
        )
        p.edit("utils.py", "return x + 1", "return x + 2")
        assert_reran(first, p.run(), {"via_attribute": 12, "child": 24})

    def test_edited_helper_imported_by_name_reruns(self, tmp_path: Path) -> None:
        """``from utils import direct_helper``: editing its body re-runs the node that calls
        it, and only that node. (A control: the harness sees what flowdeco has long done.)
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            def direct_helper(x):
                return x + 1


            def steady_helper(x):
                return x * 100
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            from utils import direct_helper, steady_helper


            @fd.node
            def direct(x):
                return direct_helper(x)


            @fd.node
            def steady(x):
                return steady_helper(x)
            """,
        )
        first = p.run()
        assert_ran(first, {"direct": 11, "steady": 1000})
        p.edit("utils.py", "return x + 1", "return x + 2")
        assert_reran(first, p.run(), {"direct": 12})

    def test_attribute_chains_through_a_package_and_module_constants(self, tmp_path: Path) -> None:
        """``import pkg.mod; pkg.mod.f(x)`` and ``utils.CONST`` read by attribute: editing
        ``f``'s body or the constant's value re-runs the node that reads it; nodes reading a
        sibling function or constant are reused.
        """
        p = Project(tmp_path)
        p.write("pkg/__init__.py", "")
        p.write(
            "pkg/mod.py",
            """
            def f(x):
                return x * 2


            def g(x):
                return x * 3
            """,
        )
        p.write(
            "utils.py",
            """
            CONST = 5
            OTHER = 7
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            import pkg.mod
            import utils


            @fd.node
            def via_package(x):
                return pkg.mod.f(x)


            @fd.node
            def via_package_sibling(x):
                return pkg.mod.g(x)


            @fd.node
            def via_constant(x):
                return x + utils.CONST


            @fd.node
            def via_other_constant(x):
                return x + utils.OTHER
            """,
        )
        first = p.run()
        assert_ran(
            first,
            {
                "via_package": 20,
                "via_package_sibling": 30,
                "via_constant": 15,
                "via_other_constant": 17,
            },
        )
        p.edit("pkg/mod.py", "return x * 2", "return x * 4")
        p.edit("utils.py", "CONST = 5", "CONST = 6")
        assert_reran(first, p.run(), {"via_package": 40, "via_constant": 16})


class TestConstants:
    def test_container_constants_are_versioned_by_value(self, tmp_path: Path) -> None:
        """A dict, list, tuple, set, frozenset and nested constant: changing one's value
        re-runs the node that reads it; a node reading an unchanged dict is reused.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import flowdeco as fd

            CONFIG = {"k": 1}
            ITEMS = [1, 2]
            PAIR = (1, 2)
            TAGS = {1, 2}
            FROZEN = frozenset({1, 2})
            NESTED = {"a": [1, 2], "b": [3]}
            STEADY = {"k": 10}


            @fd.node
            def from_dict(x):
                return x * CONFIG["k"]


            @fd.node
            def from_list(x):
                return x + sum(ITEMS)


            @fd.node
            def from_tuple(x):
                return x + sum(PAIR)


            @fd.node
            def from_set(x):
                return x + sum(TAGS)


            @fd.node
            def from_frozenset(x):
                return x + sum(FROZEN)


            @fd.node
            def from_nested(x):
                return x + sum(NESTED["a"]) + sum(NESTED["b"])


            @fd.node
            def steady(x):
                return x + STEADY["k"]
            """,
        )
        first = p.run()
        assert_ran(
            first,
            {
                "from_dict": 10,
                "from_list": 13,
                "from_tuple": 13,
                "from_set": 13,
                "from_frozenset": 13,
                "from_nested": 16,
                "steady": 20,
            },
        )
        p.edit("flow.py", 'CONFIG = {"k": 1}', 'CONFIG = {"k": 3}')
        p.edit("flow.py", "ITEMS = [1, 2]", "ITEMS = [1, 2, 3]")
        p.edit("flow.py", "PAIR = (1, 2)", "PAIR = (1, 5)")
        p.edit("flow.py", "TAGS = {1, 2}", "TAGS = {1, 2, 4}")
        p.edit("flow.py", "FROZEN = frozenset({1, 2})", "FROZEN = frozenset({1, 7})")
        p.edit("flow.py", '"b": [3]', '"b": [3, 4]')
        assert_reran(
            first,
            p.run(),
            {
                "from_dict": 30,
                "from_list": 16,
                "from_tuple": 16,
                "from_set": 17,
                "from_frozenset": 18,
                "from_nested": 20,
            },
        )

    def test_sets_of_strings_keep_their_version_across_hash_seeds(self, tmp_path: Path) -> None:
        """A ``frozenset`` (and a ``set``) of strings iterates in an order that depends on the
        process's hash seed; with no edit, a run under another seed reuses every node.
        Seeds 1 and 2 order ``{"a", "b"}`` differently on CPython, so a version made of the
        iteration order changes between these two runs.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import flowdeco as fd

            NAMES = frozenset({"a", "b"})
            LABELS = {"x", "y", "z"}


            @fd.node
            def names(x):
                return x + len(NAMES)


            @fd.node
            def labels(x):
                return x + len(LABELS)
            """,
        )
        first = p.run(hash_seed=1)
        assert_ran(first, {"names": 12, "labels": 13})
        assert_reran(first, p.run(hash_seed=2), {})


class TestClasses:
    def test_instances_follow_their_class_their_bases_and_their_state(self, tmp_path: Path) -> None:
        """Module-level instances used by nodes (``scaler.scale(x)``): editing a method's
        body, a property's body, a class attribute's value, a method of a base class defined
        in another module, or the state the instance is built with re-runs the node using
        that instance; a node using an untouched instance is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            class Base:
                def offset(self):
                    return 1
            """,
        )
        p.write(
            "models.py",
            """
            import utils


            class Scaler:
                def scale(self, x):
                    return x * 2


            class Bonus:
                @property
                def amount(self):
                    return 5


            class Unit:
                size = 100

                def apply(self, x):
                    return x + self.size


            class Offset(utils.Base):
                pass


            class Factor:
                def __init__(self, factor):
                    self.factor = factor

                def apply(self, x):
                    return x * self.factor


            class Steady:
                def apply(self, x):
                    return x - 1


            scaler = Scaler()
            bonus = Bonus()
            unit = Unit()
            offset = Offset()
            factor = Factor(factor=2)
            steady = Steady()
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            from models import bonus, factor, offset, scaler, steady, unit


            @fd.node
            def by_method(x):
                return scaler.scale(x)


            @fd.node
            def by_property(x):
                return x + bonus.amount


            @fd.node
            def by_class_attribute(x):
                return unit.apply(x)


            @fd.node
            def by_base_method(x):
                return x + offset.offset()


            @fd.node
            def by_state(x):
                return factor.apply(x)


            @fd.node
            def unchanged(x):
                return steady.apply(x)
            """,
        )
        first = p.run()
        assert_ran(
            first,
            {
                "by_method": 20,
                "by_property": 15,
                "by_class_attribute": 110,
                "by_base_method": 11,
                "by_state": 20,
                "unchanged": 9,
            },
        )
        p.edit("models.py", "return x * 2", "return x * 4")
        p.edit("models.py", "return 5", "return 6")
        p.edit("models.py", "size = 100", "size = 200")
        p.edit("utils.py", "return 1", "return 3")
        p.edit("models.py", "Factor(factor=2)", "Factor(factor=3)")
        assert_reran(
            first,
            p.run(),
            {
                "by_method": 40,
                "by_property": 16,
                "by_class_attribute": 210,
                "by_base_method": 13,
                "by_state": 30,
            },
        )


class TestCallables:
    def test_functions_held_in_containers(self, tmp_path: Path) -> None:
        """``OPS["double"](x)`` with a lambda in a dict, and named functions in a list:
        editing the lambda, or one of the listed functions, re-runs the node that calls it;
        a node using another container is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            def add_one(x):
                return x + 1


            def triple(x):
                return x * 3


            OPS = {
                "double": lambda x: x * 2,
                "negate": lambda x: -x,
            }
            STEPS = [add_one, triple]
            OTHER_OPS = {"square": lambda x: x * x}
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            from utils import OPS, OTHER_OPS, STEPS


            @fd.node
            def doubled(x):
                return OPS["double"](x)


            @fd.node
            def stepped(x):
                for step in STEPS:
                    x = step(x)
                return x


            @fd.node
            def squared(x):
                return OTHER_OPS["square"](x)
            """,
        )
        first = p.run()
        assert_ran(first, {"doubled": 20, "stepped": 33, "squared": 100})
        p.edit("utils.py", "lambda x: x * 2", "lambda x: x * 5")
        p.edit("utils.py", "return x + 1", "return x + 2")
        assert_reran(first, p.run(), {"doubled": 50, "stepped": 36})

    def test_decorated_helpers(self, tmp_path: Path) -> None:
        """A helper decorated with a ``functools.wraps`` decorator of the project: editing
        the wrapped function's body re-runs its caller, and so does editing what the
        decorator's wrapper computes; a caller of another decorated helper is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            import functools


            def logged(func):
                @functools.wraps(func)
                def wrapper(*args, **kwargs):
                    return func(*args, **kwargs)

                return wrapper


            def tenfold(func):
                @functools.wraps(func)
                def wrapper(*args, **kwargs):
                    return func(*args, **kwargs) * 10

                return wrapper


            @logged
            def decorated(x):
                return x + 1


            @tenfold
            def amplified(x):
                return x + 2


            @logged
            def untouched(x):
                return x - 1
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            from utils import amplified, decorated, untouched


            @fd.node
            def uses_decorated(x):
                return decorated(x)


            @fd.node
            def uses_amplified(x):
                return amplified(x)


            @fd.node
            def uses_untouched(x):
                return untouched(x)
            """,
        )
        first = p.run()
        assert_ran(first, {"uses_decorated": 11, "uses_amplified": 120, "uses_untouched": 9})
        p.edit("utils.py", "return x + 1", "return x + 5")
        p.edit("utils.py", "* 10", "* 20")
        assert_reran(first, p.run(), {"uses_decorated": 15, "uses_amplified": 240})

    def test_partials(self, tmp_path: Path) -> None:
        """``functools.partial(helper, 2)`` as a module global: editing the helper's body, or
        the partial's arguments, re-runs the node calling the partial; a node calling an
        untouched partial is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            def times_plus(k, x):
                return k * x + 1


            def multiply(k, x):
                return k * x


            def subtract(k, x):
                return x - k
            """,
        )
        p.write(
            "flow.py",
            """
            import functools

            import flowdeco as fd
            from utils import multiply, subtract, times_plus

            TWICE_PLUS = functools.partial(times_plus, 2)
            THRICE = functools.partial(multiply, 3)
            LESS = functools.partial(subtract, 1)


            @fd.node
            def twice_plus(x):
                return TWICE_PLUS(x)


            @fd.node
            def thrice(x):
                return THRICE(x)


            @fd.node
            def less(x):
                return LESS(x)
            """,
        )
        first = p.run()
        assert_ran(first, {"twice_plus": 21, "thrice": 30, "less": 9})
        p.edit("utils.py", "return k * x + 1", "return k * x + 7")
        p.edit("flow.py", "functools.partial(multiply, 3)", "functools.partial(multiply, 4)")
        assert_reran(first, p.run(), {"twice_plus": 27, "thrice": 40})

    def test_default_argument_values_of_helpers(self, tmp_path: Path) -> None:
        """``def helper(x, k=2)`` -> ``k=3`` re-runs the node calling it, and so does changing
        a constant that a default is taken from (``k=FACTOR``, evaluated when the helper is
        defined); a caller of a helper with an untouched default is reused.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            """
            FACTOR = 2


            def with_default(x, k=2):
                return x * k


            def with_named_default(x, k=FACTOR):
                return x + k


            def unchanged_default(x, k=7):
                return x + k
            """,
        )
        p.write(
            "flow.py",
            """
            import flowdeco as fd
            from utils import unchanged_default, with_default, with_named_default


            @fd.node
            def literal_default(x):
                return with_default(x)


            @fd.node
            def named_default(x):
                return with_named_default(x)


            @fd.node
            def untouched_default(x):
                return unchanged_default(x)
            """,
        )
        first = p.run()
        assert_ran(first, {"literal_default": 20, "named_default": 12, "untouched_default": 17})
        p.edit("utils.py", "def with_default(x, k=2)", "def with_default(x, k=3)")
        p.edit("utils.py", "FACTOR = 2", "FACTOR = 5")
        assert_reran(first, p.run(), {"literal_default": 30, "named_default": 15})

    def test_closures_of_node_factories(self, tmp_path: Path) -> None:
        """Nodes built by a factory (``make(k, name)`` defining ``@fd.node(name=name)``
        closing over ``k``): changing the ``k`` passed in the source re-runs that node, as
        does changing a list it closes over; a node built with unchanged values is reused.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import flowdeco as fd


            def make(k, name):
                @fd.node(name=name)
                def scaled(x):
                    return x * k

                return scaled


            def make_sum(items, name):
                @fd.node(name=name)
                def summed(x):
                    return x + sum(items)

                return summed


            by_two = make(2, "by_two")
            by_five = make(5, "by_five")
            listed = make_sum([1, 2], "listed")
            """,
        )
        first = p.run()
        assert_ran(first, {"by_two": 20, "by_five": 50, "listed": 13})
        p.edit("flow.py", 'make(2, "by_two")', 'make(3, "by_two")')
        p.edit("flow.py", 'make_sum([1, 2], "listed")', 'make_sum([1, 2, 3], "listed")')
        assert_reran(first, p.run(), {"by_two": 30, "listed": 16})


class TestEditsThatChangeNothing:
    def test_comments_docstrings_formatting_and_unrelated_code_rerun_nothing(
        self, tmp_path: Path
    ) -> None:
        """Comments added, docstrings changed, code reformatted (line breaks, spacing) in
        helpers, methods, constants, a lambda and the nodes themselves, and a function added
        to the helpers' module that no node uses: the next run re-runs nothing.
        """
        p = Project(tmp_path)
        p.write(
            "utils.py",
            '''
            """Helpers."""


            def attr_helper(x):
                """Add one."""
                return x + 1


            def direct_helper(x):
                return x * 2


            class Scaler:
                unit = 3

                def scale(self, x):
                    return x * self.unit


            scaler = Scaler()
            CONFIG = {"k": 1, "j": 2}
            OPS = {"double": lambda x: x * 2}
            ''',
        )
        p.write(
            "flow.py",
            '''
            import flowdeco as fd
            import utils
            from utils import OPS, direct_helper, scaler


            @fd.node
            def via_attribute(x):
                """A node."""
                return utils.attr_helper(x)


            @fd.node
            def via_import(x):
                return direct_helper(x) + utils.CONFIG["k"]


            @fd.node
            def via_instance(x):
                return scaler.scale(x)


            @fd.node
            def via_container(x):
                return OPS["double"](x) + utils.CONFIG["j"]
            ''',
        )
        first = p.run()
        assert_ran(
            first, {"via_attribute": 11, "via_import": 21, "via_instance": 30, "via_container": 22}
        )
        # Comments.
        p.edit("utils.py", "def attr_helper(x):", "# Above.\ndef attr_helper(x):  # beside")
        p.edit(
            "utils.py", "return x * self.unit", "# inside a method\n        return x * self.unit"
        )
        p.edit("flow.py", "def via_import(x):", "def via_import(x):\n    # inside a node")
        # Docstrings.
        p.edit("utils.py", '"""Helpers."""', '"""Helpers, documented at length."""')
        p.edit("utils.py", '"""Add one."""', '"""Add one to ``x``."""')
        p.edit("flow.py", '"""A node."""', '"""A node, documented."""')
        # Formatting.
        p.edit("utils.py", "return x * 2", "return (\n        x\n        * 2\n    )")
        p.edit("utils.py", "unit = 3", "unit  =  3")
        p.edit("utils.py", 'CONFIG = {"k": 1, "j": 2}', 'CONFIG = {\n    "k": 1,\n    "j": 2,\n}')
        p.edit("utils.py", "lambda x: x * 2", "lambda x:  x*2")
        p.edit("flow.py", "return scaler.scale(x)", "return scaler.scale( x )")
        # Unrelated code.
        p.edit(
            "utils.py",
            "scaler = Scaler()",
            "def unrelated(y):\n    return y - 1\n\n\nscaler = Scaler()",
        )
        assert_reran(first, p.run(), {})


class TestOutsideState:
    def test_a_path_input_is_versioned_by_the_file_content(self, tmp_path: Path) -> None:
        """``run({"source": Path("orders.csv")})`` with a node summing the CSV's column:
        unchanged, the file's node is reused; after the CSV is edited (same size, another
        past mtime), it re-runs with the new total, and so does its child.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import csv

            import flowdeco as fd


            @fd.node
            def total(source):
                with source.open(newline="") as file:
                    return sum(int(row["qty"]) for row in csv.DictReader(file))


            @fd.node
            def doubled(total):
                return total * 2


            @fd.node
            def unrelated(x):
                return x + 1
            """,
        )
        p.write("orders.csv", "sku,qty\na,1\nb,2\n")
        p.age("orders.csv", 20)  # a file written this instant may well be hashed again
        inputs = {"source": Path("orders.csv"), "x": X}
        first = p.run(inputs)
        assert_ran(first, {"total": 3, "doubled": 6, "unrelated": 11})
        assert_reran(first, p.run(inputs), {})
        p.edit("orders.csv", "a,1", "a,7")
        p.age("orders.csv", 10)
        assert_reran(first, p.run(inputs), {"total": 9, "doubled": 18})

    def test_effects_run_every_time_unless_cache_is_asked_for(self, tmp_path: Path) -> None:
        """A node annotated ``-> None`` that appends to a file is an effect: the next run
        runs it again (the line is appended again). With ``@fd.node(cache=True)`` it is
        reused like any node.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import flowdeco as fd


            @fd.node
            def record(x) -> None:
                with open("effects.log", "a") as log:
                    log.write(f"record {x}\\n")


            @fd.node(cache=True)
            def record_cached(x) -> None:
                with open("cached-effects.log", "a") as log:
                    log.write(f"record {x}\\n")


            @fd.node
            def value(x):
                return x + 1
            """,
        )
        first = p.run()
        assert_ran(first, {"record": None, "record_cached": None, "value": 11})
        assert_reran(first, p.run(), {"record": None})
        assert p.path("effects.log").read_text() == "record 10\nrecord 10\n"
        assert p.path("cached-effects.log").read_text() == "record 10\n"

    def test_objects_that_cannot_be_versioned_are_never_reused(self, tmp_path: Path) -> None:
        """A node using a module-level instance whose state holds an ``io.StringIO`` (the
        codec cannot pack it, so no version can be made of it) is not reused: it runs on every run, and each run warns
        with a ``CheckpointWarning`` naming the object. The same on a ``cache=False`` node
        gives no warning: that node is never reused anyway.
        """
        p = Project(tmp_path)
        p.write(
            "flow.py",
            """
            import io

            import flowdeco as fd


            class Guarded:
                def __init__(self, factor):
                    self.buffer = io.StringIO(str(factor))

                def apply(self, x):
                    return x * int(self.buffer.getvalue())


            locked_scaler = Guarded(2)
            other_locked = Guarded(3)


            @fd.node
            def uses_lock(x):
                return locked_scaler.apply(x)


            @fd.node(cache=False)
            def uncached_uses_lock(x):
                return other_locked.apply(x)


            @fd.node
            def steady(x):
                return x + 1
            """,
        )
        first = p.run()
        assert_ran(first, {"uses_lock": 20, "uncached_uses_lock": 30, "steady": 11})
        second = p.run()
        assert_reran(first, second, {"uses_lock": 20, "uncached_uses_lock": 30})
        for outcome in (first, second):
            messages = outcome.checkpoint_warnings()
            assert any("locked_scaler" in m for m in messages), (
                f"no CheckpointWarning names locked_scaler; warnings: {outcome.warnings}"
            )
            assert not [m for m in messages if "other_locked" in m or "uncached_uses_lock" in m], (
                f"a cache=False node was warned about; warnings: {outcome.warnings}"
            )


# The property: random projects, random edits, never a stale value.


@attrs.define
class Module:
    """A generated helper module ``m<i>``: what its source says, as numbers."""

    const: int  # C<i> = const
    items: list[int]  # L<i> = items
    table: int  # D<i> = {"v": table}
    helper: tuple[int, int]  # h<i>(x): return x * a + b
    caller: int  # g<i>(x): h<i>(x) + C<i> + caller; m<i-1>.h<i-1>(x) + caller if i > 0
    method: tuple[int, int]  # K<i>.f(self, x): return x * a - b + self.base
    base: int  # k<i> = K<i>(base)
    comments: list[str] = attrs.field(factory=list)

    def source(self, index: int) -> str:
        a, b = self.helper
        ma, mb = self.method
        calls = f"m{index - 1}.h{index - 1}(x)" if index else f"h{index}(x) + C{index}"
        lines = [
            *([f"import m{index - 1}"] if index else []),
            f"C{index} = {self.const}",
            f"L{index} = {self.items!r}",
            f'D{index} = {{"v": {self.table}}}',
            "",
            f"def h{index}(x):",
            f"    return x * {a} + {b}",
            "",
            f"def g{index}(x):",
            f"    return {calls} + {self.caller}",
            "",
            f"class K{index}:",
            "    def __init__(self, base):",
            "        self.base = base",
            "",
            "    def f(self, x):",
            f"        return x * {ma} - {mb} + self.base",
            "",
            f"k{index} = K{index}({self.base})",
            *(f"# {comment}" for comment in self.comments),
        ]
        return "\n".join(lines) + "\n"


def flow_source(count: int) -> str:
    """The nodes: for each module, its helpers called directly and through the module's
    attribute, its constants and containers, its instance's method, and a child node.
    """
    lines = ["import flowdeco as fd"]
    for i in range(count):
        lines += [f"import m{i}", f"from m{i} import L{i}, g{i}, k{i}"]
    for i in range(count):
        lines += [
            "",
            "@fd.node",
            f"def attr_{i}(x):",
            f"    return m{i}.h{i}(x) + m{i}.C{i}",
            "",
            "@fd.node",
            f"def direct_{i}(x):",
            f"    return g{i}(x)",
            "",
            "@fd.node",
            f"def data_{i}(x):",
            f'    return x + sum(L{i}) + m{i}.D{i}["v"]',
            "",
            "@fd.node",
            f"def method_{i}(x):",
            f"    return k{i}.f(x)",
            "",
            "@fd.node",
            f"def child_{i}(attr_{i}, method_{i}):",
            f"    return attr_{i} * 2 - method_{i}",
        ]
    return "\n".join(lines) + "\n"


small = st.integers(0, 9)
modules = st.builds(
    Module,
    const=small,
    items=st.lists(small, min_size=1, max_size=3),
    table=small,
    helper=st.tuples(small, small),
    caller=small,
    method=st.tuples(small, small),
    base=small,
)


@st.composite
def edit(draw: st.DrawFn, count: int) -> tuple[int, str, Any]:
    """One edit: which module, what it changes, the new value."""
    index = draw(st.integers(0, count - 1))
    kind, value = draw(
        st.one_of(
            st.tuples(st.just("const"), small),
            st.tuples(st.just("items"), st.lists(small, min_size=1, max_size=3)),
            st.tuples(st.just("table"), small),
            st.tuples(st.just("helper"), st.tuples(small, small)),
            st.tuples(st.just("caller"), small),
            st.tuples(st.just("method"), st.tuples(small, small)),
            st.tuples(st.just("base"), small),
            st.tuples(st.just("comment"), st.sampled_from(["note", "TODO: more", "x * 2"])),
        )
    )
    return index, kind, value


@st.composite
def projects(draw: st.DrawFn) -> tuple[list[Module], list[tuple[int, str, Any]]]:
    """Two or three helper modules, and one to four edits of them."""
    count = draw(st.integers(2, 3))
    generated = draw(st.lists(modules, min_size=count, max_size=count))
    edits = draw(st.lists(edit(count), min_size=1, max_size=4))
    return generated, edits


@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate])
@given(case=projects())
def test_reuse_after_random_edits_is_never_stale(
    tmp_path_factory: pytest.TempPathFactory,
    case: tuple[list[Module], list[tuple[int, str, Any]]],
) -> None:
    """Run a generated project, apply random edits (constants, container values, helper
    expressions, a method body, an instance's state, comments), and run it again: every
    node's value equals what the edited project computes when run without a store.
    (No shrinking: each example starts three processes.)
    """
    generated = [attrs.evolve(m, comments=list(m.comments)) for m in case[0]]
    edits = case[1]
    p = Project(tmp_path_factory.mktemp("reuse"))
    for index, module in enumerate(generated):
        p.write(f"m{index}.py", module.source(index))
    p.write("flow.py", flow_source(len(generated)))
    p.run()
    for index, kind, value in edits:
        module = generated[index]
        if kind == "comment":
            module.comments.append(value)
        else:
            setattr(module, kind, value)
        p.write(f"m{index}.py", module.source(index))
    reused = p.run()
    fresh = p.run(store=False)
    assert {name: value for name, (_, value) in fresh.items()} == {
        name: value for name, (_, value) in reused.items()
    }, f"stale values after edits {edits}: statuses {reused}"
