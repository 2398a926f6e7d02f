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
