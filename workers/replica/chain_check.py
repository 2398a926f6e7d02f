"""Whether a replica's TXIDs restore, checked from headers and page indexes alone.

``verify`` judges files one at a time, and a replica whose every file verifies can
still fail to restore: a TXID whose commit grew without its new pages, a page-size
change in the middle of a chain, a gap. This module asks of a TXID what restore
would need, without decompressing a page:

* the restore chain reaches it (``ltxpool.replica.plan.plan_restore``): no gap;
* each file's header agrees with its name, and with its place in the chain
  (TXIDs follow on, one page size);
* every page 1..commit (but the lock page, which SQLite never uses) is held by a
  file of the chain *after the last shrink below it*. Walking the chain oldest
  first, a file whose commit is smaller than the pages seen so far cuts them off
  (the database shrank); only the pages it or a later file writes count again.
  Restore's newest-wins merge would otherwise hand back a page from before the
  shrink, or nothing.

Names are checked apart from chains too (``name_problems``, ``without_misnamed``,
``trusted_newest``, ``checked_inputs``): Litestream's layout puts the TXIDs in the
name, and a name the header contradicts (``2-ff`` holding 2-2) would make status,
restore and replicate report TXID 255, and a compaction launder it into a new file.
Such a file is a problem for the janitor's quarantine, never a TXID to trust.

Cost: one header and one page index per file of the chain (four bytes a page
number, all held until the end), and a bitmap of one byte a page of the database --
never more bytes than the chain holds page numbers, whatever a header claims.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from ltxpool.errors import LtxpoolError
from ltxpool.ltx import Header, lock_page, name_problem
from ltxpool.ltx.errors import CorruptLTXError
from ltxpool.replica.layout import Listing, LtxFile, Replica, open_ltx_file, read_ltx_header
from ltxpool.replica.plan import Plan, plan_restore

__all__ = [
    "ChainProblem",
    "NameProblem",
    "check_plan",
    "check_txid",
    "check_replica",
    "checked_inputs",
    "name_problems",
    "restorable_txids",
    "trusted_newest",
    "without_misnamed",
]


@dataclass(frozen=True)
class ChainProblem:
    """Why TXID ``txid`` (None: the latest) cannot be restored; ``path`` names the file."""

    txid: int | None
    path: str
    reason: str
    # The decoder's own error, where a file of the chain is damaged (it names the byte).
    error: CorruptLTXError | None = None

    @property
    def summary(self) -> str:
        at = "latest TXID" if self.txid is None else f"TXID {self.txid}"
        return f"{at} does not restore: {self.reason}"

    def __str__(self) -> str:
        return f"{self.path}: {self.summary}"


@dataclass(frozen=True)
class NameProblem:
    """A file whose name claims TXIDs its header does not hold: its name is not to be trusted.

    The file itself may be sound (a valid file renamed); the janitor's quarantine
    takes it, and until then planning, status and restore leave it out or say so.
    """

    file: LtxFile
    header: Header
    reason: str

    def __str__(self) -> str:
        return f"{self.file.path}: {self.reason}"


def name_problems(files: Iterable[LtxFile]) -> list[NameProblem]:
    """The files among ``files`` whose header disagrees with their name (100 bytes read each).

    A file that vanished is no problem; one whose header cannot be read is left to
    the decoder, which names the byte where it is corrupt when it reads it.
    """
    problems = []
    for f in files:
        try:
            header = read_ltx_header(f)
        except LtxpoolError:
            continue
        reason = name_problem(f.path, header)
        if reason is not None:
            problems.append(NameProblem(f, header, reason))
    return problems


def without_misnamed(listings: Mapping[int, Listing]) -> tuple[dict[int, Listing], list[NameProblem]]:
    """``listings`` without the files whose names their headers contradict, and those files."""
    problems = name_problems(f for listing in listings.values() for f in listing.files)
    bad = {p.file.path for p in problems}
    kept = {
        level: Listing(level, [f for f in listing.files if f.path not in bad], list(listing.skipped), listing.directory)
        for level, listing in listings.items()
    }
    return kept, problems


def trusted_newest(listing: Listing) -> tuple[LtxFile | None, list[NameProblem]]:
    """The file of ``listing`` with the highest TXID whose header confirms its name.

    Checked from the top down, so a status costs one header read per level plus one
    per misnamed file above the newest trusted one; those are returned as problems.
    """
    problems: list[NameProblem] = []
    for f in sorted(listing.files, key=lambda f: f.max_txid, reverse=True):
        found = name_problems([f])
        if not found:
            return f, problems
        problems.extend(found)
    return None, problems


def checked_inputs(plan: Plan) -> Plan:
    """``plan`` cut before its first input whose header contradicts its name, which is a problem.

    A merge names its output by its inputs' names: a misnamed input would give a new
    file whose name the header contradicts too (``0001-00ff`` holding TXIDs 1-2).
    """
    problems = name_problems(plan.inputs)
    if not problems:
        return plan
    cut = plan.inputs.index(problems[0].file)
    return Plan(plan.inputs[:cut], [*plan.problems, f"{problems[0]}: left out until quarantined"])


def _link_problem(path: str, header: Header, previous: Header | None) -> str | None:
    """Why ``header`` cannot follow ``previous`` in a chain (or disagrees with its name)."""
    mismatch = name_problem(path, header)
    if mismatch is not None:
        return mismatch
    if previous is None:
        return None
    if header.page_size != previous.page_size:
        return f"page size {header.page_size} after {previous.page_size} within one restore chain"
    if header.min_txid != previous.max_txid + 1:
        return f"TXID {header.min_txid} does not follow TXID {previous.max_txid}"
    return None


def check_txid(listings: Mapping[int, Listing], txid: int | None = None) -> ChainProblem | None:
    """The first reason ``txid`` (default: the latest) would not restore, or None."""
    try:
        plan = plan_restore(listings, txid)
    except LtxpoolError as exc:
        return ChainProblem(txid, exc.path, exc.reason)
    if txid is None and plan.problems:
        return ChainProblem(txid, plan.inputs[-1].path, plan.problems[0])
    return check_plan(plan, txid)


def check_plan(plan: Plan, txid: int | None = None) -> ChainProblem | None:
    """The first reason the chain ``plan`` would not restore, or None (see above)."""
    held: list[tuple[int, array[int]]] = []
    previous: Header | None = None
    for f in plan.inputs:
        try:
            with open_ltx_file(f) as decoder:
                header = decoder.header
                problem = _link_problem(f.path, header, previous)
                if problem is not None:
                    return ChainProblem(txid, f.path, problem)
                held.append((header.commit, decoder.page_numbers()))
        except CorruptLTXError as exc:
            return ChainProblem(txid, f.path, exc.reason, exc)
        previous = header
    assert previous is not None
    return _missing_pages(plan, txid, held, lock_page(previous.page_size))


def _missing_pages(plan: Plan, txid: int | None, held: list[tuple[int, array[int]]], skip: int) -> ChainProblem | None:
    """Whether every page 1..commit survives to the end of the chain in some file.

    Newest first: a page of a file counts if no file from it on has a smaller commit
    (none cut it off). The bitmap is sized by the page numbers the files really hold,
    not by the commit a header claims (a planted header may claim 2**32-1 pages): a
    chain holding ``n`` page numbers covers at most ``n + 1`` pages with the lock
    page, so past that a page is missing for sure, and the first one is below it.
    """
    commit = held[-1][0]
    entries = sum(len(pgnos) for _, pgnos in held)
    size = min(commit, entries + 2)
    present = bytearray(size)
    if skip <= size:
        present[skip - 1] = 1
    cut = commit
    for file_commit, pgnos in reversed(held):
        cut = min(cut, file_commit)
        limit = min(cut, size)
        for pgno in pgnos:
            if pgno > limit:
                break
            present[pgno - 1] = 1
    missing = present.find(0)
    if missing < 0:
        return None
    count = f"{present.count(0)} of {commit}" if size == commit else f"at least {commit - entries - 1} of {commit}"
    return ChainProblem(
        txid, plan.inputs[-1].path, f"{count} pages are in no file of the chain (first: page {missing + 1})",
    )


def restorable_txids(listings: Mapping[int, Listing]) -> Iterator[int]:
    """Every TXID the replica claims as a restore point: the end of each file, ascending."""
    yield from sorted({f.max_txid for listing in listings.values() for f in listing.files})


def check_replica(replica: Replica, *, every_txid: bool = False) -> list[ChainProblem]:
    """Problems of the latest TXID, or (``every_txid``) of every TXID a file ends at."""
    listings = replica.list_all()
    if not any(listing.files for listing in listings.values()):
        return []
    if not every_txid:
        problem = check_txid(listings, None)
        return [] if problem is None else [problem]
    return [p for txid in restorable_txids(listings) if (p := check_txid(listings, txid)) is not None]
