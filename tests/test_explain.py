"""``RunResult.explain(name)``: why a node ran or was reused, as a record and as one line.

Every reason of ``fd.REASONS`` is produced by a real run here, and both the structured
fields of the ``fd.Explanation`` and its exact ``str()`` are checked. Most cases run in
this process with a store under ``tmp_path``; the cases that edit code (a helper, a
node's body, a module constant, a default argument) write a real project and run it in
new processes, as a user editing their files between two runs does (``Project`` of
``test_reuse_edits``).
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from typing import TYPE_CHECKING, Any

import attrs
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_reuse_edits import Project

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

S = fd.Status
UTC_TIME = "%Y-%m-%d %H:%M:%S UTC"


def _started(pipe: fd.Pipeline, store: Path, run_id: str) -> str:
    """The start time of run ``run_id`` as its record says it, as explanations print it."""
    (record,) = [r for r in pipe.runs(store) if r.run_id == run_id]
    (start,) = [e["time"] for e in record.entries if e.get("event") == "start"]
    return time.strftime(UTC_TIME, time.gmtime(start))


def _age(path: Path, seconds: float) -> None:
    """Set a file's modification time ``seconds`` into the past (a fresh file is re-hashed
    whatever its stat says, so a test that relies on the stat cache ages its files)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def _object_file(pipe: fd.Pipeline, store: Path, name: str) -> Path:
    """The file holding the value node ``name`` stored in the latest run."""
    key = pipe.runs(store)[-1].nodes[name]["key"]
    return store / "objects" / key[:2] / key


# -- the record -------------------------------------------------------------------------------


@fd.node(run_in="inline")
def total(x: int) -> int:
    return x * 2


@fd.node(run_in="inline")
def child(total: int) -> int:
    return total + 1


class TestRecord:
    def test_first_run_says_nothing_was_stored(self, tmp_path: Path) -> None:
        """A node's first run: outcome "ran", reason "new", no changes and no run id; the
        record is a frozen ``fd.Explanation`` and reads "ran: nothing stored"."""
        result = fd.Pipeline([total, child]).run({"x": 1}, store=tmp_path / "store")
        for name in ("total", "child"):
            explanation = result.explain(name)
            assert isinstance(explanation, fd.Explanation)
            assert explanation == fd.Explanation(
                name, "ran", "new", changes=(), run_id=None, detail="nothing stored"
            )
            assert str(explanation) == "ran: nothing stored"
            assert explanation.reason in fd.REASONS
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            explanation.reason = "reused"  # type: ignore[misc]

    def test_unknown_name_raises(self, tmp_path: Path) -> None:
        """A name that is no node of the run raises ``UnknownNodeError`` naming the run's
        nodes."""
        result = fd.Pipeline([total, child]).run({"x": 1}, store=tmp_path / "store")
        with pytest.raises(fd.UnknownNodeError, match=r"'nope' is not a node of run .*total"):
            result.explain("nope")

    def test_a_node_outside_the_plan_is_unknown(self, tmp_path: Path) -> None:
        """A node of the pipeline that the run did not plan (``outputs=``) is no node of
        that run either."""
        result = fd.Pipeline([total, child]).run(
            {"x": 1}, outputs="total", store=tmp_path / "store"
        )
        assert str(result.explain("total")) == "ran: nothing stored"
        with pytest.raises(fd.UnknownNodeError):
            result.explain("child")

    def test_more_than_three_changes_are_counted(self, tmp_path: Path) -> None:
        """Five inputs changed at once: all five are in ``changes``; ``str()`` shows the
        first three and "and 2 more"."""

        @fd.node(run_in="inline")
        def many(a: int, b: int, c: int, d: int, e: int) -> int:
            return a + b + c + d + e

        pipe, store = fd.Pipeline([many]), tmp_path / "store"
        pipe.run(dict.fromkeys("abcde", 1), store=store)
        explanation = pipe.run(dict.fromkeys("abcde", 2), store=store).explain("many")
        assert explanation.reason == "changed"
        assert explanation.changes == tuple(f"input {n!r} changed" for n in "abcde")
        assert str(explanation) == (
            "ran: input 'a' changed; input 'b' changed; input 'c' changed; and 2 more"
        )


# -- reused, resumed ------------------------------------------------------------------------


class TestReused:
    def test_second_run_names_the_run_and_its_time(self, tmp_path: Path) -> None:
        """Same code, same inputs: each node is "reused", with the id of the run that
        stored its value and that run's start time (UTC) in the line."""
        pipe, store = fd.Pipeline([total, child]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        second = pipe.run({"x": 1}, store=store)
        when = _started(pipe, store, first.run_id)
        for name in ("total", "child"):
            assert second.status[name] is S.CACHED
            explanation = second.explain(name)
            assert (explanation.outcome, explanation.reason) == ("reused", "reused")
            assert explanation.run_id == first.run_id
            assert explanation.changes == ()
            assert str(explanation) == (
                f"reused: same code and inputs as run {first.run_id} at {when}"
            )
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", when)

    def test_third_run_names_the_run_that_stored_the_value(self, tmp_path: Path) -> None:
        """The value a third run reuses is the one the first run stored; the second run
        only reused it as well, so the explanation names the first run."""
        pipe, store = fd.Pipeline([total]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        pipe.run({"x": 1}, store=store)
        third = pipe.run({"x": 1}, store=store)
        assert third.explain("total").run_id == first.run_id

    def test_explaining_an_old_result_ignores_later_runs(self, tmp_path: Path) -> None:
        """A result explained after later runs still says what its run found: a first run
        still "ran: nothing stored", not "the value stored by run <a later run> ... is
        gone"; a reused node still names a run before it."""
        pipe, store = fd.Pipeline([total]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        second = pipe.run({"x": 1}, store=store)
        pipe.run({"x": 1}, store=store, cache=False)  # stores the same key again
        assert str(first.explain("total")) == "ran: nothing stored"
        assert second.explain("total").run_id == first.run_id

    @pytest.mark.parametrize("by_id", [True, False], ids=["resume=id", "resume=True"])
    def test_resumed_run_reuses_what_finished(self, tmp_path: Path, by_id: bool) -> None:
        """A run that failed on one node, resumed: every node that finished in it, the
        ``cache=False`` one and the cached one alike (a node whose key the resumed run
        finished with is resumed before any other lookup), is "reused: finished in run
        <id>, which this run resumes". The failed node and its skipped child now run; a
        next plain run reuses the cached nodes as usual and runs the ``cache=False`` one.
        """
        failing = [True]

        @fd.node(run_in="inline")
        def a(x: int) -> int:
            return x + 1

        @fd.node(run_in="inline", cache=False)
        def b(x: int) -> int:
            return x + 2

        @fd.node(run_in="inline")
        def c(a: int, b: int) -> int:
            if failing[0]:
                raise ValueError("boom")
            return a + b

        @fd.node(run_in="inline")
        def d(c: int) -> int:
            return c * 10

        pipe, store = fd.Pipeline([a, b, c, d]), tmp_path / "store"
        broken = pipe.run({"x": 1}, store=store, on_error="continue")
        assert (broken.status["c"], broken.status["d"]) == (S.FAILED, S.SKIPPED)
        assert str(broken.explain("c")) == "ran: nothing stored"
        assert str(broken.explain("d")) == "not run: skipped"
        failing[0] = False
        resumed = pipe.run({"x": 1}, store=store, resume=broken.run_id if by_id else True)
        assert resumed["d"] == 50
        for name in ("a", "b"):
            assert resumed.status[name] is S.CACHED
            explanation = resumed.explain(name)
            assert explanation == fd.Explanation(
                name,
                "reused",
                "resumed",
                run_id=broken.run_id,
                detail=f"finished in run {broken.run_id}, which this run resumes",
            )
            assert str(explanation) == (
                f"reused: finished in run {broken.run_id}, which this run resumes"
            )
        for name in ("c", "d"):
            assert resumed.status[name] is S.SUCCEEDED
            assert str(resumed.explain(name)) == "ran: nothing stored"
        after = pipe.run({"x": 1}, store=store)
        assert after.explain("a").reason == "reused"
        assert str(after.explain("b")) == "ran: cache=False"


# -- inputs -----------------------------------------------------------------------------------


class TestInputs:
    def test_an_input_value_changed(self, tmp_path: Path) -> None:
        """``{"x": 1}`` then ``{"x": 2}``: the node reading x "ran: input 'x' changed",
        compared with the first run; its child "ran: parent 'total' has a new value"."""
        pipe, store = fd.Pipeline([total, child]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        second = pipe.run({"x": 2}, store=store)
        explanation = second.explain("total")
        assert explanation == fd.Explanation(
            "total", "ran", "changed", ("input 'x' changed",), run_id=first.run_id
        )
        assert str(explanation) == "ran: input 'x' changed"
        assert second.explain("child").changes == ("parent 'total' has a new value",)
        assert str(second.explain("child")) == "ran: parent 'total' has a new value"

    def test_a_path_input_whose_content_changed(self, tmp_path: Path) -> None:
        """The same ``Path`` input, its file edited (same size, another past mtime): "ran:
        input 'source' changed (orders.csv content)". Another ``Path`` (a copy of the
        file) is a new input value: "ran: input 'source' changed", without "content"."""

        @fd.node(run_in="inline")
        def rows(source: Path) -> list[str]:
            return source.read_text().splitlines()

        orders, copy = tmp_path / "orders.csv", tmp_path / "copy.csv"
        orders.write_text("sku,qty\na,1\n")
        _age(orders, 30)
        pipe, store = fd.Pipeline([rows]), tmp_path / "store"
        first = pipe.run({"source": orders}, store=store)
        assert pipe.run({"source": orders}, store=store).explain("rows").reason == "reused"
        orders.write_text("sku,qty\na,7\n")
        _age(orders, 20)
        edited = pipe.run({"source": orders}, store=store)
        assert edited["rows"] == ["sku,qty", "a,7"]
        explanation = edited.explain("rows")
        assert explanation == fd.Explanation(
            "rows",
            "ran",
            "changed",
            ("input 'source' changed (orders.csv content)",),
            run_id=first.run_id,
        )
        assert str(explanation) == "ran: input 'source' changed (orders.csv content)"
        copy.write_text(orders.read_text())
        _age(copy, 20)
        other = pipe.run({"source": copy}, store=store).explain("rows")
        assert (other.reason, other.run_id) == ("changed", edited.run_id)
        assert str(other) == "ran: input 'source' changed"

    def test_a_list_of_paths_whose_content_changed(self, tmp_path: Path) -> None:
        """An input holding several paths, one file edited: the line says the input's files
        changed, as it has no one file name to give."""

        @fd.node(run_in="inline")
        def texts(sources: list[Path]) -> list[str]:
            return [p.read_text() for p in sources]

        files = [tmp_path / "a.txt", tmp_path / "b.txt"]
        for file in files:
            file.write_text("1")
            _age(file, 30)
        pipe, store = fd.Pipeline([texts]), tmp_path / "store"
        pipe.run({"sources": files}, store=store)
        files[1].write_text("2")
        _age(files[1], 20)
        explanation = pipe.run({"sources": files}, store=store).explain("texts")
        assert str(explanation) == "ran: input 'sources' changed (the files it names)"

    def test_an_input_that_cannot_be_packed(self, tmp_path: Path) -> None:
        """A ``threading.Lock`` input: the node reading it has no key, "ran: input 'lock'
        cannot be checkpointed" (reason "input not versioned"), with a CheckpointWarning,
        and it runs again next time. A ``checkpoint=False`` node reading it gives its
        child no version: "parent not versioned", naming that parent."""

        @fd.node(run_in="inline")
        def locked(lock: Any) -> int:
            return 1

        @fd.node(run_in="inline", checkpoint=False)
        def connection(lock: Any) -> int:
            return 2

        @fd.node(run_in="inline")
        def query(connection: int) -> int:
            return connection * 10

        pipe, store = fd.Pipeline([locked, connection, query]), tmp_path / "store"
        for _ in range(2):
            with pytest.warns(fd.CheckpointWarning, match="input 'lock' cannot be checkpointed"):
                result = pipe.run({"lock": threading.Lock()}, store=store)
            for name in ("locked", "connection"):
                assert result.status[name] is S.SUCCEEDED
                explanation = result.explain(name)
                assert (explanation.outcome, explanation.reason) == ("ran", "input not versioned")
                assert str(explanation) == "ran: input 'lock' cannot be checkpointed"
            explanation = result.explain("query")
            assert (explanation.outcome, explanation.reason) == ("ran", "parent not versioned")
            assert str(explanation) == (
                "ran: parent 'connection' has no version (its value was not checkpointed)"
            )


# -- what the node says about itself ----------------------------------------------------------


class TestNodeOptions:
    def test_cache_false(self, tmp_path: Path) -> None:
        """``cache=False`` runs every time: reason "cache off", "ran: cache=False"."""

        @fd.node(run_in="inline", cache=False)
        def fresh(x: int) -> int:
            return x

        pipe, store = fd.Pipeline([fresh]), tmp_path / "store"
        for _ in range(2):
            explanation = pipe.run({"x": 1}, store=store).explain("fresh")
            assert explanation == fd.Explanation("fresh", "ran", "cache off", detail="cache=False")
            assert str(explanation) == "ran: cache=False"

    def test_run_level_cache_false(self, tmp_path: Path) -> None:
        """``run(..., cache=False)`` runs every node although all is stored: reason "run
        cache off", its meaning as the line; the next cached run reuses what it stored."""
        pipe, store = fd.Pipeline([total, child]), tmp_path / "store"
        pipe.run({"x": 1}, store=store)
        uncached = pipe.run({"x": 1}, store=store, cache=False)
        for name in ("total", "child"):
            assert uncached.status[name] is S.SUCCEEDED
            explanation = uncached.explain(name)
            assert (explanation.outcome, explanation.reason) == ("ran", "run cache off")
            assert str(explanation) == "ran: the run was started with cache=False"
        reused = pipe.run({"x": 1}, store=store).explain("total")
        assert (reused.reason, reused.run_id) == ("reused", uncached.run_id)

    def test_an_effect_runs_unless_cache_is_asked_for(self, tmp_path: Path) -> None:
        """A node annotated ``-> None`` runs on every run: reason "effect", with the hint to
        ``cache=True``; the same with ``cache=True`` is reused on the second run."""
        calls: list[str] = []

        @fd.node(run_in="inline")
        def notify(x: int) -> None:
            calls.append("notify")

        @fd.node(run_in="inline", cache=True)
        def notify_once(x: int) -> None:
            calls.append("notify_once")

        pipe, store = fd.Pipeline([notify, notify_once]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        first_once = first.explain("notify_once")
        second = pipe.run({"x": 1}, store=store)
        assert sorted(calls) == ["notify", "notify", "notify_once"]
        for result in (first, second):
            explanation = result.explain("notify")
            assert (explanation.outcome, explanation.reason) == ("ran", "effect")
            assert str(explanation) == (
                "ran: it returns None, so it runs for its effect (cache=True to reuse it)"
            )
        assert str(first_once) == "ran: nothing stored"
        assert second.status["notify_once"] is S.CACHED
        once = second.explain("notify_once")
        assert (once.reason, once.run_id) == ("reused", first.run_id)

    def test_checkpoint_false_and_its_child(self, tmp_path: Path) -> None:
        """``checkpoint=False`` stores nothing, so it runs every time: reason "checkpoint
        off". Its key stands for its value, so its child is reused while the node's code
        and inputs stay the same, and runs with "parent 'big' has a new value" when an
        input of the node changes."""

        @fd.node(run_in="inline", checkpoint=False)
        def big(x: int) -> list[int]:
            return [x] * 3

        @fd.node(run_in="inline")
        def small(big: list[int]) -> int:
            return len(big) * big[0]

        pipe, store = fd.Pipeline([big, small]), tmp_path / "store"
        runs, explained = [], []
        for x in (1, 1, 2):
            runs.append(result := pipe.run({"x": x}, store=store))
            explained.append({name: result.explain(name) for name in ("big", "small")})
        for result, explanations in zip(runs, explained, strict=True):
            assert result.status["big"] is S.SUCCEEDED
            explanation = explanations["big"]
            assert (explanation.outcome, explanation.reason) == ("ran", "checkpoint off")
            assert str(explanation) == "ran: the node says checkpoint=False: nothing is stored"
        first, second, third = runs
        assert str(explained[0]["small"]) == "ran: nothing stored"
        assert second.status["small"] is S.CACHED
        assert explained[1]["small"].run_id == first.run_id
        assert third["small"] == 6
        assert explained[2]["small"].changes == ("parent 'big' has a new value",)
        assert str(explained[2]["small"]) == "ran: parent 'big' has a new value"


class _Guarded:
    """An object whose state the codec cannot pack, so no version can be made of it."""

    def __init__(self, factor: int) -> None:
        self.buffer = io.StringIO(str(factor))

    def apply(self, x: int) -> int:
        return x * int(self.buffer.getvalue())


SCALER = _Guarded(2)


class TestUnversionable:
    def test_a_dependency_that_cannot_be_versioned(self, tmp_path: Path) -> None:
        """A node using a module-level object holding an ``io.StringIO`` runs on every
        run, warning each time: "ran: depends on 'SCALER.buffer' (a _io.StringIO object),
        which cannot be versioned". Its child, whose input is the same value, is reused."""

        @fd.node(run_in="inline")
        def scaled(x: int) -> int:
            return SCALER.apply(x)

        @fd.node(run_in="inline")
        def shifted(scaled: int) -> int:
            return scaled + 1

        pipe, store = fd.Pipeline([scaled, shifted]), tmp_path / "store"
        results = []
        for _ in range(2):
            with pytest.warns(fd.CheckpointWarning, match=r"'SCALER\.buffer' .* cannot be"):
                results.append(pipe.run({"x": 1}, store=store))
        for result in results:
            assert result.status["scaled"] is S.SUCCEEDED
            explanation = result.explain("scaled")
            assert (explanation.outcome, explanation.reason) == ("ran", "unversionable")
            assert str(explanation) == (
                "ran: depends on 'SCALER.buffer' (a _io.StringIO object), which cannot be versioned"
            )
        assert results[1].explain("shifted").reason == "reused"

    def test_cache_false_wins_over_unversionable(self, tmp_path: Path) -> None:
        """The same dependency on a ``cache=False`` node: no warning (it is never reused
        anyway), and the line says "cache=False"."""

        @fd.node(run_in="inline", cache=False)
        def scaled_each_time(x: int) -> int:
            return SCALER.apply(x)

        explanation = (
            fd.Pipeline([scaled_each_time])
            .run({"x": 1}, store=tmp_path / "store")
            .explain("scaled_each_time")
        )
        assert str(explanation) == "ran: cache=False"


# -- the store --------------------------------------------------------------------------------


class TestStore:
    def test_no_store(self) -> None:
        """``store=None``: reason "no store", "ran: the run had no store (store=None)"."""
        result = fd.Pipeline([total, child]).run({"x": 1}, store=None)
        for name in ("total", "child"):
            explanation = result.explain(name)
            assert (explanation.outcome, explanation.reason) == ("ran", "no store")
            assert str(explanation) == "ran: the run had no store (store=None)"

    def test_a_damaged_value_is_unreadable(self, tmp_path: Path) -> None:
        """A stored value overwritten with garbage: the node runs again with a
        CheckpointWarning, reason "unreadable"; its rewritten value is reused next time."""
        pipe, store = fd.Pipeline([total]), tmp_path / "store"
        pipe.run({"x": 1}, store=store)
        _object_file(pipe, store, "total").write_bytes(b"garbage")
        with pytest.warns(fd.CheckpointWarning, match="damaged checkpoint"):
            second = pipe.run({"x": 1}, store=store)
        assert second.status["total"] is S.SUCCEEDED
        explanation = second.explain("total")
        assert explanation == fd.Explanation("total", "ran", "unreadable")
        assert str(explanation) == "ran: its stored value could not be read"
        third = pipe.run({"x": 1}, store=store).explain("total")
        assert (third.reason, third.run_id) == ("reused", second.run_id)

    def test_a_deleted_value_is_gone(self, tmp_path: Path) -> None:
        """The stored value deleted, the run records kept: the node runs again with reason
        "gone", naming the run that stored the value."""
        pipe, store = fd.Pipeline([total, child]), tmp_path / "store"
        first = pipe.run({"x": 1}, store=store)
        _object_file(pipe, store, "total").unlink()
        second = pipe.run({"x": 1}, store=store)
        assert second.status["total"] is S.SUCCEEDED
        explanation = second.explain("total")
        assert (explanation.outcome, explanation.reason) == ("ran", "gone")
        assert (explanation.run_id, explanation.changes) == (first.run_id, ())
        assert str(explanation) == (
            f"ran: the value stored by run {first.run_id} under the same code and inputs is gone"
        )
        assert second.explain("child").reason == "reused"  # the same value again

    def test_an_output_file_deleted_before_the_next_run(self, tmp_path: Path) -> None:
        """A node returning a ``Path``, the file deleted before the next run: the stored
        value names a missing file, so the node runs again and writes the file; reason
        "output file missing"."""
        out = tmp_path / "out.txt"

        @fd.node(run_in="inline")
        def written(x: int) -> Path:
            out.write_text(str(x))
            return out

        pipe, store = fd.Pipeline([written]), tmp_path / "store"
        pipe.run({"x": 1}, store=store)
        out.unlink()
        second = pipe.run({"x": 1}, store=store)
        assert second.status["written"] is S.SUCCEEDED
        assert out.read_text() == "1"
        explanation = second.explain("written")
        assert explanation == fd.Explanation("written", "ran", "output file missing")
        assert str(explanation) == "ran: a file its stored value names is missing"

    def test_nodes_that_did_not_run(self, tmp_path: Path) -> None:
        """A node whose parent failed: "not run: skipped" (``on_error="continue"``), or
        "not run: pending" when the run stopped at the failure (``on_error="raise"``,
        the result of ``NodeFailed``). The failed node itself ran."""

        @fd.node(run_in="inline")
        def broken(x: int) -> int:
            raise ValueError(x)

        @fd.node(run_in="inline")
        def after(broken: int) -> int:
            return broken

        pipe, store = fd.Pipeline([broken, after]), tmp_path / "store"
        result = pipe.run({"x": 1}, store=store, on_error="continue")
        skipped = result.explain("after")
        assert skipped == fd.Explanation("after", "not run", "not run", detail="skipped")
        assert str(skipped) == "not run: skipped"
        assert result.explain("broken").outcome == "ran"
        with pytest.raises(fd.NodeFailed) as failed:
            pipe.run({"x": 1}, store=store)
        stopped = failed.value.result
        assert stopped is not None
        assert str(stopped.explain("after")) == "not run: pending"


# -- manifests and spans ----------------------------------------------------------------------


@fd.node(run_in="inline")
def dumped(x: list[int]) -> str:
    return json.dumps(x)


class TestManifest:
    def test_a_node_using_the_standard_library_records_python(self, tmp_path: Path) -> None:
        """A node calling ``json.dumps`` has a "python" entry (the interpreter's version
        stands for the standard library) in the manifest its run record carries, beside
        its own code and its input."""
        pipe, store = fd.Pipeline([dumped]), tmp_path / "store"
        pipe.run({"x": [1]}, store=store)
        manifest = pipe.runs(store)[-1].nodes["dumped"]["manifest"]
        labels = [entry.rpartition("=")[0] for entry in manifest]
        assert "python" in labels
        assert f"{__name__}.dumped" in labels
        assert labels[-1] == "@x"

    def test_each_code_entry_appears_once_with_its_digest(self, tmp_path: Path) -> None:
        """Every entry of a manifest is ``label=digest`` with a digest, and the node's own
        function is one entry under its plain name (no ``#2``)."""
        pipe, store = fd.Pipeline([dumped]), tmp_path / "store"
        pipe.run({"x": [1]}, store=store)
        manifest = pipe.runs(store)[-1].nodes["dumped"]["manifest"]
        assert all(re.fullmatch(r"[^=]+=[0-9a-f]{16}", entry) for entry in manifest), manifest
        labels = [entry.rpartition("=")[0] for entry in manifest]
        assert labels == [f"{__name__}.dumped", "python", "@x"]

    def test_node_spans_carry_the_reason_and_the_manifest(self, tmp_path: Path) -> None:
        """Each node span has ``flowdeco.cache.reason``, the lookup's word ("not stored" on
        a first run, "reused" on the next), and ``flowdeco.cache.manifest``, the manifest
        of the node's key, as the run record has it."""
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        pipe, store = fd.Pipeline([total, child]), tmp_path / "store"
        try:
            reasons: list[dict[str, Any]] = []
            for _ in range(2):
                exporter.clear()
                pipe.run({"x": 1}, store=store, tracer_provider=provider)
                spans = {
                    str(s.attributes["flowdeco.node"]): dict(s.attributes)
                    for s in exporter.get_finished_spans()
                    if s.attributes and "flowdeco.node" in s.attributes
                }
                reasons.append({n: a["flowdeco.cache.reason"] for n, a in spans.items()})
                if len(reasons) == 1:
                    recorded = pipe.runs(store)[-1].nodes
                    for name, attributes in spans.items():
                        manifest = attributes["flowdeco.cache.manifest"]
                        assert list(manifest) == recorded[name]["manifest"]
                        assert any(entry.startswith("@") for entry in manifest)
        finally:
            provider.shutdown()
        assert reasons == [
            {"total": "not stored", "child": "not stored"},
            {"total": "reused", "child": "reused"},
        ]


# -- code edited between runs, in new processes -----------------------------------------------

EXPLAIN_RUN = """
import importlib
import json
import sys
import warnings
from pathlib import Path

del sys.path[0]  # the project's modules come from PYTHONPATH
import flowdeco as fd

config = json.loads(sys.argv[1])
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    pipe = fd.Pipeline.from_module(importlib.import_module(config["module"]))
    result = pipe.run(config["inputs"], store=config["store"])
nodes = {}
for name in pipe.order:
    e = result.explain(name)
    nodes[name] = {
        "status": str(result.status[name]),
        "value": result.values.get(name),
        "outcome": e.outcome,
        "reason": e.reason,
        "changes": list(e.changes),
        "run_id": e.run_id,
        "str": str(e),
    }
warned = [[w.category.__name__, str(w.message)] for w in caught]
report = {"run_id": result.run_id, "nodes": nodes, "warnings": warned}
Path(sys.argv[2]).write_text(json.dumps(report))
"""


class Explained(dict[str, dict[str, Any]]):
    """One run in a new process: ``{node: {status, value, outcome, reason, changes, run_id,
    str}}``, with the run's id."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        super().__init__(report["nodes"])
        self.run_id: str = report["run_id"]
        assert report["warnings"] == [], report["warnings"]


def _explained_run(project: Project, inputs: Mapping[str, Any]) -> Explained:
    """Run ``project``'s pipeline once in a new process, as ``Project.run`` does, and return
    each node's explanation."""
    project.runs += 1
    script = project.dir.parent / "explain_run.py"
    script.write_text(textwrap.dedent(EXPLAIN_RUN))
    out = project.dir.parent / f"explained-{project.runs}.json"
    config = {"module": project.module, "inputs": dict(inputs), "store": str(project.store)}
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            [str(project.dir), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONHASHSEED": str(project.runs),
    }
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(config), str(out)],
        cwd=project.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"run {project.runs} failed:\n{done.stdout}\n{done.stderr}"
    return Explained(json.loads(out.read_text()))


UTILS = '''
"""Helpers of the project."""


def attr_helper(x):
    return x + 1


def steady_helper(x):
    return x * 100
'''
FLOW = """
import flowdeco as fd
import utils

CONFIG = {"k": 1}


@fd.node
def total(x):
    return utils.attr_helper(x)


@fd.node
def child(total):
    return total * 2


@fd.node
def steady(x):
    return utils.steady_helper(x)


@fd.node
def steady_child(steady):
    return steady + 1


@fd.node
def own(x):
    return x * 3


@fd.node
def configured(x):
    return x * CONFIG["k"]


@fd.node
def defaulted(x, k=2):
    return x * k


@fd.node
def untouched(x):
    return x - 1
"""


@attrs.frozen
class Edited:
    """A project run, edited in place (helpers, a body, a constant, a default), run again."""

    first: Explained
    second: Explained


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Edited:
    """The project of ``UTILS`` and ``FLOW`` run once, then edited, then run again: each in
    a new process. ``attr_helper`` now returns another value; ``steady_helper`` is rewritten
    to return the same one; ``own``'s body, ``CONFIG`` and ``defaulted``'s default change.
    """
    p = Project(tmp_path_factory.mktemp("edited"))
    p.write("utils.py", UTILS)
    p.write("flow.py", FLOW)
    first = _explained_run(p, {"x": 10})
    p.edit("utils.py", "return x + 1", "return x + 2")
    p.edit("utils.py", "return x * 100", "return 100 * x")
    p.edit("flow.py", "return x * 3", "return x * 4")
    p.edit("flow.py", 'CONFIG = {"k": 1}', 'CONFIG = {"k": 5}')
    p.edit("flow.py", "def defaulted(x, k=2)", "def defaulted(x, k=3)")
    return Edited(first, _explained_run(p, {"x": 10}))


def _line(source: str, text: str) -> int:
    """The line number of the one line of ``source`` (as written to its file) that is
    ``text``."""
    lines = textwrap.dedent(source).lstrip("\n").splitlines()
    assert lines.count(text) == 1, f"test bug: {text!r} is not one line of the source"
    return lines.index(text) + 1


class TestEditedCode:
    def test_the_first_run_stored_everything(self, edited: Edited) -> None:
        """Before the edits, in a new process and a new store: every node "ran: nothing
        stored"."""
        assert {n: e["str"] for n, e in edited.first.items()} == dict.fromkeys(
            edited.first, "ran: nothing stored"
        )

    def test_an_edited_helper_is_named_with_its_file_and_line(self, edited: Edited) -> None:
        """``utils.attr_helper``'s body edited: the node calling it "ran: helper
        utils.attr_helper changed (utils.py:N)", N the helper's ``def`` line, compared
        with the first run."""
        line = _line(UTILS, "def attr_helper(x):")
        explanation = edited.second["total"]
        assert explanation["status"] == "succeeded"
        assert (explanation["reason"], explanation["run_id"]) == ("changed", edited.first.run_id)
        assert explanation["str"] == f"ran: helper utils.attr_helper changed (utils.py:{line})"

    def test_an_edited_helper_reruns_with_its_file_and_line(self, edited: Edited) -> None:
        """Whatever the label, the edited helper's node ran with one change, which names
        the helper and the line of its ``def`` in utils.py."""
        line = _line(UTILS, "def attr_helper(x):")
        explanation = edited.second["total"]
        assert (explanation["status"], explanation["value"]) == ("succeeded", 12)
        assert (explanation["outcome"], explanation["reason"]) == ("ran", "changed")
        (change,) = explanation["changes"]
        assert change.startswith("helper utils.attr_helper")
        assert change.endswith(f" changed (utils.py:{line})")

    def test_the_child_of_a_new_value_names_its_parent(self, edited: Edited) -> None:
        """The child of the node whose helper now computes another value: "ran: parent
        'total' has a new value"."""
        explanation = edited.second["child"]
        assert (explanation["status"], explanation["value"]) == ("succeeded", 24)
        assert explanation["changes"] == ["parent 'total' has a new value"]
        assert explanation["str"] == "ran: parent 'total' has a new value"

    def test_a_rerun_with_the_same_bytes_cuts_off_its_child(self, edited: Edited) -> None:
        """``steady_helper`` rewritten to compute the same value: its node ran (the helper
        changed), but produced the same bytes, so its child is reused from the first
        run (early cutoff)."""
        steady = edited.second["steady"]
        assert (steady["status"], steady["reason"]) == ("succeeded", "changed")
        assert steady["changes"][0].startswith("helper utils.steady_helper")
        explanation = edited.second["steady_child"]
        assert (explanation["status"], explanation["value"]) == ("cached", 1001)
        assert (explanation["reason"], explanation["run_id"]) == ("reused", edited.first.run_id)
        assert explanation["str"].startswith(
            f"reused: same code and inputs as run {edited.first.run_id} at "
        )

    def test_an_edited_node_body(self, edited: Edited) -> None:
        """The node's own body edited: "ran: its code changed (flow.py:N)", N the first
        line of its definition (the decorator's, as ``co_firstlineno`` counts)."""
        line = _line(FLOW, "def own(x):") - 1
        explanation = edited.second["own"]
        assert (explanation["status"], explanation["value"]) == ("succeeded", 40)
        assert explanation["changes"] == [f"its code changed (flow.py:{line})"]
        assert explanation["str"] == f"ran: its code changed (flow.py:{line})"

    def test_an_edited_module_constant(self, edited: Edited) -> None:
        """``CONFIG = {"k": 1}`` edited to ``{"k": 5}``: "ran: value flow.CONFIG changed"."""
        explanation = edited.second["configured"]
        assert (explanation["status"], explanation["value"]) == ("succeeded", 50)
        assert explanation["changes"] == ["value flow.CONFIG changed"]
        assert explanation["str"] == "ran: value flow.CONFIG changed"

    def test_an_edited_default_argument(self, edited: Edited) -> None:
        """``def defaulted(x, k=2)`` edited to ``k=3``: "ran: the default of 'k' changed"."""
        explanation = edited.second["defaulted"]
        assert (explanation["status"], explanation["value"]) == ("succeeded", 30)
        assert explanation["changes"] == ["the default of 'k' changed"]
        assert explanation["str"] == "ran: the default of 'k' changed"

    def test_an_untouched_node_is_reused(self, edited: Edited) -> None:
        """A node none of the edits reach is reused from the first run."""
        explanation = edited.second["untouched"]
        assert (explanation["status"], explanation["value"]) == ("cached", 9)
        assert (explanation["outcome"], explanation["run_id"]) == ("reused", edited.first.run_id)
