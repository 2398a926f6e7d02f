"""Restore: rebuild the database at the latest TXID (or a given one), verified.

The restore chain (``ltxpool.replica.plan.plan_restore``) is merged newest-page-wins and
streamed into a new database file through the atomic writer, so the output name
only ever holds a complete, verified database. Verified means: every input's LTX
checksums (the decoder checks them as it streams), the chain's contiguity, every page
1..commit present (the lock page excepted: SQLite never uses it, it is restored as
zeros), the database checksum of the result against the one replicate recorded for
that TXID (``ltxpool.replica.txid_record``) and against the post-apply checksum of a
last file in the old form (flags 0) -- ``RestoreResult.verified_by`` names those
that ran; files Litestream wrote carry none and have no record -- and SQLite's own
``PRAGMA integrity_check`` on the result before it is renamed into place. Before
any page is read, the chain is checked from headers and page indexes
(``ltxpool.replica.chain_check``): a page that a shrink cut off and no later file wrote back
would otherwise come back from before the shrink.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from ltxpool.ltx import (
    EMPTY_DATABASE_CHECKSUM,
    HEADER_FLAG_NO_CHECKSUM,
    combine,
    lock_page,
    page_checksum,
)
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.access import PRIVATE
from ltxpool.replica.atomic import COPY_CHUNK, AtomicWriter
from ltxpool.replica.chain_check import NameProblem, check_plan, without_misnamed
from ltxpool.replica.errors import BrokenChainError, IntegrityCheckError, OutputExistsError, RestorePlanError
from ltxpool.replica.layout import Listing, Replica
from ltxpool.replica.merge import merge_pages, open_chain
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.txid_record import RECORD_NAME, recorded_checksum

__all__ = ["RestoreResult", "restore", "restore_listings", "integrity_check", "TXID_RECORD", "POST_APPLY"]

#: Names of the database-checksum checks, as :attr:`RestoreResult.verified_by` reports them.
TXID_RECORD = "txid record"
POST_APPLY = "post-apply checksum"


@dataclass(frozen=True)
class RestoreResult:
    output: str
    txid: int
    page_size: int
    commit: int
    files: int
    #: The database-checksum checks that ran: ``TXID_RECORD``, ``POST_APPLY`` (none: no source).
    verified_by: tuple[str, ...]
    # Restored below the TXID asked for (``allow_gap``): the gap that stopped it. None: as asked.
    gap: str | None = None

    @property
    def checksum_verified(self) -> bool:
        return bool(self.verified_by)


def integrity_check(path: str | os.PathLike[str]) -> None:
    """Run SQLite's ``PRAGMA integrity_check`` read-only; raise naming the first problem."""
    uri = Path(path).absolute().as_uri() + "?immutable=1"
    try:
        connection = sqlite3.connect(uri, uri=True)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise IntegrityCheckError(os.fspath(path), "integrity check", None, str(exc)) from exc
    if rows != [("ok",)]:
        raise IntegrityCheckError(os.fspath(path), "integrity check", None, "; ".join(str(row[0]) for row in rows[:3]))


def _misnamed_above(misnamed: list[NameProblem], txid: int | None, reached: int) -> NameProblem | None:
    """A misnamed file that claims TXIDs above ``reached`` and at or below the target."""
    return next(
        (p for p in misnamed if p.file.max_txid > reached and (txid is None or p.file.min_txid <= txid)), None
    )


def _refuse_misnamed(misnamed: list[NameProblem], txid: int | None, reached: int) -> None:
    """A file left out for its name may hold what the target needs: say so rather than stop short."""
    doubt = _misnamed_above(misnamed, txid, reached)
    if doubt is not None:
        raise BrokenChainError(
            doubt.file.path, "check names", None,
            f"{doubt.reason}: its name is not trusted" + (f", so the restore would stop at TXID {reached}" if reached else ""),
        )


def restore(
    replica: Replica,
    output: str | os.PathLike[str],
    txid: int | None = None,
    *,
    check_integrity: bool = True,
    mode: int = PRIVATE.file_mode,
    allow_gap: bool = False,
) -> RestoreResult:
    """Write the database at ``txid`` (default: the latest TXID) to the new file ``output``.

    A TXID that no chain reaches -- a gap before it, or beyond the latest -- raises
    :class:`RestorePlanError` naming the gap: restoring an older TXID and calling it
    the latest would hide lost transactions. A file whose header contradicts its name
    is left out of the plan, and if it claims TXIDs the plan then stops short of,
    :class:`BrokenChainError` names it. With ``allow_gap`` the latest TXID below the
    gap is restored instead, and ``RestoreResult.gap`` says why.
    ``check_integrity=False`` skips SQLite's check, for page streams that are not a
    SQLite database (synthetic test data); every LTX-level check still runs. The
    output is private (0600) unless ``mode`` says otherwise: restore cannot know who
    could read the database it came from.
    """
    return restore_listings(
        replica.list_all(), output, txid, check_integrity=check_integrity, mode=mode, allow_gap=allow_gap,
        recorded=lambda reached: recorded_checksum(replica, reached),
        record_path=os.path.join(replica.state_dir, RECORD_NAME),
    )


def restore_listings(
    listings: Mapping[int, Listing],
    output: str | os.PathLike[str],
    txid: int | None = None,
    *,
    check_integrity: bool = True,
    mode: int = PRIVATE.file_mode,
    allow_gap: bool = False,
    recorded: Callable[[int], int | None] | None = None,
    record_path: str = "",
) -> RestoreResult:
    """:func:`restore` from listings of any source (a local replica, a bucket: ``ltxpool.remote``).

    ``recorded(txid)``: the database checksum replicate recorded for a TXID, if the
    source keeps such a record (``record_path`` names it in messages); None: no record.
    """
    output = os.fspath(output)
    if os.path.lexists(output):
        raise OutputExistsError(output, "restore", errno.EEXIST, "output already exists; restore writes a new file")
    listings, misnamed = without_misnamed(listings)
    try:
        plan = plan_restore(listings, txid, allow_gap=allow_gap)
    except RestorePlanError:
        _refuse_misnamed(misnamed, txid, 0)
        raise
    if not allow_gap:
        _refuse_misnamed(misnamed, txid, plan.max_txid)
        if plan.unreachable is not None:
            raise RestorePlanError(plan.inputs[-1].path, "plan restore", None, plan.unreachable)
    elif plan.unreachable is None and (doubt := _misnamed_above(misnamed, txid, plan.max_txid)) is not None:
        plan.unreachable = f"{doubt.file.path}: {doubt.reason}: its name is not trusted"
    problem = check_plan(plan, plan.max_txid if plan.unreachable is not None else txid)
    if problem is not None and problem.error is not None:
        raise problem.error
    if problem is not None:
        raise BrokenChainError(problem.path, "check restore chain", None, problem.summary)
    expected_checksum = None if recorded is None else recorded(plan.max_txid)
    with ExitStack() as stack:
        decoders, header = open_chain(stack, plan.inputs)
        writer = stack.enter_context(AtomicWriter(output, mode=mode))
        lock = lock_page(header.page_size)
        zero_page = bytes(header.page_size)
        database = EMPTY_DATABASE_CHECKSUM
        buffer = bytearray()
        expected = 1
        for pgno, data in merge_pages(decoders, header.commit):
            while expected < pgno:
                if expected != lock:
                    raise CorruptLTXError(plan.inputs[0].path, 0, f"page {expected} is missing from the restore chain")
                buffer += zero_page
                expected += 1
            buffer += data
            database = combine(database, page_checksum(pgno, data))
            expected = pgno + 1
            if len(buffer) >= COPY_CHUNK:
                writer.write(buffer)
                buffer.clear()
        if expected == lock and lock <= header.commit:
            buffer += zero_page
            expected += 1
        if expected != header.commit + 1:
            raise CorruptLTXError(plan.inputs[-1].path, 0, f"the chain ends at page {expected - 1}, commit is {header.commit}")
        writer.write(buffer)
        trailer = decoders[-1].trailer
        assert trailer is not None, "merge_pages reads every input to its end"
        verified_by: list[str] = []
        if expected_checksum is not None:
            if database != expected_checksum:
                raise CorruptLTXError(
                    plan.inputs[-1].path, 0,
                    f"restored database checksum {database:016x} is not {expected_checksum:016x}, the checksum "
                    f"replicate recorded for TXID {plan.max_txid} in {record_path}",
                )
            verified_by.append(TXID_RECORD)
        last = decoders[-1].header
        if not last.flags & HEADER_FLAG_NO_CHECKSUM and trailer.post_apply_checksum != 0:
            if database != trailer.post_apply_checksum:
                raise CorruptLTXError(
                    plan.inputs[-1].path, 0,
                    f"restored database checksum {database:016x} is not the post-apply checksum "
                    f"{trailer.post_apply_checksum:016x}",
                )
            verified_by.append(POST_APPLY)
        if check_integrity:
            integrity_check(writer.temp_path)
        writer.commit()
    return RestoreResult(
        output, plan.max_txid, header.page_size, header.commit, len(plan.inputs), tuple(verified_by), plan.unreachable
    )
