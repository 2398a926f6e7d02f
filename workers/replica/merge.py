"""Merge a contiguous chain of LTX files into one stream of pages: newest page wins.

A streaming k-way merge by page number: each input is decoded (and so verified) as a
stream, the heap holds one page per input, and memory does not grow with the
database. A page is copied with its LZ4 block as stored, not compressed again: a
merge never changes page bytes, and compression was a third of its time. For each
page number the newest input that holds it wins; pages beyond the last input's
commit are dropped (the database shrank).

Output header, as superfly/ltx v0.5.2's ``Compactor`` builds it with the
``HeaderFlagNoChecksum`` Litestream sets on every compaction and restore: page size
and min TXID of the first input; max TXID, commit and timestamp of the last; node ID
left empty; flag 0x2 and no pre- or post-apply checksum, whatever the inputs carry.
Inputs in the old form (flags 0, with checksums) are read as before, but no output
keeps their checksums: Litestream's restore refuses a file that does
("post-apply checksum not allowed"), and ltxpool's end-to-end check is the per-TXID
record (``ltxpool.replica.txid_record``), which compaction does not touch.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, TypeVar

from ltxpool.ltx import (
    HEADER_FLAG_NO_CHECKSUM,
    Decoder,
    Encoder,
    Frame,
    Header,
    Trailer,
    name_problem,
)
from ltxpool.ltx.encoder import Sink
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.layout import LtxFile, open_ltx_file

_Item = TypeVar("_Item", bound=tuple[Any, ...])

__all__ = ["check_chain", "open_chain", "merged_header", "merge_frames", "merge_pages", "merge_files", "MergeResult"]


@dataclass(frozen=True)
class MergeResult:
    header: Header
    trailer: Trailer
    pages: int


def merged_header(headers: Sequence[Header]) -> Header:
    """The header of the merge of ``headers`` (oldest first)."""
    first, last = headers[0], headers[-1]
    return Header(
        flags=HEADER_FLAG_NO_CHECKSUM,
        page_size=first.page_size,
        commit=last.commit,
        min_txid=first.min_txid,
        max_txid=last.max_txid,
        timestamp=last.timestamp,
        wal_offset=0,
        wal_size=0,
        wal_salt1=0,
        wal_salt2=0,
        node_id=0,
    )


def _ranked(items: Iterator[_Item], rank: int) -> Iterator[tuple[int, int, _Item]]:
    for item in items:
        yield item[0], rank, item


def _newest_wins(streams: Sequence[Iterator[_Item]], commit: int) -> Iterator[_Item]:
    """The k-way merge: per page number the item of the newest stream, up to ``commit``."""
    ranked = [_ranked(stream, -index) for index, stream in enumerate(streams)]
    previous = 0
    for pgno, _, item in heapq.merge(*ranked):
        if pgno == previous:
            continue
        previous = pgno
        if pgno <= commit:
            yield item


def merge_frames(decoders: Sequence[Decoder], commit: int) -> Iterator[Frame]:
    """Frames (with their stored LZ4 blocks) of pages 1..commit, ascending; every input is
    read to its end (and verified). For compaction, which copies the blocks."""
    return _newest_wins([decoder.frames() for decoder in decoders], commit)


def merge_pages(decoders: Sequence[Decoder], commit: int) -> Iterator[tuple[int, bytes]]:
    """``(pgno, page)`` of pages 1..commit, ascending, every input read and verified; for
    restore, which needs the pages only (no copy of each block)."""
    return _newest_wins([decoder.pages() for decoder in decoders], commit)


def check_chain(decoders: Sequence[Decoder]) -> None:
    """Refuse inputs that do not form one chain, or whose names their headers contradict.

    The output is named from the inputs' names, so a misnamed input would make a new
    file whose name lies too.
    """
    for decoder in decoders:
        mismatch = name_problem(decoder.path, decoder.header)
        if mismatch is not None:
            raise CorruptLTXError(decoder.path, 16, mismatch)
    for before, after in pairwise(decoders):
        if after.header.page_size != before.header.page_size:
            raise CorruptLTXError(
                after.path, 8, f"page size {after.header.page_size} differs from {before.header.page_size} in "
                f"{before.path}: a page-size change starts a new chain"
            )
        if after.header.min_txid != before.header.max_txid + 1:
            raise CorruptLTXError(
                after.path, 16, f"TXID {after.header.min_txid} does not follow TXID {before.header.max_txid} of {before.path}"
            )


def open_chain(stack: ExitStack, files: Sequence[LtxFile]) -> tuple[list[Decoder], Header]:
    """Open the decoders of a contiguous chain (closed with ``stack``), check it, merge the headers.

    Each file is opened relative to the directory it was listed from.
    """
    decoders = [stack.enter_context(open_ltx_file(f)) for f in files]
    check_chain(decoders)
    return decoders, merged_header([d.header for d in decoders])


def merge_files(files: Sequence[LtxFile], sink: Sink) -> MergeResult:
    """Merge the listed LTX ``files`` (a contiguous chain, oldest first) into ``sink``."""
    with ExitStack() as stack:
        decoders, header = open_chain(stack, files)
        encoder = Encoder(sink, header)
        pages = 0
        try:
            for frame in merge_frames(decoders, header.commit):
                encoder.write_page(frame.pgno, frame.data, frame.block)
                pages += 1
            return MergeResult(header, encoder.finish(), pages)
        except ValueError as exc:
            # The encoder refuses what the inputs cannot make: a snapshot with a hole.
            raise CorruptLTXError(files[-1].path, 0, f"inputs do not merge into a valid file: {exc}") from exc
