"""Page payloads: one page compressed as an LZ4 *block* (current) or an LZ4 *frame* (legacy).

superfly/ltx v0.5.2 (Litestream 0.5.16+) writes each page as a 6-byte page header
(pgno u32, flags u16) with flag ``PAGE_FLAG_SIZE`` set, a u32 compressed size, and a
raw LZ4 block. ltx v0.5.0/v0.5.1 (Litestream 0.5.0-0.5.15) wrote the same page
header with flags 0 followed by a self-delimiting LZ4 *frame* and no size field;
v0.5.2's decoder still reads those, telling them apart *per frame* by that flag
(``decoder.go``: ``hdr.Flags&PageHeaderFlagSize``). Replicas written by older
Litestream are common, and reading them costs little: a frame's length follows
from its block headers, so this module walks them (bounded by what one page can
need) and lets python-lz4 decompress exactly that span.

Older still, ltx format version 2 (ltx v0.4.x) used a 4-byte page header; read as
version 3 its frame magic lands in the flags field as ``LEGACY_V2_FLAGS``, which
lets the decoder refuse it by name.

LZ4 output differs between implementations (pierrec/lz4 in Go, liblz4 here), so a
page's compressed bytes are not canonical; only the decompressed page is checked.
"""

from __future__ import annotations

import lz4.block
import lz4.frame

from ltxpool.ltx.errors import PayloadError

__all__ = [
    "PAGE_FLAG_SIZE",
    "LEGACY_V2_FLAGS",
    "PayloadError",
    "max_block_size",
    "max_legacy_frame_size",
    "decompress_block",
    "legacy_frame_length",
    "decompress_legacy_frame",
]

# Page header flag: a u32 compressed size follows and the payload is an LZ4 block.
PAGE_FLAG_SIZE = 0x0001
# The first two bytes of the LZ4 frame magic (04 22 4D 18), seen as page flags when a
# version-2 file (4-byte page headers) is read as version 3.
LEGACY_V2_FLAGS = 0x0422

_FRAME_MAGIC = 0x184D2204
_FRAME_UNCOMPRESSED_BIT = 0x80000000


def max_block_size(page_size: int) -> int:
    """LZ4_COMPRESSBOUND: no LZ4 block of one page is larger, so a larger size field is corrupt."""
    return page_size + page_size // 255 + 16


def max_legacy_frame_size(page_size: int) -> int:
    """A generous upper bound on an LZ4 frame holding one page (descriptor, blocks, checksums)."""
    return 2 * max_block_size(page_size) + 64


def decompress_block(payload: bytes | memoryview, page_size: int) -> bytes:
    """Decompress one LZ4 block that must hold exactly one page."""
    try:
        page: bytes = lz4.block.decompress(payload, uncompressed_size=page_size)
    except lz4.block.LZ4BlockError:
        raise PayloadError(0, "LZ4 block does not decompress (corrupt data or larger than the page size)") from None
    if len(page) != page_size:
        raise PayloadError(0, f"LZ4 block decompresses to {len(page)} bytes, expected {page_size}")
    return page


def legacy_frame_length(data: bytes | memoryview, page_size: int) -> int:
    """Length of the LZ4 frame at the start of ``data``, found by walking its block headers.

    ``data`` holds everything up to ``max_legacy_frame_size`` bytes (or to the end of
    the file); a frame that does not end within it is corrupt.
    """
    end = len(data)
    if end < 7:
        raise PayloadError(end, "legacy LZ4 frame truncated in its descriptor")
    if int.from_bytes(data[0:4], "little") != _FRAME_MAGIC:
        raise PayloadError(0, "legacy page payload does not start with the LZ4 frame magic")
    flg, bd = data[4], data[5]
    if flg >> 6 != 1 or flg & 0x02 or bd & 0x8F:
        raise PayloadError(4, f"unsupported LZ4 frame descriptor (FLG 0x{flg:02x}, BD 0x{bd:02x})")
    if flg & 0x01:
        raise PayloadError(4, "LZ4 frame needs a dictionary, which LTX never uses")
    block_id = (bd >> 4) & 0x07
    if block_id < 4:
        raise PayloadError(5, f"invalid LZ4 frame block size id {block_id}")
    block_limit = min(1 << (8 + 2 * block_id), max_block_size(page_size))
    pos = 6
    if flg & 0x08:
        if end < pos + 8:
            raise PayloadError(end, "legacy LZ4 frame truncated in its content size")
        content_size = int.from_bytes(data[pos:pos + 8], "little")
        if content_size != page_size:
            raise PayloadError(pos, f"LZ4 frame content size {content_size}, expected {page_size}")
        pos += 8
    pos += 1  # header checksum byte; liblz4 verifies it
    block_checksum = 4 if flg & 0x10 else 0
    while True:
        if end < pos + 4:
            raise PayloadError(min(pos, end), "legacy LZ4 frame ends before its end mark")
        word = int.from_bytes(data[pos:pos + 4], "little")
        if word == 0:
            pos += 4
            break
        size = word & ~_FRAME_UNCOMPRESSED_BIT
        if size > block_limit:
            raise PayloadError(pos, f"LZ4 frame block of {size} bytes is larger than one page can need")
        pos += 4 + size + block_checksum
    if flg & 0x04:
        pos += 4
    if pos > end:
        raise PayloadError(end, "legacy LZ4 frame runs past the end of the data")
    return pos


def decompress_legacy_frame(frame: bytes | memoryview, page_size: int) -> bytes:
    """Decompress one complete LZ4 frame (as measured by ``legacy_frame_length``) to one page."""
    decompressor = lz4.frame.LZ4FrameDecompressor()
    try:
        # max_length caps what a corrupt frame can make us allocate.
        page: bytes = decompressor.decompress(bytes(frame), max_length=page_size + 1)
    except RuntimeError as exc:
        raise PayloadError(0, f"LZ4 frame does not decompress ({exc})") from None
    if not decompressor.eof or decompressor.unused_data:
        raise PayloadError(0, "LZ4 frame is incomplete or has trailing bytes")
    if len(page) != page_size:
        raise PayloadError(0, f"LZ4 frame decompresses to {len(page)} bytes, expected {page_size}")
    return page
