"""LTX files built byte by byte, as ltx's Go code lays them out, and a bitwise CRC-64.

The tests of the codec check it against these, so they are written from the format
description, not with the codec (except ``encode``, the codec's own round trip).
"""

from __future__ import annotations

import io
import struct

import lz4.frame

from ltxpool.ltx import CHECKSUM_FLAG, Encoder, Header, Trailer, crc64


def reference_crc64(data: bytes, crc: int = 0) -> int:
    """CRC-64/GO-ISO bit by bit: reflected poly 0xD800000000000000, init/xorout all ones."""
    crc ^= 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0xD800000000000000 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


END_MARKER = bytes(6)


def uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def raw_header(
    *, flags: int = 0, page_size: int, commit: int, min_txid: int, max_txid: int, timestamp: int = 0,
    pre_apply: int = 0, wal_offset: int = 0, wal_size: int = 0, salt1: int = 0, salt2: int = 0, node_id: int = 0,
) -> bytes:  # fmt: skip
    return struct.pack(
        ">4sIIIQQqQqqIIQ20x", b"LTX1", flags, page_size, commit, min_txid, max_txid, timestamp, pre_apply,
        wal_offset, wal_size, salt1, salt2, node_id,
    )  # fmt: skip


def block_frame(pgno: int, payload: bytes) -> bytes:
    """A current (ltx v0.5.2) frame: page header with the size flag, u32 size, LZ4 block."""
    return struct.pack(">IHI", pgno, 1, len(payload)) + payload


def legacy_frame(pgno: int, page: bytes) -> bytes:
    """A legacy (ltx v0.5.0/v0.5.1) frame: page header without flags, then an LZ4 frame.

    The frame options are those of ltx v0.5.1's encoder on pierrec/lz4: 64 KiB blocks,
    content checksum on, no content size.
    """
    payload = lz4.frame.compress(
        page, block_size=lz4.frame.BLOCKSIZE_MAX64KB, content_checksum=True, store_size=False
    )
    return struct.pack(">IH", pgno, 0) + payload


def assemble(
    header: bytes,
    frames: list[tuple[int, bytes, bytes]],
    *,
    post_apply: int = 0,
    index: bytes | None = None,
    index_length: int | None = None,
    crc=crc64,  # noqa: ANN001 - the bitwise reference for known answers
) -> bytes:
    """An LTX file from (pgno, frame as stored, page) parts, checksummed as ltx does.

    The file checksum covers header, every page header (and size field) as stored,
    every page uncompressed, end marker, index, index length, post-apply checksum.
    ``index``/``index_length`` replace the correct ones, to build consistent liars.
    """
    out = bytearray(header)
    hashed = bytearray(header)
    entries = bytearray()
    for pgno, stored, page in frames:
        entries += uvarint(pgno) + uvarint(len(out)) + uvarint(len(stored))
        out += stored
        hashed += stored[: 10 if stored[4:6] == b"\x00\x01" else 6] + page
    out += END_MARKER
    hashed += END_MARKER
    body = bytes(entries) + b"\x00" if index is None else index
    tail = body + struct.pack(">QQ", len(body) if index_length is None else index_length, post_apply)
    out += tail
    hashed += tail
    return bytes(out) + struct.pack(">Q", CHECKSUM_FLAG | crc(bytes(hashed)))


def encode(header: Header, pages: list[tuple[int, bytes]], post_apply: int = 0) -> tuple[bytes, Trailer]:
    sink = io.BytesIO()
    encoder = Encoder(sink, header)
    for pgno, data in pages:
        encoder.write_page(pgno, data)
    trailer = encoder.finish(post_apply)
    return sink.getvalue(), trailer
