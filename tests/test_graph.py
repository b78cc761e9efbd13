"""Pipeline: edges from signatures, validation at construction, planning."""

from __future__ import annotations

import itertools
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


def _edges(pipe: fd.Pipeline) -> set[tuple[str, str]]:
    """Every ``(parent, child)`` pair, from the direct parents of each node."""
    return {(parent, name) for name in pipe.nodes for parent in pipe.upstream(name, direct=True)}


def _assert_topological(pipe: fd.Pipeline) -> None:
    position = {name: i for i, name in enumerate(pipe.order)}
    assert sorted(position) == sorted(pipe.nodes)
    for parent, child in _edges(pipe):
        assert position[parent] < position[child], f"{parent} must come before {child}"


def _diamond(log: list[str] | None = None) -> fd.Pipeline:
    """``src -> left, right -> join``, plus ``other`` reading ``left``; all inline."""
    calls = [] if log is None else log

    @fd.node(run_in="inline")
    def src(path: str) -> str:
        calls.append("src")
        return path.upper()

    @fd.node(run_in="inline")
    def left(src: str) -> str:
        calls.append("left")
        return src + "L"

    @fd.node(run_in="inline")
    def right(src: str) -> str:
        calls.append("right")
        return src + "R"

    @fd.node(run_in="inline")
    def join(left: str, right: str) -> str:
        calls.append("join")
        return left + right

    @fd.node(run_in="inline")
    def other(left: str) -> str:
        calls.append("other")
        return left * 2

    return fd.Pipeline([src, left, right, join, other], name="diamond")


class TestConstruction:
    def test_nodes_by_name_in_definition_order(self) -> None:
        @fd.node
        def b() -> None:
            pass

        @fd.node
        def a(b: None) -> None:
            pass

        pipe = fd.Pipeline([b, a], name="mine")
        assert pipe.name == "mine"
        assert list(pipe.nodes) == ["b", "a"]
        assert pipe.nodes["a"] is a
        assert pipe.nodes["b"] is b

    def test_default_name(self) -> None:
        assert fd.Pipeline([]).name == "pipeline"

    def test_plain_functions_become_nodes(self) -> None:
        def base() -> int:
            return 2

        def double(base: int) -> int:
            return base * 2

        pipe = fd.Pipeline([base, double])
        assert isinstance(pipe.nodes["double"], fd.Node)
        assert pipe.nodes["double"].func is double
        assert pipe.upstream("double") == ("base",)
        assert pipe.run()["double"] == 4

    def test_accepts_any_iterable(self) -> None:
        @fd.node
        def a() -> None:
            pass

        pipe = fd.Pipeline(n for n in [a])
        assert list(pipe.nodes) == ["a"]

    def test_same_node_twice_is_one_node(self) -> None:
        @fd.node
        def a() -> None:
            pass

        alias = a
        pipe = fd.Pipeline([a, alias])
        assert list(pipe.nodes) == ["a"]

    def test_same_plain_function_twice_is_one_node(self) -> None:
        """Listing one function twice is not two definitions of its name."""

        def a() -> int:
            return 1

        pipe = fd.Pipeline([a, a])
        assert list(pipe.nodes) == ["a"]


class TestDuplicates:
    def test_two_definitions_of_a_name(self) -> None:
        @fd.node
        def load() -> int:
            return 1

        @fd.node(name="load")
        def load_v2() -> int:
            return 2

        with pytest.raises(fd.DuplicateNodeError) as info:
            fd.Pipeline([load, load_v2])
        error = info.value
        message = str(error)
        assert "'load'" in message
        assert load.location != load_v2.location
        assert load.location in message
        assert load_v2.location in message
        assert error.name == "load"
        assert error.locations == (load.location, load_v2.location)
        assert f"{__file__}:" in load.location

    def test_is_a_graph_error(self) -> None:
        assert issubclass(fd.DuplicateNodeError, fd.GraphError)
        assert issubclass(fd.DuplicateNodeError, ValueError)
        assert issubclass(fd.GraphError, fd.FlowdecoError)


class TestEdges:
    def test_parameter_named_like_a_node_is_an_edge(self) -> None:
        @fd.node
        def orders() -> None:
            pass

        @fd.node
        def total(orders: None, vat: float) -> None:
            pass

        pipe = fd.Pipeline([orders, total])
        assert pipe.upstream("total") == ("orders",)
        assert pipe.downstream("orders") == ("total",)
        assert set(pipe.inputs) == {"vat"}

    def test_edges_do_not_depend_on_definition_order(self) -> None:
        @fd.node
        def total(orders: None) -> None:
            pass

        @fd.node
        def orders() -> None:
            pass

        pipe = fd.Pipeline([total, orders])
        assert pipe.upstream("total") == ("orders",)
        assert pipe.order == ("orders", "total")

    def test_a_node_value_wins_over_a_default(self) -> None:
        @fd.node(run_in="inline")
        def rate() -> float:
            return 0.5

        @fd.node(run_in="inline")
        def scaled(rate: float = 1.0) -> float:
            return 10 * rate

        pipe = fd.Pipeline([rate, scaled])
        assert pipe.inputs == {}
        assert pipe.upstream("scaled") == ("rate",)
        assert pipe.run()["scaled"] == 5.0

    def test_rename_reads_the_named_node(self) -> None:
        @fd.node(run_in="inline")
        def a() -> str:
            return "A"

        @fd.node(run_in="inline")
        def b() -> str:
            return "B"

        # Parameter ``a`` reads node ``b``; there is no edge from ``a``.
        @fd.node(inputs={"a": "b"}, run_in="inline")
        def c(a: str) -> str:
            return a

        pipe = fd.Pipeline([a, b, c])
        assert pipe.upstream("c") == ("b",)
        assert pipe.downstream("a") == ()
        assert pipe.run(outputs="c")["c"] == "B"

    def test_rename_to_a_node_object(self) -> None:
        @fd.node(run_in="inline")
        def orders() -> list[int]:
            return [1, 2]

        @fd.node(inputs={"rows": orders}, run_in="inline")
        def total(rows: list[int]) -> int:
            return sum(rows)

        pipe = fd.Pipeline([orders, total])
        assert pipe.upstream("total") == ("orders",)
        assert "rows" not in pipe.inputs
        assert pipe.run()["total"] == 3


class TestAfter:
    def test_after_is_an_edge_without_a_value(self) -> None:
        @fd.node
        def setup() -> None:
            pass

        @fd.node(after=[setup])
        def work() -> None:
            pass

        pipe = fd.Pipeline([work, setup])
        assert pipe.upstream("work") == ("setup",)
        assert pipe.downstream("setup") == ("work",)
        assert pipe.order == ("setup", "work")
        assert pipe.inputs == {}

    @pytest.mark.parametrize(
        "definition_order",
        [
            pytest.param(("first", "second"), id="defined-in-order"),
            pytest.param(("second", "first"), id="defined-reversed"),
        ],
    )
    def test_after_orders_the_run(self, definition_order: tuple[str, str]) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def first() -> int:
            calls.append("first")
            return 1

        @fd.node(after=["first"], run_in="inline")
        def second() -> int:
            calls.append("second")
            return 2

        specs = {"first": first, "second": second}
        result = fd.Pipeline([specs[n] for n in definition_order]).run()
        assert calls == ["first", "second"]
        assert result.ok

    def test_after_node_runs_when_only_the_dependent_is_requested(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def setup() -> None:
            calls.append("setup")

        @fd.node(after=["setup"], run_in="inline")
        def work() -> int:
            calls.append("work")
            return 1

        result = fd.Pipeline([setup, work]).run(outputs=["work"])
        assert calls == ["setup", "work"]
        assert set(result.status) == {"setup", "work"}


class TestInputs:
    def test_inputs_mapping(self) -> None:
        @fd.node
        def a(path: str, limit: int = 10) -> None:
            pass

        @fd.node
        def b(a: None, path: str, verbose: bool = False) -> None:
            pass

        pipe = fd.Pipeline([a, b])
        assert dict(pipe.inputs) == {
            "path": fd.Input("path", required=True, nodes=("a", "b")),
            "limit": fd.Input("limit", required=False, nodes=("a",)),
            "verbose": fd.Input("verbose", required=False, nodes=("b",)),
        }

    @pytest.mark.parametrize(
        ("first_default", "second_default", "required"),
        [
            pytest.param(False, False, True, id="no-defaults"),
            pytest.param(True, False, True, id="one-default"),
            pytest.param(False, True, True, id="other-default"),
            pytest.param(True, True, False, id="all-defaults"),
        ],
    )
    def test_required_if_any_reader_lacks_a_default(
        self, first_default: bool, second_default: bool, required: bool
    ) -> None:
        def needs(rate: float) -> None:
            pass

        def may_take(rate: float = 1.0) -> None:
            pass

        one = fd.node(name="one")(may_take if first_default else needs)
        two = fd.node(name="two")(may_take if second_default else needs)
        pipe = fd.Pipeline([one, two])
        assert pipe.inputs["rate"].required is required
        assert pipe.inputs["rate"].nodes == ("one", "two")

    def test_input_is_frozen(self) -> None:
        item = fd.Input("x", required=True, nodes=("a",))
        with pytest.raises(AttributeError):
            item.required = False  # type: ignore[misc]


class TestOrder:
    def test_chain_defined_backwards(self) -> None:
        @fd.node
        def c(b: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        @fd.node
        def a() -> None:
            pass

        assert fd.Pipeline([c, b, a]).order == ("a", "b", "c")

    def test_diamond_is_topological(self) -> None:
        pipe = _diamond()
        _assert_topological(pipe)
        assert pipe.order[0] == "src"
        assert _edges(pipe) == {
            ("src", "left"),
            ("src", "right"),
            ("left", "join"),
            ("right", "join"),
            ("left", "other"),
        }

    def test_independent_nodes_keep_definition_order(self) -> None:
        specs = [fd.node(name=n)(lambda: None) for n in ["z", "m", "a"]]
        assert fd.Pipeline(specs).order == ("z", "m", "a")

    def test_wide_graph_is_topological(self) -> None:
        # Layers defined newest first, each node reading two of the layer below.
        specs = []
        for layer in range(5, 0, -1):
            for i in range(4):
                below = [f"n{layer - 1}_{i}", f"n{layer - 1}_{(i + 1) % 4}"]
                specs.append(fd.node(name=f"n{layer}_{i}", after=below)(lambda: None))
        specs.extend(fd.node(name=f"n0_{i}")(lambda: None) for i in range(4))
        pipe = fd.Pipeline(specs)
        _assert_topological(pipe)
        assert len(pipe.order) == 24


class TestUpstreamDownstream:
    def test_upstream_all_in_topological_order(self) -> None:
        pipe = _diamond()
        assert pipe.upstream("join") == ("src", "left", "right")
        assert pipe.upstream("other") == ("src", "left")
        assert pipe.upstream("src") == ()

    def test_order_is_topological_not_definition_order(self) -> None:
        @fd.node
        def c(b: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        @fd.node
        def a() -> None:
            pass

        pipe = fd.Pipeline([c, b, a])
        assert pipe.upstream("c") == ("a", "b")
        assert pipe.downstream("a") == ("b", "c")

    def test_upstream_direct(self) -> None:
        pipe = _diamond()
        assert set(pipe.upstream("join", direct=True)) == {"left", "right"}
        assert pipe.upstream("other", direct=True) == ("left",)
        assert pipe.upstream("src", direct=True) == ()

    def test_downstream_all_in_topological_order(self) -> None:
        pipe = _diamond()
        downstream = pipe.downstream("src")
        assert set(downstream) == {"left", "right", "join", "other"}
        position = {name: i for i, name in enumerate(downstream)}
        assert position["left"] < position["join"]
        assert position["right"] < position["join"]
        assert position["left"] < position["other"]
        assert pipe.downstream("right") == ("join",)
        assert pipe.downstream("join") == ()

    def test_downstream_direct(self) -> None:
        pipe = _diamond()
        assert set(pipe.downstream("src", direct=True)) == {"left", "right"}
        assert set(pipe.downstream("left", direct=True)) == {"join", "other"}

    def test_after_and_data_parents_counted_once(self) -> None:
        @fd.node
        def a() -> None:
            pass

        @fd.node(after=["a"])
        def b(a: None) -> None:
            pass

        pipe = fd.Pipeline([a, b])
        assert pipe.upstream("b", direct=True) == ("a",)
        assert pipe.downstream("a", direct=True) == ("b",)

    @pytest.mark.parametrize("method", ["upstream", "downstream"])
    @pytest.mark.parametrize("direct", [False, True])
    def test_unknown_name(self, method: str, direct: bool) -> None:
        pipe = _diamond()
        with pytest.raises(fd.UnknownNodeError) as info:
            getattr(pipe, method)("joim", direct=direct)
        message = str(info.value)
        assert "'joim'" in message
        assert "'diamond'" in message
        assert "did you mean 'join'" in message
        assert info.value.names == ("joim",)

    def test_unknown_name_without_close_match(self) -> None:
        with pytest.raises(fd.UnknownNodeError) as info:
            _diamond().upstream("zzzzzz")
        assert "'zzzzzz'" in str(info.value)
        assert "did you mean" not in str(info.value)

    def test_unknown_node_error_is_a_lookup_error(self) -> None:
        with pytest.raises(LookupError):
            _diamond().downstream("nope")


def _data_flow_pairs(specs: list[fd.Node[..., Any]]) -> set[tuple[str, str]]:
    """``(source, reader)`` for every data and ``after=`` dependency among ``specs``."""
    names = {s.name for s in specs}
    pairs = set()
    for s in specs:
        for source in (*s.sources, *s.after):
            if source in names:
                pairs.add((source, s.name))
    return pairs


def _cycle_cases() -> Iterator[Any]:
    def two() -> list[fd.Node[..., Any]]:
        @fd.node
        def a(b: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        return [a, b]

    def three() -> list[fd.Node[..., Any]]:
        @fd.node
        def a(c: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        @fd.node
        def c(b: None) -> None:
            pass

        return [a, b, c]

    def with_tail() -> list[fd.Node[..., Any]]:
        # ``tail`` and ``root`` are outside the cycle; ``tail`` is defined first.
        @fd.node
        def tail(y: None) -> None:
            pass

        @fd.node
        def root() -> None:
            pass

        @fd.node
        def x(root: None, z: None) -> None:
            pass

        @fd.node
        def y(x: None) -> None:
            pass

        @fd.node
        def z(y: None) -> None:
            pass

        return [tail, root, x, y, z]

    def via_after() -> list[fd.Node[..., Any]]:
        @fd.node(after=["b"])
        def a() -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        return [a, b]

    def via_rename() -> list[fd.Node[..., Any]]:
        @fd.node(inputs={"value": "b"})
        def a(value: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        return [a, b]

    yield pytest.param(two, {"a", "b"}, id="two")
    yield pytest.param(three, {"a", "b", "c"}, id="three")
    yield pytest.param(with_tail, {"x", "y", "z"}, id="with-tail")
    yield pytest.param(via_after, {"a", "b"}, id="after")
    yield pytest.param(via_rename, {"a", "b"}, id="rename")


class TestCycles:
    @pytest.mark.parametrize(("build", "members"), list(_cycle_cases()))
    def test_cycle(self, build: Any, members: set[str]) -> None:
        specs = build()
        with pytest.raises(fd.CycleError) as info:
            fd.Pipeline(specs)
        cycle = info.value.cycle
        assert isinstance(cycle, tuple)
        assert cycle[0] == cycle[-1]
        assert len(cycle) == len(members) + 1
        assert set(cycle) == members
        # Each step is a real dependency, in data-flow order (the value flows left to right).
        flows = _data_flow_pairs(specs)
        for source, reader in itertools.pairwise(cycle):
            assert (source, reader) in flows, f"{source} -> {reader} is not a dependency"
        message = str(info.value)
        assert "the pipeline has a cycle" in message
        assert " -> ".join(cycle) in message

    def test_two_node_message(self) -> None:
        @fd.node
        def a(b: None) -> None:
            pass

        @fd.node
        def b(a: None) -> None:
            pass

        with pytest.raises(fd.CycleError) as info:
            fd.Pipeline([a, b])
        assert info.value.cycle in (("a", "b", "a"), ("b", "a", "b"))
        assert "a -> b -> a" in str(info.value) or "b -> a -> b" in str(info.value)

    def test_is_a_value_error(self) -> None:
        @fd.node
        def a(a: None) -> None:
            pass

        with pytest.raises(ValueError, match="depends on itself"):
            fd.Pipeline([a])
        assert issubclass(fd.CycleError, fd.GraphError)
        assert issubclass(fd.CycleError, fd.FlowdecoError)


class TestSelfDependency:
    @pytest.mark.parametrize(
        "make",
        [
            pytest.param(lambda: fd.node(name="x")(lambda x: None), id="parameter"),
            pytest.param(lambda: fd.node(name="x", after=["x"])(lambda: None), id="after"),
            pytest.param(lambda: fd.node(name="x", inputs={"v": "x"})(lambda v: None), id="inputs"),
        ],
    )
    def test_self_dependency(self, make: Any) -> None:
        @fd.node
        def other() -> None:
            pass

        with pytest.raises(fd.CycleError) as info:
            fd.Pipeline([other, make()])
        assert info.value.cycle == ("x", "x")
        message = str(info.value)
        assert "'x' depends on itself" in message
        assert "x -> x" in message


class TestUnknownReferences:
    def test_after_names_unknown_node(self) -> None:
        @fd.node
        def setup() -> None:
            pass

        @fd.node(after=["setpu"])
        def work() -> None:
            pass

        with pytest.raises(fd.UnknownNodeError) as info:
            fd.Pipeline([setup, work])
        message = str(info.value)
        assert "'work'" in message
        assert "after=" in message
        assert "'setpu'" in message
        assert "did you mean 'setup'" in message
        assert info.value.names == ("setpu",)

    def test_after_node_object_not_in_pipeline(self) -> None:
        @fd.node
        def setup() -> None:
            pass

        @fd.node(after=[setup])
        def work() -> None:
            pass

        with pytest.raises(fd.UnknownNodeError, match=r"'work'.*'setup'"):
            fd.Pipeline([work])

    def test_inputs_names_unknown_node(self) -> None:
        @fd.node
        def orders() -> None:
            pass

        @fd.node(inputs={"rows": "ordres"})
        def total(rows: None) -> None:
            pass

        with pytest.raises(fd.UnknownNodeError) as info:
            fd.Pipeline([orders, total])
        message = str(info.value)
        assert "'total'" in message
        assert "inputs=" in message
        assert "'rows'" in message
        assert "'ordres'" in message
        assert "did you mean 'orders'" in message
        assert info.value.names == ("ordres",)

    def test_is_a_graph_error(self) -> None:
        assert issubclass(fd.UnknownNodeError, fd.GraphError)
        assert issubclass(fd.UnknownNodeError, ValueError)


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory on ``sys.path``; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        module = sys.modules[name]
        if str(getattr(module, "__file__", "") or "").startswith(str(tmp_path)):
            del sys.modules[name]


_NODES_MODULE = """\
import flowdeco as fd


def helper(x):
    return x


@fd.node(run_in="inline")
def raw(path):
    return path.upper()


@fd.node(run_in="inline")
def clean(raw):
    return raw.strip()


alias = clean
not_a_node = 42


@fd.node(run_in="inline")
def report(clean, raw):
    return f"{clean}|{raw}"
"""


class TestFromModule:
    def test_dotted_name(self, module_dir: Path) -> None:
        package = module_dir / "fd_pkg_dotted"
        package.mkdir()
        (package / "__init__.py").write_text("")
        (package / "nodes.py").write_text(_NODES_MODULE)
        pipe = fd.Pipeline.from_module("fd_pkg_dotted.nodes")
        assert pipe.name == "fd_pkg_dotted.nodes"
        assert list(pipe.nodes) == ["raw", "clean", "report"]  # source order, no helper
        assert pipe.run(inputs={"path": " a "})["report"] == "A| A "

    def test_module_object(self, module_dir: Path) -> None:
        (module_dir / "fd_mod_object.py").write_text(_NODES_MODULE)
        import fd_mod_object  # type: ignore[import-not-found]

        pipe = fd.Pipeline.from_module(fd_mod_object, name="custom")
        assert pipe.name == "custom"
        assert list(pipe.nodes) == ["raw", "clean", "report"]
        assert pipe.nodes["clean"] is fd_mod_object.clean

    def test_duplicates(self, module_dir: Path) -> None:
        path = module_dir / "fd_mod_dup.py"
        path.write_text(
            textwrap.dedent(
                """\
                import flowdeco as fd


                @fd.node
                def load():
                    return 1


                @fd.node(name="load")
                def load_again():
                    return 2
                """
            )
        )
        with pytest.raises(fd.DuplicateNodeError) as info:
            fd.Pipeline.from_module("fd_mod_dup")
        message = str(info.value)
        assert "'load'" in message
        locations = info.value.locations
        assert len(set(locations)) == 2
        for location in locations:
            assert location.startswith(f"{path}:")
            assert location in message

    def test_unknown_module(self, module_dir: Path) -> None:
        with pytest.raises(ModuleNotFoundError):
            fd.Pipeline.from_module("fd_mod_does_not_exist")


def _redefined() -> tuple[fd.Node[..., Any], fd.Node[..., Any]]:
    """Two definitions of node ``a``, as a re-run notebook cell makes them: old, then new."""

    @fd.node(run_in="inline")
    def a() -> str:
        return "old"

    old = a

    @fd.node(run_in="inline")  # type: ignore[no-redef]
    def a() -> str:
        return "new"

    return old, a


class TestFromNamespace:
    @pytest.mark.parametrize(
        "newest_first", [pytest.param(False, id="old-first"), pytest.param(True, id="new-first")]
    )
    def test_newest_definition_wins(self, newest_first: bool) -> None:
        old, new = _redefined()

        @fd.node(run_in="inline")
        def b(a: str) -> str:
            return a + "!"

        entries = [("a_v1", old), ("a", new), ("b", b)]
        if newest_first:
            entries.reverse()
        pipe = fd.Pipeline.from_namespace(dict(entries), name="notebook")
        assert pipe.name == "notebook"
        assert pipe.nodes["a"] is new
        assert pipe.run()["b"] == "new!"

    def test_rebinding_replaces(self) -> None:
        namespace: dict[str, object] = {}

        def run_cell(value: str) -> None:
            @fd.node(run_in="inline")
            def a() -> str:
                return value

            namespace["a"] = a

        run_cell("first")
        first = namespace["a"]
        namespace["earlier"] = first  # the old node is still bound under another name
        run_cell("second")
        assert namespace["a"] is not first
        pipe = fd.Pipeline.from_namespace(namespace)
        assert pipe.run()["a"] == "second"

    def test_aliases_are_fine(self) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        pipe = fd.Pipeline.from_namespace({"a": a, "alias": a, "another": a})
        assert list(pipe.nodes) == ["a"]

    def test_ignores_other_values(self) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        def plain(a: int) -> int:
            return a

        pipe = fd.Pipeline.from_namespace(
            {"fd": fd, "plain": plain, "n": 3, "a": a, "__name__": "__main__"}
        )
        assert list(pipe.nodes) == ["a"]
        assert pipe.name == "pipeline"

    def test_nodes_in_definition_order(self) -> None:
        @fd.node
        def first() -> None:
            pass

        @fd.node
        def second() -> None:
            pass

        pipe = fd.Pipeline.from_namespace({"second": second, "first": first})
        assert list(pipe.nodes) == ["first", "second"]

    def test_still_validates(self) -> None:
        @fd.node
        def a(a: None) -> None:
            pass

        with pytest.raises(fd.CycleError):
            fd.Pipeline.from_namespace({"a": a})


class TestPlan:
    def test_plan_fields(self) -> None:
        pipe = _diamond()
        plan = pipe.plan(inputs={"path": "p"}, outputs=["join"])
        assert isinstance(plan, fd.Plan)
        assert plan.pipeline is pipe
        assert plan.outputs == ("join",)
        assert plan.given == {"path": "p"}
        names = list(pipe.nodes)
        assert tuple(names[i] for i in plan.order) == ("src", "left", "right", "join")

    def test_plan_copies_inputs(self) -> None:
        inputs = {"path": "p"}
        plan = _diamond().plan(inputs=inputs)
        inputs["path"] = "changed"
        assert plan.given == {"path": "p"}

    def test_plan_all_outputs_by_default(self) -> None:
        pipe = _diamond()
        plan = pipe.plan(inputs={"path": "p"})
        assert set(plan.outputs) == set(pipe.nodes)
        assert len(plan.order) == len(pipe.nodes)

    def test_plan_runs_nothing(self) -> None:
        calls: list[str] = []
        _diamond(calls).plan(inputs={"path": "p"})
        assert calls == []


class TestOutputs:
    def test_only_outputs_and_ancestors_run(self) -> None:
        calls: list[str] = []
        result = _diamond(calls).run(inputs={"path": "p"}, outputs=["other"])
        assert set(result.status) == {"src", "left", "other"}
        assert sorted(calls) == ["left", "other", "src"]
        assert list(result) == ["other"]
        assert result["other"] == "PLPL"

    def test_single_string(self) -> None:
        result = _diamond().run(inputs={"path": "p"}, outputs="left")
        assert set(result.status) == {"src", "left"}
        assert dict(result) == {"left": "PL"}

    def test_several_outputs(self) -> None:
        result = _diamond().run(inputs={"path": "p"}, outputs=["right", "left"])
        assert set(result.status) == {"src", "left", "right"}
        assert list(result) == ["right", "left"]

    def test_repeated_output_listed_once(self) -> None:
        result = _diamond().run(inputs={"path": "p"}, outputs=["left", "left"])
        assert result.outputs == ("left",)

    def test_none_runs_everything(self) -> None:
        pipe = _diamond()
        result = pipe.run(inputs={"path": "p"})
        assert set(result.status) == set(pipe.nodes)
        assert set(result) == set(pipe.nodes)

    def test_unknown_outputs(self) -> None:
        calls: list[str] = []
        pipe = _diamond(calls)
        with pytest.raises(fd.UnknownNodeError) as info:
            pipe.run(inputs={"path": "p"}, outputs=["jion", "left", "zzzzzz"])
        message = str(info.value)
        assert "'jion'" in message
        assert "did you mean 'join'" in message
        assert "'zzzzzz'" in message
        assert "'diamond'" in message
        assert info.value.names == ("jion", "zzzzzz")
        assert calls == []


class TestMissingInputs:
    def test_all_missing_inputs_listed_before_anything_runs(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def ready() -> int:
            calls.append("ready")
            return 1

        @fd.node(run_in="inline")
        def load(path: str, ready: int) -> str:
            calls.append("load")
            return path

        @fd.node(run_in="inline")
        def report(load: str, title: str, path: str, width: int = 80) -> str:
            calls.append("report")
            return title

        pipe = fd.Pipeline([ready, load, report])
        with pytest.raises(fd.MissingInputsError) as info:
            pipe.run()
        assert calls == []
        error = info.value
        assert error.missing == {"path": ("load", "report"), "title": ("report",)}
        message = str(error)
        assert "'path', needed by 'load', 'report'" in message
        assert "'title', needed by 'report'" in message
        assert "'width'" not in message
        assert "inputs=" in message

    def test_only_inputs_of_selected_nodes(self) -> None:
        pipe = _diamond()

        @fd.node(run_in="inline")
        def extra(token: str) -> str:
            return token

        pipe = fd.Pipeline([*pipe.nodes.values(), extra])
        with pytest.raises(fd.MissingInputsError) as info:
            pipe.run(inputs={"path": "p"})
        assert info.value.missing == {"token": ("extra",)}
        # Not needed when ``extra`` is not selected.
        assert pipe.run(inputs={"path": "p"}, outputs=["join"]).ok

    def test_optional_input_not_needed(self) -> None:
        @fd.node(run_in="inline")
        def scaled(rate: float = 2.0) -> float:
            return rate

        assert fd.Pipeline([scaled]).run()["scaled"] == 2.0

    def test_is_an_input_error(self) -> None:
        assert issubclass(fd.MissingInputsError, fd.InputError)
        assert issubclass(fd.InputError, ValueError)
        assert issubclass(fd.InputError, fd.FlowdecoError)


class TestUnknownInputs:
    def test_unknown_inputs_with_suggestions(self) -> None:
        calls: list[str] = []
        with pytest.raises(fd.UnknownInputsError) as info:
            _diamond(calls).run(inputs={"path": "p", "pth": 1, "jion": 2, "zzzzzz": 3})
        assert calls == []
        error = info.value
        assert set(error.unknown) == {"pth", "jion", "zzzzzz"}
        message = str(error)
        assert "'pth' (did you mean 'path'?)" in message
        assert "'jion' (did you mean 'join'?)" in message
        assert "'zzzzzz'" in message
        assert "'zzzzzz' (did you mean" not in message

    def test_checked_even_when_required_inputs_missing(self) -> None:
        with pytest.raises(fd.UnknownInputsError):
            _diamond().run(inputs={"pth": "p"})

    def test_is_an_input_error(self) -> None:
        assert issubclass(fd.UnknownInputsError, fd.InputError)


class TestOverride:
    def test_overridden_node_and_its_ancestors_do_not_run(self) -> None:
        calls: list[str] = []
        pipe = _diamond(calls)
        # ``other`` only needs ``left``: giving ``left`` makes ``src`` unneeded too,
        # and with it the required input ``path``.
        result = pipe.run(inputs={"left": "given"}, outputs=["other"])
        assert calls == ["other"]
        assert set(result.status) == {"other"}
        assert result["other"] == "givengiven"

    def test_shared_ancestor_still_runs(self) -> None:
        calls: list[str] = []
        pipe = _diamond(calls)
        result = pipe.run(inputs={"path": "p", "left": "given"}, outputs=["join"])
        assert set(result.status) == {"src", "right", "join"}
        assert "left" not in calls
        assert sorted(calls) == ["join", "right", "src"]
        assert result["join"] == "givenPR"

    def test_all_paths_overridden(self) -> None:
        calls: list[str] = []
        result = _diamond(calls).run(inputs={"left": "L", "right": "R"}, outputs=["join"])
        assert calls == ["join"]
        assert result["join"] == "LR"

    def test_overridden_output_has_the_given_value(self) -> None:
        calls: list[str] = []
        result = _diamond(calls).run(inputs={"left": "given"}, outputs=["left", "other"])
        assert "left" not in result.status
        assert result["left"] == "given"
        assert dict(result) == {"left": "given", "other": "givengiven"}
        assert calls == ["other"]

    def test_override_with_all_outputs(self) -> None:
        calls: list[str] = []
        result = _diamond(calls).run(inputs={"path": "p", "right": "R"})
        assert "right" not in calls
        assert "right" not in result.status
        assert result["right"] == "R"
        assert result["join"] == "PLR"

    def test_overridden_node_needs_none_of_its_inputs(self) -> None:
        @fd.node(run_in="inline")
        def load(path: str) -> str:
            raise AssertionError("overridden, must not run")

        @fd.node(run_in="inline")
        def size(load: str) -> int:
            return len(load)

        result = fd.Pipeline([load, size]).run(inputs={"load": "abc"})
        assert result["size"] == 3

    def test_plan_excludes_overridden(self) -> None:
        pipe = _diamond()
        plan = pipe.plan(inputs={"path": "p", "left": "x"}, outputs=["join"])
        names = list(pipe.nodes)
        assert tuple(names[i] for i in plan.order) == ("src", "right", "join")
