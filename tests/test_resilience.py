"""Retries, backoff, timeouts, cancellation and hooks, as a run applies them."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from conftest import BACKENDS, KINDS, make_node
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowdeco as fd

if TYPE_CHECKING:
    from conftest import Kind, StatusLog

pytestmark = pytest.mark.anyio

SETTINGS = settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])


class Boom(Exception):
    """What the flaky nodes of these tests raise."""


class Flaky:
    """A node body failing its first ``failures`` calls, then returning the call count."""

    def __init__(self, failures: int, error: type[Exception] = Boom) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0
        self.raised: list[Exception] = []

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            exc = self.error(f"failure {self.calls}")
            self.raised.append(exc)
            raise exc
        return self.calls


def flaky_node(kind: Kind, body: Flaky, **options: Any) -> fd.Node[..., Any]:
    """``body`` as a node named ``flaky`` of ``kind`` (inline, thread or async)."""
    return make_node(kind, body, name="flaky", **options)


class RecordingHooks(fd.Hooks):
    """Records every specific hook call as ``(method, node, *details)``."""

    def __init__(self, tag: str = "", log: list[tuple[Any, ...]] | None = None) -> None:
        self.tag = tag
        self.events: list[tuple[Any, ...]] = [] if log is None else log

    def node_started(self, node: str) -> None:
        self.events.append((self.tag, "started", node))

    def node_finished(self, node: str) -> None:
        self.events.append((self.tag, "finished", node))

    def node_failed(self, node: str, error: BaseException) -> None:
        self.events.append((self.tag, "failed", node, error))

    def node_retrying(self, node: str, attempt: int, error: BaseException, delay: float) -> None:
        self.events.append((self.tag, "retrying", node, attempt, error, delay))

    def node_cached(self, node: str) -> None:
        self.events.append((self.tag, "cached", node))

    def node_skipped(self, node: str) -> None:
        self.events.append((self.tag, "skipped", node))

    def node_cancelled(self, node: str) -> None:
        self.events.append((self.tag, "cancelled", node))

    def of(self, node: str) -> list[tuple[Any, ...]]:
        """The events about ``node``, without the tag."""
        return [e[1:] for e in self.events if e[2] == node]

    def retrying(self) -> list[tuple[Any, ...]]:
        return [e[2:] for e in self.events if e[1] == "retrying"]


class FakeSleep:
    """An injectable retry sleep: records the delays and returns at once."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _assert_within_schedule(
    delays: list[float],
    *,
    retry_delay: float,
    backoff: float,
    max_delay: float,
    jitter: float,
) -> None:
    """Each delay is within ``1 ± jitter`` of the capped backoff schedule, and capped."""
    for n, delay in enumerate(delays, start=1):
        d = min(max_delay, retry_delay * backoff ** (n - 1))
        low, high = d * (1 - jitter), min(max_delay, d * (1 + jitter))
        slack = 1e-9 * max(1.0, d)
        assert low - slack <= delay <= high + slack, (
            f"retry {n}: {delay} outside [{low}, {high}] (d={d})"
        )


class TestRetryCount:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(
        failures=st.integers(0, 6),
        retries=st.integers(0, 5),
        kind=st.sampled_from(KINDS),
    )
    def test_attempts_and_outcome(
        self, backend: str, failures: int, retries: int, kind: Kind
    ) -> None:
        body = Flaky(failures)
        pipe = fd.Pipeline(
            [flaky_node(kind, body, retries=retries, retry_delay=0)], store=fd.MemoryStore()
        )
        result = pipe.run(on_error="continue", backend=backend)

        attempts = min(failures + 1, retries + 1)
        assert body.calls == attempts
        assert result.attempts == {"flaky": attempts}
        if failures <= retries:
            assert result.ok
            assert result["flaky"] == failures + 1
        else:
            assert result.status["flaky"] is fd.Status.FAILED
            assert result.errors["flaky"] is body.raised[-1]

    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(failures=st.integers(0, 6), retries=st.integers(0, 5))
    def test_attempts_with_the_retry_middleware(
        self, backend: str, failures: int, retries: int
    ) -> None:
        body = Flaky(failures)
        sleep = FakeSleep()
        retry = fd.middleware.retry(retries, retry_delay=1.0, sleep=sleep)
        pipe = fd.Pipeline([flaky_node("inline", body, middleware=[retry])], store=fd.MemoryStore())
        result = pipe.run(on_error="continue", backend=backend)

        attempts = min(failures + 1, retries + 1)
        assert body.calls == attempts
        assert result.attempts == {"flaky": attempts}
        assert result.ok == (failures <= retries)
        assert len(sleep.delays) == attempts - 1

    async def test_node_failed_names_the_last_attempt(self, kind: Kind) -> None:
        body = Flaky(failures=100)
        pipe = fd.Pipeline([flaky_node(kind, body, retries=2)])
        with pytest.raises(fd.NodeFailed) as info:
            await pipe.arun()
        error = info.value
        assert error.attempt == 3
        assert "failed on attempt 3" in str(error)
        assert error.__cause__ is body.raised[-1]
        assert type(error.__cause__) is Boom
        assert error.result.attempts == {"flaky": 3}

    async def test_node_failed_without_retries_has_no_attempt(self) -> None:
        body = Flaky(failures=100)
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([flaky_node("inline", body)]).arun()
        assert info.value.attempt is None
        assert "attempt" not in str(info.value)
        assert info.value.result.attempts == {"flaky": 1}

    async def test_attempts_only_for_started_nodes(self) -> None:
        body = Flaky(failures=100)

        @fd.node
        def child(flaky: int) -> int:
            return flaky

        @fd.node
        def other() -> int:
            return 1

        pipe = fd.Pipeline([flaky_node("thread", body, retries=1), child, other])
        result = await pipe.arun(on_error="continue")
        assert result.attempts == {"flaky": 2, "other": 1}

    async def test_retried_node_feeds_its_children(self) -> None:
        body = Flaky(failures=2)

        @fd.node
        def child(flaky: int) -> int:
            return flaky * 10

        result = await fd.Pipeline([flaky_node("async", body, retries=2), child]).arun()
        assert result["child"] == 30
        assert result.attempts == {"flaky": 3, "child": 1}


class TestRetryOn:
    async def test_other_exceptions_fail_at_once(self, kind: Kind) -> None:
        body = Flaky(failures=100, error=KeyError)
        pipe = fd.Pipeline([flaky_node(kind, body, retries=3, retry_on=(OSError,))])
        with pytest.raises(fd.NodeFailed) as info:
            await pipe.arun()
        assert body.calls == 1
        assert info.value.result.attempts == {"flaky": 1}
        assert info.value.attempt == 1
        assert type(info.value.__cause__) is KeyError
        assert info.value.__cause__ is body.raised[0]

    @pytest.mark.parametrize(
        ("retry_on", "error"),
        [
            pytest.param((IOError,), ConnectionResetError, id="subclass"),
            pytest.param(OSError, OSError, id="bare-type"),
            pytest.param((KeyError, OSError), FileNotFoundError, id="second-of-two"),
        ],
    )
    async def test_matching_exceptions_are_retried(
        self, retry_on: Any, error: type[Exception]
    ) -> None:
        body = Flaky(failures=2, error=error)
        pipe = fd.Pipeline([flaky_node("inline", body, retries=3, retry_on=retry_on)])
        result = await pipe.arun()
        assert result["flaky"] == 3

    async def test_a_mix_stops_at_the_first_unmatched(self) -> None:
        errors = iter([OSError("a"), OSError("b"), KeyError("c"), OSError("d")])

        @fd.node(retries=5, retry_on=OSError)
        def mixed() -> None:
            raise next(errors)

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([mixed]).arun()
        assert info.value.attempt == 3
        assert type(info.value.__cause__) is KeyError

    async def test_empty_retry_on_retries_nothing(self) -> None:
        # Every exception is outside an empty retry_on, so none is retried.
        body = Flaky(failures=100)
        pipe = fd.Pipeline([flaky_node("inline", body, retries=3, retry_on=())])
        with pytest.raises(fd.NodeFailed):
            await pipe.arun()
        assert body.calls == 1


class TestBackoffSchedule:
    @pytest.mark.parametrize("backend", BACKENDS)
    @SETTINGS
    @given(
        retries=st.integers(0, 6),
        failures=st.integers(0, 7),
        retry_delay=st.floats(0, 10),
        backoff=st.floats(1, 5),
        max_delay=st.floats(0, 100),
        jitter=st.floats(0, 1),
    )
    def test_delays_follow_the_schedule(
        self,
        backend: str,
        retries: int,
        failures: int,
        retry_delay: float,
        backoff: float,
        max_delay: float,
        jitter: float,
    ) -> None:
        sleep = FakeSleep()
        retry = fd.middleware.retry(
            retries,
            retry_delay=retry_delay,
            backoff=backoff,
            max_delay=max_delay,
            jitter=jitter,
            sleep=sleep,
        )
        body = Flaky(failures)
        hooks = RecordingHooks()
        pipe = fd.Pipeline([flaky_node("inline", body, middleware=[retry])], store=fd.MemoryStore())
        pipe.run(on_error="continue", hooks=[hooks], backend=backend)

        assert len(sleep.delays) == min(failures, retries)
        _assert_within_schedule(
            sleep.delays,
            retry_delay=retry_delay,
            backoff=backoff,
            max_delay=max_delay,
            jitter=jitter,
        )
        # The hook hears of each retry before its wait, with the same delay.
        assert hooks.retrying() == [
            ("flaky", n, error, delay)
            for n, (error, delay) in enumerate(
                zip(body.raised[: len(sleep.delays)], sleep.delays, strict=True), start=1
            )
        ]

    @pytest.mark.parametrize(
        ("retry_delay", "backoff", "max_delay", "expected"),
        [
            pytest.param(1.0, 2.0, None, [1.0, 2.0, 4.0, 8.0], id="doubling"),
            pytest.param(0.5, 3.0, None, [0.5, 1.5, 4.5, 13.5], id="tripling"),
            pytest.param(1.0, 1.0, None, [1.0, 1.0, 1.0, 1.0], id="constant"),
            pytest.param(1.0, 2.0, 3.0, [1.0, 2.0, 3.0, 3.0], id="capped"),
            pytest.param(5.0, 2.0, 3.0, [3.0, 3.0, 3.0, 3.0], id="capped-from-the-start"),
            pytest.param(0.0, 2.0, None, [0.0, 0.0, 0.0, 0.0], id="no-delay"),
        ],
    )
    async def test_without_jitter_the_schedule_is_exact(
        self, retry_delay: float, backoff: float, max_delay: float | None, expected: list[float]
    ) -> None:
        sleep = FakeSleep()
        retry = fd.middleware.retry(
            4,
            retry_delay=retry_delay,
            backoff=backoff,
            max_delay=float("inf") if max_delay is None else max_delay,
            sleep=sleep,
        )
        pipe = fd.Pipeline([flaky_node("inline", Flaky(100), middleware=[retry])])
        await pipe.arun(on_error="continue")
        assert sleep.delays == pytest.approx(expected)

    async def test_jitter_spreads_the_delays_both_ways(self) -> None:
        sleep = FakeSleep()
        retry = fd.middleware.retry(200, retry_delay=1.0, backoff=1.0, jitter=0.5, sleep=sleep)
        pipe = fd.Pipeline([flaky_node("inline", Flaky(200), middleware=[retry])])
        assert (await pipe.arun())["flaky"] == 201
        assert all(0.5 <= d <= 1.5 for d in sleep.delays)
        assert min(sleep.delays) < 0.9
        assert max(sleep.delays) > 1.1

    async def test_jitter_is_capped_again(self) -> None:
        sleep = FakeSleep()
        retry = fd.middleware.retry(
            100, retry_delay=2.0, backoff=1.0, max_delay=2.0, jitter=0.5, sleep=sleep
        )
        pipe = fd.Pipeline([flaky_node("inline", Flaky(100), middleware=[retry])])
        await pipe.arun()
        assert all(1.0 <= d <= 2.0 for d in sleep.delays)
        assert min(sleep.delays) < 1.8, "jitter scaled some delays below the cap"

    async def test_options_wait_between_attempts(self) -> None:
        hooks = RecordingHooks()
        body = Flaky(failures=3)
        pipe = fd.Pipeline(
            [flaky_node("async", body, retries=3, retry_delay=0.02, backoff=3.0, max_delay=0.1)]
        )
        start = time.perf_counter()
        result = await pipe.arun(hooks=[hooks])
        elapsed = time.perf_counter() - start
        assert result["flaky"] == 4
        delays = [e[-1] for e in hooks.retrying()]
        assert delays == pytest.approx([0.02, 0.06, 0.1])
        assert elapsed >= 0.17, "the run waited between attempts"

    async def test_options_jitter_stays_in_bounds(self) -> None:
        hooks = RecordingHooks()
        pipe = fd.Pipeline(
            [flaky_node("inline", Flaky(100), retries=5, retry_delay=0.001, jitter=0.5)]
        )
        await pipe.arun(hooks=[hooks], on_error="continue")
        delays = [e[-1] for e in hooks.retrying()]
        assert len(delays) == 5
        _assert_within_schedule(
            delays, retry_delay=0.001, backoff=2.0, max_delay=float("inf"), jitter=0.5
        )


class TestTimeouts:
    async def test_async_node_is_cancelled_at_the_deadline(self) -> None:
        cleaned_up = anyio.Event()

        @fd.node(timeout=0.1)
        async def sleepy() -> None:
            try:
                await anyio.sleep(5)
            finally:
                cleaned_up.set()

        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([sleepy]).arun()
        elapsed = time.perf_counter() - start
        assert elapsed < 2
        assert cleaned_up.is_set(), "the node was cancelled, not left running"
        error = info.value.__cause__
        assert isinstance(error, fd.NodeTimeoutError)
        assert isinstance(error, fd.FlowdecoError)
        assert isinstance(error, TimeoutError)
        assert error.node == "sleepy"
        assert error.seconds == 0.1
        assert error.attempt == 1
        assert "'sleepy'" in str(error)
        assert "0.1s" in str(error)
        assert info.value.result.status["sleepy"] is fd.Status.FAILED

    async def test_thread_node_is_abandoned_at_the_deadline(self, release: threading.Event) -> None:
        done = threading.Event()

        @fd.node(timeout=0.1)
        def blocking() -> int:
            release.wait(5)
            done.set()
            return 1

        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([blocking]).arun()
        elapsed = time.perf_counter() - start
        assert 0.09 <= elapsed < 1
        assert not done.is_set(), "the run did not wait for the thread"
        error = info.value.__cause__
        assert isinstance(error, fd.NodeTimeoutError)
        assert error.node == "blocking"
        assert "0.1s" in str(error)

    def test_thread_node_timeout_from_sync_run(
        self, backend: str, release: threading.Event
    ) -> None:
        @fd.node(timeout=0.1)
        def blocking() -> None:
            release.wait(5)

        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            fd.Pipeline([blocking]).run(backend=backend)
        assert time.perf_counter() - start < 1
        assert isinstance(info.value.__cause__, fd.NodeTimeoutError)

    async def test_a_quick_node_is_untouched(self) -> None:
        @fd.node(timeout=5)
        def quick() -> int:
            return 1

        assert (await fd.Pipeline([quick]).arun())["quick"] == 1

    async def test_each_attempt_gets_the_timeout(self) -> None:
        calls = 0

        @fd.node(timeout=0.1, retries=3)
        async def slow_then_quick() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                await anyio.sleep(5)
            return calls

        hooks = RecordingHooks()
        with anyio.fail_after(2):
            result = await fd.Pipeline([slow_then_quick]).arun(hooks=[hooks])
        assert result["slow_then_quick"] == 3
        assert result.attempts["slow_then_quick"] == 3
        retried = hooks.retrying()
        assert [(n, a) for n, a, _, _ in retried] == [
            ("slow_then_quick", 1),
            ("slow_then_quick", 2),
        ]
        errors = [e for _, _, e, _ in retried]
        assert all(isinstance(e, fd.NodeTimeoutError) for e in errors)
        assert [e.attempt for e in errors] == [1, 2]

    async def test_every_attempt_timing_out(self) -> None:
        @fd.node(timeout=0.05, retries=2)
        async def hopeless() -> None:
            await anyio.sleep(5)

        with anyio.fail_after(2):
            with pytest.raises(fd.NodeFailed) as info:
                await fd.Pipeline([hopeless]).arun()
        assert info.value.attempt == 3
        assert "failed on attempt 3" in str(info.value)
        cause = info.value.__cause__
        assert isinstance(cause, fd.NodeTimeoutError)
        assert cause.attempt == 3

    async def test_thread_node_retried_after_timeouts(self, release: threading.Event) -> None:
        calls = 0

        @fd.node(timeout=0.1, retries=2)
        def blocking() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                release.wait(5)
            return calls

        with anyio.fail_after(2):
            result = await fd.Pipeline([blocking]).arun()
        assert result["blocking"] == 3

    async def test_abandoned_thread_does_not_hold_a_concurrency_slot(
        self, release: threading.Event
    ) -> None:
        # With one slot, the retry after a timeout must still run the function.
        calls = 0

        @fd.node(timeout=0.1, retries=2)
        def blocking() -> int:
            nonlocal calls
            calls += 1
            if calls < 3:
                release.wait(5)
            return calls

        with anyio.fail_after(2):
            result = await fd.Pipeline([blocking]).arun(concurrency=1, on_error="continue")
        assert calls == 3
        assert result["blocking"] == 3

    async def test_own_timeout_error_is_not_a_node_timeout(self) -> None:
        # A TimeoutError the node raises itself, well within its limit, is its own error.
        own = TimeoutError("the socket timed out")

        @fd.node(timeout=10)
        async def talks() -> None:
            raise own

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([talks]).arun()
        assert info.value.__cause__ is own

    async def test_timeouts_are_retried_only_if_retry_on_says(self) -> None:
        calls = 0

        @fd.node(timeout=0.05, retries=3, retry_on=KeyError)
        async def slow() -> None:
            nonlocal calls
            calls += 1
            await anyio.sleep(5)

        with pytest.raises(fd.NodeFailed) as info:
            await fd.Pipeline([slow]).arun()
        assert calls == 1
        assert isinstance(info.value.__cause__, fd.NodeTimeoutError)

    @pytest.mark.parametrize("where", [pytest.param("pipeline"), pytest.param("run")])
    async def test_default_timeout_applies_to_async_and_thread_nodes(
        self, where: str, release: threading.Event
    ) -> None:
        @fd.node
        async def slow_async() -> None:
            await anyio.sleep(5)

        @fd.node
        def slow_thread() -> None:
            release.wait(5)

        options = {"timeout": 0.1}
        pipe = fd.Pipeline(
            [slow_async, slow_thread], defaults=options if where == "pipeline" else None
        )
        with anyio.fail_after(2):
            result = await pipe.arun(
                on_error="continue", defaults=options if where == "run" else None
            )
        assert set(result.errors) == {"slow_async", "slow_thread"}
        assert all(isinstance(e, fd.NodeTimeoutError) for e in result.errors.values())

    @pytest.mark.parametrize("where", [pytest.param("pipeline"), pytest.param("run")])
    async def test_default_timeout_skips_inline_nodes(self, where: str) -> None:
        @fd.node(run_in="inline")
        def cheap_but_slow() -> int:
            time.sleep(0.15)
            return 1

        options = {"timeout": 0.05}
        pipe = fd.Pipeline([cheap_but_slow], defaults=options if where == "pipeline" else None)
        result = await pipe.arun(defaults=options if where == "run" else None)
        assert result["cheap_but_slow"] == 1

    async def test_default_retries_still_apply_to_inline_nodes(self) -> None:
        body = Flaky(failures=1)
        pipe = fd.Pipeline([flaky_node("inline", body)], defaults={"timeout": 0.5, "retries": 1})
        assert (await pipe.arun())["flaky"] == 2

    async def test_node_timeout_wins_over_defaults(self) -> None:
        @fd.node(timeout=5)
        async def patient() -> int:
            await anyio.sleep(0.15)
            return 1

        pipe = fd.Pipeline([patient], defaults={"timeout": 0.05})
        assert (await pipe.arun(defaults={"timeout": 0.06}))["patient"] == 1

    def test_timeout_on_an_inline_node_is_a_definition_error(self) -> None:
        with pytest.raises(fd.NodeDefinitionError, match="timeout"):

            @fd.node(run_in="inline", timeout=0.1)
            def cheap() -> int:
                return 1


class TestCancellation:
    async def test_cancel_during_a_retry_delay(self, kind: Kind, status_log: StatusLog) -> None:
        body = Flaky(failures=100)
        hooks = RecordingHooks()
        pipe = fd.Pipeline([flaky_node(kind, body, retries=3, retry_delay=10)])

        start = time.perf_counter()
        with anyio.move_on_after(0.2) as scope:
            await pipe.arun(hooks=[hooks], on_status=status_log)
        elapsed = time.perf_counter() - start

        assert scope.cancelled_caught
        assert elapsed < 2, "the cancellation cut the retry's wait short"
        assert body.calls == 1, "not retried after the cancellation"
        assert status_log.last() == {"flaky": fd.Status.CANCELLED}
        status_log.assert_legal()
        assert hooks.of("flaky") == [
            ("started", "flaky"),
            ("retrying", "flaky", 1, body.raised[0], 10.0),
            ("cancelled", "flaky"),
        ]

    async def test_cancel_during_an_attempt_is_not_retried(self, status_log: StatusLog) -> None:
        calls = 0

        @fd.node(retries=3, retry_delay=0, timeout=5)
        async def sleepy() -> None:
            nonlocal calls
            calls += 1
            await anyio.sleep(5)

        hooks = RecordingHooks()
        start = time.perf_counter()
        with anyio.move_on_after(0.1):
            await fd.Pipeline([sleepy]).arun(hooks=[hooks], on_status=status_log)
        assert time.perf_counter() - start < 2
        assert calls == 1
        assert hooks.retrying() == []
        assert status_log.last() == {"sleepy": fd.Status.CANCELLED}

    async def test_a_failure_elsewhere_cuts_a_retry_delay_short(self) -> None:
        body = Flaky(failures=100)

        @fd.node
        async def fails_soon() -> None:
            await anyio.sleep(0.05)
            raise KeyError("elsewhere")

        pipe = fd.Pipeline([flaky_node("async", body, retries=3, retry_delay=10), fails_soon])
        start = time.perf_counter()
        with pytest.raises(fd.NodeFailed) as info:
            await pipe.arun()
        assert time.perf_counter() - start < 2
        assert info.value.node == "fails_soon"
        result = info.value.result
        assert result.status == {"flaky": fd.Status.CANCELLED, "fails_soon": fd.Status.FAILED}
        assert result.attempts["flaky"] == 1
        assert body.calls == 1

    def test_cancel_during_a_retry_delay_from_sync_code(
        self, backend: str, status_log: StatusLog
    ) -> None:
        body = Flaky(failures=100)
        pipe = fd.Pipeline([flaky_node("thread", body, retries=3, retry_delay=10)])

        async def main() -> None:
            with anyio.move_on_after(0.2):
                await pipe.arun(on_status=status_log)

        start = time.perf_counter()
        anyio.run(main, backend=backend)
        assert time.perf_counter() - start < 2
        assert body.calls == 1
        assert status_log.last() == {"flaky": fd.Status.CANCELLED}


class TestHooks:
    async def test_retrying_per_retry_with_attempt_error_and_delay(self) -> None:
        body = Flaky(failures=2)
        hooks = RecordingHooks()
        pipe = fd.Pipeline([flaky_node("thread", body, retries=3, retry_delay=0.01)])
        assert (await pipe.arun(hooks=[hooks]))["flaky"] == 3
        assert hooks.of("flaky") == [
            ("started", "flaky"),
            ("retrying", "flaky", 1, body.raised[0], pytest.approx(0.01)),
            ("retrying", "flaky", 2, body.raised[1], pytest.approx(0.02)),
            ("finished", "flaky"),
        ]

    async def test_failed_once_after_the_last_attempt(self) -> None:
        body = Flaky(failures=100)
        hooks = RecordingHooks()
        pipe = fd.Pipeline([flaky_node("inline", body, retries=1)])
        await pipe.arun(hooks=[hooks], on_error="continue")
        assert hooks.of("flaky") == [
            ("started", "flaky"),
            ("retrying", "flaky", 1, body.raised[0], 0.0),
            ("failed", "flaky", body.raised[1]),
        ]

    async def test_lifecycle_with_continue(self) -> None:
        body = Flaky(failures=100)

        @fd.node
        def child(flaky: int) -> int:
            return flaky

        @fd.node
        def grandchild(child: int) -> int:
            return child

        @fd.node
        async def independent() -> int:
            return 1

        hooks = RecordingHooks()
        pipe = fd.Pipeline([flaky_node("async", body), child, grandchild, independent])
        result = await pipe.arun(hooks=[hooks], on_error="continue")
        assert hooks.of("flaky") == [("started", "flaky"), ("failed", "flaky", body.raised[0])]
        assert hooks.of("child") == [("skipped", "child")]
        assert hooks.of("grandchild") == [("skipped", "grandchild")]
        assert hooks.of("independent") == [("started", "independent"), ("finished", "independent")]
        assert result.status["grandchild"] is fd.Status.SKIPPED

    async def test_pipeline_hooks_run_hooks_and_on_status_all_hear(
        self, status_log: StatusLog
    ) -> None:
        log: list[tuple[Any, ...]] = []
        pipeline_hooks = RecordingHooks("pipeline", log)
        run_hooks = RecordingHooks("run", log)
        body = Flaky(failures=1)
        pipe = fd.Pipeline([flaky_node("inline", body, retries=1)], hooks=[pipeline_hooks])
        await pipe.arun(hooks=[run_hooks], on_status=status_log)
        error = body.raised[0]
        assert log == [
            ("pipeline", "started", "flaky"),
            ("run", "started", "flaky"),
            ("pipeline", "retrying", "flaky", 1, error, 0.0),
            ("run", "retrying", "flaky", 1, error, 0.0),
            ("pipeline", "finished", "flaky"),
            ("run", "finished", "flaky"),
        ]
        assert status_log.calls == [
            ("flaky", fd.Status.RUNNING),
            ("flaky", fd.Status.SUCCEEDED),
        ]

    def test_hooks_from_sync_run(self, backend: str, status_log: StatusLog) -> None:
        hooks = RecordingHooks()
        body = Flaky(failures=1)
        pipe = fd.Pipeline([flaky_node("thread", body, retries=1)], hooks=[hooks])
        pipe.run(on_status=status_log, backend=backend)
        assert [e[1] for e in hooks.events] == ["started", "retrying", "finished"]
        assert status_log.last() == {"flaky": fd.Status.SUCCEEDED}

    async def test_status_changed_sees_the_error(self) -> None:
        seen: list[tuple[str, fd.Status, BaseException | None]] = []

        class StatusHooks(fd.Hooks):
            def status_changed(
                self, node: str, status: fd.Status, error: BaseException | None
            ) -> None:
                seen.append((node, status, error))

        body = Flaky(failures=100)
        await fd.Pipeline([flaky_node("inline", body)]).arun(
            hooks=[StatusHooks()], on_error="continue"
        )
        assert seen == [
            ("flaky", fd.Status.RUNNING, None),
            ("flaky", fd.Status.FAILED, body.raised[0]),
        ]

    async def test_hooks_for_nodes_without_options_or_middleware(self) -> None:
        @fd.node(run_in="inline")
        def a() -> int:
            return 1

        @fd.node
        def b(a: int) -> int:
            return a + 1

        hooks = RecordingHooks()
        await fd.Pipeline([a, b], hooks=[hooks]).arun()
        assert [e[1:] for e in hooks.events] == [
            ("started", "a"),
            ("finished", "a"),
            ("started", "b"),
            ("finished", "b"),
        ]
