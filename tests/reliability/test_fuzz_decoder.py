"""Fuzzing the LTX decoder: whatever the bytes, CorruptLTXError or a correct decode, in bounded memory.

Three generators, each run for a bounded number of examples:

* damage: byte flips, bit flips, inserted and deleted runs, splices from the same or
  another file, truncation, appended bytes, u32/u64 size fields overwritten with
  extreme values anywhere in the file;
* header-field overrides, with the file checksum recomputed so the damage is not
  caught by the checksum but must be caught by the rule the field breaks;
* consistent liars: files whose checksum is right but whose frames (page numbers,
  page sizes, garbage payloads, index and index length) are arbitrary.

Each file is read through every entry point a replica uses: ``verify_file`` (full
verification, page index checked), a streaming ``Decoder.pages()``, and random
access ``Decoder.read_page``. Nothing but :class:`CorruptLTXError` may escape, and
the traced peak allocation must stay within a few times the declared page size plus
the file's own size: no size field in a file may make the decoder allocate for it.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import lz4.block
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ltxpool.ltx import (
    HEADER_FLAG_NO_CHECKSUM,
    Decoder,
    database_checksum,
    is_valid_page_size,
    open_ltx,
    verify_file,
)
from ltxpool.ltx.errors import CorruptLTXError
from tests.support.fault_counts import record
from tests.support.ltx_bytes import (
    assemble,
    block_frame,
    legacy_frame,
    raw_header,
    uvarint,
)

NO_CHECKSUM = HEADER_FLAG_NO_CHECKSUM
SETTINGS = settings(
    max_examples=250, deadline=None, derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
#: Slack for the interpreter's own allocations during a decode (frames, exceptions, small objects).
SLACK = 192 * 1024

Parts = tuple[dict[str, int], list[tuple[int, bytes, bytes]], int]


def _block(pgno: int, page: bytes) -> tuple[int, bytes, bytes]:
    return pgno, block_frame(pgno, lz4.block.compress(page, store_size=False)), page


def _page(size: int, seed: int) -> bytes:
    head = bytes((seed * 31 + i * 7) & 0xFF for i in range(min(size // 3, 300)))
    return head + bytes([seed & 0xFF]) * (size - len(head))


def _parts(fields: dict[str, int], frames: list[tuple[int, bytes, bytes]], *, checksums: bool) -> Parts:
    if not checksums:
        return fields, frames, 0
    post = database_checksum([(pgno, page) for pgno, _, page in frames], fields["page_size"])
    return fields, frames, post


def base_parts() -> dict[str, Parts]:
    """Valid files of every shape: snapshot with checksums, incremental, legacy frames, 64 KiB pages."""
    snapshot = [_block(pgno, _page(512, pgno)) for pgno in range(1, 5)]
    big = [_block(pgno, _page(65536, pgno)) for pgno in range(1, 3)]
    return {
        "snapshot-512": _parts(dict(flags=0, page_size=512, commit=4, min_txid=1, max_txid=3, timestamp=5),
                               snapshot, checksums=True),
        "incremental-1024": _parts(
            dict(flags=NO_CHECKSUM, page_size=1024, commit=9, min_txid=4, max_txid=6, wal_offset=32, wal_size=2088),
            [_block(2, _page(1024, 2)), _block(9, _page(1024, 9))], checksums=False),
        "legacy-512": _parts(dict(flags=NO_CHECKSUM, page_size=512, commit=2, min_txid=1, max_txid=2),
                             [(pgno, legacy_frame(pgno, _page(512, pgno)), _page(512, pgno)) for pgno in (1, 2)],
                             checksums=False),
        "snapshot-65536": _parts(dict(flags=0, page_size=65536, commit=2, min_txid=1, max_txid=1),
                                 big, checksums=True),
    }


def build(parts: Parts, **overrides: int) -> bytes:
    fields, frames, post = parts
    return assemble(raw_header(**{**fields, **overrides}), frames, post_apply=post)


BASES = {name: build(parts) for name, parts in base_parts().items()}
PAGES = {name: [(pgno, page) for pgno, _, page in parts[1]] for name, parts in base_parts().items()}


def declared_page_size(blob: bytes) -> int:
    """The page size the header claims, where it is one the decoder would accept."""
    if len(blob) >= 12:
        (size,) = struct.unpack_from(">I", blob, 8)
        if is_valid_page_size(size):
            return size
    return 512


def memory_bound(blob: bytes) -> int:
    return 4 * len(blob) + 4 * declared_page_size(blob) + SLACK


def _verify(path: Path) -> list[tuple[int, bytes]] | None:
    verify_file(path)
    with open_ltx(path) as decoder:
        return list(decoder.pages())


def _stream(path: Path) -> list[tuple[int, bytes]] | None:
    with open_ltx(path) as decoder:
        return list(decoder.pages())


def _random_access(path: Path) -> list[tuple[int, bytes]] | None:
    with open(path, "rb") as stream:
        decoder = Decoder(stream, str(path))
        for pgno in range(1, min(decoder.header.commit, 12) + 1):
            decoder.read_page(pgno)
    return None


ENTRY_POINTS: dict[str, Callable[[Path], list[tuple[int, bytes]] | None]] = {
    "verify_file": _verify,
    "pages": _stream,
    "read_page": _random_access,
}


def judge(path: Path, blob: bytes, stats: Counter[str], *, valid_pages: list[list[tuple[int, bytes]]]) -> None:
    """Run every entry point on ``blob``; only CorruptLTXError may escape, memory stays bounded."""
    path.write_bytes(blob)
    bound = memory_bound(blob)
    for name, entry in ENTRY_POINTS.items():
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        try:
            pages = entry(path)
        except CorruptLTXError as exc:
            assert exc.path == str(path) and "\n" not in str(exc)
            stats[f"{name} refused"] += 1
        else:
            stats[f"{name} accepted"] += 1
            if pages is not None:
                assert pages in valid_pages, f"{name} accepted a damaged file with pages no valid file holds"
        _, peak = tracemalloc.get_traced_memory()
        stats["max peak"] = max(stats["max peak"], peak - before)
        assert peak - before <= bound, f"{name}: peak {peak - before} bytes for a {len(blob)}-byte file (bound {bound})"


EXTREMES = [0, 1, 0x7F, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 63, (1 << 64) - 1]
mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 1 << 20), st.integers(0, 255)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 200)),
    st.tuples(st.just("splice"), st.integers(0, 1 << 20), st.tuples(st.sampled_from(sorted(BASES)),
                                                                    st.integers(0, 1 << 20), st.integers(1, 400))),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20), st.just(0)),
    st.tuples(st.just("append"), st.integers(0, 0), st.binary(min_size=1, max_size=64)),
    st.tuples(st.just("u32"), st.integers(0, 1 << 20), st.sampled_from(EXTREMES[:8])),
    st.tuples(st.just("u64"), st.integers(0, 1 << 20), st.sampled_from(EXTREMES)),
)


def mutate(blob: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    data = bytearray(blob)
    for kind, position, arg in edits:
        at = position % (len(data) + 1)
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << int(arg)  # type: ignore[call-overload]
        elif kind == "set" and at < len(data):
            data[at] = int(arg)  # type: ignore[call-overload]
        elif kind == "insert":
            data[at:at] = arg  # type: ignore[assignment]
        elif kind == "append":
            data += arg  # type: ignore[operator]
        elif kind == "delete":
            del data[at:at + int(arg)]  # type: ignore[call-overload]
        elif kind == "splice":
            source_name, start, length = arg  # type: ignore[misc]
            source = BASES[source_name]
            start %= len(source)
            data[at:at + length] = source[start:start + length]
        elif kind == "truncate":
            del data[at:]
        elif kind in ("u32", "u64"):
            width = 4 if kind == "u32" else 8
            value = int(arg) & ((1 << (8 * width)) - 1)  # type: ignore[call-overload]
            if at + width <= len(data):
                data[at:at + width] = value.to_bytes(width, "big")
    return bytes(data)


def test_damaged_files_raise_only_corrupt_ltx_error_and_allocate_within_the_page_size(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    valid_pages = list(PAGES.values())

    @SETTINGS
    @given(st.sampled_from(sorted(BASES)), st.lists(mutation, min_size=1, max_size=5))
    def run(name: str, edits: list[tuple[str, int, object]]) -> None:
        damaged = mutate(BASES[name], edits)
        stats["files"] += 1
        stats["changed"] += damaged != BASES[name]
        judge(tmp_path / "damaged.ltx", damaged, stats, valid_pages=valid_pages)

    tracemalloc.start()
    try:
        run()
    finally:
        tracemalloc.stop()
    record("decoder fuzz: damaged files", stats["changed"], refused=stats["verify_file refused"],
           max_peak_bytes=stats["max peak"])
    assert stats["changed"] > 100 and stats["verify_file refused"] > 100


HEADER_FIELDS = {
    "flags": st.sampled_from([0, 1, 2, 3, 0x80000000, 0xFFFFFFFF]),
    "page_size": st.sampled_from([0, 1, 256, 511, 512, 1000, 1024, 4096, 65536, 131072, 1 << 31, 0xFFFFFFFF]),
    "commit": st.sampled_from([0, 1, 2, 3, 4, 8, 9, 1 << 20, 0x7FFFFFFF, 0xFFFFFFFF]),
    "min_txid": st.sampled_from([0, 1, 2, 4, (1 << 63), (1 << 64) - 1]),
    "max_txid": st.sampled_from([0, 1, 3, 6, (1 << 63), (1 << 64) - 1]),
    "timestamp": st.sampled_from([-(1 << 63), -1, 0, (1 << 63) - 1]),
    "pre_apply": st.sampled_from([0, 1, 1 << 63, (1 << 63) | 5, (1 << 64) - 1]),
    "wal_offset": st.sampled_from([-(1 << 63), -1, 0, 32, (1 << 63) - 1]),
    "wal_size": st.sampled_from([-(1 << 63), -1, 0, 4096, (1 << 63) - 1]),
    "salt1": st.sampled_from([0, 1, 0xFFFFFFFF]),
    "salt2": st.sampled_from([0, 1, 0xFFFFFFFF]),
    "node_id": st.sampled_from([0, 1, (1 << 64) - 1]),
}


def test_header_overrides_with_a_correct_checksum_are_refused_by_their_rule(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()
    parts = base_parts()
    valid_pages = list(PAGES.values())

    @SETTINGS
    @given(st.sampled_from(sorted(parts)), st.dictionaries(st.sampled_from(sorted(HEADER_FIELDS)),
                                                            st.integers(), min_size=1, max_size=4).flatmap(
        lambda keys: st.fixed_dictionaries({key: HEADER_FIELDS[key] for key in keys})))
    def run(name: str, overrides: dict[str, int]) -> None:
        blob = build(parts[name], **overrides)
        stats["files"] += 1
        judge(tmp_path / "override.ltx", blob, stats, valid_pages=valid_pages)

    tracemalloc.start()
    try:
        run()
    finally:
        tracemalloc.stop()
    record("decoder fuzz: header overrides, checksum fixed", stats["files"], refused=stats["verify_file refused"],
           max_peak_bytes=stats["max peak"])
    assert stats["verify_file refused"] > 50


frame_strategy = st.tuples(
    st.integers(0, 40),
    st.sampled_from(["block", "legacy", "garbage", "short"]),
    st.sampled_from([256, 512, 1024, 4096]),
    st.integers(0, 255),
)


def liar_frame(pgno: int, kind: str, size: int, seed: int) -> tuple[int, bytes, bytes]:
    page = _page(size, seed)
    if kind == "block":
        return _block(pgno, page)
    if kind == "legacy":
        return pgno, legacy_frame(pgno, page), page
    if kind == "garbage":
        return pgno, block_frame(pgno, bytes([seed]) * (seed % 40 + 1)), page
    return pgno, struct.pack(">IH", pgno, seed % 3), page


def test_consistent_files_with_arbitrary_frames_and_index_are_refused_or_decode(tmp_path: Path) -> None:
    stats: Counter[str] = Counter()

    @SETTINGS
    @given(
        st.sampled_from([512, 1024, 4096]),
        st.integers(0, 50),
        st.integers(1, 3),
        st.booleans(),
        st.lists(frame_strategy, max_size=6),
        st.one_of(st.none(), st.binary(max_size=40)),
        st.one_of(st.none(), st.sampled_from([0, 1, 99, 1 << 40, (1 << 64) - 1])),
    )
    def run(page_size: int, commit: int, min_txid: int, checksums: bool, frames: list[tuple[int, str, int, int]],
            index: bytes | None, index_length: int | None) -> None:
        parts = [liar_frame(*frame) for frame in frames]
        header = raw_header(flags=0 if checksums else NO_CHECKSUM, page_size=page_size, commit=commit,
                            min_txid=min_txid, max_txid=min_txid + 1,
                            pre_apply=(1 << 63) | 7 if checksums and min_txid > 1 else 0)
        post = (1 << 63) | 9 if checksums else 0
        blob = assemble(header, parts, post_apply=post, index=index, index_length=index_length)
        stats["files"] += 1
        decoded = [(pgno, page) for pgno, _, page in parts]
        judge(tmp_path / "liar.ltx", blob, stats, valid_pages=[decoded, *PAGES.values()])

    tracemalloc.start()
    try:
        run()
    finally:
        tracemalloc.stop()
    record("decoder fuzz: consistent liars", stats["files"], refused=stats["verify_file refused"],
           max_peak_bytes=stats["max peak"])
    assert stats["verify_file refused"] > 50


def test_absurd_size_fields_do_not_make_the_decoder_allocate_them(tmp_path: Path) -> None:
    """The fields that size something: payload size, index length, commit. Each at its maximum."""
    page = _page(4096, 3)
    header = raw_header(flags=NO_CHECKSUM, page_size=4096, commit=0xFFFFFFFF, min_txid=2, max_txid=2)
    cases = {
        "payload size 2^32-1": assemble(header, [(2, struct.pack(">IHI", 2, 1, 0xFFFFFFFF) + bytes(64), page)]),
        "index length 2^64-1": assemble(header, [_block(2, page)], index_length=(1 << 64) - 1),
        "index entry size 2^40": assemble(header, [_block(2, page)],
                                          index=uvarint(2) + uvarint(100) + uvarint(1 << 40) + b"\x00"),
        "commit 2^32-1 snapshot": assemble(
            raw_header(flags=NO_CHECKSUM, page_size=65536, commit=0xFFFFFFFF, min_txid=1, max_txid=1),
            [_block(1, bytes(65536))]),
    }
    stats: Counter[str] = Counter()
    tracemalloc.start()
    try:
        for name, blob in cases.items():
            before = stats["verify_file refused"]
            judge(tmp_path / f"{name.replace(' ', '-')}.ltx", blob, stats, valid_pages=[[(2, page)]])
            assert stats["verify_file refused"] == before + 1, f"{name}: verified"
    finally:
        tracemalloc.stop()
    record("decoder: absurd size fields", len(cases), max_peak_bytes=stats["max peak"])


def test_the_memory_bound_would_catch_an_allocation_sized_by_a_field(tmp_path: Path) -> None:
    """Control: a reader that trusts the index length allocates it, and ``judge`` fails it."""
    blob = BASES["incremental-1024"]
    path = tmp_path / "control.ltx"

    def trusting(path: Path) -> None:
        bytearray(1000 * len(path.read_bytes()))

    original = dict(ENTRY_POINTS)
    ENTRY_POINTS["trusting"] = trusting  # type: ignore[assignment]
    tracemalloc.start()
    try:
        judge(path, blob, Counter(), valid_pages=list(PAGES.values()))
    except AssertionError as exc:
        assert "peak" in str(exc)
    else:
        raise AssertionError("the memory bound did not catch a 100x allocation")
    finally:
        tracemalloc.stop()
        ENTRY_POINTS.clear()
        ENTRY_POINTS.update(original)
