"""Options: retries and timeouts per node, pipeline or run; the run options; validated once."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal, TypedDict

import attrs
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ._errors import ConfigurationError
from ._executors import Executor, InlineExecutor, LoopExecutor, ThreadExecutor
from ._process import OWN_PROCESSES

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ._hooks import Hooks
    from ._middleware import Middleware
    from ._result import Status
    from ._store import Store, StoreLike

__all__ = [
    "DEFAULT_CONCURRENCY",
    "EXECUTORS",
    "NO_OPTIONS",
    "Backend",
    "ExecutorChoice",
    "OnError",
    "Options",
    "RunOptions",
    "RunSettings",
    "as_options",
    "check_flag",
    "check_provider",
    "check_run_options",
]

#: Nodes (async, and sync ones in threads) running at once unless ``concurrency=`` says.
DEFAULT_CONCURRENCY = 64

OnError = Literal["raise", "continue"]
Backend = Literal["asyncio", "trio"]
#: What ``executor=`` takes: a name from :data:`EXECUTORS`, or an executor.
ExecutorChoice = Executor | Literal["inline", "loop", "thread", "process"]

#: The executor each name given to ``executor=`` (or ``run_in=``) stands for.
EXECUTORS: Mapping[str, Executor] = {
    "inline": InlineExecutor(),
    "loop": LoopExecutor(),
    "thread": ThreadExecutor(),
    "process": OWN_PROCESSES,
}


def _non_negative_int(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 0, got {value!r}")


def _number(value: object) -> float | None:
    """``value`` as a float; None for a bool, a non-number, or an int too big for a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        return float(value)
    except OverflowError:  # such an int would overflow later, in the arithmetic of waits
        return None


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    positive = attribute.name == "timeout"  # a zero timeout could never succeed
    endless = attribute.name in ("timeout", "max_delay")  # inf: no limit, no cap
    seconds = _number(value)
    if (
        seconds is None
        or math.isnan(seconds)
        or seconds < 0
        or (positive and seconds == 0)
        or (not endless and math.isinf(seconds))
    ):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(
            f"{attribute.name} must be a number of seconds {bound}, got {value!r}"
        )


def _backoff(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    factor = _number(value)
    if value is not None and (factor is None or not 1 <= factor < math.inf):
        raise ConfigurationError(
            f"backoff must be a finite number >= 1 (1: a constant delay), got {value!r}"
        )


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
    ):
        raise ConfigurationError(f"jitter must be a fraction from 0 to 1, got {value!r}")


def as_executor(value: object, option: str = "executor") -> Executor:
    """The executor ``value`` names or is."""
    if isinstance(value, Executor):
        return value
    found = EXECUTORS.get(value) if isinstance(value, str) else None
    if found is None:
        names = ", ".join(map(repr, EXECUTORS))
        close = difflib.get_close_matches(value, EXECUTORS, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigurationError(
            f"{option} must be one of {names} or an fd.Executor, got {value!r}{hint}"
        )
    return found


def _executor(value: object) -> Executor | None:
    return None if value is None else as_executor(value)


def _exception_types(value: object) -> object:
    if isinstance(value, type):
        value = (value,)
    if value is None:
        return None
    types = tuple(value) if isinstance(value, (tuple, list, set, frozenset)) else (value,)
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise ConfigurationError(
                f"retry_on must hold Exception subclasses, got {t!r}; cancellation, "
                "KeyboardInterrupt and SystemExit are never retried"
            )
    return types


@attrs.frozen
class Options:
    """How a node is retried and timed out, and where it runs; ``None`` means "not set here".

    A node's own options win over the run's ``defaults=``, which win over the pipeline's.

    Args:
        retries: Attempts after the first one (so at most ``1 + retries`` attempts).
        retry_delay: Seconds before the first retry.
        backoff: Each further retry waits this many times longer (1: a constant delay).
        max_delay: The longest wait between attempts, in seconds.
        jitter: A fraction: each wait is scaled by a random factor in ``1 ± jitter``.
        retry_on: Exception types that are retried; anything else fails at once.
        timeout: Seconds one attempt may take (not enforceable on inline nodes).
        executor: Where the body runs: ``"thread"``, ``"inline"``, ``"process"``,
            ``"loop"`` (async functions) or an :class:`Executor`. As a default (the
            pipeline's or the run's), it applies to the nodes that did not choose one and
            whose kind it runs: sync nodes, and async ones if it runs coroutines.
    """

    retries: int | None = attrs.field(default=None, validator=_non_negative_int)
    retry_delay: float | None = attrs.field(default=None, validator=_seconds)
    backoff: float | None = attrs.field(default=None, validator=_backoff)
    max_delay: float | None = attrs.field(default=None, validator=_seconds)
    jitter: float | None = attrs.field(default=None, validator=_fraction)
    retry_on: tuple[type[Exception], ...] | None = attrs.field(
        default=None, converter=_exception_types
    )
    timeout: float | None = attrs.field(default=None, validator=_seconds)
    executor: Executor | None = attrs.field(default=None, converter=_executor)

    def over(self, fallback: Options) -> Options:
        """These options, with ``fallback``'s where these are not set."""
        if fallback is NO_OPTIONS:
            return self
        if self is NO_OPTIONS:
            return fallback
        return Options(
            **{
                a.name: getattr(fallback, a.name)
                if getattr(self, a.name) is None
                else getattr(self, a.name)
                for a in attrs.fields(Options)
            }
        )

    @property
    def is_set(self) -> bool:
        """Whether any option is set."""
        return self != NO_OPTIONS

    @property
    def wraps_calls(self) -> bool:
        """Whether a retry or timeout option is set: what a node's chain is built for."""
        return (self if self.executor is None else attrs.evolve(self, executor=None)).is_set


#: No option set anywhere: what a node without options carries.
NO_OPTIONS = Options()


def as_options(value: Options | Mapping[str, Any] | None) -> Options:
    """Options from an ``Options`` or a mapping of its keys, naming unknown keys."""
    if value is None:
        return NO_OPTIONS
    if isinstance(value, Options):
        return value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"defaults must be an Options, a dict of its keys or None, got {value!r}"
        )
    known = [a.name for a in attrs.fields(Options)]
    unknown = [k for k in value if k not in known]
    if unknown:
        hints = "".join(
            f"\n  {k!r}"
            + "".join(
                f" (did you mean {c!r}?)"
                for c in (difflib.get_close_matches(k, known, n=1) if isinstance(k, str) else ())
            )
            for k in unknown
        )
        raise ConfigurationError(f"unknown option(s):{hints}\nknown options: {', '.join(known)}")
    return Options(**value)


class RunOptions(TypedDict, total=False):
    """What ``Pipeline.run()`` and ``arun()`` take besides inputs and outputs; none required.

    An option not given takes the pipeline's setting where the pipeline has one; see
    :meth:`Pipeline.arun` for what each does.
    """

    concurrency: int | None
    on_error: OnError
    on_status: Callable[[str, Status], None] | None
    hooks: Sequence[Hooks]
    defaults: Options | Mapping[str, Any] | None
    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    trace_inputs: bool | None
    store: StoreLike
    cache: bool
    resume: str | bool | None
    keep_values: bool
    executor: ExecutorChoice | None


def check_run_options(caller: str, options: Mapping[str, object]) -> None:
    """Refuse an option ``caller`` does not take, as Python refuses an unknown keyword.

    Raises:
        TypeError: Naming the option, and the closest known one.
    """
    for key in options:
        if key not in RunOptions.__optional_keys__:
            close = difflib.get_close_matches(key, RunOptions.__optional_keys__, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise TypeError(f"{caller}() got an unexpected keyword argument {key!r}{hint}")


def check_provider(option: str, value: object, kind: type[TracerProvider | MeterProvider]) -> None:
    """Refuse a provider that is not OpenTelemetry's: it would fail only as the run starts."""
    if value is not None and not isinstance(value, kind):
        raise ConfigurationError(
            f"{option} must be an OpenTelemetry {kind.__name__} (such as the SDK's), or None "
            f"for the global one, got {value!r}"
        )


def check_flag(option: str, value: object) -> None:
    """Refuse anything but True or False, as a truthy 1 or "no" would read ambiguously."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{option} must be True or False, got {value!r}")


def _check_concurrency(concurrency: int | None) -> int:
    if concurrency is None:
        return DEFAULT_CONCURRENCY
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ConfigurationError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    return concurrency


@attrs.frozen
class RunSettings:
    """How one run goes: the run's options merged over the pipeline's, each validated here."""

    middleware: tuple[Middleware, ...] = ()  # the pipeline's, outermost first
    concurrency: int = attrs.field(default=None, converter=_check_concurrency)
    on_error: OnError = attrs.field(default="raise")
    backend: Backend = attrs.field(default="asyncio")
    on_status: Callable[[str, Status], None] | None = attrs.field(default=None)
    hooks: tuple[Hooks, ...] = ()  # the pipeline's, then the run's
    defaults: Options = NO_OPTIONS  # the run's over the pipeline's; nodes' own win
    tracer_provider: TracerProvider | None = attrs.field(default=None)
    meter_provider: MeterProvider | None = attrs.field(default=None)
    trace_inputs: bool = attrs.field(default=False)  # inputs' types and sizes on node spans
    store: Store | None = None  # where checkpoints go; None: nowhere
    cache: bool = attrs.field(default=True)  # reuse stored values across runs
    # A run id to resume, or True for the latest run of the pipeline that did not end well.
    resume: str | bool | None = attrs.field(default=None)
    # Keep every node's value in the result, not only the outputs' (for debugging).
    keep_values: bool = attrs.field(default=False)

    @on_error.validator
    def _check_on_error(self, _: object, value: str) -> None:
        if value not in ("raise", "continue"):
            raise ConfigurationError(f"on_error must be 'raise' or 'continue', got {value!r}")

    @backend.validator
    def _check_backend(self, _: object, value: str) -> None:
        if value not in ("asyncio", "trio"):
            raise ConfigurationError(f"backend must be 'asyncio' or 'trio', got {value!r}")

    @on_status.validator
    def _check_on_status(self, _: object, value: object) -> None:
        if value is not None and not callable(value):
            raise ConfigurationError(
                f"on_status must be a function of (node, status), or None, got {value!r}"
            )

    @tracer_provider.validator
    def _check_tracer_provider(self, _: object, value: object) -> None:
        check_provider("tracer_provider", value, TracerProvider)

    @meter_provider.validator
    def _check_meter_provider(self, _: object, value: object) -> None:
        check_provider("meter_provider", value, MeterProvider)

    @trace_inputs.validator
    def _check_trace_inputs(self, _: object, value: object) -> None:
        check_flag("trace_inputs", value)

    @cache.validator
    def _check_cache(self, _: object, value: object) -> None:
        check_flag("cache", value)

    @keep_values.validator
    def _check_keep_values(self, _: object, value: object) -> None:
        check_flag("keep_values", value)

    @resume.validator
    def _check_resume(self, _: object, value: object) -> None:
        if value is None or value is False:
            return
        if value is not True and not isinstance(value, str):
            raise ConfigurationError(f"resume must be a run id or True, got {value!r}")
        if self.store is None:
            raise ConfigurationError("resume= needs a store; this run has store=None")
