"""Content versions of files and directories, so that editing a file re-runs what reads it.

A file is hashed only when its stat (size, mtime, inode, device, ctime) differs from the one
it had when last hashed, in this process or, with a cache directory, in an earlier one. A
file modified within ``_RACY_NS`` of being hashed is not cached (git's "racy clean"): an
edit in the same timestamp tick would leave its stat unchanged.

The cache directory holds one entry per file, ``ab/abcd...`` named by the blake2b of its
resolved path: the msgpack of ``[path, size, mtime_ns, ino, dev, ctime_ns, digest]``. An
entry that is damaged or belongs to another path is ignored, and one that cannot be
written is skipped: the cache only saves time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
import threading
import time
from typing import TYPE_CHECKING, TypeAlias

import msgpack  # type: ignore[import-untyped]

from ._files import write_atomically

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["MISSING", "path_version"]

MISSING = "missing"  # the version of a path that does not exist (yet)
_RACY_NS = 2_000_000_000  # a file modified this recently (or in the future) is not cached
_CHUNK = 1 << 20
_ENTRY_MAX = 1 << 16  # a cache entry is a path and a few numbers: read no more than this
_BROKEN = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})  # a link that leads nowhere
_READ = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_READ_ENTRY = _READ | getattr(os, "O_NOFOLLOW", 0)

_Signature: TypeAlias = tuple[int, int, int, int, int]  # size, mtime_ns, ino, dev, ctime_ns

_known: dict[str, tuple[int, int, int, int, int, bytes]] = {}  # resolved path: signature, digest
_lock = threading.Lock()
_hashed_bytes = 0  # bytes read to hash files, so tests can tell that a file was not read again


def path_version(path: Path, cache_dir: Path | None = None) -> str:
    """The version of a file's or directory's content: a hex digest after ``f`` or ``d``,
    or ``MISSING``. ``cache_dir`` keeps file digests across processes."""
    name = os.path.abspath(path)  # the stat (inode, device) tells a moved link
    try:
        info = os.stat(name)
    except (FileNotFoundError, NotADirectoryError):
        return MISSING
    if not stat.S_ISDIR(info.st_mode):
        return "f" + _content(name, info, cache_dir).hex()
    hasher = hashlib.blake2b(digest_size=16)
    # The store the cache lives in changes with every run: a directory holding it (the
    # project's own, say) leaves it out, or it would never have the same version twice.
    store = None if cache_dir is None else os.path.realpath(cache_dir.parent)
    _walk(name, b"", hasher, cache_dir, store)
    return "d" + hasher.hexdigest()


def _walk(
    folder: str, prefix: bytes, hasher: hashlib.blake2b, cache_dir: Path | None, store: str | None
) -> None:
    """Feed ``hasher`` each entry under ``folder``, in name order, as a kind, a relative
    name and what it holds; a link to a directory is its text, so no cycle is followed."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        relative = prefix + os.fsencode(entry.name)
        if entry.is_dir(follow_symlinks=False):
            if store is not None and os.path.realpath(entry.path) == store:
                continue
            hasher.update(b"d%s\0" % relative)
            _walk(entry.path, relative + b"/", hasher, cache_dir, store)
            continue
        link = entry.is_symlink()
        name = os.path.realpath(entry.path) if link else entry.path
        try:
            info = os.stat(name)  # not entry.stat(): on Windows it has no inode or device
        except OSError as exc:
            if not (link and exc.errno in _BROKEN):
                raise
            info = None
        if info is None or stat.S_ISDIR(info.st_mode):
            hasher.update(b"l%s\0%s\0" % (relative, os.fsencode(os.readlink(entry.path))))
        else:
            hasher.update(b"f%s\0%s" % (relative, _content(name, info, cache_dir)))


def _content(name: str, info: os.stat_result, cache_dir: Path | None) -> bytes:
    """The blake2b of the file at the resolved path ``name``, from a cache if its stat
    is unchanged; hashed, and cached unless just modified, otherwise."""
    signature = _signature(info)
    with _lock:
        known = _known.get(name)
    if known is not None and known[:5] == signature:
        return known[5]
    digest = None if cache_dir is None else _load(cache_dir, name, signature)
    if digest is None:
        digest, signature = _hash(name)
        mtime_ns = signature[1]
        if mtime_ns > time.time_ns() - _RACY_NS:
            return digest
        if cache_dir is not None:
            _save(cache_dir, name, signature, digest)
    with _lock:
        _known[name] = (*signature, digest)
    return digest


def _hash(name: str) -> tuple[bytes, _Signature]:
    """The blake2b of a regular file's bytes, and its stat from before they were read."""
    global _hashed_bytes
    hasher = hashlib.blake2b(digest_size=16)
    with open(name, "rb", buffering=0, opener=lambda path, _: os.open(path, _READ)) as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):  # a FIFO or a device has no content to version
            raise OSError(errno.EINVAL, "neither a regular file nor a directory", name)
        read = 0
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
            read += len(chunk)
    with _lock:
        _hashed_bytes += read
    return hasher.digest(), _signature(info)


def _signature(info: os.stat_result) -> _Signature:
    """What must be unchanged for a file's digest to be reused."""
    return (info.st_size, info.st_mtime_ns, info.st_ino, info.st_dev, info.st_ctime_ns)


def _entry_file(cache_dir: Path, name: str) -> str:
    """Where the cache entry of the resolved path ``name`` lives."""
    key = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return os.path.join(cache_dir, key[:2], key)


def _load(cache_dir: Path, name: str, signature: _Signature) -> bytes | None:
    """The digest cached on disk for ``name`` at ``signature``; None if there is no such entry."""
    try:
        fd = os.open(_entry_file(cache_dir, name), _READ_ENTRY)
        try:
            data = os.read(fd, _ENTRY_MAX)
        finally:
            os.close(fd)
        entry = msgpack.unpackb(data, unicode_errors="surrogatepass")
    except (OSError, ValueError):
        return None
    if not (isinstance(entry, list) and len(entry) == 7):
        return None
    path, *stored, digest = entry
    if path == name and tuple(stored) == signature and type(digest) is bytes and len(digest) == 16:
        return digest
    return None


def _save(cache_dir: Path, name: str, signature: _Signature, digest: bytes) -> None:
    """Write the cache entry of ``name`` atomically, or nothing if the directory refuses."""
    file = _entry_file(cache_dir, name)
    body = msgpack.packb([name, *signature, digest], unicode_errors="surrogatepass")
    with contextlib.suppress(OSError):
        os.makedirs(os.path.dirname(file), exist_ok=True)
        write_atomically(file, [body], fsync=False)
