"""OpenTelemetry: send a run's spans somewhere with :func:`setup`; the duration buckets.

Every run records a span per run and per planned node, and metrics, through the global
providers (or those passed to the pipeline or the run); with no SDK configured it records
nothing and costs one check per run.
"""

from ._core._tracing import DURATION_BUCKETS, setup

__all__ = ["DURATION_BUCKETS", "setup"]
