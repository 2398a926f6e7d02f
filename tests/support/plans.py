"""Replica listings written as TXID ranges, for the planning and retention tests."""

from __future__ import annotations

from ltxpool.replica.layout import LEVELS, Listing, LtxFile, format_name


def state(**levels: list[tuple[int, int]]) -> dict[int, Listing]:
    listings = {level: Listing(level) for level in LEVELS}
    for key, ranges in levels.items():
        level = int(key[1:])
        listings[level].files = sorted(LtxFile(level, a, b, f"/r/ltx/{level}/{format_name(a, b)}") for a, b in ranges)
    return listings


def spans(files: list[LtxFile]) -> list[tuple[int, int, int]]:
    return [(f.level, f.min_txid, f.max_txid) for f in files]


def quadratic_chains(listings: dict[int, Listing]) -> dict[int, list[LtxFile]]:
    """The restore planner before #13, kept as the baseline: it copied the chain of every
    TXID it reached, so its memory grew with the square of the files."""
    leaving: dict[int, list[LtxFile]] = {}
    for listing in listings.values():
        for f in listing.files:
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


def level_zero_run(count: int) -> dict[int, Listing]:
    """``count`` single-TXID level-0 files 1..count, as a long-running replicate leaves them."""
    listings = {level: Listing(level) for level in LEVELS}
    listings[0].files = [LtxFile(0, t, t, f"/r/ltx/0/{format_name(t, t)}") for t in range(1, count + 1)]
    return listings
