"""How large an LTX file can be, from its header alone, and whether it has holes.

A replica's files are planted by whoever owns the replica, and the decoder reads a
file to its end. A valid header followed by a multi-GiB hole (``truncate -s 4G``)
cost no disk, yet held a verification for as long as reading 4 GiB of zeros takes.
So before reading past the header the decoder checks two things that cost one
``fstat`` and one ``lseek``:

* the size is at most what the header allows: ``commit`` pages at most (a file
  holds each page number 1..commit once), each frame at most a 10-byte page header
  plus LZ4's compress bound of one page (or the bound on a legacy LZ4 frame,
  whichever is larger), the end marker, an index entry per page of at most three
  full-width uvarints, the terminator, the index length and the trailer;
* the file has no hole. Neither ltxpool nor Litestream writes a sparse LTX file
  (both write every byte in order), so a hole was made on purpose. A header may
  claim ``commit`` 2**32-1 pages of 64 KiB, so the size bound alone lets a planted
  file be huge; the hole check makes every byte the decoder reads one that the
  planter paid for in disk. ``SEEK_HOLE`` is asked rather than ``st_blocks``:
  ``st_blocks`` is smaller than the size for files that are not sparse (ext4 inline
  data, ZFS before its transaction group syncs or with compression), while a
  filesystem without hole support answers "no hole" -- it errs towards reading.
"""

from __future__ import annotations

import errno
import os

from ltxpool.ltx.header import HEADER_SIZE, TRAILER_SIZE, Header
from ltxpool.ltx.index import INDEX_TAIL_SIZE
from ltxpool.ltx.layout import PAGE_HEADER, SIZED_PAGE_HEADER
from ltxpool.ltx.payload import max_block_size, max_legacy_frame_size

__all__ = ["max_file_size", "size_problem", "first_hole"]

# The widest uvarint (a u64), and the end marker / index terminator sizes.
_MAX_UVARINT = 10
_END_MARKER = PAGE_HEADER.size
_INDEX_TERMINATOR = 1


def max_file_size(header: Header) -> int:
    """The largest file ``header`` can describe, in bytes."""
    page_size, pages = header.page_size, header.commit
    frame = max(SIZED_PAGE_HEADER.size + max_block_size(page_size), PAGE_HEADER.size + max_legacy_frame_size(page_size))
    index = pages * 3 * _MAX_UVARINT + _INDEX_TERMINATOR
    return HEADER_SIZE + pages * frame + _END_MARKER + index + INDEX_TAIL_SIZE + TRAILER_SIZE


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit}"
    return f"{size} bytes"


def size_problem(header: Header, size: int) -> tuple[int, str] | None:
    """(offset, reason) when a file of ``size`` bytes is larger than ``header`` allows, else None."""
    limit = max_file_size(header)
    if size <= limit:
        return None
    return limit, (
        f"size {_human(size)} ({size} bytes) exceeds what its header allows "
        f"({limit} bytes for {header.commit} pages of {header.page_size} bytes)"
    )


def first_hole(fd: int, size: int) -> int | None:
    """The offset of the first hole of the regular file ``fd`` (of ``size`` bytes), or None.

    The file offset is put back: the caller may be reading the file.
    """
    if size == 0:
        return None
    position = os.lseek(fd, 0, os.SEEK_CUR)
    try:
        hole = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError as exc:
        # No hole support (EINVAL), or the file shrank under us (ENXIO): nothing to refuse here.
        if exc.errno in (errno.EINVAL, errno.ENXIO, errno.EOPNOTSUPP):
            return None
        raise
    finally:
        os.lseek(fd, position, os.SEEK_SET)
    return hole if hole < size else None
