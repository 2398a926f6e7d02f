"""LTX checksums: CRC-64/GO-ISO, page checksums, rolling database checksums, the lock page.

Follows superfly/ltx v0.5.2 (``checksum.go``, ``ltx.go``), the version Litestream
0.5.16/0.5.17 pins. Every checksum LTX stores has bit 63 set (``CHECKSUM_FLAG``) so
that a present checksum is never zero: zero means "not tracked".

The database checksum is the XOR of the page checksums of every page but the lock
page. XOR makes it *rolling*: replacing one page only needs that page's old and new
checksum (``update_database_checksum``), which is how a writer keeps it current
without re-reading the database. Since every page checksum carries the flag, the
XOR of an even number of them would clear it; the flag is therefore OR-ed back after
every step (as ltx does), and the low 63 bits alone carry the information.

CRC-64/GO-ISO is Go's ``crc64.ISO`` table: reflected polynomial 0xD800000000000000,
init and final xor all ones. ``fastcrc.crc64.go_iso(data, initial)`` continues a
previous result when ``initial`` is the previous *returned* value (it undoes the
final xor itself), which is what lets the codec hash a file in pieces.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastcrc.crc64 import go_iso as _go_iso

from ltxpool.ltx.layout import PGNO

__all__ = [
    "CHECKSUM_FLAG",
    "EMPTY_DATABASE_CHECKSUM",
    "PENDING_BYTE",
    "crc64",
    "page_checksum",
    "lock_page",
    "combine",
    "database_checksum",
    "update_database_checksum",
]

CHECKSUM_FLAG = 1 << 63
# The checksum of a database without pages: nothing XOR-ed in, flag set.
EMPTY_DATABASE_CHECKSUM = CHECKSUM_FLAG
# SQLite's lock byte lives at 1 GiB; the page holding it is never written by SQLite,
# so LTX never stores it and the database checksum skips it.
PENDING_BYTE = 0x40000000



def crc64(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-64/GO-ISO of ``data``, continuing ``crc`` (the result of a previous call)."""
    return _go_iso(data, crc)


def page_checksum(pgno: int, data: bytes | bytearray | memoryview) -> int:
    """Checksum of one page: crc(pgno as u32 big-endian || page bytes) with the flag set."""
    return CHECKSUM_FLAG | _go_iso(data, _go_iso(PGNO.pack(pgno)))


def lock_page(page_size: int) -> int:
    """Number of the page that holds SQLite's lock byte for ``page_size``."""
    return PENDING_BYTE // page_size + 1


def combine(database: int, page: int) -> int:
    """XOR one page checksum into (or out of) a database checksum."""
    return CHECKSUM_FLAG | (database ^ page)


def database_checksum(pages: Iterable[tuple[int, bytes | bytearray | memoryview]], page_size: int) -> int:
    """Database checksum from scratch over ``(pgno, data)`` pairs; the lock page is skipped."""
    skip = lock_page(page_size)
    result = EMPTY_DATABASE_CHECKSUM
    for pgno, data in pages:
        if pgno != skip:
            result = combine(result, page_checksum(pgno, data))
    return result


def update_database_checksum(
    database: int,
    pgno: int,
    old: bytes | bytearray | memoryview | None,
    new: bytes | bytearray | memoryview | None,
    page_size: int,
) -> int:
    """Roll ``database`` forward for one page changing from ``old`` to ``new``.

    ``old`` is None for a page the database did not have (it grew), ``new`` is None for
    a page that is dropped (it shrank). The lock page never contributes.
    """
    if pgno == lock_page(page_size):
        return database
    if old is not None:
        database = combine(database, page_checksum(pgno, old))
    if new is not None:
        database = combine(database, page_checksum(pgno, new))
    return database
