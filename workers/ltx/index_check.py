"""Check a page index against the frames that preceded it, in bounded memory.

The index is a pure function of the frames: entry i is (pgno, offset, size) of
frame i. So the decoder does not parse the index to check it: it *writes* the
index it expects and compares. Per frame it keeps a canonical 10-byte record --
pgno u32 BE, flags ``PAGE_FLAG_SIZE``, frame size - 10 u32 BE, which for a
current frame is its page header as stored -- and ``FrameLog`` encodes batches of
records into index bytes and hashes them. At the end the hash and length of the
index in the file must equal the expected ones. (Encoding varints in Python costs
~0.5 us an entry, parsing them more than twice that.)

Only when they differ is the index parsed, by ``explain_mismatch``, to name the
first entry that is out of order, out of place or of an impossible size.
"""

from __future__ import annotations

import os
from typing import BinaryIO

from fastcrc.crc64 import go_iso

from ltxpool.ltx.errors import CorruptLTXError, VarintError
from ltxpool.ltx.header import HEADER_SIZE
from ltxpool.ltx.index import encode_entries, read_uvarint
from ltxpool.ltx.layout import SIZED_PAGE_HEADER
from ltxpool.ltx.payload import PAGE_FLAG_SIZE

__all__ = ["FrameLog", "explain_mismatch", "RECORD_SIZE"]

RECORD_SIZE = SIZED_PAGE_HEADER.size
_BATCH = RECORD_SIZE * 8192
# Reading a mismatching index back to explain it is worth this much memory, no more.
_EXPLAIN_LIMIT = 64 << 20


class FrameLog:
    """The index the frames call for, as a running hash: append records to ``records``."""

    __slots__ = ("_next_offset", "crc", "length", "records")

    def __init__(self) -> None:
        self.records = bytearray()
        self.crc = 0
        self.length = 0
        self._next_offset = HEADER_SIZE

    def add_legacy(self, pgno: int, size: int) -> None:
        self.records += SIZED_PAGE_HEADER.pack(pgno, PAGE_FLAG_SIZE, size - RECORD_SIZE)

    def flush_if_full(self) -> None:
        if len(self.records) >= _BATCH:
            self.flush()

    def flush(self) -> None:
        entries, self._next_offset = encode_entries(self.records, self._next_offset)
        self.crc = go_iso(entries, self.crc)
        self.length += len(entries)
        del self.records[:]

    def finish(self) -> tuple[int, int]:
        """Hash and length of the whole expected index, terminator included."""
        self.flush()
        return go_iso(b"\x00", self.crc), self.length + 1


def explain_mismatch(
    stream: BinaryIO, path: str, start: int, length: int, commit: int, frames_end: int, frames: int
) -> CorruptLTXError:
    """The most precise error for an index (at ``start``, ``length`` bytes) that differs from the frames."""
    generic = CorruptLTXError(path, start, "page index does not match the page frames (page numbers or sizes)")
    if not stream.seekable() or length > _EXPLAIN_LIMIT:
        return generic
    try:
        stream.seek(start)
        raw = stream.read(length)
    except OSError:
        return generic
    finally:
        stream.seek(0, os.SEEK_END)
    pos = prev = entries = 0
    expected_offset = HEADER_SIZE
    try:
        while True:
            at = start + pos
            pgno, pos = read_uvarint(raw, pos, len(raw), start)
            if pgno == 0:
                break
            offset, pos = read_uvarint(raw, pos, len(raw), start)
            size, pos = read_uvarint(raw, pos, len(raw), start)
            if not prev < pgno <= commit:
                return CorruptLTXError(path, at, f"page index: entry for page {pgno} after page {prev}")
            if offset != expected_offset:
                return CorruptLTXError(path, at, f"page index: page {pgno} at offset {offset}, its frame is at {expected_offset}")
            if not RECORD_SIZE < size <= frames_end - offset:
                return CorruptLTXError(path, at, f"page index: page {pgno} has impossible frame size {size}")
            expected_offset += size
            prev = pgno
            entries += 1
    except VarintError as exc:
        return CorruptLTXError(path, exc.offset, exc.reason)
    if pos != len(raw):
        return CorruptLTXError(path, start + pos, f"{len(raw) - pos} bytes after the page index terminator")
    if entries != frames or expected_offset != frames_end:
        return CorruptLTXError(path, start, f"page index lists {entries} pages, the file holds {frames}")
    return generic
