"""A consistent image of a live SQLite database, read through SQLite's own locks.

Python's sqlite3 here has no ``sqlite_dbpage``, so pages are read from the files
with ``os.pread`` while SQLite's locks keep them still. Two connections of our own:
``lock`` (A) takes the write lock, ``reader`` (B) holds a read transaction.

Rollback-journal mode: A ``BEGIN IMMEDIATE``; B ``BEGIN`` + a read, which takes the
SHARED lock; A rolls back at once. While B's SHARED lock is held no writer can
commit (committing needs EXCLUSIVE), so the main file is the database and is read
directly. Writers wait for the whole read (a full read: in rollback mode nothing
says which pages changed); a step with no commit since the last one is recognised
from the header's file change counter, which SQLite bumps on every commit in this
mode, and then reads nothing.

WAL mode -- the lock is held while the new frames' headers are read, not for the read:

1. A ``BEGIN IMMEDIATE`` holds the WAL write lock: nothing commits, the WAL cannot
   be restarted (that needs the write lock too).
2. Under it, the wal-index header gives ``mxFrame`` (the frames every reader
   trusts), ``nPage`` and ``nBackfill`` (``ltxpool.replicate.sqlite_wal``), and the headers of
   the frames we need give their page numbers.
3. B begins a read transaction: its snapshot is exactly ``mxFrame``. Then
   ``nBackfill`` is read again (under the write lock it can only grow): below
   ``mxFrame`` now means below it when B began, so B holds a read mark.
4. A rolls back; writers go on appending frames after ``mxFrame``.
5. Pages are read while B's transaction lasts. SQLite guarantees (walformat.html,
   "read marks"): a checkpoint never copies frames beyond a reader's mark into the
   main file, and the WAL is never restarted while a reader uses it. So the main
   file holds B's snapshot for every page that has no frame <= mxFrame, and frames
   1..mxFrame stay put. One exception, handled: when every frame is already
   backfilled (``nBackfill == mxFrame``) B may read "from the database file only"
   (read lock 0); then the WAL may be restarted behind us, but no checkpoint can
   write the main file while B holds that lock, and the main file alone is the
   snapshot -- so pages are read from it.

Which pages changed -- complete by construction. A step may compare only some pages
when it can *prove* that the others are unchanged since the previous step's image;
every other step compares every page against the checksum array (``candidates=None``).
The proofs, and the SQLite facts they rest on:

* Same process, same file. ``since`` must be the position this very object captured
  last, while it held the database file open by descriptor. A saved position from an
  earlier process proves nothing (``--once`` is always such a first capture): between
  two processes the app's last close checkpoints and deletes ``-wal``/``-shm``, the
  database may be deleted and re-created (a freed inode is reused at once), and an
  empty WAL looks the same whatever was committed in between (Litestream-style
  salts 0/0, 0 frames). While our descriptor is open the inode cannot be reused, so
  a matching (device, inode) is the same file.
* WAL, unbroken pin (see "The pin" below): our read mark stopped every backfill and
  restart that could discard a frame we have not seen, so the frames after our
  position -- in the same WAL, or in a restarted one when ours was fully backfilled
  -- are all the commits since.
* WAL, no pin: the previous position had N > 0 frames and frame N of the WAL now has
  the same salts and the same cumulative checksums. SQLite gives every WAL
  generation new salts (salt-1 + 1 on a restart, random salts for a new file) and
  never rewrites a committed frame within a generation, and the checksums of frame N
  cover frames 1..N; so the WAL is the one we read, frames 1..N are the ones we
  read, the main file changed only by backfilling frames we read, and frames after N
  are exactly the commits since. An empty WAL (N = 0) proves nothing.
* Rollback journal: the file change counter (header offset 24) is incremented by
  every rollback-mode commit, and leaving WAL mode is itself such a commit, so an
  unchanged counter on the same file (held open, see above) with the same page size
  and count means no commit since; nothing says *which* pages changed otherwise.

The page size and page count are taken inside the read transaction and cross-checked
with page 1 of the captured image (and, in WAL mode, the wal-index); a mismatch
refuses the step (``SourceError``) instead of writing pages of the wrong size.

The pin (``capture(..., pin=True)``, used by the replicate loop): B keeps its read
transaction open until the next capture, as Litestream keeps its long-running read
transaction. While it is open, checkpoints stop at our mark and the WAL can be
restarted only if it was fully backfilled when we pinned it -- and then B holds read
lock 0, which blocks every later backfill, so a restart can discard no frame we
have not seen. Hence, with an unbroken pin, a restarted WAL's frames are again
exactly the changes, and the incremental path survives the application's
checkpoints. Because the pin stops the application's checkpoints at our mark, we
run a PASSIVE checkpoint ourselves (under A, before pinning anew) once the WAL holds
``checkpoint_frames`` frames, SQLite's own auto-checkpoint default; without it the
WAL would grow without bound. Writers wait for that checkpoint (it copies the frames
since the last one and fsyncs), as a writer waits for its own auto-checkpoint. The
costs, as with Litestream: while our connections are open a WAL database cannot
leave WAL mode (SQLite needs it to itself), and while pinned, RESTART/TRUNCATE
checkpoints of the application report busy.

Memory: the page numbers of the WAL frames scanned (those not yet in the main file),
so bounded by the WAL, never by the database.

Measured (256 MiB database, 656 pages changed per step): the write lock is held
~2-3 ms per step (reading the new frames' headers), ~17 ms on a step that also runs
the checkpoint; in rollback mode the SHARED lock lasts the whole read (~0.1-0.2 s
for a full compare of 256 MiB, ~0.6 s for a first snapshot, which also compresses).

POSIX record locks belong to the process and are dropped when *any* descriptor of
the file is closed, so the descriptors opened here for ``pread`` are kept open as
long as our SQLite connections exist, and closed only after them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ltxpool.ltx import lock_page
from ltxpool.replicate.errors import DatabaseBusyError, SourceError, WalFormatError
from ltxpool.replicate.sqlite_wal import (
    FRAME_HEADER_SIZE,
    SHM_HEADER_SIZE,
    FrameHeader,
    WalIndexHeader,
    frame_offset,
    parse_frame_header,
    parse_wal_index,
)

__all__ = [
    "SqliteSource",
    "Image",
    "WalPosition",
    "RollbackPosition",
    "Position",
    "SourceError",
    "DatabaseBusyError",
    "DEFAULT_BUSY_TIMEOUT",
    "DEFAULT_CHECKPOINT_FRAMES",
]

DEFAULT_BUSY_TIMEOUT = 5.0
DEFAULT_CHECKPOINT_FRAMES = 1000
# Pages read per system call in a full scan: large reads, bounded memory.
_SCAN_BYTES = 1 << 20
_CHANGE_COUNTER = struct.Struct(">I")
_PAGE_SIZE = struct.Struct(">H")
# struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid (native layout).
_FLOCK = struct.Struct("hhqqi4x")
# The wal-index lock bytes (walformat.html: "the WAL-index locks"): WRITE, CKPT.
_WAL_WRITE_LOCK = 120
_WAL_CKPT_LOCK = 121
# How often a pinned, idle replicate looks for a waiting checkpointer (seconds).
_NEIGHBOUR_POLL = 0.01
_LOCK_RETRY_FIRST = 0.001
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _locked_by_other(fd: int, offset: int) -> bool:
    """Whether another process holds a POSIX lock on byte ``offset`` of ``fd`` (F_GETLK:
    our own process's locks never conflict, so our connections do not count)."""
    query = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, offset, 1, 0)
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    except OSError:
        return False
    return bool(_FLOCK.unpack(answer)[0] != fcntl.F_UNLCK)


@dataclass(frozen=True)
class WalPosition:
    """Where a WAL-mode image ended: file, WAL generation, last frame, its checksum."""

    device: int
    inode: int
    salt1: int
    salt2: int
    frames: int
    checksum1: int
    checksum2: int
    backfilled: bool


@dataclass(frozen=True)
class RollbackPosition:
    """Where a rollback-mode image ended: file and its change counter."""

    device: int
    inode: int
    change_counter: int
    page_size: int
    page_count: int


Position = WalPosition | RollbackPosition


@dataclass
class Image:
    """A consistent image of the database; its pages are readable while the capture lasts.

    ``candidates``: the only pages that may differ from the image at the position
    the capture started from (ascending, all <= ``commit``), or None when unknown.
    ``wal_range``: (offset, size, salt1, salt2) of the WAL frames it covers, for the
    LTX header (zeros in rollback mode).
    """

    mode: str
    page_size: int
    commit: int
    candidates: list[int] | None
    position: Position
    wal_range: tuple[int, int, int, int] = (0, 0, 0, 0)
    _db_path: str = field(default="", repr=False)
    _db_fd: int = field(default=-1, repr=False)
    _wal_path: str = field(default="", repr=False)
    _wal_fd: int = field(default=-1, repr=False)
    _overlay: dict[int, int] = field(default_factory=dict, repr=False)
    _open: bool = field(default=True, repr=False)

    def read_page(self, pgno: int) -> bytes:
        self._check_open()
        size = self.page_size
        frame = self._overlay.get(pgno)
        if frame is not None:
            return self._read(self._wal_path, self._wal_fd, size, frame_offset(frame, size) + FRAME_HEADER_SIZE, exact=True)
        return self._read(self._db_path, self._db_fd, size, (pgno - 1) * size, exact=False)

    def pages(self, pgnos: Iterable[int] | None = None) -> Iterator[tuple[int, bytes | memoryview]]:
        """``(pgno, page)`` ascending for ``pgnos`` (default: every page but the lock page)."""
        if pgnos is not None:
            skip = lock_page(self.page_size)
            for pgno in pgnos:
                if pgno != skip:
                    yield pgno, self.read_page(pgno)
            return
        yield from self._scan()

    def _scan(self) -> Iterator[tuple[int, bytes | memoryview]]:
        size = self.page_size
        skip = lock_page(size)
        per_read = max(1, _SCAN_BYTES // size)
        for first in range(1, self.commit + 1, per_read):
            self._check_open()
            count = min(per_read, self.commit + 1 - first)
            chunk = memoryview(self._read(self._db_path, self._db_fd, count * size, (first - 1) * size, exact=False))
            for index in range(count):
                pgno = first + index
                if pgno == skip:
                    continue
                if pgno in self._overlay:
                    yield pgno, self.read_page(pgno)
                else:
                    yield pgno, chunk[index * size:(index + 1) * size]

    @staticmethod
    def _read(path: str, fd: int, size: int, offset: int, *, exact: bool) -> bytes:
        """``size`` bytes at ``offset``; beyond the end of the main file SQLite reads zeros,
        but a WAL frame the wal-index counts must be there whole."""
        try:
            data = os.pread(fd, size, offset)
        except OSError as exc:
            raise SourceError.from_oserror(path, "read", exc) from exc
        if len(data) == size:
            return data
        if exact:
            raise SourceError(path, "read", None, f"short read of {len(data)} bytes at offset {offset}, expected {size}")
        return data + bytes(size - len(data))

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("the image was read after its capture ended")


@dataclass
class _Aux:
    """A descriptor of ``-wal`` or ``-shm``, reopened when the name points to a new file."""

    path: str
    fd: int = -1
    identity: tuple[int, int] | None = None

    def open(self) -> int | None:
        """The descriptor of the file now at ``path``; None if there is none."""
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) != self.identity:
                # Never through a link: a tenant's ``app.db-wal -> another database's WAL``
                # would put that database's frames into the tenant's replica.
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                # The old file is no longer the live one: nobody's locks on it matter now.
                self.close()
                fst = os.fstat(fd)
                self.fd, self.identity = fd, (fst.st_dev, fst.st_ino)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "open", exc) from exc
        return self.fd

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.identity = -1, None


class SqliteSource:
    """One SQLite database, captured consistently step after step."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        checkpoint_frames: int = DEFAULT_CHECKPOINT_FRAMES,
        prove_completeness: bool = True,
    ) -> None:
        """``prove_completeness=False`` is for tests only: it trusts any saved position
        without the proofs above (the behaviour before ltxpool #11), so that a test can
        show the proofs are what keeps its workload from losing commits."""
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.checkpoint_frames = checkpoint_frames
        self.prove_completeness = prove_completeness
        self._lock: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._db_fd = -1
        self._identity = (0, 0)
        # (uid, mode) of the file when replication started: what a replacement must match.
        self._access: tuple[int, int] | None = None
        self._wal = _Aux(self.path + "-wal")
        self._shm = _Aux(self.path + "-shm")
        self._pinned_at: Position | None = None
        # The position of the last image this object captured while it held the file.
        self._seen: Position | None = None
        self._open()

    # -- opening ---------------------------------------------------------------------

    def _open(self) -> None:
        """Open the database file itself, never what a link in its place names.

        The path was resolved once when replication started (``realpath``). A file
        that appears there later -- a deploy's replacement -- is followed only if it is a
        regular file with the owner the first one had and no wider mode: a tenant who
        may rename in the database's folder could otherwise swap in a symlink to (or
        another user's) database and have root replicate it into the tenant's replica.
        """
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            reason = "no such database file" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            raise SourceError(self.path, "open database", exc.errno, reason) from exc
        if stat.S_ISLNK(st.st_mode):
            raise SourceError(self.path, "open database", errno.ELOOP,
                              "is now a symbolic link; replicate reads the database file itself, never a link")
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(self.path, "open database", None, "not a regular file, so not a SQLite database")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "open database", exc) from exc
        fst = os.fstat(fd)
        access = (fst.st_uid, stat.S_IMODE(fst.st_mode))
        if self._access is None:
            self._access = access
        elif access[0] != self._access[0] or access[1] & ~self._access[1]:
            os.close(fd)
            raise SourceError(self.path, "open database", None,
                              f"was replaced by a file of uid {access[0]} mode {access[1]:04o}, not uid "
                              f"{self._access[0]} mode {self._access[1]:04o} as when replication started; "
                              "restart replicate to accept it")
        try:
            head = os.pread(fd, len(_SQLITE_MAGIC), 0)
        except OSError as exc:
            os.close(fd)
            raise SourceError.from_oserror(self.path, "read database", exc) from exc
        if head and head != _SQLITE_MAGIC:
            os.close(fd)
            raise SourceError(self.path, "open database", None, "not a SQLite database (bad header)")
        self._db_fd = fd
        self._identity = (fst.st_dev, fst.st_ino)
        self._seen = None
        self._connect_both()

    def _connect_both(self) -> None:
        if self._lock is not None:
            return
        uri = Path(self.path).absolute().as_uri() + "?mode=rw"
        try:
            # A retries its write lock itself (``_lock_database``); B waits in SQLite.
            self._lock = self._connect(uri, timeout=0.0)
            self._reader = self._connect(uri, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            self.close()
            raise self._translate(exc, "open database") from exc
        # SQLite opens by name: the name must still be our file once it has (a link
        # swapped in between our open and SQLite's is caught here).
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            self.close()
            raise SourceError.from_oserror(self.path, "open database", exc) from exc
        if stat.S_ISLNK(st.st_mode) or (st.st_dev, st.st_ino) != self._identity:
            self.close()
            raise SourceError(self.path, "open database", None, "was swapped while SQLite opened it; retrying")

    @staticmethod
    def _connect(uri: str, timeout: float) -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=timeout, check_same_thread=False)

    def disconnect(self) -> None:
        """Close our SQLite connections but keep the file open (and so its identity).

        An idle connection of ours, even outside a transaction, keeps the app from
        leaving WAL mode and from deleting the WAL on its last close; so between steps
        we hold none unless pinned. Ends the pin: the next step proves again.
        """
        for connection in (self._reader, self._lock):
            if connection is not None:
                connection.close()
        self._reader = self._lock = None
        self._pinned_at = None

    def _reopen_if_replaced(self) -> None:
        """Follow the name: a database replaced by rename is a new file (full compare)."""
        try:
            st = os.lstat(self.path)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "stat database", exc) from exc
        if (st.st_dev, st.st_ino) != self._identity:
            self.close()
            self._open()

    def close(self) -> None:
        """Close the connections first, then our descriptors (see the POSIX-lock note)."""
        self.disconnect()
        self._seen = None
        if self._db_fd >= 0:
            os.close(self._db_fd)
            self._db_fd = -1
        self._wal.close()
        self._shm.close()

    def __enter__(self) -> SqliteSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def pinned(self) -> bool:
        return self._pinned_at is not None

    def checkpointer_waiting(self) -> bool:
        """Another process holds the WAL write *and* checkpoint locks: a FULL, RESTART or
        TRUNCATE checkpoint, which waits for every reader -- our pin included -- while
        blocking the app's writers. (A PASSIVE checkpoint holds only the checkpoint
        lock and never waits for readers; a writer holds only the write lock.)"""
        try:
            fd = self._shm.open()
        except SourceError:
            return False
        if fd is None:
            return False
        return all(_locked_by_other(fd, offset) for offset in (_WAL_WRITE_LOCK, _WAL_CKPT_LOCK))

    def wait_between_steps(self, stop: threading.Event, seconds: float) -> bool:
        """Wait ``seconds`` (or until ``stop``), yielding the pin at once if an app's
        checkpoint starts waiting for it. True if it yielded.

        Yielding costs the next step its proof (it may compare every page); holding on
        would make the app's writers wait for the checkpoint's whole busy timeout.
        """
        deadline = time.monotonic() + seconds
        while not stop.is_set():
            left = deadline - time.monotonic()
            if self._wal_outgrew_pin():
                return False
            if self.pinned and self.checkpointer_waiting():
                self.disconnect()
                return True
            if left <= 0:
                return False
            stop.wait(min(left, _NEIGHBOUR_POLL) if self.pinned else left)
        return False

    def _lock_database(self, lock: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE`` on A, retried by us rather than by SQLite's busy handler.

        A waiting BEGIN IMMEDIATE takes a WAL read mark for a moment on every retry, and
        that is enough to make an app's RESTART/TRUNCATE checkpoint see a reader and
        wait again. So while such a checkpoint waits we do not try, and we let go of our
        pin first (the checkpoint waits for it too): it completes, then we step.
        """
        deadline = time.monotonic() + self.busy_timeout
        pause = _LOCK_RETRY_FIRST
        while True:
            if self.checkpointer_waiting():
                if self._pinned_at is not None:
                    self._end_read()
                    self._pinned_at = None
            else:
                try:
                    lock.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _is_busy(exc):
                        raise
            if time.monotonic() >= deadline:
                raise DatabaseBusyError(
                    self.path, "lock database", None, f"database is locked (waited {self.busy_timeout:g} s)"
                )
            time.sleep(pause)
            pause = min(2 * pause, _NEIGHBOUR_POLL)

    def _wal_outgrew_pin(self) -> bool:
        """While pinned the app's checkpoints stop at our mark: step early once the WAL
        has grown by ``checkpoint_frames`` frames, so that it stays near the app's size."""
        pinned_at = self._pinned_at
        if not isinstance(pinned_at, WalPosition) or self._shm.fd < 0:
            return False
        try:
            index = parse_wal_index(os.pread(self._shm.fd, SHM_HEADER_SIZE, 0))
        except (OSError, WalFormatError):
            return False
        if (index.salt1, index.salt2) != (pinned_at.salt1, pinned_at.salt2):
            return True
        return index.max_frame - pinned_at.frames >= self.checkpoint_frames

    # -- capturing -------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self, since: Position | None, *, pin: bool = False) -> Iterator[Image]:
        """Yield a consistent image; ``since`` is the position of the previous step's image."""
        self._reopen_if_replaced()
        self._connect_both()
        image = self._begin(since, pin)
        failed = True
        try:
            yield image
            failed = False
        finally:
            image._open = False
            if failed or not pin or image.mode != "wal":
                self._end_read()
                self.disconnect()
            else:
                self._pinned_at = image.position
            self._seen = None if failed else image.position

    def _proven(self, since: Position | None) -> bool:
        """``since`` was captured by this object, on this file, while it held it open."""
        return not self.prove_completeness or (since is not None and since == self._seen)

    def _begin(self, since: Position | None, pin: bool) -> Image:
        lock, reader = self._lock, self._reader
        assert lock is not None and reader is not None
        try:
            self._lock_database(lock)
        except sqlite3.Error as exc:
            # The pin, if any, is unbroken: the next capture may still rely on it.
            raise self._translate(exc, "lock database") from exc
        pinned_at, self._pinned_at = self._pinned_at, None
        try:
            # The previous pin ends only now, under the write lock: see "The pin".
            self._end_read()
            mode = str(lock.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            if mode == "wal":
                return self._begin_wal(since, pin, pinned_at)
            return self._begin_rollback(mode, since)
        except sqlite3.Error as exc:
            self._end_read()
            raise self._translate(exc, "read database") from exc
        except BaseException:
            self._end_read()
            raise
        finally:
            lock.execute("ROLLBACK")

    def _begin_read(self) -> tuple[int, int]:
        """Begin B's read transaction; the page size and count *of its snapshot*.

        ``BEGIN`` is deferred and ``PRAGMA page_size`` answers from the pager without
        reading, so a read comes first: it takes the lock (or the WAL read mark) and
        makes SQLite reload page 1, after a ``VACUUM`` that changed the page size too.
        """
        reader = self._reader
        assert reader is not None
        reader.execute("BEGIN")
        reader.execute("PRAGMA schema_version").fetchone()
        page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(reader.execute("PRAGMA page_count").fetchone()[0])
        return page_size, page_count

    def _check_page_one(self, page_one: bytes, page_size: int, page_count: int) -> None:
        """Page 1 of the captured image must describe the same database as SQLite did."""
        if page_count == 0:
            return
        if len(page_one) < 100 or page_one[:16] != _SQLITE_MAGIC:
            raise SourceError(
                self.path, "check page 1", None, "page 1 of the captured image is not a SQLite header; step refused"
            )
        raw_size = _PAGE_SIZE.unpack_from(page_one, 16)[0]
        header_size = 65536 if raw_size == 1 else raw_size
        counter, in_header, valid_for = (_CHANGE_COUNTER.unpack_from(page_one, at)[0] for at in (24, 28, 92))
        if header_size != page_size:
            raise SourceError(
                self.path, "check page 1", None,
                f"page 1 says {header_size}-byte pages, SQLite {page_size}; step refused",
            )
        if valid_for == counter and in_header and in_header != page_count:
            raise SourceError(
                self.path, "check page 1", None,
                f"page 1 says {in_header} pages, SQLite {page_count}; step refused",
            )

    def _end_read(self) -> None:
        reader = self._reader
        if reader is not None and reader.in_transaction:
            reader.execute("COMMIT")

    def _begin_rollback(self, mode: str, since: Position | None) -> Image:
        page_size, page_count = self._begin_read()
        try:
            if os.fstat(self._db_fd).st_size == 0:
                page_count = 0
            header = os.pread(self._db_fd, 100, 0)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "read database", exc) from exc
        counter = _CHANGE_COUNTER.unpack_from(header, 24)[0] if len(header) >= 28 else 0
        position = RollbackPosition(*self._identity, counter, page_size, page_count)
        same = (
            isinstance(since, RollbackPosition)
            and since == position
            and page_count > 0
            and self._proven(since)
        )
        image = Image(mode, page_size, page_count, [] if same else None, position, _db_path=self.path, _db_fd=self._db_fd)
        self._check_page_one(image.read_page(1) if page_count else b"", page_size, page_count)
        return image

    def _read_index(self) -> WalIndexHeader:
        fd = self._shm.open()
        if fd is None:
            raise SourceError(self._shm.path, "read wal-index", errno.ENOENT, "missing although the database is in WAL mode")
        try:
            return parse_wal_index(os.pread(fd, SHM_HEADER_SIZE, 0))
        except OSError as exc:
            raise SourceError.from_oserror(self._shm.path, "read wal-index", exc) from exc
        except WalFormatError as exc:
            raise SourceError(self._shm.path, "read wal-index", None, str(exc)) from exc

    def _frame_header(self, wal_fd: int, frame: int, page_size: int) -> FrameHeader:
        data = Image._read(self._wal.path, wal_fd, FRAME_HEADER_SIZE, frame_offset(frame, page_size), exact=True)
        return parse_frame_header(data)

    def _start_frame(self, since: Position | None, index: WalIndexHeader, pinned_at: Position | None) -> int | None:
        """The last frame already replicated, if it is proven that the frames after it
        are all the changes (see "Which pages changed"); None: compare every page."""
        if not isinstance(since, WalPosition) or (since.device, since.inode) != self._identity:
            return None
        if not self._proven(since):
            return None
        pinned = since == pinned_at
        if (since.salt1, since.salt2) != (index.salt1, index.salt2):
            return 0 if pinned and since.backfilled else None
        if index.max_frame < since.frames:
            return None
        if since.frames == 0 and not pinned and self.prove_completeness:
            return None
        if since.frames:
            wal_fd = self._wal.open()
            if wal_fd is None:
                return None
            header = self._frame_header(wal_fd, since.frames, index.page_size)
            if (header.salt1, header.salt2, header.checksum1, header.checksum2) != (
                since.salt1, since.salt2, since.checksum1, since.checksum2
            ):
                return None
        return since.frames

    def _begin_wal(self, since: Position | None, pin: bool, pinned_at: Position | None) -> Image:
        index = self._read_index()
        size, last = index.page_size, index.max_frame
        start = self._start_frame(since, index, pinned_at)
        # The overlay covers every frame not yet in the main file, the candidates the
        # frames after ``start``; headers are read now, while the WAL cannot restart.
        low = min(last if start is None else start, index.backfilled)
        overlay: dict[int, int] = {}
        changed: set[int] = set()
        checksums = (0, 0)
        wal_fd = -1
        if last:
            opened = self._wal.open()
            if opened is None:
                raise SourceError(
                    self._wal.path, "read WAL", errno.ENOENT, f"missing although the wal-index counts {last} frames"
                )
            wal_fd = opened
            for frame in range(low + 1, last + 1):
                header = self._frame_header(wal_fd, frame, size)
                if (header.salt1, header.salt2) != (index.salt1, index.salt2):
                    raise SourceError(self._wal.path, "read WAL", None, f"frame {frame} is not of the current WAL (salts differ)")
                overlay[header.pgno] = frame
                if start is not None and frame > start:
                    changed.add(header.pgno)
            final = self._frame_header(wal_fd, last, size)
            checksums = (final.checksum1, final.checksum2)
        if pin and last >= self.checkpoint_frames and index.backfilled < last:
            assert self._reader is not None
            self._reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        page_size, page_count = self._begin_read()
        # Read after B's snapshot began (nBackfill only grows under the write lock): if
        # it is below mxFrame, so it was when B began, and B pins the WAL; if not, B may
        # read from the main file only, and so do we.
        backfilled = self._read_index().backfilled
        use_wal = backfilled < last
        if last and (page_size, page_count) != (size, index.page_count):
            raise SourceError(
                self.path, "read WAL", None,
                f"wal-index says {index.page_count} pages of {size} bytes, SQLite {page_count} of {page_size}; step refused",
            )
        candidates = None if start is None else sorted(p for p in changed if p <= page_count)
        frames_from = 0 if start is None else start
        frame_bytes = FRAME_HEADER_SIZE + size
        position = WalPosition(
            *self._identity, index.salt1, index.salt2, last, *checksums, backfilled=backfilled == last
        )
        image = Image(
            "wal", page_size, page_count, candidates, position,
            wal_range=(32 + frames_from * frame_bytes, (last - frames_from) * frame_bytes, index.salt1, index.salt2),
            _db_path=self.path, _db_fd=self._db_fd, _wal_path=self._wal.path, _wal_fd=wal_fd,
            _overlay=overlay if use_wal else {},
        )
        self._check_page_one(image.read_page(1) if page_count else b"", page_size, page_count)
        return image

    def _translate(self, exc: sqlite3.Error, step: str) -> SourceError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if _is_busy(exc):
            return DatabaseBusyError(self.path, step, None, f"database is locked (waited {self.busy_timeout:g} s)")
        if primary == sqlite3.SQLITE_NOTADB:
            return SourceError(self.path, step, None, "not a SQLite database")
        return SourceError(self.path, step, None, f"SQLite: {exc}")
