"""File and directory versions: content decides, stat saves the reading, caches are never trusted.

Files are made old with ``os.utime`` (mtimes in the past) rather than by sleeping past the
racy window; ``_hashed_bytes`` tells whether a file was read again.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowdeco._core import _filedigest
from flowdeco._core._filedigest import MISSING, path_version

if TYPE_CHECKING:
    from collections.abc import Callable

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX links, FIFOs and modes")
not_root = pytest.mark.skipif(
    os.name == "posix" and os.geteuid() == 0, reason="root reads and writes whatever the mode"
)

OLD_NS = time.time_ns() - 3600 * 10**9  # an hour ago: well outside the racy window
# Run in a new process: print the version of argv[1] (cache in argv[2]) and the bytes hashed.
CHILD = """
import sys
from pathlib import Path
from flowdeco._core import _filedigest
version = _filedigest.path_version(Path(sys.argv[1]), Path(sys.argv[2]))
print(version, _filedigest._hashed_bytes)
"""


def write_old(path: Path, data: bytes, mtime_ns: int = OLD_NS) -> Path:
    """Write ``data`` to ``path`` and date it in the past, so that its digest is cached."""
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))
    return path


def hashed(call: Callable[[], object]) -> int:
    """Bytes ``path_version`` read to hash files during ``call``."""
    before = _filedigest._hashed_bytes
    call()
    return _filedigest._hashed_bytes - before


def in_new_process(path: Path, cache_dir: Path) -> tuple[str, int]:
    """``path``'s version from a fresh interpreter, and the bytes it hashed to get it."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version, count = done.stdout.split()
    return version, int(count)


def forget() -> None:
    """Empty the in-process stat cache, as a new process starts: only the disk cache is left."""
    with _filedigest._lock:
        _filedigest._known.clear()


def entry_file(cache_dir: Path, path: Path) -> Path:
    """Where the cache entry of ``path`` is: named by the blake2b of its resolved path."""
    key = hashlib.blake2b(str(path.resolve()).encode(), digest_size=16).hexdigest()
    return cache_dir / key[:2] / key


class TestFiles:
    def test_the_version_is_the_content_in_any_process(self, tmp_path: Path) -> None:
        a = write_old(tmp_path / "a.csv", b"id,qty\n1,2\n")
        b = write_old(tmp_path / "elsewhere.csv", b"id,qty\n1,2\n")
        version = path_version(a)
        assert version == "f" + hashlib.blake2b(a.read_bytes(), digest_size=16).hexdigest()
        assert path_version(b) == version  # the content, not the name
        assert in_new_process(a, tmp_path / "one")[0] == version
        assert in_new_process(a, tmp_path / "two")[0] == version

    def test_an_edit_changes_the_version_and_undoing_it_restores_it(self, tmp_path: Path) -> None:
        path = write_old(tmp_path / "orders.csv", b"1,2\n")
        first = path_version(path)
        write_old(path, b"1,2\n3,4\n", OLD_NS + 10**9)
        assert path_version(path) != first
        write_old(path, b"1,2\n", OLD_NS + 2 * 10**9)
        assert path_version(path) == first

    def test_a_same_size_edit_with_the_mtime_put_back_is_seen(self, tmp_path: Path) -> None:
        path = write_old(tmp_path / "data.bin", b"aaaa")
        first = path_version(path)
        assert hashed(lambda: path_version(path)) == 0  # cached
        before = path.stat()
        # Rewrite in place and restore the mtime: only the ctime tells. Where ctime ticks
        # coarsely, wait for its next tick, so the test shows what it claims.
        while True:
            write_old(path, b"bbbb")
            after = path.stat()
            if after.st_ctime_ns != before.st_ctime_ns:
                break
            time.sleep(0.001)
        assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
            before.st_size,
            before.st_mtime_ns,
            before.st_ino,
        )
        assert hashed(lambda: path_version(path)) == 4
        assert path_version(path) != first

    def test_a_file_modified_just_now_is_hashed_again_an_old_one_is_not(
        self, tmp_path: Path
    ) -> None:
        new = tmp_path / "new.txt"
        new.write_bytes(b"just written")
        future = write_old(tmp_path / "future.txt", b"from the future", time.time_ns() + 10**12)
        old = write_old(tmp_path / "old.txt", b"written long ago")
        for path in (new, future):
            assert hashed(lambda: path_version(path)) == path.stat().st_size  # noqa: B023
            assert hashed(lambda: path_version(path)) == path.stat().st_size  # noqa: B023
        assert hashed(lambda: path_version(old)) == old.stat().st_size
        assert hashed(lambda: path_version(old)) == 0

    def test_a_missing_path_has_a_fixed_version(self, tmp_path: Path) -> None:
        assert path_version(tmp_path / "not yet") == MISSING
        assert path_version(write_old(tmp_path / "file", b"") / "under a file") == MISSING
        assert path_version(tmp_path / "not yet", tmp_path / "cache") == MISSING
        assert not (tmp_path / "cache").exists()  # made only to store something

    def test_file_directory_and_missing_never_share_a_version(self, tmp_path: Path) -> None:
        (tmp_path / "empty").mkdir()
        versions = {
            path_version(write_old(tmp_path / "empty.txt", b"")),
            path_version(tmp_path / "empty"),
            path_version(tmp_path / "missing"),
        }
        assert len(versions) == 3
        assert {v[0] for v in versions} == {"f", "d", MISSING[0]}

    @posix_only
    def test_a_fifo_or_device_raises_instead_of_hanging(self, tmp_path: Path) -> None:
        os.mkfifo(tmp_path / "fifo")
        with pytest.raises(OSError, match="neither a regular file nor a directory"):
            path_version(tmp_path / "fifo")
        with pytest.raises(OSError, match="neither a regular file nor a directory"):
            path_version(tmp_path)  # the FIFO inside
        with pytest.raises(OSError, match="neither a regular file nor a directory"):
            path_version(Path(os.devnull))

    @posix_only
    @not_root
    def test_an_unreadable_file_raises_its_os_error(self, tmp_path: Path) -> None:
        path = write_old(tmp_path / "secret", b"x")
        path.chmod(0)
        with pytest.raises(PermissionError):
            path_version(path)
        with pytest.raises(PermissionError):
            path_version(tmp_path)


@given(st.binary(max_size=64), st.binary(max_size=64))
@settings(max_examples=25, deadline=None)
def test_versions_are_equal_exactly_when_bytes_are(
    tmp_path_factory: pytest.TempPathFactory, a: bytes, b: bytes
) -> None:
    folder = tmp_path_factory.mktemp("property")
    (folder / "a").write_bytes(a)
    (folder / "b").write_bytes(b)
    assert (path_version(folder / "a") == path_version(folder / "b")) == (a == b)


class TestPersistentCache:
    def test_a_new_process_reads_no_unchanged_file(self, tmp_path: Path) -> None:
        path = write_old(tmp_path / "big.bin", b"x" * 100_000)
        cache = tmp_path / "cache"
        version, count = in_new_process(path, cache)
        assert count == 100_000
        assert in_new_process(path, cache) == (version, 0)
        write_old(path, b"y" * 100_000, OLD_NS + 10**9)
        assert in_new_process(path, cache)[1] == 100_000

    def test_the_entry_format(self, tmp_path: Path) -> None:
        path = write_old(tmp_path / "data.bin", b"some bytes")
        cache = tmp_path / "cache"
        version = path_version(path, cache)
        info = path.stat()
        entry = msgpack.unpackb(entry_file(cache, path).read_bytes())
        assert entry == [
            str(path.resolve()),
            info.st_size,
            info.st_mtime_ns,
            info.st_ino,
            info.st_dev,
            info.st_ctime_ns,
            bytes.fromhex(version[1:]),
        ]
        where = entry_file(cache, path).relative_to(cache)
        assert sorted(p.relative_to(cache) for p in cache.rglob("*")) == [where.parent, where]

    @posix_only
    def test_a_name_that_is_not_utf8_is_cached_too(self, tmp_path: Path) -> None:
        root = tmp_path / "data"
        root.mkdir()
        write_old(root / os.fsdecode(b"caf\xe9.csv"), b"latin-1 name")
        cache = tmp_path / "cache"
        version = path_version(root, cache)
        forget()
        assert hashed(lambda: path_version(root, cache)) == 0
        assert path_version(root, cache) == version

    def test_a_racy_file_is_not_cached_on_disk(self, tmp_path: Path) -> None:
        path = tmp_path / "new.bin"
        path.write_bytes(b"just written")
        path_version(path, tmp_path / "cache")
        assert not (tmp_path / "cache").exists()

    @pytest.mark.parametrize(
        "damage",
        [
            "garbage",
            "truncated",
            "empty",
            "another file's entry copied",
            "another path at the same stat",
            "wrong shape",
            "short digest",
            "directory",
        ],
    )
    def test_a_damaged_entry_is_ignored(self, tmp_path: Path, damage: str) -> None:
        path = write_old(tmp_path / "a.bin", b"a" * 1000)
        other = write_old(tmp_path / "b.bin", b"b" * 1000)
        cache = tmp_path / "cache"
        right = path_version(path, cache)
        path_version(other, cache)
        entry = entry_file(cache, path)
        good = entry.read_bytes()
        if damage == "directory":
            entry.unlink()
            entry.mkdir()
        else:
            entry.write_bytes(
                {
                    "garbage": b"\xc1 not msgpack \xff" * 8,
                    "truncated": good[: len(good) // 2],
                    "empty": b"",
                    "another file's entry copied": entry_file(cache, other).read_bytes(),
                    "another path at the same stat": msgpack.packb(
                        [str(other.resolve()), *msgpack.unpackb(good)[1:6], b"0" * 16]
                    ),
                    "wrong shape": msgpack.packb({"path": str(path), "digest": b"0" * 16}),
                    "short digest": msgpack.packb([*msgpack.unpackb(good)[:6], b"short"]),
                }[damage]
            )
        forget()
        assert hashed(lambda: path_version(path, cache)) == 1000
        assert path_version(path, cache) == right
        if damage != "directory":  # the entry is written anew
            forget()
            assert hashed(lambda: path_version(path, cache)) == 0

    @pytest.mark.parametrize(
        "blocked",
        [
            "a file in the way",
            pytest.param("read-only", marks=[posix_only, not_root]),
            pytest.param(
                "/proc",
                marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="Linux /proc"),
            ),
        ],
    )
    def test_a_cache_that_cannot_be_written_is_skipped(self, tmp_path: Path, blocked: str) -> None:
        path = write_old(tmp_path / "a.bin", b"content")
        if blocked == "a file in the way":
            cache = write_old(tmp_path / "cache", b"")
        elif blocked == "read-only":
            cache = tmp_path / "cache"
            cache.mkdir(mode=0o555)
        else:
            cache = Path("/proc/self/flowdeco-cache")
        expected = path_version(path)
        forget()
        assert path_version(path, cache) == expected
        assert hashed(lambda: path_version(path, cache)) == 0  # cached in memory all the same


class TestDirectories:
    def make_tree(self, root: Path) -> Path:
        (root / "sub" / "deeper").mkdir(parents=True)
        write_old(root / "a.csv", b"1,2\n")
        write_old(root / "sub" / "b.csv", b"3,4\n")
        write_old(root / "sub" / "deeper" / "c.csv", b"5,6\n")
        return root

    def test_renames_new_directories_and_nested_edits_change_it(self, tmp_path: Path) -> None:
        root = self.make_tree(tmp_path / "data")
        seen = {path_version(root)}
        (root / "sub" / "b.csv").rename(root / "sub" / "B.csv")
        seen.add(path_version(root))
        (root / "sub" / "empty").mkdir()
        seen.add(path_version(root))
        write_old(root / "sub" / "deeper" / "c.csv", b"5,7\n", OLD_NS + 10**9)
        seen.add(path_version(root))
        (root / "sub" / "empty").rmdir()
        seen.add(path_version(root))
        assert len(seen) == 5

    def test_moving_the_directory_keeps_its_version(self, tmp_path: Path) -> None:
        root = self.make_tree(tmp_path / "here")
        version = path_version(root)
        moved = tmp_path / "there" / "again"
        moved.parent.mkdir()
        shutil.move(root, moved)
        assert path_version(moved) == version
        copied = shutil.copytree(moved, tmp_path / "copy")
        assert path_version(copied) == version
        assert in_new_process(copied, tmp_path / "cache")[0] == version

    def test_a_directory_holding_the_store_leaves_the_store_out(self, tmp_path: Path) -> None:
        """A project directory given as a Path input holds the store (``.flowdeco``),
        which changes with every run: it must not make the directory's version change."""
        root = self.make_tree(tmp_path / "project")
        cache = root / ".flowdeco" / "files"
        version = path_version(root, cache)
        (root / ".flowdeco" / "objects").mkdir(parents=True)
        write_old(root / ".flowdeco" / "objects" / "new", b"a value")
        assert path_version(root, cache) == version
        write_old(root / "a.csv", b"9,9\n", OLD_NS + 10**9)
        assert path_version(root, cache) != version

    def test_threads_agree(self, tmp_path: Path) -> None:
        root = self.make_tree(tmp_path / "data")
        (root / "new.csv").write_bytes(b"racy: hashed on every call")
        expected = path_version(root)
        with ThreadPoolExecutor(8) as pool:
            versions = set(pool.map(lambda _: path_version(root, tmp_path / "cache"), range(64)))
        assert versions == {expected}

    def test_unchanged_files_of_a_directory_are_not_read_again(self, tmp_path: Path) -> None:
        root = self.make_tree(tmp_path / "data")
        assert hashed(lambda: path_version(root)) == 12
        assert hashed(lambda: path_version(root)) == 0
        assert hashed(lambda: path_version(root / "sub" / "b.csv")) == 0  # the same entries
        forget()
        assert hashed(lambda: path_version(root, tmp_path / "cache")) == 12
        forget()
        assert hashed(lambda: path_version(root, tmp_path / "cache")) == 0

    def test_names_and_contents_cannot_be_confused(self, tmp_path: Path) -> None:
        one, two = tmp_path / "one", tmp_path / "two"
        (one / "ab").mkdir(parents=True)
        write_old(one / "ab" / "c", b"")
        (two / "a").mkdir(parents=True)
        write_old(two / "a" / "bc", b"")
        assert path_version(one) != path_version(two)
        (tmp_path / "three").mkdir()
        write_old(tmp_path / "three" / "x", b"")
        (tmp_path / "four" / "x").mkdir(parents=True)
        assert path_version(tmp_path / "three") != path_version(tmp_path / "four")


@posix_only
class TestLinks:
    def test_a_link_to_a_file_is_its_target_content(self, tmp_path: Path) -> None:
        target = write_old(tmp_path / "target.csv", b"1,2\n")
        (tmp_path / "linked").mkdir()
        (tmp_path / "linked" / "data.csv").symlink_to(target)
        (tmp_path / "copied").mkdir()
        write_old(tmp_path / "copied" / "data.csv", b"1,2\n")
        assert path_version(tmp_path / "linked") == path_version(tmp_path / "copied")
        assert hashed(lambda: path_version(target)) == 0  # the link's target, cached as itself
        assert path_version(tmp_path / "linked" / "data.csv") == path_version(target)
        before = path_version(tmp_path / "linked")
        write_old(target, b"3,4\n", OLD_NS + 10**9)
        assert path_version(tmp_path / "linked") != before

    def test_a_broken_link_is_its_text(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        root.mkdir()
        (root / "link").symlink_to("nowhere")
        first = path_version(root)
        (root / "link").unlink()
        (root / "link").symlink_to("elsewhere")
        assert path_version(root) != first
        (root / "link").unlink()
        (root / "link").symlink_to("link")  # a loop: broken too
        assert path_version(root) not in (first, MISSING)
        with pytest.raises(OSError) as raised:  # a loop given as the path: no version
            path_version(root / "link")
        assert raised.value.errno == errno.ELOOP
        assert path_version(tmp_path / "nowhere") == MISSING

    def test_a_link_to_a_directory_is_its_text_and_not_followed(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        (root / "sub").mkdir(parents=True)
        write_old(root / "sub" / "a", b"a")
        (root / "sub" / "up").symlink_to("..")  # a cycle, were it followed
        (root / "elsewhere").symlink_to(tmp_path / "outside", target_is_directory=True)
        (tmp_path / "outside").mkdir()
        first = path_version(root)
        write_old(tmp_path / "outside" / "new", b"not seen")
        assert path_version(root) == first
        (root / "elsewhere").unlink()
        (root / "elsewhere").symlink_to(tmp_path, target_is_directory=True)
        assert path_version(root) != first

    def test_a_link_given_as_the_path_is_followed(self, tmp_path: Path) -> None:
        root = TestDirectories().make_tree(tmp_path / "data")
        (tmp_path / "alias").symlink_to(root, target_is_directory=True)
        assert path_version(tmp_path / "alias") == path_version(root)
