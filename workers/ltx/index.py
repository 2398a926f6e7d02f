"""The page index: where each page's frame is, so one page can be read without a scan.

Follows superfly/ltx v0.5.2 (``encoder.go: encodePageIndex``, ``decoder.go:
DecodePageIndex``): after the end-of-pages marker, per page in ascending page
number, three unsigned varints (Go's ``binary.AppendUvarint``, i.e. LEB128: 7 bits
a byte, low group first, bit 7 = "more follows") -- page number, offset of the
frame from the start of the file, frame size (page header, size field and
payload) -- then a varint 0, then a u64 big-endian holding the byte length of
entries plus terminator. A reader with random access finds the index from the end
of the file: trailer (16) and length (8) come last.
"""

from __future__ import annotations

from typing import NamedTuple

from ltxpool.ltx.errors import VarintError
from ltxpool.ltx.layout import SIZED_PAGE_HEADER

__all__ = [
    "IndexEntry",
    "VarintError",
    "read_uvarint",
    "encode_entries",
    "MAX_UVARINT_SIZE",
    "INDEX_TAIL_SIZE",
]

MAX_UVARINT_SIZE = 10
# The u64 index length that sits between the index entries and the trailer.
INDEX_TAIL_SIZE = 8



class IndexEntry(NamedTuple):
    pgno: int
    offset: int
    size: int


def read_uvarint(data: bytes | memoryview, pos: int, end: int, base: int) -> tuple[int, int]:
    """Decode the varint at ``data[pos:end]``; returns (value, next pos).

    Like Go's ``binary.ReadUvarint`` it refuses varints longer than 10 bytes or above
    2**64 - 1. ``base`` is the file offset of ``data[0]``, for error positions.
    """
    value = shift = 0
    start = pos
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            if pos - start == MAX_UVARINT_SIZE and byte > 1:
                raise VarintError(base + start, "page index varint overflows 64 bits")
            return value | (byte << shift), pos
        value |= (byte & 0x7F) << shift
        shift += 7
        if pos - start == MAX_UVARINT_SIZE:
            raise VarintError(base + start, "page index varint longer than 10 bytes")
    raise VarintError(base + end, "page index truncated inside a varint")


def encode_entries(records: bytes | bytearray, offset: int) -> tuple[bytearray, int]:
    """Index entries for consecutive frames described by their 10-byte page headers.

    Each record is pgno u32 BE, flags u16, payload size u32 BE, the frame being
    payload size + 10 bytes long (a current frame's own header; the decoder makes
    such a record for a legacy frame too). ``offset`` is the first frame's offset.
    Returns the entries (no terminator) and the offset after the last frame.
    Encoding is the cheap direction: this is how both the encoder writes the index
    and the decoder checks it (compare, never parse).
    """
    out = bytearray()
    append = out.append
    for pgno, _, payload in SIZED_PAGE_HEADER.iter_unpack(records):
        size = payload + 10
        for value in (pgno, offset, size):
            while value >= 0x80:
                append((value & 0x7F) | 0x80)
                value >>= 7
            append(value)
        offset += size
    return out, offset
