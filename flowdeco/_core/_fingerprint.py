"""Fingerprints: a node's code version, values' data versions, and the cache key of a call.

The code version hashes the manifest a walk of the node's code builds (see _references):
its own source without docstrings and comments, and, transitively, the project's code and
values it reaches, so editing a helper, a constant or a method re-runs exactly the nodes
that use it. Installed packages count by their version, the standard library by Python's.
"""

from __future__ import annotations

import contextlib
import hashlib
import weakref
from typing import TYPE_CHECKING, Any

from ._files import checksum
from ._references import ABSENT, Walk, digest_of, recheck

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ._node import Node

__all__ = ["CodeVersion", "cache_key", "code_version", "data_version"]


def data_version(body: bytes | memoryview) -> str:
    """The version of a value: a hash of its packed bytes, the digest its checkpoint file's
    header holds (so a stored value's version is known without reading it)."""
    return checksum(body).hex()


def cache_key(node: str, code: str, inputs: Iterable[tuple[str, str]]) -> str:
    """The key of one call: node name, code version, and each input's data version."""
    parts = [node, code, *(f"{param}={version}" for param, version in sorted(inputs))]
    return hashlib.blake2b("\0".join(parts).encode(), digest_size=20).hexdigest()


class CodeVersion:
    """A node's code version, the manifest it hashes, and what may make it untrue.

    ``entries`` maps each function, class, value and package the code reaches to a digest
    of its content, ``where`` says where the code entries are defined. ``unversionable``
    names what could not be versioned (then the version cannot vouch for reuse across
    runs).
    """

    __slots__ = (
        "absent",
        "bindings",
        "entries",
        "manifest",
        "unversionable",
        "version",
        "volatile",
        "where",
    )

    def __init__(
        self,
        version: str,
        entries: Mapping[str, str],
        where: Mapping[str, str],
        unversionable: str | None = None,
        bindings: tuple[tuple[Mapping[str, Any], str, Any], ...] = (),
        volatile: list[list[Any]] | None = None,
    ) -> None:
        self.version = version
        self.entries = entries
        # As the run records hold it: computed once, as every stored node's entry has it.
        self.manifest = [f"{label}={digest}" for label, digest in entries.items()]
        self.where = where
        self.unversionable = unversionable
        self.bindings = bindings
        self.volatile = volatile or []
        # Names the code uses that were bound to nothing: a node may bind one as it runs.
        self.absent = tuple((ns, name) for ns, name, obj in self.bindings if obj is ABSENT)

    def current(self) -> bool:
        """Whether every global it read still names the same object (a notebook may rebind)."""
        for namespace, name, obj in self.bindings:  # noqa: SIM110  # all() of a generator costs 2x, per node per run
            if namespace.get(name, ABSENT) is not obj:
                return False
        return True

    def bound_since(self) -> bool:
        """Whether a name that was bound to nothing is bound now (by a node of the run)."""
        for namespace, name in self.absent:  # noqa: SIM110  # per node per run: no generator
            if name in namespace:
                return True
        return False

    def mutated(self) -> bool:
        """Whether a mutable value it hashed changed since (a cell edited a dict in place)."""
        return not all(recheck(value, digest) for value, digest in self.volatile)

    def settle(self) -> None:
        """Take the mutable values as a run left them as unchanged: what the run's own
        nodes did to them (a list they append to) is no edit of the user's, who would
        see the same version in a new process. An edit between runs still counts."""
        for pair in self.volatile:
            pair[1] = digest_of(pair[0])


_versions: weakref.WeakKeyDictionary[Any, CodeVersion] = weakref.WeakKeyDictionary()


def code_version(
    spec: Node[..., Any], recheck_values: bool = False, memo: dict[Any, Any] | None = None
) -> CodeVersion:
    """The code version of a node: its ``version=`` if the user gave one, else computed.

    Computed once per definition; again if a global it depends on was rebound (a helper
    redefined in a notebook cell) or, with ``recheck_values``, if a mutable value it
    hashed changed since it was versioned or since the last run that used it ended (see
    :meth:`CodeVersion.settle`). Calls sharing a ``memo``, with nothing run between them,
    walk each helper once.
    """
    if spec.version is not None:
        mark = hashlib.blake2b(spec.version.encode(), digest_size=8).hexdigest()
        return CodeVersion("user:" + spec.version, {"version": mark}, {})
    func = spec.func
    try:
        cached = _versions.get(func)
    except TypeError:  # not weak-referenceable: compute every time
        cached = None
    if (
        cached is not None
        and cached.current()
        and not (recheck_values and cached.volatile and cached.mutated())
    ):
        return cached
    walk = Walk(memo)
    walk.token(func, "", top=True)
    entries = walk.entries
    digest = hashlib.blake2b(digest_size=16)
    for label in sorted(entries):
        digest.update(f"{label}={entries[label]}\0".encode())
    unversionable = walk.unversionable[0] if walk.unversionable else None
    if unversionable is not None:
        digest.update(b"<unversionable>")
    result = CodeVersion(
        digest.hexdigest(),
        entries,
        walk.where,
        unversionable,
        tuple({(id(ns), name): (ns, name, obj) for ns, name, obj in walk.bindings}.values()),
        [list(pair) for pair in walk.volatile],
    )
    with contextlib.suppress(TypeError):
        _versions[func] = result
    return result
