"""Encoder and Decoder: round trips, byte-exact known answers, legacy frames, misuse.

Known-answer files are assembled here by hand from the layout of superfly/ltx v0.5.2
(ltx.go, encoder.go) with struct, a hand-made LZ4 block and the bitwise CRC of
test_ltx_checksum -- nothing of the codec is used to build them.
"""

from __future__ import annotations

import io
import os
import random
import struct
import tracemalloc
from collections import deque
from pathlib import Path

import lz4.block
import lz4.frame
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltxpool.ltx import (
    CHECKSUM_FLAG,
    HEADER_FLAG_NO_CHECKSUM,
    Decoder,
    Encoder,
    Header,
    Trailer,
    database_checksum,
    lock_page,
    open_ltx,
    verify_file,
)
from ltxpool.ltx.errors import CorruptLTXError
from tests.support.ltx_bytes import assemble, block_frame, encode, legacy_frame, raw_header, reference_crc64, uvarint

# --- building files by hand --------------------------------------------------------------

def lz4_run_block(byte: int, n: int) -> bytes:
    """The LZ4 block liblz4 makes for ``n`` (>= 13) copies of one byte, from the block spec.

    One sequence of 1 literal and a match at offset 1 reaching 5 bytes before the end
    (LZ4 ends every block with at least 5 literals), then those 5 literals.
    """
    match_extra = n - 1 - 5 - 4 - 15
    lengths = b"\xff" * (match_extra // 255) + bytes([match_extra % 255])
    return bytes([0x1F, byte]) + b"\x01\x00" + lengths + bytes([0x50]) + bytes([byte]) * 5


def decode(blob: bytes, *, verify_index: bool = False) -> tuple[Decoder, list[tuple[int, bytes]]]:
    decoder = Decoder(io.BytesIO(blob), verify_index=verify_index)
    return decoder, list(decoder.pages())


# --- known answers ---------------------------------------------------------------------------


def test_snapshot_is_byte_exact_with_a_hand_built_file() -> None:
    zeros, twos = bytes(512), b"2" * 512
    block0, block2 = lz4_run_block(0, 512), lz4_run_block(ord("2"), 512)
    assert block0.hex() == "1f000100ffe8500000000000"  # liblz4's bytes, as observed
    post = CHECKSUM_FLAG | (
        (CHECKSUM_FLAG | reference_crc64(struct.pack(">I", 1) + zeros))
        ^ (CHECKSUM_FLAG | reference_crc64(struct.pack(">I", 2) + twos))
    )
    header = raw_header(page_size=512, commit=2, min_txid=1, max_txid=1, timestamp=1000)
    frames = [(1, block_frame(1, block0), zeros), (2, block_frame(2, block2), twos)]
    expected = assemble(header, frames, post_apply=post, crc=reference_crc64)

    blob, trailer = encode(
        Header(flags=0, page_size=512, commit=2, min_txid=1, max_txid=1, timestamp=1000), [(1, zeros), (2, twos)]
    )
    assert blob == expected
    assert trailer == Trailer(post, int.from_bytes(expected[-8:], "big"))

    # The index by hand: frames at 100 and 100 + 22, each 10 + 12 bytes.
    index = uvarint(1) + uvarint(100) + uvarint(22) + uvarint(2) + uvarint(122) + uvarint(22) + b"\x00"
    assert expected[144 + 6 : 144 + 6 + len(index)] == index
    assert struct.unpack(">Q", expected[150 + len(index) : 158 + len(index)]) == (len(index),)

    decoder = Decoder(io.BytesIO(expected), verify_index=True)
    assert decoder.header == Header(0, 512, 2, 1, 1, 1000, 0, 0, 0, 0, 0, 0)
    assert decoder.header.is_snapshot
    frames_read = list(decoder.frames())
    assert [(f.pgno, f.offset, f.size, f.payload_size, f.flags) for f in frames_read] == [
        (1, 100, 22, 12, 1),
        (2, 122, 22, 12, 1),
    ]
    assert [f.data for f in frames_read] == [zeros, twos]
    assert decoder.trailer == trailer
    assert decoder.database_checksum == post
    assert decoder.read_page(2) == twos


def test_incremental_file_is_byte_exact_with_every_header_field_in_place() -> None:
    page = b"7" * 4096
    fields = dict(
        flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=3, min_txid=5, max_txid=6,
        timestamp=1_700_000_000_123, wal_offset=32, wal_size=4120, salt1=0xDEADBEEF, salt2=0x01020304,
        node_id=0x0102030405060708,
    )  # fmt: skip
    raw = raw_header(**fields)
    expected = assemble(raw, [(2, block_frame(2, lz4_run_block(ord("7"), 4096)), page)], crc=reference_crc64)
    header = Header(
        flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=3, min_txid=5, max_txid=6,
        timestamp=1_700_000_000_123, wal_offset=32, wal_size=4120, wal_salt1=0xDEADBEEF,
        wal_salt2=0x01020304, node_id=0x0102030405060708,
    )  # fmt: skip
    blob, trailer = encode(header, [(2, page)])
    assert blob == expected
    assert blob[:100] == raw and header.encode() == raw
    assert trailer.post_apply_checksum == 0

    decoder, pages = decode(expected, verify_index=True)
    assert decoder.header == header and not decoder.header.is_snapshot
    assert pages == [(2, page)]
    assert decoder.trailer == trailer
    assert decoder.read_page(1) is None and decoder.read_page(2) == page


def test_decoder_reads_ltx_decoder_test_spec_with_its_post_apply_checksum() -> None:
    # ltx TestDecoder: a 1 KiB snapshot of "2" and "3" pages, post-apply 0xe1899b6d587aaaaa.
    pages = [(1, b"2" * 1024), (2, b"3" * 1024)]
    header = raw_header(page_size=1024, commit=2, min_txid=1, max_txid=1, timestamp=1000)
    frames = [(pgno, block_frame(pgno, lz4_run_block(page[0], 1024)), page) for pgno, page in pages]
    decoder, decoded = decode(assemble(header, frames, post_apply=0xE1899B6D587AAAAA), verify_index=True)
    assert decoded == pages
    assert decoder.trailer is not None and decoder.trailer.post_apply_checksum == 0xE1899B6D587AAAAA


# --- round trips -----------------------------------------------------------------------------

PAGE_SIZES = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]


@st.composite
def ltx_files(draw: st.DrawFn) -> tuple[Header, list[tuple[int, bytes]], int]:
    page_size = draw(st.sampled_from(PAGE_SIZES))
    snapshot = draw(st.booleans())
    no_checksum = draw(st.booleans())
    commit = draw(st.integers(min_value=0, max_value=24 if page_size <= 4096 else 6))
    if snapshot:
        pgnos = list(range(1, commit + 1))
    else:
        pgnos = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(commit, 1)), max_size=commit)))
        pgnos = [p for p in pgnos if p <= commit]
    seed = draw(st.integers(min_value=0, max_value=2**32))
    rng = random.Random(seed)
    kinds = [bytes(page_size), rng.randbytes(page_size), bytes([rng.randrange(256)]) * page_size]
    pages = []
    for pgno in pgnos:
        kind = rng.randrange(4)
        data = kinds[kind] if kind < 3 else (b"row %d;" % pgno) * (page_size // 8) + bytes(page_size % 8)
        pages.append((pgno, data[:page_size].ljust(page_size, b"\x00")))
    min_txid = 1 if snapshot else draw(st.integers(min_value=2, max_value=2**64 - 1))
    max_txid = draw(st.integers(min_value=min_txid, max_value=2**64 - 1))
    wal_offset = draw(st.integers(min_value=0, max_value=2**63 - 1))
    wal_size = draw(st.integers(min_value=0, max_value=2**63 - 1)) if wal_offset else 0
    salts = draw(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))) if wal_offset else (0, 0)
    tracked = not no_checksum
    pre = CHECKSUM_FLAG | draw(st.integers(0, 2**63 - 1)) if tracked and not snapshot else 0
    if not tracked:
        post = 0
    elif commit == 0:
        post = CHECKSUM_FLAG
    elif snapshot:
        post = draw(st.sampled_from([0, database_checksum(pages, page_size)]))  # 0: let the encoder compute it
    else:
        post = CHECKSUM_FLAG | draw(st.integers(0, 2**63 - 1))
    header = Header(
        flags=HEADER_FLAG_NO_CHECKSUM if no_checksum else 0, page_size=page_size, commit=commit,
        min_txid=min_txid, max_txid=max_txid, timestamp=draw(st.integers(-(2**63), 2**63 - 1)),
        pre_apply_checksum=pre, wal_offset=wal_offset, wal_size=wal_size, wal_salt1=salts[0], wal_salt2=salts[1],
        node_id=draw(st.integers(0, 2**64 - 1)),
    )  # fmt: skip
    return header, pages, post


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ltx_files())
def test_decode_of_encode_is_identity(tmp_path: Path, case: tuple[Header, list[tuple[int, bytes]], int]) -> None:
    header, pages, post = case
    blob, trailer = encode(header, pages, post)
    if header.is_snapshot and not header.no_checksum:
        assert trailer.post_apply_checksum == database_checksum(pages, header.page_size)
    else:
        assert trailer.post_apply_checksum == post

    for verify_index in (False, True):
        decoder, decoded = decode(blob, verify_index=verify_index)
        assert decoder.header == header
        assert decoded == pages
        assert decoder.trailer == trailer

    decoder = Decoder(io.BytesIO(blob))
    for pgno, data in pages:
        assert decoder.read_page(pgno) == data
    absent = set(range(1, header.commit + 2)) - {pgno for pgno, _ in pages}
    assert all(decoder.read_page(pgno) is None for pgno in absent)

    path = tmp_path / f"{header.min_txid:016x}-{header.max_txid:016x}.ltx"
    path.write_bytes(blob)
    assert verify_file(path) == header


class ShortReads(io.RawIOBase):
    """A non-seekable raw stream that hands out at most ``step`` bytes a read."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), self._step, len(self._data) - self._pos)
        buffer[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


class ShortWrites:
    """A raw-writer-like sink that accepts at most ``step`` bytes a write, as raw files may."""

    def __init__(self, step: int) -> None:
        self.data, self.step, self.writes = bytearray(), step, 0

    def write(self, data: memoryview) -> int:
        self.writes += 1
        taken = bytes(data[: self.step])
        self.data += taken
        return len(taken)


def test_frames_across_many_chunk_refills_and_short_reads_and_writes_round_trip() -> None:
    rng = random.Random(5)
    pages = [(pgno, rng.randbytes(4096) if pgno % 3 else bytes(4096)) for pgno in range(1, 801)]
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=800, min_txid=1, max_txid=9)
    blob, trailer = encode(header, pages)
    assert len(blob) > 2 * 2**20  # more than two 1 MiB read chunks

    sink = ShortWrites(step=100_003)
    encoder = Encoder(sink, header)
    for pgno, data in pages:
        encoder.write_page(pgno, data)
    assert encoder.finish() == trailer
    assert bytes(sink.data) == blob
    assert sink.writes < len(blob) // 100_000 + 40  # large writes, not one per page

    decoder = Decoder(ShortReads(blob, step=77_777), verify_index=True)
    assert list(decoder.pages()) == pages
    assert decoder.trailer == trailer


def test_snapshot_across_the_lock_page_skips_it_and_checksums_like_ltx() -> None:
    page_size = 65536
    lock = lock_page(page_size)
    page = b"x" * page_size
    header = Header(flags=0, page_size=page_size, commit=lock + 1, min_txid=1, max_txid=2)
    sink = io.BytesIO()
    encoder = Encoder(sink, header)
    for pgno in range(1, lock + 2):
        if pgno == lock:
            with pytest.raises(ValueError, match="lock page"):
                encoder.write_page(pgno, page)
            continue
        encoder.write_page(pgno, page)
    trailer = encoder.finish()
    expected = database_checksum(((pgno, page) for pgno in range(1, lock + 2)), page_size)
    assert trailer.post_apply_checksum == expected

    decoder = Decoder(io.BytesIO(sink.getvalue()), verify_index=True)
    count = last = 0
    for pgno, data in decoder.pages():
        assert pgno != lock and data == page
        count, last = count + 1, pgno
    assert (count, last) == (lock, lock + 1)
    assert decoder.trailer == trailer
    assert decoder.read_page(lock) is None and decoder.read_page(lock + 1) == page


def test_incremental_file_around_the_lock_page_round_trips() -> None:
    lock = lock_page(65536)
    pages = [(lock - 1, b"a" * 65536), (lock + 1, b"b" * 65536), (lock + 2, b"c" * 65536)]
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=65536, commit=lock + 2, min_txid=3, max_txid=3)
    blob, trailer = encode(header, pages)
    decoder, decoded = decode(blob, verify_index=True)
    assert decoded == pages and decoder.trailer == trailer


def test_a_database_with_no_pages_round_trips() -> None:
    for flags, post in ((0, CHECKSUM_FLAG), (HEADER_FLAG_NO_CHECKSUM, 0)):
        header = Header(flags=flags, page_size=4096, commit=0, min_txid=1, max_txid=1)
        blob, trailer = encode(header, [])
        assert trailer.post_apply_checksum == post
        decoder, decoded = decode(blob, verify_index=True)
        assert decoded == [] and decoder.trailer == trailer


def test_decoding_streams_in_bounded_memory() -> None:
    page = os.urandom(2048) + bytes(2048)
    count = 4096  # 16 MiB of pages
    header = Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=count, min_txid=1, max_txid=1)
    sink = io.BytesIO()
    encoder = Encoder(sink, header)
    for pgno in range(1, count + 1):
        encoder.write_page(pgno, page)
    encoder.finish()
    blob = sink.getvalue()
    tracemalloc.start()
    try:
        decoder = Decoder(ShortReads(blob, step=1 << 20), verify_index=True)
        deque(decoder.pages(), maxlen=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoder.trailer is not None
    assert peak < 4 * 2**20, f"decoder peaked at {peak} traced bytes for a {len(blob)}-byte file"


# --- legacy LZ4-frame pages (ltx v0.5.0/v0.5.1, Litestream 0.5.0-0.5.15) ---------------------


def legacy_file(pages: list[tuple[int, bytes]], *, page_size: int, mixed: bool = False) -> bytes:
    header = raw_header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=page_size, commit=len(pages), min_txid=1, max_txid=4)
    frames = []
    for pgno, page in pages:
        if mixed and pgno % 2 == 0:
            frames.append((pgno, block_frame(pgno, lz4.block.compress(page, store_size=False)), page))
        else:
            frames.append((pgno, legacy_frame(pgno, page), page))
    return assemble(header, frames)


def test_legacy_lz4_frame_pages_decode_and_verify(tmp_path: Path) -> None:
    rng = random.Random(2)
    pages = [(1, bytes(4096)), (2, rng.randbytes(4096)), (3, b"legacy " * 585 + b"x")]
    blob = legacy_file(pages, page_size=4096)
    assert blob[104:106] == b"\x00\x00" and blob[106:110] == b"\x04\x22\x4d\x18"  # flags 0, frame magic
    decoder, decoded = decode(blob, verify_index=True)
    assert decoded == pages
    assert [f.flags for f in Decoder(io.BytesIO(blob)).frames()] == [0, 0, 0]
    assert Decoder(io.BytesIO(blob)).read_page(2) == pages[1][1]
    path = tmp_path / "0000000000000001-0000000000000004.ltx"
    path.write_bytes(blob)
    assert verify_file(path).page_size == 4096


def test_legacy_and_current_frames_mix_in_one_file() -> None:
    pages = [(pgno, bytes([pgno]) * 1024) for pgno in range(1, 7)]
    decoder, decoded = decode(legacy_file(pages, page_size=1024, mixed=True), verify_index=True)
    assert decoded == pages and decoder.trailer is not None


def test_version_2_files_are_refused_by_name() -> None:
    page = bytes(4096)
    v2_frame = struct.pack(">I", 1) + lz4.frame.compress(page, content_checksum=True, store_size=False)
    blob = raw_header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=4096, commit=1, min_txid=1, max_txid=1) + v2_frame
    with pytest.raises(CorruptLTXError, match="version 2"):
        decode(blob + bytes(64))


# --- misuse of the encoder, single use of the decoder ---------------------------------------


def new_encoder(**fields: int) -> Encoder:
    base = dict(flags=HEADER_FLAG_NO_CHECKSUM, page_size=512, commit=4, min_txid=2, max_txid=2)
    return Encoder(io.BytesIO(), Header(**{**base, **fields}))


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (dict(page_size=1000), "page size"),
        (dict(page_size=256), "page size"),
        (dict(page_size=131072), "page size"),
        (dict(flags=0x1), "unknown header flags"),
        (dict(min_txid=0), "minimum TXID"),
        (dict(min_txid=5, max_txid=4), "out of order"),
        (dict(flags=0, pre_apply_checksum=0), "pre-apply checksum missing"),
        (dict(flags=0, pre_apply_checksum=5), "checksum flag"),
        (dict(min_txid=1, max_txid=1, pre_apply_checksum=CHECKSUM_FLAG), "snapshot"),
        (dict(pre_apply_checksum=CHECKSUM_FLAG), "no-checksum flag"),
        (dict(wal_salt1=1), "WAL salt"),
        (dict(wal_size=4), "WAL size"),
        (dict(commit=2**32), "out of range"),
    ],
)
def test_encoder_refuses_an_invalid_header(fields: dict[str, int], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        new_encoder(**fields)


def test_encoder_refuses_pages_out_of_order_out_of_range_or_of_wrong_size() -> None:
    encoder = new_encoder()
    encoder.write_page(2, bytes(512))
    for pgno, data, reason in (
        (2, bytes(512), "ascend"),
        (1, bytes(512), "ascend"),
        (5, bytes(512), "out of range"),
        (0, bytes(512), "out of range"),
        (3, bytes(511), "page size"),
    ):
        with pytest.raises(ValueError, match=reason):
            encoder.write_page(pgno, data)
    encoder.write_page(3, bytes(512))
    encoder.finish()
    with pytest.raises(ValueError, match="finished"):
        encoder.write_page(4, bytes(512))
    with pytest.raises(ValueError, match="finished"):
        encoder.finish()


def test_encoder_refuses_a_snapshot_with_a_gap_or_missing_its_last_pages() -> None:
    encoder = new_encoder(min_txid=1)
    encoder.write_page(1, bytes(512))
    with pytest.raises(ValueError, match="page 2 is due"):
        encoder.write_page(3, bytes(512))
    encoder.write_page(2, bytes(512))
    with pytest.raises(ValueError, match="snapshot incomplete"):
        encoder.finish()


def test_encoder_enforces_post_apply_checksum_rules() -> None:
    with pytest.raises(ValueError, match="no-checksum"):
        new_encoder().finish(CHECKSUM_FLAG | 1)
    tracked = new_encoder(flags=0, pre_apply_checksum=CHECKSUM_FLAG | 9)
    with pytest.raises(ValueError, match="post-apply checksum missing"):
        tracked.finish(0)
    snapshot = new_encoder(flags=0, min_txid=1, commit=1)
    snapshot.write_page(1, bytes(512))
    with pytest.raises(ValueError, match="differs from the snapshot"):
        snapshot.finish(CHECKSUM_FLAG | 1)


def test_decoder_pages_can_be_read_only_once_and_random_access_needs_seeking() -> None:
    blob, _ = encode(Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=512, commit=1, min_txid=1, max_txid=1), [(1, bytes(512))])
    decoder = Decoder(io.BytesIO(blob))
    list(decoder.pages())
    with pytest.raises(ValueError, match="only once"):
        decoder.frames()
    with pytest.raises(ValueError, match="seekable"):
        Decoder(ShortReads(blob, 1000)).read_page(1)


def test_random_access_interleaves_with_streaming(tmp_path: Path) -> None:
    pages = [(pgno, bytes([pgno]) * 1024) for pgno in range(1, 9)]
    blob, _ = encode(Header(flags=HEADER_FLAG_NO_CHECKSUM, page_size=1024, commit=8, min_txid=1, max_txid=1), pages)
    path = tmp_path / "0000000000000001-0000000000000001.ltx"
    path.write_bytes(blob)
    with open_ltx(path) as decoder:
        streamed = []
        for pgno, data in decoder.pages():
            assert decoder.read_page(9 - pgno) == pages[8 - pgno][1]
            streamed.append((pgno, data))
        assert streamed == pages and decoder.trailer is not None
