"""The fixed-size parts of an LTX file: the 100-byte header and the 16-byte trailer.

Layout and rules follow superfly/ltx v0.5.2 (``ltx.go``: ``Header.MarshalBinary``,
``Header.Validate``, ``Trailer.Validate``; ``encoder.go``: the commit-0 rule), the
version Litestream 0.5.17 pins. All integers are big-endian::

    0 magic "LTX1" | 4 flags u32 | 8 page size u32 | 12 commit u32 | 16 min TXID u64
    24 max TXID u64 | 32 timestamp i64 (ms) | 40 pre-apply checksum u64
    48 WAL offset i64 | 56 WAL size i64 | 64 WAL salt1 u32 | 68 WAL salt2 u32
    72 node ID u64 | 80..100 reserved (written as zero, not checked, as in ltx)

    trailer: post-apply checksum u64 | file checksum u64

The file carries no version number: ltx format versions 2 and 3 share the magic,
so the decoder tells legacy page frames apart per frame (see ``payload.py``).

Validation returns ``(offset, reason)`` instead of raising, because the same rule
is a caller's mistake for the encoder (ValueError) and a corrupt file for the
decoder (CorruptLTXError at that byte).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ltxpool.ltx.checksum import CHECKSUM_FLAG

__all__ = [
    "MAGIC",
    "HEADER_SIZE",
    "TRAILER_SIZE",
    "HEADER_FLAG_NO_CHECKSUM",
    "HEADER_FLAG_MASK",
    "MIN_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "Header",
    "Trailer",
    "is_valid_page_size",
    "header_problem",
    "trailer_problem",
]

MAGIC = b"LTX1"
HEADER_SIZE = 100
TRAILER_SIZE = 16
# Pre- and post-apply checksums are not tracked (both zero). Litestream 0.5.x sets it.
HEADER_FLAG_NO_CHECKSUM = 0x00000002
HEADER_FLAG_MASK = HEADER_FLAG_NO_CHECKSUM
MIN_PAGE_SIZE = 512
MAX_PAGE_SIZE = 65536

_HEADER = struct.Struct(">4sIIIQQqQqqIIQ20x")
_TRAILER = struct.Struct(">QQ")
assert _HEADER.size == HEADER_SIZE and _TRAILER.size == TRAILER_SIZE

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

# (field, byte offset in the header, inclusive range) for range checks of Python values.
_FIELDS = (
    ("flags", 4, 0, _U32),
    ("page_size", 8, 0, _U32),
    ("commit", 12, 0, _U32),
    ("min_txid", 16, 0, _U64),
    ("max_txid", 24, 0, _U64),
    ("timestamp", 32, _I64_MIN, _I64_MAX),
    ("pre_apply_checksum", 40, 0, _U64),
    ("wal_offset", 48, _I64_MIN, _I64_MAX),
    ("wal_size", 56, _I64_MIN, _I64_MAX),
    ("wal_salt1", 64, 0, _U32),
    ("wal_salt2", 68, 0, _U32),
    ("node_id", 72, 0, _U64),
)


def is_valid_page_size(page_size: int) -> bool:
    """SQLite page sizes: a power of two from 512 to 65536."""
    return MIN_PAGE_SIZE <= page_size <= MAX_PAGE_SIZE and page_size & (page_size - 1) == 0


@dataclass(frozen=True)
class Header:
    """The header of one LTX file: which transactions it holds and the database around them."""

    flags: int
    page_size: int
    commit: int
    min_txid: int
    max_txid: int
    timestamp: int = 0
    pre_apply_checksum: int = 0
    wal_offset: int = 0
    wal_size: int = 0
    wal_salt1: int = 0
    wal_salt2: int = 0
    node_id: int = 0

    @property
    def is_snapshot(self) -> bool:
        """A file that starts at TXID 1 holds the whole database, every page."""
        return self.min_txid == 1

    @property
    def no_checksum(self) -> bool:
        """Database checksums are not tracked: pre- and post-apply are zero."""
        return bool(self.flags & HEADER_FLAG_NO_CHECKSUM)

    def encode(self) -> bytes:
        problem = header_problem(self)
        if problem is not None:
            raise ValueError(f"invalid LTX header: {problem[1]}")
        return _HEADER.pack(
            MAGIC, self.flags, self.page_size, self.commit, self.min_txid, self.max_txid,
            self.timestamp, self.pre_apply_checksum, self.wal_offset, self.wal_size,
            self.wal_salt1, self.wal_salt2, self.node_id,
        )

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> tuple[bytes, Header]:
        """Split exactly ``HEADER_SIZE`` bytes into (magic, header) without validating."""
        magic, *fields = _HEADER.unpack(data)
        return magic, cls(*fields)


@dataclass(frozen=True)
class Trailer:
    """The last 16 bytes: the database checksum after applying the file, and the file's own."""

    post_apply_checksum: int
    file_checksum: int

    def encode(self) -> bytes:
        return _TRAILER.pack(self.post_apply_checksum, self.file_checksum)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Trailer:
        return cls(*_TRAILER.unpack(data))


def header_problem(header: Header) -> tuple[int, str] | None:
    """The first rule ``header`` breaks as (byte offset, reason), or None if it is valid."""
    for name, offset, low, high in _FIELDS:
        value = getattr(header, name)
        if not isinstance(value, int) or not low <= value <= high:
            return offset, f"{name} {value!r} out of range"
    if header.flags & ~HEADER_FLAG_MASK:
        return 4, f"unknown header flags 0x{header.flags:08x}"
    if not is_valid_page_size(header.page_size):
        return 8, f"invalid page size {header.page_size} (must be a power of two from 512 to 65536)"
    if header.min_txid == 0:
        return 16, "minimum TXID is zero"
    if header.max_txid == 0:
        return 24, "maximum TXID is zero"
    if header.min_txid > header.max_txid:
        return 16, f"TXIDs out of order: min {header.min_txid} > max {header.max_txid}"
    if header.wal_offset < 0:
        return 48, f"negative WAL offset {header.wal_offset}"
    if header.wal_size < 0:
        return 56, f"negative WAL size {header.wal_size}"
    if (header.wal_salt1 or header.wal_salt2) and header.wal_offset == 0:
        return 64, "WAL salt set without a WAL offset"
    if header.wal_offset == 0 and header.wal_size != 0:
        return 56, "WAL size set without a WAL offset"
    pre = header.pre_apply_checksum
    if header.is_snapshot:
        if pre != 0:
            return 40, "a snapshot must have a zero pre-apply checksum"
    elif header.no_checksum:
        if pre != 0:
            return 40, "pre-apply checksum set although the no-checksum flag is set"
    elif pre == 0:
        return 40, "pre-apply checksum missing (no-checksum flag not set)"
    elif not pre & CHECKSUM_FLAG:
        return 40, f"pre-apply checksum {pre:016x} lacks the checksum flag (bit 63)"
    return None


def trailer_problem(header: Header, trailer: Trailer) -> tuple[int, str] | None:
    """The first rule ``trailer`` breaks as (offset within the trailer, reason), or None."""
    post = trailer.post_apply_checksum
    if header.no_checksum:
        if post != 0:
            return 0, f"post-apply checksum {post:016x} set although the no-checksum flag is set"
    elif post == 0:
        return 0, "post-apply checksum missing (no-checksum flag not set)"
    elif not post & CHECKSUM_FLAG:
        return 0, f"post-apply checksum {post:016x} lacks the checksum flag (bit 63)"
    elif header.commit == 0 and post != CHECKSUM_FLAG:
        return 0, f"post-apply checksum {post:016x} of an empty database must be {CHECKSUM_FLAG:016x}"
    if not trailer.file_checksum & CHECKSUM_FLAG:
        return 8, f"file checksum {trailer.file_checksum:016x} lacks the checksum flag (bit 63)"
    return None
