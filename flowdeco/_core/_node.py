"""The ``@node`` decorator and :class:`Node`, the frozen spec of one pipeline function."""

from __future__ import annotations

import functools
import inspect
import itertools
import types
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, ParamSpec, TypeVar, overload

import attrs

from ._errors import ConfigurationError, NodeDefinitionError
from ._options import EXECUTORS, NO_OPTIONS, Options, as_executor

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Sequence

    from ._executors import Executor
    from ._options import ExecutorChoice

__all__ = ["Node", "Param", "RunIn", "node", "returned_coroutine"]

P = ParamSpec("P")
R = TypeVar("R")

#: How the scheduler calls a node: ``"thread"`` (sync default: handed to its executor, worker
#: threads unless ``executor=`` says otherwise), ``"inline"`` (sync, in the event loop, for
#: cheap functions) or ``"loop"`` (async functions, awaited in the event loop or handed to
#: their executor).
RunIn = Literal["thread", "inline", "loop"]

# Orders definitions so that, in a namespace, the newest definition of a name wins.
_definition_counter = itertools.count()


@attrs.frozen
class Param:
    """One parameter of a node's function and the name (node or external input) it reads."""

    name: str
    source: str
    positional_only: bool = False
    keyword_only: bool = False
    has_default: bool = False
    # Not compared: it belongs to the function, which is; and it need not be hashable.
    default: object = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen(slots=False)
class Node(Generic[P, R]):
    """A function registered as a pipeline node; still callable as the function itself."""

    func: Callable[P, R]
    name: str
    params: tuple[Param, ...]
    after: tuple[str, ...] = ()
    run_in: RunIn = "thread"
    options: Options = NO_OPTIONS
    middleware: tuple[Callable[..., Any], ...] = ()
    # Reuse a stored value with the same key across runs; None: unless it returns None.
    cache: bool | None = None
    checkpoint: bool = True  # store the value at all (False: connections, handles)
    version: str | None = None  # the user's code version, instead of hashing the source
    serial: int = attrs.field(factory=_definition_counter.__next__, eq=False, repr=False)

    if TYPE_CHECKING:  # set per instance in __attrs_post_init__, from the function
        __wrapped__: ClassVar[Callable[..., Any]]
        __name__: ClassVar[str]
        __qualname__: ClassVar[str]

    def __attrs_post_init__(self) -> None:
        # Look like the wrapped function to help(), inspect.signature() and IDEs.
        # The class is frozen; these are not fields, so setting them directly is fine.
        func = self.func
        looks = vars(self)
        for a in functools.WRAPPER_ASSIGNMENTS:
            value = getattr(func, a, _NO_DEFAULT)
            if value is not _NO_DEFAULT:
                looks[a] = value
        looks["__wrapped__"] = func

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.func(*args, **kwargs)

    @property
    def sources(self) -> tuple[str, ...]:
        """Names this node reads a value from, one per parameter (nodes or external inputs)."""
        return tuple(p.source for p in self.params)

    @property
    def effect(self) -> bool:
        """Whether the function is annotated ``-> None``: it runs for what it does."""
        try:
            returns = inspect.unwrap(self.func).__annotations__.get("return", _NO_DEFAULT)
        except Exception:  # noqa: BLE001 - annotations that fail to evaluate say nothing
            return False
        return returns is None or returns is type(None) or returns == "None"

    @property
    def reusable(self) -> bool:
        """Whether a value stored by an earlier run may be reused: ``cache=``, else not
        for an effect."""
        return (not self.effect) if self.cache is None else self.cache

    @property
    def location(self) -> str:
        """``file:line`` of the function's definition, for error messages."""
        return _location(self.func, self.name)


@overload
def node(func: Callable[P, R], /) -> Node[P, R]: ...


@overload
def node(
    *,
    name: str | None = None,
    inputs: Mapping[str, str | Node[..., Any]] | None = None,
    after: Iterable[str | Node[..., Any]] = (),
    run_in: Literal["thread", "inline"] | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    backoff: float | None = None,
    max_delay: float | None = None,
    jitter: float | None = None,
    retry_on: type[Exception] | tuple[type[Exception], ...] | None = None,
    timeout: float | None = None,
    middleware: Sequence[Callable[..., Any]] = (),
    cache: bool | None = None,
    checkpoint: bool | None = None,
    version: str | None = None,
    executor: ExecutorChoice | None = None,
) -> Callable[[Callable[P, R]], Node[P, R]]: ...


def node(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    inputs: Mapping[str, str | Node[..., Any]] | None = None,
    after: Iterable[str | Node[..., Any]] = (),
    run_in: Literal["thread", "inline"] | None = None,
    retries: int | None = None,
    retry_delay: float | None = None,
    backoff: float | None = None,
    max_delay: float | None = None,
    jitter: float | None = None,
    retry_on: type[Exception] | tuple[type[Exception], ...] | None = None,
    timeout: float | None = None,
    middleware: Sequence[Callable[..., Any]] = (),
    cache: bool | None = None,
    checkpoint: bool | None = None,
    version: str | None = None,
    executor: ExecutorChoice | None = None,
) -> Node[P, R] | Callable[[Callable[P, R]], Node[P, R]]:
    """Register a function as a pipeline node, bare (``@node``) or with options.

    Decorating a node again keeps its options; those given here replace the node's.

    Args:
        name: The node's name; defaults to the function's ``__name__``.
        inputs: Renames: ``{parameter: node}`` feeds a parameter from a node (a name or the
            Node) whose name differs from the parameter's.
        after: Nodes (names or Nodes; one name may be a plain string) that must finish
            before this one starts, without passing a value.
        run_in: For sync functions, ``"thread"`` (default) runs them in a worker thread,
            ``"inline"`` calls them directly in the event loop, for cheap functions.
        executor: Where the body runs: ``"thread"``, ``"inline"`` (sync functions, as
            ``run_in=``), ``"process"`` (a worker process: CPU-bound code, timeouts that
            really stop it), ``"loop"`` (async functions' default), or an
            :class:`Executor`. It wins over the pipeline's and the run's ``executor=``.
        retries, retry_delay, backoff, max_delay, jitter, retry_on, timeout: How the node
            is retried and timed out; see :class:`Options`. They win over the pipeline's
            and the run's ``defaults=``.
        middleware: Async callables wrapped around each call of this node, inside the
            pipeline's middleware; see :mod:`flowdeco.middleware`.
        cache: Reuse the value stored by an earlier run with the same code and inputs
            (``False``: always run, except when resuming the run that produced it). By
            default a node annotated ``-> None`` runs for its effect, so it is not reused
            across runs unless ``cache=True``.
        checkpoint: Store the value at all (the default); ``False`` for values that cannot
            or must not be stored (connections, handles). Such a node runs whenever it is
            needed.
        version: Your own code version; when it changes, stored values are not reused.
            Without it, the version hashes the function's source and the project code it
            uses.

    Raises:
        NodeDefinitionError: The function takes ``*args``/``**kwargs``, is a generator
            function, ``inputs=`` names a parameter the function lacks, or an option is
            invalid (an executor that does not run this kind of function).
    """

    resilience_options = (retries, retry_delay, backoff, max_delay, jitter, retry_on, timeout)
    no_resilience = resilience_options.count(None) == len(resilience_options)  # faster than all()

    def decorate(f: Callable[P, R]) -> Node[P, R]:
        if isinstance(f, Node):  # re-decorated: its function, with its options under these
            given = {
                "name": name,
                "inputs": inputs,
                "after": after or None,
                "run_in": run_in,
                "retries": retries,
                "retry_delay": retry_delay,
                "backoff": backoff,
                "max_delay": max_delay,
                "jitter": jitter,
                "retry_on": retry_on,
                "timeout": timeout,
                "middleware": middleware or None,
                "cache": cache,
                "checkpoint": checkpoint,
                "version": version,
                "executor": executor,
            }
            kept = _options_of(f)
            if run_in is not None or executor is not None:  # a new choice replaces the old
                kept["executor"] = None
            kept.update((option, value) for option, value in given.items() if value is not None)
            redecorated: Node[P, R] = node(**kept)(f.func)
            return redecorated
        spec = _make_node(
            f, name=name, inputs=inputs or {}, after=after, run_in=run_in, executor=executor
        )
        if cache is not None or checkpoint is not None or version is not None:
            spec = attrs.evolve(spec, **_checkpointing(spec, cache, checkpoint, version))
        if not middleware and no_resilience:
            return spec
        label = _Label(spec.name, spec.func)
        try:
            resilience = Options(
                retries=retries,
                retry_delay=retry_delay,
                backoff=backoff,
                max_delay=max_delay,
                jitter=jitter,
                retry_on=retry_on,
                timeout=timeout,
                executor=spec.options.executor,
            )
        except ConfigurationError as exc:
            raise NodeDefinitionError(f"{label}: {exc}") from None
        if resilience.timeout is not None and spec.run_in == "inline":
            raise NodeDefinitionError(
                f"{label}: timeout= cannot stop an inline node, which blocks the event loop; "
                "use run_in='thread' (the default) or an async function"
            )
        for m in middleware:
            if not callable(m):
                raise NodeDefinitionError(f"{label}: middleware must be callables, got {m!r}")
        return attrs.evolve(spec, options=resilience, middleware=tuple(middleware))

    if func is not None:
        return decorate(func)
    return decorate


def _options_of(spec: Node[..., Any]) -> dict[str, Any]:
    """The options ``spec`` was decorated with, as ``node()`` takes them: what re-decoration
    keeps."""
    return {
        "name": spec.name,
        "inputs": {p.name: p.source for p in spec.params if p.source != p.name} or None,
        "after": spec.after,
        "run_in": None,  # a choice made is in the options, as their executor
        **attrs.asdict(spec.options, recurse=False),
        "middleware": spec.middleware,
        "cache": spec.cache,
        "checkpoint": spec.checkpoint,
        "version": spec.version,
    }


def _checkpointing(
    spec: Node[..., Any], cache: object, checkpoint: object, version: object
) -> dict[str, Any]:
    """The checkpoint options, checked: flags must be bools, a version a non-empty string.

    ``None`` is "not given": the default (store the value; cache unless it returns None).
    """
    label = _Label(spec.name, spec.func)
    for option, value in (("cache", cache), ("checkpoint", checkpoint)):
        if not isinstance(value, bool) and value is not None:
            raise NodeDefinitionError(f"{label}: {option}= must be True or False, got {value!r}")
    if version is not None and not (isinstance(version, str) and version):
        raise NodeDefinitionError(f"{label}: version= must be a non-empty string, got {version!r}")
    return {"cache": cache, "checkpoint": checkpoint is not False, "version": version}


def returned_coroutine(
    spec: Node[..., Any], coroutine: Coroutine[Any, Any, Any]
) -> NodeDefinitionError:
    """The failure of node ``spec``, whose function returned ``coroutine`` as its value.

    Passed on, the coroutine would fail a child (or be stored), far from the mistake. It is
    closed here, so that Python does not also warn that it was never awaited.
    """
    coroutine.close()
    label = _Label(spec.name, spec.func)
    if spec.run_in == "loop":
        return NodeDefinitionError(
            f"{label} returned a coroutine: its async function returned one without awaiting "
            "it; write `return await ...`"
        )
    return NodeDefinitionError(
        f"{label} returned a coroutine: its function is sync (a sync wrapper around an async "
        "def?); make the wrapper async, or decorate the async function"
    )


def _make_node(
    func: Callable[P, R],
    *,
    name: str | None,
    inputs: Mapping[str, str | Node[..., Any]],
    after: Iterable[str | Node[..., Any]],
    run_in: Literal["thread", "inline"] | None,
    executor: ExecutorChoice | None,
) -> Node[P, R]:
    if not callable(func):
        raise NodeDefinitionError(f"@node needs a function, got {func!r}")
    if name is not None and not (isinstance(name, str) and name):
        raise NodeDefinitionError(
            f"@node(name=...) must be a non-empty string, got {name!r} (for "
            f"{getattr(func, '__qualname__', func)} at {_location(func, '?')})"
        )
    node_name = name if name is not None else getattr(func, "__name__", None)
    if not isinstance(node_name, str) or not node_name or node_name == "<lambda>":
        raise NodeDefinitionError(
            f"cannot infer a node name for {func!r}; pass one with @node(name=...)"
        )
    label = _Label(node_name, func)
    if inputs and not isinstance(inputs, Mapping):
        raise NodeDefinitionError(
            f"{label}: inputs= must be a dict of {{parameter: node}}, got {inputs!r}"
        )
    parameters = _parameters(func, label)
    # Renames and after= are rare: the common decoration skips their work entirely.
    sources = {param: _node_name(src, label) for param, src in inputs.items()} if inputs else {}
    if sources:
        unknown = sorted(set(sources).difference(p[0] for p in parameters))
        if unknown:
            raise NodeDefinitionError(
                f"{label}: inputs= renames {', '.join(map(repr, unknown))}, which the function "
                f"does not take; its parameters are "
                f"{', '.join(p[0] for p in parameters) or 'none'}"
            )
    params = tuple(
        [
            Param(
                pname,
                sources.get(pname, pname) if sources else pname,
                positional_only,
                keyword_only,
                default is not _NO_DEFAULT,
                None if default is _NO_DEFAULT else default,
            )
            for pname, positional_only, keyword_only, default in parameters
        ]
    )
    kind = _resolve_run_in(func, run_in, label)
    chosen = None
    if executor is not None or run_in is not None:  # rare: the usual node skips this
        kind, chosen = _chosen_executor(kind, run_in, executor, label)
    return Node(
        func=func,
        name=node_name,
        params=params,
        after=tuple(dict.fromkeys(_node_name(a, label) for a in _as_list(after, label)))
        if after
        else (),
        run_in=kind,
        options=NO_OPTIONS if chosen is None else Options(executor=chosen),
    )


def _chosen_executor(
    kind: RunIn, run_in: str | None, executor: object, label: _Label
) -> tuple[RunIn, Executor]:
    """The node's kind and the executor ``run_in=`` or ``executor=`` chose, checked."""
    if executor is None:
        return kind, EXECUTORS[kind]
    if run_in is not None:
        raise NodeDefinitionError(
            f"{label}: give run_in= or executor=, not both (run_in={run_in!r}, "
            f"executor={executor!r})"
        )
    try:
        chosen = as_executor(executor)
    except ConfigurationError as exc:
        raise NodeDefinitionError(f"{label}: {exc}") from None
    if kind == "loop" and not chosen.runs_async:
        raise NodeDefinitionError(
            f"{label}: executor={executor!r} runs sync functions only; an async node is "
            "awaited in the event loop, or runs in an executor that runs coroutines, such "
            "as executor='process'"
        )
    if kind != "loop" and not chosen.runs_sync:
        raise NodeDefinitionError(
            f"{label}: executor={executor!r} runs async functions only, and this one is sync"
        )
    return ("inline" if chosen.inline else kind), chosen


_NO_DEFAULT: Any = inspect.Parameter.empty
_CO_VARARGS, _CO_VARKEYWORDS = inspect.CO_VARARGS, inspect.CO_VARKEYWORDS


class _Label:
    """Names a node in error messages; formatted only when an error is raised.

    A plain slotted class: one is made per decorated function, and an attrs frozen
    instance costs several times more to create.
    """

    __slots__ = ("func", "name")

    def __init__(self, name: str, func: Callable[..., Any]) -> None:
        self.name = name
        self.func = func

    def __str__(self) -> str:
        return f"node {self.name!r} ({_location(self.func, self.name)})"


def _location(func: Callable[..., Any], name: str) -> str:
    """``file:line`` of the definition of ``func`` (what it wraps, if it is a wrapper)."""
    func = inspect.unwrap(func)
    code = getattr(func, "__code__", None)
    if code is not None:
        return f"{code.co_filename}:{code.co_firstlineno}"
    try:
        return f"{inspect.getsourcefile(func)}:{inspect.getsourcelines(func)[1]}"
    except (OSError, TypeError):
        return f"<{getattr(func, '__module__', '?')}.{name}>"


def _parameters(func: Callable[..., Any], label: _Label) -> list[tuple[str, bool, bool, Any]]:
    """``(name, positional_only, keyword_only, default)`` per parameter, in order.

    ``*args`` and ``**kwargs`` are rejected.
    """
    # Plain functions are read from their code object: inspect.signature costs ~10 us, and
    # building a 100,000-node pipeline calls this once per node.
    if _is_plain_function(func):
        code = func.__code__
        if code.co_flags & (_CO_VARARGS | _CO_VARKEYWORDS):
            return _parameters_from_signature(func, label)  # for the precise error
        npos, nkw = code.co_argcount, code.co_kwonlyargcount
        names = code.co_varnames[: npos + nkw]
        defaults = func.__defaults__ or ()
        posonly = code.co_posonlyargcount
        if not (defaults or nkw or posonly):  # the usual node: plain positional parameters
            return [(pname, False, False, _NO_DEFAULT) for pname in names]
        kwdefaults = func.__kwdefaults__ or {}
        first_default = npos - len(defaults)
        return [
            (
                pname,
                i < posonly,
                i >= npos,
                defaults[i - first_default]
                if first_default <= i < npos
                else kwdefaults.get(pname, _NO_DEFAULT)
                if i >= npos
                else _NO_DEFAULT,
            )
            for i, pname in enumerate(names)
        ]
    return _parameters_from_signature(func, label)


def _parameters_from_signature(
    func: Callable[..., Any], label: _Label
) -> list[tuple[str, bool, bool, Any]]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise NodeDefinitionError(f"{label}: cannot read its signature: {exc}") from exc
    found = []
    for p in signature.parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            stars = "*" if p.kind is p.VAR_POSITIONAL else "**"
            raise NodeDefinitionError(
                f"{label}: parameter {stars}{p.name} is not supported; a node's inputs are "
                "named by its parameters, so list each one explicitly"
            )
        found.append((p.name, p.kind is p.POSITIONAL_ONLY, p.kind is p.KEYWORD_ONLY, p.default))
    return found


def _resolve_run_in(func: Callable[..., Any], run_in: str | None, label: _Label) -> RunIn:
    kind = _generator_kind(func)
    if kind:
        raise NodeDefinitionError(
            f"{label} is {kind} function: a node's value is shared by its children and "
            "stored, so return a list (list(...)) instead"
        )
    if _is_async(func):
        if run_in is not None:
            raise NodeDefinitionError(
                f"{label}: run_in={run_in!r} applies to sync functions only; "
                "an async node is awaited in the event loop"
            )
        return "loop"
    if run_in is None:
        return "thread"
    if run_in not in ("thread", "inline"):
        raise NodeDefinitionError(f"{label}: run_in must be 'thread' or 'inline', got {run_in!r}")
    return run_in  # type: ignore[return-value]  # narrowed by the check above


def _is_plain_function(func: Callable[..., Any]) -> bool:
    """A function whose code object tells the whole story (no ``__wrapped__``, markers...)."""
    return type(func) is types.FunctionType and not func.__dict__


def _generator_kind(func: Callable[..., Any]) -> str:
    """``"a generator"`` or ``"an async generator"`` if calling ``func`` makes one, else "".

    A generator is no value: the first child to iterate it drains it for every other child.
    """
    if _is_plain_function(func):
        flags = func.__code__.co_flags
        generator = bool(flags & inspect.CO_GENERATOR)
        async_generator = bool(flags & inspect.CO_ASYNC_GENERATOR)
    else:
        call = getattr(func, "__call__", None)  # noqa: B004  # generator callable objects
        generator = inspect.isgeneratorfunction(func) or inspect.isgeneratorfunction(call)
        async_generator = inspect.isasyncgenfunction(func) or inspect.isasyncgenfunction(call)
    return "a generator" if generator else "an async generator" if async_generator else ""


def _is_async(func: Callable[..., Any]) -> bool:
    if _is_plain_function(func):
        return bool(func.__code__.co_flags & inspect.CO_COROUTINE)
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004  # async callable objects
    )


def _as_list(
    after: Iterable[str | Node[..., Any]] | str | Node[..., Any], label: _Label
) -> list[object]:
    if isinstance(after, (str, Node)):
        return [after]
    if not isinstance(after, Iterable):
        raise NodeDefinitionError(
            f"{label}: after= must be a node, a node name or a list of them, got {after!r}"
        )
    return list(after)


def _node_name(ref: object, label: _Label) -> str:
    if isinstance(ref, Node):
        return ref.name
    if isinstance(ref, str) and ref:
        return ref
    raise NodeDefinitionError(f"{label}: expected a node or a node name, got {ref!r}")
