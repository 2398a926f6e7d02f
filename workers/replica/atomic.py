"""The atomic writer: a final name only ever holds a complete, durable file.

Steps, in the order they run (each a method, each a named step in errors)::

    create     O_CREAT|O_EXCL|O_NOFOLLOW temp file in the target directory, named
               ``<final>.ltxpool-<pid>-<random>.tmp`` so the janitor knows it is ours
    write      all bytes, from bytes or from a stream
    fsync      the file's data and size reach the disk before its name does
    close
    stat       the temp name still is our inode with our size: catches a temp file
               that was removed or replaced (the Litestream #670 race) with a clear
               message instead of a bare ENOENT from rename
    rename     atomic replacement of the final name
    fsync-dir  the rename itself is durable

The whole sequence runs inside ``DirLock.writing()`` when a lock is given, so the
janitor (which takes ``DirLock.cleaning()``) cannot delete the temp file in between:
that is what prevents #670 rather than detecting it. On any failure the temp file is
removed, the final name is left as it was, and an :class:`AtomicWriteError` carries
the path, the step and the errno.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Iterable
from types import TracebackType

from ltxpool.locks.dirlock import DirLock
from ltxpool.replica.errors import AtomicWriteError

__all__ = [
    "AtomicWriter",
    "write_atomic",
    "temp_name_for",
    "is_ltxpool_temp",
    "temp_file_writer",
    "fsync_directory",
    "FILE_MODE",
    "COPY_CHUNK",
]

#: Never world-writable; the umask may remove more.
FILE_MODE = 0o644
COPY_CHUNK = 1 << 20

_TEMP_RE = re.compile(r"^.+\.ltxpool-(\d+)-[0-9a-f]{8}\.tmp$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def temp_name_for(final_name: str) -> str:
    """A unique temp name next to ``final_name`` that says who made it (ltxpool, pid)."""
    return f"{final_name}.ltxpool-{os.getpid()}-{secrets.token_hex(4)}.tmp"


def is_ltxpool_temp(name: str) -> bool:
    """True for a temp name made by :func:`temp_name_for` (in any process)."""
    return _TEMP_RE.match(name) is not None


def temp_file_writer(name: str) -> int | None:
    """The pid of the process that made temp name ``name``; None if it is not ours."""
    match = _TEMP_RE.match(name)
    return int(match.group(1)) if match else None


def fsync_directory(directory: str) -> None:
    """Make the directory's entries (a rename, a create, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicWriter:
    """Write one file atomically: ``with AtomicWriter(path, lock) as w: w.write(...); w.commit()``.

    Leaving the block without :meth:`commit` (or with an exception) rolls back.
    """

    def __init__(self, path: str | os.PathLike[str], lock: DirLock | None = None) -> None:
        self.path = os.fspath(path)
        self.directory = os.path.dirname(self.path) or "."
        self.temp_path = os.path.join(self.directory, temp_name_for(os.path.basename(self.path)))
        self.bytes_written = 0
        self._lock = lock
        self._lock_context: contextlib.AbstractContextManager[None] | None = None
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._committed = False

    def _fail(self, step: str, exc: OSError, path: str | None = None) -> AtomicWriteError:
        return AtomicWriteError.from_oserror(path or self.temp_path, step, exc)

    def __enter__(self) -> AtomicWriter:
        if self._lock is not None:
            self._lock_context = self._lock.writing()
            self._lock_context.__enter__()
        try:
            self.create()
        except BaseException:
            self._release_lock()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                self.rollback()
        finally:
            self._release_lock()

    def _release_lock(self) -> None:
        if self._lock_context is not None:
            context, self._lock_context = self._lock_context, None
            context.__exit__(None, None, None)

    def create(self) -> None:
        try:
            self._fd = os.open(self.temp_path, _CREATE_FLAGS, FILE_MODE)
        except OSError as exc:
            raise self._fail("create", exc) from exc

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert self._fd is not None, "write() after the temp file was closed"
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
                self.bytes_written += written
        except OSError as exc:
            raise self._fail("write", exc) from exc

    def commit(self) -> None:
        """fsync, close, stat-verify, rename, fsync the directory."""
        self._sync_and_close()
        self._verify_temp()
        self._rename()
        self._committed = True

    def _sync_and_close(self) -> None:
        assert self._fd is not None, "commit() without an open temp file"
        fd = self._fd
        try:
            os.fsync(fd)
            st = os.fstat(fd)
        except OSError as exc:
            raise self._fail("fsync", exc) from exc
        self._identity = (st.st_dev, st.st_ino)
        self._fd = None
        try:
            os.close(fd)
        except OSError as exc:
            raise self._fail("close", exc) from exc

    def _verify_temp(self) -> None:
        try:
            st = os.stat(self.temp_path, follow_symlinks=False)
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                raise AtomicWriteError(
                    self.temp_path,
                    "stat",
                    exc.errno,
                    "temp file disappeared before rename (removed by another process: the Litestream #670 race)",
                ) from exc
            raise self._fail("stat", exc) from exc
        if (st.st_dev, st.st_ino) != self._identity or st.st_size != self.bytes_written:
            raise AtomicWriteError(
                self.temp_path,
                "stat",
                None,
                f"temp file was replaced before rename (size {st.st_size}, wrote {self.bytes_written})",
            )

    def _rename(self) -> None:
        existed = os.path.lexists(self.path)
        try:
            os.rename(self.temp_path, self.path)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not os.path.lexists(self.temp_path):
                raise AtomicWriteError(
                    self.temp_path, "rename", exc.errno, "temp file removed during rename (the Litestream #670 race)"
                ) from exc
            raise self._fail("rename", exc) from exc
        try:
            fsync_directory(self.directory)
        except OSError as exc:
            # The new name may not survive a crash. A name we created is taken back so
            # the caller sees the write as not done and retries; a name that existed
            # before now holds our complete, fsynced content, so it stays.
            if not existed:
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
            raise self._fail("fsync-dir", exc, self.directory) from exc

    def rollback(self) -> None:
        """Close and remove the temp file; the final name is not touched."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        # A temp file that cannot be removed now is an orphan the janitor removes later.
        with contextlib.suppress(OSError):
            os.unlink(self.temp_path)


def write_atomic(
    path: str | os.PathLike[str], data: bytes | Iterable[bytes], lock: DirLock | None = None
) -> int:
    """Write ``data`` (bytes, or an iterable of chunks) to ``path`` atomically; returns its size."""
    with AtomicWriter(path, lock) as writer:
        if isinstance(data, (bytes, bytearray, memoryview)):
            writer.write(data)
        else:
            for chunk in data:
                writer.write(chunk)
        writer.commit()
    return writer.bytes_written
