"""Streaming LTX reader that verifies everything it reads.

Reads the format of superfly/ltx v0.5.2 (``decoder.go``), which Litestream 0.5.16
and 0.5.17 write, and the legacy LZ4-frame pages of ltx v0.5.0/v0.5.1 (Litestream
0.5.0-0.5.15), told apart per frame by the page-header flag (see ``payload.py``).

Layout after the 100-byte header: page frames in ascending page number (6-byte page
header pgno u32 + flags u16; with flag 0x0001 a u32 compressed size and an LZ4 block,
without it an LZ4 frame), a 6-byte all-zero page header, the page index (see
``index.py``), the index length u64, the trailer (post-apply checksum, file checksum).

File checksum (ltx ``writeToHash``): CRC-64/GO-ISO over header, every page header
and size field as stored, every page *decompressed*, the end marker, the index,
its length and the post-apply checksum -- everything but the last 8 bytes, with
payloads replaced by their pages. Flag bit 63 is set on the stored value.

Checks beyond ltx's own decoder, which trusts several of these: pgno <= commit, no
lock page, strictly ascending pages, snapshot completeness, index length and entry
count, trailer rules, the post-apply checksum of a snapshot, a file no larger than its
header allows and without holes (``bounds.py``: before a page is read); with ``verify_index``
every index entry against its frame (``index_check.py``). Memory stays bounded for
any file: pages are yielded one at a time and the tail is streamed.

The frame loop is the codec's hot path (a 4 KiB page decompresses in well under a
microsecond), so it keeps its state in locals, does the common case -- a sized
frame in order -- with one combined test, and leaves everything unusual (legacy
frames, the page after the lock page, every error) to ``_slow_frame``.
"""

from __future__ import annotations

import os
import stat
from array import array
from collections.abc import Iterator
from typing import Any, BinaryIO, NamedTuple

from fastcrc.crc64 import go_iso
from lz4.block import LZ4BlockError
from lz4.block import decompress as _lz4_decompress

from ltxpool.ltx.bounds import first_hole, size_problem
from ltxpool.ltx.checksum import CHECKSUM_FLAG, combine, lock_page, page_checksum
from ltxpool.ltx.errors import CorruptLTXError, LtxReadError, PayloadError
from ltxpool.ltx.header import (
    HEADER_SIZE,
    MAGIC,
    TRAILER_SIZE,
    Header,
    Trailer,
    header_problem,
    trailer_problem,
)
from ltxpool.ltx.index import INDEX_TAIL_SIZE
from ltxpool.ltx.index_check import FrameLog, explain_mismatch
from ltxpool.ltx.layout import PAGE_HEADER, SIZED_PAGE_HEADER, U64
from ltxpool.ltx.lookup import PageIndex, load_page_index, read_frame
from ltxpool.ltx.payload import (
    LEGACY_V2_FLAGS,
    PAGE_FLAG_SIZE,
    decompress_block,
    decompress_legacy_frame,
    legacy_frame_length,
    max_block_size,
    max_legacy_frame_size,
)
from ltxpool.ltx.reader import ChunkReader

__all__ = ["Decoder", "Frame"]

_PAGE_HEADER_SIZE = PAGE_HEADER.size
_SIZED_HEADER_SIZE = SIZED_PAGE_HEADER.size
_END_MARKER = bytes(_PAGE_HEADER_SIZE)
_TAIL = INDEX_TAIL_SIZE + TRAILER_SIZE
# Bytes 0x00-0x7f end a varint; deleting them counts varints in C.
_VARINT_ENDS = bytes(range(0x80))


class Frame(NamedTuple):
    """One decoded page frame: where it is, how big it is on disk, and the page.

    ``block`` is the frame's LZ4 block as stored (already checked to decompress to
    ``data``), so a compaction can copy the page without compressing it again;
    None for a frame the fast path did not take (e.g. legacy LZ4-frame pages).
    """

    pgno: int
    offset: int
    size: int
    flags: int
    data: bytes
    block: bytes | None = None

    @property
    def payload_size(self) -> int:
        """Bytes of compressed payload (frame size minus page header and size field)."""
        return self.size - (_SIZED_HEADER_SIZE if self.flags & PAGE_FLAG_SIZE else _PAGE_HEADER_SIZE)


class Decoder:
    """Read one LTX file: the header at once, the pages as a stream, then verify the rest.

    ``pages()``/``frames()`` run once; when they are exhausted without error the
    whole file has been verified (the page index entry by entry only with
    ``verify_index``) and ``trailer`` is set. ``read_page`` needs a seekable stream
    and checks only the frame it reads. ``size``: the stream's size where the caller
    knows it and the stream has no descriptor to ask (an object in a bucket): it is
    checked against the header as a file's is, and bounds the read buffer.
    """

    def __init__(
        self, stream: BinaryIO, path: str = "<stream>", *, verify_index: bool = False, size: int | None = None
    ) -> None:
        self.path = path
        self.verify_index = verify_index
        self.trailer: Trailer | None = None
        # XOR of the page checksums of a snapshot that tracks checksums (its post-apply checksum).
        self.database_checksum: int | None = None
        self._stream = stream
        self._reader = ChunkReader(stream, path, size)
        self._size = size
        self._started = False
        self._index: PageIndex | None = None
        self._crc = 0
        self.header = self._read_header()
        self._check_size()

    @property
    def stream(self) -> BinaryIO:
        """The stream decoded (a caller that seeks it must not decode afterwards)."""
        return self._stream

    def pages(self) -> Iterator[tuple[int, bytes]]:
        """Yield ``(pgno, page)`` in file order; raise CorruptLTXError at the first fault."""
        return self._start(as_pages=True)

    def frames(self) -> Iterator[Frame]:
        """Like ``pages`` but yield each frame's position and size too."""
        return self._start(as_pages=False)

    def page_numbers(self) -> array[int]:
        """The page numbers the file holds, from its page index: no page is decompressed."""
        if self._index is None:
            self._index = load_page_index(self._stream, self.path, self.header)
        return self._index.pgnos

    def read_page(self, pgno: int) -> bytes | None:
        """Page ``pgno`` through the page index (None if the file does not hold it)."""
        if self._index is None:
            self._index = load_page_index(self._stream, self.path, self.header)
        entry = self._index.find(pgno)
        if entry is None:
            return None
        return read_frame(self._stream, self.path, self.header, entry)

    def _start(self, as_pages: bool) -> Iterator[Any]:
        if self._started:
            raise ValueError("the pages of a Decoder can be read only once")
        self._started = True
        return self._frames(as_pages)

    def _read_header(self) -> Header:
        reader = self._reader
        have = reader.fill(HEADER_SIZE)
        if have >= len(MAGIC) and reader.buf[: len(MAGIC)] != MAGIC:
            raise CorruptLTXError(self.path, 0, f"not an LTX file: magic {bytes(reader.buf[:4])!r}, expected {MAGIC!r}")
        raw = reader.take(HEADER_SIZE, "the header")
        _, header = Header.unpack(raw)
        problem = header_problem(header)
        if problem is not None:
            raise CorruptLTXError(self.path, problem[0], problem[1])
        self._crc = go_iso(raw)
        return header

    def _check_size(self) -> None:
        """Refuse a file larger than its header allows, or with a hole, before reading on.

        Only a regular file has a size to check, or a stream whose size the caller
        gave (no hole to look for there); a pipe or an in-memory stream is read as it
        comes. See ``bounds.py`` for why both checks.
        """
        try:
            fd = self._stream.fileno()
            info = os.fstat(fd)
        except (AttributeError, OSError, ValueError):
            if self._size is not None and (problem := size_problem(self.header, self._size)) is not None:
                raise CorruptLTXError(self.path, problem[0], problem[1]) from None
            return
        if not stat.S_ISREG(info.st_mode):
            return
        problem = size_problem(self.header, info.st_size)
        if problem is not None:
            raise CorruptLTXError(self.path, problem[0], problem[1])
        try:
            hole = first_hole(fd, info.st_size)
        except OSError as exc:
            raise LtxReadError.from_oserror(self.path, "seek hole", exc) from exc
        if hole is not None:
            raise CorruptLTXError(
                self.path, hole,
                f"sparse file: a hole at byte {hole} of {info.st_size} (LTX files are written in full; "
                "a hole is planted, and reading it would read zeros to the end)",
            )

    def _frames(self, as_pages: bool) -> Iterator[Any]:
        path, header, reader = self.path, self.header, self._reader
        page_size, commit, snapshot = header.page_size, header.commit, header.is_snapshot
        lock = lock_page(page_size)
        block_limit = max_block_size(page_size)
        unpack = SIZED_PAGE_HEADER.unpack_from
        crc = self._crc
        database = CHECKSUM_FLAG if snapshot and not header.no_checksum else None
        log = FrameLog() if self.verify_index else None
        count = prev = 0
        # Below the lock page, "pgno <= bound" also rules the lock page out; once a
        # page beyond it was accepted (by _slow_frame), only the commit bounds pages.
        bound = min(commit, lock - 1)
        data, view, pos, limit = reader.buf, reader.view, reader.pos, reader.limit
        while True:
            if limit - pos < _SIZED_HEADER_SIZE:
                if log is not None:
                    log.flush_if_full()
                reader.pos = pos
                have = reader.fill(_SIZED_HEADER_SIZE)
                data, view, pos, limit = reader.buf, reader.view, reader.pos, reader.limit
                if have < _SIZED_HEADER_SIZE:
                    # Near the end only the end marker fits; anything else is truncated.
                    reader.require(_PAGE_HEADER_SIZE, "a page header")
                    if data[pos:pos + _PAGE_HEADER_SIZE] == _END_MARKER:
                        break
                    reader.require(_SIZED_HEADER_SIZE, "a page header")
            pgno, flags, payload_size = unpack(data, pos)
            if (
                flags == PAGE_FLAG_SIZE
                and prev < pgno <= bound
                and (pgno == prev + 1 or not snapshot)
                and payload_size <= block_limit
            ):
                end = pos + _SIZED_HEADER_SIZE + payload_size
                if end > limit:
                    reader.pos = pos
                    reader.require(end - pos, f"page {pgno}")
                    data, view, pos, limit = reader.buf, reader.view, reader.pos, reader.limit
                    end = pos + _SIZED_HEADER_SIZE + payload_size
                frame_header = view[pos:pos + _SIZED_HEADER_SIZE]
                try:
                    page = _lz4_decompress(view[pos + _SIZED_HEADER_SIZE:end], page_size)
                except LZ4BlockError:
                    raise CorruptLTXError(path, reader.base + pos + 10, f"page {pgno}: LZ4 block does not decompress") from None
                if len(page) != page_size:
                    raise CorruptLTXError(
                        path, reader.base + pos + 10, f"page {pgno}: decompresses to {len(page)} bytes, not {page_size}"
                    )
                crc = go_iso(page, go_iso(frame_header, crc))
                block = None if as_pages else bytes(view[pos + _SIZED_HEADER_SIZE:end])
                if log is not None:
                    log.records += frame_header
            elif pgno == 0 and flags == 0:
                break
            else:
                reader.pos = pos
                block = None
                page, end, crc = self._slow_frame(pgno, flags, prev, crc, log)
                data, view, pos, limit = reader.buf, reader.view, reader.pos, reader.limit
                if pgno > lock:
                    bound = commit
            if database is not None:
                database = combine(database, page_checksum(pgno, page))
            prev = pgno
            count += 1
            if as_pages:
                yield pgno, page
            else:
                yield Frame(pgno, reader.base + pos, end - pos, flags, page, block)
            pos = end

        reader.pos = pos
        end_marker = reader.offset
        if snapshot:
            last = commit - 1 if commit == lock else commit
            if prev != last:
                raise CorruptLTXError(path, end_marker, f"snapshot ends at page {prev} but its database has {last} pages")
        crc = go_iso(_END_MARKER, crc)
        reader.pos += _PAGE_HEADER_SIZE
        self.database_checksum = database
        self._finish(crc, count, end_marker, log)

    def _slow_frame(self, pgno: int, flags: int, prev: int, crc: int, log: FrameLog | None) -> tuple[bytes, int, int]:
        """Any frame the fast path declines: check it fully, decode it; return (page, end, crc)."""
        path, header, reader = self.path, self.header, self._reader
        offset, pos = reader.offset, reader.pos
        if flags == LEGACY_V2_FLAGS and reader.buf[pos + 6:pos + 8] == b"\x4d\x18":
            raise CorruptLTXError(path, offset, "legacy LTX format version 2 (4-byte page headers) is not supported")
        if pgno == 0:
            raise CorruptLTXError(path, offset, f"page number 0 in a page header with flags 0x{flags:04x}")
        if flags not in (0, PAGE_FLAG_SIZE):
            raise CorruptLTXError(path, offset + 4, f"page {pgno}: unknown page flags 0x{flags:04x}")
        lock = lock_page(header.page_size)
        if pgno > header.commit:
            raise CorruptLTXError(path, offset, f"page {pgno} beyond the commit ({header.commit} pages)")
        if pgno == lock:
            raise CorruptLTXError(path, offset, f"page {pgno} is the lock page, which is never stored")
        if pgno <= prev:
            raise CorruptLTXError(path, offset, f"page {pgno} after page {prev}: pages out of order")
        expected = prev + 1 if prev + 1 != lock else prev + 2
        if header.is_snapshot and pgno != expected:
            raise CorruptLTXError(path, offset, f"snapshot lacks page {expected} (next frame holds page {pgno})")
        if flags == PAGE_FLAG_SIZE:
            payload_size = SIZED_PAGE_HEADER.unpack_from(reader.buf, pos)[2]
            if payload_size > max_block_size(header.page_size):
                raise CorruptLTXError(
                    path, offset + 6, f"page {pgno}: compressed size {payload_size} impossible for {header.page_size}-byte pages"
                )
            size = _SIZED_HEADER_SIZE + payload_size
            reader.require(size, f"page {pgno}")
            pos = reader.pos
            try:
                page = decompress_block(reader.view[pos + _SIZED_HEADER_SIZE:pos + size], header.page_size)
            except PayloadError as exc:
                raise CorruptLTXError(path, offset + 10, f"page {pgno}: {exc.reason}") from None
            frame_header = reader.view[pos:pos + _SIZED_HEADER_SIZE]
            if log is not None:
                log.records += frame_header
        else:
            page, size = self._legacy_frame(offset, pgno)
            pos = reader.pos
            frame_header = reader.view[pos:pos + _PAGE_HEADER_SIZE]
            if log is not None:
                log.add_legacy(pgno, size)
        return page, pos + size, go_iso(page, go_iso(frame_header, crc))

    def _legacy_frame(self, offset: int, pgno: int) -> tuple[bytes, int]:
        """Decode a frame whose payload is an LZ4 frame; return (page, frame size)."""
        reader, page_size = self._reader, self.header.page_size
        window_size = max_legacy_frame_size(page_size)
        have = reader.fill(_PAGE_HEADER_SIZE + window_size) - _PAGE_HEADER_SIZE
        start = reader.pos + _PAGE_HEADER_SIZE
        window = reader.view[start:start + min(have, window_size)]
        try:
            length = legacy_frame_length(window, page_size)
            page = decompress_legacy_frame(window[:length], page_size)
        except PayloadError as exc:
            raise CorruptLTXError(self.path, offset + 6 + exc.offset, f"page {pgno}: {exc.reason}") from None
        return page, _PAGE_HEADER_SIZE + length

    def _finish(self, crc: int, count: int, end_marker: int, log: FrameLog | None) -> None:
        """Stream index, index length and trailer to the end of the file; verify them all.

        The index ends where the last 24 bytes (length, trailer) begin, so the tail
        is read to EOF holding back 24 bytes; the index is hashed, never parsed.
        """
        path, reader = self.path, self._reader
        index_start = reader.offset
        held = b""
        index_length = varints = index_crc = 0
        last_byte = -1
        for piece in reader.rest():
            joined = held + piece
            body, held = joined[:-_TAIL], joined[-_TAIL:]
            if body:
                crc = go_iso(body, crc)
                index_crc = go_iso(body, index_crc)
                index_length += len(body)
                varints += len(body) - len(body.translate(None, _VARINT_ENDS))
                last_byte = body[-1]
        file_size = reader.end
        if len(held) < _TAIL or index_length == 0:
            raise CorruptLTXError(
                path, file_size, f"file truncated: {file_size - index_start} bytes after the pages, too few for index and trailer"
            )
        (stored_length,) = U64.unpack_from(held)
        if stored_length != index_length:
            raise CorruptLTXError(
                path,
                file_size - _TAIL,
                f"page index length field says {stored_length} bytes, but {index_length} bytes lie between "
                "the end marker and the trailer (truncated, or extra data at the end?)",
            )
        if log is not None and log.finish() != (index_crc, index_length):
            raise explain_mismatch(
                self._stream, path, index_start, index_length, self.header.commit, end_marker, count
            )
        if last_byte != 0 or varints != 3 * count + 1:
            raise CorruptLTXError(
                path, index_start, f"page index holds {varints} varints (terminator byte {last_byte}), expected {3 * count + 1}"
            )
        crc = go_iso(held[:INDEX_TAIL_SIZE + 8], crc)
        trailer = Trailer.unpack(held[INDEX_TAIL_SIZE:])
        trailer_offset = file_size - TRAILER_SIZE
        if trailer.file_checksum != CHECKSUM_FLAG | crc:
            raise CorruptLTXError(
                path,
                trailer_offset + 8,
                f"file checksum mismatch: stored {trailer.file_checksum:016x}, computed {CHECKSUM_FLAG | crc:016x}",
            )
        problem = trailer_problem(self.header, trailer)
        if problem is not None:
            raise CorruptLTXError(path, trailer_offset + problem[0], problem[1])
        if self.database_checksum is not None and trailer.post_apply_checksum != self.database_checksum:
            raise CorruptLTXError(
                path,
                trailer_offset,
                f"post-apply checksum {trailer.post_apply_checksum:016x} differs from the snapshot's pages "
                f"({self.database_checksum:016x})",
            )
        self.trailer = trailer
