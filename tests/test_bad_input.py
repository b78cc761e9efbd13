"""Bad input gets a clear error: the argument named, with what it got (issue 13).

Each bug found has a regression test; then the public entry points are fuzzed with values of
every kind, and nothing but the documented errors may come out: a ``FlowdecoError``, a
``TypeError`` or a ``ValueError``, never an ``AttributeError`` from deep inside.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any
from unittest import mock

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import flowdeco as fd
from flowdeco._core import _codec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

DOCUMENTED = (fd.FlowdecoError, TypeError, ValueError)
FUZZ = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@fd.node(run_in="inline")
def one() -> int:
    return 1


@fd.node(run_in="inline")
def plus(one: int, x: int = 1) -> int:
    return one + x


def _pipeline(**options: Any) -> fd.Pipeline:
    return fd.Pipeline([one, plus], **{"store": None, **options})


class TestNamedErrors:
    """Each was an AttributeError (or a TypeError from inside) that named nothing."""

    @pytest.mark.parametrize(
        ("call", "error", "message"),
        [
            pytest.param(
                lambda: fd.Pipeline.from_namespace(123),  # type: ignore[arg-type]
                TypeError,
                r"^Pipeline\.from_namespace\(namespace\) must be a mapping such as globals\(\), "
                r"got 123$",
                id="from_namespace",
            ),
            pytest.param(
                lambda: _pipeline().run(tracer_provider=123),  # type: ignore[typeddict-item]
                fd.ConfigurationError,
                r"^tracer_provider must be an OpenTelemetry TracerProvider .*, got 123$",
                id="run-tracer_provider",
            ),
            pytest.param(
                lambda: _pipeline().run(meter_provider=123),  # type: ignore[typeddict-item]
                fd.ConfigurationError,
                r"^meter_provider must be an OpenTelemetry MeterProvider .*, got 123$",
                id="run-meter_provider",
            ),
            pytest.param(
                lambda: _pipeline(tracer_provider=123),
                fd.ConfigurationError,
                r"^Pipeline\(tracer_provider=\.\.\.\) must be an OpenTelemetry TracerProvider "
                r".*, got 123$",
                id="pipeline-tracer_provider",
            ),
            pytest.param(
                lambda: _pipeline(meter_provider=123),
                fd.ConfigurationError,
                r"^Pipeline\(meter_provider=\.\.\.\) must be an OpenTelemetry MeterProvider "
                r".*, got 123$",
                id="pipeline-meter_provider",
            ),
            pytest.param(
                lambda: fd.register_type(
                    type("Thing", (), {}),
                    lambda thing: 0,
                    lambda state: None,
                    name=123,  # type: ignore[arg-type]
                ),
                fd.ConfigurationError,
                r"^register_type\(Thing, name=\.\.\.\) must be a non-empty string .*, got 123$",
                id="register_type-name",
            ),
            pytest.param(
                lambda: fd.register_type(type("Thing", (), {}), 1, 2),  # type: ignore[arg-type]
                fd.ConfigurationError,
                r"^register_type\(Thing, encode=\.\.\.\) must be a function, got 1$",
                id="register_type-encode",
            ),
            pytest.param(
                lambda: fd.tracing.setup(endpoint=123),  # type: ignore[arg-type]
                fd.ConfigurationError,
                r"^setup\(endpoint=\.\.\.\) must be an http\(s\) URL .*, got 123$",
                id="setup-endpoint",
            ),
            pytest.param(
                lambda: fd.tracing.setup(endpoint="localhost:4318"),
                fd.ConfigurationError,
                r"^setup\(endpoint=\.\.\.\) must be an http\(s\) URL .*, got 'localhost:4318'$",
                id="setup-endpoint-no-scheme",
            ),
            pytest.param(
                lambda: fd.tracing.setup(max_queue_size="big"),  # type: ignore[arg-type]
                fd.ConfigurationError,
                r"^setup\(max_queue_size=\.\.\.\) must be a whole number >= 1, or None, "
                r"got 'big'$",
                id="setup-max_queue_size",
            ),
            pytest.param(
                lambda: _pipeline().run(on_status=1),  # type: ignore[typeddict-item]
                fd.ConfigurationError,
                r"^on_status must be a function of \(node, status\), or None, got 1$",
                id="run-on_status",
            ),
            pytest.param(
                lambda: _pipeline().run(hooks=[fd.Hooks(), 1]),  # type: ignore[list-item]
                fd.ConfigurationError,
                r"^hooks\[1\] must be a Hooks .*, got 1$",
                id="run-hooks",
            ),
            pytest.param(
                lambda: _pipeline().run(trace_inputs=1),  # type: ignore[typeddict-item]
                fd.ConfigurationError,
                r"^trace_inputs must be True or False, got 1$",
                id="run-trace_inputs",
            ),
            pytest.param(
                lambda: _pipeline().run(defaults=3),  # type: ignore[typeddict-item]
                fd.ConfigurationError,
                r"^defaults must be an Options, a dict of its keys or None, got 3$",
                id="run-defaults",
            ),
            pytest.param(
                lambda: _pipeline().run(defaults={1: 2}),
                fd.ConfigurationError,
                r"^unknown option\(s\):\n  1\n",
                id="run-defaults-key",
            ),
            pytest.param(
                lambda: _pipeline().run(defaults={"timeout": 10**400}),
                fd.ConfigurationError,
                r"^timeout must be a number of seconds > 0, got 1000",
                id="run-defaults-huge-timeout",
            ),
            pytest.param(
                lambda: _pipeline().run(123),  # type: ignore[arg-type]
                TypeError,
                r"^inputs must be a mapping of names to values, got 123$",
                id="run-inputs",
            ),
            pytest.param(
                lambda: _pipeline().run({1: 2}),
                TypeError,
                r"^inputs must be keyed by input or node names, got key 1$",
                id="run-inputs-key",
            ),
            pytest.param(
                lambda: _pipeline().run(outputs=1),  # type: ignore[arg-type]
                TypeError,
                r"^outputs must be a node name, a list of node names or None, got 1$",
                id="run-outputs",
            ),
            pytest.param(
                lambda: _pipeline().run(outputs=[None]),  # type: ignore[list-item]
                TypeError,
                r"^outputs must be a node name, a list of node names or None, got \[None\]$",
                id="run-outputs-item",
            ),
        ],
    )
    def test_the_argument_and_the_value_are_named(
        self, call: Callable[[], object], error: type[Exception], message: str
    ) -> None:
        with _registry_kept(), pytest.raises(error, match=message):
            call()


class TestNodeOptions:
    """Each was an AttributeError or a misleading message from ``fd.node(...)``."""

    def twice(self, x: int) -> int:
        return 2 * x

    @pytest.mark.parametrize("inputs", [3, [("x", "one")], "one"])
    def test_inputs_must_be_a_mapping(self, inputs: object) -> None:
        with pytest.raises(
            fd.NodeDefinitionError,
            match=r"^node 'twice' \(.*test_bad_input.py:\d+\): inputs= must be a dict of "
            r"\{parameter: node\}, got ",
        ):
            fd.node(inputs=inputs)(self.twice)  # type: ignore[call-overload]

    @pytest.mark.parametrize("name", [1, "", b"name"])
    def test_a_name_must_be_a_non_empty_string(self, name: object) -> None:
        with pytest.raises(
            fd.NodeDefinitionError,
            match=r"^@node\(name=\.\.\.\) must be a non-empty string, got .* \(for "
            r"TestNodeOptions.twice at .*test_bad_input.py:\d+\)$",
        ):
            fd.node(name=name)(self.twice)  # type: ignore[call-overload]

    def test_after_must_name_nodes(self) -> None:
        with pytest.raises(
            fd.NodeDefinitionError,
            match=r"^node 'twice' .*: after= must be a node, a node name or a list of them, "
            r"got 3$",
        ):
            fd.node(after=3)(self.twice)  # type: ignore[call-overload]


class TestPipelineConstruction:
    """What was accepted, then failed (or was blamed on a node) only when a run started."""

    @pytest.mark.parametrize("name", [123, None, "", "  "])
    def test_the_name_is_a_non_empty_string(self, name: object) -> None:
        with pytest.raises(
            fd.ConfigurationError,
            match=r"^Pipeline\(name=\.\.\.\) must be a non-empty string, got "
            + re.escape(repr(name))
            + "$",
        ):
            _pipeline(name=name)

    def test_from_namespace_checks_the_name(self) -> None:
        with pytest.raises(fd.ConfigurationError, match=r"Pipeline\(name=\.\.\.\).*got None"):
            fd.Pipeline.from_namespace({"one": one}, name=None)  # type: ignore[arg-type]

    def test_middleware_must_be_callable_named_by_position(self) -> None:
        async def passthrough(call: fd.Call, call_next: fd.CallNext) -> object:
            return await call_next(call)

        with pytest.raises(
            fd.ConfigurationError,
            match=r"^Pipeline\(middleware=\.\.\.\)\[1\] must be callable as "
            r"middleware\(call, call_next\), got 1$",
        ):
            _pipeline(middleware=[passthrough, 1])

    def test_middleware_must_be_a_list(self) -> None:
        with pytest.raises(
            fd.ConfigurationError, match=r"^Pipeline\(middleware=\.\.\.\) must be a list of"
        ):
            _pipeline(middleware=fd.middleware.logging())

    def test_hooks_must_be_hooks(self) -> None:
        with pytest.raises(
            fd.ConfigurationError, match=r"^Pipeline\(hooks=\.\.\.\)\[0\] must be a Hooks .*got 1$"
        ):
            _pipeline(hooks=[1])

    def test_trace_inputs_must_be_a_bool(self) -> None:
        with pytest.raises(
            fd.ConfigurationError,
            match=r"^Pipeline\(trace_inputs=\.\.\.\) must be True or False, got 'yes'$",
        ):
            _pipeline(trace_inputs="yes")

    def test_store_is_checked_when_the_pipeline_is_built(self) -> None:
        with pytest.raises(fd.ConfigurationError, match=r"^Pipeline\(store=\.\.\.\) must be a"):
            _pipeline(store=123)

    @pytest.mark.parametrize("item", [None, 1, "one"])
    def test_nodes_must_be_nodes_or_functions(self, item: object) -> None:
        with pytest.raises(
            TypeError,
            match=r"^Pipeline\(nodes\)\[1\] must be a node or a function, got "
            + re.escape(repr(item))
            + "$",
        ):
            fd.Pipeline([one, item])  # type: ignore[list-item]

    @pytest.mark.parametrize("nodes", [one, "one", {"one": one}])
    def test_nodes_must_be_a_list(self, nodes: object) -> None:
        with pytest.raises(TypeError, match=r"^Pipeline\(nodes\) must be a list of nodes"):
            fd.Pipeline(nodes)  # type: ignore[arg-type]

    def test_a_falsy_provider_is_refused_and_none_means_the_pipelines(self) -> None:
        # ``run(tracer_provider=0)`` used to fall back to the pipeline's, silently.
        exporter = InMemorySpanExporter()
        provider = TracerProvider(shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        pipe = _pipeline(tracer_provider=provider)
        with pytest.raises(fd.ConfigurationError, match=r"^tracer_provider .* got 0$"):
            pipe.run(tracer_provider=0)  # type: ignore[typeddict-item]
        pipe.run(tracer_provider=None)
        assert len(exporter.get_finished_spans()) == 3  # the run's span and two nodes'
        provider.shutdown()


class TestEmptyStorePath:
    """``store=""`` made the working directory the store, with a ``.gitignore`` of ``*``."""

    @pytest.mark.parametrize("where", ["", "   ", "\t\n"])
    def test_run_refuses_it(self, where: str, tmp_path: Path) -> None:
        with pytest.raises(
            fd.ConfigurationError,
            match=f"^store must name a directory, got {re.escape(repr(where))}: an empty "
            "path would make the working directory the store",
        ):
            _pipeline().run(store=where)
        assert list(tmp_path.iterdir()) == []

    def test_the_pipeline_refuses_it(self, tmp_path: Path) -> None:
        with pytest.raises(
            fd.ConfigurationError, match=r"^Pipeline\(store=\.\.\.\) must name a directory"
        ):
            _pipeline(store="")
        assert list(tmp_path.iterdir()) == []

    def test_runs_refuses_it(self) -> None:
        with pytest.raises(fd.ConfigurationError, match=r"^store must name a directory"):
            _pipeline().runs(store="")

    @pytest.mark.parametrize("where", ["", " ", "store\0"])
    def test_file_store_refuses_it(self, where: str) -> None:
        with pytest.raises(
            fd.ConfigurationError, match=r"^FileStore\(path=\.\.\.\) must name a directory"
        ):
            fd.FileStore(where)

    def test_file_store_refuses_what_is_no_path(self) -> None:
        with pytest.raises(
            fd.ConfigurationError, match=r"^FileStore\(path=\.\.\.\) must be a directory .*got 1$"
        ):
            fd.FileStore(1)  # type: ignore[arg-type]

    def test_a_nul_character_is_refused_before_any_write(self) -> None:
        # It used to fail every write, each as a CheckpointWarning.
        with pytest.raises(fd.ConfigurationError, match="cannot hold a NUL character"):
            _pipeline().run(store="store\0")


_ENV_SCRIPT = """
import json, os, sys
from pathlib import Path
import flowdeco as fd

@fd.node(run_in="inline")
def one() -> int:
    return 1

def records(where):
    return len(list(Path(where).glob("runs/*/*.jsonl")))

env = os.environ["FLOWDECO_STORE"]
seen = {}
fd.Pipeline([one], name="p").run()
seen["default"] = records(env)
seen["runs"] = len(fd.Pipeline([one], name="p").runs())
fd.Pipeline([one], name="p", store="own").run()
seen["pipeline"] = [records(env), records("own")]
fd.Pipeline([one], name="p", store="own").run(store="run")
seen["run"] = [records(env), records("own"), records("run")]
os.environ["FLOWDECO_STORE"] = "None"  # read as each run starts
fd.Pipeline([one], name="p").run()
seen["none"] = [records(env), records(".flowdeco")]
os.environ["FLOWDECO_STORE"] = ""
fd.Pipeline([one], name="p").run()
seen["empty"] = [records(env), records(".flowdeco")]
print(json.dumps(seen))
"""


class TestDefaultStore:
    def test_flowdeco_store_sets_the_default_and_store_wins_over_it(self, tmp_path: Path) -> None:
        """``FLOWDECO_STORE`` names the default store, read as each run starts; ``none``
        means none, empty means ``.flowdeco``; the pipeline's ``store=`` wins over it, and
        the run's over the pipeline's."""
        env = {**os.environ, "FLOWDECO_STORE": str(tmp_path / "env-store")}
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_ENV_SCRIPT)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {
            "default": 1,
            "runs": 1,
            "pipeline": [1, 1],
            "run": [1, 1, 1],
            "none": [1, 0],
            "empty": [1, 1],
        }

    def test_the_pipeline_shows_its_default_store(self) -> None:
        assert "store=<$FLOWDECO_STORE, else '.flowdeco'>" in repr(fd.Pipeline([one]))


# -- fuzzing: every kind of value for each argument ---------------------------------------

_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8), st.binary()
)
ANYTHING = st.one_of(
    _SCALARS,
    st.lists(_SCALARS, max_size=3),
    st.dictionaries(st.text(max_size=8), _SCALARS, max_size=3),
    st.dictionaries(st.integers(), _SCALARS, max_size=2),
    st.builds(object),
)
# Relative paths only, short enough for any file system: the fuzz must stay in tmp_path.
_PATHS = st.text(max_size=12).filter(lambda p: "/" not in p and ".." not in p)
_OPTION_NAMES = [a.name for a in attrs.fields(fd.Options)]
_DEFAULTS = st.one_of(
    ANYTHING, st.dictionaries(st.sampled_from(_OPTION_NAMES), ANYTHING, max_size=3)
)


async def _passthrough(call: fd.Call, call_next: fd.CallNext) -> object:
    return await call_next(call)


# For each argument: anything, and values near the ones it takes, to reach further in.
PIPELINE_ARGUMENTS: dict[str, st.SearchStrategy[Any]] = {
    "nodes": st.one_of(ANYTHING, st.lists(st.one_of(ANYTHING, st.just(one)), max_size=3)),
    "name": st.one_of(ANYTHING, st.text()),
    "defaults": _DEFAULTS,
    "middleware": st.one_of(ANYTHING, st.lists(st.sampled_from([_passthrough, len, 1]))),
    "hooks": st.one_of(ANYTHING, st.lists(st.sampled_from([fd.Hooks(), 1]), max_size=2)),
    "tracer_provider": ANYTHING,
    "meter_provider": ANYTHING,
    "trace_inputs": ANYTHING,
    "store": st.one_of(ANYTHING, _PATHS, st.builds(Path, _PATHS)),
}
RUN_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "inputs": st.one_of(ANYTHING, st.dictionaries(st.sampled_from(["x", "one", "y"]), ANYTHING)),
    "outputs": st.one_of(ANYTHING, st.lists(st.sampled_from(["one", "plus", "nope"]))),
    "backend": st.one_of(ANYTHING, st.sampled_from(["asyncio", "trio"])),
    "concurrency": ANYTHING,
    "on_error": st.one_of(ANYTHING, st.sampled_from(["raise", "continue"])),
    "on_status": st.one_of(ANYTHING, st.just(print), st.just(len)),
    "hooks": PIPELINE_ARGUMENTS["hooks"],
    "defaults": _DEFAULTS,
    "tracer_provider": ANYTHING,
    "meter_provider": ANYTHING,
    "trace_inputs": ANYTHING,
    "store": PIPELINE_ARGUMENTS["store"],
    "cache": ANYTHING,
    "resume": st.one_of(ANYTHING, st.just(True)),
}


def _only_documented(call: Callable[[], object]) -> None:
    """Call; any error must be a documented one (an AttributeError, say, fails the test)."""
    with contextlib.suppress(*DOCUMENTED):
        call()


@contextlib.contextmanager
def _registry_kept() -> Iterator[None]:
    """Undo what register_type() registers, so fuzzed names do not outlive the test."""
    by_type, by_name = dict(_codec._by_type), dict(_codec._by_name)
    try:
        yield
    finally:
        _codec._by_type.clear()
        _codec._by_type.update(by_type)
        _codec._by_name.clear()
        _codec._by_name.update(by_name)


NODE_OPTIONS: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(ANYTHING, st.text()),
    "inputs": st.one_of(ANYTHING, st.dictionaries(st.sampled_from(["x", "y"]), ANYTHING)),
    "after": st.one_of(ANYTHING, st.lists(st.sampled_from(["one", "nope", one, 1]))),
    "run_in": st.one_of(ANYTHING, st.sampled_from(["thread", "inline", "loop"])),
    "retries": st.one_of(ANYTHING, st.integers(-2, 5)),
    "retry_delay": st.one_of(ANYTHING, st.floats(-1, 0.001)),
    "backoff": ANYTHING,
    "max_delay": ANYTHING,
    "jitter": st.one_of(ANYTHING, st.floats(-1, 2)),
    "retry_on": st.one_of(ANYTHING, st.sampled_from([OSError, (OSError, 1), BaseException])),
    "timeout": st.one_of(ANYTHING, st.floats(-1, 5)),
    "middleware": st.one_of(ANYTHING, st.lists(st.sampled_from([_passthrough, len, 1]))),
    "cache": ANYTHING,
    "checkpoint": ANYTHING,
    "version": st.one_of(ANYTHING, st.text()),
}


class TestFuzz:
    @pytest.mark.parametrize("option", list(NODE_OPTIONS))
    def test_node(self, option: str) -> None:
        @FUZZ
        @given(value=NODE_OPTIONS[option])
        def decorate_and_run(value: object) -> None:
            def call() -> None:
                def twice(one: int, x: int = 1) -> int:
                    return 2 * one * x

                decorated = fd.node(**{option: value})(twice)  # type: ignore[call-overload]
                fd.Pipeline([one, decorated], store=None).run()

            _only_documented(call)

        decorate_and_run()

    @pytest.mark.parametrize("argument", list(PIPELINE_ARGUMENTS))
    def test_pipeline(self, argument: str) -> None:
        @FUZZ
        @given(value=PIPELINE_ARGUMENTS[argument])
        def build_and_run(value: object) -> None:
            def call() -> None:
                if argument == "nodes":
                    pipe = fd.Pipeline(value, store=None)  # type: ignore[arg-type]
                else:
                    pipe = fd.Pipeline([one, plus], **{"store": None, argument: value})
                pipe.run()

            _only_documented(call)

        build_and_run()

    @FUZZ
    @given(
        namespace=st.one_of(ANYTHING, st.just({"one": one, "x": 1})),
        name=PIPELINE_ARGUMENTS["name"],
    )
    def test_from_namespace(self, namespace: Any, name: Any) -> None:
        _only_documented(lambda: fd.Pipeline.from_namespace(namespace, name=name).run())

    @pytest.mark.parametrize("option", list(RUN_OPTIONS))
    def test_run(self, option: str) -> None:
        # A value the codec cannot carry is a documented warning; without a store, none.
        pipe = fd.Pipeline([one, plus], store=None if option == "inputs" else fd.MemoryStore())

        @FUZZ
        @given(value=RUN_OPTIONS[option])
        def run(value: object) -> None:
            _only_documented(lambda: pipe.run(**{option: value}))

        run()

    @FUZZ
    @given(
        cls=st.one_of(ANYTHING, st.builds(lambda: type("Fuzzed", (), {})), st.just(int)),
        encode=st.one_of(ANYTHING, st.just(repr)),
        decode=st.one_of(ANYTHING, st.just(repr)),
        name=st.one_of(ANYTHING, st.text()),
    )
    def test_register_type(self, cls: Any, encode: Any, decode: Any, name: Any) -> None:
        with _registry_kept():
            _only_documented(lambda: fd.register_type(cls, encode, decode, name=name))

    @FUZZ
    @given(
        service_name=st.one_of(ANYTHING, st.text()),
        endpoint=st.one_of(ANYTHING, st.just("http://localhost:4318")),
        exporter=st.one_of(ANYTHING, st.sampled_from(["otlp", "console"])),
        max_queue_size=st.one_of(ANYTHING, st.integers(1, 4096)),
    )
    def test_tracing_setup(
        self, service_name: Any, endpoint: Any, exporter: Any, max_queue_size: Any
    ) -> None:
        def call() -> None:
            provider = fd.tracing.setup(
                service_name, endpoint, exporter, max_queue_size=max_queue_size
            )
            if provider is not None:
                provider.shutdown()

        # Nothing is installed: the process's global provider must stay the proxy.
        with (
            mock.patch.dict(os.environ, {"OTEL_SDK_DISABLED": ""}),
            mock.patch.object(trace, "set_tracer_provider"),
        ):
            _only_documented(call)
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)

    @FUZZ
    @given(path=st.one_of(ANYTHING, _PATHS, st.builds(Path, _PATHS)))
    def test_file_store(self, path: Any) -> None:
        def call() -> None:
            store = fd.FileStore(path=path)
            store.save("ab" * 8, b"value")
            assert store.load("ab" * 8) == b"value"
            store.runs("pipeline")

        _only_documented(call)
