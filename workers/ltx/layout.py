"""The fixed byte layouts of an LTX file's small pieces, in one place (big-endian, as ltx writes them).

The header and trailer, which have rules as well as a layout, live in ``header``.
"""

from __future__ import annotations

import struct

__all__ = ["PGNO", "PAGE_HEADER", "SIZED_PAGE_HEADER", "U32", "U64"]

#: A page number as hashed in front of the page bytes by a page checksum.
PGNO = struct.Struct(">I")
#: A page header without a size: pgno u32, flags u16 (legacy frames; all zero: the end marker).
PAGE_HEADER = struct.Struct(">IH")
#: A page header with ``PAGE_FLAG_SIZE``: pgno u32, flags u16, payload size u32 (ltx v0.5.2).
SIZED_PAGE_HEADER = struct.Struct(">IHI")
U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")
