"""Chunked, offset-aware reading of one LTX stream, for the decoder.

The decoder must stream files of any size in bounded memory, yet parse them a few
bytes at a time. It reads the stream with ``readinto`` into one reused 1 MiB
buffer and parses from there: one copy per byte (the read itself), one system
call per MiB, and no allocation per chunk. The buffer holds one chunk plus the
unfinished frame moved to its front (no frame exceeds 132 KiB, the bound on one
legacy LZ4 frame of a 64 KiB page). Every position is also known as an
absolute file offset, so each error names the byte where the file went wrong. A
short read means a truncated file and becomes CorruptLTXError; an OSError becomes
an LtxpoolError for step "read".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import BinaryIO

from ltxpool.ltx.errors import CorruptLTXError, LtxReadError

__all__ = ["ChunkReader", "CHUNK_SIZE"]

CHUNK_SIZE = 1 << 20


def _size_hint(stream: BinaryIO, size: int | None) -> int:
    """The stream's size where it is a file or the caller knows it (at least 4 KiB), else the full chunk size."""
    if size is not None:
        return max(4096, size + 16)
    try:
        return max(4096, os.fstat(stream.fileno()).st_size + 16)
    except (AttributeError, OSError, ValueError):
        return CHUNK_SIZE


class ChunkReader:
    """A window ``buf[pos:limit]`` onto the stream at file offset ``base + pos``.

    Hot loops parse ``buf``/``view`` directly between ``pos`` and ``limit`` and
    advance ``pos`` themselves; ``fill`` slides the window when they need more.
    Views into ``buf`` are valid only until the next ``fill``.
    """

    def __init__(self, stream: BinaryIO, path: str, size: int | None = None) -> None:
        self.stream = stream
        self.path = path
        # A merge holds one reader per input: a thousand small level-0 files must not
        # each cost a 1 MiB buffer (that was 1 GiB and 2 s of zeroing).
        self.buf = bytearray(min(CHUNK_SIZE, _size_hint(stream, size)))
        self.view = memoryview(self.buf)
        self.pos = 0
        self.limit = 0
        self.base = 0
        self.eof = False

    @property
    def offset(self) -> int:
        return self.base + self.pos

    @property
    def end(self) -> int:
        """File offset just past the buffered data (the file's size once ``eof``)."""
        return self.base + self.limit

    def fill(self, n: int) -> int:
        """Make ``n`` bytes available from ``pos`` if the stream has them; return how many are."""
        have = self.limit - self.pos
        if have >= n or self.eof:
            return have
        if n > len(self.buf):
            if n > CHUNK_SIZE:
                raise ValueError(f"cannot buffer {n} bytes at once (chunk size {CHUNK_SIZE})")
            # A new buffer, not a resize: callers may still hold views of the old one.
            grown = bytearray(min(CHUNK_SIZE, max(n, 2 * len(self.buf))))
            grown[: self.limit] = self.view[: self.limit]
            self.buf, self.view = grown, memoryview(grown)
        # bytes(): source and target may overlap.
        self.buf[:have] = bytes(self.view[self.pos:self.limit])
        self.base += self.pos
        self.pos, self.limit = 0, have
        while self.limit < n:
            got = self._read_into(self.view[self.limit:])
            if not got:
                self.eof = True
                break
            self.limit += got
        return self.limit

    def require(self, n: int, what: str) -> None:
        """Like ``fill`` but a short file is corrupt: it ends inside ``what``."""
        if self.fill(n) < n:
            raise CorruptLTXError(self.path, self.end, f"file truncated in {what} (needs {n} bytes at byte {self.offset})")

    def take(self, n: int, what: str) -> memoryview:
        self.require(n, what)
        start = self.pos
        self.pos = start + n
        return self.view[start:self.pos]

    def rest(self) -> Iterator[bytes]:
        """Everything from ``pos`` to the end of the stream, chunk by chunk."""
        while True:
            if self.pos < self.limit:
                yield bytes(self.view[self.pos:self.limit])
            self.base += self.limit
            self.pos = self.limit = 0
            if self.eof:
                return
            got = self._read_into(self.view)
            if not got:
                self.eof = True
                return
            self.limit = got

    def _read_into(self, target: memoryview) -> int:
        try:
            readinto = getattr(self.stream, "readinto", None)
            if readinto is not None:
                return readinto(target) or 0
            chunk = self.stream.read(len(target)) or b""
        except OSError as exc:
            raise LtxReadError.from_oserror(self.path, "read", exc) from exc
        target[: len(chunk)] = chunk
        return len(chunk)
