"""Checkpoints in runs: what is reused, what re-runs after an edit, resume, and stores."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import threading
from typing import TYPE_CHECKING, Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowdeco as fd
from flowdeco._core import _references as references

if TYPE_CHECKING:
    import types
    from collections.abc import Iterable, Mapping
    from pathlib import Path
    from types import ModuleType

S = fd.Status


def _ran(result: fd.RunResult) -> set[str]:
    """Nodes that ran in this run (not served from checkpoints)."""
    return {name for name, status in result.status.items() if status is S.SUCCEEDED}


def _cached(result: fd.RunResult) -> set[str]:
    return {name for name, status in result.status.items() if status is S.CACHED}


# -- a project on disk, edited between runs, as a user edits their script ------------------

PROJECT = """
    import flowdeco as fd

    RATE = {rate}

    def helper(x):
        return x * {factor}

    @fd.node(run_in="inline")
    def raw(source):
        '''The rows.'''
        return [source, source + 1, source + 2]

    @fd.node(run_in="inline")
    def cleaned(raw):
        return [r for r in raw if r >= {floor}]

    @fd.node(run_in="inline")
    def scaled(cleaned):
        return [helper(r) for r in cleaned]

    @fd.node(run_in="inline")
    def taxed(cleaned):
        return sum(cleaned) * RATE

    @fd.node(run_in="inline")
    def report(scaled, taxed):
        return {{"scaled": scaled, "taxed": taxed}}
"""
DEFAULTS = {"rate": 0.5, "factor": 2, "floor": 0}


def _import(file: Path, source: str | None = None) -> ModuleType:
    """Write ``source`` to ``file`` (if given) and import it afresh, like a new script run."""
    if source is not None:
        file.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(file.stem, file)  # as a script rerun names it
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _project(tmp_path: Path, **changes: object) -> fd.Pipeline:
    """The project with ``changes`` made to its file."""
    source = PROJECT.format(**{**DEFAULTS, **changes})
    return fd.Pipeline.from_module(_import(tmp_path / "project.py", source), name="project")


class TestReuse:
    def test_second_run_is_served_from_checkpoints(self, tmp_path: Path) -> None:
        first = _project(tmp_path).run({"source": 1})
        assert _ran(first) == {"raw", "cleaned", "scaled", "taxed", "report"}
        second = _project(tmp_path).run({"source": 1})
        assert _cached(second) == set(second.status)
        assert dict(second) == dict(first)
        assert second["report"] == {"scaled": [2, 4, 6], "taxed": 3.0}

    def test_editing_a_body_reruns_exactly_that_node_and_its_descendants(
        self, tmp_path: Path
    ) -> None:
        _project(tmp_path).run({"source": 1})
        edited = _project(tmp_path, floor=2).run({"source": 1})
        assert _ran(edited) == {"cleaned", "scaled", "taxed", "report"}
        assert edited["report"] == {"scaled": [4, 6], "taxed": 2.5}

    def test_editing_a_helper_reruns_the_nodes_that_use_it(self, tmp_path: Path) -> None:
        _project(tmp_path).run({"source": 1})
        edited = _project(tmp_path, factor=10).run({"source": 1})
        assert _ran(edited) == {"scaled", "report"}
        assert edited["scaled"] == [10, 20, 30]  # a stale cache would still say [2, 4, 6]

    def test_editing_a_module_constant_reruns_the_nodes_that_read_it(self, tmp_path: Path) -> None:
        _project(tmp_path).run({"source": 1})
        edited = _project(tmp_path, rate=0.25).run({"source": 1})
        assert _ran(edited) == {"taxed", "report"}
        assert edited["taxed"] == 1.5

    def test_docstrings_comments_and_layout_do_not_count(self, tmp_path: Path) -> None:
        _project(tmp_path).run({"source": 1})
        file = tmp_path / "project.py"
        source = file.read_text().replace("'''The rows.'''", "'''Other words.'''  # note")
        source = source.replace(
            "return [source, source + 1, source + 2]", "return [source,\n source + 1, source + 2]"
        )
        file.write_text(source)
        again = fd.Pipeline.from_module(_import(file), name="project").run({"source": 1})
        assert _ran(again) == set()

    def test_changing_an_input_reruns_exactly_the_nodes_that_depend_on_it(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def a(x: int) -> int:
            calls.append("a")
            return x

        @fd.node(run_in="inline")
        def b(y: int) -> int:
            calls.append("b")
            return y

        @fd.node(run_in="inline")
        def c(a: int, b: int) -> int:
            calls.append("c")
            return a + b

        pipe = fd.Pipeline([a, b, c])
        pipe.run({"x": 1, "y": 2})
        calls.clear()
        result = pipe.run({"x": 1, "y": 3})
        assert calls == ["b", "c"]
        assert result["c"] == 4

    def test_early_cutoff_when_a_rerun_node_gives_the_same_value(self, tmp_path: Path) -> None:
        _project(tmp_path).run({"source": 1})
        # raw >= -5 keeps the same rows as raw >= 0: cleaned re-runs, its children do not.
        edited = _project(tmp_path, floor=-5).run({"source": 1})
        assert _ran(edited) == {"cleaned"}
        assert _cached(edited) == {"raw", "scaled", "taxed", "report"}

    def test_values_come_back_with_their_types(self) -> None:
        value = {"t": (1, 2), "l": [1, 2], "s": {1}, "b": b"x", 3: None}

        @fd.node(run_in="inline")
        def typed() -> dict[Any, Any]:
            return value

        pipe = fd.Pipeline([typed])
        pipe.run()
        again = pipe.run()
        assert again.status["typed"] is S.CACHED
        assert again["typed"] == value
        assert type(again["typed"]["t"]) is tuple

    @pytest.mark.anyio
    async def test_every_kind_of_node_is_served_from_checkpoints(self) -> None:
        calls: list[str] = []

        @fd.node
        async def fetched() -> int:
            calls.append("fetched")
            return 2

        @fd.node
        def threaded(fetched: int) -> int:
            calls.append("threaded")
            return fetched * 3

        @fd.node(run_in="inline")
        def inline(threaded: int) -> int:
            calls.append("inline")
            return threaded + 1

        pipe = fd.Pipeline([fetched, threaded, inline])
        assert (await pipe.arun())["inline"] == 7
        again = await pipe.arun()
        assert again["inline"] == 7
        assert calls == ["fetched", "threaded", "inline"]
        assert _cached(again) == {"fetched", "threaded", "inline"}

    def test_statuses_go_straight_from_pending_to_cached(self, status_log: Any) -> None:
        @fd.node(run_in="inline")
        def one() -> int:
            return 1

        @fd.node(run_in="inline")
        def two(one: int) -> int:
            return one + 1

        pipe = fd.Pipeline([one, two])
        pipe.run()
        pipe.run(on_status=status_log)
        assert status_log.calls == [("one", S.CACHED), ("two", S.CACHED)]
        status_log.assert_legal()

    def test_overriding_a_node_feeds_its_value_into_the_keys(self) -> None:
        @fd.node(run_in="inline")
        def base() -> int:
            return 1

        @fd.node(run_in="inline")
        def doubled(base: int) -> int:
            return base * 2

        pipe = fd.Pipeline([base, doubled])
        assert pipe.run()["doubled"] == 2
        overridden = pipe.run({"base": 5})
        assert overridden["doubled"] == 10
        assert overridden.status["doubled"] is S.SUCCEEDED

    def test_a_parameter_default_is_part_of_the_key(self, tmp_path: Path) -> None:
        source = "import flowdeco as fd\nF = {}\n@fd.node(run_in='inline')\ndef scaled(x, f=F):\n    return x * f\n"
        first = fd.Pipeline([_import(tmp_path / "m.py", source.format(2)).scaled]).run({"x": 3})
        second = fd.Pipeline([_import(tmp_path / "m.py", source.format(5)).scaled]).run({"x": 3})
        assert (first["scaled"], second["scaled"]) == (6, 15)

    def test_a_deep_cached_chain_completes_without_recursion(self) -> None:
        def add_one(x: int) -> int:
            return x + 1

        n = 30_000
        nodes = [fd.node(name="n0", run_in="inline")(lambda: 0)]
        nodes += [
            fd.node(name=f"n{i}", inputs={"x": f"n{i - 1}"}, run_in="inline")(add_one)
            for i in range(1, n)
        ]
        pipe = fd.Pipeline(nodes, store=fd.MemoryStore())
        pipe.run(outputs=f"n{n - 1}")
        again = pipe.run(outputs=f"n{n - 1}")
        assert again[f"n{n - 1}"] == n - 1
        assert len(_cached(again)) == n

    def test_code_versions_are_computed_once_per_definition(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        fingerprints: list[object] = []
        original = references.bytecode_fingerprint

        def counting(code: types.CodeType) -> bytes:
            fingerprints.append(code)
            return original(code)

        monkeypatch.setattr(references, "bytecode_fingerprint", counting)

        @fd.node(run_in="inline")
        def once(x: int) -> int:
            return x

        pipe = fd.Pipeline([once])
        pipe.run({"x": 1})
        assert len(fingerprints) == 1
        pipe.run({"x": 2})
        pipe.run({"x": 3}, cache=False)
        assert len(fingerprints) == 1


class TestOptions:
    def test_cache_false_node_always_runs_and_its_children_cut_off(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline", cache=False)
        def fetched() -> int:
            calls.append("fetched")
            return 42

        @fd.node(run_in="inline")
        def used(fetched: int) -> int:
            calls.append("used")
            return fetched + 1

        pipe = fd.Pipeline([fetched, used])
        pipe.run()
        second = pipe.run()
        assert calls == ["fetched", "used", "fetched"]
        assert second.status == {"fetched": S.SUCCEEDED, "used": S.CACHED}

    def test_run_cache_false_reruns_everything_and_still_stores(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def one() -> int:
            calls.append("one")
            return 1

        pipe = fd.Pipeline([one])
        pipe.run()
        pipe.run(cache=False)
        assert calls == ["one", "one"]
        assert pipe.run().status["one"] is S.CACHED

    def test_checkpoint_false_is_never_stored_and_children_still_reuse(self) -> None:
        calls: list[str] = []

        class Connection:
            pass

        @fd.node(run_in="inline", checkpoint=False)
        def connection(url: str) -> Connection:
            calls.append("connection")
            return Connection()

        @fd.node(run_in="inline")
        def rows(connection: Connection) -> list[int]:
            calls.append("rows")
            return [1, 2]

        store = fd.MemoryStore()
        pipe = fd.Pipeline([connection, rows], store=store)
        first = pipe.run({"url": "db://a"})  # no warning: the value is not meant to be stored
        second = pipe.run({"url": "db://a"})
        third = pipe.run({"url": "db://b"})
        assert calls == ["connection", "rows", "connection", "connection", "rows"]
        assert second.status == {"connection": S.SUCCEEDED, "rows": S.CACHED}
        assert third.status == {"connection": S.SUCCEEDED, "rows": S.SUCCEEDED}
        (record, *_) = pipe.runs()
        assert record.nodes["connection"]["stored"] is False
        assert record.nodes["rows"]["stored"] is True
        assert first.run_id == record.run_id

    def test_version_replaces_the_code_version(self, tmp_path: Path) -> None:
        source = "import flowdeco as fd\n@fd.node(run_in='inline', version={!r})\ndef v():\n    return {}\n"

        def run(version: str, value: int) -> object:
            module = _import(tmp_path / "m.py", source.format(version, value))
            return fd.Pipeline([module.v]).run()["v"]

        assert run("1", 1) == 1
        assert run("1", 2) == 1  # body changed, version kept: reused
        assert run("2", 2) == 2

    @pytest.mark.parametrize(
        ("option", "value"),
        [("cache", "yes"), ("checkpoint", 1), ("version", ""), ("version", 3)],
    )
    def test_bad_options_name_the_node(self, option: str, value: object) -> None:
        with pytest.raises(fd.NodeDefinitionError, match=rf"node 'f'.*{option}="):

            @fd.node(**{option: value})  # type: ignore[call-overload]
            def f() -> None: ...

    def test_bad_run_options(self) -> None:
        pipe = fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: 1)], name="p")
        with pytest.raises(fd.ConfigurationError, match="cache must be True or False"):
            pipe.run(cache="no")  # type: ignore[arg-type]
        with pytest.raises(fd.ConfigurationError, match="store must be"):
            pipe.run(store=42)  # type: ignore[arg-type]
        with pytest.raises(fd.ConfigurationError, match="resume= needs a store"):
            pipe.run(store=None, resume=True)


class TestUnstorable:
    def test_a_value_the_codec_cannot_carry_flows_on_with_a_warning(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def orders() -> list[dict[str, Any]]:
            calls.append("orders")
            return [{"when": 1}, {"when": threading.Lock()}]

        @fd.node(run_in="inline")
        def count(orders: list[dict[str, Any]]) -> int:
            calls.append("count")
            return len(orders)

        pipe = fd.Pipeline([orders, count])
        with pytest.warns(fd.CheckpointWarning, match=r"node 'orders': orders\[1\]\[\"when\"\]"):
            first = pipe.run()
        assert first["count"] == 2
        assert first.status["orders"] is S.SUCCEEDED
        with pytest.warns(fd.CheckpointWarning, match="checkpoint=False"):
            second = pipe.run()
        # Not stored, so it runs again; its child is keyed by the node's own key.
        assert second.status == {"orders": S.SUCCEEDED, "count": S.CACHED}
        assert calls == ["orders", "count", "orders"]

    @pytest.mark.anyio
    async def test_warnings_point_at_the_callers_line(self) -> None:
        @fd.node(run_in="inline")
        def lock() -> object:
            return threading.Lock()

        with pytest.warns(fd.CheckpointWarning) as caught:
            await fd.Pipeline([lock]).arun()
        assert caught[0].filename == __file__

    def test_a_sync_run_warns_at_its_call(self) -> None:
        @fd.node(run_in="inline")
        def lock() -> object:
            return threading.Lock()

        with pytest.warns(fd.CheckpointWarning) as caught:
            fd.Pipeline([lock]).run()
        assert caught[0].filename == __file__

    def test_a_store_that_cannot_read_is_a_miss(self) -> None:
        class Unreadable(fd.MemoryStore):
            def load(self, key: str) -> bytes | None:
                raise RuntimeError("backend down")

        calls: list[int] = []
        pipe = fd.Pipeline(
            [fd.node(name="f", run_in="inline")(lambda: calls.append(1) or 1)], store=Unreadable()
        )
        for _ in range(2):
            with pytest.warns(fd.CheckpointWarning, match="checkpoint not read.*backend down"):
                assert pipe.run()["f"] == 1
        assert calls == [1, 1]

    def test_an_input_the_codec_cannot_carry_names_the_input(self) -> None:
        @fd.node(run_in="inline")
        def uses(handle: object) -> int:
            return 1

        pipe = fd.Pipeline([uses])
        with pytest.warns(fd.CheckpointWarning, match="input 'handle'.*always run.*uses"):
            pipe.run({"handle": threading.Lock()})
        with pytest.warns(fd.CheckpointWarning):
            assert pipe.run({"handle": threading.Lock()}).status["uses"] is S.SUCCEEDED


class TestStores:
    def test_default_store_is_dot_flowdeco_in_the_working_directory(self, tmp_path: Path) -> None:
        fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: 1)], name="p").run()
        assert (tmp_path / ".flowdeco" / ".gitignore").read_text().splitlines()[-1] == "*"
        assert list((tmp_path / ".flowdeco" / "objects").rglob("*"))
        assert len(list((tmp_path / ".flowdeco" / "runs").glob("p-*/*.jsonl"))) == 1

    def test_store_none_writes_nothing_and_always_runs(self, tmp_path: Path) -> None:
        calls: list[int] = []
        pipe = fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: calls.append(1))])
        pipe.run(store=None)
        pipe.run(store=None)
        assert calls == [1, 1]
        assert not (tmp_path / ".flowdeco").exists()
        assert fd.Pipeline([], store=None).runs() == []

    def test_a_directory_or_a_store_per_pipeline_or_per_run(self, tmp_path: Path) -> None:
        calls: list[int] = []
        node = fd.node(name="f", run_in="inline")(lambda: calls.append(1) or 1)
        pipe = fd.Pipeline([node], store=tmp_path / "mine")
        pipe.run()
        assert pipe.run().status["f"] is S.CACHED
        assert (tmp_path / "mine" / "objects").is_dir()
        assert pipe.run(store="elsewhere").status["f"] is S.SUCCEEDED
        memory = fd.MemoryStore()
        assert pipe.run(store=memory).status["f"] is S.SUCCEEDED
        assert pipe.run(store=memory).status["f"] is S.CACHED
        assert calls == [1, 1, 1]

    def test_writes_leave_the_critical_path_and_the_run_waits_for_them(self) -> None:
        saving = threading.Event()
        release = threading.Event()

        class SlowStore(fd.MemoryStore):
            def save(self, key: str, body: bytes) -> None:
                saving.set()
                assert release.wait(10), "the child never ran while its parent was saved"
                super().save(key, body)

        @fd.node(run_in="inline")
        def parent() -> int:
            return 1

        @fd.node
        def child(parent: int) -> int:
            # Runs while the parent's checkpoint is still being written.
            assert saving.wait(10)
            release.set()
            return parent + 1

        store = SlowStore()
        result = fd.Pipeline([parent, child], store=store).run()
        assert result["child"] == 2
        assert len(store._objects) == 2  # both written before run() returned

    def test_a_failing_store_warns_and_loses_no_value(self) -> None:
        class FullDisk(fd.MemoryStore):
            def save(self, key: str, body: bytes) -> None:
                raise OSError(28, "No space left on device")

        @fd.node(run_in="inline")
        def value() -> int:
            return 7

        pipe = fd.Pipeline([value], store=FullDisk())
        with pytest.warns(fd.CheckpointWarning, match="node 'value': checkpoint not written"):
            assert pipe.run()["value"] == 7
        (record,) = pipe.runs()
        assert record.nodes["value"]["stored"] is False


class TestRunRecords:
    def test_each_node_is_recorded_with_key_status_and_timing(self) -> None:
        @fd.node(run_in="inline")
        def ok() -> int:
            return 1

        @fd.node(run_in="inline")
        def bad(ok: int) -> int:
            raise ValueError("no")

        @fd.node(run_in="inline")
        def later(bad: int) -> int:
            return bad

        pipe = fd.Pipeline([ok, bad, later], name="recorded")
        result = pipe.run(on_error="continue")
        (record,) = pipe.runs()
        assert record.run_id == result.run_id
        assert record.finished and not record.ok
        start = record.entries[0]
        assert start["event"] == "start" and start["outputs"] == ["ok", "bad", "later"]
        nodes = record.nodes
        assert {n: e["status"] for n, e in nodes.items()} == {
            "ok": "succeeded",
            "bad": "failed",
            "later": "skipped",
        }
        assert len(nodes["ok"]["key"]) == 40 and nodes["ok"]["stored"] is True
        assert nodes["ok"]["seconds"] >= 0

    def test_a_run_that_ends_well_is_ok(self) -> None:
        pipe = fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: 1)])
        pipe.run()
        pipe.run()
        assert [r.ok for r in pipe.runs()] == [True, True]
        assert [r.nodes["f"]["status"] for r in pipe.runs()] == ["succeeded", "cached"]


def _flaky_pipeline(calls: list[str], fail: Mapping[str, bool]) -> fd.Pipeline:
    @fd.node(run_in="inline", cache=False)
    def fetched() -> int:
        calls.append("fetched")
        return 1

    @fd.node(run_in="inline", cache=False)
    def other() -> int:
        calls.append("other")
        return 2

    @fd.node(run_in="inline")
    def combined(fetched: int, other: int) -> int:
        calls.append("combined")
        if fail["combined"]:
            raise RuntimeError("flaky")
        return fetched + other

    return fd.Pipeline([fetched, other, combined], name="flaky")


class TestResume:
    def test_after_a_failure_only_unfinished_nodes_run(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline")
        def a() -> int:
            calls.append("a")
            return 1

        @fd.node(run_in="inline")
        def b(a: int, fail: bool) -> int:
            calls.append("b")
            if fail:
                raise RuntimeError("b failed")
            return a + 1

        pipe = fd.Pipeline([a, b])
        with pytest.raises(fd.NodeFailed):
            pipe.run({"fail": True})
        calls.clear()
        assert pipe.run({"fail": False})["b"] == 2
        assert calls == ["b"]

    def test_resume_by_id_reuses_cache_false_nodes_that_finished(self) -> None:
        calls: list[str] = []
        fail = {"combined": True}
        pipe = _flaky_pipeline(calls, fail)
        with pytest.raises(fd.NodeFailed) as info:
            pipe.run()
        failed_run = info.value.result.run_id
        calls.clear()
        fail["combined"] = False
        result = pipe.run(resume=failed_run)
        assert calls == ["combined"]
        assert result.status == {"fetched": S.CACHED, "other": S.CACHED, "combined": S.SUCCEEDED}
        assert pipe.runs()[-1].entries[0]["resumes"] == failed_run

    def test_resume_true_takes_the_latest_unfinished_run(self) -> None:
        calls: list[str] = []
        fail = {"combined": True}
        pipe = _flaky_pipeline(calls, fail)
        with pytest.raises(fd.NodeFailed):
            pipe.run()
        fail["combined"] = False
        pipe.run()  # a fresh run: cache=False nodes run again
        assert calls.count("fetched") == 2
        before = len(calls)  # not calls.clear(): the nodes' version holds what calls holds
        # The latest run that did not end well is the first one; nothing newer is unfinished.
        result = pipe.run(resume=True)
        assert calls[before:] == []  # combined is cached; the rest come from the resumed run
        assert set(result.status.values()) == {S.CACHED}

    def test_resume_true_with_nothing_to_resume_just_runs(self) -> None:
        pipe = fd.Pipeline([fd.node(name="f", run_in="inline", cache=False)(lambda: 1)])
        assert pipe.run(resume=True).status["f"] is S.SUCCEEDED

    def test_resume_of_an_unknown_run_names_it(self) -> None:
        pipe = fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: 1)], name="p")
        pipe.run()
        with pytest.raises(fd.ConfigurationError, match="no run 'nope' to resume; its latest"):
            pipe.run(resume="nope")

    def test_resume_does_not_reuse_a_node_whose_inputs_changed(self) -> None:
        calls: list[str] = []

        @fd.node(run_in="inline", cache=False)
        def scaled(x: int) -> int:
            calls.append("scaled")
            return x * 2

        @fd.node(run_in="inline")
        def broken(scaled: int) -> int:
            raise RuntimeError("always")

        pipe = fd.Pipeline([scaled, broken])
        with pytest.raises(fd.NodeFailed) as info:
            pipe.run({"x": 1})
        with pytest.raises(fd.NodeFailed) as again:
            pipe.run({"x": 2}, resume=info.value.result.run_id)
        assert calls == ["scaled", "scaled"]
        assert again.value.result["scaled"] == 4


class TestTracing:
    def test_cached_nodes_get_zero_length_spans_marked_as_hits(self) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))

        @fd.node(run_in="inline")
        def traced() -> int:
            return 1

        pipe = fd.Pipeline([traced], tracer_provider=provider)
        pipe.run()
        exporter.clear()
        pipe.run()
        (span,) = [s for s in exporter.get_finished_spans() if s.name == "pipeline.traced (cached)"]
        attributes = span.attributes or {}
        assert attributes["flowdeco.cache.hit"] is True
        assert attributes["flowdeco.node.status"] == "cached"
        assert span.start_time is not None
        assert span.end_time == span.start_time + 1  # ns: Jaeger warns about a span of 0
        provider.shutdown()


def _nodes_in(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    return [e["node"] for e in entries if "node" in e]


def test_run_record_files_are_json_lines(tmp_path: Path) -> None:
    """The record is readable without flowdeco: one JSON object per line."""
    fd.Pipeline([fd.node(name="f", run_in="inline")(lambda: 1)], name="p").run()
    (file,) = (tmp_path / ".flowdeco" / "runs").glob("p-*/*.jsonl")
    entries = [json.loads(line) for line in file.read_text().splitlines()]
    assert [e.get("event") for e in entries] == ["start", None, "end"]
    assert _nodes_in(entries) == ["f"]
