"""Ingest: a live SQLite database -> LTX files, one per step, TXID + 1 each.

Data flow of one step::

    SqliteSource.capture  --image (consistent, candidates)-->  compare page checksums
        with the checksum array of the last TXID  --changed pages-->  Encoder
        --> AtomicWriter under the level-0 DirLock (a snapshot: level 9's)
        --durable-->  StateStore.save

* First step (empty replica): a snapshot, TXID 1, every page 1..commit but the
  lock page, written straight to level 9 (``ltx/9/0000000000000001-0000000000000001.ltx``):
  level 0 holds only incremental changes, so compaction never copies a DB-sized image
  into levels 1-3 (Litestream #1510, the fix its PR #1514 proposes).
* Later steps: only pages whose checksum differs from the array (8 bytes a page,
  ``ltxpool.replicate.state``), commit = the page count now (a shrink drops the pages
  above it, a growth adds them). The database checksum, rolled forward page by
  page, goes to the per-TXID record (``ltxpool.replica.txid_record``), not into the
  file: every file has flag 0x2 and zero pre/post-apply checksums, the only form
  Litestream 0.5.17 restores. No change -> no file: ``step`` returns None, the
  ordinary "nothing to do".
* A page-size change (``PRAGMA page_size`` + ``VACUUM`` in rollback mode): an LTX
  chain has one page size (``ltxpool.replica.merge`` refuses to mix them) and a pre-apply
  checksum over pages of the old size means nothing to the new ones, so the chain
  starts again -- the LTX way of saying "a new generation": a snapshot with min
  TXID 1 and max TXID = last + 1 (``ltx/9/0000000000000001-<T>.ltx``). TXIDs keep counting,
  so every TXID still names one state of the database: a restore to T-1 uses the
  old chain, to T and later the new snapshot and what follows it.
* Which pages to compare: the image's candidates (the pages of the WAL frames since
  the last step, see ``ltxpool.replicate.sqlite_source``) -- work proportional to the change;
  otherwise every page (a checksum scan: 1 MiB reads and a CRC-64 per page, about
  0.1-0.2 s for 256 MiB from the page cache). Pages the database grows by are
  among the candidates: SQLite writes every new page (the lock page excepted,
  which is never stored).

Memory: the checksum array (8 bytes a page); during a snapshot a second one (the
old array stays valid until the file is durable); per changed page 12 bytes (page
number and checksum) and the encoder's page index (a few bytes); reads go in 1 MiB
chunks and the encoder flushes every 512 KiB. Nothing else grows with the database.
Measured (``tests/bench/bench_replicate.py``): peak RSS growth of a first snapshot
4.0 MiB at 64 MiB and 5.7 MiB at 256 MiB (arrays 0.1 and 0.5 MiB); an incremental
step of 656 pages at most 0.5 MiB above the RSS before it.

The directory lock is never waited for while SQLite's locks are held (issue 13): a
step encodes inside SQLite's read transaction, which in rollback-journal mode holds
the database's SHARED lock (the app cannot commit) and in WAL mode a read mark (the
app's checkpoints stop there). So inside the transaction the level-0 lock is only
*tried*; if it is busy -- the janitor sweeping, or some process of the pool's user
holding it -- the step gives up its capture (the read transaction ends), waits for
the lock outside SQLite (at most ``lock_timeout``, then :class:`LockTimeout` naming
the holder), and captures again with the lock already held. The new capture proves
completeness afresh or compares every page; that costs time, never a commit.

Durability order (see ``ltxpool.replicate.state``): LTX file, then the array, then the
state; on start ``ltxpool.replicate.reconcile`` takes the replica's newest TXID as
the truth, so a crash anywhere neither loses nor duplicates a TXID.
"""

from __future__ import annotations

import math
import os
import time
from array import array
from contextlib import ExitStack
from dataclasses import dataclass, replace

from ltxpool.locks.dirlock import DEFAULT_TIMEOUT, DirLock
from ltxpool.locks.errors import LockTimeout
from ltxpool.ltx import (
    EMPTY_DATABASE_CHECKSUM,
    HEADER_FLAG_NO_CHECKSUM,
    Encoder,
    Header,
    combine,
    lock_page,
    page_checksum,
)
from ltxpool.replica.access import FileAccess
from ltxpool.replica.atomic import AtomicWriter
from ltxpool.replica.directory import Directory, dir_lock
from ltxpool.replica.janitor import sweep_temp_files
from ltxpool.replica.layout import SNAPSHOT_LEVEL, Replica
from ltxpool.replica.roots import check_root
from ltxpool.replica.txid_record import RECORD_LIMIT
from ltxpool.replicate.errors import DatabaseMismatchError, IncompleteStepError
from ltxpool.replicate.reconcile import reconcile, trailer_checksums
from ltxpool.replicate.sqlite_source import DEFAULT_BUSY_TIMEOUT, Image, SqliteSource
from ltxpool.replicate.state import ReplicationState, StateStore, new_checksum_array

__all__ = ["Replicator", "StepResult", "DatabaseMismatchError", "IncompleteStepError"]


def _with_growth(candidates: list[int] | None, old_commit: int, commit: int) -> list[int] | None:
    """The candidates plus every page the database grew by: a grown page is new content
    whatever the WAL says (a page past the old end was never in the chain)."""
    if candidates is None or commit <= old_commit:
        return candidates
    return sorted(set(candidates).union(range(old_commit + 1, commit + 1)))


@dataclass(frozen=True)
class StepResult:
    """One LTX file written by a step."""

    txid: int
    path: str
    pages: int
    bytes: int
    page_size: int
    commit: int
    snapshot: bool
    full_scan: bool
    seconds: float


class _LazySink:
    """Opens the level-0 lock and the atomic writer at the first byte, so a step that
    finds nothing to write never touches the directory.

    ``lock`` None: the step holds no lock yet, and the sink waits ``wait`` seconds
    for it -- 0, a single try, as it runs inside SQLite's read transaction; busy
    raises :class:`LockTimeout`. Given: the step already holds it (``writing()``),
    taken outside SQLite.
    """

    def __init__(self, stack: ExitStack, path: str, directory: Directory, access: FileAccess,
                 lock: DirLock | None, wait: float) -> None:
        self._stack, self._path, self._directory, self._access = stack, path, directory, access
        self._lock, self._wait = lock, wait
        self.writer: AtomicWriter | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.writer is None:
            # A lock the step holds already was taken outside SQLite; the writer takes none.
            lock = None if self._lock is not None else self._stack.enter_context(
                dir_lock(self._directory, timeout=self._wait))
            self.writer = self._stack.enter_context(AtomicWriter(
                self._path, lock, directory=self._directory, mode=self._access.file_mode, owner=self._access.owner))
        self.writer.write(data)


@dataclass
class _Diff:
    """What a step found: the pages it wrote, their numbers and new checksums (for a
    snapshot: the whole new array), the database checksum after it."""

    pages: int
    pgnos: array[int]
    checksums: array[int]
    database: int


class Replicator:
    """Replicate ``database`` into ``replica``: ``step()`` as often as you like, then ``close()``.

    ``pin`` keeps a read transaction open between steps (WAL mode) so that the
    incremental path survives the application's checkpoints; meant for a process
    that steps repeatedly (see ``ltxpool.replicate.sqlite_source``).
    """

    def __init__(
        self,
        database: str | os.PathLike[str],
        replica: str | os.PathLike[str] | Replica,
        *,
        pin: bool = False,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        prove_completeness: bool = True,
        lock_timeout: float = DEFAULT_TIMEOUT,
        lock_inside_sqlite: bool = False,
        snapshot_level: int = SNAPSHOT_LEVEL,
    ) -> None:
        """``lock_timeout``: the longest a step waits for a level's directory lock.
        ``lock_inside_sqlite=True`` is for tests only: the step waits for the lock
        inside SQLite's read transaction (the order before #13), so that a test can
        show the app's writes failing because of it. ``snapshot_level=0`` is for tests
        and benchmarks only: snapshots go to level 0, the layout before #14, so that a
        test can build an old replica and show what the new layout prevents."""
        if snapshot_level not in (0, SNAPSHOT_LEVEL):
            raise ValueError(f"snapshots go to level {SNAPSHOT_LEVEL} (or 0, the old layout), not {snapshot_level}")
        self.snapshot_level = snapshot_level
        self.replica = replica if isinstance(replica, Replica) else Replica(replica)
        self.database = os.path.realpath(os.fspath(database))
        self.pin = pin
        self.lock_timeout = lock_timeout
        self._lock_inside_sqlite = lock_inside_sqlite
        with ExitStack() as stack:
            self.source = stack.enter_context(
                SqliteSource(self.database, busy_timeout=busy_timeout, prove_completeness=prove_completeness)
            )
            self.access = FileAccess.of_database(self.database)
            check_root(self.replica.root, [] if self.access.owner is None else [self.access.owner[0]])
            self.replica.ensure_root(self.access)
            level0 = self.replica.level_directory(0, create=True)
            assert level0 is not None
            self.level0: Directory = stack.enter_context(level0)
            snapshots = self.replica.level_directory(snapshot_level, create=True)
            assert snapshots is not None
            self.snapshots: Directory = stack.enter_context(snapshots)
            self.store = stack.enter_context(StateStore(self.replica.root))
            saved, checksums = self.store.load()
            if saved is not None and saved.database != self.database:
                raise DatabaseMismatchError(
                    self.replica.root, "open replica", None,
                    f"replica holds the history of {saved.database}, not {self.database}; "
                    f"use another replica directory (or remove {self.store.directory} if the database moved)",
                )
            reconciled = reconcile(self.replica, self.database, saved, checksums, recorded=self.store.txids.lookup)
            self._sync_txid_record(reconciled.state)
            stack.pop_all()
        self.state: ReplicationState = reconciled.state
        self.checksums = reconciled.checksums
        self.recovery = reconciled.how
        # The level directory the last capture wanted to write (a busy lock is waited for there).
        self._target: Directory = self.level0
        # (monotonic time, seconds) of the last step that compared every page.
        self.last_full_compare: tuple[float, float] | None = None
        self._remove_own_orphans()

    def _sync_txid_record(self, state: ReplicationState) -> None:
        """Make the per-TXID record end at the replica's newest TXID, which it then holds:
        records above it name states no longer on disk; a replica from before the record
        gets what its old-form trailers still say; a crash between the LTX file and its
        record is repaired with the checksum reconcile just verified."""
        txids = self.store.txids
        if txids.created:
            txids.extend(trailer_checksums(self.replica, state.txid - 1))
        txids.keep_through(state.txid)
        txids.ensure(state.txid, state.checksum)

    def _prune_txid_record(self) -> None:
        """Bound the record: past its limit keep what a restore can still reach (from the
        oldest snapshot's TXID on)."""
        snapshots = [f.max_txid for listing in self.replica.list_all().values() for f in listing.files if f.min_txid == 1]
        self.store.txids.prune(min(snapshots, default=self.state.txid))

    def _remove_own_orphans(self) -> None:
        """Temp files a killed replicate left in level 0 go now, not at the janitor's
        next round: under the directory lock in cleaning mode no write is in flight,
        and level 0 has no other ltxpool writer."""
        with dir_lock(self.level0) as lock:
            sweep_temp_files(self.level0, lock, foreign_age=math.inf)

    def close(self) -> None:
        try:
            self.source.close()
        finally:
            try:
                self.store.close()
            finally:
                try:
                    self.level0.close()
                finally:
                    self.snapshots.close()

    def __enter__(self) -> Replicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def step(self, seen_at: float | None = None) -> StepResult | None:
        """Capture the database; write one LTX file if it changed since the last TXID.

        ``seen_at``: when the change was first noticed (wall clock; default: now),
        recorded with the time the file was durable, for ``status``'s replication lag.
        Raises :class:`LockTimeout` (naming the holder) if the directory lock of the
        level it writes (0, or 9 for a snapshot) stays busy for ``lock_timeout``; no
        SQLite lock is held during that wait.
        """
        started = time.monotonic()
        seen = time.time() if seen_at is None else seen_at
        try:
            return self._step(started, None, seen)
        except LockTimeout:
            if self._lock_inside_sqlite:
                raise
        # The capture is gone with its read transaction: wait here, then capture anew.
        directory = self._target
        with dir_lock(directory, timeout=self.lock_timeout) as lock, lock.writing():
            return self._step(started, (directory, lock), seen)

    def _step(self, started: float, held: tuple[Directory, DirLock] | None, seen_at: float) -> StepResult | None:
        state = self.state
        with ExitStack() as stack:
            with self.source.capture(state.position, pin=self.pin) as image:
                snapshot = state.txid == 0 or image.page_size != state.page_size
                candidates = None if snapshot else _with_growth(image.candidates, state.commit, image.commit)
                if candidates is None:
                    stack.callback(self._note_full_compare, started)
                if image.commit == 0 or (candidates == [] and image.commit == state.commit):
                    self.state = replace(state, position=image.position)
                    return None
                txid = state.txid + 1
                # As Litestream writes (and only so restores): no database checksums in the
                # file; the end-to-end check is the per-TXID record (ltxpool.replica.txid_record).
                header = Header(
                    flags=HEADER_FLAG_NO_CHECKSUM,
                    page_size=image.page_size,
                    commit=image.commit,
                    min_txid=1 if snapshot else txid,
                    max_txid=txid,
                    timestamp=int(time.time() * 1000),
                    wal_offset=image.wal_range[0],
                    wal_size=image.wal_range[1],
                    wal_salt1=image.wal_range[2],
                    wal_salt2=image.wal_range[3],
                )
                level = self.snapshot_level if snapshot else 0
                self._target = self.snapshots if snapshot else self.level0
                path = self.replica.path_of(level, header.min_txid, txid)
                # A lock taken for the other level (the page size changed between the
                # captures) is no use here: the sink only tries this one's.
                lock = held[1] if held is not None and held[0] is self._target else None
                sink = _LazySink(stack, path, self._target, self.access, lock,
                                 self.lock_timeout if self._lock_inside_sqlite else 0.0)
                encoder = Encoder(sink, header)
                if snapshot:
                    diff, fresh = self._encode_snapshot(image, encoder), True
                else:
                    diff, fresh = self._encode_changes(image, encoder, candidates), False
                if not diff.pages and image.commit == state.commit:
                    self.state = replace(state, position=image.position)
                    return None
                self._refuse_incomplete(diff, fresh, image, path)
                encoder.finish()
            # SQLite's lock is released; only the fsync and rename remain.
            assert sink.writer is not None
            sink.writer.commit()
            durable_at = time.time()
            size = sink.writer.bytes_written
        self._apply(diff, fresh, image)
        # The previous TXID's record too, if its append failed (its state is still known).
        self.store.txids.ensure(state.txid, state.checksum)
        self.state = ReplicationState(
            self.database, txid, image.page_size, image.commit, diff.database, image.position
        )
        self.store.save(self.state, self.checksums, None if fresh else diff.pgnos, timing=(seen_at, durable_at))
        if self.store.txids.count > RECORD_LIMIT:
            self._prune_txid_record()
        return StepResult(
            txid, path, diff.pages, size, image.page_size, image.commit,
            snapshot, candidates is None, time.monotonic() - started,
        )

    def _encode_snapshot(self, image: Image, encoder: Encoder) -> _Diff:
        checksums = new_checksum_array(image.commit)
        database = EMPTY_DATABASE_CHECKSUM
        pages = 0
        for pgno, data in image.pages():
            checksum = page_checksum(pgno, data)
            checksums[pgno - 1] = checksum
            database = combine(database, checksum)
            encoder.write_page(pgno, data)
            pages += 1
        return _Diff(pages, array("I"), checksums, database)

    def _encode_changes(self, image: Image, encoder: Encoder, candidates: list[int] | None) -> _Diff:
        old = self.checksums
        known = len(old)
        pgnos, checksums = array("I"), array("Q")
        database = self.state.checksum
        for pgno, data in image.pages(candidates):
            checksum = page_checksum(pgno, data)
            previous = old[pgno - 1] if pgno <= known else 0
            if checksum != previous:
                encoder.write_page(pgno, data)
                pgnos.append(pgno)
                checksums.append(checksum)
                database = combine(combine(database, previous), checksum)
        for pgno in range(image.commit + 1, known + 1):
            database = combine(database, old[pgno - 1])
        return _Diff(len(pgnos), pgnos, checksums, database)

    def _note_full_compare(self, started: float) -> None:
        now = time.monotonic()
        self.last_full_compare = (now, now - started)

    def _refuse_incomplete(self, diff: _Diff, fresh: bool, image: Image, path: str) -> None:
        """Never write a TXID that would not restore: every page 1..commit (but the lock
        page) must be in the chain after it -- written before, or by this file."""
        if fresh:
            held = diff.checksums
        else:
            held = array("Q", self.checksums[: image.commit])
            held.frombytes(bytes(8 * (image.commit - len(held))))
            for pgno, checksum in zip(diff.pgnos, diff.checksums, strict=True):
                held[pgno - 1] = checksum
        skip = lock_page(image.page_size)
        missing = held.count(0) - (1 if skip <= image.commit and held[skip - 1] == 0 else 0)
        if missing:
            first = next(i + 1 for i, value in enumerate(held) if value == 0 and i + 1 != skip)
            raise IncompleteStepError(
                path, "check step", None,
                f"TXID would leave {missing} of {image.commit} pages without content (first: page {first}); step refused",
            )

    def _apply(self, diff: _Diff, fresh: bool, image: Image) -> None:
        """Make the in-memory array the database at the new TXID (its file is durable)."""
        if fresh:
            self.checksums = diff.checksums
            return
        checksums = self.checksums
        if len(checksums) > image.commit:
            del checksums[image.commit:]
        elif len(checksums) < image.commit:
            checksums.frombytes(bytes(8 * (image.commit - len(checksums))))
        for pgno, checksum in zip(diff.pgnos, diff.checksums, strict=True):
            checksums[pgno - 1] = checksum
