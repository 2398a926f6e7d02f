"""SQLite's WAL file and wal-index (``-shm``) layouts: parsing only, no policy.

From https://www.sqlite.org/walformat.html and https://www.sqlite.org/fileformat2.html
(checked against SQLite 3.40, the library Python 3.11 links here):

WAL file (big-endian): a 32-byte header -- magic 0x377f0682/3, format version,
page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2 -- then frames
of a 24-byte header (page number, database size in pages after a commit or 0,
salt-1, salt-2, cumulative checksum-1, checksum-2) followed by one page.

wal-index header (the first 136 bytes of ``-shm``, *native* byte order, except the
salts, which are copied from the WAL header as raw big-endian bytes): two copies of
a 48-byte header (version, unused, change counter, isInit, bigEndCksum, page size
as u16 where 65536 is stored as 1, ``mxFrame`` = the last valid committed frame,
``nPage`` = database size in pages, checksum of frame mxFrame, salts, header
checksum), then the checkpoint info (``nBackfill``: frames already copied into the
database file, then the read marks).

``mxFrame`` is what every SQLite reader trusts: frames after it are uncommitted or
stale, whatever their checksums say. Reading it while holding the WAL write lock
(``ltxpool.replicate.sqlite_source``) gives exactly the frames a new reader would see, with no
need to re-run SQLite's recovery over the whole WAL.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass

from ltxpool.replicate.errors import WalFormatError

__all__ = [
    "WAL_HEADER_SIZE",
    "FRAME_HEADER_SIZE",
    "SHM_HEADER_SIZE",
    "WalIndexHeader",
    "FrameHeader",
    "WalFormatError",
    "parse_wal_index",
    "parse_frame_header",
    "frame_offset",
]

WAL_HEADER_SIZE = 32
FRAME_HEADER_SIZE = 24
# Two copies of the 48-byte index header, then the 40-byte checkpoint info.
SHM_HEADER_SIZE = 136

_INDEX_VERSION = 3007000
_INDEX_HEADER = struct.Struct("=IIIBBHII8s8s8s")
_NATIVE_U32 = struct.Struct("=I")
_FRAME_HEADER = struct.Struct(">II8sII")
_BIG_ENDIAN_SALTS = struct.Struct(">II")
assert _INDEX_HEADER.size == 48 and sys.byteorder in ("little", "big")


@dataclass(frozen=True)
class WalIndexHeader:
    """What the wal-index says about the WAL right now."""

    page_size: int
    max_frame: int
    page_count: int
    salt1: int
    salt2: int
    backfilled: int


@dataclass(frozen=True)
class FrameHeader:
    pgno: int
    commit: int
    salt1: int
    salt2: int
    checksum1: int
    checksum2: int


def parse_wal_index(data: bytes) -> WalIndexHeader:
    """Decode the first ``SHM_HEADER_SIZE`` bytes of a ``-shm`` file.

    Both header copies must agree: SQLite writes them in turn, so a difference means
    a writer is mid-update -- which cannot happen while the caller holds the write
    lock, so it is reported rather than retried.
    """
    if len(data) < SHM_HEADER_SIZE:
        raise WalFormatError(f"wal-index is {len(data)} bytes, shorter than its {SHM_HEADER_SIZE}-byte header")
    if data[:48] != data[48:96]:
        raise WalFormatError("the two copies of the wal-index header differ")
    version, _, _, is_init, _, size_field, max_frame, page_count, _, salts, _ = _INDEX_HEADER.unpack_from(data)
    if not is_init:
        raise WalFormatError("wal-index header is not initialised")
    if version != _INDEX_VERSION:
        raise WalFormatError(f"unknown wal-index version {version}")
    page_size = (size_field & 0xFF00) | ((size_field & 0x0001) << 16)
    salt1, salt2 = _BIG_ENDIAN_SALTS.unpack(salts)
    (backfilled,) = _NATIVE_U32.unpack_from(data, 96)
    if backfilled > max_frame:
        raise WalFormatError(f"wal-index says {backfilled} frames are backfilled of {max_frame}")
    return WalIndexHeader(page_size, max_frame, page_count, salt1, salt2, backfilled)


def parse_frame_header(data: bytes) -> FrameHeader:
    pgno, commit, salts, checksum1, checksum2 = _FRAME_HEADER.unpack(data)
    salt1, salt2 = _BIG_ENDIAN_SALTS.unpack(salts)
    return FrameHeader(pgno, commit, salt1, salt2, checksum1, checksum2)


def frame_offset(frame: int, page_size: int) -> int:
    """File offset of the header of frame ``frame`` (1-based) in a WAL of ``page_size`` pages."""
    return WAL_HEADER_SIZE + (frame - 1) * (FRAME_HEADER_SIZE + page_size)
