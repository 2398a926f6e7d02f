"""Retention never removes the only copy of a TXID range, nor the way to the latest TXID."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ltxpool.replica.errors import RestorePlanError
from ltxpool.replica.layout import LEVELS, Listing, LtxFile, format_name
from ltxpool.replica.plan import plan_restore
from ltxpool.replica.retention import RetentionPolicy, plan_retention
from tests.support.plans import spans, state

NOW = 1_000_000.0
POLICY = RetentionPolicy(level_retention={0: 300, 1: 600, 2: 600, 3: 600}, snapshot_retention=3600)


def aged(listings: dict[int, Listing], age: float) -> dict[int, Listing]:
    for listing in listings.values():
        listing.files = [LtxFile(f.level, f.min_txid, f.max_txid, f.path, 1, NOW - age) for f in listing.files]
    return listings


def covered_txids(listings: dict[int, Listing]) -> set[int]:
    return {t for listing in listings.values() for f in listing.files for t in range(f.min_txid, f.max_txid + 1)}


def latest(listings: dict[int, Listing]) -> int:
    try:
        return plan_restore(listings).max_txid
    except RestorePlanError:
        return 0


def without(listings: dict[int, Listing], doomed: list[LtxFile]) -> dict[int, Listing]:
    gone = {f.path for f in doomed}
    return {level: Listing(level, [f for f in listing.files if f.path not in gone]) for level, listing in listings.items()}


def test_level0_files_go_once_level1_has_covered_them_long_enough() -> None:
    listings = aged(state(l0=[(1, 1), (2, 2), (3, 3)], l1=[(1, 2)]), 3600)
    assert spans(plan_retention(listings, POLICY, NOW)) == [(0, 1, 1), (0, 2, 2)]
    young = aged(state(l0=[(1, 1), (2, 2), (3, 3)], l1=[(1, 2)]), 10)
    assert plan_retention(young, POLICY, NOW) == []


def test_an_uncovered_file_stays_however_old() -> None:
    listings = aged(state(l0=[(1, 1), (2, 2), (3, 3)]), 10**6)
    assert plan_retention(listings, POLICY, NOW) == []


def test_old_snapshots_go_but_never_the_newest() -> None:
    listings = aged(state(l9=[(1, 5), (1, 9)]), 7200)
    assert spans(plan_retention(listings, POLICY, NOW)) == [(9, 1, 5)]
    only = aged(state(l9=[(1, 5)]), 10**6)
    assert plan_retention(only, POLICY, NOW) == []


def test_the_restore_chain_is_kept_even_where_a_union_of_ranges_covers_it() -> None:
    listings = aged(state(l9=[(1, 10)], l3=[(1, 4), (5, 15)], l2=[(11, 15)], l1=[(11, 13), (14, 15)]), 10**5)
    doomed = plan_retention(listings, POLICY, NOW)
    assert latest(without(listings, doomed)) == 15


ranges = st.lists(st.tuples(st.integers(1, 40), st.integers(0, 6)), max_size=12).map(
    lambda pairs: [(a, a + n) for a, n in pairs]
)


@settings(max_examples=400, deadline=None)
@given(
    levels=st.fixed_dictionaries({f"l{level}": ranges for level in LEVELS}),
    ages=st.lists(st.sampled_from([0, 100, 500, 1000, 5000]), min_size=64, max_size=64),
)
def test_retention_never_loses_a_range_the_latest_txid_or_a_levels_newest_file(levels, ages) -> None:
    levels["l9"] = [(1, b) for _, b in levels["l9"]]
    for key in levels:
        # One name, one file: a directory cannot hold two files of the same TXID range.
        levels[key] = sorted(set(levels[key]))
    listings = state(**levels)
    for index, listing in enumerate(listings.values()):
        listing.files = [
            LtxFile(f.level, f.min_txid, f.max_txid, f.path, 1, NOW - ages[(index * 13 + i) % 64])
            for i, f in enumerate(listing.files)
        ]
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert covered_txids(after) == covered_txids(listings)
    assert latest(after) == latest(listings)
    for level, listing in listings.items():
        if listing.files:
            newest = max(f.max_txid for f in listing.files)
            assert any(f.max_txid == newest for f in after[level].files)


def test_a_realistic_history_keeps_every_restorable_txid_within_retention() -> None:
    listings = {level: Listing(level) for level in LEVELS}

    def add(level: int, a: int, b: int, age: float) -> None:
        listings[level].files.append(LtxFile(level, a, b, f"/r/ltx/{level}/{format_name(a, b)}", 1, NOW - age))

    for t in range(1, 101):
        add(0, t, t, 10_000 - t * 90)
    for start in range(1, 101, 10):
        add(1, start, start + 9, 10_000 - (start + 9) * 90 + 30)
    for start in range(1, 101, 50):
        add(2, start, start + 49, 10_000 - (start + 49) * 90 + 60)
    add(9, 1, 50, 10_000 - 50 * 90 + 90)
    for listing in listings.values():
        listing.files.sort()
    doomed = plan_retention(listings, POLICY, NOW)
    after = without(listings, doomed)
    assert latest(after) == 100
    assert covered_txids(after) == covered_txids(listings)
    assert doomed, "this history is old enough that retention must remove something"
    assert all(f.level != 9 for f in doomed)
