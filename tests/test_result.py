"""RunResult, Status and TRANSITIONS."""

from __future__ import annotations

import calendar
import re
import time
from typing import Any

import pytest

import flowdeco as fd

RUN_ID = re.compile(r"^\d{8}T\d{6}\.\d{9}Z-[0-9a-f]{8}$")


def _pipeline() -> fd.Pipeline:
    """``base -> double -> label``, plus ``side`` reading ``base``; every node inline."""

    @fd.node(run_in="inline")
    def base(start: int) -> int:
        return start + 1

    @fd.node(run_in="inline")
    def double(base: int) -> int:
        return base * 2

    @fd.node(run_in="inline")
    def label(double: int) -> str:
        return f"#{double}"

    @fd.node(run_in="inline")
    def side(base: int) -> None:
        return None

    return fd.Pipeline([base, double, label, side], name="numbers")


def _failing() -> fd.Pipeline:
    """``ok -> boom -> after``, with ``fine`` independent; ``boom`` raises."""

    @fd.node(run_in="inline")
    def ok() -> int:
        return 1

    @fd.node(run_in="inline")
    def boom(ok: int) -> int:
        raise ValueError("bad value 42")

    @fd.node(run_in="inline")
    def after(boom: int) -> int:
        return boom

    @fd.node(run_in="inline")
    def fine() -> int:
        return 2

    return fd.Pipeline([ok, boom, after, fine], name="fails")


@pytest.fixture
def result() -> fd.RunResult:
    """A run of ``_pipeline`` asking for ``label`` and ``base`` (in that order)."""
    return _pipeline().run(inputs={"start": 1}, outputs=["label", "base"])


@pytest.fixture
def failed() -> fd.RunResult:
    """A run of ``_failing`` with ``on_error="continue"``, asking for every node."""
    return _failing().run(on_error="continue")


class TestMapping:
    def test_getitem(self, result: fd.RunResult) -> None:
        assert result["label"] == "#4"
        assert result["base"] == 2

    def test_contains(self, result: fd.RunResult) -> None:
        assert "label" in result
        assert "base" in result
        assert "double" not in result  # computed, but not requested
        assert "nope" not in result

    def test_iteration_follows_requested_order(self, result: fd.RunResult) -> None:
        assert list(result) == ["label", "base"]
        assert len(result) == 2

    def test_keys_items_dict(self, result: fd.RunResult) -> None:
        assert list(result.keys()) == ["label", "base"]
        assert list(result.items()) == [("label", "#4"), ("base", 2)]
        assert dict(result) == {"label": "#4", "base": 2}

    def test_get(self, result: fd.RunResult) -> None:
        assert result.get("label") == "#4"
        assert result.get("double") is None
        assert result.get("double", "fallback") == "fallback"
        assert result.get("nope", 0) == 0

    def test_none_is_a_value(self) -> None:
        result = _pipeline().run(inputs={"start": 1}, outputs=["side"])
        assert "side" in result
        assert result["side"] is None
        assert result.get("side", "fallback") is None
        assert dict(result) == {"side": None}

    def test_values_holds_the_outputs_by_default(self, result: fd.RunResult) -> None:
        """``double`` ran, and was released once ``label`` had read it."""
        assert result.values == {"base": 2, "label": "#4"}

    def test_keep_values_holds_every_computed_node(self) -> None:
        result = _pipeline().run(inputs={"start": 1}, outputs=["label", "base"], keep_values=True)
        assert result.values == {"base": 2, "double": 4, "label": "#4"}
        assert dict(result) == {"label": "#4", "base": 2}  # the mapping is still the outputs

    def test_all_outputs_by_default(self) -> None:
        result = _pipeline().run(inputs={"start": 1})
        assert dict(result) == {"base": 2, "double": 4, "label": "#4", "side": None}
        assert result.outputs == ("base", "double", "label", "side")

    def test_failed_outputs_are_left_out(self, failed: fd.RunResult) -> None:
        assert dict(failed) == {"ok": 1, "fine": 2}
        assert len(failed) == 2
        assert "boom" not in failed
        assert failed.get("boom", "none") == "none"
        assert failed.values == {"ok": 1, "fine": 2}

    def test_read_only(self, result: fd.RunResult) -> None:
        with pytest.raises(TypeError):
            result["label"] = "x"  # type: ignore[index]
        with pytest.raises(AttributeError):
            result.values = {}  # type: ignore[misc]


class TestOutputNotAvailable:
    def test_not_an_output(self, result: fd.RunResult) -> None:
        with pytest.raises(fd.OutputNotAvailableError) as info:
            result["double"]
        message = str(info.value)
        assert message.startswith("'double' is not an output")
        assert result.run_id in message
        assert "label, base" in message

    def test_unknown_name(self, result: fd.RunResult) -> None:
        with pytest.raises(fd.OutputNotAvailableError, match="'nope' is not an output"):
            result["nope"]

    def test_failed_output(self, failed: fd.RunResult) -> None:
        with pytest.raises(fd.OutputNotAvailableError) as info:
            failed["boom"]
        message = str(info.value)
        assert "'boom'" in message
        assert "has no value" in message
        assert "failed" in message
        assert "ValueError('bad value 42')" in message

    def test_skipped_output(self, failed: fd.RunResult) -> None:
        with pytest.raises(fd.OutputNotAvailableError) as info:
            failed["after"]
        message = str(info.value)
        assert "'after'" in message
        assert "has no value" in message
        assert "skipped" in message

    def test_is_a_key_error(self, result: fd.RunResult) -> None:
        with pytest.raises(KeyError):
            result["double"]
        with pytest.raises(fd.FlowdecoError):
            result["double"]

    def test_message_is_not_quoted(self, result: fd.RunResult) -> None:
        # KeyError would show repr(message); the error shows the message as written.
        with pytest.raises(fd.OutputNotAvailableError) as info:
            result["double"]
        assert str(info.value) == info.value.args[0]


class TestStatusAndErrors:
    def test_statuses_of_a_good_run(self, result: fd.RunResult) -> None:
        # Only the planned nodes: ``side`` was not needed for the outputs.
        assert result.status == {
            "base": fd.Status.SUCCEEDED,
            "double": fd.Status.SUCCEEDED,
            "label": fd.Status.SUCCEEDED,
        }
        assert result.errors == {}
        assert result.ok is True

    def test_statuses_of_a_failed_run(self, failed: fd.RunResult) -> None:
        assert failed.status == {
            "ok": fd.Status.SUCCEEDED,
            "boom": fd.Status.FAILED,
            "after": fd.Status.SKIPPED,
            "fine": fd.Status.SUCCEEDED,
        }
        assert set(failed.errors) == {"boom"}
        error = failed.errors["boom"]
        assert isinstance(error, ValueError)
        assert str(error) == "bad value 42"
        assert failed.ok is False

    def test_result_of_a_raising_run(self) -> None:
        with pytest.raises(fd.NodeFailed) as info:
            _failing().run()
        partial = info.value.result
        assert isinstance(partial, fd.RunResult)
        assert partial.ok is False
        assert partial.status["boom"] is fd.Status.FAILED
        assert isinstance(partial.errors["boom"], ValueError)

    def test_run_with_nothing_to_do(self) -> None:
        result = _pipeline().run(inputs={"double": 10}, outputs=["double"])
        assert result.status == {}
        assert result.ok is True
        assert dict(result) == {"double": 10}


class TestTimings:
    def test_epoch_seconds(self) -> None:
        before = time.time()
        result = _pipeline().run(inputs={"start": 1})
        after = time.time()
        assert set(result.started_at) == set(result.status)
        assert set(result.finished_at) == set(result.status)
        for name in result.status:
            start, end = result.started_at[name], result.finished_at[name]
            assert before - 0.01 <= start <= end <= after + 0.01, name

    def test_durations(self) -> None:
        @fd.node(run_in="inline")
        def quick() -> int:
            return 1

        @fd.node(run_in="inline")
        def slow(quick: int) -> int:
            time.sleep(0.02)
            return quick

        result = fd.Pipeline([quick, slow]).run()
        durations = result.durations
        assert set(durations) == {"quick", "slow"}
        for name, seconds in durations.items():
            assert seconds == pytest.approx(result.finished_at[name] - result.started_at[name])
            assert seconds >= 0
        assert durations["slow"] >= 0.015
        assert durations["quick"] < durations["slow"]
        assert result.duration >= durations["slow"]
        # Parents finish before children start.
        assert result.finished_at["quick"] <= result.started_at["slow"]

    def test_skipped_nodes_have_no_times(self, failed: fd.RunResult) -> None:
        assert "after" not in failed.started_at
        assert "after" not in failed.finished_at
        assert "after" not in failed.durations
        assert "boom" in failed.durations


class TestRunId:
    def test_format(self, result: fd.RunResult) -> None:
        assert RUN_ID.match(result.run_id), result.run_id

    def test_each_run_has_its_own(self) -> None:
        pipe = _pipeline()
        ids = [pipe.run(inputs={"start": 1}).run_id for _ in range(20)]
        assert len(set(ids)) == len(ids)
        assert sorted(ids) == ids

    def test_many_unique_and_sorted(self) -> None:
        from flowdeco._core._result import new_run_id

        ids = [new_run_id() for _ in range(5000)]
        assert len(set(ids)) == len(ids)
        assert sorted(ids) == ids
        assert all(RUN_ID.match(i) for i in ids)

    def test_sorted_when_made_faster_than_a_microsecond(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """String order is creation order even on a fast machine or a coarse clock."""
        from flowdeco._core._result import new_run_id

        now = [1_764_100_000_123_456_000]

        def clock() -> int:
            now[0] += 100  # 100 ns per call: ten ids per microsecond
            return now[0]

        monkeypatch.setattr(time, "time_ns", clock)
        ids = [new_run_id() for _ in range(200)]
        assert len(set(ids)) == len(ids)
        assert sorted(ids) == ids

    def test_timestamp_is_utc_time_of_creation(self, result: fd.RunResult) -> None:
        stamp = result.run_id.split(".", 1)[0]
        created = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%S"))
        assert abs(created - time.time()) < 60


class TestRepr:
    def test_ok_run(self, result: fd.RunResult) -> None:
        text = repr(result)
        assert text.startswith("<RunResult 'numbers' ")
        assert result.run_id in text
        assert " ok " in text
        assert "3 succeeded" in text
        assert "failed" not in text

    def test_failed_run(self, failed: fd.RunResult) -> None:
        text = repr(failed)
        assert "'fails'" in text
        assert failed.run_id in text
        assert "not ok" in text
        assert "2 succeeded" in text
        assert "1 failed" in text
        assert "1 skipped" in text
        assert "failed: boom" in text

    def test_nothing_to_run(self) -> None:
        result = _pipeline().run(inputs={"double": 10}, outputs=["double"])
        assert "nothing to run" in repr(result)

    def test_counts(self, failed: fd.RunResult) -> None:
        assert failed.counts() == {
            fd.Status.SUCCEEDED: 2,
            fd.Status.FAILED: 1,
            fd.Status.SKIPPED: 1,
        }


class TestStatus:
    @pytest.mark.parametrize(
        ("status", "value", "finished"),
        [
            pytest.param(fd.Status.PENDING, "pending", False, id="pending"),
            pytest.param(fd.Status.RUNNING, "running", False, id="running"),
            pytest.param(fd.Status.SUCCEEDED, "succeeded", True, id="succeeded"),
            pytest.param(fd.Status.FAILED, "failed", True, id="failed"),
            pytest.param(fd.Status.CANCELLED, "cancelled", True, id="cancelled"),
            pytest.param(fd.Status.SKIPPED, "skipped", True, id="skipped"),
            pytest.param(fd.Status.CACHED, "cached", True, id="cached"),
        ],
    )
    def test_values(self, status: fd.Status, value: str, finished: bool) -> None:
        assert status.value == value
        assert str(status) == value
        assert f"{status}" == value
        assert status == value  # a str enum compares to its value
        assert fd.Status(value) is status
        assert status.finished is finished

    def test_members(self) -> None:
        assert len(fd.Status) == 7


class TestTransitions:
    def test_every_status_listed(self) -> None:
        assert set(fd.TRANSITIONS) == set(fd.Status)

    @pytest.mark.parametrize(
        ("before", "after"),
        [
            pytest.param("pending", {"running", "skipped", "cached"}, id="pending"),
            pytest.param("running", {"succeeded", "failed", "cancelled"}, id="running"),
            pytest.param("succeeded", set(), id="succeeded"),
            pytest.param("failed", set(), id="failed"),
            pytest.param("cancelled", set(), id="cancelled"),
            pytest.param("skipped", set(), id="skipped"),
            pytest.param("cached", set(), id="cached"),
        ],
    )
    def test_moves(self, before: str, after: set[str]) -> None:
        assert {s.value for s in fd.TRANSITIONS[fd.Status(before)]} == after

    def test_final_statuses_have_no_moves(self) -> None:
        for status, moves in fd.TRANSITIONS.items():
            assert (not moves) is status.finished, status

    @pytest.mark.parametrize("on_error", ["continue", "raise"])
    def test_runs_follow_the_transitions(self, on_error: Any) -> None:
        calls: list[tuple[str, fd.Status]] = []

        def record(name: str, status: fd.Status) -> None:
            calls.append((name, status))

        try:
            result = _failing().run(on_error=on_error, on_status=record)
        except fd.NodeFailed as exc:
            result = exc.result
        last: dict[str, fd.Status] = {}
        for name, status in calls:
            assert status in fd.TRANSITIONS[last.get(name, fd.Status.PENDING)], (name, status)
            last[name] = status
        assert last["boom"] is fd.Status.FAILED
        for name, status in last.items():
            assert result.status[name] is status
