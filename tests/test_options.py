"""Options: validation where they are given (Options, @node, Pipeline, run), and layering."""

from __future__ import annotations

import math
from typing import Any

import pytest

import flowdeco as fd

pytestmark = pytest.mark.anyio

# (option, invalid value): each breaks one validation rule.
INVALID = [
    pytest.param("retries", -1, id="retries-negative"),
    pytest.param("retries", 1.5, id="retries-float"),
    pytest.param("retries", True, id="retries-bool"),
    pytest.param("retries", "3", id="retries-str"),
    pytest.param("retry_delay", -0.1, id="retry_delay-negative"),
    pytest.param("retry_delay", math.nan, id="retry_delay-nan"),
    pytest.param("retry_delay", "1", id="retry_delay-str"),
    pytest.param("backoff", 0.5, id="backoff-below-1"),
    pytest.param("backoff", 0, id="backoff-zero"),
    pytest.param("backoff", math.nan, id="backoff-nan"),
    pytest.param("backoff", True, id="backoff-bool"),
    pytest.param("max_delay", -1, id="max_delay-negative"),
    pytest.param("max_delay", math.nan, id="max_delay-nan"),
    pytest.param("jitter", -0.1, id="jitter-negative"),
    pytest.param("jitter", 1.5, id="jitter-above-1"),
    pytest.param("jitter", math.nan, id="jitter-nan"),
    pytest.param("timeout", 0, id="timeout-zero"),
    pytest.param("timeout", -1, id="timeout-negative"),
    pytest.param("timeout", math.nan, id="timeout-nan"),
    pytest.param("timeout", "10", id="timeout-str"),
    pytest.param("retry_on", "ValueError", id="retry_on-str"),
    pytest.param("retry_on", ValueError("x"), id="retry_on-instance"),
    pytest.param("retry_on", int, id="retry_on-not-an-exception"),
    pytest.param("retry_on", KeyboardInterrupt, id="retry_on-keyboard-interrupt"),
    pytest.param("retry_on", (ValueError, BaseException), id="retry_on-base-exception"),
]

VALID = [
    pytest.param("retries", 0, id="retries-zero"),
    pytest.param("retry_delay", 0, id="retry_delay-zero"),
    pytest.param("backoff", 1, id="backoff-one"),
    pytest.param("max_delay", 0, id="max_delay-zero"),
    pytest.param("jitter", 0, id="jitter-zero"),
    pytest.param("jitter", 1, id="jitter-one"),
    pytest.param("timeout", 0.001, id="timeout-small"),
    pytest.param("timeout", math.inf, id="timeout-inf"),
]


def _ok() -> int:
    return 1


class TestOptions:
    @pytest.mark.parametrize(("option", "value"), INVALID)
    def test_invalid_value_is_a_configuration_error(self, option: str, value: Any) -> None:
        with pytest.raises(fd.ConfigurationError, match=option):
            fd.Options(**{option: value})

    @pytest.mark.parametrize(("option", "value"), VALID)
    def test_boundary_values_are_accepted(self, option: str, value: Any) -> None:
        assert getattr(fd.Options(**{option: value}), option) == value

    def test_message_shows_the_value(self) -> None:
        with pytest.raises(fd.ConfigurationError, match=r"-3"):
            fd.Options(retries=-3)

    def test_nothing_set_by_default(self) -> None:
        options = fd.Options()
        assert not options.is_set
        assert fd.Options(retries=0).is_set

    @pytest.mark.parametrize(
        "retry_on",
        [
            pytest.param(ValueError, id="type"),
            pytest.param((ValueError,), id="tuple"),
            pytest.param([ValueError], id="list"),
        ],
    )
    def test_retry_on_becomes_a_tuple(self, retry_on: Any) -> None:
        assert fd.Options(retry_on=retry_on).retry_on == (ValueError,)

    def test_options_are_frozen(self) -> None:
        options = fd.Options(retries=1)
        with pytest.raises(AttributeError):
            options.retries = 2  # type: ignore[misc]


class TestOver:
    def test_set_values_win_unset_ones_fall_back(self) -> None:
        node = fd.Options(retries=0, timeout=5)
        run = fd.Options(retries=3, retry_delay=1.0, backoff=3.0)
        merged = node.over(run)
        assert merged == fd.Options(retries=0, retry_delay=1.0, backoff=3.0, timeout=5)

    def test_three_layers(self) -> None:
        node = fd.Options(jitter=0.5)
        run = fd.Options(retries=1, max_delay=2)
        pipeline = fd.Options(retries=5, max_delay=9, retry_on=KeyError)
        merged = node.over(run.over(pipeline))
        assert merged == fd.Options(retries=1, max_delay=2, jitter=0.5, retry_on=(KeyError,))

    def test_unset_over_anything_is_the_fallback(self) -> None:
        fallback = fd.Options(retries=2)
        assert fd.Options().over(fallback) == fallback
        assert fallback.over(fd.Options()) == fallback


class TestNodeOptions:
    @pytest.mark.parametrize(("option", "value"), INVALID)
    def test_invalid_value_is_a_node_definition_error(self, option: str, value: Any) -> None:
        with pytest.raises(fd.NodeDefinitionError, match=option) as info:
            fd.node(**{option: value})(_ok)
        assert "'_ok'" in str(info.value), "the message names the node"

    def test_options_are_kept_on_the_node(self) -> None:
        @fd.node(retries=3, retry_delay=0.5, backoff=2.0, max_delay=30, jitter=0.1, timeout=10)
        def n() -> int:
            return 1

        assert n.options == fd.Options(
            retries=3, retry_delay=0.5, backoff=2.0, max_delay=30, jitter=0.1, timeout=10
        )

    def test_retry_on_is_kept_as_a_tuple(self) -> None:
        @fd.node(retry_on=OSError)
        def n() -> int:
            return 1

        assert n.options.retry_on == (OSError,)

    def test_a_node_without_options_has_none_set(self) -> None:
        assert not fd.node(_ok).options.is_set

    def test_timeout_on_an_inline_node_is_refused(self) -> None:
        with pytest.raises(fd.NodeDefinitionError, match=r"timeout.*inline"):

            @fd.node(run_in="inline", timeout=1)
            def n() -> int:
                return 1

    def test_retries_on_an_inline_node_are_allowed(self) -> None:
        @fd.node(run_in="inline", retries=2)
        def n() -> int:
            return 1

        assert n.options.retries == 2

    def test_middleware_must_be_callable(self) -> None:
        with pytest.raises(fd.NodeDefinitionError, match="middleware"):
            fd.node(middleware=["not callable"])(_ok)  # type: ignore[list-item]


class TestPipelineDefaults:
    @pytest.mark.parametrize(("option", "value"), INVALID)
    def test_invalid_value_is_a_configuration_error(self, option: str, value: Any) -> None:
        with pytest.raises(fd.ConfigurationError, match=option):
            fd.Pipeline([_ok], defaults={option: value})

    def test_dict_becomes_options(self) -> None:
        pipe = fd.Pipeline([_ok], defaults={"retries": 2, "retry_on": KeyError})
        assert pipe.defaults == fd.Options(retries=2, retry_on=(KeyError,))

    def test_options_object_is_accepted(self) -> None:
        options = fd.Options(retries=2)
        assert fd.Pipeline([_ok], defaults=options).defaults == options

    def test_no_defaults(self) -> None:
        assert not fd.Pipeline([_ok]).defaults.is_set

    def test_unknown_key_is_named_with_a_suggestion(self) -> None:
        with pytest.raises(fd.ConfigurationError) as info:
            fd.Pipeline([_ok], defaults={"retires": 3})
        message = str(info.value)
        assert "'retires'" in message
        assert "did you mean 'retries'?" in message

    def test_every_unknown_key_is_named(self) -> None:
        with pytest.raises(fd.ConfigurationError) as info:
            fd.Pipeline([_ok], defaults={"timout": 1, "zzz": 2, "retries": 1})
        message = str(info.value)
        assert "'timout'" in message
        assert "did you mean 'timeout'?" in message
        assert "'zzz'" in message


class TestRunDefaults:
    @pytest.mark.parametrize(("option", "value"), INVALID)
    def test_invalid_value_is_a_configuration_error(self, option: str, value: Any) -> None:
        pipe = fd.Pipeline([_ok])
        with pytest.raises(fd.ConfigurationError, match=option):
            pipe.run(defaults={option: value})

    def test_unknown_key_in_run(self) -> None:
        with pytest.raises(fd.ConfigurationError, match="did you mean 'jitter'"):
            fd.Pipeline([_ok]).run(defaults={"jiter": 0.1})

    async def test_unknown_key_in_arun(self) -> None:
        with pytest.raises(fd.ConfigurationError, match="did you mean 'backoff'"):
            await fd.Pipeline([_ok]).arun(defaults={"backof": 2})

    def test_options_object_is_accepted(self) -> None:
        assert fd.Pipeline([_ok]).run(defaults=fd.Options(retries=1))["_ok"] == 1


class _Flaky:
    """A node body failing its first ``failures`` calls; counts its calls."""

    def __init__(self, failures: int, error: type[Exception] = ValueError) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error(f"failure {self.calls}")
        return self.calls


def _flaky_node(body: _Flaky, **options: Any) -> fd.Node[..., int]:
    return fd.node(name="flaky", run_in="inline", **options)(body)


class TestPrecedence:
    """A node's own options win over the run's defaults, which win over the pipeline's."""

    @pytest.mark.parametrize(
        ("pipeline", "run", "node", "attempts"),
        [
            pytest.param({"retries": 5}, None, {}, 6, id="pipeline-only"),
            pytest.param(None, {"retries": 2}, {}, 3, id="run-only"),
            pytest.param({}, {}, {"retries": 1}, 2, id="node-only"),
            pytest.param({"retries": 5}, {"retries": 1}, {}, 2, id="run-over-pipeline"),
            pytest.param({"retries": 5}, {"retries": 1}, {"retries": 3}, 4, id="node-over-all"),
            pytest.param({"retries": 5}, None, {"retries": 0}, 1, id="node-zero-over-pipeline"),
            pytest.param(
                {"retries": 5}, {"retries": 4}, {"retries": 0}, 1, id="node-zero-over-run"
            ),
            pytest.param({"retries": 5}, {"retries": 0}, {}, 1, id="run-zero-over-pipeline"),
            pytest.param(None, None, {}, 1, id="nothing-set"),
        ],
    )
    async def test_retries(
        self,
        pipeline: dict[str, Any] | None,
        run: dict[str, Any] | None,
        node: dict[str, Any],
        attempts: int,
    ) -> None:
        body = _Flaky(failures=100)
        pipe = fd.Pipeline([_flaky_node(body, **node)], defaults=pipeline)
        result = await pipe.arun(defaults=run, on_error="continue")
        assert body.calls == attempts
        assert result.attempts["flaky"] == attempts
        assert result.status["flaky"] is fd.Status.FAILED

    async def test_layering_is_per_option(self) -> None:
        # The pipeline asks for retries, the run narrows retry_on: a ValueError is not
        # retried even though no layer sets both.
        body = _Flaky(failures=100)
        pipe = fd.Pipeline([_flaky_node(body)], defaults={"retries": 4})
        result = await pipe.arun(defaults={"retry_on": KeyError}, on_error="continue")
        assert body.calls == 1
        assert result.attempts["flaky"] == 1

    async def test_node_retry_on_with_pipeline_retries(self) -> None:
        body = _Flaky(failures=2, error=KeyError)
        pipe = fd.Pipeline([_flaky_node(body, retry_on=KeyError)], defaults={"retries": 4})
        result = await pipe.arun()
        assert result["flaky"] == 3
        assert result.attempts["flaky"] == 3

    async def test_node_retry_on_narrows_run_retries(self) -> None:
        body = _Flaky(failures=2, error=KeyError)
        pipe = fd.Pipeline([_flaky_node(body, retry_on=ValueError)])
        result = await pipe.arun(defaults={"retries": 4}, on_error="continue")
        assert body.calls == 1
        assert isinstance(result.errors["flaky"], KeyError)

    async def test_run_defaults_do_not_stick_to_the_pipeline(self) -> None:
        body = _Flaky(failures=100)
        pipe = fd.Pipeline([_flaky_node(body)])
        await pipe.arun(defaults={"retries": 2}, on_error="continue")
        assert body.calls == 3
        body.calls = 0
        await pipe.arun(on_error="continue")
        assert body.calls == 1

    def test_sync_run_layers_the_same(self, backend: str) -> None:
        body = _Flaky(failures=100)
        pipe = fd.Pipeline([_flaky_node(body)], defaults=fd.Options(retries=5))
        result = pipe.run(defaults={"retries": 1}, on_error="continue", backend=backend)
        assert body.calls == 2
        assert result.attempts["flaky"] == 2


class TestRunOptions:
    """run() and arun() take their options as keywords, checked as Python checks keywords."""

    @pytest.mark.parametrize(
        ("call", "caller"),
        [
            pytest.param(lambda p, **o: p.run(**o), "Pipeline.run", id="run"),
            pytest.param(lambda p, **o: p.arun(**o), "Pipeline.arun", id="arun"),
        ],
    )
    def test_an_unknown_option_is_a_type_error_naming_the_closest(
        self, call: Any, caller: str
    ) -> None:
        pipe = fd.Pipeline([])
        with pytest.raises(
            TypeError,
            match=rf"^{caller}\(\) got an unexpected keyword argument 'concurency' "
            r"\(did you mean 'concurrency'\?\)$",
        ):
            call(pipe, concurency=2)

    def test_arun_takes_no_backend(self) -> None:
        with pytest.raises(TypeError, match="unexpected keyword argument 'backend'"):
            fd.Pipeline([]).arun(backend="trio")  # type: ignore[call-arg]

    def test_an_unknown_option_runs_nothing(self) -> None:
        calls: list[int] = []

        @fd.node(run_in="inline")
        def f() -> int:
            calls.append(1)
            return 1

        with pytest.raises(TypeError):
            fd.Pipeline([f]).run(retries=3)  # type: ignore[call-arg]
        assert calls == []

    def test_options_not_given_take_the_pipeline_settings(self) -> None:
        store = fd.MemoryStore()

        @fd.node(run_in="inline")
        def f() -> int:
            return 1

        pipe = fd.Pipeline([f], store=store, trace_inputs=True)
        pipe.run()
        assert [r.ok for r in pipe.runs()] == [True]
        assert pipe.run().status["f"] is fd.Status.CACHED
        assert pipe.run(store=None).status["f"] is fd.Status.SUCCEEDED
        assert len(store.runs("pipeline")) == 2

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            pytest.param({"backend": "curio"}, "backend must be 'asyncio' or 'trio'", id="backend"),
            pytest.param({"resume": 3}, "resume must be a run id or True", id="resume-type"),
            pytest.param({"resume": True, "store": None}, "resume= needs a store", id="resume"),
            pytest.param({"cache": "yes"}, "cache must be True or False", id="cache"),
        ],
    )
    def test_each_option_is_checked_before_anything_runs(
        self, options: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(fd.ConfigurationError, match=message):
            fd.Pipeline([]).run(**options)
