"""Options: retries and timeouts, set per node, per pipeline or per run, validated once."""

from __future__ import annotations

import difflib
import math
from typing import TYPE_CHECKING, Any

import attrs

from .errors import ConfigurationError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["NO_OPTIONS", "Options", "as_options"]


def _non_negative_int(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ConfigurationError(f"{attribute.name} must be a whole number >= 0, got {value!r}")


def _seconds(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    positive = attribute.name == "timeout"  # a zero timeout could never succeed
    endless = attribute.name in ("timeout", "max_delay")  # inf: no limit, no cap
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or value < 0
        or (positive and value == 0)
        or (not endless and math.isinf(value))
    ):
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(
            f"{attribute.name} must be a number of seconds {bound}, got {value!r}"
        )


def _backoff(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf
    ):
        raise ConfigurationError(
            f"backoff must be a finite number >= 1 (1: a constant delay), got {value!r}"
        )


def _fraction(_: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
    ):
        raise ConfigurationError(f"jitter must be a fraction from 0 to 1, got {value!r}")


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
    """How a node is retried and timed out; ``None`` means "not set here".

    A node's own options win over the run's ``defaults=``, which win over the pipeline's.

    Args:
        retries: Attempts after the first one (so at most ``1 + retries`` attempts).
        retry_delay: Seconds before the first retry.
        backoff: Each further retry waits this many times longer (1: a constant delay).
        max_delay: The longest wait between attempts, in seconds.
        jitter: A fraction: each wait is scaled by a random factor in ``1 ± jitter``.
        retry_on: Exception types that are retried; anything else fails at once.
        timeout: Seconds one attempt may take (not enforceable on inline nodes).
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


#: No option set anywhere: what a node without options carries.
NO_OPTIONS = Options()


def as_options(value: Options | Mapping[str, Any] | None) -> Options:
    """Options from an ``Options`` or a mapping of its keys, naming unknown keys."""
    if value is None:
        return NO_OPTIONS
    if isinstance(value, Options):
        return value
    known = [a.name for a in attrs.fields(Options)]
    unknown = [k for k in value if k not in known]
    if unknown:
        hints = "".join(
            f"\n  {k!r}"
            + "".join(f" (did you mean {c!r}?)" for c in difflib.get_close_matches(k, known, n=1))
            for k in unknown
        )
        raise ConfigurationError(f"unknown option(s):{hints}\nknown options: {', '.join(known)}")
    return Options(**value)
