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

Which pages changed (WAL mode): a :class:`WalPosition` remembers the WAL generation
(salts) and ``mxFrame`` of the last step. Same salts and no fewer frames: the frames
after it are exactly the commits since, so only their pages are candidates (work
proportional to the change, as in Litestream's ``db.go``). Anything else -- a WAL
restart (new salts), another file, a rollback-mode step -- gives ``candidates=None``
and the caller compares every page.

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
import os
import sqlite3
import stat
import struct
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
_SQLITE_MAGIC = b"SQLite format 3\x00"


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
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) != self.identity:
                fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
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
    ) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.checkpoint_frames = checkpoint_frames
        self._lock: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._db_fd = -1
        self._identity = (0, 0)
        self._wal = _Aux(self.path + "-wal")
        self._shm = _Aux(self.path + "-shm")
        self._pinned_at: Position | None = None
        self._open()

    # -- opening ---------------------------------------------------------------------

    def _open(self) -> None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            reason = "no such database file" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            raise SourceError(self.path, "open database", exc.errno, reason) from exc
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(self.path, "open database", None, "not a regular file, so not a SQLite database")
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "open database", exc) from exc
        try:
            head = os.pread(fd, len(_SQLITE_MAGIC), 0)
        except OSError as exc:
            os.close(fd)
            raise SourceError.from_oserror(self.path, "read database", exc) from exc
        if head and head != _SQLITE_MAGIC:
            os.close(fd)
            raise SourceError(self.path, "open database", None, "not a SQLite database (bad header)")
        self._db_fd = fd
        fst = os.fstat(fd)
        self._identity = (fst.st_dev, fst.st_ino)
        uri = Path(self.path).absolute().as_uri() + "?mode=rw"
        try:
            self._lock = self._connect(uri)
            self._reader = self._connect(uri)
        except sqlite3.Error as exc:
            self.close()
            raise self._translate(exc, "open database") from exc

    def _connect(self, uri: str) -> sqlite3.Connection:
        return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False)

    def _reopen_if_replaced(self) -> None:
        """Follow the name: a database replaced by rename is a new file (full compare)."""
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "stat database", exc) from exc
        if (st.st_dev, st.st_ino) != self._identity:
            self.close()
            self._open()

    def close(self) -> None:
        """Close the connections first, then our descriptors (see the POSIX-lock note)."""
        for connection in (self._reader, self._lock):
            if connection is not None:
                connection.close()
        self._reader = self._lock = None
        self._pinned_at = None
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

    # -- capturing -------------------------------------------------------------------

    @contextlib.contextmanager
    def capture(self, since: Position | None, *, pin: bool = False) -> Iterator[Image]:
        """Yield a consistent image; ``since`` is the position of the previous step's image."""
        self._reopen_if_replaced()
        image = self._begin(since, pin)
        failed = True
        try:
            yield image
            failed = False
        finally:
            image._open = False
            if failed or not pin or image.mode != "wal":
                self._end_read()
            else:
                self._pinned_at = image.position

    def _begin(self, since: Position | None, pin: bool) -> Image:
        lock, reader = self._lock, self._reader
        assert lock is not None and reader is not None
        try:
            lock.execute("BEGIN IMMEDIATE")
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
        reader = self._reader
        assert reader is not None
        reader.execute("BEGIN")
        page_size = int(reader.execute("PRAGMA page_size").fetchone()[0])
        page_count = int(reader.execute("PRAGMA page_count").fetchone()[0])
        return page_size, page_count

    def _end_read(self) -> None:
        reader = self._reader
        if reader is not None and reader.in_transaction:
            reader.execute("COMMIT")

    def _begin_rollback(self, mode: str, since: Position | None) -> Image:
        page_size, page_count = self._begin_read()
        try:
            if os.fstat(self._db_fd).st_size == 0:
                page_count = 0
            header = os.pread(self._db_fd, 28, 0)
        except OSError as exc:
            raise SourceError.from_oserror(self.path, "read database", exc) from exc
        counter = _CHANGE_COUNTER.unpack_from(header, 24)[0] if len(header) == 28 else 0
        position = RollbackPosition(*self._identity, counter, page_size, page_count)
        same = (
            isinstance(since, RollbackPosition)
            and since == position
            and page_count > 0
        )
        return Image(mode, page_size, page_count, [] if same else None, position, _db_path=self.path, _db_fd=self._db_fd)

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
        """The last frame already replicated, if the frames after it are all the changes."""
        if not isinstance(since, WalPosition) or (since.device, since.inode) != self._identity:
            return None
        if (since.salt1, since.salt2) != (index.salt1, index.salt2):
            return 0 if since == pinned_at and since.backfilled else None
        if index.max_frame < since.frames:
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
                raise SourceError(self._wal.path, "read WAL", errno.ENOENT, f"missing although the wal-index counts {last} frames")
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
                f"wal-index says {index.page_count} pages of {size} bytes, SQLite {page_count} of {page_size}",
            )
        candidates = None if start is None else sorted(p for p in changed if p <= page_count)
        frames_from = 0 if start is None else start
        frame_bytes = FRAME_HEADER_SIZE + size
        position = WalPosition(
            *self._identity, index.salt1, index.salt2, last, *checksums, backfilled=backfilled == last
        )
        return Image(
            "wal", page_size, page_count, candidates, position,
            wal_range=(32 + frames_from * frame_bytes, (last - frames_from) * frame_bytes, index.salt1, index.salt2),
            _db_path=self.path, _db_fd=self._db_fd, _wal_path=self._wal.path, _wal_fd=wal_fd,
            _overlay=overlay if use_wal else {},
        )

    def _translate(self, exc: sqlite3.Error, step: str) -> SourceError:
        code = getattr(exc, "sqlite_errorcode", None)
        primary = None if code is None else code & 0xFF
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return DatabaseBusyError(self.path, step, None, f"database is locked (waited {self.busy_timeout:g} s)")
        if primary == sqlite3.SQLITE_NOTADB:
            return SourceError(self.path, step, None, "not a SQLite database")
        return SourceError(self.path, step, None, f"SQLite: {exc}")
