"""On start, make the saved state agree with the replica: the replica always wins.

The newest TXID on disk (any level) is the replica's TXID. The saved state is a
cache of "the database at that TXID" (page checksums, database checksum); it is
used only when it is exactly there and its checksums XOR to the database checksum
recorded for that TXID (``ltxpool.replica.txid_record``; for a file in the old form,
flags 0, the post-apply checksum it carries). Otherwise, cheapest first:

* replay: the state is a few TXIDs behind (a crash between writing an LTX file and
  saving the state) and the level-0 files after it are all there -- apply their
  pages' checksums. Re-applying a file is idempotent, so entries a crashed step had
  already written in place do no harm.
* rebuild: stream the restore chain of the newest TXID (``ltxpool.replica.plan``,
  ``ltxpool.replica.merge``, every file verified as it is decoded) and checksum its pages.

Either way the next TXID is newest + 1, so a crash neither loses nor duplicates a
TXID, and the next step compares the live database with exactly what a restore of
the newest TXID would produce. The WAL position is kept only when the state was
used as saved; after a repair the next step compares every page.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace

from ltxpool.ltx import (
    CHECKSUM_FLAG,
    HEADER_FLAG_NO_CHECKSUM,
    TRAILER_SIZE,
    Header,
    Trailer,
    lock_page,
    name_problem,
    page_checksum,
)
from ltxpool.ltx.errors import CorruptLTXError, LtxReadError
from ltxpool.replica.layout import LtxFile, Replica, open_ltx_file
from ltxpool.replica.merge import merge_frames, merged_header
from ltxpool.replica.plan import plan_restore
from ltxpool.replicate.state import ReplicationState, new_checksum_array, xor_all

__all__ = ["Reconciled", "reconcile", "trailer_checksums"]


@dataclass
class Reconciled:
    state: ReplicationState
    checksums: array[int]
    how: str


def _newest(replica: Replica) -> LtxFile | None:
    """A file holding the newest TXID, the lowest level first (the smallest file)."""
    files = [f for listing in replica.list_all().values() for f in listing.files]
    if not files:
        return None
    top = max(f.max_txid for f in files)
    return min((f for f in files if f.max_txid == top), key=lambda f: (f.level, -f.min_txid))


def _header_and_trailer(f: LtxFile) -> tuple[Header, Trailer]:
    """The header and the trailer, read through one descriptor of the listed file; its name
    must agree with the header, since the replica's TXID (and so the next one written) is
    taken from the name."""
    with open_ltx_file(f) as decoder:
        header = decoder.header
        mismatch = name_problem(f.path, header)
        if mismatch is not None:
            raise CorruptLTXError(
                f.path, 16, f"{mismatch}: the replica's newest TXID is in doubt until it is quarantined"
            )
        stream = decoder.stream
        try:
            stream.seek(-TRAILER_SIZE, os.SEEK_END)
            trailer = Trailer.unpack(stream.read(TRAILER_SIZE))
        except OSError as exc:
            raise LtxReadError.from_oserror(f.path, "read trailer", exc) from exc
    return header, trailer


def _expected_checksum(header: Header, trailer: Trailer) -> int | None:
    if header.flags & HEADER_FLAG_NO_CHECKSUM or trailer.post_apply_checksum == 0:
        return None
    return trailer.post_apply_checksum


def _set(checksums: array[int], pgno: int, checksum: int, skip: int) -> bool:
    """Record page ``pgno``'s checksum, growing the array by that page only; False at a jump.

    The array grows with the pages actually read, never to a header's commit before
    reading: a planted header may claim 2**32-1 pages. Pages arrive ascending, so a
    page beyond the end must be the next one (or the one after the lock page, which is
    never stored and counts as zero); anything else is a page the chain does not hold.
    """
    end = len(checksums)
    if pgno <= end:
        checksums[pgno - 1] = checksum
        return True
    if pgno == end + 2 and end + 1 == skip:
        checksums.append(0)
    elif pgno != end + 1:
        return False
    checksums.append(checksum)
    return True


def _complete(checksums: array[int], commit: int, skip: int) -> bool:
    """Whether ``checksums`` now covers pages 1..commit (a lock page at the end counts as zero)."""
    if len(checksums) == commit - 1 and commit == skip:
        checksums.append(0)
    return len(checksums) == commit


def _replay(replica: Replica, state: ReplicationState, checksums: array[int], top: int) -> ReplicationState | None:
    """Apply level-0 files state.txid+1..top to ``checksums``; None if they are not all there.

    Snapshots are written to level 9, not 0, so a state behind one (a crash between the
    first step's or a new generation's file and its state) is not replayed here: the
    caller rebuilds it, which reads that same snapshot and the level-0 files after it.
    A snapshot at level 0 (the layout before #14) is still replayed.
    """
    by_max = {f.max_txid: f for f in replica.list_level(0).files}
    chain: list[LtxFile] = []
    txid = top
    while txid > state.txid:
        f = by_max.get(txid)
        if f is None:
            return None
        chain.append(f)
        if f.min_txid == 1:
            break
        txid = f.min_txid - 1
    if chain[-1].min_txid not in (1, state.txid + 1):
        return None
    chain.reverse()
    page_size, commit = state.page_size, state.commit
    for f in chain:
        with open_ltx_file(f) as decoder:
            header = decoder.header
            if header.min_txid == 1:
                del checksums[:]
            elif header.page_size != page_size:
                return None
            page_size, commit = header.page_size, header.commit
            del checksums[commit:]
            skip = lock_page(page_size)
            for pgno, data in decoder.pages():
                if not _set(checksums, pgno, page_checksum(pgno, data), skip):
                    return None
            if not _complete(checksums, commit, skip):
                return None
    return replace(state, txid=top, page_size=page_size, commit=commit, checksum=CHECKSUM_FLAG | xor_all(checksums))


def _rebuild(replica: Replica, state: ReplicationState, top: int) -> tuple[ReplicationState, array[int]]:
    plan = plan_restore(replica.list_all(), top)
    with ExitStack() as stack:
        decoders = [stack.enter_context(open_ltx_file(f)) for f in plan.inputs]
        header = merged_header([d.header for d in decoders])
        for decoder in decoders:
            if decoder.header.page_size != header.page_size:
                raise CorruptLTXError(decoder.path, 8, f"page size differs from {header.page_size} within one restore chain")
        checksums = new_checksum_array()
        skip = lock_page(header.page_size)
        for frame in merge_frames(decoders, header.commit):
            if not _set(checksums, frame.pgno, page_checksum(frame.pgno, frame.data), skip):
                raise CorruptLTXError(
                    plan.inputs[-1].path, 0,
                    f"the restore chain of TXID {top} lacks page {len(checksums) + 1} (next: page {frame.pgno})",
                )
        if not _complete(checksums, header.commit, skip):
            raise CorruptLTXError(
                plan.inputs[-1].path, 12,
                f"the restore chain of TXID {top} holds {len(checksums)} pages, its header claims {header.commit}",
            )
    rebuilt = replace(
        state, txid=top, page_size=header.page_size, commit=header.commit,
        checksum=CHECKSUM_FLAG | xor_all(checksums), position=None,
    )
    return rebuilt, checksums


def trailer_checksums(replica: Replica, top: int) -> list[tuple[int, int]]:
    """``(max TXID, post-apply checksum)`` of every file in the old form (flags 0) up to
    TXID ``top``, ascending: what a replica written before the per-TXID record knew, to
    backfill it before compaction rewrites those files without checksums."""
    found: dict[int, int] = {}
    for listing in replica.list_all().values():
        for f in listing.files:
            if f.max_txid <= top:
                expected = _expected_checksum(*_header_and_trailer(f))
                if expected is not None:
                    found[f.max_txid] = expected
    return sorted(found.items())


def reconcile(
    replica: Replica,
    database: str,
    saved: ReplicationState | None,
    checksums: array[int],
    *,
    recorded: Callable[[int], int | None],
) -> Reconciled:
    """The state at the replica's newest TXID, from ``saved`` where it can be trusted.

    ``recorded(txid)``: the database checksum replicate recorded for a TXID, if any.
    """
    fresh = ReplicationState(database)
    newest = _newest(replica)
    if newest is None:
        return Reconciled(fresh, new_checksum_array(), "empty replica")
    top = newest.max_txid
    header, trailer = _header_and_trailer(newest)
    expected = recorded(top)
    if expected is None:
        expected = _expected_checksum(header, trailer)

    def agrees(state: ReplicationState, sums: array[int]) -> bool:
        return (
            state.page_size == header.page_size
            and state.commit == header.commit == len(sums)
            and state.checksum == CHECKSUM_FLAG | xor_all(sums)
            and (expected is None or state.checksum == expected)
        )

    if saved is not None:
        saved = replace(saved, database=database)
        if saved.txid == top and agrees(saved, checksums):
            return Reconciled(saved, checksums, f"resumed at TXID {top}")
        if 0 < saved.txid < top:
            replayed = _replay(replica, replace(saved, position=None), checksums, top)
            if replayed is not None and agrees(replayed, checksums):
                return Reconciled(replayed, checksums, f"replayed TXID {saved.txid + 1}-{top} from level 0")
    rebuilt, sums = _rebuild(replica, replace(fresh, position=None), top)
    if not agrees(rebuilt, sums):
        raise CorruptLTXError(
            newest.path, 0,
            f"the restore chain of TXID {top} does not give the database checksum recorded for it; "
            "the replica is inconsistent",
        )
    return Reconciled(rebuilt, sums, f"rebuilt the state of TXID {top} from the replica")
