"""Random access: find the page index from the end of the file, then read one frame.

This is how Litestream reads single pages (``replica_client.go: FetchPageIndex``):
the last 24 bytes are the index length and the trailer, so the index sits at
``size - 24 - length``. The index is held as three compact arrays (16 bytes a page)
because random access needs all of it; a full scan (``Decoder.pages``) never loads
it. Only the frame that is read is checked here: that its page number, flags and
size agree with the index and that it decompresses to one page. Whether the index
agrees with *every* frame, and the file checksum, only a full verification knows.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from typing import BinaryIO

from ltxpool.ltx.errors import CorruptLTXError, LtxReadError, PayloadError, VarintError
from ltxpool.ltx.header import HEADER_SIZE, TRAILER_SIZE, Header
from ltxpool.ltx.index import INDEX_TAIL_SIZE, IndexEntry, read_uvarint
from ltxpool.ltx.layout import PAGE_HEADER, U32, U64
from ltxpool.ltx.payload import (
    PAGE_FLAG_SIZE,
    decompress_block,
    decompress_legacy_frame,
    legacy_frame_length,
    max_legacy_frame_size,
)

__all__ = ["PageIndex", "load_page_index", "read_frame"]

_END_MARKER_SIZE = 6


class PageIndex:
    """The page index of one file, sorted by page number."""

    def __init__(self, pgnos: array[int], offsets: array[int], sizes: array[int]) -> None:
        self._pgnos, self._offsets, self._sizes = pgnos, offsets, sizes

    def __len__(self) -> int:
        return len(self._pgnos)

    @property
    def pgnos(self) -> array[int]:
        """The page numbers the file holds, ascending."""
        return self._pgnos

    def __iter__(self) -> Iterator[IndexEntry]:
        return map(IndexEntry, self._pgnos, self._offsets, self._sizes)

    def find(self, pgno: int) -> IndexEntry | None:
        i = bisect_left(self._pgnos, pgno)
        if i == len(self._pgnos) or self._pgnos[i] != pgno:
            return None
        return IndexEntry(pgno, self._offsets[i], self._sizes[i])


def load_page_index(stream: BinaryIO, path: str, header: Header) -> PageIndex:
    """Read and check the page index through the length field before the trailer."""
    if not stream.seekable():
        raise ValueError(f"{path}: random access needs a seekable stream")
    tail = INDEX_TAIL_SIZE + TRAILER_SIZE
    with _Restore(stream, path):
        file_size = stream.seek(0, os.SEEK_END)
        if file_size < HEADER_SIZE + _END_MARKER_SIZE + 1 + tail:
            raise CorruptLTXError(path, file_size, f"file of {file_size} bytes is too short to hold a page index")
        stream.seek(file_size - tail)
        (length,) = U64.unpack(_read_exact(stream, path, INDEX_TAIL_SIZE))
        start = file_size - tail - length
        if length < 1 or start < HEADER_SIZE + _END_MARKER_SIZE:
            raise CorruptLTXError(path, file_size - tail, f"page index length {length} impossible in a {file_size}-byte file")
        stream.seek(start)
        raw = _read_exact(stream, path, length)
    pgnos, offsets, sizes = array("I"), array("Q"), array("I")
    frames_end = start - _END_MARKER_SIZE
    frame_limit = PAGE_HEADER.size + max_legacy_frame_size(header.page_size)
    pos = prev = 0
    try:
        while True:
            entry_offset = start + pos
            pgno, pos = read_uvarint(raw, pos, length, start)
            if pgno == 0:
                break
            offset, pos = read_uvarint(raw, pos, length, start)
            size, pos = read_uvarint(raw, pos, length, start)
            if not prev < pgno <= header.commit:
                raise CorruptLTXError(path, entry_offset, f"page index: entry for page {pgno} after page {prev}")
            if offset < HEADER_SIZE or not 0 < size <= frame_limit or offset + size > frames_end:
                raise CorruptLTXError(path, entry_offset, f"page index: page {pgno} frame {offset}+{size} outside the pages")
            pgnos.append(pgno)
            offsets.append(offset)
            sizes.append(size)
            prev = pgno
    except VarintError as exc:
        raise CorruptLTXError(path, exc.offset, exc.reason) from None
    if pos != length:
        raise CorruptLTXError(path, start + pos, f"page index ends {length - pos} bytes before its length field says")
    return PageIndex(pgnos, offsets, sizes)


def read_frame(stream: BinaryIO, path: str, header: Header, entry: IndexEntry) -> bytes:
    """Read the frame ``entry`` points at and return its page."""
    with _Restore(stream, path):
        stream.seek(entry.offset)
        raw = memoryview(_read_exact(stream, path, entry.size))
    if entry.size < PAGE_HEADER.size + 1:
        raise CorruptLTXError(path, entry.offset, f"page index: frame of page {entry.pgno} too small ({entry.size})")
    pgno, flags = PAGE_HEADER.unpack_from(raw)
    if pgno != entry.pgno:
        raise CorruptLTXError(path, entry.offset, f"page index points page {entry.pgno} at the frame of page {pgno}")
    if flags == PAGE_FLAG_SIZE:
        payload_offset = 10
        if entry.size <= payload_offset or U32.unpack_from(raw, 6)[0] != entry.size - payload_offset:
            raise CorruptLTXError(path, entry.offset + 6, f"page {pgno}: frame size disagrees with the page index")
    elif flags == 0:
        payload_offset = 6
    else:
        raise CorruptLTXError(path, entry.offset + 4, f"page {pgno}: unknown page flags 0x{flags:04x}")
    payload = raw[payload_offset:]
    try:
        if flags == 0:
            if legacy_frame_length(payload, header.page_size) != len(payload):
                raise PayloadError(0, "LZ4 frame length disagrees with the page index")
            return decompress_legacy_frame(payload, header.page_size)
        return decompress_block(payload, header.page_size)
    except PayloadError as exc:
        raise CorruptLTXError(path, entry.offset + payload_offset + exc.offset, f"page {pgno}: {exc.reason}") from None


def _read_exact(stream: BinaryIO, path: str, n: int) -> bytes:
    parts, have = [], 0
    while have < n:
        try:
            chunk = stream.read(n - have)
        except OSError as exc:
            raise LtxReadError.from_oserror(path, "read", exc) from exc
        if not chunk:
            raise CorruptLTXError(path, stream.tell(), f"file truncated: {n - have} of {n} bytes missing")
        parts.append(chunk)
        have += len(chunk)
    return b"".join(parts)


class _Restore:
    """Put the stream back where the streaming reader left it (random reads may interleave)."""

    def __init__(self, stream: BinaryIO, path: str) -> None:
        self._stream, self._path = stream, path

    def __enter__(self) -> None:
        self._position = self._stream.tell()

    def __exit__(self, *exc: object) -> None:
        self._stream.seek(self._position)
