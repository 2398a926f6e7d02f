"""The database checksum of every TXID replicate wrote: ``<replica>/.ltxpool-replicate/txids``.

Why it exists: Litestream 0.5.17 restores only LTX files without database checksums.
Its restore re-encodes the chain through ltx's ``Compactor`` with
``HeaderFlagNoChecksum`` (litestream ``replica.go``: ``Restore``), and superfly/ltx
v0.5.2's ``Trailer.Validate`` then refuses the last input's post-apply checksum
("post-apply checksum not allowed"); its own compactor copies the first input's
pre-apply checksum the same way ("pre-apply checksum not allowed"). So every file
ltxpool writes carries flag 0x2 and zero pre/post-apply checksums, as Litestream's
do, and the end-to-end check moves here: replicate knows the database checksum of
each TXID it writes (the XOR of its page checksums, ``ltxpool.replicate.state``) and
appends it after the LTX file is durable and before ``state.json``; ``restore`` and
replicate's reconcile compare what the chain gives with it. Unlike a trailer, the
record survives compaction, which rewrites every file. Litestream lists only
``ltx/<level>/``, so it never sees this dotfile directory.

Format: fixed 16-byte records, big-endian u64 TXID then u64 database checksum (bit 63
set), TXIDs strictly ascending. A lookup is a binary search of ``pread`` calls:
constant memory and about log2(n) reads, whatever the size a tenant gives the file.
A trailing partial record (a crash during an append) is ignored by readers and cut
off by the writer. Records above the replica's newest TXID belong to a history no
longer on disk and are cut at replicate's start (:meth:`TxidRecord.keep_through`), so
a record names one state of the database. The record is bounded: past
:data:`RECORD_LIMIT` records replicate keeps those of the TXIDs retention still keeps,
at most half the limit (:meth:`TxidRecord.prune`).

Every operation goes relative to the open state directory (``Directory``), never by path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
from collections.abc import Iterable, Iterator

from ltxpool.replica.atomic import pwrite_all, write_atomic
from ltxpool.replica.directory import Directory, trusted_file
from ltxpool.replica.errors import DirectoryError, TxidRecordError
from ltxpool.replica.layout import STATE_DIR, Replica

__all__ = ["RECORD_NAME", "RECORD_SIZE", "RECORD_LIMIT", "TxidRecord", "lookup", "recorded_checksum"]

RECORD_NAME = "txids"
_RECORD = struct.Struct(">QQ")
RECORD_SIZE = _RECORD.size
#: 16 MiB of records; pruning keeps at most half of it.
RECORD_LIMIT = 1 << 20


def _read_record(fd: int, index: int) -> tuple[int, int]:
    data = os.pread(fd, RECORD_SIZE, index * RECORD_SIZE)
    if len(data) != RECORD_SIZE:
        raise OSError(f"short read of record {index}")
    txid, checksum = _RECORD.unpack(data)
    return txid, checksum


def _first_at_or_after(fd: int, count: int, txid: int) -> int:
    """Index of the first record whose TXID is >= ``txid`` (``count`` if none)."""
    low, high = 0, count
    while low < high:
        middle = (low + high) // 2
        if _read_record(fd, middle)[0] < txid:
            low = middle + 1
        else:
            high = middle
    return low


def _search(fd: int, count: int, txid: int) -> int | None:
    index = _first_at_or_after(fd, count, txid)
    if index == count:
        return None
    found, checksum = _read_record(fd, index)
    return checksum if found == txid else None


def lookup(directory: Directory, txid: int) -> int | None:
    """The database checksum recorded for ``txid`` in ``directory`` (the state directory), or None.

    None also when there is no record file, when it is not a plain file with one link
    (nothing a reader could trust), or when this user may not read it (it is the pool's
    alone, 0600; a reader of the LTX files still restores, unverified, and is told so).
    """
    path = directory.display(RECORD_NAME)
    try:
        # O_NONBLOCK: a FIFO planted under the name must not hang the reader.
        fd = directory.open_file(RECORD_NAME, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, PermissionError):
        return None
    except OSError as exc:
        raise TxidRecordError.from_oserror(path, "open txid record", exc) from exc
    try:
        st = os.fstat(fd)
        # Only replicate's own record vouches for a restore: one owned by anyone else
        # (a tenant who may write the state folder) is no record at all.
        if trusted_file(st) is not None or st.st_uid not in (0, os.geteuid()):
            return None
        return _search(fd, st.st_size // RECORD_SIZE, txid)
    except OSError as exc:
        raise TxidRecordError.from_oserror(path, "read txid record", exc) from exc
    finally:
        os.close(fd)


def recorded_checksum(replica: Replica, txid: int) -> int | None:
    """:func:`lookup` in the replica's state directory (None when it has none)."""
    try:
        state = replica.subdirectory(STATE_DIR)
    except DirectoryError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            return None
        raise TxidRecordError(exc.path, "open state directory", exc.errno, exc.reason) from exc
    if state is None:
        return None
    with state:
        return lookup(state, txid)


class TxidRecord:
    """The writer's side, held open by replicate's state store (under its claim: one writer)."""

    def __init__(self, directory: Directory) -> None:
        self._dir = directory
        self.path = directory.display(RECORD_NAME)
        #: True when this open made the file: an older replica, to backfill (see reconcile).
        self.created = False
        self._fd = -1
        try:
            try:
                self._fd = directory.open_file(RECORD_NAME, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                self.created = True
                directory.fsync()
            except FileExistsError:
                self._fd = directory.open_file(RECORD_NAME, os.O_RDWR, 0o600)
            st = os.fstat(self._fd)
            problem = trusted_file(st)
            if problem is not None:
                raise TxidRecordError(self.path, "open txid record", None, problem)
            self._count = st.st_size // RECORD_SIZE
            if st.st_size % RECORD_SIZE:
                self._truncate(self._count)
        except OSError as exc:
            self.close()
            raise TxidRecordError.from_oserror(self.path, "open txid record", exc) from exc
        except TxidRecordError:
            self.close()
            raise

    @property
    def count(self) -> int:
        return self._count

    def last_txid(self) -> int:
        """The newest TXID recorded (0: none)."""
        if not self._count:
            return 0
        with self._reading():
            return _read_record(self._fd, self._count - 1)[0]

    def lookup(self, txid: int) -> int | None:
        with self._reading():
            return _search(self._fd, self._count, txid)

    def extend(self, records: Iterable[tuple[int, int]]) -> None:
        """Append ``(txid, checksum)`` records, TXIDs ascending and above :meth:`last_txid`; one fsync."""
        last = self.last_txid()
        data = bytearray()
        for txid, checksum in records:
            if txid <= last:
                raise ValueError(f"TXID {txid} does not follow TXID {last} in {self.path}")
            data += _RECORD.pack(txid, checksum)
            last = txid
        if not data:
            return
        try:
            pwrite_all(self._fd, data, self._count * RECORD_SIZE)
            os.fsync(self._fd)
        except OSError as exc:
            # The count stays: readers ignore and the next open cuts a partial record.
            raise TxidRecordError.from_oserror(self.path, "append txid record", exc) from exc
        self._count += len(data) // RECORD_SIZE

    def append(self, txid: int, checksum: int) -> None:
        self.extend([(txid, checksum)])

    def ensure(self, txid: int, checksum: int) -> None:
        """Append the record of ``txid`` unless it is there (or ``txid`` is 0, no TXID yet):
        repairs the gap a failed append (or a crash right after the LTX file) leaves."""
        if txid > self.last_txid():
            self.append(txid, checksum)

    def keep_through(self, txid: int) -> None:
        """Drop every record above ``txid`` (the replica's newest TXID; 0 drops all)."""
        with self._reading():
            keep = _first_at_or_after(self._fd, self._count, txid + 1)
        if keep != self._count:
            self._truncate(keep)

    def prune(self, oldest: int) -> None:
        """Keep the records of TXIDs >= ``oldest`` (the oldest a restore can reach), at most
        ``RECORD_LIMIT // 2`` of them, the newest: a rewrite, atomic, relative to the directory."""
        with self._reading():
            first = max(_first_at_or_after(self._fd, self._count, oldest), self._count - RECORD_LIMIT // 2)
            size = (self._count - first) * RECORD_SIZE
            data = os.pread(self._fd, size, first * RECORD_SIZE)
        if len(data) != size:
            raise TxidRecordError(self.path, "read txid record", None, f"short read: {len(data)} of {size} bytes")
        write_atomic(self.path, data, directory=self._dir, mode=0o600)
        old, self._fd = self._fd, -1
        os.close(old)
        try:
            self._fd = self._dir.open_file(RECORD_NAME, os.O_RDWR, 0o600)
        except OSError as exc:
            raise TxidRecordError.from_oserror(self.path, "open txid record", exc) from exc
        self._count = size // RECORD_SIZE

    def _truncate(self, count: int) -> None:
        try:
            os.ftruncate(self._fd, count * RECORD_SIZE)
            os.fsync(self._fd)
        except OSError as exc:
            raise TxidRecordError.from_oserror(self.path, "truncate txid record", exc) from exc
        self._count = count

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise TxidRecordError.from_oserror(self.path, "read txid record", exc) from exc

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with contextlib.suppress(OSError):
                os.close(fd)
