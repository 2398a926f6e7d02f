"""Every malformed LTX file is refused with CorruptLTXError, and never anything else.

Two kinds of bad input: damage (a flipped byte, a cut-off file, garbage) that the
checksums and structure give away, and files that are internally consistent --
their file checksum is right -- yet break a rule of the format, as a buggy writer
would make them. The second kind is assembled with ``tests.test_ltx_codec.assemble``.
"""

from __future__ import annotations

import io
import os
import random
import struct
from pathlib import Path

import lz4.block
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltxpool.ltx import (
    CHECKSUM_FLAG,
    HEADER_FLAG_NO_CHECKSUM,
    Decoder,
    Header,
    database_checksum,
    lock_page,
    open_ltx,
    verify_file,
)
from ltxpool.ltx.errors import CorruptLTXError
from tests.support.ltx_bytes import (
    assemble,
    block_frame,
    encode,
    legacy_frame,
    raw_header,
    uvarint,
)

NO_CHECKSUM = HEADER_FLAG_NO_CHECKSUM


def sample_files() -> dict[str, bytes]:
    """Small files covering every part of the format: snapshot with checksums, incremental, legacy."""
    rng = random.Random(11)
    text = b"".join(b"name=%04d;" % n for n in range(52))[:512]
    snapshot_pages = [(1, bytes(512)), (2, text), (3, rng.randbytes(512)), (4, b"\x07" * 512)]
    snapshot, _ = encode(Header(flags=0, page_size=512, commit=4, min_txid=1, max_txid=3, timestamp=5), snapshot_pages)
    incremental, _ = encode(
        Header(flags=NO_CHECKSUM, page_size=1024, commit=9, min_txid=4, max_txid=6, wal_offset=32, wal_size=2088),
        [(2, rng.randbytes(300) + bytes(724)), (9, b"\x01" * 1024)],
    )
    legacy_pages = [(1, bytes(512)), (2, rng.randbytes(512))]
    legacy = assemble(
        raw_header(flags=NO_CHECKSUM, page_size=512, commit=2, min_txid=1, max_txid=2),
        [(pgno, legacy_frame(pgno, page), page) for pgno, page in legacy_pages],
    )
    return {"snapshot": snapshot, "incremental": incremental, "legacy": legacy}


SAMPLES = sample_files()


def decode_all(blob: bytes, *, verify_index: bool) -> list[tuple[int, bytes]]:
    decoder = Decoder(io.BytesIO(blob), verify_index=verify_index)
    pages = list(decoder.pages())
    assert decoder.trailer is not None
    return pages


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_single_byte_flip_is_refused(tmp_path: Path, name: str) -> None:
    original = SAMPLES[name]
    path = tmp_path / "sample.ltx"
    survivors = []
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        path.write_bytes(damaged)
        try:
            verify_file(path)
        except CorruptLTXError:
            pass
        else:
            survivors.append(offset)
        with pytest.raises(CorruptLTXError):
            decode_all(bytes(damaged), verify_index=False)
    assert survivors == [], f"{name}: flipped bytes that verified: {survivors[:10]}"


def payload_ranges(blob: bytes) -> list[range]:
    frames = Decoder(io.BytesIO(blob)).frames()
    return [range(f.offset + f.size - f.payload_size, f.offset + f.size) for f in frames]


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_bit_flip_is_refused_unless_it_changes_no_page(name: str) -> None:
    """The file checksum covers pages *decompressed* (ltx's definition), so an LZ4 payload
    may change without changing its page: the ignored low nibble of a block's last token,
    a match offset to an equal earlier run. No reader can see those; all else is refused."""
    original = SAMPLES[name]
    pages = decode_all(original, verify_index=True)
    payloads = payload_ranges(original)
    for offset in range(len(original)):
        for bit in range(8):
            damaged = bytearray(original)
            damaged[offset] ^= 1 << bit
            try:
                survived = decode_all(bytes(damaged), verify_index=True)
            except CorruptLTXError:
                continue
            assert survived == pages, f"{name}: flip at {offset} changed a page unnoticed"
            assert any(offset in payload for payload in payloads), f"{name}: flip at {offset} outside any payload"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_truncation_is_refused(tmp_path: Path, name: str) -> None:
    original = SAMPLES[name]
    path = tmp_path / "sample.ltx"
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(CorruptLTXError):
            verify_file(path)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_random_access_on_damaged_files_never_returns_another_page(name: str) -> None:
    """Random access checks only the frame it reads (no file checksum without a full scan):
    damage elsewhere may make it fail, but never return a wrong page."""
    original = SAMPLES[name]
    frames = list(Decoder(io.BytesIO(original)).frames())
    refused = 0
    for offset in range(len(original)):
        damaged = bytearray(original)
        damaged[offset] ^= 0xFF
        for frame in frames:
            try:
                data = Decoder(io.BytesIO(bytes(damaged))).read_page(frame.pgno)
            except CorruptLTXError:
                refused += 1
                continue
            if not frame.offset <= offset < frame.offset + frame.size:
                assert data in (frame.data, None), f"{name}: flip at {offset} changed page {frame.pgno}"
    assert refused > 0


def test_appended_bytes_are_refused() -> None:
    for extra in (b"\x00", b"x" * 24, bytes(1000)):
        with pytest.raises(CorruptLTXError):
            decode_all(SAMPLES["snapshot"] + extra, verify_index=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(SAMPLES)),
    st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])), min_size=1, max_size=6),
)
def test_arbitrary_damage_raises_corrupt_ltx_error_or_changes_nothing(name: str, edits: list[tuple[int, int, str]]) -> None:
    original = SAMPLES[name]
    damaged = bytearray(original)
    for position, value, kind in edits:
        position %= len(damaged) + 1
        if kind == "insert":
            damaged[position:position] = bytes([value])
        elif position < len(damaged):
            if kind == "set":
                damaged[position] = value
            else:
                del damaged[position]
    for verify_index in (False, True):
        try:
            pages = decode_all(bytes(damaged), verify_index=verify_index)
        except CorruptLTXError:
            continue
        assert pages == decode_all(original, verify_index=True)


# --- consistent files that break a rule --------------------------------------------------------


def frame(pgno: int, page: bytes) -> tuple[int, bytes, bytes]:
    return pgno, block_frame(pgno, lz4.block.compress(page, store_size=False)), page


def liar(frames: list[tuple[int, bytes, bytes]], *, commit: int = 8, min_txid: int = 2, page_size: int = 512,
         flags: int = NO_CHECKSUM, **kwargs: object) -> bytes:  # fmt: skip
    header = raw_header(flags=flags, page_size=page_size, commit=commit, min_txid=min_txid, max_txid=min_txid)
    return assemble(header, frames, **kwargs)  # type: ignore[arg-type]


def refused(blob: bytes, reason: str, *, verify_index: bool = False) -> CorruptLTXError:
    with pytest.raises(CorruptLTXError, match=reason) as caught:
        decode_all(blob, verify_index=verify_index)
    return caught.value


PAGE = bytes(range(256)) * 2


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (liar([frame(3, PAGE), frame(2, PAGE)]), "page 2 after page 3"),
        (liar([frame(3, PAGE), frame(3, PAGE)]), "page 3 after page 3"),
        (liar([frame(9, PAGE)], commit=8), "beyond the commit"),
        (liar([frame(1, PAGE), frame(3, PAGE)], min_txid=1, commit=3), "snapshot lacks page 2"),
        (liar([frame(1, PAGE), frame(2, PAGE)], min_txid=1, commit=3), "snapshot ends at page 2"),
        (liar([frame(2, PAGE)], min_txid=1, commit=2), "snapshot lacks page 1"),
        (liar([(2, block_frame(2, lz4.block.compress(bytes(256), store_size=False)), bytes(256))]), "256 bytes"),
        (liar([(2, block_frame(2, b"\xff\xff\xff"), PAGE)]), "does not decompress"),
        (liar([(2, struct.pack(">IHI", 2, 1, 0xFFFFFFFF), PAGE)]), "impossible"),
        (liar([(2, struct.pack(">IH", 2, 0x0002) + bytes(16), PAGE)]), "unknown page flags"),
        (liar([(2, struct.pack(">IH", 2, 0) + b"not a frame at all", PAGE)]), "LZ4 frame magic"),
        (liar([(0, struct.pack(">IHI", 0, 1, 5) + bytes(5), PAGE)]), "page number 0"),
        (liar([frame(2, PAGE)], index_length=99), "length field says 99"),
        (liar([frame(2, PAGE)], index=uvarint(2) + uvarint(100) + uvarint(20) + b"\x00\x00"), "varints"),
        (liar([frame(2, PAGE)], post_apply=CHECKSUM_FLAG | 5), "no-checksum flag"),
        (liar([frame(1, PAGE)], min_txid=1, commit=1, flags=0, post_apply=CHECKSUM_FLAG | 5), "differs from the snapshot"),
        (liar([frame(1, PAGE)], min_txid=1, commit=1, flags=0, post_apply=0), "post-apply checksum missing"),
    ],
)
def test_consistent_file_breaking_a_rule_is_refused(blob: bytes, reason: str) -> None:
    refused(blob, reason)


def test_a_stored_lock_page_is_refused() -> None:
    lock = lock_page(65536)
    blob = liar([frame(lock, bytes(65536))], page_size=65536, commit=lock + 1)
    refused(blob, "lock page")


def test_snapshot_post_apply_checksum_is_checked_against_its_pages() -> None:
    pages = [frame(1, PAGE), frame(2, bytes(512))]
    good = database_checksum([(1, PAGE), (2, bytes(512))], 512)
    decode_all(liar(pages, min_txid=1, commit=2, flags=0, post_apply=good), verify_index=True)
    refused(liar(pages, min_txid=1, commit=2, flags=0, post_apply=good ^ 1), "differs from the snapshot")


@pytest.mark.parametrize(
    ("index", "reason"),
    [
        (uvarint(3) + uvarint(100) + uvarint(0), "entry for page 3"),  # wrong page number
        (uvarint(2) + uvarint(101) + uvarint(0), "at offset 101, its frame is at 100"),
        (uvarint(2) + uvarint(100) + uvarint(5), "impossible frame size 5"),
    ],
)
def test_index_that_disagrees_with_the_frames_is_refused_by_full_verification(
    tmp_path: Path, index: bytes, reason: str
) -> None:
    page_frame = frame(2, PAGE)
    size = len(page_frame[1])
    # Patch the frame size into the entry where the case leaves it 0.
    entry = index if not index.endswith(uvarint(0)) else index[:-1] + uvarint(size)
    blob = liar([page_frame], commit=2, index=entry + b"\x00")
    decode_all(blob, verify_index=False)  # consistent enough for a streaming consumer
    refused(blob, reason, verify_index=True)
    path = tmp_path / "0000000000000002-0000000000000002.ltx"
    path.write_bytes(blob)
    with pytest.raises(CorruptLTXError, match=reason):
        verify_file(path)


def test_index_that_swaps_page_numbers_is_refused_by_full_verification() -> None:
    frames = [frame(2, PAGE), frame(3, PAGE)]
    size = len(frames[0][1])
    lying = uvarint(2) + uvarint(100) + uvarint(size) + uvarint(4) + uvarint(100 + size) + uvarint(size) + b"\x00"
    blob = liar(frames, index=lying)
    refused(blob, "does not match the page frames", verify_index=True)


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (b"LTX2" + bytes(96), "not an LTX file"),
        (raw_header(flags=0x1, page_size=512, commit=1, min_txid=2, max_txid=2), "unknown header flags"),
        (raw_header(flags=NO_CHECKSUM, page_size=1000, commit=1, min_txid=2, max_txid=2), "invalid page size"),
        (raw_header(flags=NO_CHECKSUM, page_size=0, commit=1, min_txid=2, max_txid=2), "invalid page size"),
        (raw_header(flags=NO_CHECKSUM, page_size=512, commit=1, min_txid=3, max_txid=2), "out of order"),
        (raw_header(flags=NO_CHECKSUM, page_size=512, commit=1, min_txid=0, max_txid=2), "minimum TXID"),
        (raw_header(flags=0, page_size=512, commit=1, min_txid=2, max_txid=2), "pre-apply checksum missing"),
        (raw_header(flags=NO_CHECKSUM, page_size=512, commit=1, min_txid=2, max_txid=2, wal_offset=-5), "negative"),
    ],
)
def test_bad_header_is_refused_at_its_byte(header: bytes, reason: str) -> None:
    with pytest.raises(CorruptLTXError, match=reason) as caught:
        Decoder(io.BytesIO(assemble(header, [])))
    assert 0 <= caught.value.offset < 100


def test_short_and_empty_files_are_refused() -> None:
    for blob in (b"", b"LTX", b"LTX1", SAMPLES["snapshot"][:99]):
        with pytest.raises(CorruptLTXError):
            Decoder(io.BytesIO(blob))


def test_corrupt_legacy_frame_content_is_refused() -> None:
    blob = bytearray(SAMPLES["legacy"])
    at = blob.index(b"\x04\x22\x4d\x18")
    blob[at + 4] ^= 0x10  # FLG: block checksum claimed, none present
    with pytest.raises(CorruptLTXError, match="page 1"):
        decode_all(bytes(blob), verify_index=True)


def test_file_name_must_match_the_header(tmp_path: Path) -> None:
    wrong = tmp_path / "0000000000000001-0000000000000004.ltx"
    wrong.write_bytes(SAMPLES["snapshot"])  # holds TXIDs 1-3
    with pytest.raises(CorruptLTXError, match="file name says"):
        verify_file(wrong)
    other = tmp_path / "anything-else.ltx"
    other.write_bytes(SAMPLES["snapshot"])
    assert verify_file(other).max_txid == 3


def test_symlink_fifo_and_directory_are_refused(tmp_path: Path) -> None:
    real = tmp_path / "real.ltx"
    real.write_bytes(SAMPLES["snapshot"])
    link = tmp_path / "link.ltx"
    link.symlink_to(real)
    fifo = tmp_path / "fifo.ltx"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.ltx"
    directory.mkdir()
    with pytest.raises(CorruptLTXError, match="symbolic link"):
        verify_file(link)
    with pytest.raises(CorruptLTXError, match="not a regular file"):
        verify_file(fifo)  # must not block waiting for a writer
    with pytest.raises(CorruptLTXError, match="not a regular file"):
        with open_ltx(directory):
            pass
    assert verify_file(real).min_txid == 1


def test_corrupt_ltx_error_names_path_offset_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "0000000000000001-0000000000000003.ltx"
    damaged = bytearray(SAMPLES["snapshot"])
    damaged[-1] ^= 1
    path.write_bytes(damaged)
    with pytest.raises(CorruptLTXError) as caught:
        verify_file(path)
    err = caught.value
    assert err.path == str(path) and err.offset == len(damaged) - 8
    assert str(err) == f"{path}: corrupt at byte {len(damaged) - 8}: {err.reason}"
    assert "file checksum mismatch" in err.reason
