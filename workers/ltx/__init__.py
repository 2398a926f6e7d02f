"""The LTX codec: the file format of Litestream 0.5.x.

Follows superfly/ltx **v0.5.2** -- the version Litestream 0.5.16 and 0.5.17 pin in
go.mod (and embed: ``dep github.com/superfly/ltx v0.5.2`` in the 0.5.17 binary) --
format version 3: 100-byte header (all fields of ltx's ``Header``: flags, page
size, commit, min/max TXID, timestamp, pre-apply checksum, WAL offset/size/salts,
node ID), page frames with the size flag and LZ4 blocks, end marker, page index,
index length, trailer (post-apply and file checksum). Legacy LZ4-frame pages (ltx
v0.5.0/v0.5.1, Litestream 0.5.0-0.5.15) are decoded too. Every malformed input
raises ``ltxpool.ltx.errors.CorruptLTXError`` naming the byte where it went wrong.

Modules, one job each: ``checksum`` (CRC-64, page and database checksums, lock
page), ``header`` (header/trailer layout and rules), ``payload`` (LZ4 page payloads,
current and legacy), ``index`` (the page index's varints), ``index_check`` (the
index checked against the frames), ``reader`` (chunked offset-aware reading),
``encoder``, ``decoder``, ``lookup`` (random access through the index), ``verify``
(safe open, full verification).

Streaming consumers use ``open_ltx``/``Decoder.pages()`` (every page, the file
checksum and trailer verified); ``verify_file`` adds the page index checked entry by
entry and the file name against the header.
"""

from __future__ import annotations

from ltxpool.ltx.checksum import (
    CHECKSUM_FLAG,
    EMPTY_DATABASE_CHECKSUM,
    combine,
    crc64,
    database_checksum,
    lock_page,
    page_checksum,
    update_database_checksum,
)
from ltxpool.ltx.decoder import Decoder, Frame
from ltxpool.ltx.encoder import Encoder
from ltxpool.ltx.header import (
    HEADER_FLAG_NO_CHECKSUM,
    HEADER_SIZE,
    MAGIC,
    MAX_PAGE_SIZE,
    MIN_PAGE_SIZE,
    TRAILER_SIZE,
    Header,
    Trailer,
    is_valid_page_size,
)
from ltxpool.ltx.index import IndexEntry
from ltxpool.ltx.payload import PAGE_FLAG_SIZE
from ltxpool.ltx.verify import name_problem, open_ltx, parse_filename, parse_header, read_header, verify_file

__all__ = [
    "CHECKSUM_FLAG",
    "EMPTY_DATABASE_CHECKSUM",
    "HEADER_FLAG_NO_CHECKSUM",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_PAGE_SIZE",
    "MIN_PAGE_SIZE",
    "PAGE_FLAG_SIZE",
    "TRAILER_SIZE",
    "Decoder",
    "Encoder",
    "Frame",
    "Header",
    "IndexEntry",
    "Trailer",
    "combine",
    "crc64",
    "database_checksum",
    "is_valid_page_size",
    "lock_page",
    "name_problem",
    "open_ltx",
    "page_checksum",
    "parse_filename",
    "parse_header",
    "read_header",
    "update_database_checksum",
    "verify_file",
]
