"""What to merge: compaction inputs, the restore chain, and the gaps that stop them.

Pure functions over listings (names and TXID ranges only); the merge itself is in
``ltxpool.replica.merge``. Planning never skips a TXID gap silently: a plan stops at the gap
and says so (``gap after TXID x at level n``), and an overlap is reported the same
way, so ``status``, the logs and a failed restore all tell the operator where.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise

from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.layout import COMPACTION_LEVELS, Listing, LtxFile

__all__ = [
    "MAX_COMPACTION_INPUTS",
    "Plan",
    "current_generation",
    "latest_snapshot",
    "plan_compaction",
    "plan_restore",
    "level_problems",
    "coverage_gaps",
    "RestorePlanError",
]


@dataclass
class Plan:
    """Files to merge, oldest first, and the problems that cut the plan short."""

    inputs: list[LtxFile] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # A restore plan that stops short of the TXID asked for: why (the gap). None: it reaches it.
    unreachable: str | None = None

    @property
    def min_txid(self) -> int:
        return self.inputs[0].min_txid

    @property
    def max_txid(self) -> int:
        return self.inputs[-1].max_txid


def current_generation(files: list[LtxFile]) -> list[LtxFile]:
    """The files of a level from its newest generation snapshot on (all, if it has none).

    A file starting at TXID 1 after others is a new generation: replicate starts the
    chain again after a page-size change (an LTX chain has one page size), and
    everything before it is superseded, not overlapped.
    """
    starts = [f for f in files if f.min_txid == 1]
    if not starts:
        return files
    newest = max(starts, key=lambda f: f.max_txid)
    return [newest] + [f for f in files if f.max_txid > newest.max_txid]


def _contiguous_run(files: list[LtxFile], after: int, plan: Plan, strict_start: bool, limit: int) -> None:
    """Append to ``plan`` the run of ``files`` that starts right after TXID ``after`` (at most ``limit``)."""
    position = after
    for f in [f for f in current_generation(files) if f.max_txid > after][:limit]:
        if f.min_txid <= position:
            plan.problems.append(
                f"overlap at level {f.level}: {f.name} starts at TXID {f.min_txid}, "
                f"TXID {position} is already covered"
            )
            return
        if f.min_txid > position + 1 and (strict_start or plan.inputs):
            plan.problems.append(f"gap after TXID {position} at level {f.level} (next file {f.name})")
            return
        plan.inputs.append(f)
        position = f.max_txid


def latest_snapshot(listings: Mapping[int, Listing]) -> LtxFile | None:
    """The newest file that starts at TXID 1, at any level (level 9 first on a tie).

    Any file from TXID 1 is a full image: a snapshot at level 9, replicate's first
    step or a new generation, or -- in the layout before #14 -- a level 0 snapshot
    and the level 1-3 files compacted up from it.
    """
    bases = [f for listing in listings.values() for f in listing.files if f.min_txid == 1]
    return max(bases, key=lambda f: (f.max_txid, f.level), default=None)


#: A merge keeps every input open (one descriptor, one read buffer): a backlog larger
#: than this is compacted over several rounds instead of all at once.
MAX_COMPACTION_INPUTS = 256


def plan_compaction(listings: Mapping[int, Listing], level: int, max_inputs: int = MAX_COMPACTION_INPUTS,
                    *, after_snapshot: bool = True) -> Plan:
    """Inputs for compacting level ``level - 1`` into ``level`` (1..3).

    The contiguous run of files at ``level - 1`` that starts right after both the
    newest TXID already at ``level`` and the latest snapshot (:func:`latest_snapshot`),
    at most ``max_inputs`` of them. Starting after the snapshot is what keeps the
    DB-sized image out of levels 1-3 (Litestream #1510): the snapshot already covers
    every TXID up to its own, so copying it into each level would only rewrite the
    base. No level 1-3 file starts at TXID 1 this way; the one exception to "after the
    snapshot" is a file below that straddles it (a compaction that ran while the
    snapshot was taken): it is taken whole, else that level would stop until the next
    snapshot. An empty plan (nothing new) is an ordinary result.

    ``after_snapshot=False`` is for tests and benchmarks only: the planner before #14,
    whose level 1-3 files start at TXID 1 and copy the base into every level.
    """
    if level not in COMPACTION_LEVELS:
        raise ValueError(f"compaction levels are {COMPACTION_LEVELS}, not {level}")
    own = max((f.max_txid for f in listings[level].files), default=0)
    below = listings[level - 1].files
    plan = Plan()
    if not after_snapshot:
        _old_contiguous_run(below, own, plan, strict_start=own > 0, limit=max_inputs)
        return plan
    snapshot = latest_snapshot(listings)
    done = max(own, 0 if snapshot is None else snapshot.max_txid)
    if done > own:
        straddling = next((f for f in current_generation(below) if f.max_txid > done), None)
        if straddling is not None and own < straddling.min_txid <= done:
            done = straddling.min_txid - 1
    _contiguous_run(below, done, plan, strict_start=done > 0, limit=max_inputs)
    return plan


def _old_contiguous_run(files: list[LtxFile], after: int, plan: Plan, strict_start: bool, limit: int) -> None:
    """The planner before #14 (test control only): a generation snapshot newer than what the
    level holds starts the run, so the base climbs the ladder."""
    level_files = [f for f in current_generation(files) if f.max_txid > after]
    if level_files and level_files[0].min_txid == 1:
        after, strict_start = 0, False
    _contiguous_run(files, after, plan, strict_start, limit)


def _shortest_chains(listings: Mapping[int, Listing], txid: int | None) -> dict[int, LtxFile | None]:
    """For every TXID reachable from an empty database, the last file of its shortest chain.

    Each file is an edge from TXID ``min - 1`` to ``max`` (a snapshot, or any file
    starting at TXID 1, leaves from 0). Breadth-first, trying higher levels and longer
    files first, so a chain uses the snapshot and the highest levels where they fit.
    Only the edge that first reached each TXID is kept (a parent pointer, ``None`` for
    the empty database): copying each chain was quadratic in the files of a replica,
    which a tenant chooses (25,000 level-0 files took gigabytes).
    """
    leaving: dict[int, list[LtxFile]] = {}
    for listing in listings.values():
        for f in listing.files:
            if txid is None or f.max_txid <= txid:
                leaving.setdefault(f.min_txid - 1, []).append(f)
    for edges in leaving.values():
        edges.sort(key=lambda f: (f.level, f.max_txid), reverse=True)
    reached: dict[int, LtxFile | None] = {0: None}
    frontier = [0]
    while frontier:
        following = []
        for position in frontier:
            for f in leaving.get(position, ()):
                if f.max_txid not in reached:
                    reached[f.max_txid] = f
                    following.append(f.max_txid)
        frontier = following
    return reached


def _chain_to(reached: Mapping[int, LtxFile | None], txid: int) -> list[LtxFile]:
    """The chain ending at ``txid``, oldest first, walked back along the parent pointers."""
    chain = []
    f = reached[txid]
    while f is not None:
        chain.append(f)
        f = reached[f.min_txid - 1]
    chain.reverse()
    return chain


def _where(f: LtxFile) -> str:
    return f"{f.level}/{f.name}"


def _unreachable(listings: Mapping[int, Listing], reached: Mapping[int, LtxFile | None], target: int) -> str:
    """Why ``target`` is not reachable: the missing TXIDs and the files on either side.

    ``reached`` holds only files ending at or below the target; the missing range
    runs from just after the end of the longest chain to the first file that starts
    beyond it (the chain could not continue there).
    """
    end = max(reached)
    files = [f for listing in listings.values() for f in listing.files]
    latest = max(files, key=lambda f: (f.max_txid, -f.level))
    last = reached[end]
    assert last is not None, "the caller refuses a replica that reaches no TXID"
    if target > latest.max_txid and end == latest.max_txid:
        return f"TXID {target} is beyond the latest TXID {end} ({_where(latest)})"
    after = [f for f in files if f.min_txid > end + 1]
    if after:
        following = min(after, key=lambda f: (f.min_txid, -f.level))
        missing = f"TXIDs {end + 1}-{following.min_txid - 1} are in no file, between {_where(last)} and {_where(following)}"
    else:
        missing = f"no file starts at TXID {end + 1} after {_where(last)}"
    beyond = f"; TXID {target} is beyond the latest TXID {latest.max_txid}" if target > latest.max_txid else ""
    return f"TXID {target} is not reachable: gap after TXID {end}: {missing}{beyond}"


def plan_restore(listings: Mapping[int, Listing], txid: int | None = None, *, allow_gap: bool = False) -> Plan:
    """The chain that rebuilds the database at ``txid`` (default: the latest TXID).

    The fewest files that lead from an empty database to the target: typically the
    latest snapshot at or below it, then the highest levels that fit. A target that
    cannot be reached (a gap before it, or beyond the latest TXID) raises
    :class:`RestorePlanError` naming the gap -- unless ``allow_gap``, or the target is
    "latest": then the plan reaches the latest TXID below the gap, and ``unreachable``
    (and ``problems``) say why it stops short. A caller that must not stop short
    (restore) refuses such a plan; one that works on what is there (compaction,
    status) reports the problem and goes on.
    """
    reached = _shortest_chains(listings, txid)
    end = max(reached)
    root = next((f.path for listing in listings.values() for f in listing.files), "<empty replica>")
    if end == 0:
        raise RestorePlanError(root, "plan restore", None, "nothing to restore: no file starts at TXID 1")
    target = max(f.max_txid for listing in listings.values() for f in listing.files) if txid is None else txid
    if target in reached:
        return Plan(inputs=_chain_to(reached, target))
    reason = _unreachable(listings, reached, target)
    last = reached[end]
    assert last is not None
    if txid is not None and not allow_gap:
        raise RestorePlanError(last.path, "plan restore", None, reason)
    return Plan(inputs=_chain_to(reached, end), problems=[reason], unreachable=reason)


def level_problems(listing: Listing, snapshot: LtxFile | None = None) -> list[str]:
    """Gaps and overlaps between consecutive files of one level's current generation.

    ``snapshot``: the replica's latest (:func:`latest_snapshot`). Files of the level
    that end at or before it are superseded by it, not part of the chain: a new
    generation's snapshot is at level 9, so level 0 jumps over its TXID, which is no gap.
    """
    problems = []
    base = 0 if snapshot is None else snapshot.max_txid
    files = [f for f in current_generation(listing.files) if f.max_txid > base or f is snapshot]
    for before, after in pairwise(files):
        if after.min_txid <= before.max_txid:
            problems.append(f"overlap at level {listing.level}: {before.name} and {after.name}")
        elif after.min_txid > before.max_txid + 1:
            problems.append(f"gap after TXID {before.max_txid} at level {listing.level}")
    return problems


def coverage_gaps(listings: Mapping[int, Listing]) -> list[tuple[int, int]]:
    """TXID ranges below the highest TXID that no file at any level holds.

    A level with holes below what a higher level covers is normal (retention); a
    range that no level holds is lost, and is what status reports as a gap.
    """
    covered = sorted((f.min_txid, f.max_txid) for listing in listings.values() for f in listing.files)
    gaps = []
    reached = 0
    for low, high in covered:
        if low > reached + 1:
            gaps.append((reached + 1, low - 1))
        reached = max(reached, high)
    return gaps
