"""Streaming LTX writer: header, page frames, end marker, page index, trailer.

Writes the format of superfly/ltx v0.5.2 (``encoder.go``), which Litestream 0.5.16
and 0.5.17 read and write: every page is a 6-byte page header (pgno u32, flags u16
= ``PAGE_FLAG_SIZE``), a u32 compressed size and one raw LZ4 block. The same rules
as ltx's encoder are enforced (ascending page numbers, no lock page, no page above
the commit, page length = page size, a snapshot's pages contiguous from 1) plus one
ltx leaves out: at ``finish`` a snapshot must reach its commit, since a snapshot
missing its last pages would restore a silently truncated database.

Memory is bounded by the page index, never the pages: frames are appended to one
buffer that goes to the sink in large writes (the sink may be an unbuffered raw
file, where each write is a system call), and the index is kept encoded (a few
bytes a page), made in batches from the frame headers at each flush -- cheaper
than encoding three varints per page as it is written. The file checksum is computed on the fly over exactly what
ltx hashes (see ``decoder.py``), so nothing is re-read.
"""

from __future__ import annotations

from typing import Protocol

from fastcrc.crc64 import go_iso
from lz4.block import compress as _lz4_compress

from ltxpool.ltx.checksum import CHECKSUM_FLAG, combine, lock_page, page_checksum
from ltxpool.ltx.header import (
    HEADER_SIZE,
    Header,
    Trailer,
    header_problem,
    trailer_problem,
)
from ltxpool.ltx.index import encode_entries
from ltxpool.ltx.layout import SIZED_PAGE_HEADER, U64
from ltxpool.ltx.payload import PAGE_FLAG_SIZE

__all__ = ["Encoder", "Sink", "DEFAULT_BUFFER_SIZE", "END_MARKER"]

DEFAULT_BUFFER_SIZE = 512 * 1024
# A page header with page number 0 and no flags ends the page frames.
END_MARKER = bytes(6)



class Sink(Protocol):
    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


class Encoder:
    """Encode one LTX file into ``sink``: ``write_page`` in ascending order, then ``finish``.

    Misuse (a page out of order, the lock page, a wrong length, an incomplete
    snapshot, a post-apply checksum that breaks the header's rules) raises
    ValueError before anything of that page reaches the sink.
    """

    def __init__(self, sink: Sink, header: Header, *, buffer_size: int = DEFAULT_BUFFER_SIZE) -> None:
        problem = header_problem(header)
        if problem is not None:
            raise ValueError(f"invalid LTX header: {problem[1]}")
        self.header = header
        self._sink = sink
        self._buffer_size = buffer_size
        encoded = header.encode()
        self._buf = bytearray(encoded)
        self._crc = go_iso(encoded)
        self._offset = HEADER_SIZE
        # The index, encoded in batches from the frames' headers (records) as they pile up.
        self._index = bytearray()
        self._records = bytearray()
        self._indexed_to = HEADER_SIZE
        self._prev = 0
        self._pages = 0
        self._lock = lock_page(header.page_size)
        # Only a snapshot knows its whole database, so only there can the post-apply
        # checksum be computed (and checked) here.
        self._database = CHECKSUM_FLAG if header.is_snapshot and not header.no_checksum else None
        self._trailer: Trailer | None = None

    @property
    def pages_written(self) -> int:
        return self._pages

    @property
    def size(self) -> int:
        """Bytes produced so far (buffered or written); the file's size once finished."""
        return self._offset

    def write_page(
        self, pgno: int, data: bytes | bytearray | memoryview, block: bytes | None = None
    ) -> None:
        """Append page ``pgno``; ``block``, if given, is its LZ4 block as another file
        stored it (``Frame.block``, checked by the decoder), copied instead of compressing
        ``data`` again."""
        header = self.header
        if self._trailer is not None:
            raise ValueError("encoder already finished")
        if len(data) != header.page_size:
            raise ValueError(f"page {pgno} is {len(data)} bytes, page size is {header.page_size}")
        if not 1 <= pgno <= header.commit:
            raise ValueError(f"page {pgno} out of range 1..{header.commit} (commit)")
        if pgno == self._lock:
            raise ValueError(f"page {pgno} is the lock page for page size {header.page_size}; it is never stored")
        if pgno <= self._prev:
            raise ValueError(f"page {pgno} after page {self._prev}: page numbers must ascend")
        if header.min_txid == 1:
            expected = self._next_snapshot_page()
            if pgno != expected:
                raise ValueError(f"snapshot page {pgno} where page {expected} is due: snapshots hold every page")

        payload = _lz4_compress(data, store_size=False) if block is None else block
        frame_header = SIZED_PAGE_HEADER.pack(pgno, PAGE_FLAG_SIZE, len(payload))
        buf = self._buf
        buf += frame_header
        buf += payload
        # ltx hashes the page header as stored but the page *uncompressed*.
        self._crc = go_iso(data, go_iso(frame_header, self._crc))
        self._records += frame_header
        self._offset += len(frame_header) + len(payload)
        self._prev = pgno
        self._pages += 1
        if self._database is not None:
            self._database = combine(self._database, page_checksum(pgno, data))
        if len(buf) >= self._buffer_size:
            self._flush()

    def finish(self, post_apply_checksum: int = 0) -> Trailer:
        """Write end marker, page index and trailer; flush; return the trailer.

        For a snapshot with checksums, 0 means "compute it": the post-apply checksum
        is then the XOR of the pages written. Any other value must equal it.
        """
        if self._trailer is not None:
            raise ValueError("encoder already finished")
        header = self.header
        if header.is_snapshot:
            last = header.commit - 1 if header.commit == self._lock else header.commit
            if self._prev != last:
                raise ValueError(f"snapshot incomplete: pages 1..{self._prev} written, the database has {last}")
        if self._database is not None:
            if post_apply_checksum == 0:
                post_apply_checksum = self._database
            elif post_apply_checksum != self._database:
                raise ValueError(
                    f"post-apply checksum {post_apply_checksum:016x} differs from the snapshot's {self._database:016x}"
                )
        problem = trailer_problem(header, Trailer(post_apply_checksum, CHECKSUM_FLAG))
        if problem is not None:
            raise ValueError(f"invalid LTX trailer: {problem[1]}")

        self._encode_index()
        index = self._index
        index.append(0)
        tail = bytearray(END_MARKER)
        tail += index
        tail += U64.pack(len(index))
        tail += U64.pack(post_apply_checksum)
        file_checksum = CHECKSUM_FLAG | go_iso(tail, self._crc)
        tail += U64.pack(file_checksum)
        self._buf += tail
        self._offset += len(tail)
        self._index = bytearray()
        self._flush()
        self._trailer = Trailer(post_apply_checksum, file_checksum)
        return self._trailer

    def _next_snapshot_page(self) -> int:
        expected = self._prev + 1
        return expected + 1 if expected == self._lock else expected

    def _encode_index(self) -> None:
        entries, self._indexed_to = encode_entries(self._records, self._indexed_to)
        self._index += entries
        del self._records[:]

    def _flush(self) -> None:
        self._encode_index()
        # Hand the sink a buffer nobody mutates afterwards (it may keep a reference),
        # and finish partial writes of raw streams. A sink returning None is taken
        # to have consumed everything, as file-like duck types do.
        chunk, self._buf = self._buf, bytearray()
        view = memoryview(chunk)
        while view:
            written = self._sink.write(view)
            if written is None or written >= len(view):
                break
            if written <= 0:
                raise OSError(f"sink accepted no bytes of {len(view)}")
            view = view[written:]
