"""Middleware: async callables wrapped around each call of a node, and the built-ins.

A middleware receives the :class:`Call` and ``call_next``; it may act before and after,
replace the result, retry, or raise. The pipeline's middleware is outermost, then the
node's own, then the retry and timeout that ``retries=``/``timeout=`` options ask for::

    async def audit(call: fd.Call, call_next: fd.CallNext) -> Any:
        print("calling", call.node.name, "attempt", call.attempt)
        return await call_next(call)
"""

from ._core._middleware import Call, CallNext, Middleware, logging, retry, timeout

__all__ = ["Call", "CallNext", "Middleware", "logging", "retry", "timeout"]
