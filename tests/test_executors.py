"""Executors: choosing them (node > run > pipeline), flowdeco's worker threads, and
ProcessExecutor with real worker processes (crashes, hard timeouts, Ctrl-C, checkpoints).

Node functions defined at module level go to workers by reference (a worker imports this
module); those defined in tests, and the scripts' ``__main__`` ones, by value.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowdeco as fd

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and signals")

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]


@pytest.fixture(scope="module")
def pool() -> Iterator[fd.ProcessExecutor]:
    """Two warm workers for the tests that need not start their own."""
    with fd.ProcessExecutor(max_workers=2) as executor:
        yield executor


def gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (a zombie would still be listed)."""
    return not Path(f"/proc/{pid}").exists()


def wait_for_file(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} never written")


# -- nodes a worker imports by reference ------------------------------------------------------


@fd.node(executor="process")
def where() -> int:
    return os.getpid()


@fd.node(executor="process")
def doubled(where: int) -> int:
    return where * 2


@fd.node(executor="process")
async def awaited(where: int) -> tuple[int, int]:
    await anyio.sleep(0.01)
    return os.getpid(), where


def burn(seconds: float) -> tuple[int, float, float]:
    """Pure-Python CPU work for about ``seconds``: (pid, start, end)."""
    start = time.time()
    x = 1
    while time.time() - start < seconds:
        for _ in range(10_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return os.getpid(), start, time.time()


def segfault() -> int:
    ctypes.string_at(0)
    return 1


def exit_3() -> int:
    os._exit(3)


def sigkill() -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 1


def sleep_30(pid_file: str) -> int:
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(30)
    return 1


def flaky(marker: str) -> int:
    """Crashes its worker on the first call (no marker yet), returns on the next."""
    if not Path(marker).exists():
        Path(marker).write_text("crashed once")
        os._exit(7)
    return os.getpid()


def traced_in_worker() -> tuple[str, str]:
    """Opens a span with a tracer provider of the worker's own: its trace id, its parent's id."""
    with TracerProvider().get_tracer("worker").start_as_current_span("inside") as span:
        parent = span.parent  # type: ignore[attr-defined]  # the SDK's span has one
    assert parent is not None
    return format(span.get_span_context().trace_id, "032x"), format(parent.span_id, "016x")


# -- choosing an executor ---------------------------------------------------------------------


class Recording(fd.Executor):
    """An executor of the test's own: runs sync bodies here, remembering which nodes."""

    def __init__(self) -> None:
        self.nodes: list[str] = []

    def call(
        self,
        func: Callable[..., Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        node: str,
    ) -> Any:
        self.nodes.append(node)
        return self._value(func, args, kwargs)

    async def _value(
        self, func: Callable[..., Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        return func(*args, **kwargs)


class TestChoosing:
    def test_a_nodes_own_wins_over_the_runs_which_wins_over_the_pipelines(self) -> None:
        own, run, pipeline = Recording(), Recording(), Recording()

        @fd.node(executor=own)
        def chose() -> int:
            return 1

        @fd.node
        def free(chose: int) -> int:
            return chose + 1

        @fd.node
        async def coroutine(free: int) -> int:  # Recording runs sync functions only
            return free + 1

        pipe = fd.Pipeline([chose, free, coroutine], executor=pipeline, store=None)
        assert pipe.run(executor=run)["coroutine"] == 3
        assert (own.nodes, run.nodes, pipeline.nodes) == (["chose"], ["free"], [])
        pipe.run()
        assert (own.nodes, run.nodes, pipeline.nodes) == (["chose", "chose"], ["free"], ["free"])
        pipe.run(defaults={"executor": run})  # the same as executor=
        assert run.nodes == ["free", "free"]

    def test_run_in_is_a_choice_too(self) -> None:
        run = Recording()

        @fd.node(run_in="thread")
        def pinned() -> threading.Thread:
            return threading.current_thread()

        result = fd.Pipeline([pinned], store=None).run(executor=run)
        assert run.nodes == []
        assert result["pinned"] is not threading.current_thread()

    def test_names(self) -> None:
        @fd.node(executor="inline")
        def inline() -> threading.Thread:
            return threading.current_thread()

        @fd.node(executor="thread")
        def thread() -> threading.Thread:
            return threading.current_thread()

        @fd.node(executor="loop")
        async def loop() -> threading.Thread:
            return threading.current_thread()

        assert (inline.run_in, thread.run_in, loop.run_in) == ("inline", "thread", "loop")
        result = fd.Pipeline([inline, thread, loop], store=None).run()
        assert result["inline"] is result["loop"] is threading.current_thread()
        assert result["thread"] is not threading.current_thread()

    def test_a_process_default_moves_async_nodes_too_unless_they_say(self) -> None:
        @fd.node
        async def moved() -> int:
            return os.getpid()

        @fd.node(executor="loop")
        async def stays() -> int:
            return os.getpid()

        result = fd.Pipeline([moved, stays], store=None).run(executor="process")
        assert result["moved"] != os.getpid()
        assert result["stays"] == os.getpid()

    def test_redecorating_keeps_or_replaces_the_choice(self) -> None:
        @fd.node(executor="process")
        def f() -> int:
            return 1

        assert fd.node(retries=1)(f).options.executor is f.options.executor
        assert fd.node(run_in="inline")(f).run_in == "inline"
        assert fd.node(executor="thread")(f).options.executor is not f.options.executor

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            pytest.param(
                {"executor": "procss"},
                "node 'f' .*: executor must be one of 'inline', 'loop', 'thread', 'process' "
                "or an fd.Executor, got 'procss' \\(did you mean 'process'\\?\\)",
                id="unknown name",
            ),
            pytest.param({"executor": 3}, "node 'f' .*got 3", id="not an executor"),
            pytest.param(
                {"executor": "loop"}, "node 'f' .*runs async functions only", id="loop for sync"
            ),
            pytest.param(
                {"executor": "thread", "run_in": "thread"},
                "node 'f' .*give run_in= or executor=, not both",
                id="both",
            ),
            pytest.param(
                {"executor": "inline", "timeout": 1},
                "node 'f' .*timeout= cannot stop an inline node",
                id="inline timeout",
            ),
        ],
    )
    def test_bad_node_choices_name_the_node(self, options: dict[str, Any], message: str) -> None:
        def f() -> int:
            return 1

        with pytest.raises(fd.NodeDefinitionError, match=message):
            fd.node(**options)(f)

    def test_an_async_node_needs_an_executor_that_runs_coroutines(self) -> None:
        async def f() -> int:
            return 1

        with pytest.raises(fd.NodeDefinitionError, match=r"node 'f' .*runs sync functions only"):
            fd.node(executor="thread")(f)

    def test_bad_pipeline_and_run_choices(self) -> None:
        @fd.node
        def f() -> int:
            return 1

        with pytest.raises(fd.ConfigurationError, match=r"Pipeline\(executor=...\) must be .*1"):
            fd.Pipeline([f], executor=1)  # type: ignore[arg-type]
        pipe = fd.Pipeline([f], store=None)
        with pytest.raises(fd.ConfigurationError, match=r"executor must be .*'threads'"):
            pipe.run(executor="threads")  # type: ignore[arg-type]
        with pytest.raises(fd.ConfigurationError, match="executor= and defaults' executor"):
            pipe.run(executor="thread", defaults={"executor": "process"})
        with pytest.raises(fd.ConfigurationError, match=r"max_workers.* got 0"):
            fd.ProcessExecutor(max_workers=0)


# -- flowdeco's worker threads ----------------------------------------------------------------


class TestThreads:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_from_thread_works_in_thread_nodes_and_they_are_daemons(self, backend: str) -> None:
        @fd.node
        def calls_back() -> tuple[bool, str, int]:
            loop_thread = anyio.from_thread.run_sync(lambda: threading.current_thread().name)
            anyio.from_thread.run(anyio.sleep, 0)
            return threading.current_thread().daemon, loop_thread, os.getpid()

        daemon, loop_thread, pid = fd.Pipeline([calls_back], store=None).run(backend=backend)[
            "calls_back"
        ]
        assert daemon
        assert loop_thread == threading.current_thread().name
        assert pid == os.getpid()

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_ctrl_c_during_a_blocking_thread_node_exits_at_once(
        self, backend: str, tmp_path: Path
    ) -> None:
        script = _script(
            tmp_path,
            f"""
            @fd.node
            def blocking() -> int:
                say("started")
                time.sleep(30)
                return 1

            fd.Pipeline([blocking], store={str(tmp_path / "store")!r}).run(backend={backend!r})
            """,
        )
        done = _interrupted(script, "started")
        assert done.returncode not in (0, None), done.stderr
        assert done.seconds < 3, done
        assert done.stderr.rstrip().splitlines()[-1].startswith(("KeyboardInterrupt", "flowdeco:"))


# -- ProcessExecutor --------------------------------------------------------------------------


class TestProcesses:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_nodes_run_in_other_processes_async_ones_in_a_loop_there(self, backend: str) -> None:
        result = fd.Pipeline([where, doubled, awaited], store=None).run(backend=backend)
        assert result["where"] != os.getpid()
        assert result["doubled"] == 2 * result["where"]
        worker, seen = result["awaited"]
        assert worker != os.getpid()
        assert seen == result["where"]

    def test_cpu_bound_nodes_run_in_parallel(self, pool: fd.ProcessExecutor) -> None:
        nodes = [fd.node(name=f"burn{k}", executor=pool)(burn) for k in range(2)]
        fd.Pipeline(nodes, store=None).run(inputs={"seconds": 0.01})  # both workers warm
        start = time.perf_counter()
        result = fd.Pipeline(nodes, store=None).run(inputs={"seconds": 0.5})
        wall = time.perf_counter() - start
        (pid0, start0, end0), (pid1, start1, end1) = result["burn0"], result["burn1"]
        assert pid0 != pid1
        assert max(start0, start1) < min(end0, end1)  # they overlapped
        assert wall < 0.8, wall

    def test_a_span_opened_in_the_worker_nests_under_the_node_span(
        self, pool: fd.ProcessExecutor
    ) -> None:
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        node = fd.node(name="traced", executor=pool)(traced_in_worker)
        result = fd.Pipeline([node], store=None, tracer_provider=provider).run()
        (span,) = [s for s in exporter.get_finished_spans() if s.name.endswith("traced")]
        context = span.get_span_context()
        assert result["traced"] == (
            format(context.trace_id, "032x"),
            format(context.span_id, "016x"),
        )

    def test_large_values_travel_both_ways(self, pool: fd.ProcessExecutor) -> None:
        big = bytes(range(256)) * 8192  # 2 MiB: more than one read of the socket's buffer

        @fd.node(executor=pool)
        def reversed_bytes(big: bytes) -> bytes:
            return big[::-1]

        @fd.node(executor=pool)
        def small(reversed_bytes: bytes) -> int:
            return len(reversed_bytes)

        result = fd.Pipeline([reversed_bytes, small], store=None).run(inputs={"big": big})
        assert result["reversed_bytes"] == big[::-1]
        assert result["small"] == len(big)

    def test_lambdas_and_closures_travel_by_value(self, pool: fd.ProcessExecutor) -> None:
        offset = 40

        def closure(x: int) -> int:
            return x + offset

        nodes = [
            fd.node(name="lam", executor=pool)(lambda: 2),
            fd.node(name="closure", inputs={"x": "lam"}, executor=pool)(closure),
        ]
        assert fd.Pipeline(nodes, store=None).run()["closure"] == 42

    @pytest.mark.parametrize(
        ("body", "how"),
        [
            pytest.param(segfault, r"was killed by signal 11 \(SIGSEGV\)", id="segfault"),
            pytest.param(exit_3, "exited with code 3", id="os._exit"),
            pytest.param(sigkill, r"was killed by signal 9 \(SIGKILL\)", id="SIGKILL"),
        ],
    )
    def test_a_crash_fails_only_its_node(self, body: Callable[[], int], how: str) -> None:
        crashing = fd.node(name="crashing", executor="process")(body)

        @fd.node
        def beside() -> int:
            return 1

        result = fd.Pipeline([crashing, beside, where], store=None).run(on_error="continue")
        assert result.status["crashing"] is fd.Status.FAILED
        assert result["beside"] == 1
        assert result["where"] != os.getpid()
        error = result.errors["crashing"]
        assert isinstance(error, fd.WorkerCrashed)
        assert isinstance(error, fd.FlowdecoError)
        assert str(error).startswith(f"node 'crashing': its worker process (pid {error.pid}) ")
        assert len(re.findall(how, str(error))) == 1
        assert gone(error.pid)

    def test_the_pool_recovers_and_a_retry_runs_in_a_new_worker(self, tmp_path: Path) -> None:
        with fd.ProcessExecutor(max_workers=1) as executor:
            node = fd.node(name="flaky", executor=executor, retries=1)(flaky)
            result = fd.Pipeline([node], store=None).run(inputs={"marker": str(tmp_path / "m")})
            assert result.attempts["flaky"] == 2
            assert not gone(result["flaky"])  # the new worker lives on, for the next calls
            again = fd.Pipeline([node], store=None).run(inputs={"marker": str(tmp_path / "m")})
            assert again["flaky"] == result["flaky"]

    def test_a_worker_killed_while_idle_is_replaced(self) -> None:
        with fd.ProcessExecutor(max_workers=1) as executor:
            node = fd.node(name="here", executor=executor)(os.getpid)
            first = fd.Pipeline([node], store=None).run()["here"]
            os.kill(first, signal.SIGKILL)
            # Until it can be reaped (which the pool does when it next needs the worker);
            # /proc says "zombie" earlier, while its other threads still exit.
            while os.waitid(os.P_PID, first, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.01)
            second = fd.Pipeline([node], store=None).run()["here"]
            assert second != first
            assert gone(first)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_timeout_kills_the_worker(self, backend: str, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        with fd.ProcessExecutor(max_workers=1) as executor:
            warm = fd.node(name="warm", executor=executor)(burn)
            fd.Pipeline([warm], store=None).run(inputs={"seconds": 0})  # it imported this module
            node = fd.node(name="sleeper", executor=executor, timeout=0.5)(sleep_30)
            start = time.perf_counter()
            with pytest.raises(fd.NodeFailed) as info:
                fd.Pipeline([node], store=None).run(
                    inputs={"pid_file": str(pid_file)}, backend=backend
                )
            took = time.perf_counter() - start
            assert isinstance(info.value.error, fd.NodeTimeoutError)
            assert 0.5 <= took < 1.5, took
            assert gone(int(pid_file.read_text()))
            assert fd.Pipeline([warm], store=None).run(inputs={"seconds": 0})["warm"][0] > 0

    @pytest.mark.anyio
    async def test_a_cancelled_run_leaves_no_worker_behind(self, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        node = fd.node(name="sleeper", executor="process")(sleep_30)
        with anyio.move_on_after(20) as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(
                    lambda: fd.Pipeline([node], store=None).arun(inputs={"pid_file": str(pid_file)})
                )
                pid = int(await anyio.to_thread.run_sync(wait_for_file, pid_file))
                group.cancel_scope.cancel()
        assert not scope.cancelled_caught
        assert gone(pid)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_ctrl_c_leaves_no_worker_behind(self, backend: str, tmp_path: Path) -> None:
        pid_file = tmp_path / "pid"
        script = _script(
            tmp_path,
            f"""
            @fd.node(executor="process")
            def idle() -> int:
                return os.getpid()

            @fd.node(executor="process")
            def sleeper(idle: int) -> int:
                Path({str(pid_file)!r}).write_text(f"{{idle}} {{os.getpid()}}")
                say("started")
                time.sleep(30)
                return 1

            @fd.node(executor=fd.ProcessExecutor(1))  # one the user never closes
            def owned() -> int:
                return os.getpid()

            fd.Pipeline([idle, sleeper, owned], store=None).run(backend={backend!r})
            """,
        )
        done = _interrupted(script, "started")
        assert done.returncode not in (0, None), done.stderr
        assert done.seconds < 5, done
        for pid in map(int, pid_file.read_text().split()):
            assert gone(pid), pid
        for noise in ("_worker.py", "Exception in thread", "Exception ignored"):
            assert noise not in done.stderr, done.stderr  # only the run's own traceback

    def test_main_functions_values_and_errors_travel(self, tmp_path: Path) -> None:
        script = _script(
            tmp_path,
            """
            import dataclasses

            @dataclasses.dataclass
            class Point:
                x: int

            class Bad(Exception):
                pass

            @fd.node(executor="process")
            def point() -> Point:
                return Point(os.getpid())

            @fd.node(executor="process")
            def moved(point: Point) -> Point:
                return Point(point.x + 1)

            @fd.node(executor="process")
            def fails(point: Point) -> int:
                raise Bad("no")

            @fd.node(executor="process")
            def unpicklable() -> object:
                return threading.Lock()

            result = fd.Pipeline([point, moved, fails, unpicklable], store=None).run(
                on_error="continue"
            )
            assert type(result["moved"]) is Point, type(result["moved"])
            assert result["point"].x != os.getpid()
            assert type(result.errors["fails"]) is Bad
            assert "raise Bad" in str(result.errors["fails"].__cause__)
            assert "cannot pickle" in str(result.errors["unpicklable"])
            say("ok")
            """,
        )
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["ok"]

    def test_without_cloudpickle_the_error_names_the_extra(self, tmp_path: Path) -> None:
        script = _script(
            tmp_path,
            """
            @fd.node(executor="process")
            def here() -> int:
                return 1

            try:
                fd.Pipeline([here], store=None).run()
            except fd.NodeFailed as exc:
                say(str(exc.error))
            """,
            prelude="import sys; sys.modules['cloudpickle'] = None  # not installed\n",
        )
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "__main__.here cannot be imported by another process" in done.stdout
        assert "pip install 'flowdeco[process]'" in done.stdout

    def test_checkpoints_and_resume(self, tmp_path: Path, pool: fd.ProcessExecutor) -> None:
        marker = tmp_path / "m"

        @fd.node(executor=pool)
        def first() -> int:
            return os.getpid()

        @fd.node(executor=pool)
        def second(first: int, marker: str) -> int:
            if not Path(marker).exists():
                raise RuntimeError("not yet")
            return first + 1

        pipe = fd.Pipeline([first, second], store=tmp_path / "store")
        with pytest.raises(fd.NodeFailed):
            pipe.run(inputs={"marker": str(marker)})
        marker.write_text("now")
        result = pipe.run(inputs={"marker": str(marker)}, resume=True)
        assert result.status == {"first": fd.Status.CACHED, "second": fd.Status.SUCCEEDED}
        assert result["second"] == result["first"] + 1


# -- docs/executors.md, as written -----------------------------------------------------------


def test_the_docs_run_as_written(tmp_path: Path) -> None:
    """Its python blocks, in order, as one script: their nodes live in ``__main__``."""
    text = (Path(__file__).parent.parent / "docs" / "executors.md").read_text()
    blocks = re.findall(r"^```(\w*)\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert blocks
    assert {language for language, _ in blocks} == {"python"}
    done = subprocess.run(
        [sys.executable, "-c", "\n".join(code for _, code in blocks)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["total 332833500", "total 332833500", "from the loop's thread"]
    assert re.fullmatch(
        r"node 'crashing': its worker process \(pid \d+\) exited with code 3 before the node "
        "returned",
        lines[3],
    )
    assert len(lines) == 4


# -- scripts ----------------------------------------------------------------------------------


def _script(tmp_path: Path, body: str, prelude: str = "") -> Path:
    """A script whose nodes live in ``__main__``, with no ``if __name__`` guard: workers
    must not run it again."""
    script = tmp_path / "script.py"
    script.write_text(
        prelude
        + textwrap.dedent(
            """\
            import os, signal, sys, threading, time
            from pathlib import Path

            import flowdeco as fd

            signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal


            def say(line):
                sys.stdout.write(line + "\\n")
                sys.stdout.flush()

            """
        )
        + textwrap.dedent(body)
    )
    return script


class _Exit:
    def __init__(self, seconds: float, returncode: int | None, stderr: str) -> None:
        self.seconds = seconds
        self.returncode = returncode
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"exit {self.returncode} after {self.seconds:.1f} s:\n{self.stderr}"


def _interrupted(script: Path, line: str) -> _Exit:
    """Run ``script``, send it SIGINT once it printed ``line``, and time its exit."""
    process = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == line
        time.sleep(0.2)  # into its waits
        process.send_signal(signal.SIGINT)
        sent = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(10)
        seconds = time.monotonic() - sent
        returncode = process.poll()
    finally:
        process.kill()
        _, stderr = process.communicate()
    return _Exit(seconds, returncode, stderr)
