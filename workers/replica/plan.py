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
    level_files = [f for f in current_generation(files) if f.max_txid > after]
    position = after
    if level_files and level_files[0].min_txid == 1:
        # A generation snapshot newer than everything compacted: the run starts with it.
        position, strict_start = 0, False
    for f in level_files[:limit]:
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


#: A merge keeps every input open (one descriptor, one read buffer): a backlog larger
#: than this is compacted over several rounds instead of all at once.
MAX_COMPACTION_INPUTS = 256


def plan_compaction(listings: Mapping[int, Listing], level: int, max_inputs: int = MAX_COMPACTION_INPUTS) -> Plan:
    """Inputs for compacting level ``level - 1`` into ``level`` (1..3).

    The contiguous run of files at ``level - 1`` that starts right after the newest
    TXID already at ``level``, at most ``max_inputs`` of them. An empty plan (nothing
    new) is an ordinary result.
    """
    if level not in COMPACTION_LEVELS:
        raise ValueError(f"compaction levels are {COMPACTION_LEVELS}, not {level}")
    done = max((f.max_txid for f in listings[level].files), default=0)
    plan = Plan()
    _contiguous_run(listings[level - 1].files, done, plan, strict_start=done > 0, limit=max_inputs)
    return plan


def _shortest_chains(listings: Mapping[int, Listing], txid: int | None) -> dict[int, list[LtxFile]]:
    """For every TXID reachable from an empty database, the shortest chain reaching it.

    Each file is an edge from TXID ``min - 1`` to ``max`` (a snapshot, or any file
    starting at TXID 1, leaves from 0). Breadth-first, trying higher levels and longer
    files first, so a chain uses the snapshot and the highest levels where they fit.
    """
    leaving: dict[int, list[LtxFile]] = {}
    for listing in listings.values():
        for f in listing.files:
            if txid is None or f.max_txid <= txid:
                leaving.setdefault(f.min_txid - 1, []).append(f)
    for edges in leaving.values():
        edges.sort(key=lambda f: (f.level, f.max_txid), reverse=True)
    chains: dict[int, list[LtxFile]] = {0: []}
    frontier = [0]
    while frontier:
        following = []
        for position in frontier:
            for f in leaving.get(position, []):
                if f.max_txid not in chains:
                    chains[f.max_txid] = chains[position] + [f]
                    following.append(f.max_txid)
        frontier = following
    return chains


def plan_restore(listings: Mapping[int, Listing], txid: int | None = None) -> Plan:
    """The chain that rebuilds the database at ``txid`` (default: the latest reachable).

    The fewest files that lead from an empty database to the target: typically the
    latest snapshot at or below it, then the highest levels that fit. Raises
    :class:`RestorePlanError` when the target cannot be reached; for "latest", a file
    beyond the end of the chain is reported as a gap in ``problems``.
    """
    chains = _shortest_chains(listings, txid)
    reached = max(chains)
    root = next((f.path for listing in listings.values() for f in listing.files), "<empty replica>")
    if reached == 0:
        raise RestorePlanError(root, "plan restore", None, "nothing to restore: no file starts at TXID 1")
    if txid is not None and txid not in chains:
        below = max(position for position in chains if position < txid)
        raise RestorePlanError(root, "plan restore", None, f"TXID {txid} is not reachable: gap after TXID {below}")
    plan = Plan(inputs=chains[reached if txid is None else txid])
    highest = max(f.max_txid for listing in listings.values() for f in listing.files)
    if txid is None and highest > reached:
        plan.problems.append(f"gap after TXID {reached}: files up to TXID {highest} are unreachable")
    return plan


def level_problems(listing: Listing) -> list[str]:
    """Gaps and overlaps between consecutive files of one level's current generation."""
    problems = []
    files = current_generation(listing.files)
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
