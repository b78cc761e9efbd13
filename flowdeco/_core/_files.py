"""Checkpoint files: their format, and reads and writes that trust nothing on disk.

A file is a header (magic, format version, flags, the key it belongs to, body length,
checksum) and the body. The checksum is the body's blake2b-128 digest, which is also the
value's data version: a run learns a stored value's version from the header alone, and
reads the body only if something needs the value. A file proves which key it holds, as a git object proves its name, so a file
copied or moved under another key is refused rather than served as another node's value.
Reading follows no symbolic link, opens nothing but a regular file, and checks the size the
header promises before reading the body, so a FIFO, ``/dev/zero`` or a huge file cannot
hang a run or exhaust its memory. Writing creates a temporary file exclusively, under a
random name, and renames it into place; a failed write removes it at once.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import mmap
import os
import secrets
import stat
import struct
import zlib
from typing import TYPE_CHECKING

from ._errors import CorruptDataError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "FORMAT_VERSION",
    "HEADER_SIZE",
    "MAGIC",
    "NAMES_FILES",
    "Checkpoint",
    "body_crc",
    "checksum",
    "pack_file",
    "pack_header",
    "read_checkpoint",
    "unpack_file",
    "write_all",
    "write_atomically",
]

MAGIC = b"FDCK"
FORMAT_VERSION = 3
# magic, format version, flags, key length, key (ASCII, zero-padded), CRC-32 of the body,
# CRC-32 of the rest of the header, body length, digest (blake2b-128 of the body: the data
# version). The header's CRC makes a damaged header a miss when the run reads the header
# alone (a large body is read later, if at all): a cleared flag, say, would otherwise leave
# a value's named files out of its version. The body is checked by its CRC-32, six times
# faster than its digest, which the store computed once; like the digest, it catches
# damage, not a forger.
_HEADER = struct.Struct(">4sBBB128sIIQ16s")
_CHECKED = struct.Struct(">4sBBB128sIQ16s")  # what the header's CRC covers
#: A flag: the body names file system paths, so its data version must cover their content.
NAMES_FILES = 1
HEADER_SIZE = _HEADER.size
_MAX_KEY = 128
_CHUNK = 1 << 30  # one read or write call moves at most this (Linux caps one at about 2 GiB)
_SMALL = 1 << 20  # files up to this size are read whole at once; larger ones header first

_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
_BINARY = getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
# O_NONBLOCK: opening a FIFO must not wait for a writer (fstat then refuses it).
_READ = os.O_RDONLY | _NO_FOLLOW | getattr(os, "O_NONBLOCK", 0) | _BINARY
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | _BINARY


class Checkpoint:
    """What a checkpoint file holds, as read: the body's digest and flags, and the body
    itself (a memoryview, not a copy) unless it was left unread."""

    __slots__ = ("body", "digest", "flags", "length")

    def __init__(self, digest: bytes, flags: int, length: int, body: memoryview | None) -> None:
        self.digest = digest
        self.flags = flags
        self.length = length
        self.body = body


def checksum(body: bytes | memoryview | Sequence[bytes | memoryview]) -> bytes:
    """The body's checksum (of the body, or of its parts one after the other), which is
    also its value's data version (as hex)."""
    if isinstance(body, (bytes, memoryview)):
        return hashlib.blake2b(body, digest_size=16).digest()
    digest = hashlib.blake2b(digest_size=16)
    for part in body:  # large parts are hashed without the GIL
        digest.update(part)
    return digest.digest()


def body_crc(body: bytes | memoryview | Sequence[bytes | memoryview]) -> int:
    """The CRC-32 of a body (or of its parts, one after the other)."""
    if isinstance(body, (bytes, memoryview)):
        return zlib.crc32(body)
    crc = 0
    for part in body:
        crc = zlib.crc32(part, crc)
    return crc


def pack_file(key: str, body: bytes, flags: int = 0) -> bytes:
    """Header and body, as written to the checkpoint file of ``key``."""
    return pack_header(key, len(body), checksum(body), body_crc(body), flags) + body


def pack_header(key: str, length: int, digest: bytes, crc: int, flags: int = 0) -> bytes:
    """The header of ``key``'s checkpoint file holding a body of ``length`` bytes, with
    that ``digest`` and CRC-32."""
    encoded = key.encode("ascii")
    if len(encoded) > _MAX_KEY:
        raise ValueError(f"a checkpoint key has at most {_MAX_KEY} characters, got {len(key)}")
    fields = (MAGIC, FORMAT_VERSION, flags, len(encoded), encoded, crc)
    return _HEADER.pack(*fields, _header_crc(fields, length, digest), length, digest)


def _header_crc(fields: tuple[bytes | int, ...], length: int, digest: bytes) -> int:
    """The CRC-32 of every header field but itself."""
    return zlib.crc32(_CHECKED.pack(*fields, length, digest))


def _promised(key: str, header: bytes | memoryview) -> tuple[int, bytes, int, int] | str:
    """The body length, digest, flags and body CRC a header promises for ``key``, or why
    it cannot be trusted."""
    if len(header) < HEADER_SIZE:
        return "truncated header"
    magic, version, flags, key_length, stored_key, crc, own_crc, length, digest = (
        _HEADER.unpack_from(header)
    )
    if magic != MAGIC:
        return "not a flowdeco checkpoint"
    if version != FORMAT_VERSION:
        return f"format version {version}, this flowdeco reads {FORMAT_VERSION}"
    fields = (magic, version, flags, key_length, stored_key, crc)
    if own_crc != _header_crc(fields, length, digest):
        return "header checksum mismatch"
    belongs = stored_key[:key_length]
    if belongs != key.encode("ascii", "replace"):
        return f"it belongs to key {belongs.decode('ascii', 'replace')!r}, not this one"
    return length, digest, flags, crc


def unpack_file(key: str, data: bytes) -> bytes | str:
    """The body of ``key``'s checkpoint file from its bytes, or why it cannot be trusted."""
    found = _unpack(key, memoryview(data))
    return found if isinstance(found, str) else bytes(found.body or b"")


def _unpack(key: str, data: memoryview) -> Checkpoint | str:
    promised = _promised(key, data)
    if isinstance(promised, str):
        return promised
    length, digest, flags, crc = promised
    body = data[HEADER_SIZE:]
    if len(body) != length:
        return f"body is {len(body)} bytes, header says {length}"
    if zlib.crc32(body) != crc:
        return "checksum mismatch"
    return Checkpoint(digest, flags, length, body)


def read_checkpoint(file: str, key: str, whole_up_to: float = math.inf) -> Checkpoint | None:
    """What ``key``'s checkpoint at ``file`` holds; None if there is no file.

    A body larger than ``whole_up_to`` bytes is left unread (``body`` None): the header's
    checks passed, the checksum is verified when the body is read.

    Raises:
        CorruptDataError: The file cannot be trusted; the message names it and says why.
    """
    try:
        fd = os.open(file, _READ)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptDataError(f"checkpoint {file} is a symbolic link; refused") from None
        raise CorruptDataError(f"cannot read checkpoint {file}: {exc}") from exc
    try:
        return _read(fd, file, key, whole_up_to)
    except OSError as exc:
        raise CorruptDataError(f"cannot read checkpoint {file}: {exc}") from exc
    finally:
        os.close(fd)


def _read(fd: int, file: str, key: str, whole_up_to: float) -> Checkpoint:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise CorruptDataError(f"checkpoint {file} is not a regular file; refused")
    if info.st_size <= min(_SMALL, HEADER_SIZE + whole_up_to):
        # The usual value: one read of a size known to be small. One byte more than fstat
        # said: if the file grew since, unpacking refuses it.
        found = _unpack(key, memoryview(os.read(fd, info.st_size + 1)))
        if isinstance(found, str):
            raise CorruptDataError(f"damaged checkpoint {file} ({found})")
        return found
    promised = _promised(key, _read_exactly(fd, min(HEADER_SIZE, info.st_size)))
    if isinstance(promised, str):
        raise CorruptDataError(f"damaged checkpoint {file} ({promised})")
    length, digest, flags, crc = promised
    if info.st_size != HEADER_SIZE + length:  # before reading: a huge file costs nothing
        found_size = info.st_size - HEADER_SIZE
        raise CorruptDataError(
            f"damaged checkpoint {file} (body is {found_size} bytes, header says {length})"
        )
    if length > whole_up_to:
        return Checkpoint(digest, flags, length, None)
    body = _read_into(fd, length)
    if body is None:
        raise CorruptDataError(f"damaged checkpoint {file} (it shrank while being read)")
    if zlib.crc32(body) != crc:
        raise CorruptDataError(f"damaged checkpoint {file} (checksum mismatch)")
    return Checkpoint(digest, flags, length, body)


def _read_into(fd: int, size: int) -> memoryview | None:
    """The next ``size`` bytes of ``fd``, read into one writable buffer; None if the file
    ends first. Writable, so that arrays decoded from it need no copy of their own; an
    anonymous map, whose pages the kernel gives zeroed as they are first written, so that
    the buffer is not filled with zeros first."""
    buffer = memoryview(mmap.mmap(-1, size)) if size else memoryview(bytearray())
    got = 0
    with open(fd, "rb", buffering=0, closefd=False) as file:  # readinto: no copy, anywhere
        while got < size:
            n = file.readinto(buffer[got : got + _CHUNK])
            if not n:
                return None
            got += n
    return buffer


def _read_exactly(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``, or fewer at the end of the file."""
    first = os.read(fd, min(size, _CHUNK))
    if len(first) == size or not first:
        return first  # the usual case: one call
    chunks, got = [first], len(first)
    while got < size:
        chunk = os.read(fd, min(size - got, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def write_atomically(file: str, parts: Sequence[bytes | memoryview], fsync: bool) -> None:
    """Write ``parts`` to ``file`` whole or not at all: a reader sees the old file, the new
    one, or none. Parts, so that a large body is never copied to put a header before it.

    The temporary file is created exclusively, never through a link someone planted, under
    a name nobody can predict; if anything fails it is removed before the error goes on.
    """
    folder, name = os.path.split(file)
    temp = os.path.join(folder, f".tmp-{name}-{secrets.token_hex(8)}")
    fd = os.open(temp, _CREATE, 0o644)
    try:
        try:
            for part in parts:
                write_all(fd, part)
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, file)  # atomic on POSIX and Windows
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write all of ``data``: one call may write less than asked."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_CHUNK]) :]
