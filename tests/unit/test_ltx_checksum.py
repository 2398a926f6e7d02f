"""CRC-64/GO-ISO, page and database checksums, the lock page.

The reference values come from superfly/ltx v0.5.2's own tests (checksum and
decoder tests: a decoder there rejects a snapshot whose post-apply checksum is not
the XOR of its pages, so those constants are checked database checksums) and from
a bitwise CRC written here from the algorithm's definition, independent of fastcrc.
"""

from __future__ import annotations

import os
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from ltxpool.ltx import (
    CHECKSUM_FLAG,
    EMPTY_DATABASE_CHECKSUM,
    combine,
    crc64,
    database_checksum,
    lock_page,
    page_checksum,
    update_database_checksum,
)
from tests.support.ltx_bytes import reference_crc64


def test_crc64_has_the_go_iso_check_value() -> None:
    assert crc64(b"123456789") == 0xB90956C775A41001
    assert reference_crc64(b"123456789") == 0xB90956C775A41001


def test_crc64_matches_the_bitwise_definition() -> None:
    for size in (0, 1, 7, 8, 63, 512):
        data = os.urandom(size)
        assert crc64(data) == reference_crc64(data)


def test_crc64_continues_from_a_previous_result_at_every_split() -> None:
    data = os.urandom(97)
    whole = crc64(data)
    for cut in range(len(data) + 1):
        assert crc64(data[cut:], crc64(data[:cut])) == whole


def test_page_checksum_is_flagged_crc_of_pgno_and_page() -> None:
    page = os.urandom(512)
    expected = CHECKSUM_FLAG | reference_crc64(struct.pack(">I", 7) + page)
    assert page_checksum(7, page) == expected
    assert page_checksum(7, memoryview(page)) == expected


def test_lock_page_holds_the_pending_byte_for_every_page_size() -> None:
    assert lock_page(512) == 2097153
    assert lock_page(1024) == 1048577
    assert lock_page(4096) == 262145
    assert lock_page(65536) == 16385
    for page_size in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536):
        first_byte = (lock_page(page_size) - 1) * page_size
        assert first_byte <= 0x40000000 < first_byte + page_size


def test_empty_database_checksum_is_the_flag_alone() -> None:
    assert database_checksum([], 4096) == EMPTY_DATABASE_CHECKSUM == CHECKSUM_FLAG


def test_database_checksum_matches_ltx_checksum_reader_vector() -> None:
    pages = [(1, b"\x01" * 512), (2, b"\x02" * 512), (3, b"\x03" * 512)]
    assert database_checksum(pages, 512) == 0xEFFFFFFFECD99000


def test_database_checksum_matches_ltx_snapshot_post_apply_vectors() -> None:
    assert database_checksum([(1, b"2" * 1024), (2, b"3" * 1024)], 1024) == 0xE1899B6D587AAAAA
    assert database_checksum([(1, b"2" * 512), (2, b"3" * 512)], 512) == 0x8B87423EEEEEEEEE
    assert database_checksum([(1, b"1" * 512)], 512) == 0xEB1A999231044DDD
    pages = [(1, b"\x81" * 1024), (2, b"\x82" * 1024), (3, b"\x83" * 1024)]
    assert database_checksum(pages, 1024) == 0x8A249272AD9F7DEA


def test_database_checksum_skips_the_lock_page_like_ltx_with_lock_page_vector() -> None:
    # ltx TestDecoder_DecodeDatabaseTo/WithLockPage: 4 KiB pages of "x", commit = lock + 10.
    lock = lock_page(4096)
    page = b"x" * 4096
    pages = ((pgno, page) for pgno in range(1, lock + 11))
    assert database_checksum(pages, 4096) == 0xC19B668C376662C7


def test_lock_page_never_changes_the_database_checksum() -> None:
    lock = lock_page(65536)
    before = database_checksum([(1, b"a" * 65536)], 65536)
    assert database_checksum([(1, b"a" * 65536), (lock, b"z" * 65536)], 65536) == before
    assert update_database_checksum(before, lock, None, b"z" * 65536, 65536) == before


def test_combine_twice_cancels_out_but_keeps_the_flag() -> None:
    chk = page_checksum(3, b"q" * 512)
    assert combine(combine(EMPTY_DATABASE_CHECKSUM, chk), chk) == EMPTY_DATABASE_CHECKSUM


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(min_value=1, max_value=12), st.one_of(st.none(), st.binary(min_size=512, max_size=512))),
        max_size=40,
    )
)
def test_incremental_database_checksum_equals_from_scratch_xor(changes: list[tuple[int, bytes | None]]) -> None:
    database: dict[int, bytes] = {}
    rolling = EMPTY_DATABASE_CHECKSUM
    for pgno, new in changes:
        rolling = update_database_checksum(rolling, pgno, database.get(pgno), new, 512)
        if new is None:
            database.pop(pgno, None)
        else:
            database[pgno] = new
    assert rolling == database_checksum(sorted(database.items()), 512)
