"""The atomic writer: a final name only ever holds a complete, durable file.

Steps, in the order they run (each a method, each a named step in errors)::

    create     O_CREAT|O_EXCL|O_NOFOLLOW temp file, mode 0600, in the target directory,
               named ``<final>.ltxpool-<pid>-<random>.tmp`` so the janitor knows it is ours
    write      all bytes, from bytes or from a stream
    fsync      the file takes its final mode (and owner, when asked), then its data
               and size reach the disk before its name does
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

Every step after the directory is opened goes relative to its descriptor (``openat``,
``renameat``, ``fsync`` of that descriptor): a writer given an open
:class:`~ltxpool.replica.directory.Directory` writes into exactly that directory,
even if a tenant swaps its path for a symlink while the writer waits for the lock.
Given a plain path, the writer opens the parent itself, refusing a symlink there.
Nothing is readable by others before it is complete: the temp file is 0600 and
takes its final ``mode`` only just before it is renamed into place.
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
from ltxpool.replica.directory import Directory
from ltxpool.replica.errors import AtomicWriteError, DirectoryError

__all__ = [
    "AtomicWriter",
    "write_atomic",
    "temp_name_for",
    "is_ltxpool_temp",
    "temp_file_writer",
    "fsync_directory",
    "pwrite_all",
    "FILE_MODE",
    "TEMP_MODE",
    "COPY_CHUNK",
]

#: A file's mode unless its writer says otherwise: the owner's alone.
FILE_MODE = 0o600
#: Nobody else reads a file before it is complete (and has taken its final mode).
TEMP_MODE = 0o600
COPY_CHUNK = 1 << 20

_TEMP_RE = re.compile(r"^.+\.ltxpool-(\d+)-[0-9a-f]{8}\.tmp$")
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL


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


def current_umask() -> int:
    """This process's umask, read without changing it (``os.umask`` can only swap it)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def pwrite_all(fd: int, data: bytes | bytearray | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def fsync_directory(directory: str) -> None:
    """Make the directory's entries (a rename, a create, an unlink) durable."""
    with Directory.open(directory) as opened:
        opened.fsync()


class AtomicWriter:
    """Write one file atomically: ``with AtomicWriter(path, lock) as w: w.write(...); w.commit()``.

    ``directory``: the open directory to write in (``path`` then names the file in
    it and in messages). ``mode``: the final file's mode; ``owner``: its (uid, gid),
    set when the process may (root writing into a tenant's replica). Leaving the
    block without :meth:`commit` (or with an exception) rolls back.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        lock: DirLock | None = None,
        *,
        directory: Directory | None = None,
        mode: int = FILE_MODE,
        owner: tuple[int, int] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.name = os.path.basename(self.path)
        self._temp_name = temp_name_for(self.name)
        self.bytes_written = 0
        self.mode = mode
        self.owner = owner
        self._directory = directory
        self._own_directory = directory is None
        self._lock = lock
        self._lock_context: contextlib.AbstractContextManager[None] | None = None
        self._fd: int | None = None
        self._identity: tuple[int, int] | None = None
        self._committed = False

    @property
    def directory(self) -> Directory:
        assert self._directory is not None, "the writer's directory is opened on entry"
        return self._directory

    @property
    def temp_path(self) -> str:
        """The temp file's path, for messages (and SQLite, which opens by name)."""
        return os.path.join(os.path.dirname(self.path) or ".", self._temp_name)

    def _fail(self, step: str, exc: OSError, path: str | None = None) -> AtomicWriteError:
        return AtomicWriteError.from_oserror(path or self.temp_path, step, exc)

    def __enter__(self) -> AtomicWriter:
        if self._directory is None:
            try:
                self._directory = Directory.open(os.path.dirname(self.path) or ".")
            except DirectoryError as exc:
                raise AtomicWriteError(exc.path, "open directory", exc.errno, exc.reason) from exc
        if self._lock is not None:
            self._lock_context = self._lock.writing()
            self._lock_context.__enter__()
        try:
            self.create()
        except BaseException:
            self._release()
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
            self._release()

    def _release(self) -> None:
        if self._lock_context is not None:
            context, self._lock_context = self._lock_context, None
            context.__exit__(None, None, None)
        if self._own_directory and self._directory is not None:
            self._directory.close()

    def create(self) -> None:
        try:
            self._fd = self.directory.open_file(self._temp_name, _CREATE_FLAGS, TEMP_MODE)
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

    def set_times(self, seconds: float) -> None:
        """Set the file's atime and mtime (through the open descriptor, before commit)."""
        assert self._fd is not None, "set_times() after the temp file was closed"
        try:
            os.utime(self._fd, (seconds, seconds))
        except OSError as exc:
            raise self._fail("utime", exc) from exc

    def commit(self) -> None:
        """chmod/chown, fsync, close, stat-verify, rename, fsync the directory."""
        self._sync_and_close()
        self._verify_temp()
        self._rename()
        self._committed = True

    def _sync_and_close(self) -> None:
        assert self._fd is not None, "commit() without an open temp file"
        fd = self._fd
        try:
            if self.owner is not None and os.geteuid() == 0:
                os.fchown(fd, *self.owner)
            os.fchmod(fd, self.mode & ~current_umask())
        except OSError as exc:
            raise self._fail("chmod", exc) from exc
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
            st = self.directory.lstat(self._temp_name)
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

    def _exists(self, name: str) -> bool:
        try:
            self.directory.lstat(name)
        except FileNotFoundError:
            return False
        return True

    def _rename(self) -> None:
        existed = self._exists(self.name)
        try:
            self.directory.rename(self._temp_name, self.directory, self.name)
        except OSError as exc:
            if exc.errno == errno.ENOENT and not self._exists(self._temp_name):
                raise AtomicWriteError(
                    self.temp_path, "rename", exc.errno, "temp file removed during rename (the Litestream #670 race)"
                ) from exc
            raise self._fail("rename", exc) from exc
        try:
            self.directory.fsync()
        except OSError as exc:
            # The new name may not survive a crash. A name we created is taken back so
            # the caller sees the write as not done and retries; a name that existed
            # before now holds our complete, fsynced content, so it stays.
            if not existed:
                with contextlib.suppress(OSError):
                    self.directory.unlink(self.name)
            raise self._fail("fsync-dir", exc, self.directory.path) from exc

    def rollback(self) -> None:
        """Close and remove the temp file; the final name is not touched."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):
                os.close(fd)
        # A temp file that cannot be removed now is an orphan the janitor removes later.
        with contextlib.suppress(OSError):
            self.directory.unlink(self._temp_name)


def write_atomic(
    path: str | os.PathLike[str],
    data: bytes | Iterable[bytes],
    lock: DirLock | None = None,
    *,
    directory: Directory | None = None,
    mode: int = FILE_MODE,
    owner: tuple[int, int] | None = None,
) -> int:
    """Write ``data`` (bytes, or an iterable of chunks) to ``path`` atomically; returns its size."""
    with AtomicWriter(path, lock, directory=directory, mode=mode, owner=owner) as writer:
        if isinstance(data, (bytes, bytearray, memoryview)):
            writer.write(data)
        else:
            for chunk in data:
                writer.write(chunk)
        writer.commit()
    return writer.bytes_written
